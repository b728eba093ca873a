#!/usr/bin/python3
"""StartRecording reaches the agent before the start instant, on Kafka.

Against msrs-mockbroker (MSRS_TEST_LOG, tests/log/with-mockbroker.sh):
msrs-agent, msrs-syncd, msrs-collectord with the default collect.lead_ms
(1000) and msrs-devsim (2 devices). Six sessions, one after the other, each
started by a new collectord process (a new producer), once the agent says
its commands cursor is live.

Checked, per session:
- the agent got StartRecording before the start instant (its log says how
  many ms before: the margin; printed) — librdkafka used to hold the first
  record of a topic a producer had not used until its metadata came (~1 s);
- its RecordingReport counts no late_start samples, and the counts in
  CollectionStopped are devsim's."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, Procs, devsim_sent, free_port, stop_all, tagged_counts, wait_listening  # noqa: E402

check = Checks()
SESSIONS = 6


def records(log, topic):
    r = subprocess.run([os.path.join(BIN, "msrs-tail"), "--log", log, "--topic", topic], capture_output=True, text=True, timeout=60)
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def main():
    log = os.environ.get("MSRS_TEST_LOG", "")
    if not log.startswith(("kafka:", "mock:")):
        print("MSRS_TEST_LOG must name a Kafka log (run through tests/log/with-mockbroker.sh)")
        return 1
    tmp = tempfile.mkdtemp(prefix="msrs-start-margin-")
    port = free_port()
    procs = Procs(tmp)
    start, stderr_of = procs.start, procs.stderr_of

    try:
        start("agent", ["msrs-agent", "--log", log, "--listen", "127.0.0.1:%d" % port, "--node-id", "n1",
                        "-X", "sync.interval_ms=1000", "-X", "agent.report_delay_ms=500"])
        check(wait_listening(port), "agent listening")
        stats = os.path.join(tmp, "stats.json")
        sim = start("devsim", ["msrs-devsim", "--url", "ws://127.0.0.1:%d/v1/devices" % port,
                               "--devices", "2", "--profile", "lan", "--stats", stats])
        start("syncd", ["msrs-syncd", "--log", log, "-X", "sync.max_uncertainty_us=2000"])
        check.wait_for(lambda: "commands: reading as cursor" in stderr_of("agent"), 60,
                       "the agent's commands cursor is live")
        collectord = None
        for i in range(SESSIONS):
            # A new collectord each time: its first StartRecording is the
            # first record its producer sends to the commands topic.
            if collectord:
                stop_all([collectord])
            collectord = start("collectord%d" % i, ["msrs-collectord", "--log", log])
            r = subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "session", "start", "m%d" % i,
                                "--min-group", "2", "--duration", "1", "--wait", "--timeout", "60"],
                               capture_output=True, text=True, timeout=120)
            check(r.returncode == 0, "session m%d: rc %d %s" % (i, r.returncode, r.stderr[-300:]))
        sim.send_signal(signal.SIGTERM)
        check(sim.wait(20) == 0, "devsim exits cleanly")
        margins = {m.group(1): float(m.group(2)) for m in
                   re.finditer(r"session (m\d+): \d+ devices start at \d+ \((-?[\d.]+) ms from now\)",
                               stderr_of("agent"))}
        print("margins (ms before the start instant):", margins)
        check(len(margins) == SESSIONS, "the agent got %d of %d starts" % (len(margins), SESSIONS))
        late = {s: m for s, m in margins.items() if m <= 0}
        check(not late, "every StartRecording came before the start instant; late: %s" % late)

        sent = json.load(open(stats))
        reports = {r["value"]["session_id"]: r["value"] for r in records(log, "sessions")
                   if r["type"] == "msrs.events.RecordingReport"}
        stopped = {r["value"]["session_id"]: r["value"] for r in records(log, "sessions")
                   if r["type"] == "msrs.events.CollectionStopped"}
        for i in range(SESSIONS):
            sid = "m%d" % i
            rep = reports.get(sid, {"streams": []})
            check(all(s.get("late_start_samples", 0) == 0 for s in rep["streams"]) and rep["streams"],
                  "%s: no late_start samples: %s" % (sid, rep["streams"]))
            want = devsim_sent(sent, sid)
            got = tagged_counts(stopped.get(sid, {}).get("streams", []))
            check(want and got == want, "%s: CollectionStopped == devsim's counts: %s vs %s" % (sid, got, want))
    finally:
        stop_all(procs)
    if check.failures:
        print("kept", tmp)
    else:
        subprocess.run(["rm", "-rf", tmp])
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
