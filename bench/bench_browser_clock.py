#!/usr/bin/python3
"""The browser device's clock error (web/device.html in Debian's Chromium,
headless, driven by playwright-core as tests/gateway/browser_device.mjs
drives it) on a real stack on TLS: msrs-agent, syncd, collectord, archiver,
msrs-gateway and one devsim device (tests/gateway/stack.py).

The page answers clock probes from performance.timeOrigin +
performance.now(); the browser and the agent run on this machine and read
the same clock, so the true offset is 0 and every ClockOffsetMeasured's
offset_ns is its error. The agent probes at a recording node's cadence
(a round a second). Rounds of the first --warmup seconds after the page is
synced are left out; the rest, over --seconds, give p50/p99/max |error|,
the signed median (a bias: timeOrigin's rounding, the page's stamping
side) and the round trips.

usage: bench/bench_browser_clock.py [--seconds 120] [--warmup 20] [--runs 1]
Exit 77 (nothing measured) without chromium or the web app's npm packages."""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "gateway"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pylib"))
from msrstest import of_type, tail, time_ns  # noqa: E402
from stack import WEB, Stack, browser_artifacts  # noqa: E402
from test_browser_device import Page  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))] if xs else float("nan")


def one_run(seconds, warmup, artifacts):
    s = Stack("msrs-bench-browser-", devices=1, video=False,
              agent_args=["-X", "sync.idle_interval_ms=1000"])
    page = None
    try:
        s.start()
        st, enr = s.api("POST", "/devices/enroll", {"device_id": "web-1"}, token=s.tokens["operator"])
        if st != 200:
            raise SystemExit("enrollment failed: %s %s" % (st, enr))
        page = Page(dict(os.environ, MSRS_WEB_ROOT=WEB, MSRS_ARTIFACTS=artifacts))
        if not page.ask("open " + s.base + enr["link"]).get("opened"):
            raise SystemExit("the device page did not open")
        deadline = time.time() + 60
        while time.time() < deadline:
            rounds = [x for x in of_type(tail(s.db, "clock"), "ClockOffsetMeasured")
                      if x["value"]["device_id"] == "web-1"]
            if rounds:
                break
            time.sleep(1)
        else:
            raise SystemExit("web-1 was never measured")
        state = page.ask("state")
        start_ns = time.time_ns() + int(warmup * 1e9)
        t0 = time.time()
        while time.time() - t0 < warmup + seconds:
            time.sleep(min(10, warmup + seconds - (time.time() - t0)))
            print("  %3.0f s of %d" % (time.time() - t0, warmup + seconds), file=sys.stderr, flush=True)
        load = os.getloadavg()
        end_ns = start_ns + int(seconds * 1e9)
        rounds = [x["value"] for x in of_type(tail(s.db, "clock"), "ClockOffsetMeasured")
                  if x["value"]["device_id"] == "web-1" and start_ns <= time_ns(x["time"]) < end_ns]
        errs = [abs(r["offset_ns"]) / 1000.0 for r in rounds]
        signed = [r["offset_ns"] / 1000.0 for r in rounds]
        rtts = [r["rtt_ns"] / 1000.0 for r in rounds]
        print("  browser device %ds: %4d rounds  |err| us p50 %7.1f  p99 %7.1f  max %7.1f  "
              "(median signed %+7.1f)  rtt us p50 %7.1f  cross-origin isolated: %s  load %.2f %.2f %.2f"
              % (seconds, len(rounds), pct(errs, 50), pct(errs, 99), max(errs) if errs else float("nan"),
                 pct(signed, 50), pct(rtts, 50), state.get("isolated"), *load), flush=True)
        return errs
    finally:
        if page:
            page.close()
        s.stop()
        s.done(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    artifacts = browser_artifacts()
    if not artifacts:
        print("bench_browser_clock: no chromium or no web/node_modules (web/install.sh): nothing measured",
              file=sys.stderr)
        return 77
    print("# command: bench/bench_browser_clock.py --seconds %d --warmup %d --runs %d"
          % (a.seconds, a.warmup, a.runs))
    print("# |err| = |ClockOffsetMeasured.offset_ns| of the page (true offset 0: one machine, one clock)")
    for _ in range(a.runs):
        one_run(a.seconds, a.warmup, artifacts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
