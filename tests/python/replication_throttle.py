"""The replication-throttle configs through confluent-kafka's AdminClient, as
`kafka-reassign-partitions --throttle` and `kafka-configs` set and clear them (run by
tests/tests/cluster.rs: replication_throttle_configs_with_confluent_kafka).

Usage: replication_throttle.py BOOTSTRAP TOPIC BROKER_IDS

BROKER_IDS is comma-separated; TOPIC has partition 0. The script:
- sets leader.replication.throttled.rate and follower.replication.throttled.rate on every
  broker (IncrementalAlterConfigs of each BROKER resource) and reads them back from each
  broker, as DYNAMIC_BROKER_CONFIG;
- sets the topic's leader.replication.throttled.replicas, APPENDs to and SUBTRACTs from its
  follower.replication.throttled.replicas, and reads the lists back;
- checks the refusals: a broker config that cannot change at run time (INVALID_REQUEST), a
  negative rate and a malformed list (INVALID_CONFIG);
- clears everything the way `--verify` does (DELETE of both rates and of
  replica.alter.log.dirs.io.max.bytes.per.second on every broker, DELETE of both lists) and
  reads back Kafka's defaults.
It prints "ok" when all hold.
"""

import sys
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ResourceType,
)

TIMEOUT_S = 30
LEADER_RATE = "leader.replication.throttled.rate"
FOLLOWER_RATE = "follower.replication.throttled.rate"
LOG_DIRS_RATE = "replica.alter.log.dirs.io.max.bytes.per.second"
LEADER_REPLICAS = "leader.replication.throttled.replicas"
FOLLOWER_REPLICAS = "follower.replication.throttled.replicas"
UNLIMITED = "9223372036854775807"


def alter(admin, kind, name, changes):
    """IncrementalAlterConfigs of one resource: changes are (key, value, op). Returns None on
    success, else the error code."""
    entries = [
        ConfigEntry(key, value, incremental_operation=op) for key, value, op in changes
    ]
    resource = ConfigResource(kind, name, incremental_configs=entries)
    futures = admin.incremental_alter_configs([resource], request_timeout=TIMEOUT_S)
    try:
        for future in futures.values():
            future.result(timeout=TIMEOUT_S)
    except KafkaException as e:
        return e.args[0].code()
    return None


def described(admin, kind, name, key):
    """(value, source) of one config of one resource, by DescribeConfigs."""
    resource = ConfigResource(kind, name)
    futures = admin.describe_configs([resource], request_timeout=TIMEOUT_S)
    for future in futures.values():
        configs = future.result(timeout=TIMEOUT_S)
        entry = configs.get(key)
        if entry is None:
            return None
        return (entry.value, ConfigSource(entry.source))
    return None


def expect(admin, kind, name, key, want):
    """Waits (bounded) until the resource shows `want` for `key`: each broker answers from its
    own copy of the metadata, which follows the controller within moments."""
    deadline = time.monotonic() + TIMEOUT_S
    got = None
    while time.monotonic() < deadline:
        got = described(admin, kind, name, key)
        if got == want:
            return
        time.sleep(0.1)
    raise SystemExit(f"{kind} {name}: {key} is {got}, not {want}")


def expect_refused(admin, kind, name, changes, code):
    got = alter(admin, kind, name, changes)
    if got != code:
        raise SystemExit(f"{kind} {name} {changes}: answered {got}, expected {code}")


def main():
    bootstrap, topic, ids = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 30000})
    SET, APPEND = AlterConfigOpType.SET, AlterConfigOpType.APPEND
    SUBTRACT, DELETE = AlterConfigOpType.SUBTRACT, AlterConfigOpType.DELETE
    BROKER, TOPIC = ResourceType.BROKER, ResourceType.TOPIC

    for i, broker in enumerate(ids):
        rate = str(1048576 * (i + 1))
        changes = [(LEADER_RATE, rate, SET), (FOLLOWER_RATE, rate, SET)]
        got = alter(admin, BROKER, broker, changes)
        if got is not None:
            raise SystemExit(f"setting the rates of broker {broker}: error {got}")
    for i, broker in enumerate(ids):
        rate = str(1048576 * (i + 1))
        for key in (LEADER_RATE, FOLLOWER_RATE):
            expect(admin, BROKER, broker, key, (rate, ConfigSource.DYNAMIC_BROKER_CONFIG))

    leader_list = f"0:{ids[0]}"
    if alter(admin, TOPIC, topic, [(LEADER_REPLICAS, leader_list, SET)]) is not None:
        raise SystemExit("setting the leader list failed")
    for item in (f"0:{ids[1]}", f"0:{ids[2]}", f"0:{ids[1]}"):
        if alter(admin, TOPIC, topic, [(FOLLOWER_REPLICAS, item, APPEND)]) is not None:
            raise SystemExit(f"appending {item} failed")
    both = f"0:{ids[1]},0:{ids[2]}"
    expect(admin, TOPIC, topic, FOLLOWER_REPLICAS, (both, ConfigSource.DYNAMIC_TOPIC_CONFIG))
    if alter(admin, TOPIC, topic, [(FOLLOWER_REPLICAS, f"0:{ids[1]}", SUBTRACT)]) is not None:
        raise SystemExit("subtracting from the follower list failed")
    expect(
        admin, TOPIC, topic, FOLLOWER_REPLICAS, (f"0:{ids[2]}", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    )
    expect(admin, TOPIC, topic, LEADER_REPLICAS, (leader_list, ConfigSource.DYNAMIC_TOPIC_CONFIG))

    expect_refused(
        admin, BROKER, ids[0], [("log.retention.ms", "1000", SET)], KafkaError.INVALID_REQUEST
    )
    expect_refused(admin, BROKER, ids[0], [(LEADER_RATE, "-5", SET)], KafkaError.INVALID_CONFIG)
    expect_refused(
        admin, TOPIC, topic, [(LEADER_REPLICAS, "0;1", SET)], KafkaError.INVALID_CONFIG
    )

    for broker in ids:
        changes = [(key, "", DELETE) for key in (LEADER_RATE, FOLLOWER_RATE, LOG_DIRS_RATE)]
        got = alter(admin, BROKER, broker, changes)
        if got is not None:
            raise SystemExit(f"clearing the rates of broker {broker}: error {got}")
    for broker in ids:
        for key in (LEADER_RATE, FOLLOWER_RATE):
            expect(admin, BROKER, broker, key, (UNLIMITED, ConfigSource.DEFAULT_CONFIG))
    changes = [(LEADER_REPLICAS, "", DELETE), (FOLLOWER_REPLICAS, "", DELETE)]
    if alter(admin, TOPIC, topic, changes) is not None:
        raise SystemExit("clearing the lists failed")
    for key in (LEADER_REPLICAS, FOLLOWER_REPLICAS):
        expect(admin, TOPIC, topic, key, ("", ConfigSource.DEFAULT_CONFIG))
    print("ok")


if __name__ == "__main__":
    main()
