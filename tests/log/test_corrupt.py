#!/usr/bin/env python3
"""Damaged SQLite logs against the real binaries (docs/log.md, "Integrity").

Each case was found by a fault injector and failed before the fix:
- a zeroed page in a topic's table: readers stop within seconds with one
  error naming the file and the table (msrs-tail, msrs-replay, msrs
  devices, msrs-syncd, msrs-archiver all exit 1) instead of repeating
  "database disk image is malformed" forever;
- a 0-byte file: msrs-tail and msrs-replay refuse it and leave it 0 bytes;
- 200 random single-bit flips in stored values: every one is detected
  (0 decode silently as other values); the stored checksum is the CRC-32C
  docs/log.md describes, checked here by an independent implementation;
- a hole in a partition's offsets: msrs-tail names it and exits 1.
"""
import json
import os
import random
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import BIN, Checks, free_port  # noqa: E402

check = Checks()


def crc32c(data, crc=0):
    """CRC-32C, bit by bit: slow and obviously the definition."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def row_crc(offset, ts_ms, key, value, headers):
    parts = (key or b"", value or b"", headers or b"")
    c = crc32c(struct.pack("<qqIII", offset, ts_ms, *(len(p) for p in parts)))
    for part in parts:
        c = crc32c(part, c)
    return c


def run(args, timeout=30, stdin=None):
    t0 = time.monotonic()
    r = subprocess.run([os.path.join(BIN, args[0])] + args[1:], capture_output=True, text=True,
                       timeout=timeout, input=stdin)
    return r, time.monotonic() - t0


def make_log(db, samples=0, nodes=0):
    lines = []
    for i in range(samples):
        lines.append(json.dumps({"type": "SensorSampleBatch", "value": {
            "device_id": "d%d" % (i % 4), "stream_id": "gsr", "seq": i * 32, "channels": 1,
            "device_time_ns": list(range(i, i + 32)), "values": [i * 0.5] * 32}}))
    for i in range(nodes):
        lines.append(json.dumps({"type": "NodeRegistered", "value": {"node_id": "n%d" % i}}))
    r, _ = run(["msrs", "--log", "sqlite:" + db, "emit", "-"], stdin="\n".join(lines) + "\n")
    check(r.returncode == 0, "msrs emit: %s" % r.stderr)


def zero_root_page(db, table):
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (root,) = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    (page,) = con.execute("PRAGMA page_size").fetchone()
    con.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(b"\0" * page)


def error_lines(stderr, word="malformed"):
    return [l for l in stderr.splitlines() if word in l]


def zeroed_page(tmp):
    db = os.path.join(tmp, "zeroed.db")
    make_log(db, samples=3000, nodes=400)
    zero_root_page(db, "t:msrs.samples")
    zero_root_page(db, "t:msrs.nodes")
    readers = [
        ("msrs-tail", ["msrs-tail", "--log", "sqlite:" + db, "--topic", "samples", "--follow"],
         "t:msrs.samples"),
        ("msrs-replay", ["msrs-replay", "--log", "sqlite:" + db], "t:msrs.nodes"),
        ("msrs devices", ["msrs", "--log", "sqlite:" + db, "devices"], "t:msrs.nodes"),
        ("msrs-syncd", ["msrs-syncd", "--log", "sqlite:" + db], "t:msrs.nodes"),
        ("msrs-collectord", ["msrs-collectord", "--log", "sqlite:" + db], "t:msrs.nodes"),
        ("msrs-supervisor", ["msrs-supervisor", "--log", "sqlite:" + db, "--listen",
                             "127.0.0.1:%d" % free_port()], "t:msrs.nodes"),
        ("msrs-archiver", ["msrs-archiver", "--log", "sqlite:" + db, "--dir",
                           os.path.join(tmp, "archive")], "t:msrs.samples"),
    ]
    for what, args, table in readers:
        try:
            r, took = run(args, timeout=20)
        except subprocess.TimeoutExpired:
            check(False, "%s: still running 20 s after the corrupt page" % what)
            continue
        bad = error_lines(r.stderr)
        check(r.returncode == 1, "%s exits 1 on a zeroed page (got %d)" % (what, r.returncode))
        check(took < 10, "%s stops within seconds (%.1f s)" % (what, took))
        check(len(bad) == 1, "%s: one error line, got %d:\n%s" % (what, len(bad), r.stderr[-2000:]))
        check(all(table in l and db in l for l in bad),
              "%s names the file and %s: %s" % (what, table, bad[:1]))


def empty_file(tmp):
    db = os.path.join(tmp, "empty.db")
    open(db, "wb").close()
    for what, args in [("msrs-tail", ["msrs-tail", "--log", "sqlite:" + db, "--topic", "all"]),
                       ("msrs-replay", ["msrs-replay", "--log", "sqlite:" + db]),
                       ("msrs session list", ["msrs", "--log", "sqlite:" + db, "session", "list"])]:
        r, _ = run(args)
        check(r.returncode != 0, "%s refuses a 0-byte file (exit %d)" % (what, r.returncode))
        check("not an msrs log" in r.stderr and db in r.stderr,
              "%s says the file is not an msrs log: %s" % (what, r.stderr.strip()))
        check(os.path.getsize(db) == 0, "%s left the file 0 bytes (%d)" % (what, os.path.getsize(db)))
    r, _ = run(["msrs-tail", "--log", "sqlite:" + os.path.join(tmp, "missing.db"), "--topic", "all"])
    check(r.returncode != 0 and not os.path.exists(os.path.join(tmp, "missing.db")),
          "msrs-tail neither reads nor creates a missing file")


def bit_flips(tmp):
    db = os.path.join(tmp, "flips.db")
    make_log(db, samples=210)
    con = sqlite3.connect(db)
    rows = con.execute('SELECT offset, ts_ms, key, value, headers, crc FROM "t:msrs.samples"').fetchall()
    check(len(rows) == 210, "210 records written")
    check(all(r[5] == row_crc(*r[:5]) for r in rows),
          "every stored checksum is CRC-32C of the documented layout")
    rng = random.Random(20261122)
    flipped = set()
    with con:
        for off, _, _, value, _, _ in rows[:200]:
            b = bytearray(value)
            bit = rng.randrange(len(b) * 8)
            b[bit // 8] ^= 1 << (bit % 8)
            con.execute('UPDATE "t:msrs.samples" SET value = ? WHERE offset = ?', (bytes(b), off))
            flipped.add(off)
    con.close()
    r, _ = run(["msrs-tail", "--log", "sqlite:" + db, "--topic", "samples"])
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    detected = {l["offset"] for l in lines if "error" in l and "checksum" in l["error"]}
    silent = [l["offset"] for l in lines if "value" in l and l["offset"] in flipped]
    check(len(lines) == 210, "msrs-tail printed every record (%d)" % len(lines))
    check(detected == flipped, "all 200 flips detected (%d)" % len(detected))
    check(not silent, "no flip decoded silently (%d did)" % len(silent))
    check(r.returncode == 1, "msrs-tail exits 1 after corrupt records (%d)" % r.returncode)
    check(sum("checksum mismatch" in l and "msrs.samples" in l for l in r.stderr.splitlines()) == 200,
          "each corrupt record named on stderr")
    # Rows of an earlier msrs (no checksum) are read, unchecked and said so.
    con = sqlite3.connect(db)
    with con:
        con.execute('UPDATE "t:msrs.samples" SET crc = NULL WHERE offset >= 200')
    con.close()
    r, _ = run(["msrs-tail", "--log", "sqlite:" + db, "--topic", "samples", "--from", "200"])
    check(r.returncode == 0 and len(r.stdout.splitlines()) == 10 and "10 records carry no checksum" in r.stderr,
          "rows without a checksum read unchecked: %d %s" % (r.returncode, r.stderr.strip()))


def holes(tmp):
    db = os.path.join(tmp, "holes.db")
    make_log(db, samples=20)
    con = sqlite3.connect(db)
    with con:
        con.execute('DELETE FROM "t:msrs.samples" WHERE offset = 5 OR offset BETWEEN 12 AND 14')
    con.close()
    r, _ = run(["msrs-tail", "--log", "sqlite:" + db, "--topic", "samples"])
    check(len(r.stdout.splitlines()) == 16, "the other records printed")
    check("offsets 5..5 are missing from the log" in r.stderr and
          "offsets 12..14 are missing from the log" in r.stderr, "holes named: %s" % r.stderr.strip())
    check(r.returncode == 1, "msrs-tail exits 1 after a hole (%d)" % r.returncode)


def main():
    with tempfile.TemporaryDirectory(prefix="msrs-corrupt-") as tmp:
        for case in (zeroed_page, empty_file, bit_flips, holes):
            print("--", case.__name__, flush=True)
            case(tmp)
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
