#!/usr/bin/env bash
# Installs every Debian package msrs needs to build, test and run.
# Idempotent: packages already present are skipped, so a second run is fast.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git clang-format
  librdkafka-dev libavro-dev libwebsockets-dev libjansson-dev libsqlite3-dev
  check libsubunit-dev
  libv4l-dev libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libssl-dev openssl curl
  python3 python3-avro python3-websockets sqlite3 valgrind ffmpeg
  clang libclang-rt-14-dev
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
