#!/usr/bin/python3
"""msrs-gateway from clients that are not ours (urllib over TLS, Debian's
python3-websockets) against a real stack on one SQLite log (agent, syncd,
collectord, archiver, 4 devsim devices):

- auth: no token 401, a viewer reads, a node's or a forged token 401, login
  sets an HttpOnly Secure SameSite=Strict cookie that then works, logout
  clears it; a viewer cannot start, stop or sync (403, nothing on the log);
- the pool: 4 devices connected, with clock offset, uncertainty, drift,
  battery; the feed's snapshot holds the same;
- a session started with POST /sessions (CollectionRequested with the
  operator as requested_by and the BIDS labels) goes requested ->
  synchronized -> recording -> stopped in the feed, with live counts that
  rise while it records; its counts in GET /sessions/ID equal the log's
  CollectionStopped; the archive is listed, its manifest served, and a file
  downloaded has the manifest's SHA-256; a session without duration stops
  on POST /sessions/ID/stop; POST /sync puts a SyncNow on the log;
- feed delay: every change arrives within 1 s of its newest record's time;
- reconnect: since=EPOCH:REV of this gateway gets the missed changes (no
  snapshot), another epoch (a restarted gateway) a snapshot; a second
  gateway on the same log serves the same sessions;
- bad input gets a clear error and the gateway keeps serving: malformed
  JSON, a body over 64 KiB, an unknown device, a bad BIDS label, an existing
  session id, PUT, path traversal in files and archives, an unknown route,
  a feed without a token;
- alerts: devices that disconnect, a node that slows its devices down (its
  heartbeat says so) and then expires are alerted in the feed."""
import asyncio
import hashlib
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import Checks, of_type, tail  # noqa: E402
from stack import Stack, run  # noqa: E402

check = Checks()
DEVICES = ["sim-1", "sim-2", "sim-3", "sim-4"]


def auth(s):
    st, body = s.api("GET", "/me")
    check(st == 401 and "token" in body.get("message", ""), "no token: 401 naming what to send: %s" % body)
    st, body = s.api("GET", "/me", token=s.tokens["viewer"])
    check(st == 200 and body["name"] == "vera" and body["role"] == "viewer", "viewer: %s %s" % (st, body))
    forged = s.tokens["operator"][:-4] + "0000"
    st, body = s.api("GET", "/devices", token=forged)
    check(st == 401, "a forged token: 401 (%s)" % body)
    node = s.msrs("nodes", "token", "n1")
    st, body = s.api("GET", "/devices", token=node)
    check(st == 401 and "operator" in body.get("message", ""), "a node's token: 401 (%s)" % body)
    st, hdrs, data = s.request("POST", "/api/v1/login", {"token": s.tokens["viewer"]})
    cookie = hdrs.get("Set-Cookie", "")
    check(st == 200 and "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Strict" in cookie,
          "login: 200 and an HttpOnly Secure SameSite=Strict cookie: %s" % cookie)
    jar = cookie.split(";")[0]
    st, _, data = s.request("GET", "/api/v1/me", headers={"Cookie": jar})
    check(st == 200 and json.loads(data)["name"] == "vera", "the cookie authenticates: %s" % data)
    st, hdrs, _ = s.request("POST", "/api/v1/login", {"token": forged})
    check(st == 401 and not hdrs.get("Set-Cookie"), "login with a forged token: 401, no cookie")
    st, hdrs, _ = s.request("POST", "/api/v1/logout", {}, headers={"Cookie": jar})
    check(st == 200 and "Max-Age=0" in hdrs.get("Set-Cookie", ""), "logout clears the cookie")
    st, hdrs, data = s.request("GET", "/")
    check(st == 200 and b"<!doctype html>" in data.lower() and
          "default-src 'self'" in hdrs.get("Content-Security-Policy", "") and
          hdrs.get("X-Content-Type-Options") == "nosniff", "the page, with its security headers")
    n = len(tail(s.db, "sessions"))
    for path, body in (("/sessions", {"duration_s": 1}), ("/sessions/x/stop", {}), ("/sync", {})):
        st, r = s.api("POST", path, body, token=s.tokens["viewer"])
        check(st == 403 and "operator" in r.get("message", ""), "viewer POST %s: 403 (%s)" % (path, r))
    check(len(tail(s.db, "sessions")) == n and not of_type(tail(s.db, "commands"), "SyncNow"),
          "nothing a viewer asked reached the log")


