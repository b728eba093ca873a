#!/usr/bin/python3
"""Instructions per message of msrs-agent's paths, counted by callgrind
(issue 22): the agent runs under `valgrind --tool=callgrind` on a SQLite
log while msrs-devsim (SDK devices) sends for --seconds; at the agent's
exit the callgrind file is read and, for each path, the instructions of
every call of its handler (inclusive: everything it called, on the thread
that runs it) are divided by the number of calls:

  samples message  ag_ingest_samples_binary (a binary samples frame: check,
                   convert to master time, encode, append to the log's queue)
  clock probe's    ag_clock_answer (an answer's stamps into the device's
  round work       window, a round's end and its record; its JSON parse is
                   json_loadb's, below)
  a JSON text      json_loadb (every text message but clock answers)
  parsed
  read flat        ev_jflat_read (every binary frame's header, and clock
                   answers: yajl's events, no tree)
  media frame      ag_ingest_media (with --video: one packet)
  any message      ag_on_message (every message a device sent, parsing and
                   dispatch included)
  libwebsockets    callback_devices (lws's callback for the device protocol:
                   the above plus reassembly and writes)
  whole process    every instruction of every thread from the moment the
                   agent listens (callgrind_control -z: start-up left out;
                   the SQLite writer and lws's loop in, the kernel's share
                   not) divided by all messages received (ag_on_message's
                   calls)

Counts repeat exactly for the same messages (unlike wall-clock); the
message mix depends on timing (under valgrind the agent is ~50x slower,
so keep --devices small: 8 devices make ~150 messages a second).

usage: bench/bench_agent_cg.py [--devices 8] [--seconds 20] [--video] [--bin build/bin] [--keep]
(--keep: the callgrind file is kept and named, for callgrind_annotate)"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pylib"))
from msrstest import free_port, wait_listening  # noqa: E402

PATHS = [("samples message", "ag_ingest_samples_binary"), ("clock probe's round work", "ag_clock_answer"),
         ("media frame", "ag_ingest_media"), ("a JSON text parsed", "json_loadb"),
         ("a header or clock answer read flat", "ev_jflat_read"),
         ("any message", "ag_on_message"), ("libwebsockets callback", "callback_devices")]


def read_callgrind(path):
    """{function: [calls, inclusive instructions]} over every call site, and
    the file's total instructions (callgrind's format: 'calls=N ...' lines,
    each followed by the call's inclusive cost line)."""
    names, calls, total = {}, {}, 0
    cfn = None
    pending = None
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                total = max(total, int(line.split()[1]))
                continue
            m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2).strip()
                if line.startswith("cfn="):
                    cfn = m.group(1)
                continue
            if line.startswith("calls="):
                pending = int(line.split()[0][6:])
                continue
            if pending is not None and line[:1].isdigit() or (pending is not None and line[:1] in "+-*"):
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                name = names.get(cfn, cfn)
                c = calls.setdefault(name, [0, 0])
                c[0] += pending
                c[1] += cost
                pending = None
    return calls, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--video", action="store_true", help="devsim --video 320x240@15 --video-loop 30")
    ap.add_argument("--keep", action="store_true", help="keep the callgrind file")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "bin"))
    a = ap.parse_args()
    os.environ.setdefault("MSRS_CONFIG", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                      "tests", "plain.conf"))
    tmp = tempfile.mkdtemp(prefix="msrs-agent-cg-")
    out = os.path.join(tmp, "callgrind.out")
    port = free_port()
    load = os.getloadavg()
    cmd = ("bench/bench_agent_cg.py --devices %d --seconds %d%s" % (a.devices, a.seconds, " --video" if a.video else ""))
    print("# command: %s (load average %.2f %.2f %.2f)" % ((cmd,) + load))
    agent = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                              os.path.join(a.bin, "msrs-agent"), "--log", "sqlite:" + os.path.join(tmp, "log.db"),
                              "--listen", "127.0.0.1:%d" % port, "--node-id", "cg",
                              "-X", "sqlite.synchronous=NORMAL", "-X", "sync.idle_interval_ms=2000"],
                             stderr=open(os.path.join(tmp, "agent.err"), "w"))
    deadline = time.time() + 120
    while agent.poll() is None and time.time() < deadline and not wait_listening(port, 1):
        pass
    if agent.poll() is not None or time.time() >= deadline:
        agent.kill()
        sys.exit("bench_agent_cg: the agent under valgrind never listened (%s)" % os.path.join(tmp, "agent.err"))
    # counts from here: the agent's start-up (schemas, the log, TLS) is not a message's
    subprocess.run(["callgrind_control", "-z", str(agent.pid)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    extra = ["--video", "320x240@15", "--video-loop", "30"] if a.video else []
    sim = subprocess.run([os.path.join(a.bin, "msrs-devsim"), "--url", "ws://127.0.0.1:%d/v1/devices" % port,
                          "--devices", str(a.devices), "--duration", str(a.seconds), "--profile", "lan"] + extra,
                         stderr=subprocess.PIPE, text=True)
    if sim.returncode:
        print(sim.stderr[-2000:], file=sys.stderr)
    agent.terminate()
    agent.wait(120)
    calls, total = read_callgrind(out)
    messages = calls.get("ag_on_message", [0, 0])[0]
    print("# agent under callgrind, %d devsim devices for %d s%s: %d messages, %d instructions in all threads"
          % (a.devices, a.seconds, " with video" if a.video else "", messages, total))
    print("%-24s %-28s %10s %16s" % ("path", "function", "calls", "instr/call"))
    for label, fn in PATHS:
        n, cost = calls.get(fn, [0, 0])
        print("%-24s %-28s %10d %16s" % (label, fn, n, "%.0f" % (cost / n) if n else "-"))
    print("%-24s %-28s %10d %16s" % ("whole process", "(all threads) / messages", messages,
                                      "%.0f" % (total / messages) if messages else "-"))
    if a.keep:
        print("# kept: %s (callgrind_annotate --inclusive=yes %s)" % (out, out))
    else:
        subprocess.run(["rm", "-rf", tmp])
    return 0


if __name__ == "__main__":
    sys.exit(main())
