#!/usr/bin/python3
"""The worked examples of docs/topics.md ("Reading the topics") run as
written: docs/examples/read_kafka.py (python3-confluent-kafka + python3-avro,
no msrs code) reads records msrs wrote to a Kafka cluster (msrs-mockbroker),
and docs/examples/session_times.mjs (Node.js through msrs-tail
--json-ns-strings) reads a SQLite log; both keep ns exact."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, Procs, stop_all  # noqa: E402

SRC = os.environ["MSRS_SOURCE_DIR"]
EXAMPLES = os.path.join(SRC, "docs", "examples")
check = Checks()
START = 1795347002000000123  # not a double: 2^53 < START, and START % 256 != 0
STOP = START + 5000000001


def records():
    fx = json.load(open(os.path.join(SRC, "tests", "data", "records.json")))["records"]
    started = dict(fx["CollectionStarted"], session_id="s-ex", start_at_ns=START)
    stopped = dict(fx["CollectionStopped"], session_id="s-ex", stop_at_ns=STOP,
                   duration_ns=STOP - START)
    return [("CollectionStarted", started), ("CollectionStopped", stopped)]


def emit(uri):
    for t, v in records():
        r = subprocess.run([os.path.join(BIN, "msrs"), "--log", uri, "emit", t, json.dumps(v)],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, "msrs emit %s on %s: %s" % (t, uri, r.stderr.strip()))


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-examples-")
    procs = Procs(tmp)
    try:
        mb = procs.start("broker", ["msrs-mockbroker"], stdout=subprocess.PIPE, text=True)
        bs = mb.stdout.readline().strip()
        emit("kafka:" + bs)
        r = subprocess.run(["/usr/bin/python3", os.path.join(EXAMPLES, "read_kafka.py"), bs,
                            "sessions"], capture_output=True, text=True, timeout=120)
        check(r.returncode == 0, "read_kafka.py exits 0: %s" % r.stderr.strip()[-300:])
        got = [json.loads(line) for line in r.stdout.splitlines()]
        by_type = {g["type"].rsplit(".", 1)[1]: g for g in got}
        check(sorted(by_type) == ["CollectionStarted", "CollectionStopped"],
              "read_kafka.py prints the two records: %s" % sorted(by_type))
        want = dict(records())
        check(by_type.get("CollectionStarted", {}).get("value") == want["CollectionStarted"],
              "CollectionStarted read by python, ns exact: %s" % by_type.get("CollectionStarted"))
        check(by_type.get("CollectionStopped", {}).get("value") == want["CollectionStopped"],
              "CollectionStopped and its StreamCount (the shared type) read by python: %s" %
              by_type.get("CollectionStopped"))
        check(all(len(g.get("ce_id") or "") == 36 for g in got), "each with its ce_id header")

        db = os.path.join(tmp, "log.db")
        emit("sqlite:" + db)
        r = subprocess.run(["node", os.path.join(EXAMPLES, "session_times.mjs"), "sqlite:" + db],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, MSRS_BIN_DIR=BIN))
        check(r.returncode == 0, "session_times.mjs exits 0: %s" % r.stderr.strip()[-300:])
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        check(lines == [{"session": "s-ex", "start_ns": str(START), "stop_ns": str(STOP),
                         "duration_ns": str(STOP - START), "complete": True}],
              "node prints the session with ns exact: %s" % lines)
    finally:
        stop_all(procs)
    sys.exit(check.finish())


if __name__ == "__main__":
    main()