def pool(s):
    def synced():
        st, body = s.api("GET", "/devices", token=s.tokens["viewer"])
        ok = st == 200 and all(d in body and body[d]["connected"] and body[d]["clock"] and
                               len(body[d]["history"]) >= 2 for d in DEVICES)
        return body if ok else None
    devices = check.wait_for(synced, 30, "4 devices connected and synced in GET /devices")
    if devices:
        d = devices["sim-1"]
        check(d["node_id"] == "n1" and d["battery"] is not None and
              abs(d["clock"]["offset_ns"]) > 0 and d["clock"]["uncertainty_ns"] > 0 and
              "drift_ppm" in d["clock"] and [st["stream_id"] for st in d["streams"]] == ["gsr", "imu", "rgb"],
              "a device: node, battery, clock offset/uncertainty/drift, streams: %s" % json.dumps(d)[:400])
    st, nodes = s.api("GET", "/nodes", token=s.tokens["viewer"])
    n1 = nodes.get("n1", {}) if st == 200 else {}
    check(n1.get("state") == "up" and n1.get("device_count") == 4 and n1.get("cpu_cores", 0) > 0,
          "GET /nodes: n1 up with its 4 devices: %s" % json.dumps(n1)[:300])

    async def snap():
        async with s.feed(s.tokens["viewer"]) as ws:
            return json.loads(await ws.recv())
    m = run(snap())
    check(m["type"] == "snapshot" and m["caught_up"] and sorted(m["devices"]) == DEVICES,
          "feed snapshot: %s %s" % (m["type"], sorted(m["devices"])))


async def watch_session(s, sid, until_state, timeout, seen):
    """Reads the feed until session sid is in until_state: each state seen,
    its live samples over time, and each change's delay (receipt - newest
    record time)."""
    async with s.feed(s.tokens["viewer"]) as ws:
        end = time.time() + timeout
        while time.time() < end:
            try:
                m = json.loads(await asyncio.wait_for(ws.recv(), end - time.time()))
            except asyncio.TimeoutError:
                break
            now = time.time_ns()
            if m["type"] == "change" and m.get("newest_ns"):
                seen["delays"].append((now - m["newest_ns"]) / 1e9)
            x = m.get("sessions", {}).get(sid)
            if not x:
                continue
            if not seen["states"] or seen["states"][-1] != x["state"]:
                seen["states"].append(x["state"])
            if x.get("live"):
                seen["live"].append(sum(v["samples"] for v in x["live"].values()))
            if x["state"] == until_state:
                return x
    return None


