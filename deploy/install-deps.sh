#!/usr/bin/env bash
# Installs every Debian package msrs needs to build, test and run, and the
# web app's npm packages (web/package-lock.json: uPlot, and playwright-core
# for the browser tests, which drive Debian's chromium).
# Idempotent: what is present is skipped, so a second run is fast.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential cmake pkg-config git clang-format
  librdkafka-dev libavro-dev libwebsockets-dev libwebsockets-evlib-ev libev-dev libjansson-dev libyajl-dev libsqlite3-dev
  check libsubunit-dev
  libv4l-dev libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libssl-dev openssl curl
  libsystemd-dev systemd dpkg-dev prometheus
  python3 python3-avro python3-confluent-kafka python3-websockets sqlite3 valgrind ffmpeg
  clang libclang-rt-14-dev
  nodejs chromium
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's nodejs comes without npm (NodeSource's has it built in)
if ! command -v npm >/dev/null; then
  echo "install-deps: installing npm" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
# the web app's packages, exactly as locked; again only when the lock changed
if ! cmp -s web/package-lock.json web/node_modules/.msrs-installed-lock 2>/dev/null; then
  echo "install-deps: npm ci in web/" >&2
  (cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp web/package-lock.json web/node_modules/.msrs-installed-lock
fi
