#!/usr/bin/python3
"""Security of the device endpoint and the supervisor, tried as an attacker
would, with clients that are not ours (Debian's python3-websockets with
Python's ssl, curl) against real msrs-agent and msrs-supervisor processes
on TLS with the lab key of deploy/local/make-credentials.sh:

- a plain ws:// or http:// client gets no answer from a TLS listener;
- a hello without a credential, with a wrong proof, with a revoked
  generation is refused ("unauthorized") and the connection closed;
- an impostor cannot take or hold a connected device's id, nor learn its
  sequence numbers, while the real device keeps streaming;
- a connection that says nothing is closed after agent.hello_timeout_ms;
- connections without hello from one address are bounded
  (agent.max_pending_per_address): the rest are refused at once, a real
  device from another address still registers, and the agent's RSS stays
  within a bound and its count of open connections returns to what it was;
- unfinished fragments before hello pin at most 64 KiB per connection;
- an agent full of connections without hello lets a device in, in the
  oldest one's place;
- a registered device that floods is closed (1008), others go on;
- the SQLite log file is created 0640 (group-readable, nothing for others);
- the supervisor answers PUT and DELETE with 405;
- nodes and operators: a register, plan or heartbeat without a node's token
  gets 401, with another node's token (or an operator's) 403, so a fake
  node never joins the pool nor receives devices; a viewer's token reads
  the pool, no token does not; a revoked node token is refused;
  registrations past supervisor.max_registrations_per_s get 429 and live
  nodes past supervisor.max_nodes 503, and PresenceSnapshot stays within
  that bound;
- operators: msrs session start/stop need an operator's token (auth.token,
  role operator or admin; a viewer's, a forged one or none: exit 2), and
  the operator's name is what CollectionRequested records as requested_by;
- discovery: a rogue answer (unsigned, or signed with another key) is
  ignored and said, and the agent joins the real supervisor;
- a listener without a certificate, an agent without the lab key, and a
  lab key readable by others refuse to start (exit 2, naming the key).
"""
import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import ssl
import subprocess
import sys
import tempfile
import socket
import threading
import time
import urllib.error
import urllib.request

import websockets

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import (BIN, Checks, Procs, free_port, rss_kb, stop_all, tail,  # noqa: E402
                      wait_listening)

check = Checks()
# a flooder writing on after the agent closed it: asyncio warns at each write
logging.getLogger("asyncio").setLevel(logging.ERROR)
# Under ASan freed memory waits in its quarantine: RSS bounds are printed, not asserted.
MEASURE_RSS = not os.environ.get("MSRS_SANITIZED")
SRC = os.environ.get("MSRS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
PENDING = 16


def credential(key_hex, device_id, gen=1):
    mac = hmac.new(bytes.fromhex(key_hex), ("msrs-device:%s:%d" % (device_id, gen)).encode(),
                   hashlib.sha256).hexdigest()
    return "%d.%s" % (gen, mac)


def proof(cred, nonce, device_id):
    return hmac.new(bytes.fromhex(cred.split(".", 1)[1]), ("%s:%s" % (nonce, device_id)).encode(),
                    hashlib.sha256).hexdigest()


def token(key_hex, who, gen=1):
    """A node's ("node:ID") or an operator's ("operator:NAME:ROLE") token."""
    mac = hmac.new(bytes.fromhex(key_hex), ("msrs-%s:%d" % (who, gen)).encode(),
                   hashlib.sha256).hexdigest()
    return "%s:%d.%s" % (who, gen, mac)


def http(ctx, port, path, body=None, tok=None):
    """(status, JSON answer or None, headers) of a request to the supervisor."""
    req = urllib.request.Request("https://127.0.0.1:%d%s" % (port, path),
                                 data=None if body is None else json.dumps(body).encode())
    if tok:
        req.add_header("Authorization", "Bearer " + tok)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read()), e.headers
        except ValueError:
            return e.code, None, e.headers


