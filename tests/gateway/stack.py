"""A local stack for the gateway's tests and benchmark, on TLS with
credentials (deploy/local/make-credentials.sh): msrs-agent, msrs-syncd,
msrs-collectord, msrs-archiver, msrs-devsim and msrs-gateway on one SQLite
log, and operator tokens for a viewer and an operator. Clients that are not
ours (urllib, python3-websockets) talk to the gateway."""
import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Procs, free_port, stop_all, wait_listening  # noqa: E402

import websockets  # noqa: E402

SRC = os.environ.get("MSRS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


class Stack:
    def __init__(self, prefix, devices=4, devsim_args=(), agent_args=(), video=True):
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.conf = subprocess.run([os.path.join(SRC, "deploy", "local", "make-credentials.sh"),
                                    os.path.join(self.tmp, "tls")], capture_output=True, text=True,
                                   check=True).stdout.strip()
        self.env = dict(os.environ, MSRS_CONFIG=self.conf)
        self.ca = os.path.join(self.tmp, "tls", "ca.pem")
        self.ctx = ssl.create_default_context(cafile=self.ca)
        self.db = os.path.join(self.tmp, "log.db")
        self.log = "sqlite:" + self.db
        self.archive = os.path.join(self.tmp, "archive")
        self.procs = Procs(self.tmp)
        self.port, self.gw_port = free_port(), free_port()
        self.base = "https://127.0.0.1:%d" % self.gw_port
        self.tokens = {role: self.msrs("operators", "token", name, "--role", role)
                       for name, role in (("vera", "viewer"), ("olga", "operator"), ("adam", "admin"))}
        self.devices, self.devsim_args, self.agent_args = devices, list(devsim_args), list(agent_args)
        if video:
            self.devsim_args += ["--video", "160x120@15"]

    def msrs(self, *args):
        return subprocess.run([os.path.join(BIN, "msrs"), "--log", self.log] + list(args),
                              env=self.env, capture_output=True, text=True, check=True).stdout.strip()

    def start(self):
        p = self.procs
        sup = free_port()
        p.start("supervisor", ["msrs-supervisor", "--log", self.log, "--listen", "127.0.0.1:%d" % sup,
                               "--node-id", "sup", "-X", "discovery.port=0"], env=self.env)
        if not wait_listening(sup, 20):
            raise RuntimeError("supervisor not listening: " + p.stderr_of("supervisor")[-500:])
        self.agent_cmd = ["msrs-agent", "--log", self.log, "--listen", "127.0.0.1:%d" % self.port,
                          "--node-id", "n1", "--supervisor", "https://127.0.0.1:%d" % sup,
                          "-X", "sync.interval_ms=1000",
                          "-X", "agent.report_delay_ms=1000"] + self.agent_args
        self.start_agent()
        p.start("syncd", ["msrs-syncd", "--log", self.log, "-X", "sync.max_uncertainty_us=5000"],
                env=self.env)
        p.start("collectord", ["msrs-collectord", "--log", self.log, "-X", "collect.lead_ms=1500"],
                env=self.env)
        p.start("archiver", ["msrs-archiver", "--log", self.log, "--dir", self.archive,
                             "-X", "archive.finalize_timeout_ms=20000"], env=self.env,
                stdout=subprocess.DEVNULL)
        p.start("devsim", ["msrs-devsim", "--url", "wss://127.0.0.1:%d/v1/devices" % self.port,
                           "--devices", str(self.devices), "--profile", "lan"] + self.devsim_args,
                env=self.env)
        self.start_gateway()

    def start_agent(self):
        self.procs.start("agent", self.agent_cmd, env=self.env)
        if not wait_listening(self.port, 20):
            raise RuntimeError("agent not listening: " + self.procs.stderr_of("agent")[-500:])

    def start_gateway(self, name="gateway", port=None):
        port = port or self.gw_port
        proc = self.procs.start(name, ["msrs-gateway", "--log", self.log, "--listen",
                                       "127.0.0.1:%d" % port, "-X", "archive.dir=" + self.archive],
                                env=self.env)
        if not wait_listening(port, 20):
            raise RuntimeError("gateway not listening: " + self.procs.stderr_of(name)[-500:])
        base = "https://127.0.0.1:%d" % port
        end = time.time() + 30
        while self.api("GET", "/devices", token=self.tokens["viewer"], base=base)[0] != 200:
            if time.time() > end:  # 503 while it folds the log
                raise RuntimeError("gateway not ready: " + self.procs.stderr_of(name)[-500:])
            time.sleep(0.1)
        return proc

    def stop(self):
        stop_all(self.procs)

    def done(self, code):
        """The test's exit code; its folder is kept (and named) when it failed."""
        if code:
            print("logs in", self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return code

    def request(self, method, path, body=None, token=None, raw=None, headers=None, base=None):
        """(status, headers, body bytes) of one HTTP request to the gateway."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request((base or self.base) + path, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def api(self, method, path, body=None, token=None, base=None):
        """(status, JSON) of an API call below /api/v1."""
        st, _, data = self.request(method, "/api/v1" + path, body, token, base=base)
        try:
            return st, json.loads(data or b"null")
        except ValueError:
            return st, {"raw": data[:200]}

    def feed(self, token, since=None, base=None):
        """An open feed connection (python3-websockets), as a coroutine."""
        url = (base or self.base).replace("https:", "wss:") + "/api/v1/feed"
        if since:
            url += "?since=" + since
        return websockets.connect(url, ssl=self.ctx, subprotocols=["msrs-feed"],
                                  extra_headers={"Authorization": "Bearer " + token},
                                  max_size=64 * 1024 * 1024)


WEB = os.path.join(SRC, "web")


def browser_artifacts():
    """Where a browser test's screenshots go ($MSRS_ARTIFACTS, else
    build/test-artifacts/gateway), made; None (the test skips) without
    Debian's chromium or the web app's npm packages."""
    if not os.path.exists("/usr/bin/chromium") or \
            not os.path.isdir(os.path.join(WEB, "node_modules", "playwright-core")):
        print("SKIP: needs /usr/bin/chromium and web/node_modules (deploy/install-deps.sh)")
        return None
    artifacts = os.environ.get("MSRS_ARTIFACTS") or os.path.join(
        os.environ.get("MSRS_BIN_DIR", os.path.join(SRC, "build", "bin")), "..", "test-artifacts", "gateway")
    os.makedirs(artifacts, exist_ok=True)
    return artifacts


def run(coro):
    return asyncio.get_event_loop().run_until_complete(coro)
