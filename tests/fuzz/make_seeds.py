#!/usr/bin/python3
"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/) from
tests/data/records.json, docs/protocol.md's messages and the messages of
tests/agent/test_agent_protocol.py. Frames are encoded by python3-avro, not
by libevents, so the seeds do not assume the code under test is right.
Run it again after a schema changes; crash inputs added by hand stay."""
import io
import json
import os
import struct

import avro.datafile
import avro.io
import avro.name
import avro.schema

SRC = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(SRC, "tests", "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def catalog():
    """[(short name, id, schema)] of the current ids in catalog.json's order
    (libevents' too), loaded into one name table, the shared types first."""
    cat = json.load(open(os.path.join(SRC, "schemas", "catalog.json")))
    names = avro.name.Names()
    for path in cat["types"].values():
        avro.schema.make_avsc_object(json.load(open(os.path.join(SRC, "schemas", path))), names)
    out = []
    for sid, spec in cat["ids"].items():
        if not spec["file"].startswith("history/"):
            out.append((spec["record"].rsplit(".", 1)[1], int(sid), avro.schema.make_avsc_object(
                json.load(open(os.path.join(SRC, "schemas", spec["file"]))), names)))
    return out


def fixture_to_python(v, schema):
    """The fixtures write bytes as code points 0-255; python-avro wants bytes."""
    t = schema.type
    if t == "union":
        if v is None:
            return None
        for b in schema.schemas:
            if b.type != "null":
                return fixture_to_python(v, b)
    if t == "bytes" or t == "fixed":
        return v.encode("latin-1")
    if t == "record":
        return {f.name: fixture_to_python(v[f.name], f.type) if f.name in v else f.default
                for f in schema.fields}
    if t == "array":
        return [fixture_to_python(x, schema.items) for x in v]
    if t == "map":
        return {k: fixture_to_python(x, schema.values) for k, x in v.items()}
    return v


def avro_body(schema, value):
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(value, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def frame(sid, schema, value):
    return b"\x00" + struct.pack(">i", sid) + avro_body(schema, value)


def chunks(frames):
    return b"".join(struct.pack(">H", len(f)) + f for f in frames)


def main():
    cat = catalog()
    records = json.load(open(os.path.join(SRC, "tests", "data", "records.json")))["records"]
    frames = {}
    for i, (short, sid, schema) in enumerate(cat):
        value = fixture_to_python(records[short], schema)
        frames[short] = frame(sid, schema, value)
        # fuzz_frame: one record per input
        write("fuzz_frame", short, chunks([frames[short]]))
        # fuzz_json_avro: the catalog index, then the record as JSON
        write("fuzz_json_avro", short, bytes([i]) + json.dumps(records[short]).encode())
    # fuzz_frame: histories the reducers fold in order
    write("fuzz_frame", "history_node", chunks([frames[n] for n in (
        "NodeRegistered", "NodePlanned", "NodeHeartbeat", "NodeExpired")]))
    write("fuzz_frame", "history_device", chunks([frames[n] for n in (
        "NodeRegistered", "DeviceRegistered", "ClockOffsetMeasured", "DeviceStatus",
        "DeviceDisconnected")]))
    write("fuzz_frame", "history_session", chunks([frames[n] for n in (
        "NodeRegistered", "DeviceRegistered", "CollectionRequested", "SynchronizationCompleted",
        "CollectionStarted", "StartRecording", "SyncMark", "CollectionStopRequested",
        "StopRecording", "RecordingReport", "CollectionStopped")]))

    # fuzz_device_msg: messages separated by 0xFF '\n'; 'b' starts a binary frame
    def msg(type_, payload, **env):
        m = {"id": "d1-%s" % type_, "type": type_, "ts": 1795347002000000000,
             "device_id": "phone-1", "payload": payload}
        m.update(env)
        return json.dumps(m).encode()

    def binary(header, body=b""):
        h = json.dumps(header).encode()
        return b"b" + len(h).to_bytes(4, "big") + h + body

    hello = msg("hello", {"name": "Pixel 7", "capabilities": ["gsr", "imu"], "battery": 0.9,
                          "version": "t", "streams": [
                              {"stream_id": "gsr", "type": "gsr", "rate_hz": 128, "channels": 1,
                               "format": "float64"},
                              {"stream_id": "imu", "type": "imu", "rate_hz": 100, "channels": 2,
                               "format": "float64"}]})
    t0 = 1795347002000000000
    samples = msg("samples", {"stream_id": "gsr", "seq": 1536,
                              "t": [t0, t0 + 7812500], "values": [[0.41], [0.42]]},
                  session_id="s-001")
    time_resp = msg("time_resp", {"t1": 1795347000100000000, "t2": 1795347000351234000,
                                  "t3": 1795347000351240000})
    status = msg("status", {"battery": 0.81, "storage_free": 52428800000, "temperature": 33.5,
                            "recording": False})
    mark = msg("sync_mark", {"mark_id": "m1", "label": "stimulus onset"}, session_id="s-001")
    media = binary({"stream_id": "rgb", "codec": "h264", "pts": 3300, "keyframe": True, "seq": 17,
                    "ts": t0 + 33000000, "width": 1280, "height": 720, "session_id": "s-001"},
                   b"\x00\x00\x00\x01\x67\x42" + bytes(40))
    bsamples = binary({"type": "samples", "stream_id": "imu", "seq": 0, "n": 3, "channels": 2},
                      struct.pack("<3q", t0, t0 + 10000000, t0 + 20000000)
                      + struct.pack("<6d", 1, 2, 3, 4, 5, 6))
    sep = b"\xff\n"
    seqs = {
        "hello": [hello],
        "session": [hello, time_resp, samples, status, mark, media, bsamples],
        "samples_gap": [hello, samples, msg("samples", {"stream_id": "gsr", "seq": 1600, "t": [t0],
                                                        "values": [[1.0]]})],
        "time_resp": [time_resp, time_resp,
                      msg("time_resp", {"t1": 1795347000115000000, "t2": 1795347000366234000,
                                        "t3": 1795347000366240000,
                                        "prev_t1": 1795347000100000000,
                                        "prev_t3": 1795347000351243100}),
                      msg("time_resp", {"t1": 1795347000130000000, "t2": 1795347000381234000,
                                        "t3": 1795347000381240000,
                                        "prev_t1": 1795347000115000000, "prev_t3": 1})],
        "status": [status],
        "sync_mark": [mark],
        "media": [media],
        "binary_samples": [bsamples, binary({"type": "samples", "stream_id": "imu", "seq": 3,
                                             "channels": 2})],
        "ack_error": [msg("ack", {"ref_id": "d1-43", "status": "ok"}),
                      msg("error", {"code": "bad_json", "message": "x", "ref_id": ""})],
        "bad": [b"{not json", b"[1,2]", msg("teleport", {}),
                msg("samples", {"stream_id": "gsr", "seq": 0, "t": [1, 2], "values": [[1.0]]}),
                msg("time_resp", {"t1": "x"}),
                msg("samples", {"stream_id": "gsr", "seq": 2**63 - 1, "t": [1], "values": [[1.0]]}),
                msg("time_resp", {"t1": 1, "t2": -2**63, "t3": 2**63 - 1}),
                b"b\x00\x00\x10\x00junk", binary({"type": "hologram"})],
        "rejoin": [hello, hello, msg("hello", {"streams": 5})],
    }
    for name, ms in seqs.items():
        write("fuzz_device_msg", name, sep.join(ms))

    # fuzz_conf: config files as docs/config.md describes them
    write("fuzz_conf", "services", "# a node's config\nlog = sqlite:/var/lib/msrs/log.db\n"
          "topic.prefix = msrs.\nsource = agent/node-a\nsqlite.synchronous = FULL\n"
          "agent.listen = 0.0.0.0:8620\nagent.max_devices = 64\nsync.interval_ms = 2000\n")
    write("fuzz_conf", "kafka", "log=kafka:127.0.0.1:9092\nkafka.acks = all\n"
          "kafka.linger.ms=5  # batching\ncollect.auto_start = true\n")
    write("fuzz_conf", "unknown_key", "log = sqlite:x.db\nsync.min_grup = 2\n")
    write("fuzz_conf", "bad_line", "log sqlite:x.db\n")
    write("fuzz_conf", "env_style", "log=sqlite:a.db;topic.prefix=test.;agent.rate_burst=100")
    write("fuzz_conf", "long_value", "archive.dir = " + "d" * 300 + "\n\n   \n#x\n")

    # fuzz_archive_fold: 0 + events.avro, 1 + phone-1/clock.avro
    ev_schema = avro.schema.parse(
        '{"type":"record","name":"ArchivedEvent","namespace":"msrs.archive","fields":['
        '{"name":"topic","type":"string"},{"name":"key","type":"string"},'
        '{"name":"id","type":"string"},{"name":"source","type":"string"},'
        '{"name":"time_ns","type":"long"},{"name":"value","type":"bytes"}]}')

    def container(schema, rows, codec="null"):
        buf = io.BytesIO()
        w = avro.datafile.DataFileWriter(buf, avro.io.DatumWriter(), schema, codec=codec)
        for r in rows:
            w.append(r)
        w.flush()
        data = buf.getvalue()
        w.close()
        return data

    names = ["DeviceRegistered", "CollectionRequested", "SynchronizationCompleted",
             "CollectionStarted", "SyncMark", "CollectionStopRequested", "RecordingReport",
             "CollectionStopped"]
    rows = [{"topic": "msrs.sessions", "key": "s1", "id": "e%d" % i, "source": "test",
             "time_ns": t0 + i, "value": frames[n]} for i, n in enumerate(names)]
    write("fuzz_archive_fold", "events", b"\x00" + container(ev_schema, rows))
    write("fuzz_archive_fold", "events_deflate", b"\x00" + container(ev_schema, rows, "deflate"))
    write("fuzz_archive_fold", "events_one", b"\x00" + container(ev_schema, rows[:1]))
    clock_schema = [s for s in cat if s[0] == "ClockOffsetMeasured"][0][2]
    clock = fixture_to_python(records["ClockOffsetMeasured"], clock_schema)
    clock2 = dict(clock, t1_ns=clock["t1_ns"] + 2000000000, t4_ns=clock["t4_ns"] + 2000000000)
    write("fuzz_archive_fold", "clock", b"\x01" + container(clock_schema, [clock, clock2]))
    write("fuzz_archive_fold", "clock_deflate",
          b"\x01" + container(clock_schema, [clock], "deflate"))


if __name__ == "__main__":
    main()
