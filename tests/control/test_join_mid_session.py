#!/usr/bin/python3
"""A node joins while another records, with real processes on the log named
by MSRS_TEST_LOG (a msrs-mockbroker) or a fresh SQLite file: msrs-supervisor,
msrs-syncd, msrs-collectord, two msrs-agent that find the supervisor by
discovery (--supervisor discover, a UDP query on loopback) and two
msrs-devsim.

Checked, in order:
- discovery: the supervisor answers a query for its topic prefix with its
  URL and that it leads; a query for another prefix gets no answer; a
  malformed datagram is skipped and the next query is still answered;
- n1 (found the supervisor by discovery) records session m1 with its two
  devices; while m1 records, n2 is started, discovers, joins, and its two
  devices join the pool (`msrs devices`: 4 devices on 2 nodes);
- m1 is untouched by the join: CollectionStopped's counts == what devsim
  sent for m1, no gaps, no drops, only n1's devices;
- the pool is one: session m2 groups all four devices across both nodes and
  its counts == what both devsims sent.
A count is samples + late_stop_samples: the device draws the stop line on
its clock at the instant it was sent, the agent and the archive at the stop
instant in master time, and a sample within a hair of the instant (the
clock's fit moved since) is late_stop, reported (docs/architecture.md)."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, devsim_sent, free_port, of_type, stop_all, tagged_counts  # noqa: E402

check = Checks()
KAFKA = bool(os.environ.get("MSRS_TEST_LOG", "").startswith("kafka:"))
PREFIX = "msrs."


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ask(port, payloads, wait=1.0):
    """Every answer to the datagrams sent to 127.255.255.255:port within wait s."""
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    c.settimeout(0.2)
    for p in payloads:
        c.sendto(p if isinstance(p, bytes) else json.dumps(p).encode(), ("127.255.255.255", port))
    answers, end = [], time.time() + wait
    while time.time() < end:
        try:
            answers.append(json.loads(c.recvfrom(2048)[0]))
        except socket.timeout:
            pass
    c.close()
    return answers


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-join-")
    log = os.environ.get("MSRS_TEST_LOG") or "sqlite:" + os.path.join(tmp, "log.db")
    common = ["--log", log, "-X", "topic.prefix=" + PREFIX]
    udp = free_udp_port()
    discovery = ["-X", "discovery.port=%d" % udp, "-X", "discovery.targets=127.255.255.255"]
    sup_port = free_port()
    ports = {"n1": free_port(), "n2": free_port()}
    procs = []
    names = {}

    def start(name, args, log_args=True):
        p = names[name] = subprocess.Popen([os.path.join(BIN, args[0])] + args[1:] +
                                           (common if log_args else []),
                                           stderr=open(os.path.join(tmp, name + ".err"), "a"))
        procs.append(p)
        return p

    def msrs(*args, timeout=120):
        return subprocess.run([os.path.join(BIN, "msrs")] + common + list(args), capture_output=True,
                              text=True, timeout=timeout)

    def tail(topic):
        r = subprocess.run([os.path.join(BIN, "msrs-tail")] + common + ["--topic", topic],
                           capture_output=True, text=True, timeout=60)
        return [json.loads(line) for line in r.stdout.splitlines()]

    def nodes():
        try:
            with socket.create_connection(("127.0.0.1", sup_port), 2) as s:
                s.sendall(b"GET /v1/nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            return json.loads(data.split(b"\r\n\r\n", 1)[1])
        except (OSError, ValueError, IndexError):
            return None

    def node_up(n):
        return (nodes() or {}).get("nodes", {}).get(n, {}).get("state") == "up"

    def stopped_counts(session):
        st = [r for r in of_type(tail("sessions"), "CollectionStopped") if r["key"] == session]
        if len(st) != 1:
            return None, None
        return (tagged_counts(st[0]["value"]["streams"]),
                st[0]["value"]["streams"])

    try:
        start("sup", ["msrs-supervisor", "--listen", "127.0.0.1:%d" % sup_port, "--node-id", "sup0",
                      "-X", "supervisor.ttl_ms=3000", "-X", "supervisor.heartbeat_ms=500"] + discovery)
        check.wait_for(lambda: (nodes() or {}).get("leading"), 30, "the supervisor leads")

        # --- discovery ---------------------------------------------------
        q = {"msrs": "discover", "v": 1, "prefix": PREFIX, "node_id": "test"}
        a = ask(udp, [q])
        check(len(a) == 1 and a[0]["url"] == "http://127.0.0.1:%d" % sup_port and a[0]["leading"] is True
              and a[0]["node_id"] == "sup0", "discovery answer: %r" % a)
        check(ask(udp, [dict(q, prefix="other.")]) == [], "no answer for another topic prefix")
        a = ask(udp, [b"{not json", b"\xff" * 2000, dict(q, v=2), q])
        check(len(a) == 1 and a[0]["msrs"] == "supervisor",
              "malformed datagrams skipped, the next query answered: %r" % a)

        start("syncd", ["msrs-syncd"])
        # The start instant 4 s ahead. On the mock cluster the agent's commands
        # consumer joins its group seconds after the agent starts: under ASan
        # m1's start reached the agent 1.5 s after a 0.8 s lead had passed. The
        # agent then counts the samples sent before it by their device time,
        # but devsim counts only what it sent after the start arrived.
        start("collectord", ["msrs-collectord", "-X", "collect.lead_ms=4000"])
        start("n1", ["msrs-agent", "--listen", "127.0.0.1:%d" % ports["n1"], "--node-id", "n1",
                     "--supervisor", "discover", "-X", "sync.interval_ms=500"] + discovery)
        t0 = time.time()
        if check.wait_for(lambda: node_up("n1"), 30, "n1 up by discovery"):
            print("n1 found the supervisor by discovery and was up %.2f s after start" % (time.time() - t0))
        stats1, stats2 = os.path.join(tmp, "stats1.json"), os.path.join(tmp, "stats2.json")
        sim1 = start("devsim1", ["msrs-devsim", "--url", "ws://127.0.0.1:%d/v1/devices" % ports["n1"],
                                 "--devices", "2", "--prefix", "a-", "--stats", stats1], log_args=False)
        check.wait_for(lambda: (nodes() or {}).get("device_count") == 2, 30, "n1's 2 devices in the pool")

        # --- m1 records on n1; n2 joins meanwhile -------------------------------
        m1 = subprocess.Popen([os.path.join(BIN, "msrs")] + common +
                              ["session", "start", "m1", "--devices", "a-1,a-2", "--duration", "8",
                               "--wait", "--timeout", "90"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        started = check.wait_for(lambda: [r for r in of_type(tail("sessions"), "CollectionStarted")
                                          if r["key"] == "m1"], 60, "m1 started")
        start_at = started[0]["value"]["start_at_ns"] / 1e9 if started else time.time()
        stop_at = start_at + 8  # --duration 8
        time.sleep(max(0.0, start_at - time.time()) + 1.5)
        t_join = time.time()
        start("n2", ["msrs-agent", "--listen", "127.0.0.1:%d" % ports["n2"], "--node-id", "n2",
                     "--supervisor", "discover", "-X", "sync.interval_ms=500"] + discovery)
        sim2 = start("devsim2", ["msrs-devsim", "--url", "ws://127.0.0.1:%d/v1/devices" % ports["n2"],
                                 "--devices", "2", "--prefix", "b-", "--stats", stats2], log_args=False)
        joined = check.wait_for(lambda: (nodes() or {}).get("device_count") == 4, 30,
                                "4 devices in the pool")
        t_pool = time.time()
        if joined:
            print("n2 joined with its devices %.2f s after it started, %.2f s before m1's stop"
                  % (t_pool - t_join, stop_at - t_pool))
        check(t_pool < stop_at, "n2 joined while m1 was recording (%.2f s before its stop)" % (stop_at - t_pool))
        out = msrs("devices")
        check(out.returncode == 0 and "pool: 4 devices connected on 2 nodes" in out.stdout,
              "msrs devices shows both nodes' devices: %s" % out.stdout)
        rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:-1]}
        check(sorted(rows) == ["a-1", "a-2", "b-1", "b-2"] and rows["b-1"][1] == "n2"
              and rows["a-1"][1] == "n1" and rows["b-2"][2] == "yes",
              "msrs devices: each device with its node: %r" % rows)

        out, err = m1.communicate(timeout=120)
        check(m1.returncode == 0, "m1 stopped: rc %s %s" % (m1.returncode, err[-500:]))
        counts, streams = stopped_counts("m1")

        # --- one pool: m2 over both nodes ---------------------------------------
        r = msrs("session", "start", "m2", "--min-group", "4", "--duration", "3", "--wait",
                 "--timeout", "90")
        check(r.returncode == 0, "m2 over both nodes stopped: rc %s %s" % (r.returncode, r.stderr[-500:]))
        counts2, streams2 = stopped_counts("m2")
        for p in (sim1, sim2):
            p.terminate()
            p.wait(20)
        s1, s2 = stats1, stats2
        want1 = devsim_sent(s1, "m1")
        check(len(want1) >= 2 and {d for d, _ in want1} == {"a-1", "a-2"},
              "devsim1 sent m1 from a-1 and a-2: %r" % want1)
        check(counts == want1, "m1's CollectionStopped counts == devsim1's: %r vs %r" % (counts, want1))
        check(streams and all(s["gaps"] == 0 and s["dropped"] == 0 for s in streams),
              "m1: no gaps, no drops")
        check(not devsim_sent(s2, "m1"), "n2's devices are not in m1")
        want2 = {**devsim_sent(s1, "m2"), **devsim_sent(s2, "m2")}
        check({d for d, _ in want2} == {"a-1", "a-2", "b-1", "b-2"},
              "m2 recorded all four devices on both nodes: %r" % sorted(want2))
        check(counts2 == want2, "m2's CollectionStopped counts == both devsims': %r vs %r" % (counts2, want2))
        check(streams2 and all(s["gaps"] == 0 and s["dropped"] == 0 for s in streams2),
              "m2: no gaps, no drops")
    finally:
        stop_all(procs)
        # a clean stop is exit 0 (under ASan, also no leak and no bad access)
        bad = {n: p.returncode for n, p in names.items() if p.returncode != 0}
        check(not bad, "every process stopped cleanly on SIGTERM: %r" % bad)
        for name in ("sup", "n1", "n2", "syncd", "collectord", "devsim1", "devsim2"):
            path = os.path.join(tmp, name + ".err")
            if check.failures and os.path.exists(path):
                print("---", name, "---")
                print(open(path).read()[-2500:])
    if not check.failures:
        subprocess.run(["rm", "-rf", tmp])
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
