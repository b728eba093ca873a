#!/usr/bin/env bash
# The local stack on the embedded SQLite log, on one machine: the job users
# run msrs for, end to end.
#
# Installs what is missing, builds, then starts against ./run/msrs.db:
# msrs-supervisor (node registry), msrs-agent (finds the supervisor by
# discovery, registers; device endpoint + clock sync), msrs-syncd, msrs-collectord,
# msrs-archiver and four simulated devices (msrs-devsim: own clocks on a
# LAN-like network; GSR, IMU and 160x120 MPEG-4 video). It records a
# session with `msrs session start --wait` (registered -> synchronised ->
# one start instant -> RECORD_S seconds -> stopped with per-stream counts),
# waits for the archive, prints its path and a summary (devices, samples per
# stream, sync quality, files), and replays the log into state.
#
# Everything runs on TLS with authenticated devices (docs/security.md):
# deploy/local/make-credentials.sh makes a local CA, a certificate for
# 127.0.0.1 and the lab key in $MSRS_DATA/tls once, and every process reads
# their paths from $MSRS_DATA/tls/msrs.conf (MSRS_CONFIG).
#
# msrs-gateway serves the web app (docs/gateway.md) at the URL printed at
# the start: log in there with your operator token (auth.token in
# $MSRS_DATA/tls/msrs.conf); the certificate is the local CA's
# ($MSRS_DATA/tls/ca.pem: import it, or accept the browser's warning).
# Run from a terminal, the stack keeps running after the job until Ctrl-C,
# so the page stays there to look at; otherwise (CI) it stops.
#
# env: MSRS_DATA (default ./run) holds the log, the archive and the service
# logs; RECORD_S (default 10); MSRS_SERVE=1|0 (default: 1 on a terminal)
# keeps the stack running after the job; GATEWAY_PORT (default 8640).
# MSRS_BIN_DIR=/usr/bin runs the installed package's binaries instead of
# building (with MSRS_WEB_ROOT=/usr/share/msrs/web: deploy/package/check.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -n "${MSRS_BIN_DIR:-}" ]; then
  bin=$MSRS_BIN_DIR
else
  ./deploy/install-deps.sh
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j"$(nproc)" >/dev/null
  bin=$PWD/build/bin
fi
web=()
[ -n "${MSRS_WEB_ROOT:-}" ] && web=(-X "gateway.web_root=$MSRS_WEB_ROOT")

data=${MSRS_DATA:-$PWD/run}
mkdir -p "$data"
export MSRS_LOG="sqlite:$data/msrs.db"
MSRS_CONFIG=$(./deploy/local/make-credentials.sh "$data/tls")
export MSRS_CONFIG
archive="$data/archive"
record_s=${RECORD_S:-10}
session="ses-$(date +%Y%m%d-%H%M%S)"
free() { python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_$1); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
port=$(free STREAM) sup_port=$(free STREAM) udp_port=$(free DGRAM)
gw_port=${GATEWAY_PORT:-8640}
(exec 3<>"/dev/tcp/127.0.0.1/$gw_port") 2>/dev/null && gw_port=$(free STREAM) # in use: another
serve=${MSRS_SERVE:-$([ -t 0 ] && echo 1 || echo 0)}
discovery=(-X "discovery.port=$udp_port" -X discovery.targets=127.255.255.255)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "== msrs local stack: log $MSRS_LOG, archive $archive, TLS and credentials $MSRS_CONFIG"
"$bin/msrs-supervisor" --listen "127.0.0.1:$sup_port" --node-id local-supervisor "${discovery[@]}" \
  2>"$data/supervisor.log" & pids+=($!)
"$bin/msrs-agent" --listen "127.0.0.1:$port" --node-id local-node --supervisor discover \
  "${discovery[@]}" -X sync.interval_ms=1000 2>"$data/agent.log" & pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
"$bin/msrs-gateway" --listen "127.0.0.1:$gw_port" -X "archive.dir=$archive" "${web[@]}" \
  2>"$data/gateway.log" & pids+=($!)
echo "== web app: https://127.0.0.1:$gw_port/ (log in with auth.token from $MSRS_CONFIG;"
echo "   the certificate is signed by $data/tls/ca.pem)"
"$bin/msrs-syncd" 2>"$data/syncd.log" & pids+=($!)
"$bin/msrs-collectord" 2>"$data/collectord.log" & pids+=($!)
"$bin/msrs-archiver" --dir "$archive" >"$data/archived.txt" 2>"$data/archiver.log" & pids+=($!)
"$bin/msrs-devsim" --url "wss://127.0.0.1:$port/v1/devices" --devices 4 --profile lan \
  --video 160x120@15 --truth "$data/truth.jsonl" 2>"$data/devsim.log" & pids+=($!)

echo "== recording session $session: 4 devices, $record_s s (msrs session start --wait)"
"$bin/msrs" session start "$session" --devices sim-1,sim-2,sim-3,sim-4 --min-group 4 \
  --duration "$record_s" --label subject=01 --label task=demo --label run=1 --wait

