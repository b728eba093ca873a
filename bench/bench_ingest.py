#!/usr/bin/python3
"""Ingest benchmark: devices -> agent -> SQLite log -> archive.

Runs msrs-agent, msrs-syncd, msrs-collectord, msrs-archiver and msrs-devsim
(N devices, each GSR 128 Hz + IMU 100 Hz + video) on a fresh SQLite log,
records one session with `msrs session start --wait`, and reports:
  - ingest MB/s: bytes the devices delivered in the session (CollectionStopped)
    / session duration, and whether anything was dropped or is missing;
  - archive MB/s: the same bytes / (stop of the session's data at the
    archive: manifest written - start_at), and complete=true/false; how far
    behind the log the archiver was while recording (its /metrics
    msrs_consumer_lag_records every 0.25 s) and how long after the stop its
    manifest came (hashing, syncing and renaming included);
  - sample-to-log latency p50/p99: a `msrs-tail --follow` reader stamps each
    SensorSampleBatch of the session when it sees it, minus the master time
    of the batch's last sample;
  - the raw ceiling in the same run: SQLite inserts of blobs of the session's
    mean video packet size (same WAL, synchronous=FULL, one transaction per
    50 rows) through Python's sqlite3 module;
  - CPU seconds of agent and archiver.
Video is a pre-encoded clip looped (devsim --video-loop) at --bitrate bits/s
per device, so the devices are not the bottleneck on a 2-core machine.

  bench/bench_ingest.py --devices 8 --seconds 20 --video 1280x720@30 --bitrate 100e6
"""
import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "pylib"))
from msrstest import BIN, free_port, tail, time_ns, wait_listening  # noqa: E402


# Plain transport without credentials (tests/plain.conf) unless MSRS_CONFIG
# names another configuration: the TLS figures are a run with one that
# sets tls.* and auth.* (docs/security.md).
os.environ.setdefault("MSRS_CONFIG", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                  "tests", "plain.conf"))


def cpu_s(pid):
    try:
        f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def raw_sqlite_mb_s(path, size, seconds=5.0):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
    blob = os.urandom(size)
    n, t0 = 0, time.time()
    while time.time() - t0 < seconds:
        db.execute("BEGIN")
        for _ in range(50):
            db.execute("INSERT INTO t (k, v) VALUES (?, ?)", ("cam-1", blob))
        db.execute("COMMIT")
        n += 50
    dt = time.time() - t0
    db.close()
    return n * size / dt / 1e6


