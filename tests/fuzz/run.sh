#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ and runs each on a
# copy of its seed corpus (tests/fuzz/corpus/<target>/) for a bounded time.
#   tests/fuzz/run.sh [SECONDS_PER_TARGET]   default 60
#   FUZZ_TARGETS="fuzz_frame fuzz_conf" tests/fuzz/run.sh 20   only these
#   FUZZ_RUNS=10000000 tests/fuzz/run.sh    a number of executions instead
#                                           of a time (no time limit)
#   FUZZ_RESUME=1 ...                       start from the corpus the last run
#                                           left in build-fuzz/fuzz-work/<target>
# Exit 1 on any crash, leak or sanitizer report (the input is kept in
# build-fuzz/artifacts/<target>/); prints per target the executions done.
# Leaks are looked for once, when a target exits (libFuzzer's per-input
# leak check re-runs every input whose mallocs and frees differ, and the
# log's writer thread frees on its own time: it cost fuzz_device_msg 60 %
# of its executions); a leak found then fails the run like any other.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
runs=${FUZZ_RUNS:-}
case "$seconds$runs" in '' | *[!0-9]*) echo "usage: [FUZZ_RUNS=N] $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;; esac
if [ -n "$runs" ]; then limit=(-runs="$runs"); what="$runs runs"; else limit=(-max_total_time="$seconds"); what="${seconds}s"; fi
targets=${FUZZ_TARGETS:-fuzz_frame fuzz_json_avro fuzz_conf fuzz_device_msg fuzz_archive_fold}
build=build-fuzz

CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMSRS_FUZZ=ON >/dev/null
# shellcheck disable=SC2086
cmake --build "$build" -j2 --target $targets >/dev/null

# the targets' temporary files (config, SQLite log, archive folder) in memory
[ -w /dev/shm ] && export TMPDIR=/dev/shm
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=1"
export LSAN_OPTIONS="suppressions=$PWD/tests/fuzz/lsan.supp"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
status=0
for t in $targets; do
  work="$build/fuzz-work/$t"
  artifacts="$build/artifacts/$t"
  # FUZZ_RESUME=1: go on from the corpus the last run of this target grew
  # (its executions add up: the counts of every run and their logs, kept
  # as $t.log.N, are what a total is made of)
  if [ "${FUZZ_RESUME:-0}" != 1 ]; then rm -rf "$work"; fi
  mkdir -p "$work" "$artifacts"
  cp -n tests/fuzz/corpus/"$t"/* "$work"/
  logf="$build/fuzz-work/$t.log"
  if [ -f "$logf" ]; then n=1; while [ -f "$logf.$n" ]; do n=$((n + 1)); done; mv "$logf" "$logf.$n"; fi
  rc=0
  start=$(date +%s)
  "$build/bin/$t" "${limit[@]}" -detect_leaks=0 -print_final_stats=1 -timeout=10 \
    -rss_limit_mb=2048 -max_len=65536 -artifact_prefix="$artifacts/" "$work" >"$logf" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logf" | tail -1)
  took=$(($(date +%s) - start))
  if [ "$rc" -ne 0 ] || grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' "$logf"; then
    echo "$t: FAILED (exit $rc) after ${execs:-?} executions (limit $what) in ${took}s; log $logf, input in $artifacts/" >&2
    grep -E 'ERROR:|runtime error:|SUMMARY' "$logf" | head -5 >&2
    status=1
  else
    echo "$t: ok, ${execs:-?} executions in ${took}s"
  fi
done
exit $status
