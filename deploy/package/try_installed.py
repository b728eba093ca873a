#!/usr/bin/python3
"""The installed package's services, started as their systemd units start
them (deploy/package/check.sh step 4; root, package installed).

Each of msrs-supervisor, msrs-agent, msrs-syncd, msrs-collectord,
msrs-archiver and msrs-gateway runs as user msrs with
`--config /etc/msrs/msrs.conf` (as ExecStart says) and NOTIFY_SOCKET; each
must say READY=1 within 60 s, in order. Then two simulated devices join
the agent at its default endpoint with credentials from the lab key the
postinst made, the admin token the postinst made starts a 3 s session with
`msrs session start --wait`, and the archive appears in
/var/lib/msrs/archive, complete. The gateway serves the web app from
/usr/share/msrs/web over TLS verified by the local CA. Everything stops
with SIGTERM and exits 0."""
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

CONF = "/etc/msrs/msrs.conf"
SERVICES = ["msrs-supervisor", "msrs-agent", "msrs-syncd", "msrs-collectord", "msrs-archiver",
            "msrs-gateway"]
failures = 0


def check(cond, what):
    global failures
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures += 1
    return cond


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-installed-")
    os.chmod(tmp, 0o777)
    # as systemd's User=msrs: its home (the agent keeps its node id there)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSRS_")}
    env.update(HOME="/var/lib/msrs", USER="msrs", LOGNAME="msrs")
    token = next(line.split("=", 1)[1].strip() for line in open("/etc/msrs/tls/msrs.conf")
                 if line.startswith("auth.token"))
    procs = []
    ops = {}  # service -> its ops.listen, from its unit
    try:
        for name in SERVICES:
            path = os.path.join(tmp, name + ".sock")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            os.chmod(path, 0o777)
            sock.settimeout(60)
            log = open(os.path.join(tmp, name + ".log"), "w")
            # the unit's Environment= (ops.listen)
            unit_env = dict(line.strip()[len("Environment="):].split("=", 1)
                            for line in open("/lib/systemd/system/%s.service" % name)
                            if line.startswith("Environment="))
            p = subprocess.Popen(["setpriv", "--reuid=msrs", "--regid=msrs", "--init-groups", "/usr/bin/" + name,
                                  "--config", CONF],
                                 cwd="/var/lib/msrs", stderr=log, env=dict(env, NOTIFY_SOCKET=path, **unit_env))
            ops[name] = unit_env.get("MSRS_X", "").split("ops.listen=")[-1]
            procs.append((name, p))
            msg = ""
            try:
                while "READY=1" not in msg:
                    msg = sock.recv(4096).decode()
            except socket.timeout:
                pass
            if not check("READY=1" in msg, "%s (user msrs, %s) is ready: %r" % (name, CONF, msg)):
                print(open(os.path.join(tmp, name + ".log")).read()[-2000:])
                return 1
        sim = subprocess.Popen(["/usr/bin/msrs-devsim", "--config", CONF, "--url",
                                "wss://127.0.0.1:8620/v1/devices", "--devices", "2", "--profile", "lan"],
                               stderr=open(os.path.join(tmp, "devsim.log"), "w"), env=dict(env, HOME="/root"))
        procs.append(("msrs-devsim", sim))
        r = subprocess.run(["setpriv", "--reuid=msrs", "--regid=msrs", "--init-groups", "/usr/bin/msrs",
                            "--config", CONF, "-X", "auth.token=" + token, "session", "start", "pkg-1", "--min-group", "2",
                            "--duration", "3", "--wait", "--timeout", "120"],
                           capture_output=True, text=True, env=env, timeout=180)
        check(r.returncode == 0, "a session recorded through the installed services: rc %d %s"
              % (r.returncode, r.stderr[-500:]))
        manifest = "/var/lib/msrs/archive/pkg-1/manifest.json"
        end = time.time() + 60
        while time.time() < end and not os.path.exists(manifest):
            time.sleep(0.5)
        m = json.load(open(manifest)) if os.path.exists(manifest) else {}
        check(m.get("complete") is True, "archived in %s, complete: %s" % (manifest, m.get("incomplete")))
        ctx = ssl.create_default_context(cafile="/etc/msrs/tls/ca.pem")
        try:
            page = urllib.request.urlopen("https://127.0.0.1:8640/", context=ctx, timeout=10).read().decode()
        except OSError as e:
            page = str(e)
        check("<html" in page.lower(), "the gateway serves the web app from /usr/share/msrs/web: %s" % page[:200])
        for name, listen in ops.items():
            req = urllib.request.Request("https://%s/readyz" % listen, headers={"Authorization": "Bearer " + token})
            try:
                status = urllib.request.urlopen(req, context=ctx, timeout=10).status
            except OSError as e:
                status = str(e)
            check(status == 200, "%s: GET https://%s/readyz as its unit sets it: %s" % (name, listen, status))
    finally:
        for name, p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in procs:
            try:
                rc = p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            check(rc == 0, "%s exits 0 after SIGTERM (%s)" % (name, rc))
    if failures:
        for name in SERVICES + ["devsim"]:
            path = os.path.join(tmp, name + ".log")
            if os.path.exists(path):
                print("== %s\n%s" % (name, open(path).read()[-1500:]))
    else:
        subprocess.run(["rm", "-rf", tmp])
    print("%d failed" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
