#!/usr/bin/env python3
"""Consumer groups through kafka-python: subscribe with a group_id, commit, resume.

Usage: group_consumer.py BOOTSTRAP TOPIC N

TOPIC must exist (any number of partitions). Steps:
  1. produce N messages (acks='all') and note where each went;
  2. a KafkaConsumer in group A subscribes, reads all N exactly once, commits synchronously
     and checks committed() per partition, then closes (LeaveGroup);
  3. a second consumer in group A gets nothing (the offsets are committed); after M more
     messages are produced it gets exactly those M, and commits;
  4. a consumer in group B reads all N + M from the beginning.
Exits 0 when every check passes; otherwise prints what differed and exits 1.
"""
import sys
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def produce(bootstrap, topic, prefix, n):
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        request_timeout_ms=30000,
        enable_idempotence=False,
    )
    futures = [
        (b"%s-%d" % (prefix, i), producer.send(topic, key=b"%s-%d" % (prefix, i), value=b"v-%s-%d" % (prefix, i)))
        for i in range(n)
    ]
    producer.flush(timeout=60)
    out = {}
    for key, f in futures:
        md = f.get(timeout=60)
        out[(md.partition, md.offset)] = key
    producer.close(timeout=10)
    return out


def consumer(bootstrap, topic, group):
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
        fetch_max_wait_ms=100,
    )


def wait_assigned(c, timeout=30):
    """Polls until the group assigned partitions; returns the records that came meanwhile."""
    got = []
    deadline = time.time() + timeout
    while not c.assignment():
        if time.time() > deadline:
            fail("no partitions assigned within %ds" % timeout)
        for recs in c.poll(timeout_ms=200).values():
            got.extend(recs)
    return got


def read(c, want, timeout=30, linger=1.0):
    """Polls until `want` records arrived, then `linger` seconds more for strays."""
    got = wait_assigned(c)
    deadline = time.time() + timeout
    while len(got) < want and time.time() < deadline:
        for recs in c.poll(timeout_ms=200).values():
            got.extend(recs)
    end = time.time() + linger
    while time.time() < end:
        for recs in c.poll(timeout_ms=100).values():
            got.extend(recs)
    return got


def check_exact(what, got, expected):
    seen = {}
    for r in got:
        k = (r.partition, r.offset)
        if k in seen:
            fail("%s: %r consumed twice" % (what, k))
        seen[k] = r.key
    if seen != expected:
        missing = sorted(set(expected) - set(seen))[:10]
        extra = sorted(set(seen) - set(expected))[:10]
        wrong = [k for k in seen if k in expected and seen[k] != expected[k]][:10]
        fail("%s: %d records, expected %d; missing %r, unexpected %r, wrong keys %r"
             % (what, len(seen), len(expected), missing, extra, wrong))
    for r in got:
        if r.value != b"v-" + r.key:
            fail("%s: value of %r is %r" % (what, r.key, r.value))


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    group_a = "py-group-a-" + uuid.uuid4().hex[:8]
    group_b = "py-group-b-" + uuid.uuid4().hex[:8]

    first = produce(bootstrap, topic, b"one", n)
    ends = {}
    for (p, o) in first:
        ends[p] = max(ends.get(p, 0), o + 1)
    print("produced %d messages: next offsets %r" % (n, ends))

    c1 = consumer(bootstrap, topic, group_a)
    got = read(c1, n)
    check_exact("group A, first consumer", got, first)
    c1.commit()
    for p, end in ends.items():
        committed = c1.committed(TopicPartition(topic, p))
        if committed != end:
            fail("committed(%s-%d) = %r after commit, expected %d" % (topic, p, committed, end))
    c1.close()
    print("group A: consumed %d, committed %r" % (len(got), ends))

    c2 = consumer(bootstrap, topic, group_a)
    got = read(c2, 0, linger=2.0)
    if got:
        fail("group A, second consumer: %d records although all were committed, first %r"
             % (len(got), [(r.partition, r.offset) for r in got[:10]]))
    m = max(1, n // 10)
    second = produce(bootstrap, topic, b"two", m)
    got = read(c2, m)
    check_exact("group A, second consumer, new records", got, second)
    c2.commit()
    c2.close()
    print("group A: second consumer saw nothing old, then the %d new records" % m)

    c3 = consumer(bootstrap, topic, group_b)
    got = read(c3, n + m)
    everything = dict(first)
    everything.update(second)
    check_exact("group B", got, everything)
    c3.close()
    print("group B: consumed all %d" % (n + m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
