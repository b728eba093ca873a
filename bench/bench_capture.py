#!/usr/bin/python3
"""USB cameras through msrs-capture, against the raw encoder in the same run.

C test cameras (tests/testcam: the libv4l2 plugin, YUYV W x H at F fps,
the frames of tests/testcam/pattern.h) are captured by one msrs-capture
(libv4l2, libswscale, libx264 with its defaults, the camera proxy on)
into one msrs-agent on a SQLite log, for S seconds after a warm-up.
Prints per camera: frames made, on the log, lost (seq gaps) and dropped
(capture's own count); capture's CPU per camera and per frame; frame -> log
latency (the MediaPacket's emit time minus the frame's master time: from
the driver's stamp to the agent handing it to the log) p50/p99; and
bench_encode (raw libswscale + libx264 on the same frames) in the same run,
back to back on one thread (the ceiling) and as C streams at F fps (the
cameras' cadence: x264 costs ~30 % more per frame when its caches go cold
between frames). The ratios are raw CPU per frame / capture's own CPU per
frame: capture's, less the test camera's drawing of each frame (which its
DQBUF does on capture's threads and a real camera does in hardware).

usage: bench/bench_capture.py [--cameras 4] [--size 1280x720] [--fps 30]
                              [--seconds 30] [--warmup 3] [--bin build/bin]"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pylib"))
from msrstest import free_port, stop_all, tail, time_ns, wait_listening  # noqa: E402
from bench_sync import pct, proc_stats  # noqa: E402

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--bin", default=os.path.join(SRC, "build", "bin"))
    a = ap.parse_args()
    w, h = (int(x) for x in a.size.split("x"))
    print("# %s" % " ".join(sys.argv))
    print("# load average before: %s" % open("/proc/loadavg").read().split()[:3])
    r = subprocess.run([os.path.join(SRC, "tests", "testcam", "install.sh"), os.path.join(a.bin, "..")])
    if r.returncode:
        return r.returncode
    tmp = tempfile.mkdtemp(prefix="msrs-bench-capture-")
    cams = os.path.join(tmp, "cams")
    os.makedirs(cams)
    for i in range(a.cameras):
        text = "MSRSCAM1\ncard=Bench %d\nbus=bench-%d\nformats=YUYV\nwidth=%d\nheight=%d\nfps=%d\n" % (
            i, i, w, h, a.fps)
        with open(os.path.join(cams, "video%d" % i), "wb") as f:
            f.write(text.encode().ljust(4096, b"\0"))
    db = os.path.join(tmp, "log.db")
    port = free_port()
    env = dict(os.environ, MSRS_CONFIG=os.path.join(SRC, "tests", "plain.conf"))
    procs = []
    try:
        agent = subprocess.Popen([os.path.join(a.bin, "msrs-agent"), "--log", "sqlite:" + db, "--listen",
                                  "127.0.0.1:%d" % port, "--node-id", "bench"], env=env,
                                 stderr=open(os.path.join(tmp, "agent.log"), "w"))
        procs.append(agent)
        wait_listening(port)
        cap = subprocess.Popen([os.path.join(a.bin, "msrs-capture"), "-X", "capture.devices=%s/video*" % cams,
                                "-X", "capture.agent=ws://127.0.0.1:%d/v1/devices" % port,
                                "-X", "capture.id_prefix=bench.", "-X", "capture.width=%d" % w,
                                "-X", "capture.height=%d" % h, "-X", "capture.fps=%d" % a.fps,
                                "-X", "capture.preview_listen=127.0.0.1:%d" % free_port()], env=env,
                               stderr=open(os.path.join(tmp, "capture.log"), "w"))
        procs.append(cap)
        time.sleep(a.warmup)
        c0, a0, t0 = proc_stats(cap.pid)[0], proc_stats(agent.pid)[0], time.time_ns()
        time.sleep(a.seconds)
        c1, a1, t1 = proc_stats(cap.pid)[0], proc_stats(agent.pid)[0], time.time_ns()
    finally:
        stop_all(procs)
    print("# load average after: %s" % open("/proc/loadavg").read().split()[:3])
    caplog = open(os.path.join(tmp, "capture.log")).read()
    per_dev, lat = {}, []
    for rec in tail(db, "media", a.bin):
        v = rec["value"]
        master = v["master_time_ns"]
        if not (t0 <= master < t1):
            continue
        d = per_dev.setdefault(v["device_id"], [])
        d.append(v["seq"])
        lat.append((time_ns(rec["time"]) - master) / 1e6)
    frames = sum(len(s) for s in per_dev.values())
    lost = sum(max(s) - min(s) + 1 - len(s) for s in per_dev.values() if s)
    window = (t1 - t0) / 1e9
    dropped = sum(int(x) + int(y) + int(z) for x, y, z in
                  re.findall(r"dropped: (\d+) queue, (\d+) slowed, (\d+) not registered", caplog)[-a.cameras:])
    cpu = c1 - c0
    per_frame = cpu / frames * 1e3 if frames else float("nan")
    print("cameras %d x %dx%d@%d for %.1f s: %d frames on the log (%.1f/s per camera of %d), "
          "%d lost (seq gaps), %d dropped by capture (its counters, whole run)"
          % (a.cameras, w, h, a.fps, window, frames, frames / window / max(1, a.cameras), a.fps, lost, dropped))
    print("msrs-capture CPU: %.1f %% of a core in all, %.1f %% per camera, %.3f ms per frame; "
          "msrs-agent %.1f %%" % (cpu / window * 100, cpu / window * 100 / a.cameras, per_frame,
                                  (a1 - a0) / window * 100))
    print("frame -> log latency: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d frames)"
          % (pct(lat, 50), pct(lat, 99), max(lat) if lat else float("nan"), len(lat)))
    raw = subprocess.run([os.path.join(a.bin, "bench_encode"), str(w), str(h), "300", str(a.cameras),
                          str(a.fps)], capture_output=True, text=True)
    print(raw.stdout.strip())
    b2b = re.search(r"back to back.*?together ([\d.]+) ms/frame", raw.stdout)
    paced = re.search(r"cadence\).*?together ([\d.]+) ms/frame.*?own work\) ([\d.]+) ms/frame", raw.stdout)
    ratios = {}
    if b2b and paced and frames:
        own = per_frame - float(paced.group(2))  # a real camera draws its frames in hardware
        ratios = {"vs_back_to_back": float(b2b.group(1)) / own, "vs_same_cadence": float(paced.group(1)) / own}
        print("capture's own CPU per frame (less the test camera's drawing, %.3f ms): %.3f ms; raw / "
              "capture: %.2f against the encoder back to back (the ceiling), %.2f against the encoder "
              "at the cameras' cadence (the same work, caches as cold)"
              % (float(paced.group(2)), own, ratios["vs_back_to_back"], ratios["vs_same_cadence"]))
    print(json.dumps({"frames": frames, "lost": lost, "dropped": dropped, "cpu_per_camera_pct":
                      round(cpu / window * 100 / a.cameras, 1), "ms_per_frame": round(per_frame, 3),
                      "latency_p50_ms": round(pct(lat, 50), 2), "latency_p99_ms": round(pct(lat, 99), 2),
                      "ratios": {k: round(v, 2) for k, v in ratios.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
