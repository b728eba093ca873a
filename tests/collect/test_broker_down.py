#!/usr/bin/python3
"""The Kafka cluster goes down mid-session and comes back (msrs-mockbroker,
SIGUSR1 / SIGUSR2: librdkafka's rd_kafka_mock_broker_set_down/up).

msrs-agent, msrs-syncd, msrs-collectord and msrs-devsim (2 devices) record
a 12 s session on the mock; 2 s after the start the brokers go down for
16 s. Checked:
- `msrs session status` while the brokers are down exits 1 within its
  timeout (cli.log_timeout_s=5) with a clear message, instead of hanging;
- the agent says on stderr that the log is not answering (once per stall)
  and slows the devices (flow slow_down, seen by devsim), and says it
  answers again and resumes them after;
- after the brokers are back the session ends with every stream counted:
  the session's folded state (msrs session status) lists 2 devices x 2
  streams whose counts are devsim's — the agent's report, late for
  collectord's report timeout, still joins the stopped session. The stop
  command reaches the agent through the outage, after its instant: what
  the devices tagged past the instant is counted as late_stop (not the
  session's), so samples + late_stop_samples are devsim's counts.
With MSRS_TEST_LOSE=1 the agent's kafka.message.timeout.ms (6 s) is shorter
than the outage: librdkafka gives up on records, and the agent's report
says how many the log lost (log_lost_records) while the streams' counts
fall short of devsim's: lost, and said."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, Procs, devsim_sent, free_port, stop_all, tagged_counts, wait_listening  # noqa: E402

check = Checks()


def main():
    log = os.environ.get("MSRS_TEST_LOG", "")
    broker_pid = int(os.environ.get("MSRS_MOCKBROKER_PID", "0"))
    if not log.startswith("kafka:") or not broker_pid:
        print("run through tests/log/with-mockbroker.sh (MSRS_TEST_LOG, MSRS_MOCKBROKER_PID)")
        return 1
    tmp = tempfile.mkdtemp(prefix="msrs-broker-down-")
    port = free_port()
    procs = Procs(tmp)
    start, stderr_of = procs.start, procs.stderr_of

    def status(sid, timeout=60):
        return subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "-X", "cli.log_timeout_s=5",
                               "session", "status", sid], capture_output=True, text=True, timeout=timeout)

    lose = os.environ.get("MSRS_TEST_LOSE") == "1"
    try:
        start("agent", ["msrs-agent", "--log", log, "--listen", "127.0.0.1:%d" % port, "--node-id", "n1",
                        "-X", "sync.interval_ms=1000", "-X", "agent.report_delay_ms=500"]
              + (["-X", "kafka.message.timeout.ms=6000"] if lose else []))
        check(wait_listening(port), "agent listening")
        stats = os.path.join(tmp, "stats.json")
        sim = start("devsim", ["msrs-devsim", "--url", "ws://127.0.0.1:%d/v1/devices" % port,
                               "--devices", "2", "--profile", "lan", "--stats", stats])
        start("syncd", ["msrs-syncd", "--log", log, "-X", "sync.max_uncertainty_us=2000"])
        start("collectord", ["msrs-collectord", "--log", log, "-X", "collect.lead_ms=2000"])
        end = time.time() + 90
        while time.time() < end and "commands: reading as cursor" not in stderr_of("agent"):
            time.sleep(0.2)
        r = subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "session", "start", "k1",
                            "--min-group", "2", "--duration", "12"], capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, "session start: %s" % r.stderr[-300:])
        got = None
        end = time.time() + 60
        while time.time() < end and not got:
            got = "devices start at" in stderr_of("agent")
            time.sleep(0.2)
        check(got, "the agent got StartRecording")
        time.sleep(4.0)
        os.kill(broker_pid, signal.SIGUSR1)
        time.sleep(1.0)
        t = time.time()
        r = status("k1")
        took = time.time() - t
        check(r.returncode == 1 and "did not answer within" in r.stderr and took < 20,
              "status with the brokers down: rc %d in %.1f s: %s" % (r.returncode, took, r.stderr[-300:]))
        time.sleep(max(0.0, 16.0 - (time.time() - t) - 1.0))
        os.kill(broker_pid, signal.SIGUSR2)

        st = {}
        end = time.time() + 90
        while time.time() < end:
            r = status("k1")
            st = json.loads(r.stdout) if r.returncode == 0 and r.stdout.startswith("{") else {}
            if st.get("state") == "stopped" and st.get("reports", {}).get("n1"):
                break
            time.sleep(1.0)
        check(st.get("state") == "stopped", "k1 stopped: %s" % st.get("state"))
        sim.send_signal(signal.SIGTERM)
        check(sim.wait(20) == 0, "devsim exits cleanly")

        a_err, s_err = stderr_of("agent"), stderr_of("devsim")
        # Said once per stall, and each stall ended. After the brokers come
        # back, librdkafka reconnects to each with its own backoff, so a
        # partition may stay unacknowledged a few seconds more: a second
        # stall, said as such (seen once in CI's release run).
        said = a_err.count("the log is not answering")
        again = a_err.count("log: acknowledging again")
        check(said >= 1 and again >= said,
              "the agent said that the log is not answering (%d) and that it answers again (%d)" % (said, again))
        check("devices told to slow down" in a_err and "devices resume" in a_err, "agent: slow_down, then resume")
        check("flow slow_down" in s_err, "devsim was told to slow down")
        sent = devsim_sent(stats, "k1")
        # what devsim tagged with the session: the session's samples, and
        # those past the stop instant (the stop command came through the
        # outage, late: late_stop, not the session's)
        got = tagged_counts(st.get("streams", []))
        late_stop = sum(s.get("late_stop_samples", 0) for s in st.get("streams", []))
        check(late_stop > 0, "the stop came after its instant: late_stop samples counted (%d)" % late_stop)
        report = st.get("reports", {}).get("n1", {})
        if lose:
            lost = report.get("log_lost_records", 0)
            check(lost > 0, "the report says the log lost records: %s" % report.get("log_lost_records"))
            # The report counts what the agent produced; the log holds less,
            # and the report says the log lost records.
            check(len(sent) == 4 and got == sent, "the agent counted devsim's samples: %s vs %s" % (got, sent))
            r = subprocess.run([os.path.join(BIN, "msrs-tail"), "--log", log, "--topic", "samples"],
                               capture_output=True, text=True, timeout=120)
            on_log = {}
            for line in r.stdout.splitlines():
                v = json.loads(line).get("value", {})
                if v.get("session_id") == "k1":
                    k = (v["device_id"], v["stream_id"])
                    on_log[k] = on_log.get(k, 0) + len(v["device_time_ns"])
            check(sum(on_log.values()) < sum(sent.values()),
                  "the log holds fewer samples than counted: %d of %d" % (sum(on_log.values()), sum(sent.values())))
            print("samples on the log:", sum(on_log.values()), "of", sum(sent.values()))
            check("the log lost" in a_err, "the agent said it lost records")
            print("log_lost_records:", lost)
        else:
            check(report.get("log_lost_records") == 0, "nothing lost: %s" % report.get("log_lost_records"))
            check(len(sent) == 4 and got == sent,
                  "the stopped session's streams (+ late_stop) == devsim's: %s vs %s (reason %s)"
                  % (got, sent, st.get("reason")))
        print("reason:", st.get("reason"), "late reports:", st.get("late_reports"))
    finally:
        stop_all(procs)
    if check.failures:
        print("kept", tmp)
    else:
        subprocess.run(["rm", "-rf", tmp])
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
