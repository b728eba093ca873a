#!/usr/bin/python3
"""Readiness as systemd sees it (deploy/systemd: Type=notify).

Each service is started as systemd starts a Type=notify unit: with
NOTIFY_SOCKET naming a datagram socket this test listens on. Checked, per
service (msrs-supervisor, msrs-agent, msrs-syncd, msrs-collectord,
msrs-archiver, msrs-gateway on one SQLite log that already holds records):
- READY=1 comes, with a STATUS line saying what it waited for;
- not before the service does what ready promises: the listeners accept
  connections by then (agent, supervisor, gateway), and the projection
  services said they caught up with the log;
- after SIGTERM, STOPPING=1 comes and the process exits 0."""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, free_port, listening, stop_all  # noqa: E402

check = Checks()


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-notify-")
    log = "sqlite:" + os.path.join(tmp, "log.db")
    # a log with records in it: a projection has something to catch up with
    for i in range(50):
        r = subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "emit", "NodeRegistered",
                            '{"node_id": "n%d", "hostname": "h", "address": "a:1", "capabilities": [], '
                            '"max_devices": 1, "version": "x"}' % i], capture_output=True, text=True)
        if r.returncode:
            check(False, "emit: %s" % r.stderr)
            break
    services = {
        "msrs-supervisor": (["--listen", "127.0.0.1:%d" % free_port()], "registry caught up"),
        "msrs-agent": (["--listen", "127.0.0.1:%d" % free_port(), "--node-id", "n-notify"], "listening"),
        "msrs-syncd": ([], "caught up"),
        "msrs-collectord": ([], "caught up"),
        "msrs-archiver": (["--dir", os.path.join(tmp, "archive")], "archiving"),
        "msrs-gateway": (["--listen", "127.0.0.1:%d" % free_port(), "-X", "archive.dir=" + tmp], "caught up"),
    }
    procs = []
    try:
        for name, (args, status) in services.items():
            path = os.path.join(tmp, name + ".sock")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            sock.settimeout(30)
            err = open(os.path.join(tmp, name + ".log"), "w")
            p = subprocess.Popen([os.path.join(BIN, name), "--log", log] + args, stderr=err,
                                 env=dict(os.environ, NOTIFY_SOCKET=path))
            procs.append(p)
            got = []
            try:
                while not any("READY=1" in m for m in got):
                    got.append(sock.recv(4096).decode())
            except socket.timeout:
                pass
            ready = next((m for m in got if "READY=1" in m), "")
            check(ready, "%s: READY=1 (got %s)" % (name, got))
            check("STATUS=" in ready and status in ready, "%s: status says '%s': %r" % (name, status, ready))
            if "--listen" in args:
                port = int(args[args.index("--listen") + 1].rsplit(":", 1)[1])
                check(listening(port), "%s: listening when it said ready" % name)
            log_text = open(os.path.join(tmp, name + ".log")).read()
            if name in ("msrs-syncd", "msrs-collectord"):
                check("folding the log" in log_text, "%s: folded the log before ready" % name)
            p.send_signal(signal.SIGTERM)
            msgs = []
            end = time.time() + 20
            try:
                while time.time() < end and not any("STOPPING=1" in m for m in msgs):
                    msgs.append(sock.recv(4096).decode())
            except socket.timeout:
                pass
            check(any("STOPPING=1" in m for m in msgs), "%s: STOPPING=1 after SIGTERM (got %s)" % (name, msgs))
            check(p.wait(20) == 0, "%s exits 0 after SIGTERM" % name)
            sock.close()
    finally:
        stop_all(procs)
    if check.failures:
        print("kept", tmp)
    else:
        subprocess.run(["rm", "-rf", tmp])
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
