#!/usr/bin/env bash
# The local stack on the embedded SQLite log, on one machine.
#
# Installs what is missing, builds, then runs the services that exist today
# against ./run/msrs.db: msrs-agent (device endpoint + clock sync), four
# simulated devices (msrs-devsim: own clocks, a LAN-like network, GSR and IMU
# streams) and msrs-syncd. It requests a session for the four devices, waits
# until syncd declares them synchronised, records for 10 s (samples flow
# device -> agent -> log), stops, and replays the log into state.
#
# Not built yet (later issues): collectord, which will send start/stop and
# emit CollectionStarted/CollectionStopped — this script emits those two
# itself — and the archiver, so there is no archive folder yet.
#
# env: MSRS_DATA (default ./run) holds the log; RECORD_S (default 10).
set -euo pipefail
cd "$(dirname "$0")/../.."
./deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
bin=$PWD/build/bin

data=${MSRS_DATA:-$PWD/run}
mkdir -p "$data"
export MSRS_LOG="sqlite:$data/msrs.db"
record_s=${RECORD_S:-10}
session="s-$(date +%Y%m%d-%H%M%S)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "== msrs local stack: log $MSRS_LOG, session $session"
"$bin/msrs-agent" --listen "127.0.0.1:$port" --node-id local-node -X sync.interval_ms=1000 \
  2>"$data/agent.log" & pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
"$bin/msrs-devsim" --url "ws://127.0.0.1:$port/v1/devices" --devices 4 --profile lan \
  --truth "$data/truth.jsonl" 2>"$data/devsim.log" & pids+=($!)
"$bin/msrs-syncd" 2>"$data/syncd.log" & pids+=($!)

"$bin/msrs" emit CollectionRequested 2>/dev/null \
  "{\"session_id\":\"$session\",\"requested_by\":\"up.sh\",\"device_ids\":[\"sim-1\",\"sim-2\",\"sim-3\",\"sim-4\"],\"min_group\":4,\"labels\":{\"subject\":\"01\",\"task\":\"demo\"}}"
echo "== waiting for syncd to synchronise the 4 devices"
for _ in $(seq 150); do
  grep -q "session $session synchronised" "$data/syncd.log" && break
  sleep 0.2
done
grep "session $session" "$data/syncd.log" | tail -2

start=$(( $(date +%s%N) + 1000000000 ))
"$bin/msrs" emit CollectionStarted 2>/dev/null "{\"session_id\":\"$session\",\"start_at_ns\":$start,\"device_ids\":[\"sim-1\",\"sim-2\",\"sim-3\",\"sim-4\"]}"
echo "== recording for $record_s s"
sleep "$record_s"
"$bin/msrs" emit SyncMark 2>/dev/null "{\"session_id\":\"$session\",\"device_id\":\"sim-1\",\"mark_id\":\"end\",\"label\":\"end of demo\"}"
stop=$(date +%s%N)
"$bin/msrs" emit CollectionStopped 2>/dev/null "{\"session_id\":\"$session\",\"stop_at_ns\":$stop,\"duration_ns\":$((stop - start))}"
cleanup
trap - EXIT

echo "== the session's events (msrs-tail --topic sessions)"
"$bin/msrs-tail" --topic sessions | grep "\"key\":\"$session\"" | cut -c1-150
echo "== state rebuilt from the log (msrs-replay)"
"$bin/msrs-replay" --compact >"$data/state.json"
samples=$("$bin/msrs-tail" --topic samples --from "$(date -u -d @$((start / 1000000000)) +%Y-%m-%dT%H:%M:%SZ)" | wc -l)
python3 - "$data/state.json" "$session" "$data/truth.jsonl" "$samples" <<'PY'
import json, sys
state = json.load(open(sys.argv[1])); s = state["sessions"][sys.argv[2]]
truth = {d["device_id"]: d for d in map(json.loads, open(sys.argv[3]))}
print("session %s: %s; devices %s; sample batches on the log since start: %s" % (
    sys.argv[2], s["state"], ",".join(s["device_ids"]), sys.argv[4]))
at = s["sync"]["at_ns"]
for d in sorted(s["sync"]["devices"], key=lambda d: d["device_id"]):
    t = truth[d["device_id"]]
    true_ns = t["offset_ns"] + t["drift_ppm"] * 1e-6 * (at - t["t0_ns"])
    print("  %s: clock offset %+.3f ms, true %+.3f ms (error %.0f us, uncertainty %.0f us)" % (
        d["device_id"], d["offset_ns"] / 1e6, true_ns / 1e6, abs(d["offset_ns"] - true_ns) / 1e3,
        d["uncertainty_ns"] / 1e3))
print("pool: %d devices; the log holds %d device/session events" % (len(state["devices"]), state["records"]))
PY
echo "== done: log $data/msrs.db, state $data/state.json, service logs in $data/"