def session(s):
    seen = {"states": [], "live": [], "delays": []}
    req = {"session_id": "web-1", "device_ids": DEVICES, "min_group": 4, "duration_s": 6,
           "labels": {"subject": "07", "task": "rest", "run": "2"}}
    st, r = s.api("POST", "/sessions", req, token=s.tokens["operator"])
    check(st == 202 and r["session_id"] == "web-1" and r["requested_by"] == "olga", "start: %s %s" % (st, r))
    x = run(watch_session(s, "web-1", "stopped", 60, seen))
    check(x is not None, "web-1 stopped within 60 s: states %s" % seen["states"])
    # in order; a state that lasted less than a feed period may be folded
    # into the next change (its time is in the session all the same)
    order = ["requested", "synchronized", "recording", "stopping", "stopped"]
    idx = [order.index(st) for st in seen["states"]]
    check(idx == sorted(idx) and seen["states"][-1] == "stopped" and "recording" in seen["states"] and
          x and x["requested_at_ns"] < x["sync"]["at_ns"] <= x["start_at_ns"],
          "the feed showed the states in order, each with its time: %s" % seen["states"])
    live = seen["live"]
    check(len(live) >= 3 and live[-1] > live[0] and all(b >= a for a, b in zip(live, live[1:])),
          "live counts rose while recording: %s" % live[:12])
    check(seen["delays"] and max(seen["delays"]) < 1.0,
          "every change within 1 s of its newest record: max %.3f s over %d changes" %
          (max(seen["delays"] or [9]), len(seen["delays"])))
    req_rec = [r["value"] for r in of_type(tail(s.db, "sessions"), "CollectionRequested")
               if r["value"]["session_id"] == "web-1"]
    check(req_rec and req_rec[0]["requested_by"] == "olga" and req_rec[0]["labels"]["subject"] == "07" and
          req_rec[0]["duration_ms"] == 6000, "CollectionRequested on the log: %s" % req_rec)
    stopped = [r["value"] for r in of_type(tail(s.db, "sessions"), "CollectionStopped")
               if r["value"]["session_id"] == "web-1"]
    st, detail = s.api("GET", "/sessions/web-1", token=s.tokens["viewer"])
    log_counts = sorted((v["device_id"], v["stream_id"], v["samples"]) for v in stopped[0]["streams"]) if stopped else []
    api_counts = sorted((v["device_id"], v["stream_id"], v["samples"]) for v in detail.get("streams", []))
    check(st == 200 and log_counts and api_counts == log_counts and len(api_counts) == 12,
          "GET /sessions/web-1 counts == CollectionStopped: %s" % api_counts[:3])
    check(detail.get("complete") is True and detail.get("incomplete") == [], "web-1 complete")

    def archived():
        st, a = s.api("GET", "/archives", token=s.tokens["viewer"])
        return [x for x in a if x["name"] == "web-1"] if st == 200 else None
    a = check.wait_for(archived, 40, "web-1 in GET /archives")
    st, m = s.api("GET", "/archives/web-1", token=s.tokens["viewer"])
    check(st == 200 and m["session_id"] == "web-1" and m["xdf"] == "sub-07_task-rest_run-2.xdf",
          "the manifest, XDF named from the labels: %s" % m.get("xdf"))
    if st == 200:
        name = m["xdf"]
        st, hdrs, data = s.request("GET", "/api/v1/archives/web-1/files/" + name,
                                   token=s.tokens["viewer"])
        check(st == 200 and hashlib.sha256(data).hexdigest() == m["files"][name]["sha256"],
              "%s downloaded: its SHA-256 is the manifest's (%d bytes)" % (name, len(data)))
        mkv = [f for f in m["files"] if f.endswith(".mkv")]
        st, hdrs, data = s.request("GET", "/api/v1/archives/web-1/files/" + mkv[0], token=s.tokens["viewer"])
        check(st == 200 and hdrs.get("Content-Type") == "video/x-matroska" and
              hdrs.get("Content-Disposition") == "attachment" and
              hashlib.sha256(data).hexdigest() == m["files"][mkv[0]]["sha256"], "%s downloaded" % mkv[0])
    if a:
        check(a[0]["complete"] is True and a[0]["files"] == len(m.get("files", {})), "archive listed: %s" % a[0])

    # until stopped
    st, r = s.api("POST", "/sessions", {"device_ids": ["sim-1", "sim-2"]}, token=s.tokens["admin"])
    sid = r.get("session_id", "")
    check(st == 202 and sid.startswith("ses-"), "a session with an id made from the time: %s" % r)
    st, r2 = s.api("POST", "/sessions", {"session_id": sid}, token=s.tokens["operator"])
    check(st == 409 and "exists" in r2.get("message", ""), "the same id again: 409 (%s)" % r2)
    rec = check.wait_for(lambda: s.api("GET", "/sessions/" + sid, token=s.tokens["viewer"])[1].get("state") == "recording",
                         40, sid + " recording")
    if rec:
        st, r = s.api("POST", "/sessions/%s/stop" % sid, {"reason": "enough"}, token=s.tokens["operator"])
        check(st == 202, "stop: %s %s" % (st, r))
        x = check.wait_for(lambda: (lambda b: b if b.get("state") == "stopped" else None)(
            s.api("GET", "/sessions/" + sid, token=s.tokens["viewer"])[1]), 40, sid + " stopped")
        req_stop = [v["value"] for v in of_type(tail(s.db, "sessions"), "CollectionStopRequested")
                    if v["value"]["session_id"] == sid]
        check(x and req_stop and req_stop[0]["requested_by"] == "olga" and req_stop[0]["reason"] == "enough",
              "CollectionStopRequested by olga: %s" % req_stop)
        st, r = s.api("POST", "/sessions/%s/stop" % sid, {}, token=s.tokens["operator"])
        check(st == 409, "stopping a stopped session: 409 (%s)" % r)
    st, r = s.api("POST", "/sync", {"device_ids": ["sim-3"]}, token=s.tokens["operator"])
    syncs = [v["value"] for v in of_type(tail(s.db, "commands"), "SyncNow")]
    check(st == 202 and syncs and syncs[-1]["node_id"] == "n1" and syncs[-1]["device_ids"] == ["sim-3"] and
          "olga" in syncs[-1]["reason"], "POST /sync: a SyncNow for n1's sim-3: %s" % syncs[-1:])


