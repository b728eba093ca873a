"""Helpers shared by the Python tests and benchmarks that drive msrs
processes: a pass/fail counter, free ports, waiting for a listener, a
device that is not ours (device_session), and reading topics through
msrs-tail."""
import calendar
import json
import os
import random
import socket
import subprocess
import time

SRC = os.environ.get("MSRS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("MSRS_BIN_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build", "bin"))


class Checks:
    """Counts checks; prints each failure; ends with 'N passed, N failed'."""

    def __init__(self):
        self.checks = self.failures = 0

    def __call__(self, cond, what):
        self.checks += 1
        if not cond:
            self.failures += 1
            print("FAIL:", what, flush=True)
        return cond

    def wait_for(self, fn, timeout, what):
        """fn()'s first truthy value within timeout seconds; else a failed check."""
        end = time.time() + timeout
        while time.time() < end:
            v = fn()
            if v:
                return v
            time.sleep(0.2)
        self(False, "timed out waiting for " + what)
        return None

    def finish(self):
        print("%d passed, %d failed" % (self.checks - self.failures, self.failures))
        return 1 if self.failures else 0


def stop_all(procs, timeout=20):
    """SIGTERM every process still running, wait for each (SIGKILL after timeout s)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def time_ns(text):
    """ns since the Unix epoch of a record's RFC 3339 "time" (as msrs-tail prints it)."""
    whole, frac = text.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) * 10**9 + int(frac.ljust(9, "0")[:9])


def of_type(records, t):
    """The records (as tail returns them) of record type t ("CollectionStarted")."""
    return [r for r in records if r["type"] == "msrs.events." + t]


def devsim_sent(stats, session, with_bytes=False):
    """What msrs-devsim sent tagged with session ({(device, stream): samples},
    or (samples, bytes)); stats: the --stats file's path, or its contents."""
    if isinstance(stats, str):
        stats = json.load(open(stats)) if os.path.exists(stats) else {}
    return {(d, s): (c["samples"], c["bytes"]) if with_bytes else c["samples"]
            for d, streams in stats.get(session, {}).items() for s, c in streams.items()}


def tagged_counts(streams, with_bytes=False):
    """What the devices tagged with the session, by a RecordingReport's or
    CollectionStopped's StreamCounts: samples + late_stop_samples. A device
    draws its stop line on its own clock at the instant it was sent; the
    agent and the archive at stop_at_ns in master time. A sample within a
    hair of the instant (the clock's fit moved since) is late_stop,
    reported, as is one sent before the device heard a late stop."""
    return {(s["device_id"], s["stream_id"]):
            (s["samples"] + s["late_stop_samples"], s["bytes"] + s["late_stop_bytes"])
            if with_bytes else s["samples"] + s["late_stop_samples"] for s in streams}


_given = set()  # ports free_port handed out in this process


def make_credentials(tmp):
    """A local CA, certificates and lab key in TMP/tls
    (deploy/local/make-credentials.sh); the path of the configuration it
    writes (TLS and device credentials for every process)."""
    return subprocess.run([os.path.join(SRC, "deploy", "local", "make-credentials.sh"),
                           os.path.join(tmp, "tls")],
                          capture_output=True, text=True, check=True).stdout.strip()


def agent_conf(tmp, name, tls):
    """TMP/NAME.conf for an agent that takes devices without credentials:
    on TLS with make_credentials' server certificate (tls: its folder), or
    plain when tls is None. Its path."""
    lines = (["tls.cert = %s/server.pem" % tls, "tls.key = %s/server.key" % tls] if tls
             else ["tls.plain = true"])
    conf = os.path.join(tmp, name + ".conf")
    with open(conf, "w") as f:
        f.write("\n".join(lines + ["auth.required = false"]) + "\n")
    return conf


def start_agent(procs, tmp, name, conf, *args):
    """msrs-agent as procs' "agent-NAME" on its own SQLite log TMP/NAME.db,
    node n1, configured by conf, listening on a free port (not waited for);
    args are more of its arguments. (process, port, log path)."""
    port, db = free_port(), os.path.join(tmp, name + ".db")
    p = procs.start("agent-" + name, ["msrs-agent", "--log", "sqlite:" + db, "--listen",
                                      "127.0.0.1:%d" % port, "--node-id", "n1"] + list(args),
                    env=dict(os.environ, MSRS_CONFIG=conf))
    return p, port, db


async def device_session(url, ctx, seconds, on_message, device_id="phone-1"):
    """A device that is not ours (Python's websockets; ctx: an ssl context
    for wss://, or None): connects with subprotocol msrs.v1, says hello as
    device_id with no streams, then for `seconds` awaits on_message(ws, m)
    for every message the agent sends (m parsed)."""
    import asyncio
    import websockets
    async with websockets.connect(url, ssl=ctx, subprotocols=["msrs.v1"]) as ws:
        await ws.send(json.dumps({"id": "h", "type": "hello", "ts": time.time_ns(),
                                  "device_id": device_id,
                                  "payload": {"name": device_id, "streams": []}}))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                m = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
            except asyncio.TimeoutError:
                continue
            await on_message(ws, m)


def free_port():
    """A port free now, below the kernel's ephemeral range (32768-60999 on
    Debian): a port the kernel hands out could be taken by any process's
    outgoing connection between this check and the service's bind (the
    likely reason deploy_prometheus's gateway once never listened on its
    ops port under CI's -j2)."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        if port in _given:  # handed out already, maybe not bound yet
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            _given.add(port)
            return port
        except OSError:
            continue
        finally:
            s.close()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def wait_listening(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if listening(port):
            return True
        time.sleep(0.05)
    return False


def rss_kb(pid):
    """A process's resident set (VmRSS) in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tail(db, topic, binary=BIN):
    """Every record of topic in the SQLite log db, as msrs-tail prints them."""
    r = subprocess.run([os.path.join(binary, "msrs-tail"), "--log", "sqlite:" + db, "--topic", topic],
                       capture_output=True, text=True)
    return [json.loads(line) for line in r.stdout.splitlines()]


class Procs:
    """The msrs processes of one test: each started by name from BIN with its
    stderr appended to TMP/NAME.log (a restart under the same name goes on
    in the same file). Iterates over every process started (for stop_all)."""

    def __init__(self, tmp, binary=None):
        self.tmp, self.binary, self.all, self.by_name = tmp, binary or BIN, [], {}

    def start(self, name, args, **kw):
        p = subprocess.Popen([os.path.join(self.binary, args[0])] + args[1:],
                             stderr=open(os.path.join(self.tmp, name + ".log"), "a"), **kw)
        self.all.append(p)
        self.by_name[name] = p
        return p

    def stderr_of(self, name):
        return open(os.path.join(self.tmp, name + ".log")).read()

    def alive(self, *names):
        """True if every named process still runs; for each that does not, its
        exit status and the end of its stderr are printed (CI keeps no files)."""
        ok = True
        for name in names:
            rc = self.by_name[name].poll()
            if rc is not None:
                ok = False
                print("%s exited with status %d; its stderr ends:\n%s" %
                      (name, rc, self.stderr_of(name)[-4000:]), flush=True)
        return ok

    def __iter__(self):
        return iter(list(self.all))
