#!/usr/bin/python3
"""A supervisor that has not folded the log to its end says so: GET
/v1/nodes answers 503 "starting" until the registry holds every node the
log has, never a partial registry as the truth (a restarted supervisor
under load once answered an empty registry). The log holds 200 000 node
records, so the fold takes a moment the requests fall into."""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, free_port, stop_all  # noqa: E402

check = Checks()
NODES = 2000
RECORDS = 200000


def get(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/v1/nodes" % port, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except OSError:
        return 0, None


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-ready-")
    log = "sqlite:" + os.path.join(tmp, "msrs.db")
    lines = []
    for i in range(RECORDS):
        n = "n%04d" % (i % NODES)
        if i < NODES:
            lines.append({"type": "NodeRegistered", "value": {"node_id": n, "hostname": "pc"}})
        else:
            lines.append({"type": "NodeHeartbeat", "value": {"node_id": n, "device_count": 0}})
    r = subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "emit", "-"],
                       input="\n".join(json.dumps(x) for x in lines), capture_output=True, text=True)
    check(r.returncode == 0, "emit %d records: %s" % (RECORDS, r.stderr[-300:]))
    port = free_port()
    sup = subprocess.Popen([os.path.join(BIN, "msrs-supervisor"), "--log", log, "--listen",
                            "127.0.0.1:%d" % port, "-X", "discovery.port=0",
                            "-X", "supervisor.ttl_ms=600000"],
                           stderr=subprocess.PIPE, text=True)
    statuses = []
    try:
        end = time.time() + 60
        while time.time() < end:
            s, body = get(port)
            if s == 0:
                time.sleep(0.005)
                continue
            statuses.append(s)
            if s == 503:
                check(body and body.get("error") == "starting", "503 says starting: %r" % body)
                continue
            check(s == 200, "GET /v1/nodes: %d %r" % (s, body))
            got = len(body["nodes"]) if body else -1
            check(got == NODES, "the first 200 answer holds every node: %d of %d" % (got, NODES))
            break
        else:
            check(False, "no 200 answer within 60 s")
        print("answers before the registry was whole: %d x 503, then %s"
              % (statuses.count(503), statuses[-1:] or "nothing"))
    finally:
        stop_all([sup])
        err = sup.stderr.read()
        check(sup.returncode == 0, "supervisor exits 0: %s" % err[-500:])
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
