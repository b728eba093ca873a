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
  and the StopRecording's report lets them go idle again."""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, free_port, of_type, stop_all, tail, wait_listening  # noqa: E402

check = Checks()
FAST, IDLE = 0.2, 1.5
DEVICES = ["sim-1", "sim-2", "sim-3", "sim-4"]


def rounds(db):
    """Per device, the times (s) of its rounds' ClockOffsetMeasured records."""
    out = {d: [] for d in DEVICES}
    for r in of_type(tail(db, "devices"), "ClockOffsetMeasured"):
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


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-sync-cadence-")
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
        # 32 burst rounds fill a window (more if a probe goes unanswered);
        # by the 37th the idle cadence has begun
        full = check.wait_for(lambda: all(len(t) >= 37 for t in rounds(db).values()), 60,
                              "every device's window full (37 rounds)")
        if not full:
            return check.finish()
        r = rounds(db)
        for d in DEVICES:
            g = gaps(r[d], 0, r[d][30])
            check(g and max(g) < 0.5 and sum(g) / len(g) < 0.35,
                  "%s: filling, a round every ~%.1f s: mean %.2f s, max %.2f s"
                  % (d, FAST, sum(g) / len(g), max(g)))
        time.sleep(8)
        r = rounds(db)
        spread = []
        for d in DEVICES:
            g = gaps(r[d], r[d][36], time.time())
            spread += g
            check(len(g) >= 3 and all(0.9 * IDLE - 0.05 <= x <= 1.1 * IDLE + 0.4 for x in g),
                  "%s: idle and full, a round every %.1f s (0.9-1.1 x): %s"
                  % (d, IDLE, ["%.2f" % x for x in g]))
        check(len(set(round(x, 2) for x in spread)) > len(spread) // 2,
              "the idle intervals are drawn, not equal: %s" % sorted("%.2f" % x for x in spread))

        # Recording: back to the fast cadence at once, for every device
        t_rec = time.time()
        emit(log, "StartRecording", {"node_id": "n1", "session_id": "s1", "start_at_ns": time.time_ns() + 500000000})
        time.sleep(4)
        r = rounds(db)
        firsts = []
        for d in DEVICES:
            after = [t for t in r[d] if t > t_rec]
            # heard within the commands cursor's 100 ms, then a round within
            # one interval (0.2 s) and its 8 probes (~50 ms)
            check(after and after[0] < t_rec + 0.6,
                  "%s: a round at once after StartRecording: %s" % (d, "%.2f s" % (after[0] - t_rec) if after else "none"))
            firsts += after[:1]
            g = gaps(r[d], t_rec, time.time())
            check(len(g) >= 10 and max(g) < 0.5,
                  "%s: recording, a round every ~%.1f s again: %d rounds, max gap %s"
                  % (d, FAST, len(g) + 1, "%.2f" % max(g) if g else "-"))
        check(len(firsts) == 4 and max(firsts) - min(firsts) > 0.005,
              "the devices' first rounds while recording are not all in step: %s"
              % ["%.3f" % (t - t_rec) for t in firsts])
        emit(log, "StopRecording", {"node_id": "n1", "session_id": "s1", "stop_at_ns": time.time_ns() + 200000000})
        check.wait_for(lambda: of_type(tail(db, "sessions"), "RecordingReport"), 20, "RecordingReport")
        t_done = time.time()
        time.sleep(5)
        r = rounds(db)
        for d in DEVICES:
            g = gaps(r[d], t_done + 1.7, time.time())
            check(len(g) >= 1 and all(x > 0.9 * IDLE - 0.05 for x in g),
                  "%s: idle again after the report: %s" % (d, ["%.2f" % x for x in g]))
    finally:
        stop_all(procs)
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