def control_attacks(ctx, sup_port, key, tmp, db):
    """Fake and borrowed node tokens, operators' roles, revocation, and the
    bounds on registering, against the real supervisor."""
    reg = lambda node: {"node_id": node, "address": "127.0.0.1:1", "max_devices": 8}
    s, body, headers = http(ctx, sup_port, "/v1/nodes/register", reg("evil"))
    check(s == 401 and body["error"] == "unauthorized" and
          headers.get("WWW-Authenticate", "").startswith("Bearer"),
          "register without a token: 401 with WWW-Authenticate (%d %r)" % (s, body))
    forged = "node:evil:1." + "ab" * 32
    s, body, _ = http(ctx, sup_port, "/v1/nodes/register", reg("evil"), forged)
    check(s == 401, "register with a forged node token: 401 (%d %r)" % (s, body))
    other = token(key, "node:evil")  # a real token, of another node
    for path in ("/v1/nodes/register", "/v1/nodes/plan", "/v1/nodes/heartbeat"):
        s, body, _ = http(ctx, sup_port, path, reg("sec-node"), other)
        check(s == 403 and body["error"] == "forbidden",
              "%s for sec-node with node evil's token: 403 (%d %r)" % (path, s, body))
    viewer = token(key, "operator:vera:viewer")
    s, body, _ = http(ctx, sup_port, "/v1/nodes/heartbeat", reg("sec-node"), viewer)
    check(s == 403, "a heartbeat with a viewer's token: 403 (%d)" % s)
    s, body, _ = http(ctx, sup_port, "/v1/nodes")
    check(s == 401, "the pool without a token: 401 (%d)" % s)
    s, body, _ = http(ctx, sup_port, "/v1/nodes", tok=viewer)
    check(s == 200 and set(body["nodes"]) == {"sec-node"},
          "a viewer reads the pool: only the real node is in it (%d %r)" %
          (s, body and sorted(body["nodes"])))
    # the real node measured its clock over HTTPS (probes stamped at the
    # encrypted write, control.c): same host, so an offset near 0
    hb = [r["value"] for r in tail(db, "nodes") if r["type"].endswith("NodeHeartbeat")
          and r["key"] == "sec-node" and r["value"]["clock_rtt_ns"] > 0]
    check(hb and abs(hb[-1]["clock_offset_ns"]) < 200000,
          "sec-node measured its clock against the supervisor over TLS: %r" % (hb[-1] if hb else None))
    s, body, _ = http(ctx, sup_port, "/v1/time", {"t1": 1}, token(key, "operator:x:god"))
    check(s == 401, "an operator token of an unknown role: 401 (%d)" % s)

    with open(os.path.join(tmp, "tls", "revoked"), "a") as f:
        f.write("node gone 1\n")
    s, body, _ = http(ctx, sup_port, "/v1/nodes/register", reg("gone"), token(key, "node:gone"))
    check(s == 401 and "revoked" in body["message"], "a revoked node token: 401 (%d %r)" % (s, body))
    s, body, _ = http(ctx, sup_port, "/v1/nodes/register", reg("gone"), token(key, "node:gone", 2))
    check(s == 200, "its next generation registers (%d %r)" % (s, body))

    # registrations in a burst: the rate (5/s) and the live nodes (12) hold
    time.sleep(1.2)
    codes = [http(ctx, sup_port, "/v1/nodes/register", reg("burst-%d" % i),
                  token(key, "node:burst-%d" % i))[0] for i in range(12)]
    check(codes.count(429) >= 5 and codes.count(200) <= 5,
          "12 registrations at once: %d admitted, %d told 429" % (codes.count(200), codes.count(429)))
    for i in range(12, 24):
        time.sleep(0.25)
        codes.append(http(ctx, sup_port, "/v1/nodes/register", reg("burst-%d" % i),
                          token(key, "node:burst-%d" % i))[0])
    s, body, _ = http(ctx, sup_port, "/v1/nodes", tok=viewer)
    live = [k for k, v in body["nodes"].items() if v["state"] != "expired"]
    check(503 in codes and len(live) <= 12,
          "live nodes bounded by supervisor.max_nodes = 12: %d live, 503 given %d times" %
          (len(live), codes.count(503)))
    time.sleep(2.5)  # a presence period
    pres = [r for r in tail(db, "presence")]
    check(pres and max(len(r["value"]["nodes"]) for r in pres) <= 12,
          "PresenceSnapshot lists at most 12 nodes (%s)" %
          (pres and max(len(r["value"]["nodes"]) for r in pres)))

    # connections held open without a token (supervisor.max_connections 16):
    # counted from their accept, the oldest closed for newcomers; the node's
    # own connection (it showed its token) and an operator still get in
    raw = []
    for i in range(40):
        s = socket.socket()
        s.bind(("127.0.1.%d" % (i % 8 + 1), 0))
        s.connect(("127.0.0.1", sup_port))
        s.setblocking(False)
        raw.append(s)
    time.sleep(0.3)
    held = [s for s in raw if still_open(s)]
    s, body, _ = http(ctx, sup_port, "/v1/nodes", tok=viewer)
    check(len(held) <= 16 and s == 200 and body["nodes"].get("sec-node", {}).get("state") == "up",
          "40 connections without a token: %d held (supervisor.max_connections 16); a viewer "
          "still reads the pool (%d), sec-node is up" % (len(held), s))
    for s in raw:
        s.close()


