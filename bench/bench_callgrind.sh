#!/bin/sh
# Instructions per record of bench_log's paths beside the raw library's,
# counted by callgrind: unlike wall-clock rates they repeat exactly whatever
# else the machine does (issue 22). bench_log runs each measured loop once
# under valgrind and dumps its count when its row prints; every row after
# a "raw ..." row is compared with it (ratio = raw instructions / ours, so
# it reads like bench_log's rate ratios: 1.0 = as cheap as the raw library).
# Only the calling thread counts: a dump at a client request holds the
# thread that asks (--separate-threads=yes; without it a dump also held
# threads that had ended before the loop, which its zeroing did not reach).
# Rows whose work runs on other threads — the SQLite log's writer, librdkafka
# and the mock cluster, the fold's reading thread — are named, not counted.
#
# threads counts the log's write path on every thread: raw SQLite INSERT
# and ev_log on SQLite (with its writer thread), raw librdkafka produce and
# ev_log on Kafka (with librdkafka's threads), each alone in a process of
# its own (bench_log_cg produce-raw|ev --log ...); Kafka's broker is
# msrs-mockbroker in another process, so none of the counted threads is the
# broker's. Each runs with RECORDS/10 and RECORDS records; instructions per
# record = the difference of the two totals / the difference of the counts,
# so start-up and shut-down drop out.
#
# It runs bench_log_cg, bench_log without the archive path: the archive
# library's ffmpeg loads libhwy, whose constructor runs RDTSCP, which
# valgrind 3.19 cannot (SIGILL) — the archive path has wall-clock figures
# only (bench_log archive).
#
# usage: bench/bench_callgrind.sh [codec|sqlite|kafka|threads|replay|all] [RECORDS] [BIN]
#   RECORDS: bench_log --records (default 20000; codec runs 4x and replay
#   2x of it, as bench_log does); BIN: build/bin
set -eu
what=${1:-all}
records=${2:-20000}
bin=${3:-build/bin}
case $what in
codec | sqlite | kafka | threads | replay | all) ;;
-h | --help)
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "bench_callgrind: unknown path '$what' (expected codec, sqlite, kafka, threads, replay or all)" >&2
    exit 2
    ;;
esac
command -v valgrind > /dev/null || {
    echo "bench_callgrind: valgrind is not installed (deploy/install-deps.sh installs it)" >&2
    exit 2
}
[ -x "$bin/bench_log_cg" ] || {
    echo "bench_callgrind: $bin/bench_log_cg: not built (cmake --build build)" >&2
    exit 2
}
out=$(mktemp -d /tmp/msrs-callgrind-XXXXXX)
trap 'rm -rf "$out"' EXIT
echo "# command: bench/bench_callgrind.sh $what $records $bin"

