#!/ usr / bin / python3
"""Interop: records msrs wrote are decoded by an Avro implementation that is
not avro-c (Debian's python3-avro), using only schemas/*.avsc,
schemas/catalog.json and the framing and storage documented in docs/log.md
and docs/topics.md. And the reverse: a record Python encodes is read by
msrs-tail, also when it is an earlier version of the record (its old id
and schemas/history/: read as the current version, added fields at their
defaults)."""
import io
import json
import os
import sqlite3
import struct
import subprocess
import sys
import tempfile

import avro.io
import avro.name
import avro.schema

SRC = os.environ["MSRS_SOURCE_DIR"]
BIN = os.environ["MSRS_BIN_DIR"]
failures = 0
checks = 0


def check(cond, what):
    global failures, checks
    checks += 1
    if not cond:
        failures += 1
        print("FAIL:", what)


def load_catalog():
    """Every current .avsc loaded into ONE name table (avro.name.Names), the
    shared types (catalog "types": StreamCount) first, as a Java or Python
    client loading all the schemas does: a type defined twice would fail.
    Returns {id: (record, topic, schema)} of current ids, {short: (id, topic,
    schema)}, and {id: (record, topic, path)} of earlier versions."""
    cat = json.load(open(os.path.join(SRC, "schemas", "catalog.json")))
    names = avro.name.Names()
    for path in cat["types"].values():
        avro.schema.make_avsc_object(json.load(open(os.path.join(SRC, "schemas", path))), names)
    by_id, by_name, history = {}, {}, {}
    for sid, spec in cat["ids"].items():
        check(sid.isdigit(), "catalog ids: %r is an id" % sid)
        if spec["file"].startswith("history/"):
            history[int(sid)] = (spec["record"], spec["topic"], spec["file"])
            continue
        schema = avro.schema.make_avsc_object(json.load(open(os.path.join(SRC, "schemas", spec["file"]))),
                                              names)
        check(schema.fullname == spec["record"], "id %s: %s is %s" % (sid, spec["file"], spec["record"]))
        by_id[int(sid)] = (spec["record"], spec["topic"], schema)
        by_name[spec["record"].rsplit(".", 1)[1]] = (int(sid), spec["topic"], schema)
    return by_id, by_name, history


def history_schema(path):
    """An earlier version: a file of its own, frozen as it was written (its
    StreamCount inline, of that time), so a name table of its own."""
    return avro.schema.make_avsc_object(json.load(open(os.path.join(SRC, "schemas", path))), avro.name.Names())


def parse_headers(blob):
    """docs/log.md: per header, name + NUL, 4-byte little-endian length, value."""
    out, o = {}, 0
    while o < len(blob):
        nul = blob.index(b"\0", o)
        name = blob[o:nul].decode()
        (n,) = struct.unpack_from("<I", blob, nul + 1)
        out[name] = blob[nul + 5:nul + 5 + n]
        o = nul + 5 + n
    return out


def to_fixture_form(v, schema):
    """python-avro gives bytes as bytes; the fixture writes them as code points 0-255."""
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, dict):
        return {
k: to_fixture_form(x, schema) for k, x in v.items()}
    if isinstance(v, list):
        return [to_fixture_form(x, schema) for x in v]
    return v


