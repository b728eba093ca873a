#!/usr/bin/python3
"""Clock-sync precision: msrs-agent + msrs-devsim (N devices, a network
profile) on a SQLite log for D seconds; every ClockOffsetMeasured the agent
recorded is compared with the device's true offset at that moment (from
devsim's --truth file). Prints p50/p99/max |estimate - truth|, and the
agent's CPU and peak RSS per device.

The agents probe at a recording node's cadence (sync.interval_ms for every
round: -X sync.idle_interval_ms=2000), since sample times are converted at
it; --idle keeps the idle cadence (sync.idle_interval_ms, 8 s once a
device's window is full).

--agents K splits the devices over K agent processes (each with its own
msrs-devsim of N/K devices, all on one log): the deployment's way to grow,
measured on one machine. CPU and RSS are then the agents' sums.

usage: bench/bench_sync.py [--devices 8,64] [--profiles lan,wifi] [--seconds 30]
                           [--warmup-rounds 3] [--rounds K] [--agents 1] [--tls] [--idle]
                           [--bin build/bin]

--rounds K counts rounds warmup+1 .. warmup+K of every device, and says how
many devices did not reach the last: two runs then compare the same rounds.
Without it every round after the warmup counts, and a run whose devices
connected later (TLS handshakes, 1024 of them take seconds) counts more
early rounds, whose error is larger while a device's window fills (64
rounds): an unequal comparison."""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


AGENT_OPTS = []
DEVSIM_OPTS = []
SCHEME = ["ws"]  # "wss" with --tls


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pylib"))
from msrstest import free_port, wait_listening  # noqa: E402


# Plain transport without credentials (tests/plain.conf) unless MSRS_CONFIG
# names another configuration: the TLS figures are a run with one that
# sets tls.* and auth.* (docs/security.md).
os.environ.setdefault("MSRS_CONFIG", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                  "tests", "plain.conf"))


def proc_stats(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    user = int(fields[11]) / ticks
    hwm = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return cpu, hwm, user


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))] if xs else float("nan")


