#!/usr/bin/python3
"""A stop command that reaches the agent after its stop instant (SQLite).

msrs-agent, msrs-syncd, msrs-collectord, msrs-archiver and msrs-devsim
(2 devices, GSR + IMU + video) record two sessions in a row (the second
on the same devices), each without a duration. 2 s after the start
instant a process is frozen (SIGSTOP), `msrs session stop` is asked, and
the process goes on only 2 s later, a second after the stop instant: in
the first session the agent (a node too loaded to read its commands), in
the second collectord (the stop command itself is late: the agent has
counted what came past the instant before it knows the instant). Until
the agent sends `stop`, the devices go on tagging what they send with the
session.

Checked, for each session:
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


SESSIONS = ("late1", "late2")  # the second on the same devices: what the first left must not count


def record_late_stop(sid, log, db, frozen):
    """Starts sid; 2 s in, freezes the process frozen across the stop
    instant (the agent: it reads the stop late; collectord: it sends it
    late, while the agent goes on counting what the devices tag)."""
    r = subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "session", "start", sid,
                        "--min-group", "2"], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "%s: session start: %s" % (sid, r.stderr[-300:]))
    started = check.wait_for(lambda: [x for x in of_type(tail(db, "sessions"), "CollectionStarted")
                                      if x["value"]["session_id"] == sid], 60, "%s: CollectionStarted" % sid)
    start_at = started[0]["value"]["start_at_ns"] if started else time.time_ns()
    time.sleep(max(0.0, start_at / 1e9 - time.time()) + 2.0)
    frozen.send_signal(signal.SIGSTOP)
    r = subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "session", "stop", sid],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "%s: session stop: %s" % (sid, r.stderr[-300:]))
    time.sleep(2.0)  # the stop instant is collect.lead_ms (1 s) after the request
    frozen.send_signal(signal.SIGCONT)
    check.wait_for(lambda: [x for x in of_type(tail(db, "sessions"), "CollectionStopped")
                            if x["value"]["session_id"] == sid], 60, "%s: CollectionStopped" % sid)


def check_session(sid, db, sent, manifest_path):
    """The report, the log, CollectionStopped and the archive of sid agree."""
    stop_at = next((r["value"]["stop_at_ns"] for r in of_type(tail(db, "commands"), "StopRecording")
                    if r["value"]["session_id"] == sid), 0)
    reports = [r["value"] for r in of_type(tail(db, "sessions"), "RecordingReport") if r["value"]["session_id"] == sid]
    check(len(reports) == 1, "%s: one RecordingReport: %s" % (sid, reports))
    reported = {(s["device_id"], s["stream_id"]): s for rep in reports for s in rep["streams"]}
    want = {(d, s): c["samples"] for d, ss in sent.items() for s, c in ss.items()}
    got = {k: s["samples"] + s["late_stop_samples"] for k, s in reported.items()}
    check(want and got == want, "%s: samples + late_stop_samples == devsim's: %s vs %s" % (sid, got, want))
    for k, s in reported.items():
        check(s["samples"] > 0, "%s: %s/%s: samples > 0: %s" % ((sid,) + k + (s,)))
        if k[1] != "rgb":
            check(s["late_stop_samples"] > 0, "%s: %s/%s: late_stop_samples > 0: %s" % ((sid,) + k + (s,)))
    past = {}
    for topic in ("samples", "media"):
        for rec in tail(db, topic):
            v = rec["value"]
            if v["session_id"] == sid and first_master(v) >= stop_at:
                k = (v["device_id"], v["stream_id"])
                past[k] = past.get(k, 0) + count(v)
    late = {k: s["late_stop_samples"] for k, s in reported.items() if s["late_stop_samples"]}
    check(past == late, "%s: tagged records past the stop instant == late_stop: %s vs %s" % (sid, past, late))
    cs = next((r["value"] for r in of_type(tail(db, "sessions"), "CollectionStopped")
               if r["value"]["session_id"] == sid), {})
    check(cs.get("complete") is True and not cs.get("incomplete"),
          "%s: CollectionStopped complete: %s" % (sid, cs.get("incomplete")))
    check({(s["device_id"], s["stream_id"]): s["late_stop_samples"] for s in cs.get("streams", [])} ==
          {k: s["late_stop_samples"] for k, s in reported.items()},
          "%s: CollectionStopped carries the late_stop counts" % sid)
    m = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {}
    check(m.get("complete") is True and not m.get("mismatches"),
          "%s: the archive is complete: %s %s" % (sid, m.get("incomplete"), m.get("mismatches")))
    for (dev, stream), s in reported.items():
        a = m.get("devices", {}).get(dev, {}).get("streams", {}).get(stream, {})
        check(a.get("samples") == s["samples"] and a.get("after_stop_samples") == s["late_stop_samples"],
              "%s: %s/%s archived: samples %s == %s, after_stop %s == %s" % (
                  sid, dev, stream, a.get("samples"), s["samples"], a.get("after_stop_samples"),
                  s["late_stop_samples"]))


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
        collectord = start("collectord", ["msrs-collectord", "--log", log])
        start("archiver", ["msrs-archiver", "--log", log, "--dir", archive])
        for sid, frozen in zip(SESSIONS, (agent, collectord)):
            record_late_stop(sid, log, db, frozen)
        manifests = {sid: os.path.join(archive, sid, "manifest.json") for sid in SESSIONS}
        check.wait_for(lambda: all(os.path.exists(m) for m in manifests.values()), 60, "both archives' manifests")
        sim.send_signal(signal.SIGTERM)
        check(sim.wait(20) == 0, "devsim exits cleanly")
        check(stderr_of("agent").count("counted as late_stop") == len(SESSIONS),
              "the agent counted data past the stop instant as late_stop, in each session")
        sent = json.load(open(stats))
        for sid in SESSIONS:
            check_session(sid, db, sent.get(sid, {}), manifests[sid])
    finally:
        stop_all(procs)
    if check.failures:
        print("kept", tmp)
    else:
        subprocess.run(["rm", "-rf", tmp])
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
