#!/usr/bin/python3
"""Control plane at scale: one msrs-supervisor, N msrs-agent processes
(--supervisor) and one msrs-devsim per agent with D devices each, on a
SQLite log or a msrs-mockbroker (Kafka mock cluster). Agents start one after
another; prints the join-to-pool latency (agent start -> its node "up" in
the supervisor's pool: register, plan, first heartbeat), the time until all
N x D devices are in one pool, the heartbeat load (NodeHeartbeat records per
second, supervisor CPU), agent RSS, and how far the supervisor's projection
fell behind the log (its /metrics read every second: the most records
unread, msrs_consumer_lag_records, and the oldest record's age when folded,
msrs_consumer_lag_seconds). With --samples binary it also prints the
agents' aggregate ingest over the steady window (their /metrics: WebSocket
bytes received and records the log took, summed): the scale-out figure is
the same devices on 1 agent and on 4 (--nodes 1 --devices 256 beside
--nodes 4 --devices 64, --backend kafka).

With --discover the agents are not told the supervisor's address: each
finds it with a discovery query (UDP to 127.255.255.255 on a free port).

usage: bench/bench_nodes.py [--nodes 64] [--devices 16] [--backend sqlite|kafka]
                            [--seconds 30] [--discover] [--bin build/bin]"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pylib"))
from msrstest import free_port, stop_all, wait_listening  # noqa: E402
from bench_sync import pct, proc_stats  # noqa: E402


# Plain transport without credentials (tests/plain.conf) unless MSRS_CONFIG
# names another configuration: the TLS figures are a run with one that
# sets tls.* and auth.* (docs/security.md).
os.environ.setdefault("MSRS_CONFIG", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                  "tests", "plain.conf"))


def pool(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/v1/nodes" % port, timeout=10) as r:
            return json.loads(r.read())
    except OSError:
        return None


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def ingest(ports):
    """The agents' bytes received and records produced so far, summed."""
    got = [0.0, 0.0]
    for port in ports:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
                text = r.read().decode()
        except OSError:
            continue
        got[0] += metric(text, "msrs_agent_received_bytes_total")
        got[1] += metric(text, "msrs_agent_records_produced_total")
    return got