echo "== the device pool (msrs devices)"
"$bin/msrs" devices

echo "== waiting for the archive"
for _ in $(seq 300); do
  grep -q "/$session\$" "$data/archived.txt" 2>/dev/null && break
  sleep 0.1
done
dir=$(grep "/$session\$" "$data/archived.txt" | tail -1)
echo "== the web app's view of it (GET https://127.0.0.1:$gw_port/api/v1/sessions/$session)"
token=$(sed -n 's/^auth.token = //p' "$MSRS_CONFIG")
curl -sf --cacert "$data/tls/ca.pem" -H "Authorization: Bearer $token" \
  "https://127.0.0.1:$gw_port/api/v1/sessions/$session" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("gateway: session %s %s, %d streams, %d samples, complete=%s, requested by %s" % (
    s["session_id"], s["state"], len(s.get("streams", [])),
    sum(x["samples"] for x in s.get("streams", [])), s.get("complete"), s.get("requested_by")))'
if [ "$serve" != 1 ]; then
  cleanup
  trap - EXIT
fi
[ -n "$dir" ] || { echo "up.sh: the archiver did not archive $session (see $data/archiver.log)" >&2; exit 1; }

echo "== archive: $dir"
python3 - "$dir" "$data/truth.jsonl" <<'PY'
import json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
truth = {t["device_id"]: t for t in map(json.loads, open(sys.argv[2]))}
print("session %s: %.3f s, %s, complete=%s, xdf %s" % (
    m["session_id"], m["duration_ns"] / 1e9, m["reason"], m["complete"], m["xdf"]))
for dev, x in sorted(m["devices"].items()):
    sync, fit = x.get("sync", {}), x.get("clock_fit", {})
    t = truth.get(dev)
    err = ""
    if t and sync:
        at = m["start_at_ns"]
        true_ns = t["offset_ns"] + t["drift_ppm"] * 1e-6 * (at - t["t0_ns"])
        err = ", error vs truth %.0f us" % (abs(sync["offset_ns"] - true_ns) / 1e3)
    print("  %s: offset %+.3f ms (uncertainty %.0f us%s), drift %+.1f ppm over %d offsets" % (
        dev, sync.get("offset_ns", 0) / 1e6, sync.get("uncertainty_ns", 0) / 1e3, err,
        fit.get("drift_ppm", 0), fit.get("offsets", 0)))
    for s, c in sorted(x["streams"].items()):
        print("    %-4s %6d %s, %9d bytes, %d gaps" % (
            s, c["samples"], "frames " if c["kind"] == "video" else "samples", c["bytes"], c["gaps"]))
print("files: %d, %.1f MB, SHA-256 in manifest.json" % (
    len(m["files"]), sum(f["bytes"] for f in m["files"].values()) / 1e6))
PY

echo "== state rebuilt from the log (msrs-replay > $data/state.json)"
"$bin/msrs-replay" --compact >"$data/state.json"
python3 - "$data/state.json" "$session" <<'PY'
import json, sys
state = json.load(open(sys.argv[1])); s = state["sessions"][sys.argv[2]]
print("session %s: %s, %d streams reported, %d devices in the pool, %d events folded" % (
    sys.argv[2], s["state"], len(s.get("streams", [])), len(state["devices"]), state["records"]))
PY
echo "== post-hoc clock refit of the archive (msrs-replay --refit > $data/refit/$session)"
rm -rf "$data/refit/$session"
mkdir -p "$data/refit"
"$bin/msrs-replay" --refit "$dir" --out "$data/refit/$session" 2>"$data/refit.log"
python3 - "$data/refit/$session/manifest.json" "$data/truth.jsonl" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
truth = {t["device_id"]: t for t in map(json.loads, open(sys.argv[2]))}
for dev, f in sorted(m["refit"]["devices"].items()):
    seg = max(f["segments"], key=lambda s: s["master_to_ns"])  # this run's clock (earlier runs: other segments)
    span = (seg["master_to_ns"] - seg["master_from_ns"]) / 1e9
    moved = max(v["max_change_ns"] for k, v in f.items() if isinstance(v, dict) and "max_change_ns" in v)
    print("  %s: drift %+.1f ppm (true %+.1f) from %d rounds over %.0f s; master times moved up to %.0f us" % (
        dev, seg["drift_ppm"], truth[dev]["drift_ppm"], seg["rounds"], span, moved / 1e3))
print("  (a refit later, with more rounds after the session in the log, fits the drift better)")
PY
echo "== done: log $data/msrs.db, archive $dir, refitted copy $data/refit/$session, service logs in $data/"
if [ "$serve" = 1 ]; then
  echo "== the stack keeps running: web app https://127.0.0.1:$gw_port/ (Ctrl-C stops it)"
  wait
fi
