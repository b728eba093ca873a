#!/usr/bin/python3
"""An agent under 10 000 hostile connections, with real devices streaming.

One msrs-agent on TLS with the lab key (deploy/local/make-credentials.sh)
and its default limits; one msrs-devsim with D devices streaming GSR + IMU
from the start; then an attacker (asyncio + ssl, not ours) opens N
connections from A loopback addresses (127.0.1.x), each a TLS handshake and
a WebSocket upgrade and then silence, and opens a new one whenever one is
closed, for S seconds; halfway through, a second msrs-devsim with D more
devices connects. Prints the agent's RSS (before, peak, after), its CPU,
the samples reaching the log per second (before, during, after), device
disconnections during the attack, how long the late devices took to
register, and the agent's refused / evicted / no-hello counters.

usage: bench/bench_hostile.py [--connections 10000] [--addresses 100]
                              [--devices 8] [--seconds 30] [-X KEY=VALUE]...
                              [--bin build/bin]"""
import argparse
import asyncio
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pylib"))
from msrstest import free_port, rss_kb, stop_all, tail, wait_listening  # noqa: E402
from bench_sync import proc_stats  # noqa: E402

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


class Attacker:
    def __init__(self, port, ctx, addresses):
        self.port, self.ctx, self.addresses = port, ctx, addresses
        self.open = self.peak = self.attempts = self.handshakes = self.closed = self.failed = 0
        self.stop = False

    async def one(self, addr):
        """One connection slot: connect, upgrade, wait to be closed, again."""
        while not self.stop:
            self.attempts += 1
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", self.port, ssl=self.ctx, local_addr=(addr, 0)), 20)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                self.failed += 1
                await asyncio.sleep(0.5)
                continue
            self.handshakes += 1
            self.open += 1
            self.peak = max(self.peak, self.open)
            try:
                w.write(b"GET /v1/devices HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: msrs.v1\r\n\r\n")
                while not self.stop and await r.read(4096):
                    pass  # the challenge, then the close
            except (OSError, ssl.SSLError):
                pass
            self.open -= 1
            self.closed += 1
            w.close()

    async def run(self, n, seconds):
        tasks = [asyncio.ensure_future(self.one(self.addresses[i % len(self.addresses)]))
                 for i in range(n)]
        await asyncio.sleep(seconds)
        self.stop = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def batches_per_s(samples, t0, t1):
    """The first devices' SensorSampleBatch records within [t0, t1), per second."""
    n = sum(1 for r in samples if t0 <= r["timestamp"] / 1000 < t1 and r["key"].startswith("real-"))
    return n / max(t1 - t0, 1e-9)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--addresses", type=int, default=100)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("-X", dest="agent_conf", action="append", default=[],
                    help="KEY=VALUE for msrs-agent (e.g. agent.max_pending_per_address=8)")
    ap.add_argument("--bin", default=os.path.join(SRC, "build", "bin"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="msrs-bench-hostile-")
    conf = subprocess.run([os.path.join(SRC, "deploy", "local", "make-credentials.sh"),
                           os.path.join(tmp, "tls")], capture_output=True, text=True,
                          check=True).stdout.strip()
    env = dict(os.environ, MSRS_CONFIG=conf)
    db = os.path.join(tmp, "log.db")
    port = free_port()
    url = "wss://127.0.0.1:%d/v1/devices" % port
    procs = []
    err = lambda name: open(os.path.join(tmp, name + ".err"), "w")  # noqa: E731

    def start(name, args):
        p = subprocess.Popen([os.path.join(a.bin, args[0])] + args[1:], env=env, stderr=err(name))
        procs.append(p)
        return p

    print("# command: %s" % " ".join(sys.argv))
    print("# load average before: %s" % open("/proc/loadavg").read().split()[:3])
    try:
        agent = start("agent", ["msrs-agent", "--log", "sqlite:" + db, "--listen",
                                "127.0.0.1:%d" % port, "--node-id", "hostile-node"] +
                      [x for kv in a.agent_conf for x in ("-X", kv)])
        wait_listening(port, 20)
        start("devsim", ["msrs-devsim", "--url", url, "--devices", str(a.devices),
                         "--prefix", "real-", "--profile", "none"])
        time.sleep(5)
        rss0, cpu0 = rss_kb(agent.pid), proc_stats(agent.pid)[0]
        t_before = time.time()
        time.sleep(5)
        ctx = ssl.create_default_context(cafile=os.path.join(tmp, "tls", "ca.pem"))
        att = Attacker(port, ctx, ["127.0.1.%d" % (i + 1) for i in range(a.addresses)])
        peak_rss = [rss0]

        async def attack():
            run = asyncio.ensure_future(att.run(a.connections, a.seconds))
            t_start = time.time()
            late = None
            while not run.done():
                await asyncio.sleep(1)
                peak_rss.append(rss_kb(agent.pid))
                if late is None and time.time() - t_start >= a.seconds / 2:
                    late = time.time()
                    start("devsim-late", ["msrs-devsim", "--url", url, "--devices",
                                          str(a.devices), "--prefix", "late-", "--profile",
                                          "none"])
                print("t=%4.0f s: attacker %d open (peak %d), %d handshakes, %d closed, %d "
                      "failed; agent RSS %d KiB" % (time.time() - t_start, att.open, att.peak,
                                                     att.handshakes, att.closed, att.failed,
                                                     peak_rss[-1]), flush=True)
            return t_start, late
        t_start, t_late = asyncio.run(attack())
        t_end = time.time()
        cpu1 = proc_stats(agent.pid)[0]
        time.sleep(8)  # the attacker's last connections close (hello deadline 5 s)
        rss_after = rss_kb(agent.pid)
        t_after = time.time()
        time.sleep(5)
        t_after_end = time.time()
    finally:
        stop_all(procs)
    log = open(os.path.join(tmp, "agent.err")).read()
    counters = re.findall(r"stopped: .*?\)", log)
    devices = [r for r in tail(db, "devices")]
    reg = {}
    for r in devices:
        if r["type"].endswith("DeviceRegistered"):
            reg.setdefault(r["value"]["device_id"], r["timestamp"] / 1000)
    late = [reg[d] - t_late for d in reg if d.startswith("late-")]
    drops = [r for r in devices if r["type"].endswith("DeviceDisconnected")
             and t_start <= r["timestamp"] / 1000 <= t_end and r["value"]["device_id"].startswith("real-")]
    print("attack: %d connections from %d addresses for %.0f s: %d attempts, %d TLS handshakes "
          "completed, peak %d open at once, %d closed by the agent, %d failed to connect" %
          (a.connections, a.addresses, a.seconds, att.attempts, att.handshakes, att.peak,
           att.closed, att.failed))
    print("agent: %s" % (counters[-1] if counters else "no exit line"))
    print("agent RSS: %.1f MiB before, %.1f MiB peak during, %.1f MiB 8 s after; CPU %.0f %% of "
          "a core during the attack" % (rss0 / 1024, max(peak_rss) / 1024, rss_after / 1024,
                                        100 * (cpu1 - cpu0) / (t_end - t_before)))
    samples = tail(db, "samples")
    print("the first %d devices' sample batches on the log per second: %.1f before, %.1f during, "
          "%.1f after" % (a.devices, batches_per_s(samples, t_before, t_start),
                          batches_per_s(samples, t_start, t_end),
                          batches_per_s(samples, t_after, t_after_end)))
    print("real devices disconnected during the attack: %d; late devices registered: %d/%d, "
          "%.1f s after they started (max)" % (len(drops), len(late), a.devices,
                                               max(late) if late else float("nan")))
    print("# load average after: %s" % open("/proc/loadavg").read().split()[:3])


if __name__ == "__main__":
    main()
