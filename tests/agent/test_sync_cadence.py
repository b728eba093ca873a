#!/usr/bin/python3
"""The clock-sync cadence (docs/protocol.md, "Clock synchronisation"), with
a real msrs-agent and msrs-devsim (4 devices, no samples) on a SQLite log,
read back from the log's ClockOffsetMeasured records:

- while a device's window (512 probes) fills, a round every sync.interval_ms
  (here 200 ms, burst rounds of 16 probes: full after 32 rounds);
- once full and while the node records nothing, a round every
  sync.idle_interval_ms (here 1500 ms);
- each interval drawn from 0.9 to 1.1 times its value: the intervals differ;
- a StartRecording puts every device back at sync.interval_ms at once (a
  round within one interval of the command, the devices not all in step),
  and the StopRecording's report lets them go idle again;
- a node starts at most sync.max_rounds_per_s rounds a second: 24 devices
  that join at once with a cap of 8 get their first rounds over seconds."""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, free_port, of_type, stop_all, tail, wait_listening  # noqa: E402

check = Checks()
FAST, IDLE = 0.2, 4.0
# A gap includes the round itself (probes answered late on a loaded machine,
# ASan in CI): the cadences are told apart by half the idle interval.
FAST_MAX = IDLE / 2
DEVICES = ["sim-1", "sim-2", "sim-3", "sim-4"]


def rounds(db):
    """Per device, the times (s) of its rounds' ClockOffsetMeasured records."""
    out = {d: [] for d in DEVICES}
    for r in of_type(tail(db, "clock"), "ClockOffsetMeasured"):
        out.setdefault(r["value"]["device_id"], []).append(r["timestamp"] / 1000.0)
    return out


def gaps(times, t0, t1):
    """Intervals between consecutive rounds that both fall in [t0, t1)."""
    inside = [t for t in times if t0 <= t < t1]
    return [b - a for a, b in zip(inside, inside[1:])]


def emit(log, kind, value):
    r = subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "emit", kind, json.dumps(value)],
                       capture_output=True, text=True)
    check(r.returncode == 0, "%s emitted: %s" % (kind, r.stderr.strip()))


