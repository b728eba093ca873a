#!/usr/bin/env bash
# Builds the Debian package, installs it on this machine and runs it, as
# CI does after the tests (.ci/run; needs root):
#   1. `cpack -G DEB` in build/ -> build/msrs_<version>_<arch>.deb;
#   2. installs it (dpkg -i), checks every binary's
#      --version, `systemd-analyze verify` of the installed units (silent),
#      the msrs user and the credentials the postinst made;
#   3. runs the local job (deploy/local/up.sh) from the installed binaries;
#   4. starts every service as its unit would — user msrs, the installed
#      /etc/msrs/msrs.conf, NOTIFY_SOCKET — waits for each to say READY=1,
#      and records a session with simulated devices through them
#      (deploy/package/try_installed.py);
#   5. purges the package (MSRS_KEEP_PACKAGE=1 keeps it) and what step 4
#      wrote in /var/lib/msrs.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "check.sh: run as root (it installs the package)" >&2; exit 2; }
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
(cd build && cpack -G DEB >/dev/null)
deb=$(ls build/msrs_*.deb | head -1)
echo "== package: $deb ($(du -k "$deb" | cut -f1) KiB)"
had_state=0
[ -e /var/lib/msrs ] && had_state=1
export DEBIAN_FRONTEND=noninteractive
# dpkg -i, as an administrator would; what it Depends on is installed by
# deploy/install-deps.sh already (apt-get -f fetches it on a machine without)
dpkg -i "$deb" >/dev/null || apt-get install -y -qq -f >/dev/null
cleanup() {
  if [ "${MSRS_KEEP_PACKAGE:-0}" != 1 ]; then
    dpkg --purge msrs >/dev/null || true
    [ $had_state = 1 ] || rm -rf /var/lib/msrs
    getent passwd msrs >/dev/null && deluser --system --quiet msrs >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

version=$(sed -n 's/^project(msrs VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
for b in msrs msrs-agent msrs-supervisor msrs-syncd msrs-collectord msrs-archiver msrs-gateway \
         msrs-capture msrs-replay msrs-tail msrs-devsim; do
  got=$("/usr/bin/$b" --version)
  [ "$got" = "$b $version" ] || { echo "check: $b --version said '$got', expected '$b $version'" >&2; exit 1; }
done
echo "== --version: every binary says $version"
out=$(systemd-analyze verify --man=no /lib/systemd/system/msrs-*.service /lib/systemd/system/msrs.target 2>&1) || true
[ -z "$out" ] || { echo "check: systemd-analyze verify said:"; echo "$out"; exit 1; } >&2
echo "== systemd-analyze verify: $(ls /lib/systemd/system/msrs* | wc -l) units, nothing said"
getent passwd msrs >/dev/null || { echo "check: no user msrs" >&2; exit 1; }
for f in ca.pem server.pem server.key lab.key msrs.conf; do
  [ -s "/etc/msrs/tls/$f" ] || { echo "check: the postinst made no /etc/msrs/tls/$f" >&2; exit 1; }
done
[ "$(stat -c %a:%G /etc/msrs/tls/lab.key)" = "640:msrs" ] ||
  { echo "check: /etc/msrs/tls/lab.key is $(stat -c %a:%G /etc/msrs/tls/lab.key), expected 640:msrs" >&2; exit 1; }
echo "== postinst: user msrs, credentials in /etc/msrs/tls"
for f in kafka/msrs.conf kafka/agent.conf examples/read_kafka.py examples/session_times.mjs topics.md; do
  [ -s "/usr/share/doc/msrs/$f" ] || { echo "check: the package has no /usr/share/doc/msrs/$f" >&2; exit 1; }
done
MSRS_X= /usr/bin/msrs --config /usr/share/doc/msrs/kafka/msrs.conf schemas >/dev/null
echo "== docs: the Kafka example (its config read by the installed msrs) and the analysts' examples"

data=$(mktemp -d)
echo "== the local job from /usr/bin (log in $data)"
MSRS_BIN_DIR=/usr/bin MSRS_WEB_ROOT=/usr/share/msrs/web MSRS_DATA="$data" MSRS_SERVE=0 RECORD_S=5 \
  ./deploy/local/up.sh
rm -rf "$data"

echo "== the services as their units run them"
/usr/bin/python3 deploy/package/try_installed.py
echo "== package check passed"
