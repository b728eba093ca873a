#!/usr/bin/env bash
# The local stack on the embedded SQLite log, on one machine.
#
# Today (foundation): installs what is missing, builds, then writes one
# recording session's events to the log exactly as the services will —
# a node joins, four simulated devices register and are clock-synced, a
# session is requested, synchronised, started, marked, fed samples and
# stopped — tails the sessions topic, and replays the log into state.
# The device endpoint, syncd, collectord and archiver that will produce
# these events themselves are the next issues; this script grows with them.
#
# env: MSRS_DATA (default ./run) holds the log; it is kept between runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
./deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
bin=$PWD/build/bin

data=${MSRS_DATA:-$PWD/run}
mkdir -p "$data"
export MSRS_LOG="sqlite:$data/msrs.db"
export MSRS_SOURCE="up.sh"
session="s-$(date +%Y%m%d-%H%M%S)"
node="node-$(hostname -s 2>/dev/null || echo local)"
now=$(date +%s%N)
start=$((now + 2000000000))
stop=$((start + 10000000000))
echo "== msrs local stack: log $MSRS_LOG, session $session"

{
  echo "{\"type\":\"NodeRegistered\",\"value\":{\"node_id\":\"$node\",\"hostname\":\"$(hostname)\",\"capabilities\":[\"devices\",\"v4l2\"],\"max_devices\":16,\"version\":\"0.1.0\"}}"
  echo "{\"type\":\"NodePlanned\",\"value\":{\"node_id\":\"$node\",\"role\":\"recorder\",\"services\":[\"agent\",\"syncd\",\"collectord\",\"archiver\"]}}"
  echo "{\"type\":\"NodeHeartbeat\",\"value\":{\"node_id\":\"$node\",\"services_running\":[\"agent\"],\"device_count\":4}}"
  for i in 1 2 3 4; do
    d="sim-$i"
    echo "{\"type\":\"DeviceRegistered\",\"value\":{\"device_id\":\"$d\",\"node_id\":\"$node\",\"name\":\"simulated phone $i\",\"capabilities\":[\"rgb_video\",\"gsr\"],\"streams\":[{\"stream_id\":\"gsr\",\"type\":\"gsr\",\"rate_hz\":128,\"channels\":1,\"format\":\"float64\"}],\"battery\":0.9}}"
    off=$((i * 1234567 - 3000000))
    echo "{\"type\":\"ClockOffsetMeasured\",\"value\":{\"device_id\":\"$d\",\"node_id\":\"$node\",\"round\":1,\"offset_ns\":$off,\"rtt_ns\":900000,\"uncertainty_ns\":45000,\"probes\":8}}"
  done
  echo "{\"type\":\"CollectionRequested\",\"value\":{\"session_id\":\"$session\",\"requested_by\":\"up.sh\",\"device_ids\":[\"sim-1\",\"sim-2\",\"sim-3\",\"sim-4\"],\"min_group\":4,\"duration_ms\":10000,\"labels\":{\"subject\":\"01\",\"task\":\"demo\"}}}"
  echo "{\"type\":\"SynchronizationCompleted\",\"value\":{\"session_id\":\"$session\",\"devices\":[{\"device_id\":\"sim-1\",\"offset_ns\":-1765433,\"uncertainty_ns\":45000},{\"device_id\":\"sim-2\",\"offset_ns\":-530866,\"uncertainty_ns\":45000},{\"device_id\":\"sim-3\",\"offset_ns\":703701,\"uncertainty_ns\":45000},{\"device_id\":\"sim-4\",\"offset_ns\":1938268,\"uncertainty_ns\":45000}],\"max_uncertainty_ns\":45000}}"
  echo "{\"type\":\"CollectionStarted\",\"value\":{\"session_id\":\"$session\",\"start_at_ns\":$start,\"device_ids\":[\"sim-1\",\"sim-2\",\"sim-3\",\"sim-4\"]}}"
  for i in 1 2 3 4; do
    echo "{\"type\":\"SensorSampleBatch\",\"value\":{\"device_id\":\"sim-$i\",\"session_id\":\"$session\",\"stream_id\":\"gsr\",\"stream_type\":\"gsr\",\"seq\":0,\"device_time_ns\":[$start,$((start + 7812500))],\"master_time_ns\":[$start,$((start + 7812500))],\"values\":[0.41,0.42]}}"
  done
  echo "{\"type\":\"SyncMark\",\"value\":{\"session_id\":\"$session\",\"device_id\":\"sim-1\",\"mark_id\":\"m1\",\"label\":\"stimulus\",\"master_time_ns\":$((start + 5000000000))}}"
  echo "{\"type\":\"CollectionStopped\",\"value\":{\"session_id\":\"$session\",\"stop_at_ns\":$stop,\"duration_ns\":10000000000,\"streams\":[{\"device_id\":\"sim-1\",\"stream_id\":\"gsr\",\"samples\":2},{\"device_id\":\"sim-2\",\"stream_id\":\"gsr\",\"samples\":2},{\"device_id\":\"sim-3\",\"stream_id\":\"gsr\",\"samples\":2},{\"device_id\":\"sim-4\",\"stream_id\":\"gsr\",\"samples\":2}]}}"
} | "$bin/msrs" emit -

echo "== the session's events (msrs-tail --topic sessions)"
"$bin/msrs-tail" --topic sessions | grep "\"key\":\"$session\"" | cut -c1-160
echo "== state rebuilt from the log (msrs-replay)"
"$bin/msrs-replay" --compact >"$data/state.json"
python3 - "$data/state.json" "$session" <<'PY'
import json, sys
state = json.load(open(sys.argv[1])); s = state["sessions"][sys.argv[2]]
print("session %s: %s, devices %s, marks %d, max sync uncertainty %.1f us" % (
    sys.argv[2], s["state"], ",".join(s["device_ids"]), s["marks"], s["sync"]["max_uncertainty_ns"] / 1000))
print("pool: %d devices on %d nodes; log holds %d events" % (
    len(state["devices"]), len(state["nodes"]), state["records"]))
PY
echo "== done: log $data/msrs.db, state $data/state.json"
