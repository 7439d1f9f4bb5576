"""confluent-kafka's AdminClient.elect_leaders against a 3-node cluster
(run by tests/tests/cluster.rs: operator_elections_with_confluent_kafka and
operator_unclean_election_brings_an_offline_partition_back).

Usage: elect_leaders.py BOOTSTRAP TOPIC PARTITION [preferred|unclean]

unclean: PARTITION is offline (its ISR is gone) and a replica outside the ISR is alive. A
preferred election finds its preferred replica unavailable; an unclean one elects; asked again,
none is needed.

preferred (the default): PARTITION is led by a replica other than its preferred (first) one,
which is in the ISR. The script asks for the elections an operator would, and checks each
answer:
- preferred for PARTITION: elected;
- preferred for PARTITION again: ELECTION_NOT_NEEDED;
- unclean for PARTITION (it has a leader): ELECTION_NOT_NEEDED;
- preferred for a partition that does not exist: UNKNOWN_TOPIC_OR_PARTITION;
- preferred for every partition (None): only the partitions elected are listed, each without
  an error; asked again, nothing is listed.
It prints "ok" when all hold; the caller then checks Metadata for the new leader.
"""

import sys

from confluent_kafka import ElectionType, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

TIMEOUT_S = 30


def elect(admin, election, partitions):
    """The per-partition results of one ElectLeaders call: {(topic, partition): code or None}
    (the client gives each error as a KafkaError, or a KafkaException wrapping one)."""
    # Timeouts are socket.timeout.ms (this client's elect_leaders refuses keyword options).
    future = admin.elect_leaders(election, partitions)
    try:
        results = future.result(timeout=TIMEOUT_S)
    except KafkaException as e:
        raise SystemExit(f"elect_leaders({election}, {partitions}) failed: {e}")
    out = {}
    for tp, err in results.items():
        if err is None:
            out[(tp.topic, tp.partition)] = None
        else:
            error = err if isinstance(err, KafkaError) else err.args[0]
            out[(tp.topic, tp.partition)] = error.code()
    return out


def expect(what, got, want):
    if got != want:
        raise SystemExit(f"{what}: got {got}, want {want}")


def main():
    bootstrap, topic, partition = sys.argv[1], sys.argv[2], int(sys.argv[3])
    mode = sys.argv[4] if len(sys.argv) > 4 else "preferred"
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 30000})
    tp = (topic, partition)
    one = [TopicPartition(topic, partition)]

    if mode == "unclean":
        expect(
            "preferred election of an offline partition",
            elect(admin, ElectionType.PREFERRED, one),
            {tp: KafkaError.PREFERRED_LEADER_NOT_AVAILABLE},
        )
        expect("unclean election", elect(admin, ElectionType.UNCLEAN, one), {tp: None})
        expect(
            "unclean election again",
            elect(admin, ElectionType.UNCLEAN, one),
            {tp: KafkaError.ELECTION_NOT_NEEDED},
        )
        print("ok")
        return

    expect("preferred election", elect(admin, ElectionType.PREFERRED, one), {tp: None})
    expect(
        "preferred election again",
        elect(admin, ElectionType.PREFERRED, one),
        {tp: KafkaError.ELECTION_NOT_NEEDED},
    )
    expect(
        "unclean election of a led partition",
        elect(admin, ElectionType.UNCLEAN, one),
        {tp: KafkaError.ELECTION_NOT_NEEDED},
    )
    expect(
        "preferred election of a missing partition",
        elect(admin, ElectionType.PREFERRED, [TopicPartition(topic, 999)]),
        {(topic, 999): KafkaError.UNKNOWN_TOPIC_OR_PART},
    )
    everything = elect(admin, ElectionType.PREFERRED, None)
    failed = {k: v for k, v in everything.items() if v is not None}
    expect("errors of an election of every partition", failed, {})
    expect("every partition again", elect(admin, ElectionType.PREFERRED, None), {})
    print("ok")


if __name__ == "__main__":
    main()
