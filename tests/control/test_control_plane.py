#!/usr/bin/python3
"""The control plane with real processes: two msrs-supervisor, three
msrs-agent (two with --supervisor naming both, one finding them by discovery)
and msrs-devsim, on the log named by
MSRS_TEST_LOG (a msrs-mockbroker, through with-mockbroker.sh) or a fresh
SQLite file. Checks, in order: one supervisor leads; the agents register,
are planned and heartbeat, and their devices form one pool; a full node
sends devices to another; a persistent node id survives a restart; a node
killed with SIGKILL is expired within its TTL and its devices leave the
pool; a node stopped past its TTL registers again when it resumes; the
leader killed with SIGKILL is replaced and the agents follow, with no node
expired on the way; a restarted supervisor rebuilds the registry from the
log; bad requests get 4xx answers and the supervisor keeps serving; an agent
whose first supervisor answers 200 with a body over 64 KiB, or one that is
not JSON, says so and registers with the next."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, free_port, stop_all  # noqa: E402

check = Checks()
KAFKA = bool(os.environ.get("MSRS_TEST_LOG", "").startswith("kafka:"))
TTL_MS = 3000
LEASE_MS = 6000 if KAFKA else 1500  # Kafka's floor is 6 s (ev.h)


def http(port, path, body=None):
    """(status, JSON) of a request to 127.0.0.1:port; (0, None) when nothing answers."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data,
                                 method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except OSError:
        return 0, None


def pool(port):
    s, p = http(port, "/v1/nodes")
    return p if s == 200 else None


def node_state(port, node):
    p = pool(port)
    return p and p["nodes"].get(node, {}).get("state")


