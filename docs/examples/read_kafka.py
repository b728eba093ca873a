#!/usr/bin/python3
"""Reads msrs topics from Kafka with Python, using only Debian's
python3-confluent-kafka and python3-avro and the files in schemas/ — no
code of msrs. Prints one JSON line per record: topic, offset, the record's
type, its ce_id and its value (ns fields stay exact: Python ints).

    read_kafka.py BOOTSTRAP [TOPIC ...]        (default: every catalog topic)
    env MSRS_SCHEMAS (default: ../../schemas from this file in a clone, else
        the package's /usr/share/msrs/schemas),
        MSRS_PREFIX (topic.prefix, default msrs.)

It reads every partition from the beginning (assigned, no group offsets
kept) and stops when each is read to its end (a live reader keeps polling)."""
import io
import json
import os
import sys

import avro.io
import avro.name
import avro.schema
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

BESIDE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "schemas")
SCHEMAS = os.environ.get("MSRS_SCHEMAS", BESIDE if os.path.isdir(BESIDE) else "/usr/share/msrs/schemas")
PREFIX = os.environ.get("MSRS_PREFIX", "msrs.")


def load_schemas():
    """{schema id: schema}: every id of the catalog. Current versions share one
    name table (the shared types first); an earlier version (a file under
    history/) is read with a table of its own, as it was written."""
    cat = json.load(open(os.path.join(SCHEMAS, "catalog.json")))
    names = avro.name.Names()
    for path in cat["types"].values():
        avro.schema.make_avsc_object(json.load(open(os.path.join(SCHEMAS, path))), names)
    by_id = {}
    for sid, spec in cat["ids"].items():
        table = avro.name.Names() if spec["file"].startswith("history/") else names
        by_id[int(sid)] = avro.schema.make_avsc_object(
            json.load(open(os.path.join(SCHEMAS, spec["file"]))), table)
    return cat, by_id


def decode(value, by_id):
    """Confluent framing: byte 0, the schema id (4 bytes big-endian), Avro binary."""
    if len(value) < 5 or value[0] != 0:
        raise ValueError("not Confluent-framed")
    schema = by_id[int.from_bytes(value[1:5], "big")]
    return schema.fullname, avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(value[5:])))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cat, by_id = load_schemas()
    topics = [PREFIX + t for t in (sys.argv[2:] or [t for t, s in cat["topics"].items() if s["key"]])]
    consumer = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "read-kafka-example",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics
             for p in consumer.list_topics(t, timeout=10).topics[t].partitions]
    consumer.assign(parts)
    left = {(p.topic, p.partition) for p in parts}  # partitions not read to their end yet
    while left:
        m = consumer.poll(10.0)
        if m is None:
            sys.exit("kafka: nothing within 10 s from %d partitions" % len(left))
        if m.error():
            if m.error().code() != KafkaError._PARTITION_EOF:
                sys.exit("kafka: %s" % m.error())
            left.discard((m.topic(), m.partition()))
            continue
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        record, value = decode(m.value(), by_id)
        print(json.dumps({"topic": m.topic(), "offset": m.offset(), "type": record,
                          "ce_id": headers.get("ce_id"), "value": value}, default=repr))
    consumer.close()


if __name__ == "__main__":
    main()