def capped(tmp):
    """24 devices join at once; the agent starts at most 8 rounds a second."""
    db = os.path.join(tmp, "capped.db")
    port = free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(
            [os.path.join(BIN, "msrs-agent"), "--log", "sqlite:" + db, "--listen", "127.0.0.1:%d" % port,
             "--node-id", "n2", "-X", "sync.max_rounds_per_s=8", "-X", "sync.probe_spacing_ms=2"],
            stderr=open(os.path.join(tmp, "capped-agent.err"), "w")))
        check(wait_listening(port), "capped agent listening")
        procs.append(subprocess.Popen(
            [os.path.join(BIN, "msrs-devsim"), "--url", "ws://127.0.0.1:%d/v1/devices" % port, "--devices", "24",
             "--samples", "none", "--profile", "lan"], stderr=open(os.path.join(tmp, "capped-devsim.err"), "w")))
        ok = check.wait_for(lambda: len(of_type(tail(db, "clock"), "ClockOffsetMeasured")) >= 24, 30,
                            "24 rounds with a cap of 8 a second")
        if not ok:
            return
        ends = sorted(r["timestamp"] / 1000.0 for r in of_type(tail(db, "clock"), "ClockOffsetMeasured"))
        first = ends[0]
        # rounds start in windows of one second (the agent's, not the first
        # round's): any 0.9 s holds the ends of at most two windows' rounds
        most = max(sum(1 for t in ends if s <= t < s + 0.9) for s in ends)
        check(most <= 16, "at most 2 x 8 rounds end within 0.9 s, got %d" % most)
        check(ends[23] - first >= 0.9, "the first 24 rounds took %.2f s (3 windows of 8)" % (ends[23] - first))
    finally:
        stop_all(procs)


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-sync-cadence-")
    capped(tmp)
    db = os.path.join(tmp, "log.db")
    log = "sqlite:" + db
    port = free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(
            [os.path.join(BIN, "msrs-agent"), "--log", log, "--listen", "127.0.0.1:%d" % port, "--node-id", "n1",
             "-X", "sync.interval_ms=%d" % (FAST * 1000), "-X", "sync.idle_interval_ms=%d" % (IDLE * 1000),
             "-X", "sync.probe_spacing_ms=2", "-X", "agent.report_delay_ms=200"],
            stderr=open(os.path.join(tmp, "agent.err"), "w")))
        check(wait_listening(port), "agent listening")
        procs.append(subprocess.Popen(
            [os.path.join(BIN, "msrs-devsim"), "--url", "ws://127.0.0.1:%d/v1/devices" % port, "--devices", "4",
             "--samples", "none", "--profile", "lan"], stderr=open(os.path.join(tmp, "devsim.err"), "w")))
        # 32 burst rounds fill a window (more if probes go unanswered), then
        # the idle cadence: wait for three idle gaps per device
        def idle_gaps(times):
            g = [b - a for a, b in zip(times, times[1:])]
            return g[next((i for i, x in enumerate(g) if x > FAST_MAX), len(g)):]
        full = check.wait_for(lambda: all(len(idle_gaps(t)) >= 3 for t in rounds(db).values()), 120,
                              "every device's window full and three idle rounds")
        if not full:
            return check.finish()
        r = rounds(db)
        spread = []
        for d in DEVICES:
            g = [b - a for a, b in zip(r[d], r[d][1:])]
            filling = g[:30]
            check(len(filling) == 30 and sum(filling) / 30 < FAST_MAX / 2,
                  "%s: filling, a round every ~%.1f s: mean %.2f s" % (d, FAST, sum(filling) / max(len(filling), 1)))
            idle = idle_gaps(r[d])
            spread += idle
            check(all(0.9 * IDLE - 0.05 <= x <= 1.1 * IDLE + 0.5 for x in idle),
                  "%s: idle and full, a round every %.1f s (0.9-1.1 x): %s"
                  % (d, IDLE, ["%.2f" % x for x in idle]))
        check(len(set(round(x, 2) for x in spread)) > len(spread) // 2,
              "the idle intervals are drawn, not equal: %s" % sorted("%.2f" % x for x in spread))

        # Recording: back to the fast cadence at once, for every device
        t_rec = time.time()
        emit(log, "StartRecording", {"node_id": "n1", "session_id": "s1", "start_at_ns": time.time_ns() + 500000000})
        time.sleep(5)
        r = rounds(db)
        firsts = []
        for d in DEVICES:
            after = [t for t in r[d] if t > t_rec]
            # heard within the commands cursor's 100 ms, then a round within
            # one interval (0.2 s) and its 8 probes (~50 ms)
            check(after and after[0] < t_rec + IDLE / 4,
                  "%s: a round at once after StartRecording: %s" % (d, "%.2f s" % (after[0] - t_rec) if after else "none"))
            firsts += after[:1]
            g = gaps(r[d], t_rec, time.time())
            check(len(g) >= 8 and max(g) < FAST_MAX,
                  "%s: recording, a round every ~%.1f s again: %d rounds, max gap %s"
                  % (d, FAST, len(g) + 1, "%.2f" % max(g) if g else "-"))
        check(len(firsts) == 4 and max(firsts) - min(firsts) > 0.005,
              "the devices' first rounds while recording are not all in step: %s"
              % ["%.3f" % (t - t_rec) for t in firsts])
        emit(log, "StopRecording", {"node_id": "n1", "session_id": "s1", "stop_at_ns": time.time_ns() + 200000000})
        check.wait_for(lambda: of_type(tail(db, "sessions"), "RecordingReport"), 20, "RecordingReport")
        t_done = time.time()
        time.sleep(10)
        r = rounds(db)
        for d in DEVICES:
            g = gaps(r[d], t_done + 1.0, time.time())
            check(len(g) >= 1 and all(x > 0.9 * IDLE - 0.05 for x in g),
                  "%s: idle again after the report: %s" % (d, ["%.2f" % x for x in g]))
    finally:
        stop_all(procs)
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
