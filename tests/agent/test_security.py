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
- the supervisor answers PUT and DELETE with 405;
- a listener without a certificate, an agent without the lab key, and a
  lab key readable by others refuse to start (exit 2, naming the key).
"""
import asyncio
import hashlib
import hmac
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time

import websockets

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, Procs, free_port, stop_all, tail, wait_listening  # noqa: E402

check = Checks()
SRC = os.environ.get("MSRS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
PENDING = 16


def credential(key_hex, device_id, gen=1):
    mac = hmac.new(bytes.fromhex(key_hex), ("msrs-device:%s:%d" % (device_id, gen)).encode(),
                   hashlib.sha256).hexdigest()
    return "%d.%s" % (gen, mac)


def proof(cred, nonce, device_id):
    return hmac.new(bytes.fromhex(cred.split(".", 1)[1]), ("%s:%s" % (nonce, device_id)).encode(),
                    hashlib.sha256).hexdigest()


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Device:
    def __init__(self, url, ctx, device_id):
        self.url, self.ctx, self.device_id, self.ws = url, ctx, device_id, None

    async def recv_type(self, type_, timeout=5):
        while True:
            m = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
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
                await asyncio.wait_for(self.ws.recv(), seconds)
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
    check(rss1 - rss0 < 32 * 1024, "agent RSS grows by %d KiB with %d hostile connections "
          "(bound 32 MiB)" % (rss1 - rss0, len(hostile)))
    for ws in hostile:
        await ws.close()
    await real.ws.close()


def main():
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

        agent = procs.start("agent", ["msrs-agent", "--log", "sqlite:" + db, "--listen",
                                      "127.0.0.1:%d" % port, "--node-id", "sec-node",
                                      "-X", "agent.hello_timeout_ms=2000",
                                      "-X", "agent.max_pending_per_address=%d" % PENDING],
                            env=env)
        sup = procs.start("supervisor", ["msrs-supervisor", "--log", "sqlite:" + db, "--listen",
                                         "127.0.0.1:%d" % sup_port, "--node-id", "sup",
                                         "-X", "discovery.port=0"], env=env)
        wait_listening(port)
        wait_listening(sup_port)
        asyncio.run(endpoint_attacks("wss://127.0.0.1:%d/v1/devices" % port, ctx, key, tmp, agent))

        ca = os.path.join(tmp, "tls", "ca.pem")
        url = "https://127.0.0.1:%d/v1/nodes" % sup_port
        for method in ("PUT", "DELETE"):
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                                ca, "-X", method, "-d", "{}", url], capture_output=True, text=True)
            check(r.stdout == "405", "supervisor answers %s with 405 (got %s)" % (method, r.stdout))
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca,
                            url], capture_output=True, text=True)
        check(r.stdout in ("200", "503"), "supervisor answers GET over https (%s)" % r.stdout)
        r = subprocess.run(["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                            url.replace("https://", "http://")], capture_output=True, text=True)
        check(r.stdout != "200", "plain http to the supervisor gets no answer (%s)" % r.stdout)
        check(sup.poll() is None and agent.poll() is None, "agent and supervisor still serve")
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
    check(" 0 invalid " in log, "the real device's messages were all valid")
    check("unauthorized" in log, "the agent's counters report unauthorized hellos")
    sys.exit(check.finish())


if __name__ == "__main__":
    main()
