#!/usr/bin/python3
"""Backpressure with real processes: the log gets slower than the devices.

msrs-agent, msrs-syncd, msrs-collectord and msrs-devsim (2 devices, GSR +
IMU + a looped video clip at 4 Mbit/s each) record a session on one SQLite
log. In the middle of the session another connection takes the log's write
lock for 3 s — the log's writer cannot commit, as when a disk stalls. The
agent's flow thresholds are low (1 MB high, 250 kB low).

Checked:
- the agent tells every device `flow` slow_down when the backlog passes the
  high mark and `flow` resume when it is drained (its log and devsim's);
- devsim obeys (video frames skipped while slowed);
- nothing is lost: the counts devsim sent == CollectionStopped's, with no
  gaps and no drops, and every counted sample is in the log;
- the agent's resident memory stays bounded (< 64 MiB).

With --tls (ctest backpressure_tls) the same over wss:// with device
credentials (deploy/local/make-credentials.sh's configuration), where
the agent's TLS connections read ahead (cli_tls_read_ahead) and are
paused and resumed: nothing is lost either. (Whether records read ahead
before a pause wait for the resume itself or for the next bytes, this
test cannot tell: devices keep sending.)"""
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, Procs, devsim_sent, free_port, make_credentials, of_type, stop_all, tagged_counts, tail, wait_listening  # noqa: E402

check = Checks()


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-backpressure-")
    scheme = "ws"
    if "--tls" in sys.argv[1:]:
        os.environ["MSRS_CONFIG"] = make_credentials(tmp)
        scheme = "wss"
    db = os.path.join(tmp, "log.db")
    log = "sqlite:" + db
    port = free_port()
    procs = Procs(tmp)
    start, stderr_of = procs.start, procs.stderr_of

    try:
        agent = start("agent", ["msrs-agent", "--log", log, "--listen", "127.0.0.1:%d" % port,
                                "--node-id", "n1", "-X", "sync.interval_ms=1000",
                                "-X", "agent.report_delay_ms=500", "-X", "agent.max_message_bytes=4194304",
                                "-X", "agent.flow.high_bytes=1000000", "-X", "agent.flow.low_bytes=250000"])
        check(wait_listening(port), "agent listening")
        stats = os.path.join(tmp, "stats.json")
        sim = start("devsim", ["msrs-devsim", "--url", "%s://127.0.0.1:%d/v1/devices" % (scheme, port),
                               "--devices", "2", "--profile", "lan", "--video", "320x240@30",
                               "--video-bitrate", "4000000", "--video-loop", "30", "--stats", stats])
        start("syncd", ["msrs-syncd", "--log", log, "-X", "sync.max_uncertainty_us=2000"])
        start("collectord", ["msrs-collectord", "--log", log, "-X", "collect.lead_ms=800"])
        waiter = subprocess.Popen([os.path.join(BIN, "msrs"), "--log", log, "session", "start", "b1",
                                   "--min-group", "2", "--duration", "8", "--wait", "--timeout", "90"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = check.wait_for(lambda: of_type(tail(db, "sessions"), "CollectionStarted"), 60,
                                 "CollectionStarted")
        start_at = started[0]["value"]["start_at_ns"] / 1e9 if started else time.time()
        time.sleep(max(0.0, start_at - time.time()) + 2.0)

        # The log stalls: another connection holds the write lock for 3 s.
        other = sqlite3.connect(db, timeout=30, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        time.sleep(3.0)
        other.execute("COMMIT")
        other.close()

        out, err = waiter.communicate(timeout=90)
        check(waiter.returncode == 0, "msrs session start --wait: rc %s %s" % (waiter.returncode, err[-500:]))
        # 13 MiB in a release build; ASan's shadow and quarantine take it to
        # ~65 MiB (measured), so its bound is twice the release one
        bound = 128 if os.environ.get("MSRS_SANITIZED") else 64
        check(rss_kib(agent.pid) < bound * 1024,
              "agent peak RSS %d KiB < %d MiB" % (rss_kib(agent.pid), bound))
        sim.send_signal(signal.SIGTERM)
        check(sim.wait(20) == 0, "devsim exits cleanly")

        a_err, s_err = stderr_of("agent"), stderr_of("devsim")
        check("devices told to slow down" in a_err, "agent: slow_down when the backlog passed 1 MB")
        check("devices resume" in a_err, "agent: resume once the backlog drained")
        check("flow slow_down" in s_err and "flow resume" in s_err, "devsim received slow_down and resume")
        summary = [line for line in s_err.splitlines() if "flow:" in line]
        check(summary and " 0 video frames skipped" not in summary[-1],
              "devsim skipped video frames while slowed: %s" % summary)

        sent = devsim_sent(stats, "b1", True)
        stopped = of_type(tail(db, "sessions"), "CollectionStopped")
        check(len(stopped) == 1, "one CollectionStopped")
        streams = stopped[0]["value"]["streams"] if stopped else []
        reported = tagged_counts(streams, True)
        check(len(sent) == 6 and reported == sent, "CollectionStopped counts == devsim's: %s vs %s" % (reported, sent))
        check(all(s["dropped"] == 0 and s["gaps"] == 0 for s in streams), "no drops, no gaps")
        samples = [r["value"] for r in tail(db, "samples") if r["value"].get("session_id") == "b1"]
        in_log = {}
        for v in samples:
            k = (v["device_id"], v["stream_id"])
            in_log[k] = in_log.get(k, 0) + len(v["device_time_ns"])
        want = {k: v[0] for k, v in sent.items() if k[1] in ("gsr", "imu")}
        check(in_log == want, "every counted sample is in the log: %s vs %s" % (in_log, want))
    finally:
        stop_all(procs)
    if check.failures:
        print("kept", tmp)
    else:
        subprocess.run(["rm", "-rf", tmp])
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
