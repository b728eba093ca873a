#!/usr/bin/python3
"""The agent killed with SIGKILL mid-session and started again (SQLite).

msrs-agent, msrs-syncd, msrs-collectord and msrs-devsim (2 devices, GSR +
IMU + video) record a 10 s session. 2.5 s after the start instant the agent
dies without warning; 2 s later a new one starts on the same log and node
id. Its cursor on the commands topic is past the session's StartRecording,
so only the log itself can tell it what it was doing.

Checked:
- the new agent rebuilds the session from the log and says so;
- it reports (RecordingReport) and CollectionStopped lists every stream
  (2 devices x 3), with no "no recording report" in its reason, and no
  device missing (both came back);
- every stream's count in CollectionStopped == the records tagged with the
  session on the log (samples and media topics);
- the gap is counted exactly: for each stream, the tagged records' sequence
  numbers span samples + gap_samples, and gap_samples > 0 (what the devices
  made while no agent ran, and what the killed agent never wrote);
- devsim's own count of what it sent lies between the reported samples and
  samples + gap_samples;
- no data of the session's window is left untagged on the log after the
  restart (master time inside [start, stop) but no session id)."""
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


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-agent-restart-")
    db = os.path.join(tmp, "log.db")
    log = "sqlite:" + db
    port = free_port()
    procs = Procs(tmp)
    start, stderr_of = procs.start, procs.stderr_of

    agent_cmd = ["msrs-agent", "--log", log, "--listen", "127.0.0.1:%d" % port, "--node-id", "n1",
                 "-X", "sync.interval_ms=1000", "-X", "agent.report_delay_ms=500"]
    try:
        agent = start("agent1", agent_cmd)
        check(wait_listening(port), "agent listening")
        stats = os.path.join(tmp, "stats.json")
        sim = start("devsim", ["msrs-devsim", "--url", "ws://127.0.0.1:%d/v1/devices" % port,
                               "--devices", "2", "--profile", "lan", "--video", "64x48@10", "--stats", stats])
        start("syncd", ["msrs-syncd", "--log", log, "-X", "sync.max_uncertainty_us=2000"])
        start("collectord", ["msrs-collectord", "--log", log, "-X", "collect.lead_ms=800"])
        waiter = subprocess.Popen([os.path.join(BIN, "msrs"), "--log", log, "session", "start", "r1",
                                   "--min-group", "2", "--duration", "10", "--wait", "--timeout", "120"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = check.wait_for(lambda: of_type(tail(db, "sessions"), "CollectionStarted"), 60,
                                 "CollectionStarted")
        start_at = started[0]["value"]["start_at_ns"] if started else time.time_ns()
        time.sleep(max(0.0, start_at / 1e9 - time.time()) + 2.5)
        agent.kill()
        agent.wait()
        time.sleep(2.0)
        start("agent2", agent_cmd)
        check(wait_listening(port, 30), "the second agent listening")

        out, err = waiter.communicate(timeout=120)
        check(waiter.returncode == 0, "msrs session start --wait: rc %s %s" % (waiter.returncode, err[-500:]))
        time.sleep(1.0)
        sim.send_signal(signal.SIGTERM)
        check(sim.wait(20) == 0, "devsim exits cleanly")

        a2 = stderr_of("agent2")
        check("session r1: was recording here before this start" in a2,
              "the new agent rebuilt r1 from the log: %s" % a2[:1500])
        sessions = tail(db, "sessions")
        reports = [r["value"] for r in of_type(sessions, "RecordingReport")]
        check(len(reports) == 1 and reports[0]["node_id"] == "n1", "one RecordingReport from n1: %s" % reports)
        # both devices came back to the new agent: none is missing
        check(reports and reports[0]["missing_devices"] == [],
              "no missing device: %s" % (reports[0]["missing_devices"] if reports else None))
        stopped = of_type(sessions, "CollectionStopped")
        check(len(stopped) == 1, "one CollectionStopped")
        st = stopped[0]["value"] if stopped else {"streams": [], "reason": "", "stop_at_ns": 0}
        check("no recording report" not in st["reason"], "reason: %s" % st["reason"])
        streams = {(s["device_id"], s["stream_id"]): s for s in st["streams"]}
        check(len(streams) == 6, "CollectionStopped lists 2 devices x 3 streams: %s" % sorted(streams))
        # It says it is not complete, and why, per stream with the counts.
        check(st.get("complete") is False, "CollectionStopped complete: %s" % st.get("complete"))
        gap_lines = [w for w in st.get("incomplete", []) if "never reached the log" in w]
        check(len(gap_lines) == len([s for s in st["streams"] if s["gap_samples"]]) and gap_lines,
              "one reason per stream with a gap: %s" % st.get("incomplete"))
        check(not [w for w in st.get("incomplete", []) if "not connected" in w],
              "no device said absent at the start: %s" % st.get("incomplete"))
        stop_at = st["stop_at_ns"]

        # What the log holds for r1, per stream: count and the sequence numbers.
        tagged, untagged_in_window = {}, 0
        for topic in ("samples", "media"):
            for r in tail(db, topic):
                v = r["value"]
                n = len(v["device_time_ns"]) if topic == "samples" else 1
                if v["session_id"] == "r1":
                    e = tagged.setdefault((v["device_id"], v["stream_id"]), {"n": 0, "seqs": []})
                    e["n"] += n
                    e["seqs"].append((v["seq"], n))
                else:
                    t = v["master_time_ns"][0] if topic == "samples" else v["master_time_ns"]
                    # after the restart, inside the window (20 ms margins for the clock)
                    if start_at + 20e6 <= t < stop_at - 20e6 and r.get("time", "") and \
                            v["device_id"] in ("sim-1", "sim-2"):
                        untagged_in_window += n
        sent = {}
        for dev, ss in json.load(open(stats)).get("r1", {}).items():
            for stream, c in ss.items():
                sent[(dev, stream)] = c["samples"]
        for key, s in sorted(streams.items()):
            e = tagged.get(key, {"n": 0, "seqs": [(0, 0)]})
            first = min(q for q, _ in e["seqs"])
            end = max(q + n for q, n in e["seqs"])
            check(s["samples"] == e["n"], "%s: reported %d == %d on the log" % (key, s["samples"], e["n"]))
            check(s["gap_samples"] > 0 and s["gaps"] >= 1,
                  "%s: the gap is counted: %d gaps, %d samples" % (key, s["gaps"], s["gap_samples"]))
            check(s["samples"] + s["gap_samples"] == end - first,
                  "%s: samples %d + gap_samples %d == the seq span on the log %d"
                  % (key, s["samples"], s["gap_samples"], end - first))
            check(s["samples"] <= sent.get(key, -1) <= s["samples"] + s["gap_samples"],
                  "%s: devsim sent %s, between %d and %d" % (key, sent.get(key), s["samples"],
                                                            s["samples"] + s["gap_samples"]))
        check(untagged_in_window == 0, "no untagged data in the session's window: %d" % untagged_in_window)
        print("gap per stream:", {"%s/%s" % k: (s["samples"], s["gap_samples"]) for k, s in sorted(streams.items())})
    finally:
        stop_all(procs)
    if check.failures:
        print("kept", tmp)
        for name in ("agent1", "agent2", "collectord"):
            try:
                print("---", name, "\n", stderr_of(name)[-3000:])
            except OSError:
                pass
    else:
        subprocess.run(["rm", "-rf", tmp])
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
