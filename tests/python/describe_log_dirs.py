#!/usr/bin/env python3
"""kafka-python's KafkaAdminClient.describe_log_dirs (DescribeLogDirs v0, which Kafka 4 dropped
but kafka-python still sends), run by tests/tests/admin_apis.rs.

Usage: describe_log_dirs.py BOOTSTRAP

Prints one line per log directory, "DIR ERROR", and under it one line per replica held there,
"  TOPIC PARTITION SIZE LAG FUTURE"; the caller checks them against the broker's files.
"""
import sys

from kafka.admin import KafkaAdminClient


def main():
    admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=30000)
    response = admin.describe_log_dirs().to_object()
    for d in response["log_dirs"]:
        print(f"{d['log_dir']} {d['error_code']}")
        for t in d["topics"]:
            for p in t["partitions"]:
                print(f"  {t['name']} {p['partition_index']} {p['partition_size']}"
                      f" {p['offset_lag']} {p['is_future_key']}")
    admin.close()


if __name__ == "__main__":
    main()
