#!/usr/bin/env bash
# An idle node's cost: one msrs-agent (SQLite log, plain transport) with
# N devices connected (msrs-devsim --samples none: clock sync only), its
# CPU over SECONDS after a 20 s warm-up, read from /proc (10 ms ticks).
#   bench/bench_idle.sh [DEVICES=16] [SECONDS=30] [agent -X key=value ...]
# e.g. bench/bench_idle.sh 16 30 -X agent.event_loop=poll
set -euo pipefail
bin=${MSRS_BIN_DIR:-$(cd "$(dirname "$0")/../build/bin" && pwd)}
devices=${1:-16}; seconds=${2:-30}; shift $(( $# >= 2 ? 2 : $# ))
dir=$(mktemp -d); port=$((20000 + RANDOM % 20000))
conf=$(cd "$(dirname "$0")/.." && pwd)/tests/plain.conf
trap 'kill $ag $ds 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
MSRS_CONFIG=$conf "$bin/msrs-agent" --log "sqlite:$dir/log.db" --listen 127.0.0.1:$port \
  --node-id idle "$@" 2>"$dir/agent.log" &
ag=$!
sleep 1
MSRS_CONFIG=$conf "$bin/msrs-devsim" --url ws://127.0.0.1:$port/v1/devices --devices "$devices" \
  --samples none --profile lan 2>"$dir/devsim.log" &
ds=$!
sleep 20
t0=$(awk '{print $14+$15}' /proc/$ag/stat); s0=$(date +%s.%N)
sleep "$seconds"
t1=$(awk '{print $14+$15}' /proc/$ag/stat); s1=$(date +%s.%N)
echo "# bench/bench_idle.sh $devices $seconds $*  (load average $(cut -d' ' -f1-3 /proc/loadavg))"
awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v s0="$s0" -v s1="$s1" -v n="$devices" \
  'BEGIN { printf "idle agent, %d devices: %.2f %% of a core (%d ticks of 1/%d s in %.1f s)\n", n, t / hz / (s1 - s0) * 100, t, hz, s1 - s0 }'
