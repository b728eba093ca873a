#!/usr/bin/python3
"""A stop command that reaches the agent after its stop instant (SQLite).

msrs-agent, msrs-syncd, msrs-collectord, msrs-archiver and msrs-devsim
(2 devices, GSR + IMU + video) record a session without a duration. 2 s
after the start instant the agent is frozen (SIGSTOP: a node too loaded to
read its commands), `msrs session stop` is asked, and the agent goes on
only 2 s later, a second after the stop instant. Until it sends `stop`,
the devices go on tagging what they send with the session.

Checked:
- the agent says it counted samples past the stop instant as late_stop;
- per stream, the report's samples + late_stop_samples == what devsim
  sent tagged with the session, and late_stop_samples > 0 for the sample
  streams;
- on the log, the tagged records whose first master time is at or after
  the stop instant are exactly the reported late_stop samples;
- CollectionStopped is complete (a late stop loses nothing of the window)
  and carries the late_stop counts;
- the archive is complete, without mismatches: per stream its samples are
  the reported ones, after_stop_samples the late_stop ones."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, Procs, free_port, of_type, stop_all, tail, wait_listening  # noqa: E402

check = Checks()


def first_master(value):
    t = value["master_time_ns"]
    return t[0] if isinstance(t, list) else t


def count(value):
    return len(value["master_time_ns"]) if isinstance(value["master_time_ns"], list) else 1


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-late-stop-")
    db = os.path.join(tmp, "log.db")
    log = "sqlite:" + db
    archive = os.path.join(tmp, "archive")
    os.mkdir(archive)
    port = free_port()
    procs = Procs(tmp)
    start, stderr_of = procs.start, procs.stderr_of
    try:
        agent = start("agent", ["msrs-agent", "--log", log, "--listen", "127.0.0.1:%d" % port, "--node-id", "n1",
                                "-X", "sync.interval_ms=1000", "-X", "agent.report_delay_ms=500"])
        check(wait_listening(port), "agent listening")
        stats = os.path.join(tmp, "stats.json")
        sim = start("devsim", ["msrs-devsim", "--url", "ws://127.0.0.1:%d/v1/devices" % port,
                               "--devices", "2", "--profile", "lan", "--video", "64x48@10", "--stats", stats])
        start("syncd", ["msrs-syncd", "--log", log, "-X", "sync.max_uncertainty_us=2000"])
        start("collectord", ["msrs-collectord", "--log", log])
        start("archiver", ["msrs-archiver", "--log", log, "--dir", archive])
        r = subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "session", "start", "late1",
                            "--min-group", "2"], capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, "session start: %s" % r.stderr[-300:])
        started = check.wait_for(lambda: of_type(tail(db, "sessions"), "CollectionStarted"), 60,
                                 "CollectionStarted")
        start_at = started[0]["value"]["start_at_ns"] if started else time.time_ns()
        time.sleep(max(0.0, start_at / 1e9 - time.time()) + 2.0)

        agent.send_signal(signal.SIGSTOP)
        r = subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "session", "stop", "late1"],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, "session stop: %s" % r.stderr[-300:])
        time.sleep(2.0)  # the stop instant is collect.lead_ms (1 s) after the request
        agent.send_signal(signal.SIGCONT)

        stopped = check.wait_for(lambda: of_type(tail(db, "sessions"), "CollectionStopped"), 60,
                                 "CollectionStopped")
        manifest_path = os.path.join(archive, "late1", "manifest.json")
        check.wait_for(lambda: os.path.exists(manifest_path), 60, "the archive's manifest")
        sim.send_signal(signal.SIGTERM)
        check(sim.wait(20) == 0, "devsim exits cleanly")

        check("counted as late_stop" in stderr_of("agent"),
              "the agent counted data past the stop instant as late_stop")
        stop_at = next((r["value"]["stop_at_ns"] for r in of_type(tail(db, "commands"), "StopRecording")), 0)
        reports = [r["value"] for r in of_type(tail(db, "sessions"), "RecordingReport")]
        check(len(reports) == 1, "one RecordingReport: %s" % reports)
        reported = {(s["device_id"], s["stream_id"]): s for rep in reports for s in rep["streams"]}
        sent = json.load(open(stats)).get("late1", {})
        want = {(d, s): c["samples"] for d, ss in sent.items() for s, c in ss.items()}
        got = {k: s["samples"] + s["late_stop_samples"] for k, s in reported.items()}
        check(want and got == want, "samples + late_stop_samples == devsim's: %s vs %s" % (got, want))
        for k, s in reported.items():
            if k[1] != "rgb":
                check(s["late_stop_samples"] > 0, "%s/%s: late_stop_samples > 0: %s" % (k + (s,)))

        past = {}
        for topic in ("samples", "media"):
            for rec in tail(db, topic):
                v = rec["value"]
                if v["session_id"] == "late1" and first_master(v) >= stop_at:
                    k = (v["device_id"], v["stream_id"])
                    past[k] = past.get(k, 0) + count(v)
        late = {k: s["late_stop_samples"] for k, s in reported.items() if s["late_stop_samples"]}
        check(past == late, "tagged records past the stop instant == late_stop: %s vs %s" % (past, late))

        cs = stopped[0]["value"] if stopped else {}
        check(cs.get("complete") is True and not cs.get("incomplete"),
              "CollectionStopped complete: %s" % cs.get("incomplete"))
        check({(s["device_id"], s["stream_id"]): s["late_stop_samples"] for s in cs.get("streams", [])} ==
              {k: s["late_stop_samples"] for k, s in reported.items()},
              "CollectionStopped carries the late_stop counts")

        m = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {}
        check(m.get("complete") is True and not m.get("mismatches"),
              "the archive is complete: %s %s" % (m.get("incomplete"), m.get("mismatches")))
        for (dev, stream), s in reported.items():
            a = m.get("devices", {}).get(dev, {}).get("streams", {}).get(stream, {})
            check(a.get("samples") == s["samples"] and a.get("after_stop_samples") == s["late_stop_samples"],
                  "%s/%s archived: samples %s == %s, after_stop %s == %s" % (
                      dev, stream, a.get("samples"), s["samples"], a.get("after_stop_samples"),
                      s["late_stop_samples"]))
    finally:
        stop_all(procs)
    if check.failures:
        print("kept", tmp)
    else:
        subprocess.run(["rm", "-rf", tmp])
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
