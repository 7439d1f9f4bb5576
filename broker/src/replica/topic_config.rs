//! Topic configuration: the Kafka topic config keys this broker understands, their validation,
//! and how a topic's overrides plus the broker defaults become a [`LogConfig`].
//!
//! Unknown keys are refused with INVALID_CONFIG, as Kafka does, rather than stored and ignored.

use std::collections::BTreeMap;

use crate::config::BrokerConfig;
use crate::log::LogConfig;

/// One config key: its name and its validator.
struct Key {
    name: &'static str,
    check: fn(&str) -> Result<(), String>,
}

fn in_range(v: &str, min: i64, max: i64) -> Result<(), String> {
    match v.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(()),
        _ => Err(format!("must be an integer in {min}..={max}")),
    }
}

const INT_MAX: i64 = i32::MAX as i64;

const KEYS: &[Key] = &[
    Key {
        name: "retention.ms",
        check: |v| in_range(v, -1, i64::MAX),
    },
    Key {
        name: "retention.bytes",
        check: |v| in_range(v, -1, i64::MAX),
    },
    Key {
        name: "segment.bytes",
        check: |v| in_range(v, 1024, INT_MAX),
    },
    Key {
        name: "segment.ms",
        check: |v| in_range(v, 1, i64::MAX),
    },
    Key {
        name: "max.message.bytes",
        check: |v| in_range(v, crate::log::batch::HEADER_BYTES as i64, INT_MAX),
    },
    Key {
        name: "index.interval.bytes",
        check: |v| in_range(v, 1, INT_MAX),
    },
    Key {
        name: "min.insync.replicas",
        // As in Kafka, a value above the replication factor is accepted; acks=all produce then
        // fails with NOT_ENOUGH_REPLICAS.
        check: |v| in_range(v, 1, INT_MAX),
    },
    Key {
        name: "cleanup.policy",
        check: |v| match v.trim() {
            "delete" => Ok(()),
            _ => Err("only cleanup.policy=delete is supported; compaction is not built yet".into()),
        },
    },
    Key {
        name: "compression.type",
        check: |v| match v.trim() {
            "producer" => Ok(()),
            _ => Err(
                "only compression.type=producer is supported: batches are stored as sent".into(),
            ),
        },
    },
    Key {
        name: "message.timestamp.type",
        check: |v| match v.trim() {
            "CreateTime" => Ok(()),
            _ => Err("only message.timestamp.type=CreateTime is supported".into()),
        },
    },
    Key {
        name: super::quota::LEADER_REPLICAS,
        check: super::quota::validate_replicas,
    },
    Key {
        name: super::quota::FOLLOWER_REPLICAS,
        check: super::quota::validate_replicas,
    },
];

/// Whether `name` holds a comma-separated list (IncrementalAlterConfigs may APPEND to it and
/// SUBTRACT from it).
pub fn is_list(name: &str) -> bool {
    name == super::quota::LEADER_REPLICAS || name == super::quota::FOLLOWER_REPLICAS
}

/// Checks one key and value; the error text goes to the client.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    match KEYS.iter().find(|k| k.name == name) {
        Some(key) => {
            (key.check)(value).map_err(|e| format!("invalid value {value:?} for {name}: {e}"))
        }
        None => Err(format!("unknown topic config {name:?}")),
    }
}

/// Whether `name` is a topic config this broker knows.
pub fn is_known(name: &str) -> bool {
    KEYS.iter().any(|k| k.name == name)
}

/// Every key DescribeConfigs lists, in a stable order.
pub fn names() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|k| k.name)
}

/// The value of `name` that applies when a topic has no override: the broker's.
pub fn default_value(config: &BrokerConfig, name: &str) -> String {
    let defaults = &config.log;
    match name {
        "retention.ms" => defaults.retention_ms.to_string(),
        "retention.bytes" => defaults.retention_bytes.to_string(),
        "segment.bytes" => defaults.segment_bytes.to_string(),
        "segment.ms" => defaults.segment_ms.to_string(),
        "max.message.bytes" => defaults.max_message_bytes.to_string(),
        "index.interval.bytes" => defaults.index_interval_bytes.to_string(),
        "min.insync.replicas" => config.cluster.min_insync_replicas.to_string(),
        "cleanup.policy" => "delete".into(),
        "compression.type" => "producer".into(),
        "message.timestamp.type" => "CreateTime".into(),
        _ => String::new(),
    }
}

/// The log config of a topic: broker defaults with the topic's (already validated) overrides.
pub fn log_config(defaults: &LogConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let mut c = defaults.clone();
    for (name, value) in overrides {
        let v = value.trim();
        match name.as_str() {
            "retention.ms" => c.retention_ms = v.parse().unwrap_or(c.retention_ms),
            "retention.bytes" => c.retention_bytes = v.parse().unwrap_or(c.retention_bytes),
            "segment.bytes" => c.segment_bytes = v.parse().unwrap_or(c.segment_bytes),
            "segment.ms" => c.segment_ms = v.parse().unwrap_or(c.segment_ms),
            "max.message.bytes" => c.max_message_bytes = v.parse().unwrap_or(c.max_message_bytes),
            "index.interval.bytes" => {
                c.index_interval_bytes = v.parse().unwrap_or(c.index_interval_bytes)
            }
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_validate_and_apply() {
        let defaults = LogConfig::default();
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("segment.bytes", "10").is_err());
        assert!(validate("cleanup.policy", "compact").is_err());
        assert!(validate("no.such.key", "1").is_err());
        let mut o = BTreeMap::new();
        o.insert("retention.bytes".to_string(), "4096".to_string());
        o.insert("segment.bytes".to_string(), "65536".to_string());
        let c = log_config(&defaults, &o);
        assert_eq!(c.retention_bytes, 4096);
        assert_eq!(c.segment_bytes, 65536);
        assert_eq!(c.retention_ms, defaults.retention_ms);
    }

    #[test]
    fn every_key_has_a_default_that_validates() {
        let config = BrokerConfig::default();
        for name in names() {
            let v = default_value(&config, name);
            assert!(validate(name, &v).is_ok(), "{name}={v}");
        }
    }
}
