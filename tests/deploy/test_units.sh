#!/usr/bin/env bash
# The systemd units (deploy/systemd) pass `systemd-analyze verify` with no
# word said: any warning (an unknown key, a misspelt section) fails, as
# does a unit without a binary. ExecStart names /usr/bin (the package's);
# here they point at the build's binaries instead. Every service binary
# that runs for long has a unit, and the target wants each one.
#   tests/deploy/test_units.sh BIN_DIR
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:?usage: $0 BIN_DIR}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for f in "$src"/deploy/systemd/*; do
  sed "s#/usr/bin/#$bin/#g" "$f" >"$tmp/$(basename "$f")"
done
out=$(systemd-analyze verify --man=no "$tmp"/*.service "$tmp"/*.target 2>&1) || status=1
if [ -n "$out" ]; then
  echo "systemd-analyze verify said:"; echo "$out"; status=1
fi
for svc in msrs-supervisor msrs-agent msrs-syncd msrs-collectord msrs-archiver msrs-gateway; do
  [ -f "$src/deploy/systemd/$svc.service" ] || { echo "no unit for $svc"; status=1; }
  grep -q "$svc.service" "$src/deploy/systemd/msrs.target" || { echo "msrs.target does not want $svc"; status=1; }
  grep -q '^Type=notify$' "$src/deploy/systemd/$svc.service" || { echo "$svc: not Type=notify"; status=1; }
done
[ $status -eq 0 ] && echo "units: $(ls "$src"/deploy/systemd | wc -l) verified"
exit $status
