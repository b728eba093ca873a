#!/usr/bin/env bash
# An idle node's cost: one msrs-agent (SQLite log, plain transport) with
# N devices connected (msrs-devsim --samples none: clock sync only), its
# CPU over SECONDS after a warm-up of WARMUP seconds (default 80: every
# device's window of 512 probes is full, so rounds are steady-state),
# read from /proc (10 ms ticks); with CALLGRIND=1 the agent runs under
# valgrind --tool=callgrind and the figure is instructions per second over
# the same window (repeatable whatever else the machine does).
#   [WARMUP=80] [CALLGRIND=1] [KEEP=1: keep the run's files] bench/bench_idle.sh [DEVICES=16] [SECONDS=60] [agent -X key=value ...]
# e.g. bench/bench_idle.sh 16 60 -X agent.event_loop=poll
set -euo pipefail
bin=${MSRS_BIN_DIR:-$(cd "$(dirname "$0")/../build/bin" && pwd)}
devices=${1:-16}; seconds=${2:-60}; shift $(( $# >= 2 ? 2 : $# ))
warmup=${WARMUP:-80}
dir=$(mktemp -d); port=$((20000 + RANDOM % 20000))
conf=$(cd "$(dirname "$0")/.." && pwd)/tests/plain.conf
trap 'kill $ag $ds 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] && echo "kept $dir" || rm -rf "$dir"' EXIT
run=()
[ "${CALLGRIND:-0}" = 1 ] && run=(valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out")
MSRS_CONFIG=$conf "${run[@]}" "$bin/msrs-agent" --log "sqlite:$dir/log.db" --listen 127.0.0.1:$port \
  --node-id idle "$@" 2>"$dir/agent.log" &
ag=$!
sleep 3
MSRS_CONFIG=$conf "$bin/msrs-devsim" --url ws://127.0.0.1:$port/v1/devices --devices "$devices" \
  --samples none --profile lan 2>"$dir/devsim.log" &
ds=$!
sleep "$warmup"
echo "# ${CALLGRIND:+CALLGRIND=$CALLGRIND }WARMUP=$warmup bench/bench_idle.sh $devices $seconds $*  (load average $(cut -d' ' -f1-3 /proc/loadavg))"
if [ "${CALLGRIND:-0}" = 1 ]; then
  callgrind_control -z "$ag" >/dev/null; s0=$(date +%s.%N)
  sleep "$seconds"
  callgrind_control -d "$ag" >/dev/null; s1=$(date +%s.%N)
  sleep 1
  ir=$(callgrind_annotate "$dir"/cg.out.1 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  awk -v ir="$ir" -v s0="$s0" -v s1="$s1" -v n="$devices" \
    'BEGIN { printf "idle agent, %d devices: %.2f M instructions/s (%d in %.1f s, callgrind)\n", n, ir / (s1 - s0) / 1e6, ir, s1 - s0 }'
  exit 0
fi
t0=$(awk '{print $14+$15}' /proc/$ag/stat); s0=$(date +%s.%N)
sleep "$seconds"
t1=$(awk '{print $14+$15}' /proc/$ag/stat); s1=$(date +%s.%N)
awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v s0="$s0" -v s1="$s1" -v n="$devices" \
  'BEGIN { printf "idle agent, %d devices: %.2f %% of a core (%d ticks of 1/%d s in %.1f s)\n", n, t / hz / (s1 - s0) * 100, t, hz, s1 - s0 }'
