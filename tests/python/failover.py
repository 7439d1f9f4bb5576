#!/usr/bin/env python3
"""kafka-python through the loss of a node: its group coordinator, which leads partitions too.

Usage: failover.py BOOTSTRAP TOPIC GROUP N

TOPIC must exist, replicated (the test creates it with RF 3, min.insync.replicas 2).
  1. An idempotent producer sends N keyed messages with acks='all'. A KafkaConsumer in GROUP
     reads all of them and commits. The script prints "READY" and waits for a line on stdin;
     the test kills the group's coordinator (kill -9) before it sends that line.
  2. The producer sends N more. kafka-python must find the partitions' new leaders and retry;
     every send must be acknowledged.
  3. The same consumer keeps polling. It must find the group's new coordinator and read every
     acknowledged message at least once (a rejoin may deliver some twice, as Kafka allows),
     each partition's first deliveries in offset order. It then commits, and the group's
     committed offsets equal every partition's end offset.
Exits 0 when every check passes; otherwise prints what differed and exits 1.
"""
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

DEADLINE_S = 90


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def produce(producer, topic, prefix, n):
    futures = []
    for i in range(n):
        key = ("%s-%d" % (prefix, i)).encode()
        futures.append((key, producer.send(topic, key=key, value=b"v-" + key)))
    producer.flush(timeout=DEADLINE_S)
    keys = []
    for key, f in futures:
        try:
            f.get(timeout=DEADLINE_S)
        except KafkaError as e:
            fail("send of %s failed: %r" % (key.decode(), e))
        keys.append(key)
    return keys


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    bootstrap, topic, group, n = sys.argv[1].split(","), sys.argv[2], sys.argv[3], int(sys.argv[4])
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=10000,
        retry_backoff_ms=200,
        metadata_max_age_ms=1000,
        delivery_timeout_ms=DEADLINE_S * 1000,
    )
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10000,
        heartbeat_interval_ms=300,
        fetch_max_wait_ms=100,
        request_timeout_ms=15000,
        metadata_max_age_ms=1000,
    )
    read = []  # (partition, offset, key, value)

    def poll_until(what, done):
        deadline = time.monotonic() + DEADLINE_S
        while not done():
            if time.monotonic() > deadline:
                fail("timed out waiting for " + what)
            for records in consumer.poll(timeout_ms=200).values():
                read.extend((r.partition, r.offset, r.key, r.value) for r in records)

    def commit():
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                consumer.commit()
                return
            except KafkaError as e:
                if time.monotonic() > deadline:
                    fail("commit kept failing: %r" % e)
                consumer.poll(timeout_ms=200)

    def keys_read():
        return {k for _, _, k, _ in read}

    # --- 1. before the failover ---
    first = produce(producer, topic, "a", n)
    poll_until("the group to read %d messages" % n, lambda: len(keys_read()) >= n)
    commit()
    print("READY: read and committed %d messages" % n, flush=True)
    sys.stdin.readline()
    print("the coordinator was killed", flush=True)

    # --- 2. produce through the failover ---
    started = time.monotonic()
    second = produce(producer, topic, "b", n)
    producer.close(timeout=10)
    print("produced %d more with acks='all' in %.0f ms" % (n, (time.monotonic() - started) * 1000))

    # --- 3. the group reads on through the failover ---
    want = first + second
    poll_until(
        "the group to read all %d messages" % len(want),
        lambda: keys_read() >= set(want),
    )
    commit()
    seen = set()
    last = {}
    for p, o, k, v in read:
        if v != b"v-" + k:
            fail("%s has value %r" % (k.decode(), v))
        if k in seen:
            continue
        seen.add(k)
        if p in last and last[p] >= o:
            fail("partition %d: first delivery of offset %d after %d" % (p, o, last[p]))
        last[p] = o
    if len(seen) != len(want):
        fail("read %d distinct keys, produced %d" % (len(seen), len(want)))

    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    ends = consumer.end_offsets(partitions)
    if sum(ends.values()) != len(want):
        fail("end offsets sum to %d, acknowledged %d" % (sum(ends.values()), len(want)))
    for tp in partitions:
        committed = consumer.committed(tp)
        if committed != ends[tp]:
            fail("committed %r for partition %d, end offset %d" % (committed, tp.partition, ends[tp]))
    consumer.close()
    print(
        "read all %d messages (%d delivered twice); commits at every end offset"
        % (len(want), len(read) - len(want))
    )


if __name__ == "__main__":
    main()
