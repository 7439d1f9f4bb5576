#!/usr/bin/env python3
"""kafka-python's KafkaAdminClient ACL calls against a broker with no authorizer, run by
tests/tests/admin_apis.rs.

Usage: acls.py BOOTSTRAP TOPIC

Kafka with no authorizer configured refuses every ACL request with SECURITY_DISABLED, and so
does this broker: describe_acls raises SecurityDisabledError, create_acls lists each ACL as
failed with it, delete_acls reports it for the filter. Exits 0 when all three hold.
"""
import sys

from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType,
                         ACLResourcePatternType, KafkaAdminClient, ResourcePattern,
                         ResourcePatternFilter, ResourceType)
from kafka.errors import SecurityDisabledError


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    anything = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                         permission_type=ACLPermissionType.ANY,
                         resource_pattern=ResourcePatternFilter(
                             ResourceType.ANY, None, ACLResourcePatternType.ANY))
    try:
        listed = admin.describe_acls(anything)
        fail("describe_acls succeeded: %r" % (listed,))
    except SecurityDisabledError:
        print("describe_acls: SecurityDisabledError")

    acls = [ACL(principal="User:alice", host="*", operation=op,
                permission_type=ACLPermissionType.ALLOW,
                resource_pattern=ResourcePattern(ResourceType.TOPIC, topic))
            for op in (ACLOperation.READ, ACLOperation.WRITE)]
    result = admin.create_acls(acls)
    if result["succeeded"] or len(result["failed"]) != 2 or any(
            err is not SecurityDisabledError for _, err in result["failed"]):
        fail("create_acls: %r" % (result,))
    print("create_acls: both refused with SecurityDisabledError")

    deleted = admin.delete_acls([anything])
    if len(deleted) != 1 or deleted[0][1] or deleted[0][2] is not SecurityDisabledError:
        fail("delete_acls: %r" % (deleted,))
    print("delete_acls: SecurityDisabledError, nothing matched")
    admin.close()


if __name__ == "__main__":
    main()