async def eviction(url, ctx, key):
    """An agent full of connections without hello (8 of agent.max_connections
    8, from 8 addresses), then full of connections in their handshake: a
    device still gets in, in the oldest one's place."""
    held = []
    for i in range(8):
        held.append(await websockets.connect(url, ssl=ctx, local_addr=("127.0.1.%d" % (i + 1), 0)))
    await asyncio.sleep(0.3)  # older than the 100 ms a connection is spared
    dev = Device(url, ctx, "phone-5")
    cred = credential(key, "phone-5")
    reg = await dev.hello(lambda n: {"generation": 1, "proof": proof(cred, n, "phone-5")})
    check(reg.get("accepted") is True, "a device gets into an agent full of connections without "
          "hello (%s)" % reg.get("reason"))
    await asyncio.sleep(0.3)
    check(not held[0].open and all(ws.open for ws in held[1:]),
          "the oldest connection without hello made room, the others stay (%s)" %
          [ws.open for ws in held])
    for ws in held:
        ws.transport.close()
    await dev.ws.close()
    await asyncio.sleep(0.5)

    # the same with connections that never start their TLS handshake: they
    # count against agent.max_connections from their accept
    raw = []
    for i in range(30):
        s = socket.socket()
        s.bind(("127.0.1.%d" % (i % 8 + 1), 0))
        s.connect(("127.0.0.1", int(url.split(":")[2].split("/")[0])))
        s.setblocking(False)
        raw.append(s)
    await asyncio.sleep(0.3)
    held = [s for s in raw if still_open(s)]
    check(1 <= len(held) <= 8, "30 connections without a TLS handshake: %d held (at most "
          "agent.max_connections 8), the rest closed at accept" % len(held))
    dev = Device(url, ctx, "phone-6")
    cred = credential(key, "phone-6")
    reg = await dev.hello(lambda n: {"generation": 1, "proof": proof(cred, n, "phone-6")})
    check(reg.get("accepted") is True, "a device gets into an agent full of connections in their "
          "handshake (%s)" % reg.get("reason"))
    check(not still_open(held[0]), "the oldest of them made room")
    for s in raw:
        s.close()
    await dev.ws.close()


def still_open(s):
    """A non-blocking socket the other side has not closed."""
    try:
        return s.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def operator_checks(env, key, db):
    """msrs session start/stop as a viewer, a forger, nobody, and an operator."""
    def msrs(tok, *args):
        extra = ["-X", "auth.token=" + tok] if tok is not None else ["-X", "auth.token="]
        return subprocess.run([os.path.join(BIN, "msrs"), "--log", "sqlite:" + db] + extra +
                              list(args), env=env, capture_output=True, text=True, timeout=30)
    for who, tok, want in (("a viewer", token(key, "operator:vera:viewer"), "viewer"),
                           ("a forged token", "operator:olga:admin:1." + "00" * 32,
                            "not issued with this lab key"),
                           ("no token", None, "auth.token")):
        r = msrs(tok, "session", "start", "s-refused", "--devices", "phone-1")
        check(r.returncode == 2 and want in r.stderr,
              "session start with %s: exit %d, says %r (%s)" % (who, r.returncode, want,
                                                                r.stderr.strip()[-120:]))
    olga = token(key, "operator:olga:operator")
    r = msrs(olga, "session", "start", "s-olga", "--devices", "phone-1", "--duration", "60")
    check(r.returncode == 0, "session start as operator olga: exit %d %s" % (r.returncode, r.stderr))
    r = msrs(token(key, "operator:vera:viewer"), "session", "stop", "s-olga")
    check(r.returncode == 2, "a viewer cannot stop it: exit %d" % r.returncode)
    r = msrs(token(key, "operator:adam:admin"), "session", "stop", "s-olga")
    check(r.returncode == 0, "admin adam stops it: exit %d %s" % (r.returncode, r.stderr))
    by = {(r["type"].split(".")[-1], r["value"].get("requested_by")) for r in tail(db, "sessions")
          if r["value"].get("session_id") == "s-olga"}
    check(("CollectionRequested", "olga") in by and ("CollectionStopRequested", "adam") in by,
          "the log records who asked: %s" % sorted(by))
    check(not [r for r in tail(db, "sessions") if r["value"].get("session_id") == "s-refused"],
          "nothing of the refused requests reached the log")