def bad_input(s):
    op = s.tokens["operator"]
    st, _, data = s.request("POST", "/api/v1/sessions", raw=b'{"device_ids": [', token=op)
    check(st == 400 and b"JSON" in data, "malformed JSON: 400 (%s)" % data[:120])
    st, _, data = s.request("POST", "/api/v1/sessions", raw=b"x" * 70000, token=op)
    check(st == 413, "a body over 64 KiB: 413 (%s)" % data[:80])
    st, r = s.api("POST", "/sessions", {"device_ids": ["sim-1", "nobody"]}, token=op)
    check(st == 400 and "device_ids[1]" in r["message"] and "nobody" in r["message"],
          "an unknown device: 400 naming it (%s)" % r)
    st, r = s.api("POST", "/sessions", {"labels": {"subject": "../x"}}, token=op)
    check(st == 400 and "labels.subject" in r["message"], "a bad BIDS label: 400 (%s)" % r)
    st, r = s.api("POST", "/sessions", {"duration_s": "ten"}, token=op)
    check(st == 400 and "duration_s" in r["message"], "duration as a string: 400 (%s)" % r)
    st, _, _ = s.request("PUT", "/api/v1/sessions", {}, token=op)
    check(st == 405, "PUT: 405")
    for path in ("/../../etc/passwd", "/js/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd"):
        st, _, data = s.request("GET", path)
        check(st == 404 and b"root:" not in data, "%s: 404" % path)
    st, _, data = s.request("GET", "/api/v1/archives/web-1/files/../../../etc/passwd", token=op)
    check(st == 404 and b"root:" not in data, "traversal below an archive: 404")
    st, r = s.api("GET", "/archives/web-1/files/sim-1/nothing.avro", token=op)
    check(st == 404 and "manifest" in r["message"], "a file the manifest does not list: 404 (%s)" % r)
    st, r = s.api("GET", "/nothing", token=op)
    check(st == 404, "an unknown route: 404")
    st, r = s.api("GET", "/sessionsXYZ", token=op)
    check(st == 404, "a route with trailing text: 404")
    for path in ("/package.json", "/node_modules/uplot/package.json", "/vendor/uplot/package.json",
                 "/.git/config", "/js/../package.json"):
        st, _, _ = s.request("GET", path)
        check(st == 404, "%s: not served (only the web app's own files)" % path)
    # what a POST must be before its body is read
    st, _, data = s.request("POST", "/api/v1/sessions", raw=b"{}", token=op,
                            headers={"Content-Type": "text/plain"})
    check(st == 415, "a POST that is not JSON: 415 (%s)" % data[:80])
    st, _, data = s.request("POST", "/api/v1/sessions", {}, token=op,
                            headers={"Origin": "https://evil.example"})
    check(st == 403, "a POST from another origin: 403 (%s)" % data[:80])
    st, _, data = s.request("POST", "/api/v1/sessions", {})
    check(st == 401, "a POST without a token: 401 before its body (%s)" % data[:80])
    st, _, data = s.request("POST", "/api/v1/sessions", {"duration_s": "x"}, token=op,
                            headers={"Origin": s.base})
    check(st == 400 and b"duration_s" in data,
          "a POST from the gateway's own origin reaches the API: %s %s" % (st, data[:80]))

    async def no_token():
        import websockets
        url = s.base.replace("https:", "wss:") + "/api/v1/feed"
        try:
            async with websockets.connect(url, ssl=s.ctx, subprotocols=["msrs-feed"]):
                return "connected"
        except Exception as e:  # noqa: BLE001
            return repr(e)
    check(run(no_token()) != "connected", "a feed without a token is refused")

    async def other_origin():
        import websockets
        url = s.base.replace("https:", "wss:") + "/api/v1/feed"
        try:
            async with websockets.connect(url, ssl=s.ctx, subprotocols=["msrs-feed"], origin="https://evil.example",
                                          extra_headers={"Authorization": "Bearer " + op}):
                return "connected"
        except Exception as e:  # noqa: BLE001
            return repr(e)
    check(run(other_origin()) != "connected", "a feed from another origin is refused")
    st, _ = s.api("GET", "/me", token=s.tokens["viewer"])
    check(st == 200, "the gateway still serves after all that")


