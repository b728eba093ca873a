#!/usr/bin/python3
"""A browser as a device of the pool (web/device.html), in Debian's Chromium
with its fake camera and synthetic motion and orientation events
(tests/gateway/browser_device.mjs), against a real stack on TLS (agent,
syncd, collectord, archiver, 4 devsim devices, msrs-gateway):

- an operator makes an enrollment link (POST /api/v1/devices/enroll: the
  credential from the lab key, the agent the placement rule picks); a
  viewer may not; a bad id is refused;
- the page joins: it proves its credential, registers with three streams
  (H.264 video from WebCodecs, motion, orientation), answers clock probes
  and is synced; it is served cross-origin isolated;
- the agent is killed and restarted: the page reconnects and registers
  again by itself;
- a session of the page and the 4 devsim devices records, and the archive
  holds all five; the page's counts of what it sent into the session equal
  the archive's and CollectionStopped's (no gap, nothing dropped), each
  devsim device's archive counts equal CollectionStopped's, and the page's
  video is a Matroska file ffprobe reads with as many H.264 packets as the
  page sent.
Skipped (77) without chromium or the web app's npm packages."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import Checks, of_type, tail, time_ns  # noqa: E402
from stack import WEB, Stack, browser_artifacts  # noqa: E402

check = Checks()
class Page:
    """The browser process: one command line in, one JSON line out."""

    def __init__(self, env):
        self.p = subprocess.Popen(["node", os.path.join(os.path.dirname(__file__), "browser_device.mjs")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        while True:
            line = self.p.stdout.readline()
            if not line:
                return {"error": "the browser process ended"}
            if line.startswith("FAIL:") or line.startswith("ok:"):
                check(line.startswith("ok:"), line.strip())
                continue
            return json.loads(line)

    def close(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
            self.p.wait(30)
        except (BrokenPipeError, ValueError, subprocess.TimeoutExpired):
            self.p.kill()
            self.p.wait()


def main():
    artifacts = browser_artifacts()
    if not artifacts:
        return 77
    s = Stack("msrs-browser-device-", devices=4)
    sims = ["sim-%d" % i for i in range(1, 5)]
    page = None
    try:
        s.start()
        st, r = s.api("POST", "/devices/enroll", {"device_id": "web-1"}, token=s.tokens["viewer"])
        check(st == 403, "a viewer may not enroll a device: %s" % st)
        st, r = s.api("POST", "/devices/enroll", {"device_id": "../x"}, token=s.tokens["operator"])
        check(st == 400 and "device_id" in r.get("message", ""), "a bad id: 400 (%s)" % r)
        st, enr = s.api("POST", "/devices/enroll", {"device_id": "web-1"}, token=s.tokens["operator"])
        check(st == 200 and enr["node_id"] == "n1" and enr["agent_url"] == "wss://127.0.0.1:%d/v1/devices" % s.port
              and enr["credential"] == s.msrs("devices", "credential", "web-1"),
              "enrollment: n1's endpoint and the lab key's credential: %s" % {k: v for k, v in enr.items() if k != "credential"})
        page = Page(dict(os.environ, MSRS_WEB_ROOT=WEB, MSRS_ARTIFACTS=artifacts))
        r = page.ask("open " + s.base + enr["link"])
        check(r.get("opened"), "the device page opened and joined: %s" % r)

        def synced():
            st, d = s.api("GET", "/devices/web-1", token=s.tokens["viewer"])
            return d if st == 200 and d["connected"] and d["clock"] and len(d["history"]) >= 2 else None
        d = check.wait_for(synced, 40, "web-1 registered and synced")
        if d:
            streams = {x["stream_id"]: x for x in d["streams"]}
            check(sorted(streams) == ["motion", "orientation", "rgb"] and streams["motion"]["channels"] == 6,
                  "web-1's streams: %s" % d["streams"])
            check(abs(d["clock"]["offset_ns"]) < 50e6, "the page's clock is the machine's (offset %.3f ms)" %
                  (d["clock"]["offset_ns"] / 1e6))
        regs = [x["value"] for x in of_type(tail(s.db, "devices"), "DeviceRegistered") if x["value"]["device_id"] == "web-1"]
        check(regs and [x["format"] for x in regs[-1]["streams"] if x["stream_id"] == "rgb"] == ["h264"],
              "registered with H.264 video")
        state = page.ask("state")
        check(state.get("isolated") is True, "the device page is cross-origin isolated (fine-grained timer)")
        check(state.get("probes", 0) > 0, "the page answered clock probes: %s" % state.get("probes"))

        # the agent dies and comes back: the page reconnects by itself
        s.procs.by_name["agent"].send_signal(signal.SIGKILL)
        s.procs.by_name["agent"].wait()
        time.sleep(1)
        restarted_ns = time.time_ns()
        s.start_agent()
        back = check.wait_for(lambda: len([x for x in of_type(tail(s.db, "devices"), "DeviceRegistered")
                                           if x["value"]["device_id"] == "web-1"]) > len(regs), 30,
                              "web-1 registered again after the agent restarted")
        check(back is not None and check.wait_for(lambda: page.ask("state").get("registered"), 20,
                                                  "the page registered again"),
              "the page reconnected by itself")
        # both devices of the session back on the new agent, each with a
        # clock round measured since (a device that registers after the
        # session's StartRecording reached its agent is not in the session:
        # reported missing, not recorded)
        def back_and_measured():
            recs = tail(s.db, "devices")
            rounds = of_type(tail(s.db, "clock"), "ClockOffsetMeasured")
            for dev_id in ["web-1"] + sims:
                reg = [time_ns(x["time"]) for x in of_type(recs, "DeviceRegistered")
                       if x["value"]["device_id"] == dev_id and time_ns(x["time"]) > restarted_ns]
                if not reg or not [x for x in rounds
                                   if x["value"]["device_id"] == dev_id and time_ns(x["time"]) > reg[-1]]:
                    return False
            return True
        check.wait_for(back_and_measured, 40, "web-1 and sim-1..4 registered again and measured")

        # a session of the page and the four devsim devices
        st, r = s.api("POST", "/sessions", {"session_id": "bd-1", "device_ids": ["web-1"] + sims,
                                            "min_group": 5, "duration_s": 6,
                                            "labels": {"subject": "02", "task": "walk"}}, token=s.tokens["operator"])
        check(st == 202, "session bd-1 requested: %s %s" % (st, r))
        x = check.wait_for(lambda: (lambda b: b if b.get("state") == "stopped" else None)(
            s.api("GET", "/sessions/bd-1", token=s.tokens["viewer"])[1]), 60, "bd-1 stopped")
        page.ask("shot device-recorded")
        state = page.ask("state")
        sent = {k: v["inSessions"].get("bd-1", 0) for k, v in state.get("sent", {}).items()}
        check(all(v > 0 for v in sent.values()) and len(sent) == 3, "the page sent into bd-1: %s" % sent)
        reported = {st_["stream_id"]: st_ for st_ in (x or {}).get("streams", []) if st_["device_id"] == "web-1"}
        check({k: v["samples"] for k, v in reported.items()} == sent,
              "CollectionStopped counts == what the page sent: %s vs %s" %
              ({k: v["samples"] for k, v in reported.items()}, sent))
        check(all(v["gaps"] == 0 and v["dropped"] == 0 for v in reported.values()), "no gaps, nothing dropped")
        check(x and x.get("complete") is True, "bd-1 complete: %s" % (x or {}).get("incomplete"))
        m = check.wait_for(lambda: (lambda r: r[1] if r[0] == 200 else None)(
            s.api("GET", "/archives/bd-1", token=s.tokens["viewer"])), 40, "bd-1 archived")
        if m:
            check(sorted(m["devices"]) == sorted(["web-1"] + sims),
                  "the archive holds all five devices: %s" % sorted(m["devices"]))
            arch = {k: v["samples"] for k, v in m["devices"]["web-1"]["streams"].items()}
            check(arch == sent, "the archive holds what the page sent: %s" % arch)
            for sim in sims:
                rep = {st_["stream_id"]: st_["samples"] for st_ in (x or {}).get("streams", [])
                       if st_["device_id"] == sim}
                got = {k: v["samples"] for k, v in m["devices"].get(sim, {}).get("streams", {}).items()}
                check(got and all(v > 0 for v in got.values()) and got == rep,
                      "%s: the archive holds what CollectionStopped counts: %s vs %s" % (sim, got, rep))
            mkv = os.path.join(s.archive, "bd-1", "web-1", "rgb.mkv")
            probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
                                    "-show_entries", "stream=codec_name,nb_read_packets", "-of", "json", mkv],
                                   capture_output=True, text=True)
            info = (json.loads(probe.stdout or "{}").get("streams") or [{}])[0]
            check(info.get("codec_name") == "h264" and int(info.get("nb_read_packets", 0)) == sent.get("rgb"),
                  "web-1/rgb.mkv: H.264, %s packets (the page sent %s): %s" %
                  (info.get("nb_read_packets"), sent.get("rgb"), probe.stderr[-200:]))
        check(not state.get("errors"), "the page said no error: %s" % state.get("errors"))
    finally:
        if page:
            page.close()
        s.stop()
    return s.done(check.finish())


if __name__ == "__main__":
    sys.exit(main())
