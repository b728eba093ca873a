#!/usr/bin/python3
"""A clock probe is measured from when it left, not from when it was
stamped: over TLS the agent takes the instant the socket write carrying the
probe began, after OpenSSL encrypted it (cli_tls_send_stamps), and uses the
t1 the device echoes only to find it; plain, t1 as written.

A real msrs-agent on a SQLite log, on TLS and then plain; a device that is
not ours (Python's websockets, with ssl) answers every time_req at once
and remembers each t1 it was sent. The round records' round_probes then
hold, over TLS, send instants a little after each written t1 (later, and
by less than 20 ms), never the written t1 itself; plain, exactly the
written t1s."""
import asyncio
import json
import os
import ssl
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import (Checks, Procs, agent_conf, device_session, make_credentials,  # noqa: E402
                      start_agent, stop_all, tail, wait_listening)

check = Checks()


async def device(url, ctx, seconds):
    """Registers as phone-1, answers every probe for `seconds`; the t1s."""
    sent = []

    async def on_message(ws, m):
        if m.get("type") == "time_req":
            t1, t2 = m["payload"]["t1"], time.time_ns()
            sent.append(t1)
            await ws.send(json.dumps({"type": "time_resp", "device_id": "phone-1",
                                      "payload": {"t1": t1, "t2": t2, "t3": time.time_ns()}}))
    await device_session(url, ctx, seconds, on_message)
    return sent


def run(tmp, name, tls, scheme, ctx):
    procs = Procs(tmp)
    try:
        _, port, db = start_agent(procs, tmp, name, agent_conf(tmp, name, tls),
                                  "-X", "sync.interval_ms=300")
        check(wait_listening(port), "%s: agent listening" % name)
        written = asyncio.run(device("%s://127.0.0.1:%d/v1/devices" % (scheme, port), ctx, 4))
        check(procs.alive("agent-" + name), "%s: the agent ran throughout" % name)
    finally:
        stop_all(procs)
    probes = [p["t1_ns"] for r in tail(db, "clock") if r["type"].endswith("ClockOffsetMeasured")
              for p in r["value"]["round_probes"]]
    return written, probes


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-probe-send-")
    make_credentials(tmp)
    tls = os.path.join(tmp, "tls")
    ctx = ssl.create_default_context(cafile=os.path.join(tls, "ca.pem"))

    written, probes = run(tmp, "tls", tls, "wss", ctx)
    check(len(probes) >= 16, "TLS: %d probes answered and recorded (%d sent)" % (len(probes), len(written)))
    ws = sorted(written)
    after = []
    for t in probes:  # the written t1 each recorded send instant follows
        before = [w for w in ws if w <= t]
        after.append(t - before[-1] if before else None)
    check(all(a is not None and 0 < a < 20_000_000 for a in after),
          "TLS: every recorded t1 is its probe's send instant, after the written t1 by %s us"
          % sorted({round(a / 1000) for a in after if a is not None})[:8])
    check(not set(probes) & set(written), "TLS: no recorded t1 is a written one")

    written, probes = run(tmp, "plain", None, "ws", None)
    check(len(probes) >= 16 and set(probes) <= set(written),
          "plain: the %d recorded t1s are the written ones" % len(probes))
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