def reconnect(s):
    async def first_and_rev(since=None):
        async with s.feed(s.tokens["viewer"], since) as ws:
            m = json.loads(await ws.recv())
            return m
    m = run(first_and_rev())
    epoch, rev = m["epoch"], m["rev"]
    # changes happen meanwhile (clock rounds every second while windows fill)
    check.wait_for(lambda: run(first_and_rev())["rev"] > rev + 2, 15, "new changes after rev %d" % rev)
    m2 = run(first_and_rev("%s:%d" % (epoch, rev)))
    check(m2["type"] == "change" and m2["rev"] == rev + 1,
          "since=EPOCH:%d of this gateway: the next change, not a snapshot (%s %s)" % (rev, m2["type"], m2["rev"]))
    m3 = run(first_and_rev("deadbeef:%d" % rev))
    check(m3["type"] == "snapshot", "another epoch: a snapshot")
    # a second gateway on the same log serves the same sessions
    from msrstest import free_port
    port2 = free_port()
    s.start_gateway("gateway2", port2)
    base2 = "https://127.0.0.1:%d" % port2
    st1, a = s.api("GET", "/sessions", token=s.tokens["viewer"])
    st2, b = check.wait_for(lambda: (lambda r: r if r[0] == 200 else None)(
        s.api("GET", "/sessions", token=s.tokens["viewer"], base=base2)), 20, "gateway2 ready") or (0, {})
    strip = lambda d: {k: {f: v for f, v in x.items() if f != "live"} for k, x in d.items()}  # noqa: E731
    check(st2 == 200 and strip(a) == strip(b), "a second gateway on the log: the same sessions")
    # a restarted gateway: the page's old since gets a snapshot
    gw = s.procs.by_name["gateway"]
    gw.send_signal(signal.SIGTERM)
    check(gw.wait(20) == 0, "gateway stops on SIGTERM, exit 0")
    err = s.procs.stderr_of("gateway")
    check("stopped:" in err and "requests" in err, "it said what it did: %s" % err.strip().splitlines()[-1:])
    s.start_gateway()
    m4 = run(first_and_rev("%s:%d" % (epoch, rev)))
    check(m4["type"] == "snapshot" and m4["epoch"] != epoch, "after a restart: a snapshot of a new epoch")


def alerts(s):
    s.procs.by_name["devsim"].send_signal(signal.SIGKILL)

    async def until_alerts():
        async with s.feed(s.tokens["viewer"]) as ws:
            end = time.time() + 30
            while time.time() < end:
                m = json.loads(await asyncio.wait_for(ws.recv(), 30))
                got = {a["id"] for a in m.get("alerts", []) if a["kind"] == "device_disconnected"}
                if set(DEVICES) <= got:
                    return m["alerts"]
        return None
    a = run(until_alerts())
    check(a is not None, "the feed alerts the 4 devices disconnected: %s" % (a or [])[:2])
    hb = [r["value"] for r in of_type(tail(s.db, "nodes"), "NodeHeartbeat") if r["value"]["node_id"] == "n1"]
    check(hb and "slowing_devices" in hb[-1] and "log_backlog_bytes" in hb[-1],
          "the agent's heartbeats say whether it slows its devices: %s" % (hb[-1:] or [{}])[0].get("slowing_devices"))
    # a node that slows its devices, then goes silent: alerted, then expired
    s.msrs("emit", "NodeRegistered", json.dumps({"node_id": "n9", "address": "127.0.0.1:1"}))
    s.msrs("emit", "NodeHeartbeat", json.dumps({"node_id": "n9", "slowing_devices": True,
                                                "log_backlog_bytes": 5000000}))

    async def until_kind(kind, node, timeout):
        async with s.feed(s.tokens["viewer"]) as ws:
            end = time.time() + timeout
            while time.time() < end:
                m = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                hit = [x for x in m.get("alerts", []) if x["kind"] == kind and x["id"] == node]
                if hit:
                    return hit[0]
        return None
    a = run(until_kind("devices_slowed", "n9", 10))
    check(a and "5.0 MB" in a["message"], "a node slowing its devices is alerted: %s" % a)
    a = run(until_kind("node_expired", "n9", 20))
    check(a is not None, "then, silent past its TTL, expired: %s" % a)


def main():
    s = Stack("msrs-gateway-")
    try:
        s.start()
        auth(s)
        pool(s)
        session(s)
        bad_input(s)
        reconnect(s)
        alerts(s)
    finally:
        s.stop()
    for name in ("gateway", "gateway2"):
        err = s.procs.stderr_of(name) if os.path.exists(os.path.join(s.tmp, name + ".log")) else ""
        check("ERROR" not in err and "AddressSanitizer" not in err, "%s: no sanitizer report" % name)
    return s.done(check.finish())


if __name__ == "__main__":
    sys.exit(main())
