#!/usr/bin/python3
"""Debian's Prometheus scrapes a running stack (docs/operations.md, "Metrics").

On TLS with credentials (deploy/local/make-credentials.sh): msrs-supervisor,
msrs-agent, msrs-syncd, msrs-collectord, msrs-archiver and msrs-gateway,
each with ops.listen on a port of its own, two simulated devices, and one
2 s session recorded and archived. A real `prometheus` scrapes all six over
HTTPS with a viewer's bearer token (its own tls_config and authorization),
and the figures are read back through its HTTP API. Checked:
- every target is up and says msrs_ready 1;
- the figures are the stack's: 2 devices connected (agent, and syncd's
  pool), a clock uncertainty under 2 ms for each device and a clock age
  under 10 s, one session stopped (collectord) and archived (archiver),
  the agent's ingest bytes and produced records above 0, its log backlog
  reported, every consumer's lag under 1000 records once idle;
- `promtool check metrics` finds nothing to say about each service's text;
- without a token /metrics is 401; /healthz and /readyz answer 200 with it."""
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, Procs, free_port, stop_all, wait_listening  # noqa: E402

check = Checks()
SRC = os.environ.get("MSRS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-prometheus-")
    conf = subprocess.run([os.path.join(SRC, "deploy", "local", "make-credentials.sh"), os.path.join(tmp, "tls")],
                          capture_output=True, text=True, check=True).stdout.strip()
    env = dict(os.environ, MSRS_CONFIG=conf)
    log = "sqlite:" + os.path.join(tmp, "log.db")
    viewer = subprocess.run([os.path.join(BIN, "msrs"), "operators", "token", "prom", "--role", "viewer"],
                            capture_output=True, text=True, env=env).stdout.strip()
    check(viewer.startswith("operator:prom:viewer:"), "a viewer's token: %r" % viewer)
    ca = os.path.join(tmp, "tls", "ca.pem")
    ctx = ssl.create_default_context(cafile=ca)
    ops = {name: free_port() for name in
           ("msrs-supervisor", "msrs-agent", "msrs-syncd", "msrs-collectord", "msrs-archiver", "msrs-gateway")}
    agent_port, sup_port, gw_port, prom_port = free_port(), free_port(), free_port(), free_port()
    procs = Procs(tmp)

    def start(name, args):
        return procs.start(name, [name, "--log", log, "-X", "ops.listen=127.0.0.1:%d" % ops[name]] + args, env=env)

    try:
        start("msrs-supervisor", ["--listen", "127.0.0.1:%d" % sup_port, "-X", "discovery.port=0"])
        start("msrs-agent", ["--listen", "127.0.0.1:%d" % agent_port, "--node-id", "n1",
                             "-X", "sync.interval_ms=1000"])
        check(wait_listening(agent_port), "agent listening")
        start("msrs-syncd", ["-X", "sync.max_uncertainty_us=2000"])
        start("msrs-collectord", [])
        start("msrs-archiver", ["--dir", os.path.join(tmp, "archive")])
        start("msrs-gateway", ["--listen", "127.0.0.1:%d" % gw_port, "-X", "archive.dir=" + os.path.join(tmp, "archive")])
        procs.start("devsim", ["msrs-devsim", "--url", "wss://127.0.0.1:%d/v1/devices" % agent_port,
                               "--devices", "2", "--profile", "lan"], env=env)
        r = subprocess.run([os.path.join(BIN, "msrs"), "--log", log, "session", "start", "p1", "--min-group", "2",
                            "--duration", "2", "--wait", "--timeout", "90"], capture_output=True, text=True,
                           env=env, timeout=120)
        check(r.returncode == 0, "session p1 recorded: %s" % r.stderr[-300:])
        for name, port in ops.items():
            check(wait_listening(port, 20), "%s: ops listening on %d" % (name, port))

        # the endpoints themselves
        url = "https://127.0.0.1:%d" % ops["msrs-agent"]
        try:
            urllib.request.urlopen(url + "/metrics", context=ctx, timeout=5)
            status = 200
        except urllib.error.HTTPError as e:
            status = e.code
        check(status == 401, "/metrics without a token: 401 (got %d)" % status)
        for path in ("/healthz", "/readyz"):
            req = urllib.request.Request(url + path, headers={"Authorization": "Bearer " + viewer})
            check(urllib.request.urlopen(req, context=ctx, timeout=5).status == 200, "%s: 200" % path)
        for name, port in ops.items():
            req = urllib.request.Request("https://127.0.0.1:%d/metrics" % port,
                                         headers={"Authorization": "Bearer " + viewer})
            text = urllib.request.urlopen(req, context=ctx, timeout=5).read()
            lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
            check(lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(),
                  "%s: promtool check metrics: %s %s" % (name, lint.stdout[:300], lint.stderr[:300]))

        # Prometheus itself
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n")
            for name, port in ops.items():
                f.write("  - job_name: %s\n    scheme: https\n    tls_config: {ca_file: %s}\n"
                        "    authorization: {credentials: %s}\n    static_configs: [{targets: ['127.0.0.1:%d']}]\n"
                        % (name, ca, json.dumps(viewer), port))
        procs.start("prometheus", ["/usr/bin/prometheus", "--config.file=" + cfg,
                                   "--storage.tsdb.path=" + os.path.join(tmp, "prom"),
                                   "--web.listen-address=127.0.0.1:%d" % prom_port])

        def query(q):
            u = "http://127.0.0.1:%d/api/v1/query?query=%s" % (prom_port, urllib.parse.quote(q))
            try:
                res = json.load(urllib.request.urlopen(u, timeout=5))
            except (OSError, ValueError):
                return []
            return [(s["metric"], float(s["value"][1])) for s in res.get("data", {}).get("result", [])]

        def value(q, job):
            return next((v for m, v in query(q) if m.get("job") == job), None)

        ups = check.wait_for(lambda: (lambda r: r if len(r) == 6 and all(v == 1 for _, v in r) else None)(query("up")),
                             60, "every target up in Prometheus")
        print("up:", sorted(m["job"] for m, _ in ups or []))
        time.sleep(2.5)  # a scrape after the session's archive
        ready = {m["job"]: v for m, v in query("msrs_ready")}
        check(len(ready) == 6 and all(v == 1 for v in ready.values()), "msrs_ready 1 everywhere: %s" % ready)
        check(value("msrs_agent_devices_connected", "msrs-agent") == 2, "agent: 2 devices connected")
        check(value("msrs_devices_connected", "msrs-syncd") == 2, "syncd's pool: 2 devices connected")
        unc = [(m.get("device"), v) for m, v in query("msrs_device_clock_uncertainty_seconds{job=\"msrs-syncd\"}")]
        check(len(unc) == 2 and all(0 < v < 0.002 for _, v in unc), "clock uncertainty per device < 2 ms: %s" % unc)
        age = [v for m, v in query("msrs_device_clock_age_seconds{job=\"msrs-syncd\"}")]
        check(len(age) == 2 and all(0 <= v < 10 for v in age), "clock age per device < 10 s: %s" % age)
        check(value("msrs_sessions{state=\"stopped\"}", "msrs-collectord") == 1, "collectord: 1 session stopped")
        check(value("msrs_collectord_sessions_stopped_total", "msrs-collectord") == 1, "collectord stopped 1")
        check(value("msrs_archiver_sessions_archived_total", "msrs-archiver") == 1, "archiver: 1 archived")
        check((value("msrs_agent_received_bytes_total", "msrs-agent") or 0) > 0, "agent: ingest bytes > 0")
        check((value("msrs_agent_records_produced_total", "msrs-agent") or 0) > 0, "agent: records produced")
        out = {m.get("topic"): v for m, v in query("msrs_agent_records_out_total")}
        check(out.get("samples", 0) > 0 and out.get("devices", 0) > 0 and out.get("media", 0) == 0,
              "agent: records out per topic (samples, devices; no media): %s" % out)
        arch_in = {m.get("topic"): v for m, v in query("msrs_archiver_records_in_total")}
        check(arch_in.get("msrs.samples", 0) > 0 and arch_in.get("msrs.sessions", 0) > 0,
              "archiver: records in per topic: %s" % arch_in)
        check(value("msrs_agent_log_unacknowledged_records", "msrs-agent") is not None,
              "agent: log backlog reported")
        check(value("msrs_supervisor_leading", "msrs-supervisor") == 1, "the supervisor leads")
        lag = {m["job"]: v for m, v in query("msrs_consumer_lag_records")}
        check(len(lag) == 6 and all(v < 1000 for v in lag.values()), "consumer lag of each, idle: %s" % lag)
        rss = [v for m, v in query("process_resident_memory_bytes")]
        check(len(rss) == 6 and all(v > 1e6 for v in rss), "RSS of each process: %s" % rss)
    finally:
        stop_all(procs)
    if check.failures:
        print("kept", tmp)
    else:
        subprocess.run(["rm", "-rf", tmp])
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
