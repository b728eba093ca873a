#!/bin/sh
# bench_syscalls.sh — the agent's syscalls a second during a bench_sync run.
#
#   bench/bench_syscalls.sh [BENCH_SYNC ARGS...]
#   bench/bench_syscalls.sh --devices 1024 --profiles lan --seconds 40 --warmup-rounds 10 [--tls] [--bin DIR]
#
# Runs bench/bench_sync.py with the arguments given and, AT seconds into it
# (MSRS_SYSCALLS_AT, default 25: past the devices' connecting), counts
# every syscall the agent enters for SPAN seconds (MSRS_SYSCALLS_SPAN,
# default 10) with `perf stat` on the syscalls:sys_enter_* tracepoints
# (perf_event_paranoid must allow it; as root it does). Prints bench_sync's
# summary line, the agent's CPU split, then the syscalls a second (all,
# and each above 500 a second) and the load average at the end.
set -eu
at=${MSRS_SYSCALLS_AT:-25}
span=${MSRS_SYSCALLS_SPAN:-10}
here=$(cd "$(dirname "$0")" && pwd)
command -v perf >/dev/null || { echo "bench_syscalls.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
out=$(mktemp -d /tmp/msrs-syscalls.XXXXXX)
echo "# command: bench/bench_syscalls.sh $*"
python3 "$here/bench_sync.py" "$@" >"$out/sync.log" 2>&1 &
bench=$!
sleep "$at"
agent=$(pgrep -n -f 'bin/msrs-agent' || true)
if [ -z "$agent" ]; then
    wait "$bench" || true
    echo "bench_syscalls.sh: no msrs-agent running ${at}s into the run; bench_sync said:" >&2
    tail -20 "$out/sync.log" >&2
    exit 1
fi
perf stat -e 'syscalls:sys_enter_*' -p "$agent" -o "$out/stat" -- sleep "$span" >/dev/null 2>&1
wait "$bench"
grep -E '^ +[a-z]+ +[0-9]+ devices|agent cpu in user' "$out/sync.log"
sed 's/,//g' "$out/stat" | awk -v span="$span" '
    /syscalls:sys_enter_/ { n = $1 / span; all += n; name = $2; sub("syscalls:sys_enter_", "", name)
                            if (n >= 500) line[name] = n }
    END { printf "agent syscalls/s: %.0f (", all
          sep = ""; for (k in line) { printf "%s%s %.0f", sep, k, line[k]; sep = ", " }
          print ")" }'
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$out"
