#!/usr/bin/python3
"""The gateway and the web app with a large pool: msrs-agent, msrs-syncd,
msrs-collectord, msrs-archiver, msrs-devsim (N devices, clock rounds every
second — every 8 s once a device's window is full, the idle cadence — no
sample streams unless --samples) and msrs-gateway on one SQLite
log, on TLS, and the page in Debian's Chromium (bench/bench_gateway.mjs,
playwright-core). Prints, with the command and the load average:

- the pool view's render time: the Sessions view → the Pool view until
  every device's row is there and painted (two animation frames), median
  and worst of --renders;
- the first load: navigation → every row there (login, the feed's snapshot);
- per feed message, the page's apply + render time (p50/p99);
- the feed delay, log → page: each change's newest record time to the page
  having applied it (p50/p99/max), beside gateway.feed_ms (the period
  changes are published at: its half is the floor of the mean);
- the gateway's CPU (% of one core) and RSS over the window, and the
  changes it published.

usage: bench/bench_gateway.py [--devices 1024] [--seconds 30] [--renders 10]
                              [--samples] [--bin build/bin]"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "gateway"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "pylib"))


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--renders", type=int, default=10)
    ap.add_argument("--samples", action="store_true", help="devices also send GSR and IMU samples")
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "bin"))
    a = ap.parse_args()
    os.environ["MSRS_BIN_DIR"] = os.path.abspath(a.bin)
    from stack import SRC, Stack  # noqa: E402  (after MSRS_BIN_DIR)
    from msrstest import rss_kb  # noqa: E402
    s = Stack("msrs-bench-gateway-", devices=a.devices,
              devsim_args=[] if a.samples else ["--samples", "none"],
              agent_args=["-X", "agent.max_connections=%d" % (a.devices + 64)], video=False)
    try:
        s.start()
        t0 = time.time()
        while time.time() - t0 < 180:
            st, d = s.api("GET", "/devices", token=s.tokens["viewer"])
            n = sum(1 for v in (d or {}).values() if v.get("connected") and v.get("clock")) if st == 200 else 0
            if n >= a.devices:
                break
            print("bench_gateway: %d/%d devices connected and synced" % (n, a.devices), flush=True)
            time.sleep(3)
        else:
            print("bench_gateway: the pool did not form within 180 s", file=sys.stderr)
            return 1
        gw = s.procs.by_name["gateway"]
        env = dict(os.environ, GATEWAY_URL=s.base, GATEWAY_TOKEN=s.tokens["viewer"],
                   GATEWAY_DEVICES=str(a.devices), BENCH_SECONDS=str(a.seconds),
                   BENCH_RENDERS=str(a.renders), MSRS_WEB_ROOT=os.path.join(SRC, "web"))
        c0, w0 = cpu_s(gw.pid), time.time()
        out = subprocess.run(["node", os.path.join(HERE, "bench_gateway.mjs")], env=env,
                             capture_output=True, text=True)
        c1, w1 = cpu_s(gw.pid), time.time()
        if out.returncode:
            print(out.stdout, out.stderr, file=sys.stderr)
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rss = rss_kb(gw.pid)
    finally:
        s.stop()
    err = s.procs.stderr_of("gateway")
    published = [line for line in err.splitlines() if "stopped:" in line]
    load = os.getloadavg()
    print("command: %s" % " ".join(sys.argv))
    print("load average at the end: %.2f %.2f %.2f" % load)
    print("devices: %d (%s), feed_ms 250" % (a.devices, "with samples" if a.samples else "clock rounds every 1 s, no samples"))
    print("pool view render: median %.1f ms (%.1f ms of it script, the rest layout and paint), "
          "worst %.1f ms over %d renders" % (r["render_median"], r["render_js_median"], r["render_max"],
                                             len(r["renders"])))
    print("first load (navigation -> every row): %.0f ms" % r["first_load"])
    print("feed messages applied: %d; apply+render p50 %.1f ms, p99 %.1f ms" % (
        r["messages"], r["apply_p50"], r["apply_p99"]))
    print("feed delay record -> page, newest record of each change: p50 %.0f ms, p99 %.0f ms, max %.0f ms "
          "(%d changes)" % (r["delay_p50"], r["delay_p99"], r["delay_max"], r["changes"]))
    print("feed delay record -> page, oldest record of each change: p50 %.0f ms, p99 %.0f ms, max %.0f ms" % (
        r["oldest_p50"], r["oldest_p99"], r["oldest_max"]))
    print("gateway: CPU %.1f %% of one core over %.0f s of browsing, RSS %.1f MB" % (
        100 * (c1 - c0) / (w1 - w0), w1 - w0, rss / 1024))
    if published:
        print("gateway: " + published[-1].split("stopped: ", 1)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
