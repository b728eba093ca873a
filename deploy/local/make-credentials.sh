#!/usr/bin/env bash
# Makes what a local stack needs to run on TLS with authenticated devices
# (docs/security.md), in DIR (default ./run/tls), once: a local CA, a
# server certificate it signed for localhost and 127.0.0.1, the lab key
# every credential derives from, an admin operator token for whoever runs
# it, and msrs.conf naming them (use it with --config or MSRS_CONFIG).
# Files that exist are kept. The token is made here with openssl, not with
# msrs, as an independent check of the derivation (common/security.h).
#   deploy/local/make-credentials.sh [DIR]
set -euo pipefail
dir=${1:-run/tls}
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"
umask 077
if [ ! -s ca.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=msrs local CA" -keyout ca.key -out ca.pem 2>/dev/null
fi
if [ ! -s server.pem ]; then
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout server.key -out server.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
    -extfile server.ext -out server.pem 2>/dev/null
  rm -f server.csr server.ext
fi
[ -s lab.key ] || openssl rand -hex 32 >lab.key
chmod 600 lab.key ca.key server.key
chmod 644 ca.pem server.pem
here=$(pwd)
# operator:NAME:admin:1.HMAC(lab key, "msrs-operator:NAME:admin:1")
name=$(id -un 2>/dev/null | tr -c 'A-Za-z0-9._\n-' '_' | cut -c1-48)
name=${name:-local}
mac=$(printf 'msrs-operator:%s:admin:1' "$name" |
  openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(cat lab.key)" -r | cut -d' ' -f1)
cat >msrs.conf <<CONF
# made by deploy/local/make-credentials.sh: TLS and device credentials
tls.cert = $here/server.pem
tls.key = $here/server.key
tls.ca = $here/ca.pem
auth.key_file = $here/lab.key
auth.revoked_file = $here/revoked
# the operator who starts and stops sessions from this machine (msrs session)
auth.token = operator:$name:admin:1.$mac
CONF
chmod 600 msrs.conf
echo "$here/msrs.conf"