# threads: one write path per process, every thread counted
log_threads() {
    [ -x "$bin/msrs-mockbroker" ] || {
        echo "bench_callgrind: $bin/msrs-mockbroker: not built (cmake --build build)" >&2
        exit 2
    }
    small=$((records / 10))
    echo "# threads: valgrind --tool=callgrind $bin/bench_log_cg produce-raw|produce-ev --log sqlite:DIR|kafka:(msrs-mockbroker) --records $small|$records (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
    for backend in sqlite kafka; do
        for path in raw ev; do
            for n in $small $records; do
                broker=
                if [ $backend = kafka ]; then
                    rm -f "$out/bootstrap"
                    "$bin/msrs-mockbroker" --prefix bench. --bootstrap-file "$out/bootstrap" \
                        > /dev/null 2> "$out/broker.txt" &
                    broker=$!
                    for _ in $(seq 100); do
                        [ -s "$out/bootstrap" ] && break
                        sleep 0.1
                    done
                    [ -s "$out/bootstrap" ] || {
                        echo "bench_callgrind: msrs-mockbroker did not start:" >&2
                        cat "$out/broker.txt" >&2
                        exit 1
                    }
                    target="kafka:$(cat "$out/bootstrap")"
                else
                    mkdir -p "$out/db.$path.$n"
                    target="sqlite:$out/db.$path.$n"
                fi
                run="$out/t.$backend.$path.$n"
                valgrind --tool=callgrind --callgrind-out-file="$run.cg.%p" \
                    "$bin/bench_log_cg" "produce-$path" --log "$target" --records "$n" \
                    > "$run.txt" 2> "$run.valgrind" || {
                    echo "bench_callgrind: bench_log_cg produce-$path --log $target failed under valgrind:" >&2
                    tail -20 "$run.valgrind" >&2
                    [ -z "$broker" ] || kill "$broker"
                    exit 1
                }
                if [ -n "$broker" ]; then
                    kill "$broker"
                    wait "$broker" 2> /dev/null || true
                fi
            done
        done
    done
    /usr/bin/python3 - "$out" "$small" "$records" << 'EOF'
import glob, os, sys
out, small, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def total(backend, path, n):
    """Every part of the process's profile (its threads are not separated)."""
    t = 0
    for f in glob.glob(os.path.join(out, "t.%s.%s.%d.cg.*" % (backend, path, n))):
        for line in open(f, errors="replace"):
            if line.startswith("summary:") or line.startswith("totals:"):
                t += int(line.split()[1])
                break
    return t
print("%-50s %14s %8s" % ("path (every thread of the process)", "instr/record", "ratio"))
for backend, raw_name in (("sqlite", "raw SQLite batched INSERT"),
                          ("kafka", "raw librdkafka produce + flush")):
    per = {p: (total(backend, p, big) - total(backend, p, small)) / (big - small)
           for p in ("raw", "ev")}
    print("%-50s %14.0f" % (raw_name, per["raw"]))
    print("%-50s %14.0f %8.2f" % ("ev_log_produce + flush (%s)" % backend, per["ev"],
                                  per["raw"] / per["ev"]))
EOF
}
if [ "$what" = threads ]; then
    log_threads
    exit 0
fi
echo "# valgrind --tool=callgrind $bin/bench_log_cg $what --records $records (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.%p" \
    "$bin/bench_log_cg" "$what" \
    --records "$records" > "$out/bench.txt" 2> "$out/valgrind.txt" || {
    echo "bench_callgrind: bench_log_cg failed under valgrind:" >&2
    tail -20 "$out/valgrind.txt" >&2
    exit 1
}
/usr/bin/python3 - "$out" << 'EOF'
import glob, os, re, sys
# --separate-threads=yes: a dump's file per thread (cg.PID.PART-THREAD); a
# client request's dump holds the asking thread. (Without it a dump also
# held threads that had ended before the loop, whose counts its zeroing did
# not reach: replay's raw read counted 19.5 k instructions a record, not 11.5 k.)
parts = {}
for path in glob.glob(os.path.join(sys.argv[1], "cg.*.*-*")):
    m = re.search(r"\.(\d+)-\d+$", path)
    if not m:
        continue
    desc, total = None, None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("desc: Trigger: Client Request: row;"):
                desc = line.split("Client Request: ", 1)[1].strip()
            elif line.startswith("summary:") or (total is None and line.startswith("totals:")):
                total = int(line.split()[1])
    if desc and total is not None:
        d, t = parts.get(int(m.group(1)), (desc, 0))
        parts[int(m.group(1))] = (d, t + total)
rows = [(k, d, t) for k, (d, t) in parts.items()]
if not rows:
    sys.exit("bench_callgrind: no row was dumped (is bench_log built with valgrind/callgrind.h?)")
print("%-50s %14s %8s" % ("path", "instr/record", "ratio"))
raw = None
for _, desc, total in sorted(rows):
    _, name, n, threads = desc.split(";")
    per = total / int(n)
    if threads == "1":
        print("%-50s %s" % (name, "  (its work runs on other threads: not counted)"))
    elif name.startswith("raw"):
        raw = per
        print("%-50s %14.0f" % (name, per))
    elif raw and not name.startswith("  of which"):
        print("%-50s %14.0f %8.2f" % (name, per, raw / per))
    else:
        print("%-50s %14.0f" % (name, per))
EOF
[ "$what" != all ] || log_threads