def main():
    by_id, by_name, history = load_catalog()
    # msrs schemas ID: every id's schema stands alone (what a registry holds)
    for sid in list(by_id) + list(history):
        r = subprocess.run([os.path.join(BIN, "msrs"), "schemas", str(sid)], capture_output=True,
                           text=True)
        want = by_id[sid][0] if sid in by_id else history[sid][0]
        alone = avro.schema.make_avsc_object(json.loads(r.stdout), avro.name.Names()) \
            if r.returncode == 0 else None
        check(alone is not None and alone.fullname == want,
              "msrs schemas %d: %s alone (%d %s)" % (sid, want, r.returncode, r.stderr.strip()))
    fixtures = json.load(open(os.path.join(SRC, "tests", "data", "records.json")))["records"]
    check(set(fixtures) == set(by_name), "the fixture covers every record type of the catalog")
    tmp = tempfile.mkdtemp(prefix="msrs-interop-")
    db = os.path.join(tmp, "log.db")
    for short, rec in fixtures.items():
        r = subprocess.run([os.path.join(BIN, "msrs"), "--log", "sqlite:" + db, "emit", short,
                            json.dumps(rec)], capture_output=True, text=True)
        check(r.returncode == 0, "msrs emit %s: %s" % (short, r.stderr))

    con = sqlite3.connect(db)
    seen = set()
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 't:%'"):
        topic = table[2:]
        for off, ts, key, value, headers in con.execute(
                'SELECT offset, ts_ms, key, value, headers FROM "%s" ORDER BY offset' % table):
            check(value[0] == 0, "%s@%d: magic byte 0" % (topic, off))
            (sid,) = struct.unpack(">I", value[1:5])
            check(sid in by_id, "%s@%d: schema id %d in catalog" % (topic, off, sid))
            name, rtopic, schema = by_id[sid]
            check(topic == "msrs." + rtopic, "%s: record %s belongs on msrs.%s" % (topic, name, rtopic))
            dec = avro.io.BinaryDecoder(io.BytesIO(value[5:]))
            got = avro.io.DatumReader(schema).read(dec)
            short = name.rsplit(".", 1)[1]
            check(to_fixture_form(got, schema) == fixtures[short],
                  "%s decoded by python-avro:\n got  %r\n want %r" % (short, got, fixtures[short]))
            h = parse_headers(headers)
            check(h.get("ce_type") == name.encode(), "%s: ce_type header" % short)
            check(h.get("ce_specversion") == b"1.0", "%s: ce_specversion" % short)
            check(h.get("content-type") == b"application/avro; framing=confluent", "%s: content-type" % short)
            check(h.get("ce_dataschema") == b"urn:msrs:schema:%d" % sid, "%s: ce_dataschema" % short)
            check(len(h.get("ce_id", b"")) == 36, "%s: ce_id is a UUID" % short)
            check(h.get("ce_time", b"").endswith(b"Z"), "%s: ce_time is RFC 3339 UTC" % short)
            key_field = json.load(open(os.path.join(SRC, "schemas", "catalog.json")))["topics"][rtopic]["key"]
            check(key == got[key_field].encode(), "%s: key is the %s field" % (short, key_field))
            seen.add(short)
    check(seen == set(fixtures), "every record type read back (%d of %d)" % (len(seen), len(fixtures)))

#The reverse : python - avro writes, msrs - tail reads : the current version,
#then earlier versions(each under the id its schemas / history / file has).
    sid, topic, schema = by_name["NodeRegistered"]
    rec = {"node_id": "py-node", "hostname": "written-by-python", "address": "", "capabilities": ["x"],
           "max_devices": 3, "version": "py", "cpu_cores": 2, "mem_total_bytes": 1 << 30,
           "incarnation": "py-process"}
    written = [(sid, schema, rec, rec)]
    old_recs = {
    "NodeRegistered" : {
        "node_id" : "py-old",
        "hostname" : "v1",
        "address" : "h:1",
        "capabilities" : [],
        "max_devices" : 2,
        "version" : "0.0"
    },
                       "NodeHeartbeat" : {
                           "node_id" : "py-old",
                           "services_running" : ["devices"],
                           "versions" : {},
                           "device_count" : 7,
                           "cpu_load" : 0.5,
                           "mem_used_bytes" : 1000,
                           "clock_offset_ns" : -5,
                           "clock_uncertainty_ns" : 3,
                           "clock_rtt_ns" : 9
                       },
                                         "CollectionStopped" : {
                                             "session_id" : "py-s",
                                             "stop_at_ns" : 5,
                                             "duration_ns" : 4,
                                             "reason" : "requested",
                                             "streams" : [ {
                                                 "device_id" : "d",
                                                 "stream_id" : "gsr",
                                                 "samples" : 3,
                                                 "bytes" : 24,
                                                 "gaps" : 1,
                                                 "dropped" : 2
                                             } ]
                                         },
                                                               "RecordingReport":
    {
        "session_id" : "py-s", "node_id" : "py-old", "missing_devices" : ["x"], "streams" : [ {
            "device_id" : "d",
            "stream_id" : "gsr",
            "samples" : 3,
            "bytes" : 24,
            "gaps" : 1,
            "dropped" : 2
        } ]
    }}
