#!/usr/bin/python3
"""msrs topics create|check against librdkafka's mock cluster (msrs-mockbroker),
as far as the mock goes: it answers Metadata (so topics and partitions are
checked for real) but has no CreateTopics or DescribeConfigs, so configs are
said to be unchecked and creation to have failed — each a FAIL line naming
the topic and why, exit 1, never a silent pass. On SQLite the command says
it is for Kafka (exit 2)."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, Procs, stop_all  # noqa: E402

check = Checks()


def topics(bootstrap, *args, prefix=None):
    extra = ["-X", "topic.prefix=" + prefix] if prefix else []
    return subprocess.run([os.path.join(BIN, "msrs"), "--log", "kafka:" + bootstrap] + extra +
                          ["topics"] + list(args), capture_output=True, text=True, timeout=120)


def lines(r):
    """{topic: (ok, what)} of the command's stdout."""
    out = {}
    for line in r.stdout.splitlines():
        status, topic, what = line.split(None, 2)
        out[topic] = (status == "ok", what)
    return out


def broker(procs, name, *args):
    p = procs.start(name, ["msrs-mockbroker"] + list(args), stdout=subprocess.PIPE, text=True)
    return p.stdout.readline().strip()


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-topics-")
    procs = Procs(tmp)
    catalog = ["msrs." + t for t in ("nodes", "devices", "clock", "sessions", "commands", "presence",
                                     "samples", "media", "leader")]
    try:
        # topics made by msrs-mockbroker from the catalog: partitions as it says
        bs = broker(procs, "broker")
        r = topics(bs, "check", "--timeout", "3")
        got = lines(r)
        check(sorted(got) == sorted(catalog), "one line per catalog topic: %s" % sorted(got))
        check(r.returncode == 1, "check exits 1 when configs cannot be read (%d)" % r.returncode)
        check(all(not ok and what.startswith("configs not checked: DescribeConfigs")
                  for ok, what in got.values()),
              "every topic's partitions pass; its configs are said unchecked, with why: %s" %
              sorted(set(w for _, w in got.values())))
        check("0 of %d topics as the catalog says" % len(catalog) in r.stderr, "the summary: %s" % r.stderr.strip())

        # too few partitions: named per topic, with expected and found
        few = broker(procs, "few", "--partitions", "3")
        got = lines(topics(few, "check", "--timeout", "3"))
        check(got.get("msrs.samples") == (False, "partitions: expected at least 16, found 3"),
              "samples with 3 partitions: %s" % (got.get("msrs.samples"),))
        check(got.get("msrs.presence", (True, ""))[1].startswith("configs not checked"),
              "presence with 3 partitions (the catalog's 1 is a minimum): configs only %s" %
              (got.get("msrs.presence"),))
        check(got.get("msrs.leader", (True, ""))[1].startswith("configs not checked"),
              "the leader topic keeps 1 partition under --partitions: %s" % (got.get("msrs.leader"),))

        # topics that do not exist: create asks the cluster, which refuses
        r = topics(bs, "check", "--timeout", "3", prefix="other.")
        got = lines(r)
        check(all(w == "missing (msrs topics create makes it)" for _, w in got.values()) and
              len(got) == len(catalog), "check names every missing topic: %s" % sorted(set(got.values())))
        r = topics(bs, "create", "--replication-factor", "1", "--timeout", "3", prefix="other.")
        got = lines(r)
        check(r.returncode == 1 and len(got) == len(catalog) and
              all(w.startswith("not created: CreateTopics") for _, w in got.values()),
              "create on the mock (no CreateTopics): each topic not created, with why, exit 1 "
              "(%d %s)" % (r.returncode, sorted(set(got.values()))))

        # wrong use
        for args, want in ((["frob"], "expected create or check"),
                           (["create", "--replication-factor", "0"], "unexpected '--replication-factor'"),
                           (["check", "--timeout", "x"], "unexpected '--timeout'")):
            r = topics(bs, *args)
            check(r.returncode == 2 and want in r.stderr,
                  "topics %s: exit 2, says %r (%d %s)" % (" ".join(args), want, r.returncode,
                                                          r.stderr.strip()))
        r = subprocess.run([os.path.join(BIN, "msrs"), "--log", "sqlite:" + os.path.join(tmp, "x.db"),
                            "topics", "check"], capture_output=True, text=True, timeout=30)
        check(r.returncode == 2 and "for a Kafka cluster" in r.stderr,
              "on SQLite: exit 2, says it is for Kafka (%d %s)" % (r.returncode, r.stderr.strip()))
    finally:
        stop_all(procs)
    sys.exit(check.finish())


if __name__ == "__main__":
    main()
