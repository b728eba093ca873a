#!/usr/bin/python3
"""The device SDK against a real msrs-agent on TLS (with msrs-syncd and
msrs-collectord on one SQLite log), driven by tests/sdk/conformance.c, a
device on the SDK that sends every message a device sends:

- it registers with its credential; its clock is measured; its status
  (DeviceStatus) reaches the log;
- the agent is SIGKILLed and restarted: the SDK reconnects by itself and
  registers again; the samples' seq on the log has no hole but the batches
  the SDK refused while it had no agent, those it had accepted and lost
  at the close (md_device_discarded), and at most two batches in flight
  when the agent died;
- a session (msrs session start --duration 4 --wait): the samples, media
  packets and sync marks the device says it sent into the session are what
  CollectionStopped counts (no gap) and the SyncMarks on the log (label with
  quotes intact);
- SIGTERM ends it (exit 0) after its queue is written."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, Procs, free_port, of_type, stop_all, tail, wait_listening  # noqa: E402

SRC = os.environ.get("MSRS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
check = Checks()


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-sdk-conf-")
    conf = subprocess.run([os.path.join(SRC, "deploy", "local", "make-credentials.sh"),
                           os.path.join(tmp, "tls")], capture_output=True, text=True, check=True).stdout.strip()
    env = dict(os.environ, MSRS_CONFIG=conf)
    db = os.path.join(tmp, "log.db")
    log = "sqlite:" + db
    port = free_port()
    procs = Procs(tmp)
    agent_cmd = ["msrs-agent", "--log", log, "--listen", "127.0.0.1:%d" % port, "--node-id", "n1",
                 "-X", "sync.interval_ms=500", "-X", "agent.report_delay_ms=1000"]
    dev = None
    try:
        procs.start("agent", agent_cmd, env=env)
        check(wait_listening(port), "agent listening")
        procs.start("syncd", ["msrs-syncd", "--log", log, "-X", "sync.max_uncertainty_us=5000"], env=env)
        procs.start("collectord", ["msrs-collectord", "--log", log, "-X", "collect.lead_ms=1000"], env=env)
        cred = subprocess.run([os.path.join(BIN, "msrs"), "devices", "credential", "conf-1"], env=env,
                              capture_output=True, text=True).stdout.strip()
        dev = subprocess.Popen([os.path.join(BIN, "sdk_conformance"), "wss://127.0.0.1:%d/v1/devices" % port,
                                os.path.join(tmp, "tls", "ca.pem"), "conf-1", cred],
                               stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "device.log"), "w"), text=True)
        events = []

        def read_until(kind, timeout):
            end = time.time() + timeout
            while time.time() < end:
                line = dev.stdout.readline()
                if not line:
                    return None
                e = json.loads(line)
                events.append(e)
                if e.get("event") == kind:
                    return e
            return None
        check(read_until("registered", 20), "the SDK device registered")
        clock = check.wait_for(lambda: [r for r in of_type(tail(db, "clock"), "ClockOffsetMeasured")
                                        if r["value"]["device_id"] == "conf-1"], 20, "conf-1's clock measured")
        time.sleep(2.5)
        status = [r["value"] for r in of_type(tail(db, "devices"), "DeviceStatus") if r["value"]["device_id"] == "conf-1"]
        check(status and abs(status[-1]["battery"] - 0.5) < 1e-6, "DeviceStatus on the log: %s" % status[-1:])

        # the agent dies and comes back
        procs.by_name["agent"].send_signal(signal.SIGKILL)
        procs.by_name["agent"].wait()
        check(read_until("closed", 10), "the SDK saw the connection close")
        time.sleep(1.5)
        procs.start("agent", agent_cmd, env=env)
        check(read_until("registered", 30), "the SDK reconnected and registered again by itself")
        time.sleep(1)

        # a session
        r = subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "session", "start", "s1", "--devices",
                            "conf-1", "--min-group", "1", "--duration", "4", "--wait", "--timeout", "60"],
                           env=env, capture_output=True, text=True)
        check(r.returncode == 0, "session s1 recorded: %s" % r.stderr[-300:])
        time.sleep(0.5)
        dev.send_signal(signal.SIGTERM)
        out, _ = dev.communicate(timeout=30)
        lines = out.strip().splitlines()
        check(dev.returncode == 0, "the device exits 0 on SIGTERM")
        final = json.loads(lines[-1]) if lines else {}
        events += [json.loads(x) for x in lines[:-1]]
        check(final.get("registrations") == 2, "registered twice: %s" % final.get("registrations"))
        kinds = [e["event"] for e in events]
        check("start" in kinds and "stop" in kinds, "start and stop reached the SDK: %s" % sorted(set(kinds)))

        # samples: the seq on the log has no hole but what the SDK refused
        batches = sorted((r["value"]["seq"], len(r["value"]["device_time_ns"]))
                         for r in of_type(tail(db, "samples"), "SensorSampleBatch")
                         if r["value"]["device_id"] == "conf-1")
        holes = sum(b[0] - (a[0] + a[1]) for a, b in zip(batches, batches[1:]))
        refused = sum(v.get("gsr", 0) for v in final.get("refused", {}).values())
        discarded = final.get("discarded", {}).get("gsr", -1)
        # (the first batches went before the first registration: refused
        # too). Batches already written to the socket when the agent was
        # killed are lost in flight, which no one can count on the device's
        # side: at most the last 250 ms (2 batches) before the kill.
        missing = (batches[0][0] if batches else 0) + holes
        in_flight = missing - refused - discarded
        check(batches and 0 <= in_flight <= 32,
              "seq on the log: %d missing == %d refused without an agent + %d accepted and lost at the "
              "close + %d in flight when the agent died (at most 32)" % (missing, refused, discarded, in_flight))

        stopped = [r["value"] for r in of_type(tail(db, "sessions"), "CollectionStopped")
                   if r["value"]["session_id"] == "s1"]
        got = {st["stream_id"]: st for st in (stopped[0]["streams"] if stopped else [])}
        sent = final.get("sent", {}).get("s1", {})
        check(got and got["gsr"]["samples"] == sent.get("gsr") and got["cam"]["samples"] == sent.get("cam"),
              "CollectionStopped == what the SDK sent into s1: gsr %s/%s, cam %s/%s" % (
                  got.get("gsr", {}).get("samples"), sent.get("gsr"), got.get("cam", {}).get("samples"), sent.get("cam")))
        check(all(st["gaps"] == 0 and st["dropped"] == 0 for st in got.values()), "no gap in s1")
        in_s1 = [m for m in of_type(tail(db, "sessions"), "SyncMark") if m["value"]["session_id"] == "s1"]
        check(len(in_s1) == sent.get("marks", 0) and len(in_s1) >= 1 and
              in_s1[0]["value"]["label"] == 'conformance "mark"',
              "sync marks in s1: %d on the log (label intact), %s sent" % (len(in_s1), sent.get("marks")))
    finally:
        if dev and dev.poll() is None:
            dev.kill()
        stop_all(procs)
    code = check.finish()
    print("logs in", tmp) if code else None
    return code


if __name__ == "__main__":
    sys.exit(main())