ROGUE_ADDR = "127.0.0.2"


def rogue_supervisor(disc_port, stop):
    """Answers every discovery query with a supervisor of its own: once
    unsigned, once with a MAC of another key (the query's nonce copied).
    Returns the TCP port its answers name, and how many connected to it."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    lst.settimeout(0.2)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # its own address, queried by unicast: whether a broadcast to
    # 127.255.255.255 reaches every socket on the port depends on the host's
    # routes (a CI machine's rogue once heard nothing)
    u.bind((ROGUE_ADDR, disc_port))
    u.settimeout(0.2)
    got = {"connections": 0, "queries": 0}

    def serve():
        while not stop.is_set():
            try:
                q, addr = u.recvfrom(2048)
                q = json.loads(q)
                if q.get("msrs") == "discover":
                    got["queries"] += 1
                    for mac in (None, "cd" * 32):
                        a = {"msrs": "supervisor", "v": 1, "prefix": q["prefix"],
                             "node_id": "rogue", "leading": True, "nonce": q.get("nonce", ""),
                             "url": "https://127.0.0.1:%d" % lst.getsockname()[1]}
                        if mac:
                            a["mac"] = mac
                        u.sendto(json.dumps(a).encode(), addr)
            except (socket.timeout, ValueError):
                pass
            try:
                lst.accept()[0].close()
                got["connections"] += 1
            except socket.timeout:
                pass
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return got, t


class Device:
    def __init__(self, url, ctx, device_id):
        self.url, self.ctx, self.device_id, self.ws = url, ctx, device_id, None
        self.errors = []  # every error message the agent sent it

    async def recv(self, timeout):
        m = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        if m.get("type") == "error":
            self.errors.append(m["payload"])
        return m

    async def recv_type(self, type_, timeout=5):
        while True:
            m = await self.recv(timeout)
            if m.get("type") == type_:
                return m

    async def send(self, type_, payload):
        await self.ws.send(json.dumps({"id": "%s-%d" % (self.device_id, time.monotonic_ns()),
                                       "type": type_, "ts": time.time_ns(),
                                       "device_id": self.device_id, "payload": payload}))

    async def hello(self, auth, **connect_kw):
        """Connects, takes the challenge, says hello with auth(nonce) (None:
        without one); returns the register answer's payload."""
        self.ws = await websockets.connect(self.url, ssl=self.ctx, subprotocols=["msrs.v1"],
                                           **connect_kw)
        nonce = (await self.recv_type("challenge"))["payload"]["nonce"]
        payload = {"name": self.device_id, "streams": [
            {"stream_id": "gsr", "type": "gsr", "rate_hz": 128, "channels": 1, "format": "float64"}]}
        if auth:
            payload["auth"] = auth(nonce)
        await self.send("hello", payload)
        return (await self.recv_type("register"))["payload"]

    async def closed_within(self, seconds):
        try:
            while True:
                await self.recv(seconds)
        except websockets.ConnectionClosed:
            return True
        except asyncio.TimeoutError:
            return False


