#!/usr/bin/python3
"""The SDK's example (sdk/examples/gsr.c, the program docs/sdk.md shows)
against a real msrs-agent on TLS with a device credential: it registers,
its batches reach the log as SensorSampleBatch (16 samples each, seq
consecutive, 128 Hz on the device's clock), its clock is measured, and it
exits 0 on SIGINT. The program in docs/sdk.md is the file, verbatim. A
wrong credential is refused and said."""
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, Procs, free_port, of_type, stop_all, tail, wait_listening  # noqa: E402

SRC = os.environ.get("MSRS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
check = Checks()


def main():
    example = open(os.path.join(SRC, "sdk", "examples", "gsr.c")).read()
    check(example in open(os.path.join(SRC, "docs", "sdk.md")).read(),
          "docs/sdk.md shows sdk/examples/gsr.c verbatim")
    tmp = tempfile.mkdtemp(prefix="msrs-sdk-")
    conf = subprocess.run([os.path.join(SRC, "deploy", "local", "make-credentials.sh"),
                           os.path.join(tmp, "tls")], capture_output=True, text=True,
                          check=True).stdout.strip()
    env = dict(os.environ, MSRS_CONFIG=conf, MSRS_CA=os.path.join(tmp, "tls", "ca.pem"))
    db = os.path.join(tmp, "log.db")
    port = free_port()
    url = "wss://127.0.0.1:%d/v1/devices" % port
    procs = Procs(tmp)
    try:
        procs.start("agent", ["msrs-agent", "--log", "sqlite:" + db, "--listen", "127.0.0.1:%d" % port,
                              "--node-id", "n1", "-X", "sync.interval_ms=500"], env=env)
        check(wait_listening(port), "agent listening")
        cred = subprocess.run([os.path.join(BIN, "msrs"), "devices", "credential", "gsr-1"], env=env,
                              capture_output=True, text=True).stdout.strip()
        check(cred.startswith("1."), "a credential: %s" % cred[:8])
        ex = procs.start("example", ["msrs-example-gsr", url, "gsr-1", cred], env=env)
        bad = procs.start("bad", ["msrs-example-gsr", url, "gsr-2", cred], env=env)  # gsr-1's
        time.sleep(4)
        ex.send_signal(signal.SIGINT)
        check(ex.wait(10) == 0, "the example exits 0 on SIGINT")
        bad.send_signal(signal.SIGINT)
        check(bad.wait(10) == 0, "the refused one exits 0 on SIGINT")
        batches = [r["value"] for r in of_type(tail(db, "samples"), "SensorSampleBatch")
                   if r["value"]["device_id"] == "gsr-1"]
        check(len(batches) >= 15, "%d batches on the log in 4 s" % len(batches))
        check(all(len(b["device_time_ns"]) == 16 for b in batches), "16 samples a batch")
        seqs = [b["seq"] for b in batches]
        check(seqs == list(range(seqs[0], seqs[0] + 16 * len(seqs), 16)) if seqs else False,
              "seq consecutive: %s" % seqs[:5])
        t = [x for b in batches for x in b["device_time_ns"]]
        check(t and all(b - a == 7812500 for a, b in zip(t, t[1:])), "128 Hz on the device's clock")
        devs = tail(db, "devices")
        check(of_type(tail(db, "clock"), "ClockOffsetMeasured"), "its clock measured (ClockOffsetMeasured)")
        check(not [r for r in of_type(devs, "DeviceRegistered") if r["value"]["device_id"] == "gsr-2"],
              "another device's credential: not registered")
        check("gsr: the agent says proof does not match" in procs.stderr_of("bad"),
              "the refused device is told why: %s" % procs.stderr_of("bad")[-300:])
        check("LWS:" not in procs.stderr_of("example"), "libwebsockets' notices are not printed")
    finally:
        stop_all(procs)
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
