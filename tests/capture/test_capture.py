#!/usr/bin/python3
"""USB cameras end to end, without a camera: the test camera plugin
(tests/testcam, a libv4l2 plugin that makes a regular file a V4L2 camera)
serves camera files, and real processes — msrs-agent, msrs-syncd,
msrs-collectord, msrs-archiver, msrs-devsim (4 phones) and msrs-capture —
run on TLS with device credentials from the lab key, on one SQLite log.

Checked:
- discovery: the YUYV camera is encoded to H.264, the MJPEG camera passed
  through, both registered as devices of node n1 with their stream; a
  camera whose only format is one nothing can encode is refused with a
  message naming what it offers, and the others go on;
- format negotiation through libv4l2's conversion: asked for yuv420, a
  YUYV-only camera is converted by libv4l2 and encoded; its driver does
  not stamp on CLOCK_MONOTONIC, which capture says (frames are stamped at
  dequeue);
- a session with 4 phones and 2 cameras: one start instant; unplugging
  the MJPEG camera mid-session disconnects it (DeviceDisconnected), it
  rejoins when plugged back, and the frames it did not make are the
  session's gap (gap_samples = the time away in frames, plus up to the
  scan interval until capture sees it again); a
  stalled camera's missing frames are a gap too; the session says it is
  incomplete and why, never complete;
- every archived frame's seq step is the time step in frames (the
  driver's timestamps, 1/30 s apart, kept exactly);
- the archive's camera videos open with ffprobe: codec, frame count ==
  archived frames == RecordingReport, first PTS == the first frame's
  master time (to the ms, Matroska's scale);
- the camera proxy: 401 without a token; the camera list and a JPEG with
  an operator's token;
- the plan: n1 registers with the capability "camera" (a path matches
  capture.devices), the supervisor's plan names capture, the agent starts
  msrs-capture itself, starts it again when it is killed, and stops it
  when the last camera is gone (the node registers again, the new plan
  has no capture);
- nothing crashed."""
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, Procs, free_port, of_type, stop_all, tail, wait_listening  # noqa: E402

import avro.datafile  # noqa: E402
import avro.io  # noqa: E402