async def endpoint_attacks(url, ctx, key, tmp, agent):
    def auth_for(cred, device_id):
        return lambda nonce: {"generation": int(cred.split(".")[0]),
                              "proof": proof(cred, nonce, device_id)}

    # plain ws:// to the TLS listener: no WebSocket
    try:
        await asyncio.wait_for(websockets.connect(url.replace("wss://", "ws://")), 5)
        check(False, "a plain ws:// client is refused by the TLS endpoint")
    except Exception as e:  # noqa: BLE001 (any failure to connect is the point)
        check(True, "a plain ws:// client is refused by the TLS endpoint (%s)" % type(e).__name__)

    real = Device(url, ctx, "phone-1")
    reg = await real.hello(auth_for(credential(key, "phone-1"), "phone-1"))
    check(reg.get("accepted") is True, "a device with its credential registers")
    t = time.time_ns()
    await real.send("samples", {"stream_id": "gsr", "seq": 0, "t": [t, t + 7812500],
                                "values": [[0.1], [0.2]]})

    for name, auth in [("no credential", None),
                       ("a wrong proof", lambda n: {"generation": 1, "proof": "0" * 64}),
                       ("another device's credential",
                        auth_for(credential(key, "phone-2"), "phone-2"))]:
        imp = Device(url, ctx, "phone-1")
        reg = await imp.hello(auth)
        check(reg.get("accepted") is False and "resume" not in reg,
              "an impostor of a connected device with %s is refused and learns no sequence "
              "numbers (%s)" % (name, reg.get("reason")))
        check(await imp.closed_within(5), "the impostor's connection is closed (%s)" % name)

    await real.send("samples", {"stream_id": "gsr", "seq": 2, "t": [time.time_ns()],
                                "values": [[0.3]]})
    await real.send("status", {"battery": 0.8})
    check(not await real.closed_within(1), "the real device stays connected through the attempts")

    # revocation: generation 1 of phone-3 revoked, generation 2 accepted
    with open(os.path.join(tmp, "tls", "revoked"), "w") as f:
        f.write("device phone-3 1\n")
    old = Device(url, ctx, "phone-3")
    reg = await old.hello(auth_for(credential(key, "phone-3", 1), "phone-3"))
    check(reg.get("accepted") is False and "revoked" in reg.get("reason", ""),
          "a revoked credential is refused (%s)" % reg.get("reason"))
    new = Device(url, ctx, "phone-3")
    reg = await new.hello(auth_for(credential(key, "phone-3", 2), "phone-3"))
    check(reg.get("accepted") is True, "the next generation of a revoked device registers")

    # silence: closed after the hello deadline (2 s here)
    quiet = Device(url, ctx, "quiet")
    quiet.ws = await websockets.connect(url, ssl=ctx)
    t0 = time.monotonic()
    closed = await quiet.closed_within(6)
    print("silent connection closed after %.1f s" % (time.monotonic() - t0), flush=True)
    check(closed and time.monotonic() - t0 < 5,
          "a connection without hello is closed after the deadline (%.1f s)"
          % (time.monotonic() - t0))

    # many connections without hello from one address (127.0.0.2)
    rss0 = rss_kb(agent.pid)
    hostile, refused = [], 0
    for _ in range(PENDING + 40):
        try:
            ws = await websockets.connect(url, ssl=ctx, local_addr=("127.0.0.2", 0))
            hostile.append(ws)
        except Exception:  # noqa: BLE001
            refused += 1
    await asyncio.sleep(0.5)  # the refused ones' close frames arrive meanwhile
    open_after = sum(1 for ws in hostile if ws.open)
    check(PENDING - 2 <= open_after <= PENDING,
          "at most agent.max_pending_per_address (%d) connections without hello stay open from "
          "one address (%d open, %d refused before the handshake)" % (PENDING, open_after, refused))
    other = Device(url, ctx, "phone-4")
    reg = await other.hello(auth_for(credential(key, "phone-4"), "phone-4"))
    check(reg.get("accepted") is True, "a device from another address registers meanwhile")
    rss1 = rss_kb(agent.pid)
    print("hostile connections from 127.0.0.2: %d attempted, %d open after 0.5 s, %d refused "
          "before the handshake; agent RSS %d -> %d KiB" % (PENDING + 40, open_after, refused,
                                                           rss0, rss1), flush=True)
    check(not MEASURE_RSS or rss1 - rss0 < 32 * 1024, "agent RSS grows by %d KiB with %d hostile connections "
          "(bound 32 MiB)" % (rss1 - rss0, len(hostile)))
    for ws in hostile:
        await ws.close()

    # fragments that never finish, before any hello: each connection keeps
    # at most 64 KiB of them (AG_HELLO_MAX), not agent.max_message_bytes
    await asyncio.sleep(1)
    rss0 = rss_kb(agent.pid)
    frags = []
    for _ in range(PENDING):
        ws = await websockets.connect(url, ssl=ctx, local_addr=("127.0.0.3", 0), max_size=None)
        await ws.write_frame(False, websockets.frames.Opcode.TEXT, b"{" * (768 * 1024))
        frags.append(ws)
    await asyncio.sleep(1)
    rss1 = rss_kb(agent.pid)
    print("%d unfinished 768 KiB fragments without hello: agent RSS %d -> %d KiB" %
          (len(frags), rss0, rss1), flush=True)
    check(not MEASURE_RSS or rss1 - rss0 < PENDING * 256,
          "unfinished fragments without hello pin little: RSS +%d KiB for %d connections of "
          "768 KiB (bound %d KiB; unbounded, it would be ~%d)" %
          (rss1 - rss0, PENDING, PENDING * 256, PENDING * 768))
    for ws in frags:
        ws.transport.close()

    # a registered device that floods: closed (1008), the others served
    t0 = time.monotonic()
    try:
        for i in range(60000):
            if i % 500 == 0:
                await asyncio.sleep(0)  # the agent's close frame is read
                if not other.ws.open:
                    break
            await other.ws.send("{}")
    except websockets.ConnectionClosed:
        pass
    closed = await other.closed_within(10)
    # 1008 is sent; a client still writing may see the TCP reset first (1006)
    check(closed and other.ws.close_code in (1008, 1006),
          "a device flooding (%d messages in %.1f s) is closed (%s)" %
          (i + 1, time.monotonic() - t0, other.ws.close_code))
    await real.send("status", {"battery": 0.7})
    check(not await real.closed_within(1), "the real device is still served after the flood")
    check(real.errors == [], "the agent found nothing wrong with the real device's messages (%s)" %
          real.errors)
    await real.ws.close()


