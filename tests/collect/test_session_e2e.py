#!/usr/bin/python3
"""A recorded session end to end, with real processes on one SQLite log:
msrs-agent, msrs-syncd, msrs-collectord, msrs-archiver and two msrs-devsim
processes (3 devices with MPEG-4 video, 1 with H.264), driven by
`msrs session start --wait`.

Checked, not eyeballed:
- counts sent by devsim == counts in CollectionStopped == counts in the
  archive's manifest == records read back from the Avro files by
  python3-avro == samples in the XDF file read by an independent reader
  (itself checked against XDF files LSL's tools wrote);
- collectord and archiver are killed with SIGKILL mid-session and restarted:
  the session still completes, with nothing lost or duplicated (one
  CollectionStarted, one CollectionStopped, no duplicate seq in the archive);
- one start instant: every sensor stream's first sample is within one
  sample period after start_at, its last before stop_at;
- the video files are what ffprobe reads (codec, packet count), and each
  video's Matroska file has every frame, its first PTS the first frame's
  master time;
- SHA-256 of every file matches the manifest; a second archiver run does not
  archive the session again; XDF timestamps synced with the file's own
  ClockOffsets land on the master clock;
- replay: the state collectord and syncd held at several points (their
  state.file snapshots, taken before, during and after the restart) is what
  `msrs-replay --verify` rebuilds from the log up to the same positions; a
  tampered snapshot is caught and the difference named; `--until` the
  CollectionStarted time gives "recording", 1 ns earlier "synchronized";
- republish: the session re-emitted into a new log (every topic, as fast as
  it goes) folds to the same session state and holds the same records; at
  --speed 4 it takes a quarter of the recorded time."""
import glob
import hashlib
import shutil
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, devsim_sent, free_port, of_type, stop_all, tagged_counts, tail, time_ns, wait_listening  # noqa: E402
import xdfread  # noqa: E402

import avro.datafile  # noqa: E402
import avro.io  # noqa: E402

check = Checks()
DATA = os.path.join(os.path.dirname(__file__), "..", "data", "xdf")


def check_reader_on_lsl_files():
    x = xdfread.read(os.path.join(DATA, "minimal.xdf"))
    names = {s["header"]["name"]: s for s in x["streams"].values()}
    check(len(names["SendDataC"]["time"]) == 9 and names["SendDataC"]["values"][1] == [12, 22, 32],
          "XDF reader: minimal.xdf int16 stream")
    check(names["SendDataString"]["values"][1] == ["Hello"], "XDF reader: minimal.xdf string stream")
    x = xdfread.read(os.path.join(DATA, "empty_streams.xdf"))
    counts = sorted(len(s["time"]) for s in x["streams"].values())
    check(counts == [0, 0, 1, 10], "XDF reader: empty_streams.xdf counts %s" % counts)


def avro_records(path):
    with open(path, "rb") as f:
        return list(avro.datafile.DataFileReader(f, avro.io.DatumReader()))


def replay(*args):
    return subprocess.run([os.path.join(BIN, "msrs-replay")] + list(args), capture_output=True, text=True)


def check_replay(log, db, snapshots, tmp):
    check(len(snapshots) == 5, "5 service snapshots taken: %s" % snapshots)
    positions = []
    for snap in snapshots:
        r = replay("--log", log, "--verify", snap)
        check(r.returncode == 0 and "matches" in r.stderr,
              "replay --verify %s: rc %d %s" % (os.path.basename(snap), r.returncode, r.stderr[-800:]))
        positions.append(json.load(open(snap))["positions"])
    sessions_at = [sum(p.get(t, {}).get("0", 0) for t in p if t.endswith("sessions")) for p in positions]
    check(sessions_at[0] < sessions_at[-1], "the snapshots are at different points of the log: %s" % sessions_at)
    # A snapshot that says something else is caught, and the place named.
    bad = json.load(open(snapshots[2]))
    bad["sessions"]["s1"]["state"] = "bogus"
    path = os.path.join(tmp, "tampered.json")
    json.dump(bad, open(path, "w"))
    r = replay("--log", log, "--verify", path)
    check(r.returncode == 1 and "sessions.s1.state" in r.stderr and "bogus" in r.stderr,
          "tampered snapshot: rc %d %s" % (r.returncode, r.stderr[-400:]))
    r = replay("--log", log, "--verify", os.path.join(tmp, "no-such.json"))
    check(r.returncode == 2 and "no-such.json" in r.stderr, "missing snapshot: rc %d %s" % (r.returncode, r.stderr[-200:]))
    # --until: the state as it was at CollectionStarted, and just before.
    t = time_ns(of_type(tail(db, "sessions"), "CollectionStarted")[0]["time"])
    for when, want in ((t, "recording"), (t - 1, "synchronized")):
        r = replay("--log", log, "--until", str(when), "--compact")
        state = json.loads(r.stdout or "{}").get("sessions", {}).get("s1", {}).get("state")
        check(r.returncode == 0 and state == want, "--until %d: s1 %s, expected %s" % (when, state, want))
    r = replay("--log", log, "--until", "sessions:1", "--compact")
    st = json.loads(r.stdout or "{}")
    check(r.returncode == 0 and st.get("sessions", {}).get("s1", {}).get("state") == "requested",
          "--until sessions:1 (only the request): %s" % st.get("sessions"))