class Lag(threading.Thread):
    """The supervisor's lag, read from its /metrics every second: the
    largest seen, overall and since the pool was full (steady)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stop = port, threading.Event()
        self.records = self.seconds = self.steady_records = self.steady_seconds = 0.0
        self.steady = False
        self.t0 = time.time()
        self.worst_at = 0.0  # when the largest lag in seconds was seen, since t0

    def run(self):
        while not self.stop.wait(1.0):
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port, timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                continue
            rec, sec = metric(text, "msrs_consumer_lag_records"), metric(text, "msrs_consumer_lag_seconds")
            if sec > self.seconds:
                self.worst_at = time.time() - self.t0
            self.records, self.seconds = max(self.records, rec), max(self.seconds, sec)
            if self.steady:
                self.steady_records = max(self.steady_records, rec)
                self.steady_seconds = max(self.steady_seconds, sec)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--devices", type=int, default=16)
    ap.add_argument("--backend", default="sqlite", choices=["sqlite", "kafka"])
    ap.add_argument("--seconds", type=float, default=30, help="steady state measured after the pool is full")
    ap.add_argument("--samples", default="none", help="devsim --samples: none (default: the control plane "
                    "alone), binary (every device also streams GSR + IMU)")
    ap.add_argument("--discover", action="store_true", help="agents find the supervisor by discovery")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "bin"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="msrs-bench-nodes-")
    procs = []
    out = lambda name: open(os.path.join(tmp, name + ".err"), "w")  # noqa: E731
    if a.backend == "kafka":
        # The mock keeps 5 MiB per partition: 1024 devices' clock rounds
        # outgrow 8 partitions' window during a slow start, and a consumer
        # that falls behind it loses records (DeviceRegistered among them).
        mb = subprocess.Popen([os.path.join(a.bin, "msrs-mockbroker"), "--partitions", "32"],
                              stdout=subprocess.PIPE,
                              stderr=out("mockbroker"), text=True)
        procs.append(mb)
        log = "kafka:" + mb.stdout.readline().strip()
    else:
        log = "sqlite:" + os.path.join(tmp, "log.db")
    sport, ops_port = free_port(), free_port()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 0))
    discovery = ["-X", "discovery.port=%d" % udp.getsockname()[1], "-X", "discovery.targets=127.255.255.255"]
    udp.close()
    common = ["--log", log, "-X", "sqlite.synchronous=NORMAL"] if a.backend == "sqlite" else ["--log", log]
    sup = subprocess.Popen([os.path.join(a.bin, "msrs-supervisor"), "--listen", "127.0.0.1:%d" % sport,
                            "--node-id", "sup", "-X", "supervisor.heartbeat_ms=1000",
                            "-X", "supervisor.ttl_ms=10000", "-X", "ops.listen=127.0.0.1:%d" % ops_port]
                           + common + discovery,
                           stderr=out("supervisor"))
    procs.append(sup)
    wait_listening(sport, 30)
    while not (pool(sport) or {}).get("leading"):
        time.sleep(0.1)
    lag = Lag(ops_port)
    lag.start()
    joins = []
    t_start = lag.t0 = time.time()
    agents, agent_ops = [], []
    for i in range(a.nodes):
        port = free_port()
        agent_ops.append(free_port())
        node = "node-%02d" % i
        t0 = time.time()
        ag = subprocess.Popen([os.path.join(a.bin, "msrs-agent"), "--listen", "127.0.0.1:%d" % port,
                               "--node-id", node, "--supervisor",
                               "discover" if a.discover else "http://127.0.0.1:%d" % sport,
                               "-X", "agent.max_devices=%d" % a.devices,
                               "-X", "ops.listen=127.0.0.1:%d" % agent_ops[-1]] + common + discovery,
                              stderr=out(node))
        procs.append(ag)
        agents.append(ag)
        while True:
            n = (pool(sport) or {}).get("nodes", {}).get(node, {})
            if n.get("state") == "up":
                joins.append(time.time() - t0)
                break
            if time.time() - t0 > 60:
                print("node %s did not join within 60 s" % node)
                break
            time.sleep(0.01)
        procs.append(subprocess.Popen([os.path.join(a.bin, "msrs-devsim"), "--url",
                                       "ws://127.0.0.1:%d/v1/devices" % port, "--devices", str(a.devices),
                                       "--prefix", "%s-d" % node, "--samples", a.samples],
                                      stderr=out("devsim-%02d" % i)))
        if (i + 1) % 8 == 0:
            print("  %d agents started, %.1f s" % (i + 1, time.time() - t_start), flush=True)
    want = a.nodes * a.devices
    full_at = None
    last = 0
    t_all = time.time()  # the pool gets 300 s after the last agent started
    while time.time() - t_all < 300:
        p = pool(sport) or {}
        last = p.get("device_count", 0)
        if last >= want:
            full_at = time.time() - t_start
            break
        time.sleep(0.5)
    lag.steady = True
    p = pool(sport) or {}
    up = sum(1 for n in p.get("nodes", {}).values() if n.get("state") == "up")
    cpu0 = proc_stats(sup.pid)[0]
    mb_cpu0 = proc_stats(mb.pid)[0] if a.backend == "kafka" else 0
    ag_cpu0 = sum(proc_stats(ag.pid)[0] for ag in agents if ag.poll() is None)
    in0 = ingest(agent_ops)
    t0 = time.time()
    time.sleep(a.seconds)
    in1 = ingest(agent_ops)
    ag_cpu1 = sum(proc_stats(ag.pid)[0] for ag in agents if ag.poll() is None)
    cpu1, sup_hwm = proc_stats(sup.pid)[:2]
    mb_cpu1 = proc_stats(mb.pid)[0] if a.backend == "kafka" else 0
    dt = time.time() - t0
    p = pool(sport) or {}
    up_end = sum(1 for n in p.get("nodes", {}).values() if n.get("state") == "up")
    rss = [proc_stats(ag.pid)[1] for ag in agents if ag.poll() is None]
    lag.stop.set()
    lag.join()
    stop_all(procs)
    sup_err = open(os.path.join(tmp, "supervisor.err")).read()
    line = [x for x in sup_err.splitlines() if "stopped:" in x]
    beats = int(line[-1].split(" heartbeats")[0].rsplit(" ", 1)[1]) if line else -1

    def said(word):  # "N <word>" in the supervisor's last line
        return int(line[-1].split(" " + word)[0].rsplit(" ", 1)[1]) if line and " " + word in line[-1] else -1
    print("command: bench/bench_nodes.py --nodes %d --devices %d --backend %s --seconds %g --samples %s%s"
          % (a.nodes, a.devices, a.backend, a.seconds, a.samples, " --discover" if a.discover else ""))
    print("join-to-pool (agent start -> node up): p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d agents"
          % (pct(joins, 50) * 1000, pct(joins, 99) * 1000, max(joins) * 1000, len(joins)))
    print("pool: %d/%d devices %s; %d/%d nodes up then, %d/%d after %g s more"
          % (last, want, "after %.1f s" % full_at if full_at else "NOT reached 300 s after the last agent started", up, a.nodes,
             up_end, a.nodes, a.seconds))
    print("supervisor: %.1f %% of a core over the steady %g s, peak RSS %.1f MB; %d heartbeats in the whole run"
          % (100 * (cpu1 - cpu0) / dt, a.seconds, sup_hwm / 1e6, beats))
    print("supervisor: %d registered, %d expired, %d revived (back with their devices), %d unchanged "
          "registrations or plans, %d times deaf (its loop stalled or its registry behind)"
          % (said("registered"), said("expired"), said("revived"), said("unchanged"), said("deaf")))
    print("supervisor's projection behind the log: at most %d records, %.2f s (a record's age when "
          "folded) in the whole run, the most %.0f s after the first agent started; %d records, %.2f s "
          "in the steady %g s" % (lag.records, lag.seconds, lag.worst_at, lag.steady_records, lag.steady_seconds,
                                  a.seconds))
    if a.backend == "kafka":
        print("msrs-mockbroker (the whole Kafka cluster, one process): %.1f %% of a core over the steady %g s"
              % (100 * (mb_cpu1 - mb_cpu0) / dt, a.seconds))
    if a.samples != "none":
        rec = (in1[1] - in0[1]) / dt
        print("agents' ingest over the steady %g s, all %d together: %.2f MB/s received, %.0f "
              "records/s to the log; agents' CPU %.1f %% of a core in all (%.1f us per record)"
              % (a.seconds, a.nodes, (in1[0] - in0[0]) / dt / 1e6, rec,
                 100 * (ag_cpu1 - ag_cpu0) / dt, 1e6 * (ag_cpu1 - ag_cpu0) / max(rec * dt, 1)))
    print("load average at the end: %s" % open("/proc/loadavg").read().strip())
    if rss:
        print("agents: peak RSS p50 %.1f MB, max %.1f MB" % (pct(rss, 50) / 1e6, max(rss) / 1e6))
    print("logs in", tmp)


if __name__ == "__main__":
    main()
