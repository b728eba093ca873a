#!/usr/bin/python3
"""The SDK's simulated link (md_device_config.link_delay_ns), as msrs-devsim
uses it, against a WebSocket server of Python's websockets playing the
agent. devsim runs one device whose clock is this machine's (offset, drift
and stamp noise 0) behind a link of exactly 20 ms each way:

- a probe's t2 is its arrival plus the downlink's 20 ms, and its answer
  leaves 20 ms after that: t2 - t1 and t4 - t3 are each 20 ms (within the
  loop's and the loopback's few ms), t3 >= t2, the round trip >= 40 ms;
- the device's samples frames arrive in the order of their numbers and
  no earlier than 20 ms after the last sample they hold was taken;
- without a link's asymmetry the offset the four stamps give is ~0."""
import asyncio
import json
import os
import struct
import subprocess
import sys
import time

import websockets

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, free_port  # noqa: E402

check = Checks()
DELAY_MS = 20.0


async def run_test():
    done = asyncio.Event()
    result = {"probes": [], "frames": []}

    async def agent(ws, path):
        hello = json.loads(await ws.recv())
        check(hello["type"] == "hello" and hello["device_id"] == "link-1", "hello: %s" % hello["type"])
        await ws.send(json.dumps({"type": "register", "payload": {"accepted": True}}))
        sent = {}
        for k in range(8):
            t1 = time.time_ns()
            sent[t1] = t1
            await ws.send(json.dumps({"type": "time_req", "payload": {"t1": t1}}))
            deadline = time.time() + 5
            while time.time() < deadline:
                m = await asyncio.wait_for(ws.recv(), 5)
                t4 = time.time_ns()
                if isinstance(m, bytes):
                    hl = struct.unpack(">I", m[:4])[0]
                    h = json.loads(m[4:4 + hl])
                    last_t = struct.unpack("<q", m[4 + hl + 8 * (h["n"] - 1):4 + hl + 8 * h["n"]])[0]
                    result["frames"].append((h["stream_id"], h["seq"], h["n"], last_t, t4))
                    continue
                j = json.loads(m)
                if j.get("type") == "time_resp" and j["payload"]["t1"] == t1:
                    result["probes"].append((t1, j["payload"]["t2"], j["payload"]["t3"], t4))
                    break
            await asyncio.sleep(0.1)
        done.set()
        await ws.wait_closed()

    port = free_port()
    async with websockets.serve(agent, "127.0.0.1", port, subprotocols=["msrs.v1"]):
        dev = subprocess.Popen([os.path.join(BIN, "msrs-devsim"), "--url", "ws://127.0.0.1:%d/v1/devices" % port,
                                "--devices", "1", "--prefix", "link-", "--delay-ms", "%g:%g" % (DELAY_MS, DELAY_MS),
                                "--asym-ms", "0", "--spike-prob", "0", "--jitter-us", "0", "--offset-ms", "0",
                                "--drift-ppm", "0", "--duration", "20"],
                               stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, MSRS_CONFIG=os.path.join(os.path.dirname(__file__), "..",
                                                                             "plain.conf")))
        try:
            await asyncio.wait_for(done.wait(), 20)
        except asyncio.TimeoutError:
            check(False, "the device answered 8 probes")
        dev.terminate()
        dev.wait(10)
    probes = result["probes"]
    check(len(probes) == 8, "8 probes answered: %d" % len(probes))
    ms = 1e6
    for t1, t2, t3, t4 in probes:
        down, up = (t2 - t1) / ms, (t4 - t3) / ms
        check(DELAY_MS <= down <= DELAY_MS + 5 and DELAY_MS <= up <= DELAY_MS + 5 and t3 >= t2,
              "probe: downlink %.2f ms, uplink %.2f ms (20 each), t3 - t2 %.2f ms" % (down, up, (t3 - t2) / ms))
        offset = ((t2 - t1) + (t3 - t4)) / 2 / ms
        check(abs(offset) < 2.5, "the four stamps give offset %.3f ms (true 0)" % offset)
    frames = result["frames"]
    check(len(frames) >= 4, "samples frames arrived with the probes: %d" % len(frames))
    for stream in ("gsr", "imu"):
        seqs = [f[1] for f in frames if f[0] == stream]
        check(seqs == sorted(seqs), "%s frames in the order of their numbers: %s" % (stream, seqs[:6]))
    late = [(f[4] - f[3]) / ms for f in frames]
    check(late and min(late) >= DELAY_MS, "a frame arrives >= 20 ms after its last sample: min %.2f ms"
          % (min(late) if late else float("nan")))


def main():
    asyncio.run(run_test())
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
