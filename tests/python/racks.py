#!/usr/bin/env python3
"""Rack awareness through confluent-kafka's AdminClient, run by tests/tests/cluster.rs.

Usage: racks.py BOOTSTRAP TOPIC RACKS

RACKS maps node ids to racks, "1=a,2=a,3=b". Checks that describe_cluster names each broker's
rack, then creates TOPIC (12 partitions, replication factor 2) and checks with describe_topics
that every partition has a replica in each rack and that leaderships are spread over all
brokers. Prints "ok" at the end; any failure exits non-zero with the reason.
"""
import sys

from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT = 30
PARTITIONS = 12


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def main():
    bootstrap, topic, spec = sys.argv[1], sys.argv[2], sys.argv[3]
    racks = {int(k): v for k, v in (pair.split("=") for pair in spec.split(","))}
    admin = AdminClient({"bootstrap.servers": bootstrap})

    cluster = admin.describe_cluster(request_timeout=TIMEOUT).result(timeout=TIMEOUT)
    seen = {n.id: n.rack for n in cluster.nodes}
    if seen != racks:
        fail("describe_cluster racks %r, want %r" % (seen, racks))
    print("describe_cluster: racks %r" % seen)

    fs = admin.create_topics(
        [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=2)],
        operation_timeout=TIMEOUT)
    fs[topic].result(timeout=TIMEOUT)

    described = admin.describe_topics(TopicCollection([topic]), request_timeout=TIMEOUT)
    description = described[topic].result(timeout=TIMEOUT)
    if len(description.partitions) != PARTITIONS:
        fail("%d partitions described" % len(description.partitions))
    all_racks = set(racks.values())
    leaders = set()
    for p in description.partitions:
        replicas = [r.id for r in p.replicas]
        spanned = {racks[r] for r in replicas}
        if spanned != all_racks:
            fail("partition %d on %r spans racks %r, not %r" % (p.id, replicas, spanned, all_racks))
        if any(r.rack != racks[r.id] for r in p.replicas):
            fail("partition %d names replicas with racks %r" % (p.id, [(r.id, r.rack) for r in p.replicas]))
        leaders.add(replicas[0])
    if leaders != set(racks):
        fail("preferred leaders %r, not every broker" % sorted(leaders))
    print("describe_topics: %d partitions, each across racks %r" % (PARTITIONS, sorted(all_racks)))
    print("ok")


if __name__ == "__main__":
    main()