def run(binary, devices, profile, seconds, warmup, agents=1, measured=0):
    tmp = tempfile.mkdtemp(prefix="msrs-bench-sync-")
    db = os.path.join(tmp, "log.db")
    procs, sims, truths = [], [], []
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    errs_out = []  # the agents' stderr: their status lines
    for k in range(agents):
        port = free_port()
        errs_out.append(open(os.path.join(tmp, "agent%d.err" % k), "w"))
        procs.append(subprocess.Popen([os.path.join(binary, "msrs-agent"), "--log", "sqlite:" + db,
                                       "--listen", "127.0.0.1:%d" % port, "--node-id", "bench%d" % k,
                                       "-X", "sqlite.synchronous=NORMAL"] + AGENT_OPTS,
                                      stderr=errs_out[-1]))
        wait_listening(port)
        truths.append(os.path.join(tmp, "truth%d.jsonl" % k))
        n = devices // agents + (1 if k < devices % agents else 0)
        sims.append(subprocess.Popen([os.path.join(binary, "msrs-devsim"), "--url",
                                      "%s://127.0.0.1:%d/v1/devices" % (SCHEME[0], port),
                                      "--devices", str(n),
                                      "--prefix", "sim%d-" % k if agents > 1 else "sim-",
                                      "--seed", str(k + 1), "--profile", profile, "--duration",
                                      str(seconds), "--truth", truths[-1]] + DEVSIM_OPTS,
                                     stderr=subprocess.DEVNULL))
    cpu0 = sum(proc_stats(p.pid)[0] for p in procs)
    user0 = sum(proc_stats(p.pid)[2] for p in procs)
    t0 = time.time()
    rss = []  # (s, agents' VmRSS bytes) every 10 s: growth over a long run
    while any(s.poll() is None for s in sims):
        try:
            next(s for s in sims if s.poll() is None).wait(timeout=10)
        except (subprocess.TimeoutExpired, StopIteration):
            pass
        total = 0
        for p in procs:
            with open("/proc/%d/status" % p.pid) as f:
                total += next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
        rss.append((time.time() - t0, total))
    wall = time.time() - t0
    # every devsim has been reaped (poll) and nothing else yet: their CPU
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sim_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    cpu1 = sum(proc_stats(p.pid)[0] for p in procs)
    user1 = sum(proc_stats(p.pid)[2] for p in procs)
    hwm = sum(proc_stats(p.pid)[1] for p in procs)
    for p in procs:
        p.terminate()
        p.wait()
    for f in errs_out:
        f.close()
    # the agents' last status lines: answers the devices corrected (prev_t3)
    # and the messages refused as invalid
    corrected = invalid = 0
    for k in range(agents):
        with open(os.path.join(tmp, "agent%d.err" % k)) as f:
            last = [l for l in f if " clock answers corrected" in l][-1:]
        for l in last:
            corrected += int(l.split(" clock answers corrected")[0].rsplit(" ", 1)[1])
            invalid += int(l.split(" invalid ")[0].rsplit(" ", 1)[1])
    model = {}
    for truth in truths:
        for line in open(truth):
            d = json.loads(line)
            model[d["device_id"]] = d
    out = subprocess.run([os.path.join(binary, "msrs-tail"), "--log", "sqlite:" + db, "--topic", "devices", "--topic", "clock"],
                         capture_output=True, text=True).stdout
    errs, signed, rounds = [], [], 0
    by_round, by_minute, last_round, max_gap, disconnects, reached = {}, {}, {}, 0, 0, {}
    for line in out.splitlines():
        r = json.loads(line)
        if r["type"].endswith("DeviceDisconnected") and r["timestamp"] < (t0 + seconds - 1) * 1000:
            disconnects += 1  # before devsim's own exit
        if not r["type"].endswith("ClockOffsetMeasured"):
            continue
        v = r["value"]
        rounds += 1
        prev = last_round.get(v["device_id"])
        if prev is not None:
            max_gap = max(max_gap, v["t4_ns"] - prev)
        last_round[v["device_id"]] = v["t4_ns"]
        reached[v["device_id"]] = max(reached.get(v["device_id"], 0), v["round"])
        if v["round"] <= warmup or (measured and v["round"] > warmup + measured):
            continue
        m = model[v["device_id"]]
        t = v["t4_ns"]
        true_off = m["offset_ns"] + m["drift_ppm"] * 1e-6 * (t - m["t0_ns"])
        errs.append(abs(v["offset_ns"] - true_off) / 1000.0)
        signed.append((v["offset_ns"] - true_off) / 1000.0)
        by_round.setdefault(v["round"], []).append(abs(v["offset_ns"] - true_off) / 1000.0)
        by_minute.setdefault(int((t / 1e9 - t0) // 60), []).append(abs(v["offset_ns"] - true_off) / 1000.0)
    print("  %-5s %5d devices %4ds%s: %6d rounds  |err| us p50 %8.1f  p99 %8.1f  max %8.1f  "
          "(median signed %+7.1f)  agent cpu %5.1f%%  rss %6.2f MB/device" % (
              profile, devices, seconds, " (%d agents)" % agents if agents > 1 else "", rounds, pct(errs, 50), pct(errs, 99),
              max(errs) if errs else float("nan"), pct(signed, 50),
              100.0 * (cpu1 - cpu0) / wall, hwm / 1e6 / devices),
          flush=True)
    if measured:
        short = sum(1 for d in model if d not in reached or reached[d] < warmup + measured)
        print("        rounds %d to %d of every device; %d devices did not reach round %d" % (
            warmup + 1, warmup + measured, short, warmup + measured))
    print("        %d of %d devices synced, %d disconnected before the end, longest time between a device's rounds %.1f s"
          % (len(last_round), devices, disconnects, max_gap / 1e9))
    # each devsim device makes 128 + 100 samples a second (gsr, imu) unless --samples none
    samples = 0 if {"none", "--samples=none"} & set(DEVSIM_OPTS) else devices * 228 * seconds
    print("        agent cpu in user space %.1f%%, in the kernel %.1f%%" % (
        100.0 * (user1 - user0) / wall, 100.0 * ((cpu1 - cpu0) - (user1 - user0)) / wall))
    print("        clock answers corrected by the device's next (prev_t3): %d; messages refused "
          "as invalid: %d" % (corrected, invalid))
    print("        devsim cpu %.1f%% of a core for %d devices%s" % (
        100.0 * sim_cpu / wall, devices,
        ", %.2f us per sample sent (probes included)" % (sim_cpu * 1e6 / samples) if samples else ""))
    if len(rss) >= 2:
        print("        agent RSS every 10 s, MB: %s" % " ".join("%.1f" % (b / 1e6) for _, b in rss))
    if len(by_minute) > 2:
        for k in sorted(by_minute):
            xs = by_minute[k]
            print("        minute %2d: %6d rounds  |err| us p50 %8.1f  p99 %8.1f  max %8.1f"
                  % (k, len(xs), pct(xs, 50), pct(xs, 99), max(xs)))
    if os.environ.get("MSRS_BENCH_BY_ROUND"):
        for k in sorted(by_round):
            print("    round %3d: max |err| %8.1f us over %d devices" % (k, max(by_round[k]), len(by_round[k])))
    if os.environ.get("MSRS_BENCH_KEEP"):
        print("        kept: %s (log.db, truth*.jsonl)" % tmp)
    else:
        subprocess.run(["rm", "-rf", tmp])
    return errs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", default="8")
    ap.add_argument("--profiles", default="lan,wifi")
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--warmup-rounds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=0, help="count rounds warmup+1 .. warmup+K "
                    "of every device only (0: every round after the warmup)")
    ap.add_argument("--agents", type=int, default=1, help="split the devices over this many agents")
    ap.add_argument("-X", action="append", default=[], help="agent config key=value")
    ap.add_argument("--devsim", action="append", default=[], help="extra msrs-devsim argument")
    ap.add_argument("--tls", action="store_true", help="TLS and device credentials: the agent and "
                    "devsim on deploy/local/make-credentials.sh's configuration (wss://)")
    ap.add_argument("--idle", action="store_true", help="the idle cadence: rounds every "
                    "sync.idle_interval_ms once a device's window is full")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build", "bin"))
    a = ap.parse_args()
    if a.tls:
        here = os.path.dirname(os.path.abspath(__file__))
        os.environ["MSRS_CONFIG"] = subprocess.run(
            [os.path.join(here, "..", "deploy", "local", "make-credentials.sh"),
             os.path.join(tempfile.mkdtemp(prefix="msrs-bench-tls-"), "tls")],
            capture_output=True, text=True, check=True).stdout.strip()
        SCHEME[0] = "wss"
    if not a.idle:
        AGENT_OPTS.extend(["-X", "sync.idle_interval_ms=2000"])
    for x in a.X:
        AGENT_OPTS.extend(["-X", x])
    DEVSIM_OPTS.extend(a.devsim)
    print("# command: %s" % " ".join(sys.argv))
    print("# |err| = |ClockOffsetMeasured.offset_ns - true offset at t4|, rounds after the first %d%s"
          % (a.warmup_rounds, " up to round %d" % (a.warmup_rounds + a.rounds) if a.rounds else ""))
    for profile in a.profiles.split(","):
        for n in a.devices.split(","):
            run(a.bin, int(n), profile, a.seconds, a.warmup_rounds, a.agents, a.rounds)


if __name__ == "__main__":
    main()