def pcts(xs):
    xs = sorted(xs)
    if not xs:
        return "no data"
    at = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
    return "p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (at(0.5), at(0.99), xs[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--video", default="1280x720@30")
    ap.add_argument("--bitrate", type=float, default=100e6, help="video bits/s per device")
    ap.add_argument("--codec", default="mpeg4")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    cmd = "bench/bench_ingest.py " + " ".join(sys.argv[1:])

    tmp = tempfile.mkdtemp(prefix="msrs-bench-ingest-")
    db, archive = os.path.join(tmp, "log.db"), os.path.join(tmp, "archive")
    log = "sqlite:" + db
    port = free_port()
    procs = {}

    def start(name, argv, **kw):
        procs[name] = subprocess.Popen([os.path.join(BIN, argv[0])] + argv[1:], stderr=open(os.path.join(tmp, name + ".log"), "w"), **kw)
        return procs[name]

    lat, to_emit, to_visible, stop_reader = [], [], [], threading.Event()
    arch_ops, arch_lag = free_port(), []
    try:
        start("agent", ["msrs-agent", "--log", log, "--listen", "127.0.0.1:%d" % port, "--node-id", "n1",
                        "-X", "agent.max_message_bytes=8388608", "-X", "sync.interval_ms=1000"])
        wait_listening(port)
        start("syncd", ["msrs-syncd", "--log", log])
        start("collectord", ["msrs-collectord", "--log", log])
        start("archiver", ["msrs-archiver", "--log", log, "--dir", archive,
                           "-X", "ops.listen=127.0.0.1:%d" % arch_ops], stdout=subprocess.PIPE)
        start("devsim", ["msrs-devsim", "--url", "ws://127.0.0.1:%d/v1/devices" % port, "--devices",
                         str(args.devices), "--profile", "lan", "--video", args.video, "--video-codec", args.codec,
                         "--video-bitrate", "%d" % args.bitrate, "--video-loop", "30"])
        time.sleep(2)
        reader = subprocess.Popen([os.path.join(BIN, "msrs-tail"), "--log", log, "--topic", "samples",
                                   "--from", "end", "--follow"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

        def read():
            for line in reader.stdout:
                now = time.time_ns()
                try:
                    rec = json.loads(line)
                    v = rec["value"]
                except ValueError:
                    continue
                if v.get("session_id") and v["master_time_ns"]:
                    emitted = time_ns(rec["time"])
                    lat.append((now - v["master_time_ns"][-1]) / 1e6)
                    to_emit.append((emitted - v["master_time_ns"][-1]) / 1e6)
                    to_visible.append((now - emitted) / 1e6)
                if stop_reader.is_set():
                    break
        th = threading.Thread(target=read, daemon=True)
        th.start()

        def watch_archiver():
            """The archiver's consumer lag (records of its topics it has not
            read), every 0.25 s: whether it keeps up while recording."""
            while not stop_reader.is_set():
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % arch_ops, timeout=2) as r:
                        for line in r.read().decode().splitlines():
                            if line.startswith("msrs_consumer_lag_records "):
                                arch_lag.append((time.time_ns(), float(line.split()[1])))
                except OSError:
                    pass
                time.sleep(0.25)
        threading.Thread(target=watch_archiver, daemon=True).start()
        cpu0 = {n: cpu_s(p.pid) for n, p in procs.items()}
        r = subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "session", "start", "bench",
                            "--min-group", str(args.devices), "--duration", str(args.seconds), "--wait",
                            "--timeout", str(args.seconds + 300)], capture_output=True, text=True)
        if r.returncode != 0:
            print("session failed:", r.stderr[-2000:])
            return 1
        manifest = os.path.join(archive, "bench", "manifest.json")
        t_stop = time.time()
        t_stop_ns = time.time_ns()
        while not os.path.exists(manifest) and time.time() - t_stop < 300:
            time.sleep(0.1)
        t_archived = time.time_ns()
        cpu1 = {n: cpu_s(p.pid) for n, p in procs.items()}
        stop_reader.set()
        reader.terminate()
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait()
    sessions = tail(db, "sessions")
    started = [x["value"] for x in sessions if x["type"].endswith("CollectionStarted")][0]
    stopped = [x["value"] for x in sessions if x["type"].endswith("CollectionStopped")][0]
    m = json.load(open(manifest)) if os.path.exists(manifest) else {}
    total = sum(s["bytes"] for s in stopped["streams"])
    video = [s for s in stopped["streams"] if s["stream_id"] == "rgb"]
    packets = sum(s["samples"] for s in video)
    mean_pkt = sum(s["bytes"] for s in video) // max(packets, 1)
    dropped = sum(s["dropped"] for s in stopped["streams"])
    gaps = sum(s["gaps"] for s in stopped["streams"])
    dur = stopped["duration_ns"] / 1e9
    arch_s = (t_archived - started["start_at_ns"]) / 1e9
    raw = raw_sqlite_mb_s(os.path.join(tmp, "raw.db"), mean_pkt)
    ingest = total / dur / 1e6
    print("# %s" % cmd)
    print("devices %d, video %s %s at %.0f Mbit/s each (mean packet %d bytes), %.1f s session"
          % (args.devices, args.video, args.codec, args.bitrate / 1e6, mean_pkt, dur))
    print("| measure | value |")
    print("|---|---|")
    print("| ingest device -> SQLite log | **%.1f MB/s** (%d MB, %d video packets, %d dropped, %d gaps) |"
          % (ingest, total / 1e6, packets, dropped, gaps))
    print("| raw SQLite blob insert, same run | %.1f MB/s -> ratio %.2f |" % (raw, ingest / raw))
    print("| archive (start -> manifest) | %.1f MB/s over %.1f s, complete=%s |"
          % (total / arch_s / 1e6, arch_s, m.get("complete")))
    during = [n for t, n in arch_lag if started["start_at_ns"] <= t <= t_stop_ns]
    if during:
        during.sort()
        rate = (packets + len(lat)) / dur  # video packets and sample batches a second
        print("| archiver behind the log while recording (records not yet read, every 0.25 s) "
              "| p50 %d, max %d (%.2f s of the session's records) |"
              % (during[len(during) // 2], during[-1], during[-1] / max(rate, 1)))
    print("| archive finished after the stop | %.1f s |" % ((t_archived - t_stop_ns) / 1e9))
    print("| sample -> visible in the log | **%s** (%d batches) |" % (pcts(lat), len(lat)))
    print("| of which sample -> agent emits (device batching, network, agent parse) | %s |" % pcts(to_emit))
    print("| of which agent emits -> visible (flush, SQLite commit, reader) | %s |" % pcts(to_visible))
    print("| CPU s (agent, archiver, devsim) | %.1f, %.1f, %.1f |" % tuple(
        cpu1[n] - cpu0[n] for n in ("agent", "archiver", "devsim")))
    if not args.keep:
        subprocess.run(["rm", "-rf", tmp])
    else:
        print("kept", tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
