#!/usr/bin/env python3
"""kafka-python's KafkaAdminClient against a broker with no authorizer, run by
tests/tests/admin_apis.rs.

Usage: kafka_python_admin.py BOOTSTRAP TOPIC GROUP

TOPIC exists and GROUP has committed offsets. kafka-python asks for authorized operations on
every admin Metadata and DescribeGroups call, so these only work when the broker answers with
sets it can read (with no authorizer, every operation Kafka defines for the resource):
list_topics, describe_topics, describe_cluster, describe_consumer_groups, delete_records.
ACL calls are refused as Kafka refuses them with no authorizer: describe_acls raises
SecurityDisabledError, create_acls lists each ACL as failed with it, delete_acls reports it
for the filter. Exits 0 when all of that holds.
"""
import sys

from kafka import TopicPartition
from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType,
                         ACLResourcePatternType, KafkaAdminClient, ResourcePattern,
                         ResourcePatternFilter, ResourceType)
from kafka.errors import SecurityDisabledError

TOPIC_OPERATIONS = {"READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE",
                    "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}
CLUSTER_OPERATIONS = {"CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS",
                      "ALTER_CONFIGS", "IDEMPOTENT_WRITE"}
GROUP_OPERATIONS = {"READ", "DESCRIBE", "DELETE"}


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def described(admin, topic, group):
    if topic not in admin.list_topics():
        fail("list_topics: %s missing" % topic)
    [t] = admin.describe_topics([topic])
    if t["error_code"] != 0 or set(t["authorized_operations"]) != TOPIC_OPERATIONS:
        fail("describe_topics: %r" % t)
    cluster = admin.describe_cluster()
    if set(cluster["authorized_operations"]) != CLUSTER_OPERATIONS:
        fail("describe_cluster: %r" % cluster)
    [g] = admin.describe_consumer_groups([group])
    if g.error_code != 0 or g.state != "Empty" or set(g.authorized_operations) != \
            GROUP_OPERATIONS:
        fail("describe_consumer_groups: %r" % (g,))
    deleted = admin.delete_records({TopicPartition(topic, 0): 1})
    if deleted[TopicPartition(topic, 0)]["low_watermark"] != 1:
        fail("delete_records: %r" % deleted)
    print("described topic, cluster and group with every operation; deleted records")


def acls(admin, topic):
    anything = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                         permission_type=ACLPermissionType.ANY,
                         resource_pattern=ResourcePatternFilter(
                             ResourceType.ANY, None, ACLResourcePatternType.ANY))
    try:
        listed = admin.describe_acls(anything)
        fail("describe_acls succeeded: %r" % (listed,))
    except SecurityDisabledError:
        print("describe_acls: SecurityDisabledError")

    bindings = [ACL(principal="User:alice", host="*", operation=op,
                    permission_type=ACLPermissionType.ALLOW,
                    resource_pattern=ResourcePattern(ResourceType.TOPIC, topic))
                for op in (ACLOperation.READ, ACLOperation.WRITE)]
    result = admin.create_acls(bindings)
    if result["succeeded"] or len(result["failed"]) != 2 or any(
            err is not SecurityDisabledError for _, err in result["failed"]):
        fail("create_acls: %r" % (result,))
    print("create_acls: both refused with SecurityDisabledError")

    deleted = admin.delete_acls([anything])
    if len(deleted) != 1 or deleted[0][1] or deleted[0][2] is not SecurityDisabledError:
        fail("delete_acls: %r" % (deleted,))
    print("delete_acls: SecurityDisabledError, nothing matched")


def main():
    bootstrap, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    described(admin, topic, group)
    acls(admin, topic)
    admin.close()


if __name__ == "__main__":
    main()
