#!/usr/bin/python3
"""Devices to a synchronised session, with real processes on one SQLite log:
msrs-agent, msrs-devsim (4 devices with offset clocks on a LAN-like network)
and msrs-syncd. A CollectionRequested for the 4 devices becomes a
SynchronizationCompleted whose offsets match devsim's true clocks; syncd
killed with SIGKILL and restarted does not synchronise the session again;
a stale offset makes syncd send SyncNow and the agent re-syncs at once."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, free_port, of_type, tail, wait_listening  # noqa: E402

check = Checks()


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-sync-e2e-")
    db, truth = os.path.join(tmp, "log.db"), os.path.join(tmp, "truth.jsonl")
    log = "sqlite:" + db
    port = free_port()
    procs = []

    def start(args, **kw):
        p = subprocess.Popen([os.path.join(BIN, args[0])] + args[1:], stderr=subprocess.PIPE, text=True, **kw)
        procs.append(p)
        return p

    try:
        start(["msrs-agent", "--log", log, "--listen", "127.0.0.1:%d" % port, "--node-id", "n1",
                       "-X", "sync.interval_ms=1000"])
        check(wait_listening(port), "agent listening")
        start(["msrs-devsim", "--url", "ws://127.0.0.1:%d/v1/devices" % port, "--devices", "4",
               "--profile", "lan", "--offset-ms", "300", "--truth", truth, "--video", "64x48@10"])
        syncd = start(["msrs-syncd", "--log", log, "-X", "sync.max_uncertainty_us=2000"])
        r = subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "emit", "CollectionRequested",
                            json.dumps({"session_id": "s1", "device_ids": ["sim-1", "sim-2", "sim-3", "sim-4"],
                                        "min_group": 4})], capture_output=True, text=True)
        check(r.returncode == 0, "CollectionRequested: " + r.stderr)
        done = check.wait_for(lambda: of_type(tail(db, "sessions"), "SynchronizationCompleted"), 30,
                        "SynchronizationCompleted")
        if done:
            v = done[0]["value"]
            check(done[0]["id"] == "sync/s1", "deterministic event id: %s" % done[0]["id"])
            check(sorted(d["device_id"] for d in v["devices"]) == ["sim-1", "sim-2", "sim-3", "sim-4"],
                  "the group: %r" % v["devices"])
            model = {m["device_id"]: m for m in map(json.loads, open(truth))}
            t = done[0]["timestamp"] * 1000000
            for d in v["devices"]:
                m = model[d["device_id"]]
                true_off = m["offset_ns"] + m["drift_ppm"] * 1e-6 * (t - m["t0_ns"])
                check(abs(d["offset_ns"] - true_off) < 1500000,
                      "%s offset %d vs true %d" % (d["device_id"], d["offset_ns"], true_off))
                check(d["uncertainty_ns"] <= 2000000, "uncertainty within tolerance")

        # SIGKILL syncd and restart it: it rebuilds its state from the log and
        # does not synchronise s1 again (same event id if it did: no new state).
        syncd.send_signal(signal.SIGKILL)
        syncd.wait()
        syncd = start(["msrs-syncd", "--log", log, "-X", "sync.max_uncertainty_us=2000"])
        time.sleep(2)
        state = json.loads(subprocess.run([os.path.join(BIN, "msrs-replay"), "--log", log, "--compact"],
                                          capture_output=True, text=True).stdout)
        check(state["sessions"]["s1"]["state"] == "synchronized", "s1 synchronized in replayed state")
        n = len(of_type(tail(db, "sessions"), "SynchronizationCompleted"))
        check(n == 1, "one SynchronizationCompleted after the restart, got %d" % n)

        # Stale offsets: a syncd that wants offsets younger than 1 ms never
        # finds the group fresh, so it asks the agent to re-sync now.
        syncd.terminate()
        syncd.wait()
        subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "emit", "CollectionRequested",
                        json.dumps({"session_id": "s2", "min_group": 4})], capture_output=True)
        start(["msrs-syncd", "--log", log, "-X", "sync.max_age_ms=1", "-X", "sync.max_uncertainty_us=2000"])
        asks = check.wait_for(lambda: [c for c in of_type(tail(db, "commands"), "SyncNow") if c["key"] == "n1"], 20,
                        "SyncNow")
        check(bool(asks), "syncd asked node n1 to re-sync")

        # Video from devsim (libavcodec mpeg4) reached the log as MediaPacket:
        # per device in order, starting with a keyframe, a keyframe a second.
        media = [r["value"] for r in tail(db, "media")]
        for dev in ("sim-1", "sim-2", "sim-3", "sim-4"):
            pk = [m for m in media if m["device_id"] == dev]
            check(len(pk) >= 20, "%s sent video packets: %d" % (dev, len(pk)))
            if pk:
                check(pk[0]["keyframe"] and pk[0]["codec"] == "mpeg4" and pk[0]["width"] == 64,
                      "%s: first packet is an mpeg4 keyframe: %r" % (dev, {k: pk[0][k] for k in ("keyframe", "codec", "width")}))
                check(all(a["seq"] < b["seq"] and a["pts"] < b["pts"] for a, b in zip(pk, pk[1:])),
                      "%s: packets in order" % dev)
                check(sum(1 for m in pk if m["keyframe"]) >= len(pk) // 10,
                      "%s: a keyframe every second" % dev)
                check(all(len(m["data"]) > 0 for m in pk), "%s: packets carry bytes" % dev)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        errs = []
        for p in procs:
            try:
                _, e = p.communicate(timeout=20)
                errs.append(e)
                # every process but the one killed on purpose stops cleanly
                # (under ASan/LSan a leak or bad access makes this fail)
                check(p.returncode in (0, -signal.SIGKILL), "%s exited %d: %s" % (p.args[0], p.returncode, e[-800:]))
            except subprocess.TimeoutExpired:
                p.kill()
                check(False, "%s did not stop on SIGTERM" % p.args[0])
    check(any("synchronised" in (e or "") for e in errs), "syncd reports the session it synchronised")
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
