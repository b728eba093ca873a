#!/usr/bin/python3
"""The device SDK against an agent that answers badly: a WebSocket server
of Python's websockets plays the agent for sdk/examples/gsr.c (a device on
the SDK, ws://, no credential) and sends what a broken or hostile agent
could:

- text that is not JSON, JSON that is not an object, a type that is not a
  string, unknown types, a probe without t1, a start with a bad session id
  and a time that is not a number, flow and error with wrong field types,
  a binary frame, and a 100 KiB text (over the SDK's 64 KiB for a message):
  the device ignores each (a start is still acknowledged, as the protocol
  asks), stays connected, and then answers a good probe with t1 echoed and
  t2 <= t3 on this machine's clock;
- after an accepted register its batches are well-formed binary samples
  frames (16 samples, 1 channel, the size the header says);
- the server drops the connection: the device comes back by itself after
  0.5-1 s (the SDK's first wait, drawn at random);
- a refused register with a redirect: the device goes to the other
  "agent" and registers there; a register without a payload is a refusal
  too, and it comes back;
- SIGINT ends it with exit 0."""
import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import time

import websockets

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, free_port  # noqa: E402

check = Checks()

HOSTILE = [
    "not json {",
    "[]",
    '{"type": 5}',
    '{"type": "reboot", "payload": {}}',
    '{"type": "time_req"}',
    '{"type": "start", "id": "c1", "payload": {"session_id": "../x", "start_at": "soon"}}',
    '{"type": "flow", "payload": {"state": 7}}',
    '{"type": "error", "payload": {"code": null, "message": [1]}}',
    '{"type": "challenge", "payload": {"nonce": 12}}',
]


class Agent:
    """One port of the fake agent; each connection is handled by script."""

    def __init__(self, script):
        self.script, self.port, self.connections = script, free_port(), []

    async def handler(self, ws, path):
        self.connections.append(time.time())
        await self.script(ws, len(self.connections))


async def recv_json(ws, want, timeout=5):
    """The next text message of type want (binary frames and others skipped)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = await asyncio.wait_for(ws.recv(), deadline - time.time())
        if isinstance(m, str):
            j = json.loads(m)
            if j.get("type") == want:
                return j
    raise asyncio.TimeoutError(want)


async def good_probe(ws, t1):
    """A probe's answer: t1 echoed, t2 <= t3 within the probe on this
    machine's clock. The first time_resp must be it: a bad probe before
    (no t1, or over the SDK's size) is not answered."""
    before = time.time_ns()
    await ws.send(json.dumps({"type": "time_req", "payload": {"t1": t1}}))
    r = (await recv_json(ws, "time_resp"))["payload"]
    after = time.time_ns()
    return r["t1"] == t1 and before <= r["t2"] <= r["t3"] <= after, r


async def run_test():
    second_registered = asyncio.Event()
    redirected = asyncio.Event()

    async def first(ws, n):
        hello = await recv_json(ws, "hello")
        if n == 1:
            check(hello["device_id"] == "gsr-h" and hello["payload"]["streams"][0]["stream_id"] == "gsr",
                  "hello with the device's streams: %s" % hello["payload"]["streams"])
            for text in HOSTILE:
                await ws.send(text)
            await ws.send(b"\x00\x00\x00\x02{}binary to a device")
            await ws.send('{"type": "time_req", "payload": {"t1": 1, "pad": "%s"}}' % ("x" * 100 * 1024))
            ack = await recv_json(ws, "ack")
            check(ack["payload"]["ref_id"] == "c1", "a start with a bad session id is still acknowledged")
            ok, r = await good_probe(ws, 123456789)
            check(ok, "after every bad message, a good probe: t1 echoed, t2 <= t3 on this clock: %s" % r)
            await ws.send(json.dumps({"type": "register", "payload": {"accepted": True, "resume": {"gsr": "x"}}}))
            frames = []
            while len(frames) < 3:
                m = await asyncio.wait_for(ws.recv(), 5)
                if isinstance(m, bytes):
                    frames.append(m)
            good = 0
            for f in frames:
                hl = struct.unpack(">I", f[:4])[0]
                h = json.loads(f[4:4 + hl])
                good += (h["type"] == "samples" and h["n"] == 16 and h["channels"] == 1
                         and len(f) == 4 + hl + 16 * 8 * 2)
            check(good == 3, "registered: 3 well-formed binary samples frames (%d good)" % good)
            return  # the handler's end drops the connection
        if n == 2:
            # a register without payload is a refusal: it comes back
            await ws.send('{"type": "register"}')
            await ws.wait_closed()
            return
        # third: refused, told to go to the other agent
        await ws.send(json.dumps({"type": "register", "payload": {
            "accepted": False, "reason": "node_full",
            "redirect": "ws://127.0.0.1:%d/v1/devices" % other.port}}))
        redirected.set()
        await ws.wait_closed()

    async def second(ws, n):
        await recv_json(ws, "hello")
        await ws.send(json.dumps({"type": "register", "payload": {"accepted": True}}))
        ok, r = await good_probe(ws, 42)
        check(ok, "at the agent it was sent to: a good probe answered: %s" % r)
        second_registered.set()
        await ws.wait_closed()

    agent, other = Agent(first), Agent(second)
    async with websockets.serve(agent.handler, "127.0.0.1", agent.port, subprotocols=["msrs.v1"],
                                max_size=None), \
            websockets.serve(other.handler, "127.0.0.1", other.port, subprotocols=["msrs.v1"]):
        dev = subprocess.Popen([os.path.join(BIN, "msrs-example-gsr"),
                                "ws://127.0.0.1:%d/v1/devices" % agent.port, "gsr-h"],
                               stderr=subprocess.PIPE, text=True)
        try:
            await asyncio.wait_for(second_registered.wait(), 30)
        except asyncio.TimeoutError:
            check(False, "the device reached the agent it was redirected to")
        c = agent.connections
        check(len(c) >= 3, "the device came back after each drop by itself: %d connections" % len(c))
        if len(c) >= 2:
            check(0.4 <= c[1] - c[0] <= 3.0, "back %.2f s after the first drop (0.5-1 s wait)" % (c[1] - c[0]))
        check(redirected.is_set() and len(other.connections) == 1, "redirected to the other agent once")
        check(dev.poll() is None, "the device is still running")
        dev.send_signal(signal.SIGINT)
        try:
            code = dev.wait(10)
        except subprocess.TimeoutExpired:
            dev.kill()
            code = dev.wait()
        err = dev.stderr.read()
        check(code == 0, "SIGINT: exit 0 (%s)" % code)
        check("gsr: the agent says node_full" in err, "the refusal was said: %s" % err[-300:])


def main():
    asyncio.run(run_test())
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