def tail(log, prefix, topic):
    r = subprocess.run([os.path.join(BIN, "msrs-tail"), "--log", log, "-X", "topic.prefix=" + prefix,
                        "--topic", topic], capture_output=True, text=True, timeout=60)
    return [json.loads(line) for line in r.stdout.splitlines()]


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-control-")
    log = os.environ.get("MSRS_TEST_LOG") or "sqlite:" + os.path.join(tmp, "log.db")
    # Kafka: a fresh mock broker per run, which made msrs.leader with the one
    # partition leadership needs; SQLite: a fresh file.
    prefix = "msrs."
    procs = []
    sup_ports = [free_port(), free_port()]
    sups = {}
    agent_ports = {n: free_port() for n in ("n1", "n2", "n3")}
    agents = {}
    supervisors = ",".join("http://127.0.0.1:%d" % p for p in sup_ports)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 0))
    discovery = ["-X", "discovery.port=%d" % udp.getsockname()[1], "-X", "discovery.targets=127.255.255.255"]
    udp.close()
    common = ["--log", log, "-X", "topic.prefix=" + prefix]

    def start(name, args):
        err = open(os.path.join(tmp, name + ".err"), "a")
        p = subprocess.Popen([os.path.join(BIN, args[0])] + args[1:] +
                             (common if args[0] != "msrs-devsim" else []), stderr=err)
        procs.append(p)
        return p

    def start_supervisor(i):
        sups[i] = start("sup%d" % i, ["msrs-supervisor", "--listen", "127.0.0.1:%d" % sup_ports[i],
                                      "--node-id", "sup%d" % i, "-X", "supervisor.ttl_ms=%d" % TTL_MS,
                                      "-X", "supervisor.heartbeat_ms=500",
                                      "-X", "supervisor.presence_ms=500",
                                      "-X", "supervisor.lease_ms=%d" % LEASE_MS,
                                      "-X", "scaling.max_devices_per_node=4"] + discovery)

    def start_agent(node, by_file=False, discover=False):
        ident = (["-X", "agent.node_id_file=" + os.path.join(tmp, node + ".id")] if by_file
                 else ["--node-id", node])
        agents[node] = start(node, ["msrs-agent", "--listen", "127.0.0.1:%d" % agent_ports[node],
                                    "--supervisor", "discover" if discover else supervisors]
                             + ident + discovery)

    try:
        # --- one leader ------------------------------------------------------
        start_supervisor(0)
        check.wait_for(lambda: (pool(sup_ports[0]) or {}).get("leading"), 30, "sup0 leads")
        start_supervisor(1)
        p1 = check.wait_for(lambda: pool(sup_ports[1]), 30, "sup1 answers")
        check(p1 and not p1["leading"], "sup1 does not lead while sup0 does")
        # 503 "starting" until it has folded the log (seconds under ASan on the mock)
        s, r = check.wait_for(lambda: (lambda x: x if x[1] and x[1].get("error") != "starting" else None)(
            http(sup_ports[1], "/v1/nodes/register", {"node_id": "x"})), 30, "sup1 folded the log") or (0, {})
        check(s == 503 and r.get("error") == "not_leader", "a follower refuses node requests: %s %r" % (s, r))
        if not KAFKA:
            check(r.get("leader", "").startswith("sup0@"), "and names the leader: %r" % r)

        # --- join: three agents, one pool -----------------------------------
        t0 = time.time()
        start_agent("n1", by_file=True)
        start_agent("n2")
        start_agent("n3", discover=True)  # finds the leader by a UDP query
        id_file = os.path.join(tmp, "n1.id")
        check.wait_for(lambda: os.path.exists(id_file) and open(id_file).read().endswith("\n"), 10,
                       "n1's node id file")
        n1_id = open(id_file).read().strip()
        up = check.wait_for(lambda: all(node_state(sup_ports[0], n) == "up" for n in (n1_id, "n2", "n3")),
                            30, "three nodes up")
        if up:
            print("join: three agents up in the pool %.2f s after start" % (time.time() - t0))
        check(n1_id.count("-") >= 1, "n1 made a node id: %s" % n1_id)
        check(node_state(sup_ports[0], n1_id) == "up", "n1 registered as %s" % n1_id)
        nodes = {"n1": n1_id, "n2": "n2", "n3": "n3"}
        # 6 devices ask n1 (max 4): two are sent elsewhere; 2 go to n2.
        start("devsim1", ["msrs-devsim", "--url", "ws://127.0.0.1:%d/v1/devices" % agent_ports["n1"],
                          "--devices", "6", "--prefix", "a-"])
        start("devsim2", ["msrs-devsim", "--url", "ws://127.0.0.1:%d/v1/devices" % agent_ports["n2"],
                          "--devices", "2", "--prefix", "b-"])
        full = check.wait_for(lambda: (pool(sup_ports[0]) or {}).get("device_count") == 8, 30,
                              "8 devices in the pool")
        p = pool(sup_ports[0])
        if not full:
            print(json.dumps(p, indent=1)[:3000])
        if full:
            per = {}
            for d, n in p["devices"].items():
                per[n] = per.get(n, 0) + 1
            check(per.get(n1_id) == 4, "n1 holds its maximum, 4: %r" % per)
            check(sum(1 for d, n in p["devices"].items() if d.startswith("a-") and n != n1_id) == 2,
                  "two of n1's devices were placed on other nodes: %r" % p["devices"])
        plan = [r for r in tail(log, prefix, "nodes") if r["type"] == "msrs.events.NodePlanned"]
        check(any(r["value"]["max_devices"] == 4 for r in plan), "NodePlanned carries max_devices 4")
        hb = [r for r in tail(log, prefix, "nodes") if r["type"] == "msrs.events.NodeHeartbeat"
              and r["key"] == "n2" and r["value"]["clock_rtt_ns"] > 0]
        check(hb and abs(hb[-1]["value"]["clock_offset_ns"]) < 1000000,
              "n2 measured its clock against the supervisor: %r" % (hb[-1]["value"] if hb else None))

        # --- persistent node id ------------------------------------------------
        agents["n1"].terminate()
        agents["n1"].wait(20)
        start_agent("n1", by_file=True)
        time.sleep(1)
        check(open(os.path.join(tmp, "n1.id")).read().strip() == n1_id, "n1 keeps its id across restarts")

        # --- expiry: n2 killed -----------------------------------------------
        agents["n2"].send_signal(signal.SIGKILL)
        agents["n2"].wait()
        t_kill = time.time()
        gone = check.wait_for(lambda: node_state(sup_ports[0], "n2") == "expired", TTL_MS / 1000 + 10,
                              "n2 expired")
        if gone:
            took = time.time() - t_kill
            print("expiry: n2 expired %.2f s after SIGKILL (ttl %.1f s)" % (took, TTL_MS / 1000))
            check(took <= TTL_MS / 1000 + 2, "expired within ttl + 2 s: %.2f s" % took)
            p = pool(sup_ports[0])
            check(not any(n == "n2" for n in p["devices"].values()), "n2's devices left the pool")
        exp = [r for r in tail(log, prefix, "nodes") if r["type"] == "msrs.events.NodeExpired"]
        check(len(exp) == 1 and exp[0]["id"].startswith("expire/n2/"), "one NodeExpired, deterministic id: %r"
              % [r["id"] for r in exp])

        # --- a node that comes back registers again ----------------------------
        agents["n3"].send_signal(signal.SIGSTOP)
        check.wait_for(lambda: node_state(sup_ports[0], "n3") == "expired", TTL_MS / 1000 + 10, "n3 expired")
        agents["n3"].send_signal(signal.SIGCONT)
        check.wait_for(lambda: node_state(sup_ports[0], "n3") == "up", 15, "n3 up again after SIGCONT")
        regs = [r for r in tail(log, prefix, "nodes") if r["type"] == "msrs.events.NodeRegistered"
                and r["key"] == "n3"]
        check(len(regs) == 2, "n3 registered again: %d NodeRegistered" % len(regs))

        # --- leader failover --------------------------------------------------
        expired_before = len([r for r in tail(log, prefix, "nodes") if r["type"] == "msrs.events.NodeExpired"])
        sups[0].send_signal(signal.SIGKILL)
        sups[0].wait()
        t_kill = time.time()
        led = check.wait_for(lambda: (pool(sup_ports[1]) or {}).get("leading"), LEASE_MS / 1000 * 3 + 15,
                             "sup1 leads after sup0's SIGKILL")
        t_led = time.time()

        def followed():
            n = (pool(sup_ports[1]) or {}).get("nodes", {}).get(n1_id, {})
            return n.get("last_seen_ns", 0) > t_led * 1e9

        moved = check.wait_for(followed, 15, "n1 heartbeats to sup1")
        if led and moved:
            print("failover: sup1 led %.2f s after SIGKILL of sup0 (lease %.1f s); n1 heartbeat "
                  "accepted by sup1 %.2f s after the kill" % (t_led - t_kill, LEASE_MS / 1000, time.time() - t_kill))
        check(node_state(sup_ports[1], n1_id) == "up", "n1 stayed up through the failover")
        seen = lambda: (pool(sup_ports[1]) or {}).get("nodes", {}).get("n3", {}).get("last_seen_ns", 0)
        if check.wait_for(lambda: seen() > t_led * 1e9, 15, "n3 (discovery) heartbeats to sup1"):
            print("failover: n3, which knows supervisors by discovery only, heartbeat accepted by "
                  "sup1 %.2f s after the kill" % (time.time() - t_kill))
        time.sleep(1)
        expired_after = len([r for r in tail(log, prefix, "nodes") if r["type"] == "msrs.events.NodeExpired"])
        check(expired_after == expired_before, "no node expired during the failover")
        pres = [r for r in tail(log, prefix, "presence") if r["key"] == "sup1"]
        check(pres and pres[-1]["value"]["address"] == "http://127.0.0.1:%d" % sup_ports[1],
              "sup1 publishes PresenceSnapshot with its address")

        # --- a restarted supervisor rebuilds the registry from the log ---------
        start_supervisor(0)
        p0 = check.wait_for(lambda: pool(sup_ports[0]), 30, "sup0 answers again")
        p1 = pool(sup_ports[1])
        if p0 and p1:
            check(not p0["leading"], "restarted sup0 follows")
            check(set(p0["nodes"]) == set(p1["nodes"]) and
                  all(p0["nodes"][k]["state"] == p1["nodes"][k]["state"] for k in p0["nodes"]),
                  "sup0's rebuilt registry equals the leader's: %r vs %r" %
                  ({k: v["state"] for k, v in p0["nodes"].items()}, {k: v["state"] for k, v in p1["nodes"].items()}))

        # --- a supervisor that answers nonsense -------------------------------
        class Nonsense(BaseHTTPRequestHandler):
            bodies = [b"x" * 70000, b"not json"]

            def do_POST(self):
                body = Nonsense.bodies[0]
                Nonsense.bodies.append(Nonsense.bodies.pop(0))
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        bad = HTTPServer(("127.0.0.1", 0), Nonsense)
        threading.Thread(target=bad.serve_forever, daemon=True).start()
        agent_ports["n4"] = free_port()
        agents["n4"] = start("n4", ["msrs-agent", "--listen", "127.0.0.1:%d" % agent_ports["n4"],
                                    "--node-id", "n4", "--supervisor", "http://127.0.0.1:%d,http://127.0.0.1:%d"
                                    % (bad.server_address[1], sup_ports[1])])
        check.wait_for(lambda: node_state(sup_ports[1], "n4") == "up", 20,
                       "n4 up at sup1 after its first supervisor answered nonsense")
        err4 = open(os.path.join(tmp, "n4.err")).read()
        check("answered 200 with more than 64 KiB" in err4 or "not a JSON object" in err4,
              "n4 says what was wrong with the answer: %s" % err4[-600:])
        bad.shutdown()

        # --- bad requests ---------------------------------------------------------
        lp = sup_ports[1]
        for body, want, what in [(b"{not json", 400, "malformed JSON"),
                                 ({"node_id": ""}, 400, "empty node_id"),
                                 ({"node_id": "a b"}, 400, "node_id with a space"),
                                 (b"x" * 70000, 413, "oversized body")]:
            s, r = http(lp, "/v1/nodes/register", body)
            check(s == want and r and "error" in r, "%s: %d %r (expected %d)" % (what, s, r, want))
        s, r = http(lp, "/v1/nodes/heartbeat", {"node_id": "never-registered"})
        check(s == 404 and r["error"] == "unknown_node", "heartbeat of an unknown node: %d %r" % (s, r))
        s, r = http(lp, "/v1/nope", {})
        check(s == 404, "unknown path: %d" % s)
        s, r = http(lp, "/v1/time", {"t1": "x"})
        check(s == 400, "time probe without an integer t1: %d" % s)
        for _ in range(3):  # connections closed before any request (port probes)
            socket.create_connection(("127.0.0.1", lp)).close()
        time.sleep(0.2)
        check(node_state(lp, n1_id) == "up", "the leader still serves")
    finally:
        stop_all(procs)
        for name in ("sup0", "sup1", "n1", "n2", "n3", "devsim1", "devsim2"):
            path = os.path.join(tmp, name + ".err")
            if check.failures and os.path.exists(path):
                print("---", name, "---")
                print(open(path).read()[-3000:])
    if not check.failures:
        subprocess.run(["rm", "-rf", tmp])
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
