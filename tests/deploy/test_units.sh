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
# deploy/kafka: the worked multi-machine example. Its drop-ins verify with
# their units, and its msrs.conf, with each drop-in's MSRS_X, names only
# keys msrs knows (an unknown key fails the command: exit 2).
for d in supervisor agent gateway; do
  mkdir -p "$tmp/msrs-$d.service.d"
  cp "$src/deploy/kafka/$d.conf" "$tmp/msrs-$d.service.d/msrs.conf"
done
out=$(systemd-analyze verify --man=no "$tmp"/msrs-supervisor.service "$tmp"/msrs-agent.service \
      "$tmp"/msrs-gateway.service 2>&1) || status=1
if [ -n "$out" ]; then
  echo "systemd-analyze verify with deploy/kafka's drop-ins said:"; echo "$out"; status=1
fi
for d in supervisor agent gateway; do
  x=$(sed -n 's/^Environment="MSRS_X=\(.*\)"$/\1/p' "$src/deploy/kafka/$d.conf" | sed 's/%H/rec1.lab/g')
  [ -n "$x" ] || { echo "deploy/kafka/$d.conf: no Environment=\"MSRS_X=...\""; status=1; continue; }
  if ! err=$(MSRS_X="$x" "$bin/msrs" --config "$src/deploy/kafka/msrs.conf" schemas 2>&1 >/dev/null); then
    echo "deploy/kafka/msrs.conf with $d.conf's MSRS_X: $err"; status=1
  fi
done
[ $status -eq 0 ] && echo "units: $(ls "$src"/deploy/systemd | wc -l) verified, and deploy/kafka's drop-ins and config"
exit $status