def main():
    os.umask(0o022)  # the usual one: the log's 0640 is then the agent's doing
    tmp = tempfile.mkdtemp(prefix="msrs-security-")
    conf = subprocess.run([os.path.join(SRC, "deploy", "local", "make-credentials.sh"),
                           os.path.join(tmp, "tls")], capture_output=True, text=True,
                          check=True).stdout.strip()
    env = dict(os.environ, MSRS_CONFIG=conf)
    key = open(os.path.join(tmp, "tls", "lab.key")).read().strip()
    ctx = ssl.create_default_context(cafile=os.path.join(tmp, "tls", "ca.pem"))
    db = os.path.join(tmp, "log.db")
    port, sup_port = free_port(), free_port()
    procs = Procs(tmp)
    try:
        # refusals at start
        def start_fails(name, args, extra_env, want):
            r = subprocess.run([os.path.join(BIN, args[0])] + args[1:], env=dict(env, **extra_env),
                               capture_output=True, text=True, timeout=20)
            check(r.returncode == 2 and want in r.stderr,
                  "%s: exit %d, says %r" % (name, r.returncode, want))
        bad = os.path.join(tmp, "nocert.conf")
        with open(bad, "w") as f:
            f.write("auth.required = false\n")
        start_fails("agent without a certificate", ["msrs-agent", "--log", "sqlite:" + db,
                                                    "--listen", "127.0.0.1:%d" % free_port()],
                    {"MSRS_CONFIG": bad}, "tls.cert")
        start_fails("supervisor without a certificate",
                    ["msrs-supervisor", "--log", "sqlite:" + db, "--listen",
                     "127.0.0.1:%d" % free_port(), "-X", "discovery.port=0"],
                    {"MSRS_CONFIG": bad}, "tls.cert")
        start_fails("agent without the lab key", ["msrs-agent", "--log", "sqlite:" + db, "--listen",
                                                  "127.0.0.1:%d" % free_port(),
                                                  "-X", "auth.key_file="],
                    {}, "auth.key_file")
        loose = os.path.join(tmp, "loose.key")
        with open(loose, "w") as f:
            f.write(key + "\n")
        os.chmod(loose, 0o644)
        start_fails("a lab key readable by others", ["msrs-agent", "--log", "sqlite:" + db,
                                                     "--listen", "127.0.0.1:%d" % free_port(),
                                                     "-X", "auth.key_file=" + loose],
                    {}, "readable by others")

        # the supervisor answers discovery on disc_port, and so does a rogue
        disc_port = free_port()
        stop = threading.Event()
        rogue, rogue_thread = rogue_supervisor(disc_port, stop)
        sup = procs.start("supervisor", ["msrs-supervisor", "--log", "sqlite:" + db, "--listen",
                                         "127.0.0.1:%d" % sup_port, "--node-id", "sup",
                                         "-X", "discovery.port=%d" % disc_port,
                                         "-X", "supervisor.presence_ms=500",
                                         "-X", "supervisor.max_nodes=12",
                                         "-X", "supervisor.max_connections=16",
                                         "-X", "supervisor.max_registrations_per_s=5"], env=env)
        wait_listening(sup_port)
        agent = procs.start("agent", ["msrs-agent", "--log", "sqlite:" + db, "--listen",
                                      "127.0.0.1:%d" % port, "--node-id", "sec-node",
                                      "--supervisor", "discover",
                                      "-X", "discovery.port=%d" % disc_port,
                                      "-X", "discovery.targets=%s,127.0.0.1" % ROGUE_ADDR,
                                      "-X", "agent.hello_timeout_ms=2000",
                                      "-X", "agent.max_pending_per_address=%d" % PENDING],
                            env=env)
        check(wait_listening(port, 20) is not False, "the agent joined by discovery: it listens")
        stop.set()
        rogue_thread.join()
        alog = procs.stderr_of("agent")
        check(rogue["queries"] > 0 and rogue["connections"] == 0 and
              "ignored an answer" in alog and "discovered supervisor sup " in alog,
              "discovery: the rogue's answers to %d queries were ignored and said, never "
              "connected to (%d), the real supervisor joined" %
              (rogue["queries"], rogue["connections"]))
        asyncio.run(endpoint_attacks("wss://127.0.0.1:%d/v1/devices" % port, ctx, key, tmp, agent))
        control_attacks(ctx, sup_port, key, tmp, db)
        small_port = free_port()
        small = procs.start("agent-small",
                            ["msrs-agent", "--log", "sqlite:" + os.path.join(tmp, "small.db"),
                             "--listen", "127.0.0.1:%d" % small_port, "--node-id", "small-node",
                             "-X", "agent.max_connections=8"], env=env)
        wait_listening(small_port)
        asyncio.run(eviction("wss://127.0.0.1:%d/v1/devices" % small_port, ctx, key))
        small.terminate()
        small.wait(20)
        ev = re.findall(r"stopped: .*?, (\d+) evicted,", procs.stderr_of("agent-small"))
        check(ev and int(ev[-1]) >= 2, "the agent counted the evictions (%s)" % ev)
        operator_checks(env, key, db)

        ca = os.path.join(tmp, "tls", "ca.pem")
        url = "https://127.0.0.1:%d/v1/nodes" % sup_port
        # curl offers HTTP/2 by ALPN; lws 4.1.6's h2 server aborted on the
        # body of a refused stream (1 run in ~3): the listeners speak 1.1 only
        answers = []
        for method in ("PUT", "DELETE") * 10:
            r = subprocess.run(["curl", "-s", "--http2", "-o", "/dev/null", "-w",
                                "%{http_code} %{http_version}", "--cacert", ca, "-X", method,
                                "-d", "{}", url], capture_output=True, text=True)
            answers.append(r.stdout)
        check(set(answers) == {"405 1.1"},
              "supervisor answers 10 PUT and 10 DELETE with a body by 405 over HTTP/1.1 though "
              "curl offers h2 (%s)" % sorted(set(answers)))
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca,
                            url], capture_output=True, text=True)
        check(r.stdout == "401", "supervisor answers GET over https without a token: 401 (%s)" %
              r.stdout)
        r = subprocess.run(["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                            url.replace("https://", "http://")], capture_output=True, text=True)
        check(r.stdout != "200", "plain http to the supervisor gets no answer (%s)" % r.stdout)
        check(procs.alive("supervisor", "agent"), "agent and supervisor still serve")
    finally:
        stop_all(procs)
    regs = [r for r in tail(db, "devices") if r.get("type", "").endswith("DeviceRegistered")]
    ids = sorted({r["value"]["device_id"] for r in regs})
    check(ids == ["phone-1", "phone-3", "phone-4"],
          "only devices with valid credentials reached the log: %s" % ids)
    samples = [r for r in tail(db, "samples") if r["value"].get("device_id") == "phone-1"]
    check(sum(len(r["value"].get("device_time_ns", [])) for r in samples) == 3,
          "the real device's 3 samples, before and after the attempts, are on the log (%d "
          "batches)" % len(samples))
    log = procs.stderr_of("agent")
    check("unauthorized" in log, "the agent's counters report unauthorized hellos")
    check(", 1 closed for flooding)" in log, "the agent counts the flood it closed")
    mode = os.stat(db).st_mode & 0o777
    check(mode == 0o640, "the SQLite log is made 0640 under umask 022 (%o)" % mode)
    sys.exit(check.finish())


if __name__ == "__main__":
    main()