def check_archive_state(log, folder):
    r = replay("--archive", folder, "--compact")
    check(r.returncode == 0, "replay --archive: rc %d %s" % (r.returncode, r.stderr[-300:]))
    a = json.loads(r.stdout or "{}")
    b = json.loads(replay("--log", log, "--compact").stdout or "{}")
    not_archived = ("start_commands", "stop_commands")  # commands are not in an archive
    sa = {k: v for k, v in a.get("sessions", {}).get("s1", {}).items() if k not in not_archived}
    sb = {k: v for k, v in b.get("sessions", {}).get("s1", {}).items() if k not in not_archived}
    check(sa == sb and sa.get("state") == "stopped",
          "the archive folds to the log's session s1; differing keys: %s"
          % [k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k)])
    devs = a.get("devices", {})
    check(sorted(devs) == sorted(b.get("devices", {})) and
          all(d.get("clock", {}).get("rounds", 0) >= 3 and d.get("streams") for d in devs.values()),
          "the archive's devices: registered, with their clock rounds: %s"
          % {k: (d.get("clock", {}).get("rounds"), bool(d.get("streams"))) for k, d in devs.items()})


def check_republish(log, db, tmp):
    again = os.path.join(tmp, "again.db")
    r = replay("--log", log, "--republish", "--to", "sqlite:" + again, "--session", "s1", "--speed", "0")
    check(r.returncode == 0 and "republished" in r.stderr, "republish: rc %d %s" % (r.returncode, r.stderr[-300:]))
    a = json.loads(replay("--log", log, "--compact").stdout or "{}")
    b = json.loads(replay("--log", "sqlite:" + again, "--compact").stdout or "{}")
    check(a.get("sessions", {}).get("s1") == b.get("sessions", {}).get("s1") and b.get("sessions", {}).get("s1"),
          "the republished log folds to the same session s1")
    for topic in ("samples", "media", "sessions"):
        ids = lambda d: sorted(x["id"] for x in tail(d, topic) if x["value"].get("session_id") == "s1")  # noqa: E731
        check(ids(db) == ids(again), "republished %s of s1: the same records (event ids)" % topic)
    sessions = tail(db, "sessions")
    span = (time_ns(sessions[-1]["time"]) - time_ns(sessions[0]["time"])) / 1e9
    t = time.time()
    r = replay("--log", log, "--republish", "--to", "sqlite:" + os.path.join(tmp, "paced.db"),
               "--topics", "sessions", "--speed", "4")
    took = time.time() - t
    # paced: never faster than a quarter; not much slower unless under ASan,
    # whose start-up and folding alone took 6 s on a loaded machine
    slack = 1.0 if not os.environ.get("MSRS_SANITIZED") else 30.0
    check(r.returncode == 0 and span / 4 - 1.0 < took < span / 4 + slack,
          "--speed 4: %.2f s for %.2f s recorded" % (took, span))


