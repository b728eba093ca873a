#!/usr/bin/python3
"""The SDK frames and masks its messages itself (sdk/device.c frame_masked:
lws 4.1.6 masked a byte at a time). tests/sdk/frames.c sends media packets
whose WebSocket payloads lie on both sides of the header's length
boundaries (RFC 6455 5.2: 125 | 126 and 65535 | 65536 bytes) to a server of
Python's websockets, which refuses a frame whose length or masking is
wrong: every packet arrives, whole, in order, byte for byte, and both
boundaries were crossed."""
import asyncio
import json
import os
import struct
import subprocess
import sys

import websockets

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, free_port  # noqa: E402

check = Checks()


async def run_test():
    got, done = [], asyncio.Event()

    async def agent(ws, path):
        hello = json.loads(await ws.recv())
        check(hello["type"] == "hello" and hello["device_id"] == "frames-1", "hello: %s" % hello["type"])
        await ws.send(json.dumps({"type": "register", "payload": {"accepted": True}}))
        try:
            while len(got) < 242:
                m = await asyncio.wait_for(ws.recv(), 20)
                if isinstance(m, bytes):
                    hl = struct.unpack(">I", m[:4])[0]
                    h = json.loads(m[4:4 + hl])
                    got.append((len(m), h["seq"], m[4 + hl:]))
        except (asyncio.TimeoutError, websockets.ConnectionClosed) as e:
            check(False, "the server read every packet: %d of 242 (%r)" % (len(got), e))
        done.set()

    port = free_port()
    async with websockets.serve(agent, "127.0.0.1", port, subprotocols=["msrs.v1"], max_size=1 << 20):
        dev = subprocess.Popen([os.path.join(BIN, "sdk_frames"), "ws://127.0.0.1:%d/v1/devices" % port],
                               stdout=subprocess.PIPE, text=True)
        try:
            await asyncio.wait_for(done.wait(), 40)
        except asyncio.TimeoutError:
            check(False, "the packets arrived within 40 s: %d" % len(got))
        dev.terminate()
        sizes = json.loads(dev.communicate(timeout=10)[0] or "[]")
    check(len(sizes) == 242, "the device sent 242 packets: %d" % len(sizes))
    check([g[1] for g in got] == list(range(len(got))), "in order, none missing")
    bad = [seq for _, seq, body in got
           if seq >= len(sizes) or body != bytes((seq * 7 + k) & 0xff for k in range(sizes[seq]))]
    check(not bad, "every body byte for byte as sent: wrong in %s" % bad[:5])
    lens = {g[0] for g in got}
    for edge in (125, 126, 65535, 65536):
        check(edge in lens, "a payload of exactly %d bytes: %s" % (edge, edge in lens))


def main():
    asyncio.run(run_test())
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