#what the nested records of an earlier version read as : every field
#added since with its default
    # fields of later versions (v2 of NodeHeartbeat has these beside v1's,
    # v2 of NodeRegistered cpu_cores and mem_total_bytes;
    # v2 of CollectionStopped and RecordingReport these, and their
    # StreamCount stream_later's)
    later = {"mem_available_bytes": 4096, "rx_bytes_per_s": 77, "complete": False, "incomplete": ["why"],
             "log_lost_records": 1, "unacknowledged_records": 2, "cpu_cores": 2, "mem_total_bytes": 1 << 20}
    stream_later = {"gap_samples": 5, "late_start_samples": 6, "late_start_bytes": 48}
    for old_id, (_, _, path) in history.items():
        old_schema = history_schema(path)
        short = old_schema.name
        cur = by_name[short][2]
        names = {f.name for f in old_schema.fields}
        check(names <= set(old_recs[short]) | set(later), "the test's %s covers %s" % (short, path))
        rec = {n: old_recs[short][n] if n in old_recs[short] else later.get(n) for n in names}
        want = {f.name: rec.get(f.name, f.default) for f in cur.fields}
        if "streams" in rec:
            old_item = {f.name for f in old_schema.fields_dict["streams"].type.items.fields}
            cur_item = cur.fields_dict["streams"].type.items.fields
            rec["streams"] = [{n: st.get(n, stream_later.get(n)) for n in old_item} for st in rec["streams"]]
            want["streams"] = [{f.name: st.get(f.name, f.default) for f in cur_item} for st in rec["streams"]]
        written.append((int(old_id), old_schema, rec, want))
    check(len(written) >= 3, "earlier versions listed in the catalog: %r" % history)
    cat = json.load(open(os.path.join(SRC, "schemas", "catalog.json")))
    topic_of = {spec["record"].split(".")[-1]: spec["topic"] for spec in cat["ids"].values()}
    nxt = {}
    with con:
        for i, (wid, wschema, wrec, _) in enumerate(written):
            table = "t:msrs." + topic_of[wschema.name]
            if table not in nxt:
                (nxt[table],) = con.execute('SELECT COALESCE(MAX(offset)+1, 0) FROM "%s"' % table).fetchone()
            buf = io.BytesIO()
            avro.io.DatumWriter(wschema).write(wrec, avro.io.BinaryEncoder(buf))
            value = b"\0" + struct.pack(">I", wid) + buf.getvalue()
            hdrs = b""
            for k, v in [("ce_specversion", b"1.0"), ("ce_id", b"11111111-2222-4333-8444-55555555555%d" % i),
                         ("ce_type", ("msrs.events." + wschema.name).encode()), ("ce_source", b"python"),
                         ("ce_time", b"2026-11-22T10:00:00Z"), ("content-type", b"application/avro; framing=confluent")]:
                hdrs += k.encode() + b"\0" + struct.pack("<I", len(v)) + v
            key = wrec.get("node_id") if table.endswith("nodes") else wrec["session_id"]
            con.execute('INSERT INTO "%s"(offset, ts_ms, key, value, headers) VALUES(?,?,?,?,?)' % table,
                        (nxt[table], 1795345200000, key.encode(), value, hdrs))
            nxt[table] += 1
    lines = []
    for table in ("t:msrs.nodes", "t:msrs.sessions"):
        mine = [w for w in written if "t:msrs." + topic_of[w[1].name] == table]
        r = subprocess.run([os.path.join(BIN, "msrs-tail"), "--log", "sqlite:" + db, "--topic",
                            table[len("t:msrs."):], "--from", str(nxt.get(table, 0) - len(mine))],
                           capture_output=True, text=True)
        check(r.returncode == 0, "msrs-tail: %s" % r.stderr)
        lines += [json.loads(l) for l in r.stdout.splitlines()]
    written.sort(key=lambda w: topic_of[w[1].name] != "nodes")
    check(len(lines) == len(written), "msrs-tail printed %d records, got %d" % (len(written), len(lines)))
    for line, (wid, wschema, _, want) in zip(lines, written):
        check(line["value"] == want, "msrs-tail read python's %s (id %d) as the current version:\n got  %r\n"
              " want %r" % (wschema.name, wid, line["value"], want))
        check(line["source"] == "python" and line["type"] == "msrs.events." + wschema.name,
              "CloudEvents attributes read back")
#docs / topics.md stays true : every record is listed with its id.
    doc = open(os.path.join(SRC, "docs", "topics.md")).read()
    for sid, (name, topic, schema) in by_id.items():
        check("| %d | `%s`" % (sid, name) in doc, "docs/topics.md lists %s as %d" % (name, sid))
    print("%d passed, %d failed" % (checks - failures, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
