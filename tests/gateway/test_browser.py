#!/usr/bin/python3
"""The web app in a real browser (tests/gateway/browser.mjs: Debian's
Chromium driven by playwright-core) against a real stack on TLS (agent,
syncd, collectord, archiver, 4 devsim devices, msrs-gateway): log in, see
the pool, start a session from the page, watch it record with counts
rising, stop it, open its archive entry; a viewer cannot start; the feed
recovers after the gateway restarts; phone width. This harness owns the
processes and does what the page's script asks (stop or start the gateway,
start a session over REST). Screenshots: $MSRS_ARTIFACTS (default
build/test-artifacts/gateway). Skipped (77) when chromium or the web app's
npm packages are missing."""
import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from stack import WEB, Stack, browser_artifacts  # noqa: E402

def main():
    artifacts = browser_artifacts()
    if not artifacts:
        return 77
    s = Stack("msrs-browser-")
    code = 1
    try:
        s.start()
        env = dict(os.environ, GATEWAY_URL=s.base, GATEWAY_TOKENS=json.dumps(s.tokens),
                   MSRS_WEB_ROOT=WEB, MSRS_ARTIFACTS=artifacts)
        node = subprocess.Popen(["node", os.path.join(os.path.dirname(__file__), "browser.mjs")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for line in node.stdout:
            print(line.rstrip(), flush=True)
            if not line.startswith("DO "):
                continue
            what, answer = line[3:].strip(), "done"
            if what == "stop-gateway":
                gw = s.procs.by_name["gateway"]
                gw.send_signal(signal.SIGTERM)
                gw.wait(20)
            elif what == "start-gateway":
                s.start_gateway()
            elif what == "start-session":
                st, r = s.api("POST", "/sessions", {"device_ids": ["sim-1"], "duration_s": 2},
                              token=s.tokens["operator"])
                answer = r.get("session_id", "refused: %s %s" % (st, r))
            node.stdin.write(answer + "\n")
            node.stdin.flush()
        code = node.wait()
    finally:
        s.stop()
    print("screenshots in", os.path.abspath(artifacts))
    return s.done(code)


if __name__ == "__main__":
    sys.exit(main())