SRC = os.environ.get("MSRS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
check = Checks()
FPS = 30


def camera_file(path, card, bus, formats, w=640, h=360, mjpeg="", state="ok", clock="monotonic"):
    text = "MSRSCAM1\ncard=%s\nbus=%s\nformats=%s\nwidth=%d\nheight=%d\nfps=%d\nmjpeg=%s\nstate=%s\nclock=%s\n" % (
        card, bus, formats, w, h, FPS, mjpeg, state, clock)
    data = text.encode().ljust(4096, b"\0")
    if os.path.exists(path):  # the header only: the buffers after it are mapped
        with open(path, "r+b") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def avro_records(path):
    with open(path, "rb") as f:
        return list(avro.datafile.DataFileReader(f, avro.io.DatumReader()))


def get(url, ctx, tok=None):
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + tok} if tok else {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def conversion_run(tmp, env, url):
    """capture.format = yuv420 on a YUYV-only camera: libv4l2 converts."""
    d = os.path.join(tmp, "conv")
    os.makedirs(d)
    camera_file(os.path.join(d, "video0"), "Conv Camera", "testcam-conv", "YUYV", clock="unknown")
    r = subprocess.Popen([os.path.join(BIN, "msrs-capture"), "-X", "capture.devices=%s/video*" % d,
                          "-X", "capture.agent=" + url, "-X", "capture.id_prefix=n1.",
                          "-X", "capture.format=yuv420", "-X", "capture.preview_listen=off"],
                         env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    r.terminate()
    err = r.communicate(timeout=20)[1]
    check(r.returncode == 0, "conversion run exits 0: %s" % r.returncode)
    check("YU12 640x360@30 (converted by libv4l2 from the camera's own YUYV) -> h264" in err,
          "yuv420 asked of a YUYV camera: libv4l2 converts: %s" % err[-600:])
    check("n1.cam-testcam-conv (%s/video0, h264 640x360@30) registered" % d in err,
          "the converted camera registered")
    check("timestamps are not CLOCK_MONOTONIC: frames are stamped when dequeued" in err,
          "a driver that does not stamp on CLOCK_MONOTONIC: said, frames stamped at dequeue")


def main():
    r = subprocess.run([os.path.join(SRC, "tests", "testcam", "install.sh"),
                        os.path.join(BIN, "..")], capture_output=True, text=True)
    if r.returncode == 77:
        print("SKIP: " + r.stderr.strip())
        return 77
    check(r.returncode == 0, "test camera plugin installed: %s" % r.stderr)
    tmp = tempfile.mkdtemp(prefix="msrs-capture-")
    conf = subprocess.run([os.path.join(SRC, "deploy", "local", "make-credentials.sh"),
                           os.path.join(tmp, "tls")], capture_output=True, text=True,
                          check=True).stdout.strip()
    env = dict(os.environ, MSRS_CONFIG=conf)
    ctx = ssl.create_default_context(cafile=os.path.join(tmp, "tls", "ca.pem"))
    cams = os.path.join(tmp, "cams")
    os.makedirs(cams)
    clip = os.path.join(tmp, "clip.mjpeg")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=640x360:rate=30", "-frames:v", "30", "-q:v", "5", "-f", "mjpeg",
                    clip], check=True)
    cam_a, cam_b = os.path.join(cams, "video0"), os.path.join(cams, "video1")
    camera_file(cam_a, "Test Camera A", "testcam-a", "YUYV")
    camera_file(cam_b, "Test Camera B", "testcam-b", "MJPG,YUYV", mjpeg=clip)
    camera_file(os.path.join(cams, "video2"), "Odd Camera", "testcam-odd", "XRAW")
    db, archive = os.path.join(tmp, "log.db"), os.path.join(tmp, "archive")
    log = "sqlite:" + db
    port, preview, sup_port = free_port(), free_port(), free_port()
    url = "wss://127.0.0.1:%d/v1/devices" % port
    procs = Procs(tmp)
    ids = ["sim-1", "sim-2", "sim-3", "sim-4", "n1.cam-testcam-a", "n1.cam-testcam-b"]
    try:
        # the supervisor plans capture for a node with cameras; the agent
        # starts msrs-capture (its stderr is the agent's)
        procs.start("supervisor", ["msrs-supervisor", "--log", log, "--listen",
                                   "127.0.0.1:%d" % sup_port, "--node-id", "sup",
                                   "-X", "discovery.port=0"], env=env)
        check(wait_listening(sup_port), "supervisor listening")
        procs.start("agent", ["msrs-agent", "--log", log, "--listen", "127.0.0.1:%d" % port,
                              "--node-id", "n1", "--supervisor", "https://127.0.0.1:%d" % sup_port,
                              "-X", "sync.interval_ms=1000", "-X", "agent.report_delay_ms=1000",
                              "-X", "capture.devices=%s/video*" % cams, "-X", "capture.stall_ms=500",
                              "-X", "capture.preview_listen=127.0.0.1:%d" % preview], env=env)
        check(wait_listening(port, 20), "agent listening (planned)")
        nodes = tail(db, "nodes")
        reg = [r["value"] for r in of_type(nodes, "NodeRegistered") if r["value"]["node_id"] == "n1"]
        plan = [r["value"] for r in of_type(nodes, "NodePlanned") if r["value"]["node_id"] == "n1"]
        check(reg and "camera" in reg[-1]["capabilities"], "n1 registered with cameras: %s" % reg[-1:])
        check(plan and "capture" in plan[-1]["services"], "n1's plan names capture: %s" % plan[-1:])
        conversion_run(tmp, env, url)
        procs.start("syncd", ["msrs-syncd", "--log", log, "-X", "sync.max_uncertainty_us=2000"], env=env)
        procs.start("collectord", ["msrs-collectord", "--log", log, "-X", "collect.lead_ms=1500"], env=env)
        procs.start("archiver", ["msrs-archiver", "--log", log, "--dir", archive,
                                 "-X", "archive.finalize_timeout_ms=20000"], env=env,
                    stdout=subprocess.DEVNULL)
        procs.start("devsim", ["msrs-devsim", "--url", url, "--devices", "4", "--profile", "lan"], env=env)
        def camera_regs():
            got = [r for r in of_type(tail(db, "devices"), "DeviceRegistered")
                   if r["value"]["device_id"] in ids[4:]]
            return got if len(got) >= 2 else None
        regs = check.wait_for(camera_regs, 20, "the cameras' DeviceRegistered")
        by_id = {r["value"]["device_id"]: r["value"] for r in regs or []}
        check(sorted(by_id) == ["n1.cam-testcam-a", "n1.cam-testcam-b"],
              "two cameras registered (not the odd one): %s" % sorted(by_id))
        fmt = {k: v["streams"][0]["format"] for k, v in by_id.items()}
        check(fmt == {"n1.cam-testcam-a": "h264", "n1.cam-testcam-b": "mjpeg"},
              "YUYV encoded to H.264, MJPEG passed through: %s" % fmt)
        check(all(v["node_id"] == "n1" and v["streams"][0]["rate_hz"] == FPS for v in by_id.values()),
              "devices of node n1 at 30 fps")
        status = [r["value"]["device_id"] for r in of_type(tail(db, "devices"), "DeviceStatus")]
        check(all(d in status for d in ids[4:]), "the cameras' DeviceStatus: %s" % sorted(set(status)))
        err = procs.stderr_of("agent")
        check("offers no format msrs-capture encodes (it offers XRAW" in err and "Odd Camera" in err,
              "the odd camera refused, naming what it offers: %s" % err[-800:])

        # the camera proxy
        check(wait_listening(preview), "camera proxy listening")
        base = "https://127.0.0.1:%d" % preview
        st, _, body = get(base + "/v1/cameras", ctx)
        check(st == 401, "camera proxy without a token: %s %s" % (st, body[:100]))
        tok = [line.split("=", 1)[1].strip() for line in open(conf) if line.startswith("auth.token")][0]
        time.sleep(1.5)
        st, ctype, body = get(base + "/v1/cameras", ctx, tok)
        listed = json.loads(body or b"[]") if st == 200 else []
        check(st == 200 and sorted(c["device_id"] for c in listed) == sorted(by_id),
              "camera list: %s %s" % (st, body[:300]))
        st, ctype, body = get(base + "/v1/cameras/n1.cam-testcam-a.jpg", ctx, tok)
        check(st == 200 and ctype == "image/jpeg" and body[:2] == b"\xff\xd8",
              "a JPEG of camera A: %s %s %d bytes" % (st, ctype, len(body)))
        st, _, _ = get(base + "/v1/cameras/nobody.jpg", ctx, tok)
        check(st == 404, "an unknown camera: 404")

        # the session: 4 phones and 2 cameras
        waiter = subprocess.Popen([os.path.join(BIN, "msrs"), "--log", log, "session", "start", "s1",
                                   "--devices", ",".join(ids), "--min-group", "6", "--duration", "10",
                                   "--wait", "--timeout", "90"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = check.wait_for(lambda: of_type(tail(db, "sessions"), "CollectionStarted"), 60,
                                 "CollectionStarted")
        start_at = started[0]["value"]["start_at_ns"] if started else 0
        time.sleep(max(0, (start_at - time.time_ns()) / 1e9) + 2.0)
        camera_file(cam_b, "Test Camera B", "testcam-b", "MJPG,YUYV", mjpeg=clip, state="unplugged")
        t_unplug = time.time()
        gone = check.wait_for(lambda: [r for r in of_type(tail(db, "devices"), "DeviceDisconnected")
                                       if r["value"]["device_id"] == "n1.cam-testcam-b"], 10,
                              "camera B's DeviceDisconnected")
        check(bool(gone), "unplugged camera B disconnected")
        time.sleep(max(0, 2.0 - (time.time() - t_unplug)))
        camera_file(cam_b, "Test Camera B", "testcam-b", "MJPG,YUYV", mjpeg=clip, state="ok")
        away = time.time() - t_unplug
        camera_file(cam_a, "Test Camera A", "testcam-a", "YUYV", state="stalled")
        time.sleep(1.0)
        camera_file(cam_a, "Test Camera A", "testcam-a", "YUYV", state="ok")
        back = check.wait_for(lambda: len([r for r in of_type(tail(db, "devices"), "DeviceRegistered")
                                           if r["value"]["device_id"] == "n1.cam-testcam-b"]) >= 2, 10,
                              "camera B registered again")
        check(bool(back), "camera B rejoined")
        out, werr = waiter.communicate(timeout=120)
        check(waiter.returncode in (0, 1), "msrs session start --wait ended: rc %s %s" % (waiter.returncode, werr[-300:]))
        stopped = check.wait_for(lambda: of_type(tail(db, "sessions"), "CollectionStopped"), 30,
                                 "CollectionStopped")
        stopped = stopped[0]["value"] if stopped else {"streams": [], "stop_at_ns": 0}
        streams = {(s["device_id"], s["stream_id"]): s for s in stopped["streams"]}
        reported = {(s["device_id"], s["stream_id"]): s for r in of_type(tail(db, "sessions"), "RecordingReport")
                    for s in r["value"]["streams"]}
        ra, rb = reported.get(("n1.cam-testcam-a", "video"), {}), reported.get(("n1.cam-testcam-b", "video"), {})
        # away, plus up to a scan (capture.scan_ms, 1 s) until it is seen again
        check(away * FPS - 6 <= rb.get("gap_samples", 0) <= (away + 1.6) * FPS,
              "camera B's time away is its gap: %s frames for %.2f s away" % (rb.get("gap_samples"), away))
        check(ra.get("gap_samples", 0) >= 0.5 * FPS,
              "camera A's stall is a gap: %s frames" % ra.get("gap_samples"))
        check(stopped.get("complete") is False and
              any("n1.cam-testcam-b" in json.dumps(i) for i in stopped.get("incomplete", [])),
              "the session says it is incomplete, naming camera B: %s" % stopped.get("incomplete"))
        for dev in ("sim-1", "sim-2", "sim-3", "sim-4"):
            check(all(s["gaps"] == 0 for k, s in streams.items() if k[0] == dev), "%s: no gaps" % dev)
        cams_rep = {d: streams.get((d, "video"), {}) for d in ids[4:]}
        check(all(c.get("samples", 0) > 5 * FPS for c in cams_rep.values()),
              "cameras recorded: %s" % {d: c.get("samples") for d, c in cams_rep.items()})
        err = procs.stderr_of("agent")
        check("n1.cam-testcam-a stalled" in err and "frames again" in err, "the stall said: %s" % err[-600:])
        check("n1.cam-testcam-b gone" in err and "unplugged" in err, "the unplug said")

        manifest_path = os.path.join(archive, "s1", "manifest.json")
        check(check.wait_for(lambda: os.path.exists(manifest_path), 60, "the archive"), "archived")
        m = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {"devices": {}}
        for dev, codec in (("n1.cam-testcam-a", "h264"), ("n1.cam-testcam-b", "mjpeg")):
            info = m["devices"].get(dev, {}).get("streams", {}).get("video", {})
            n = info.get("samples", -1)
            check(n == cams_rep[dev].get("samples"), "%s: archived %s frames, reported %s"
                  % (dev, n, cams_rep[dev].get("samples")))
            base = os.path.join(archive, "s1", dev, "video")
            recs = avro_records(base + ".frames.avro") if os.path.exists(base + ".frames.avro") else []
            # 1/30 s apart to the µs; across a gap (a camera plugged back in
            # starts on a new grid) the seq step is the time step rounded
            steps = [((b["device_time_ns"] - a["device_time_ns"]) * FPS / 1e9, b["seq"] - a["seq"])
                     for a, b in zip(recs, recs[1:])]
            bad = [s for s in steps if abs(s[0] - s[1]) > (0.0001 if s[1] == 1 else 0.5)]
            check(recs and not bad, "%s: every seq step is the driver's time step in frames: %s" % (dev, bad[:5]))
            check(recs and recs[0]["keyframe"], "%s: the session's video starts with a keyframe" % dev)
            check(recs and recs[0]["master_time_ns"] >= start_at - 1e6, "%s: first frame after start_at" % dev)
            probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                                    "stream=codec_name,nb_read_frames,start_time,width,height",
                                    "-of", "json", base + ".mkv"], capture_output=True, text=True)
            ps = json.loads(probe.stdout or "{}").get("streams", [{}])[0]
            check(probe.returncode == 0 and ps.get("codec_name") == codec and ps.get("width") == 640,
                  "%s.mkv: %s %s" % (dev, ps, probe.stderr[:200]))
            check(int(ps.get("nb_read_frames", -1)) == n, "%s.mkv: %s frames of %d" % (dev, ps.get("nb_read_frames"), n))
            first = recs[0]["master_time_ns"] / 1e9 if recs else 0
            check(abs(float(ps.get("start_time", 0)) - first) <= 0.0011,
                  "%s.mkv: first PTS %s == first master time %.6f" % (dev, ps.get("start_time"), first))
            check("%s/video.mkv" % dev in m.get("files", {}), "%s.mkv listed in the manifest" % dev)

        r = subprocess.run([os.path.join(BIN, "msrs-replay"), "--log", log, "--compact"], env=env,
                           capture_output=True, text=True)
        st = json.loads(r.stdout or "{}")
        check(r.returncode == 0 and all(d in st.get("devices", {}) for d in ids[4:]),
              "replay folds the cameras as devices")
        # msrs-capture killed: the agent starts it again, and the cameras come back
        alog = procs.stderr_of("agent")
        pids = [int(line.split("(pid ")[1].split(")")[0]) for line in alog.splitlines()
                if "plan: started" in line and "msrs-capture" in line]
        check(len(pids) == 1, "the agent started msrs-capture once: %s" % pids)
        if pids:
            n_regs = len(camera_regs() or [])
            os.kill(pids[0], 9)
            check(check.wait_for(lambda: "killed by signal 9: started again" in procs.stderr_of("agent"),
                                 10, "the restart"), "the agent says msrs-capture was killed")
            check(check.wait_for(lambda: len(camera_regs() or []) >= n_regs + 2, 20,
                                 "the cameras again"), "the cameras registered again after the restart")
        # every camera unplugged for good: the node registers again without
        # "camera", its new plan does not name capture, and capture is stopped
        for name in os.listdir(cams):
            os.rename(os.path.join(cams, name), os.path.join(tmp, "away-" + name))
        check(check.wait_for(lambda: "plan: " in procs.stderr_of("agent") and
                             "msrs-capture stopped" in procs.stderr_of("agent"), 20,
                             "capture stopped by the plan"), "no cameras: the plan stops capture")
        plans = [r["value"] for r in of_type(tail(db, "nodes"), "NodePlanned") if r["value"]["node_id"] == "n1"]
        check(plans and "capture" not in plans[-1]["services"], "the last plan has no capture: %s" % plans[-1:])
    finally:
        stop_all(procs)
    bad = [(p.args[0], p.returncode) for p in procs if p.returncode not in (0, -9, -15)]
    check(not bad, "every process exited cleanly: %s" % bad)
    check("msrs-capture stopped with" not in procs.stderr_of("agent"),
          "msrs-capture, stopped by the agent, exited 0")
    if check.failures:
        for name in ("agent", "supervisor", "collectord", "archiver"):
            print("--- %s:\n%s" % (name, procs.stderr_of(name)[-2500:]))
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
