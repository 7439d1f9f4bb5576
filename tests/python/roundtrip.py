#!/usr/bin/env python3
"""Round trip through kafka-python: produce N messages with acks='all', read them back.

Usage: roundtrip.py BOOTSTRAP TOPIC N

The consumer uses assign + seek_to_beginning with group_id=None (the broker has no consumer
groups yet) and no commits. The protocol version is negotiated (ApiVersions), not pinned.
Exits 0 when every message came back once, in order, at the offset its produce returned,
with identical key and value; non-zero otherwise.
"""
import hashlib
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def value(i):
    # Deterministic 512 bytes per message: every byte is checkable.
    out = b""
    block = 0
    while len(out) < 512:
        out += hashlib.sha256(b"py-%d-%d" % (i, block)).digest()
        block += 1
    return out[:512]


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        retries=3,
        linger_ms=5,
        request_timeout_ms=30000,
        enable_idempotence=False,
    )
    futures = [
        producer.send(topic, key=b"p%d" % i, value=value(i), partition=0) for i in range(n)
    ]
    producer.flush(timeout=60)
    offsets = []
    for i, f in enumerate(futures):
        md = f.get(timeout=60)
        if md.partition != 0:
            print("message %d went to partition %d" % (i, md.partition), file=sys.stderr)
            return 1
        offsets.append(md.offset)
    producer.close(timeout=10)
    if offsets != sorted(offsets) or len(set(offsets)) != n:
        print("produce offsets not strictly increasing: %r" % offsets[:20], file=sys.stderr)
        return 1
    print("produced %d messages, offsets %d..%d" % (n, offsets[0], offsets[-1]))

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    deadline = time.time() + 60
    while len(got) < n and time.time() < deadline:
        batch = consumer.poll(timeout_ms=500)
        for records in batch.values():
            got.extend(records)
    consumer.close()

    if len(got) != n:
        print("consumed %d of %d messages" % (len(got), n), file=sys.stderr)
        return 1
    for i, rec in enumerate(got):
        if rec.offset != offsets[i]:
            print("message %d at offset %d, produce said %d" % (i, rec.offset, offsets[i]), file=sys.stderr)
            return 1
        if rec.key != b"p%d" % i or rec.value != value(i):
            print("message %d (offset %d): key/value differ" % (i, rec.offset), file=sys.stderr)
            return 1
    print("consumed %d messages, all match" % n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
