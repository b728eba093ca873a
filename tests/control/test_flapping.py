#!/usr/bin/python3
"""Heartbeats delayed past the TTL, then resumed: the node comes back as the
same node, once, with its devices; jittery heartbeats widen the supervisor's
patience; a supervisor that stalled itself expires nobody for it. Real
processes on the log named by MSRS_TEST_LOG (a msrs-mockbroker) or a fresh
SQLite file: msrs-supervisor (ttl 3 s, heartbeat 0.5 s), one msrs-agent,
msrs-devsim with 4 devices. Delays are SIGSTOP/SIGCONT of a process.

Checked, in order:
- steady heartbeats, then the agent stopped 5 s: expired (phi high at the
  TTL); resumed: it registers again with the incarnation it had, its 4
  devices are in the pool again without a DeviceRegistered each, and 8 s
  later it is still up with exactly one expiry and one re-registration
  (no endless churn);
- the agent stopped 2 s and resumed 0.6 s, eight times (its heartbeats now
  come irregularly), then stopped 4.5 s, past the TTL: not expired, and the
  supervisor's /metrics said it held a node past its TTL meanwhile;
- the supervisor stopped 5 s, past every TTL, and resumed: no node expired,
  and it said its loop had stalled;
- every process exits 0 at the end (under ASan, no leak)."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, Procs, free_port, of_type, stop_all  # noqa: E402

check = Checks()
DEVICES = 4


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-flap-")
    log = os.environ.get("MSRS_TEST_LOG") or "sqlite:" + os.path.join(tmp, "log.db")
    procs = Procs(tmp)
    sup_port, ops_port, agent_port = free_port(), free_port(), free_port()
    common = ["--log", log]

    def pool():
        body = get("http://127.0.0.1:%d/v1/nodes" % sup_port)
        return json.loads(body) if body else {}

    def node():
        return pool().get("nodes", {}).get("n1", {})

    def records(topic, t):
        r = subprocess.run([os.path.join(BIN, "msrs-tail"), "--log", log, "--topic", topic],
                           capture_output=True, text=True, timeout=60)
        return of_type([json.loads(x) for x in r.stdout.splitlines()], t)

    def held():
        body = get("http://127.0.0.1:%d/metrics" % ops_port) or ""
        return [float(x.split()[-1]) for x in body.splitlines() if x.startswith("msrs_supervisor_nodes_held ")]

    try:
        procs.start("sup", ["msrs-supervisor", "--listen", "127.0.0.1:%d" % sup_port, "--node-id", "sup",
                            "-X", "supervisor.ttl_ms=3000", "-X", "supervisor.heartbeat_ms=500",
                            "-X", "discovery.port=0", "-X", "ops.listen=127.0.0.1:%d" % ops_port] + common)
        agent = procs.start("agent", ["msrs-agent", "--listen", "127.0.0.1:%d" % agent_port, "--node-id", "n1",
                                      "--supervisor", "http://127.0.0.1:%d" % sup_port] + common)
        procs.start("devsim", ["msrs-devsim", "--url", "ws://127.0.0.1:%d/v1/devices" % agent_port,
                               "--devices", str(DEVICES), "--samples", "none"])
        check.wait_for(lambda: pool().get("device_count") == DEVICES, 60, "%d devices in the pool" % DEVICES)
        time.sleep(3)  # steady heartbeats: a narrow history
        before = node()
        check(before.get("hb_mean_ns", 0) > 0 and before.get("incarnation"),
              "the node's heartbeat history and incarnation are in its state: %r" % before)

        # --- expired while stopped, back as the same node ------------------------
        agent.send_signal(signal.SIGSTOP)
        t0 = time.time()
        expired = check.wait_for(lambda: node().get("state") == "expired", 10, "n1 expired while stopped")
        if expired:
            print("steady node expired %.1f s after it stopped (ttl 3 s)" % (time.time() - t0))
        check(pool().get("device_count") == 0, "its devices left the pool: %r" % pool().get("device_count"))
        time.sleep(max(0.0, 5 - (time.time() - t0)))
        agent.send_signal(signal.SIGCONT)
        t1 = time.time()
        if check.wait_for(lambda: node().get("state") == "up" and pool().get("device_count") == DEVICES, 15,
                          "n1 up with its %d devices again" % DEVICES):
            print("back with its devices %.1f s after it resumed" % (time.time() - t1))
        check("back after its expiry as the same process" in procs.stderr_of("sup"),
              "the supervisor says n1 came back as the same process")
        time.sleep(8)
        check(node().get("state") == "up", "n1 still up 8 s later: %r" % node().get("state"))
        regs = records("nodes", "NodeRegistered")
        exps = records("nodes", "NodeExpired")
        check(len(exps) == 1, "one NodeExpired: %d" % len(exps))
        check(len(regs) == 2 and regs[0]["value"]["incarnation"] == regs[1]["value"]["incarnation"] != "",
              "registered twice, with one incarnation: %r" % [r["value"].get("incarnation") for r in regs])
        devs = records("devices", "DeviceRegistered")
        check(len(devs) == DEVICES, "no device registered again: %d DeviceRegistered" % len(devs))

        # --- irregular heartbeats widen the patience ------------------------------
        for _ in range(8):
            agent.send_signal(signal.SIGSTOP)
            time.sleep(2.0)
            agent.send_signal(signal.SIGCONT)
            time.sleep(0.6)
        n = node()
        print("after irregular heartbeats: mean %.2f s, deviation %.2f s"
              % (n.get("hb_mean_ns", 0) / 1e9, n.get("hb_dev_ns", 0) / 1e9))
        agent.send_signal(signal.SIGSTOP)
        end, seen_held = time.time() + 4.5, []
        while time.time() < end:
            seen_held += held()
            time.sleep(0.25)
        agent.send_signal(signal.SIGCONT)
        check(max(seen_held or [0]) >= 1, "the supervisor held n1 past its TTL: %r" % sorted(set(seen_held)))
        time.sleep(1.5)
        check(node().get("state") == "up", "n1 not expired after 4.5 s silent: %r" % node().get("state"))
        check(len(records("nodes", "NodeExpired")) == 1, "still one NodeExpired")

        # --- the supervisor's own stall --------------------------------------------
        sup = procs.by_name["sup"]
        sup.send_signal(signal.SIGSTOP)
        time.sleep(5)
        sup.send_signal(signal.SIGCONT)
        time.sleep(3)
        check(len(records("nodes", "NodeExpired")) == 1, "no node expired for the supervisor's stall")
        check(node().get("state") == "up" and pool().get("device_count") == DEVICES,
              "n1 up with its devices after the supervisor's stall")
        check("loop stalled" in procs.stderr_of("sup"), "the supervisor said its loop stalled")
        check(procs.alive("sup", "agent", "devsim"), "every process still runs")
    finally:
        stop_all(procs)
    for name in ("sup", "agent"):
        check(procs.by_name[name].returncode == 0, "%s exits 0 (%s)" % (name, procs.by_name[name].returncode))
    if check.failures:
        print("kept", tmp)
        for name in ("sup", "agent"):
            print("--- %s ---\n%s" % (name, procs.stderr_of(name)[-3000:]))
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