def main():
    check_reader_on_lsl_files()
    tmp = tempfile.mkdtemp(prefix="msrs-session-e2e-")
    db, archive = os.path.join(tmp, "log.db"), os.path.join(tmp, "archive")
    log = "sqlite:" + db
    port = free_port()
    procs = []

    def start(args, **kw):
        p = subprocess.Popen([os.path.join(BIN, args[0])] + args[1:], stderr=subprocess.PIPE,
                             text=True, **kw)
        procs.append(p)
        return p

    def stop(p, sig=signal.SIGTERM):
        p.send_signal(sig)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        return p.returncode

    archiver_cmd = ["msrs-archiver", "--log", log, "--dir", archive, "-X", "archive.finalize_timeout_ms=20000"]
    coll_state, sync_state = os.path.join(tmp, "collectord.state.json"), os.path.join(tmp, "syncd.state.json")
    collectord_cmd = ["msrs-collectord", "--log", log, "-X", "collect.lead_ms=800", "-X", "state.file=" + coll_state]
    snapshots = []

    def snapshot(path, name):
        if os.path.exists(path):
            copy = os.path.join(tmp, name)
            shutil.copy(path, copy)
            snapshots.append(copy)
    try:
        start(["msrs-agent", "--log", log, "--listen", "127.0.0.1:%d" % port, "--node-id", "n1",
               "-X", "sync.interval_ms=1000", "-X", "agent.report_delay_ms=500"])
        check(wait_listening(port), "agent listening")
        url = "ws://127.0.0.1:%d/v1/devices" % port
        stats1, stats2 = os.path.join(tmp, "stats1.json"), os.path.join(tmp, "stats2.json")
        sims = [start(["msrs-devsim", "--url", url, "--devices", "3", "--profile", "lan",
                       "--video", "64x48@10", "--stats", stats1]),
                start(["msrs-devsim", "--url", url, "--devices", "1", "--prefix", "cam-", "--seed", "7",
                       "--profile", "lan", "--video", "64x48@10", "--video-codec", "h264",
                       "--stats", stats2])]
        start(["msrs-syncd", "--log", log, "-X", "sync.max_uncertainty_us=2000", "-X", "state.file=" + sync_state])
        collectord = start(collectord_cmd)
        archiver = start(archiver_cmd, stdout=subprocess.PIPE)
        waiter = subprocess.Popen([os.path.join(BIN, "msrs"), "--log", log, "session", "start", "s1",
                                   "--devices", "sim-1,sim-2,sim-3,cam-1", "--min-group", "4",
                                   "--duration", "5", "--label", "subject=01", "--label", "task=rest",
                                   "--wait", "--timeout", "90"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Mid-session: both services die without warning and come back.
        started = check.wait_for(lambda: of_type(tail(db, "sessions"), "CollectionStarted"), 60,
                           "CollectionStarted")
        time.sleep(0.5)
        snapshot(coll_state, "snap-coll-1.json")
        snapshot(sync_state, "snap-sync-1.json")
        time.sleep(1.0)
        collectord.kill()
        archiver.kill()
        collectord.wait()
        archiver.wait()
        time.sleep(0.5)
        collectord = start(collectord_cmd)
        archiver = start(archiver_cmd, stdout=subprocess.PIPE)
        time.sleep(1.0)
        snapshot(coll_state, "snap-coll-2.json")
        out, err = waiter.communicate(timeout=120)
        time.sleep(0.5)
        snapshot(coll_state, "snap-coll-3.json")
        snapshot(sync_state, "snap-sync-3.json")
        check(waiter.returncode == 0, "msrs session start --wait: rc %s %s" % (waiter.returncode, err))
        check("stopped" in out and "sim-1" in out, "summary printed: " + out[:200])

        manifest_path = os.path.join(archive, "s1", "manifest.json")
        check(check.wait_for(lambda: os.path.exists(manifest_path), 40, "the archive"), "archived")
        for p in sims:
            check(stop(p) == 0, "devsim exits cleanly")
        sent = {**devsim_sent(stats1, "s1", True), **devsim_sent(stats2, "s1", True)}
        check(len(sent) == 12, "devsim sent 4 devices x 3 streams in the session: %d" % len(sent))

        sessions = tail(db, "sessions")
        check(len(of_type(sessions, "CollectionStarted")) == 1, "one CollectionStarted")
        stopped = of_type(sessions, "CollectionStopped")
        check(len(stopped) == 1, "one CollectionStopped (after collectord's SIGKILL)")
        stopped = stopped[0]["value"]
        reported = tagged_counts(stopped["streams"], True)
        check(reported == sent, "CollectionStopped counts == devsim's: %s vs %s" % (reported, sent))
        check(all(s["dropped"] == 0 and s["gaps"] == 0 for s in stopped["streams"]), "no drops, no gaps")
        check(stopped.get("complete") is True and stopped.get("incomplete") == [],
              "CollectionStopped complete: %s %s" % (stopped.get("complete"), stopped.get("incomplete")))
        check(abs(stopped["duration_ns"] - 5e9) < 1e6, "duration 5 s: %s" % stopped["duration_ns"])
        start_at = started[0]["value"]["start_at_ns"]
        stop_at = stopped["stop_at_ns"]

        m = json.load(open(manifest_path))
        check(m["complete"] and m["mismatches"] == [] and m["incomplete"] == [],
              "manifest complete: %s %s" % (m["mismatches"], m.get("incomplete")))
        check(m["labels"] == {"subject": "01", "task": "rest"}, "labels kept")
        archived = {(d, s): (c["samples"], c["bytes"]) for d, dev in m["devices"].items()
                    for s, c in dev["streams"].items()}
        check(archived == sent, "manifest counts == devsim's")
        check(all(c["duplicates"] == 0 and c["gaps"] == 0 for dev in m["devices"].values()
                  for c in dev["streams"].values()), "no duplicates or gaps after the archiver's SIGKILL")
        for rel, f in m["files"].items():
            data = open(os.path.join(archive, "s1", rel), "rb").read()
            check(hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"],
                  "sha256 of " + rel)

        # The Avro files, read by python3-avro.
        for (dev, stream), (n, nbytes) in sorted(sent.items()):
            base = os.path.join(archive, "s1", dev, stream)
            if stream == "rgb":
                recs = avro_records(base + ".frames.avro")
                check(len(recs) == n, "%s/%s: %d frames indexed, %d sent" % (dev, stream, len(recs), n))
                seqs = [r["seq"] for r in recs]
                check(seqs == sorted(set(seqs)), "%s video seq unique and ordered" % dev)
                check(recs[0]["keyframe"], "%s video starts with a keyframe" % dev)
                es = glob.glob(base + ".h264" if dev.startswith("cam") else base + ".m4v")
                check(len(es) == 1 and os.path.getsize(es[0]) == nbytes, "%s elementary stream bytes" % dev)
                probe = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-show_entries",
                                        "stream=codec_name,nb_read_packets,width", "-of", "json", es[0]],
                                       capture_output=True, text=True)
                st = json.loads(probe.stdout or "{}").get("streams", [{}])[0]
                check(probe.returncode == 0 and st.get("codec_name") == ("h264" if dev.startswith("cam") else "mpeg4")
                      and st.get("width") == 64, "ffprobe %s: %s %s" % (es and es[0], st, probe.stderr[:200]))
                check(abs(int(st.get("nb_read_packets", 0)) - n) <= 1,
                      "ffprobe counts %s packets of %d" % (st.get("nb_read_packets"), n))
                # the playable file: every frame, at master time (to the ms)
                probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                                        "stream=codec_name,nb_read_frames,start_time", "-of", "json",
                                        base + ".mkv"], capture_output=True, text=True)
                mk = json.loads(probe.stdout or "{}").get("streams", [{}])[0]
                check(probe.returncode == 0 and int(mk.get("nb_read_frames", -1)) == n and
                      abs(float(mk.get("start_time", 0)) - recs[0]["master_time_ns"] / 1e9) <= 0.0011,
                      "%s/rgb.mkv: %s frames of %d, first PTS %s, first master %.6f"
                      % (dev, mk.get("nb_read_frames"), n, mk.get("start_time"), recs[0]["master_time_ns"] / 1e9))
                continue
            recs = avro_records(base + ".avro")
            samples = sum(len(r["device_time_ns"]) for r in recs)
            check(samples == n, "%s/%s.avro: %d samples, %d sent" % (dev, stream, samples, n))
            period = 1e9 / (128 if stream == "gsr" else 100)
            first, last = recs[0]["master_time_ns"][0], recs[-1]["master_time_ns"][-1]
            # One instant: within a sample period (+ the clock estimate's error) of start_at.
            check(start_at - 2e6 <= first <= start_at + period + 2e6,
                  "%s/%s first sample %.3f ms after start_at" % (dev, stream, (first - start_at) / 1e6))
            check(last < stop_at + 2e6, "%s/%s last sample before stop_at" % (dev, stream))

        # XDF: the same samples, with the device clock's offsets.
        x = xdfread.read(os.path.join(archive, "s1", m["xdf"]))
        by_name = {s["header"]["name"]: s for s in x["streams"].values()}
        for (dev, stream), (n, _) in sent.items():
            if stream == "rgb":
                continue
            s = by_name.get("%s/%s" % (dev, stream))
            check(s is not None and len(s["time"]) == n and s["footer"]["sample_count"] == str(n),
                  "XDF %s/%s has %d samples" % (dev, stream, n))
            check(s is not None and len(s["offsets"]) >= 3, "XDF %s/%s has clock offsets" % (dev, stream))
            if s is None:
                continue
            recs = avro_records(os.path.join(archive, "s1", dev, stream + ".avro"))
            master = [t for r in recs for t in r["master_time_ns"]]
            synced = xdfread.synced_times(s)
            worst = max(abs(a * 1e9 - b) for a, b in zip(synced, master))
            check(worst < 1e6, "XDF %s/%s synced times on the master clock within %.0f us" % (dev, stream, worst / 1e3))
            # the values too, read straight from the Avro value (no JSON on the way)
            avro_values = [x for r in recs for x in r["values"]]
            xdf_values = [x for row in s["values"] for x in row]
            check(xdf_values == avro_values,
                  "XDF %s/%s values equal the archive's Avro (%d values)" % (dev, stream, len(avro_values)))
        check(x["boundaries"] >= 1, "XDF boundary chunk")

        check_replay(log, db, snapshots, tmp)
        check_archive_state(log, os.path.join(archive, "s1"))
        check_republish(log, db, tmp)

        # Restarting the archiver from the beginning does not archive s1 twice.
        check(stop(archiver) == 0, "archiver exits cleanly")
        again = start(archiver_cmd[:] + ["-X", "archive.cursor=fresh"], stdout=subprocess.PIPE)
        time.sleep(4)
        check(stop(again) == 0, "second archiver exits cleanly")
        check(sorted(os.listdir(archive)) == [".staging", "s1"], "archive not duplicated: %s" % os.listdir(archive))

        # archive.matroska=false: the same session from the log, its video
        # once (the elementary streams, byte for byte as before), no .mkv
        plain = os.path.join(tmp, "archive-no-mkv")
        again = start(["msrs-archiver", "--log", log, "--dir", plain, "-X", "archive.cursor=no-mkv",
                       "-X", "archive.matroska=false"], stdout=subprocess.PIPE)
        mf = os.path.join(plain, "s1", "manifest.json")
        deadline = time.time() + 60
        while not os.path.exists(mf) and time.time() < deadline:
            time.sleep(0.2)
        check(stop(again) == 0, "archiver with archive.matroska=false exits cleanly")
        m1 = json.load(open(os.path.join(archive, "s1", "manifest.json")))
        m2 = json.load(open(mf)) if os.path.exists(mf) else {"files": {}}
        videos = {f: i for f, i in m1["files"].items() if f.endswith((".m4v", ".h264"))}
        check(m2.get("complete") is True and videos and
              all(m2["files"].get(f, {}).get("sha256") == i["sha256"] for f, i in videos.items()),
              "archive.matroska=false: complete, the same elementary streams (%d)" % len(videos))
        check(not [f for f in m2["files"] if f.endswith(".mkv")] and
              not glob.glob(os.path.join(plain, "s1", "*", "*.mkv")),
              "archive.matroska=false: no .mkv written or listed (with it: %d)"
              % len([f for f in m1["files"] if f.endswith(".mkv")]))
    finally:
        stop_all(procs)
    bad = [(p.args[0], p.returncode) for p in procs if p.returncode not in (0, -9)]
    check(not bad, "every process exited cleanly: %s" % bad)
    for p in procs:
        if p.returncode not in (0, -9):
            print(os.path.basename(p.args[0]), "stderr:", p.stderr.read()[-3000:])
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
