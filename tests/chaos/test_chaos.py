#!/usr/bin/python3
"""Chaos: every service killed with SIGKILL mid-session, in turn, and (on
Kafka) the brokers down and up, while a session records. Real processes on
the log named by MSRS_TEST_LOG (msrs-mockbroker, through with-mockbroker.sh)
or a fresh SQLite file: msrs-agent, msrs-syncd, msrs-collectord,
msrs-archiver and msrs-devsim (3 devices: GSR, IMU, video).

During a 24 s session: the archiver, collectord, syncd and the agent are
each killed and started again (the agent 2 s later: its devices' data of
those seconds never reaches the log); on Kafka the brokers then go down
for 3 s (rd_kafka_mock_broker_set_down/up through msrs-mockbroker's
SIGUSR1/SIGUSR2). Afterwards the recording is complete or says exactly
what it misses:
- one CollectionStarted, one CollectionStopped;
- the archive holds exactly what the nodes reported (no mismatch), for
  every stream of every device;
- per stream, what devsim sent lies between the reported samples (+ the
  late_stop ones, tagged past a stop instant that reached the agent late)
  and that + gap_samples (every sample not archived is counted);
- CollectionStopped.complete is false exactly when a stream has a gap, a
  drop or records lost, and `incomplete` names each such stream; the
  manifest's verdict is the same."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, Procs, free_port, of_type, stop_all, wait_listening  # noqa: E402

check = Checks()


def records(log, topic):
    r = subprocess.run([os.path.join(BIN, "msrs-tail"), "--log", log, "--topic", topic],
                       capture_output=True, text=True, timeout=120)
    return [json.loads(line) for line in r.stdout.splitlines()]


def main():
    log = os.environ.get("MSRS_TEST_LOG", "")
    broker_pid = int(os.environ.get("MSRS_MOCKBROKER_PID", "0"))
    kafka = log.startswith("kafka:")
    tmp = tempfile.mkdtemp(prefix="msrs-chaos-")
    if not kafka:
        log = "sqlite:" + os.path.join(tmp, "log.db")
    archive = os.path.join(tmp, "archive")
    port = free_port()
    procs = Procs(tmp)
    start, names = procs.start, procs.by_name

    def kill_and_restart(name, args, pause):
        p = names[name]
        p.kill()
        p.wait()
        time.sleep(pause)
        return start(name, args)

    cmds = {
        "agent": ["msrs-agent", "--log", log, "--listen", "127.0.0.1:%d" % port, "--node-id", "n1",
                  "-X", "sync.interval_ms=1000", "-X", "agent.report_delay_ms=1000"],
        "syncd": ["msrs-syncd", "--log", log, "-X", "sync.max_uncertainty_us=3000"],
        "collectord": ["msrs-collectord", "--log", log, "-X", "collect.lead_ms=1500",
                       "-X", "collect.report_timeout_ms=30000"],
        "archiver": ["msrs-archiver", "--log", log, "--dir", archive,
                     "-X", "archive.finalize_timeout_ms=30000"],
    }
    try:
        start("agent", cmds["agent"])
        check(wait_listening(port, 30), "agent listening")
        stats = os.path.join(tmp, "stats.json")
        sim = start("devsim", ["msrs-devsim", "--url", "ws://127.0.0.1:%d/v1/devices" % port,
                               "--devices", "3", "--profile", "lan", "--video", "64x48@10",
                               "--stats", stats])
        for name in ("syncd", "collectord", "archiver"):
            start(name, cmds[name])
        if kafka:  # a start command must reach a live commands consumer
            end = time.time() + 60
            while time.time() < end and "commands: reading as cursor" not in open(
                    os.path.join(tmp, "agent.log")).read():
                time.sleep(0.2)
        waiter = subprocess.Popen([os.path.join(BIN, "msrs"), "--log", log, "session", "start", "c1",
                                   "--min-group", "3", "--duration", "24", "--wait", "--timeout", "240"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = check.wait_for(lambda: of_type(records(log, "sessions"), "CollectionStarted"), 90,
                                 "CollectionStarted")
        start_at = started[0]["value"]["start_at_ns"] / 1e9 if started else time.time()

        def at(offset_s):
            time.sleep(max(0.0, start_at + offset_s - time.time()))

        at(2.0)
        kill_and_restart("archiver", cmds["archiver"], 1.0)
        at(5.0)
        kill_and_restart("collectord", cmds["collectord"], 1.0)
        at(8.0)
        kill_and_restart("syncd", cmds["syncd"], 1.0)
        at(11.0)
        kill_and_restart("agent", cmds["agent"], 2.0)
        check(wait_listening(port, 30), "the agent listening again")
        if kafka and broker_pid:
            at(17.0)
            os.kill(broker_pid, signal.SIGUSR1)
            time.sleep(3.0)
            os.kill(broker_pid, signal.SIGUSR2)

        out, err = waiter.communicate(timeout=300)
        check(waiter.returncode == 0, "msrs session start --wait: rc %s %s" % (waiter.returncode, err[-400:]))
        manifest_path = os.path.join(archive, "c1", "manifest.json")
        check.wait_for(lambda: os.path.exists(manifest_path), 90, "the archive of c1")
        sim.send_signal(signal.SIGTERM)
        check(sim.wait(30) == 0, "devsim exits cleanly")

        sessions = records(log, "sessions")
        check(len(of_type(sessions, "CollectionStarted")) == 1, "one CollectionStarted")
        stopped = of_type(sessions, "CollectionStopped")
        check(len(stopped) == 1, "one CollectionStopped")
        st = stopped[0]["value"] if stopped else {"streams": [], "incomplete": []}
        reported = {(s["device_id"], s["stream_id"]): s for s in st["streams"]}
        sent = {(d, s): c["samples"] for d, ss in json.load(open(stats)).get("c1", {}).items()
                for s, c in ss.items()}
        check(len(sent) == 9 and set(reported) == set(sent),
              "every stream reported (3 devices x 3): %s vs %s" % (sorted(reported), sorted(sent)))
        lossy = set()
        for key, n in sorted(sent.items()):
            s = reported.get(key, {"samples": 0, "gap_samples": 0, "dropped": 0, "late_start_samples": 0,
                                   "late_stop_samples": 0})
            # devsim counts what it tagged: past the stop instant too, when
            # the stop reached the agent late (the brokers down): late_stop
            tagged = s["samples"] + s["late_stop_samples"]
            check(tagged <= n <= tagged + s["gap_samples"],
                  "%s/%s: sent %d within reported %d + late_stop %d + gap %d"
                  % (key + (n, s["samples"], s["late_stop_samples"], s["gap_samples"])))
            if s["gap_samples"] or s.get("gaps") or s["dropped"] or s["late_start_samples"]:
                lossy.add("%s/%s" % key)
        named = {w.split(":")[0] for w in st.get("incomplete", [])}
        check(lossy <= named, "every lossy stream named in incomplete: %s not in %s" % (lossy, st.get("incomplete")))
        check(st.get("complete") is (not st.get("incomplete")), "complete iff nothing listed: %s" % st.get("complete"))
        if os.path.exists(manifest_path):
            m = json.load(open(manifest_path))
            check(m["mismatches"] == [], "the archive holds what was reported: %s" % m["mismatches"])
            archived = {(d, s): c["samples"] for d, dev in m["devices"].items() for s, c in dev["streams"].items()}
            check(all(archived.get(k) == v["samples"] for k, v in reported.items()),
                  "archived counts == reported counts")
            check(m["complete"] == st.get("complete"), "the manifest's verdict is the stop's: %s" % m["complete"])
        print("chaos: %s; complete %s; incomplete: %s" % ("kafka" if kafka else "sqlite", st.get("complete"),
                                                          st.get("incomplete")))
    finally:
        stop_all(procs)
    bad = [(p.args[0], p.returncode) for p in procs if p.returncode not in (0, -9)]
    check(not bad, "every process exited cleanly (or was killed): %s" % bad)
    if check.failures:
        for name in names:
            print("---", name, procs.stderr_of(name)[-1500:])
        print("kept", tmp)
    else:
        subprocess.run(["rm", "-rf", tmp])
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
