//! A change to a set of dynamic configs, as clients ask for it: IncrementalAlterConfigs'
//! operations (SET, DELETE, and APPEND / SUBTRACT on list values) or the legacy AlterConfigs'
//! whole new set, and the rules each key and value must follow for its [`Scope`] (a topic, the
//! cluster, one broker).
//!
//! Sans-IO and shared: a broker applies a change to its own copy to answer at once with
//! Kafka's error codes (and for `validate_only`); the active controller applies the same change
//! to the set in the metadata log, so that changes sent through different brokers at the same
//! moment compose instead of overwriting each other (Kafka's controller does the same).

use std::collections::BTreeMap;

use super::controller::{CLUSTER_CONFIGS, CLUSTER_MIN_ISR};
use crate::replica::{quota, topic_config};

/// Whose configs a change is for, which decides the keys and values it may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Topic,
    /// The default broker resource (empty name): [`CLUSTER_CONFIGS`].
    Cluster,
    /// One broker: [`quota::BROKER_CONFIGS`], the replication throttle rates.
    Broker,
}

/// Why a change was refused, in Kafka's two kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A key or value that is not valid here (INVALID_CONFIG).
    InvalidConfig(String),
    /// A broker config that cannot change at run time (INVALID_REQUEST).
    InvalidRequest(String),
}

impl Refusal {
    pub fn message(&self) -> &str {
        match self {
            Refusal::InvalidConfig(m) | Refusal::InvalidRequest(m) => m,
        }
    }
}

/// One IncrementalAlterConfigs operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
    /// Adds the comma-separated entries to a list value.
    Append(String, String),
    /// Removes the comma-separated entries from a list value.
    Subtract(String, String),
}

/// Kafka's IncrementalAlterConfigs operation codes.
pub const OP_SET: i8 = 0;
pub const OP_DELETE: i8 = 1;
pub const OP_APPEND: i8 = 2;
pub const OP_SUBTRACT: i8 = 3;

impl ConfigOp {
    /// The operation a client sent: its code, key and value (none for DELETE).
    pub fn from_wire(op: i8, key: &str, value: Option<&str>) -> Result<ConfigOp, Refusal> {
        let (key, value) = (key.to_string(), value.unwrap_or_default().to_string());
        match op {
            OP_SET => Ok(ConfigOp::Set(key, value)),
            OP_DELETE => Ok(ConfigOp::Delete(key)),
            OP_APPEND => Ok(ConfigOp::Append(key, value)),
            OP_SUBTRACT => Ok(ConfigOp::Subtract(key, value)),
            other => Err(Refusal::InvalidConfig(format!(
                "unknown config operation {other} on {key}"
            ))),
        }
    }

    pub fn code(&self) -> i8 {
        match self {
            ConfigOp::Set(..) => OP_SET,
            ConfigOp::Delete(_) => OP_DELETE,
            ConfigOp::Append(..) => OP_APPEND,
            ConfigOp::Subtract(..) => OP_SUBTRACT,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            ConfigOp::Set(k, _) | ConfigOp::Delete(k) => k,
            ConfigOp::Append(k, _) | ConfigOp::Subtract(k, _) => k,
        }
    }

    pub fn value(&self) -> &str {
        match self {
            ConfigOp::Delete(_) => "",
            ConfigOp::Set(_, v) | ConfigOp::Append(_, v) | ConfigOp::Subtract(_, v) => v,
        }
    }
}

/// What a request asks of one resource's configs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigChange {
    /// IncrementalAlterConfigs: operations on the current set, in order.
    Operations(Vec<ConfigOp>),
    /// The legacy AlterConfigs: the whole new set (`min.insync.replicas` included for the
    /// cluster).
    Replace(Vec<(String, String)>),
}

impl Scope {
    fn is_known(self, key: &str) -> bool {
        match self {
            Scope::Topic => topic_config::is_known(key),
            Scope::Cluster => CLUSTER_CONFIGS.contains(&key),
            Scope::Broker => quota::BROKER_CONFIGS.contains(&key),
        }
    }

    /// Checks one key and value: an unknown key of a topic or the cluster is an invalid
    /// config, a broker config that cannot change at run time an invalid request (Kafka's
    /// answers to both).
    pub fn validate(self, key: &str, value: &str) -> Result<(), Refusal> {
        match self {
            Scope::Topic => topic_config::validate(key, value).map_err(Refusal::InvalidConfig),
            Scope::Cluster | Scope::Broker if quota::BROKER_CONFIGS.contains(&key) => {
                quota::validate_rate(value).map_err(|e| {
                    Refusal::InvalidConfig(format!("invalid value {value:?} for {key}: {e}"))
                })
            }
            Scope::Cluster if key == CLUSTER_MIN_ISR => {
                topic_config::validate(key, value).map_err(Refusal::InvalidConfig)
            }
            Scope::Cluster => Err(Refusal::InvalidConfig(format!(
                "{key} cannot be set cluster-wide; only {CLUSTER_CONFIGS:?}"
            ))),
            Scope::Broker => Err(Refusal::InvalidRequest(format!(
                "{key} cannot be set per broker: only {:?} can; {CLUSTER_MIN_ISR} can be set \
                 cluster-wide (the broker resource with an empty name, kafka-configs \
                 --entity-default), and the other broker configs are static (command line)",
                quota::BROKER_CONFIGS
            ))),
        }
    }

    fn apply_operation(
        self,
        configs: &mut BTreeMap<String, String>,
        op: &ConfigOp,
    ) -> Result<(), Refusal> {
        match op {
            ConfigOp::Set(key, value) => {
                self.validate(key, value)?;
                configs.insert(key.clone(), value.clone());
            }
            ConfigOp::Delete(key) => {
                if !self.is_known(key) {
                    // Kafka's answer to a key it does not know.
                    self.validate(key, "")?;
                }
                configs.remove(key);
            }
            ConfigOp::Append(key, value) | ConfigOp::Subtract(key, value)
                if self == Scope::Topic && topic_config::is_list(key) =>
            {
                let current = configs.get(key).map_or("", String::as_str);
                let subtract = matches!(op, ConfigOp::Subtract(..));
                let edited = quota::edit_list(current, value, subtract);
                self.validate(key, &edited)?;
                if edited.is_empty() {
                    configs.remove(key);
                } else {
                    configs.insert(key.clone(), edited);
                }
            }
            other => {
                return Err(Refusal::InvalidConfig(format!(
                    "operation {} on {}: APPEND and SUBTRACT apply to list-valued topic \
                     configs only",
                    other.code(),
                    other.key()
                )))
            }
        }
        Ok(())
    }

    /// `change` applied to `configs`, or why it is refused (then `configs` is unchanged).
    pub fn apply(
        self,
        change: &ConfigChange,
        configs: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Refusal> {
        let keys: Vec<&str> = match change {
            ConfigChange::Operations(ops) => ops.iter().map(ConfigOp::key).collect(),
            ConfigChange::Replace(new) => new.iter().map(|(k, _)| k.as_str()).collect(),
        };
        let distinct: std::collections::BTreeSet<&str> = keys.iter().copied().collect();
        if distinct.len() != keys.len() {
            // Kafka's answer too: which of the two was meant is unknowable.
            return Err(Refusal::InvalidRequest(
                "a config key is named twice in one resource".into(),
            ));
        }
        let mut next = configs.clone();
        match change {
            ConfigChange::Operations(ops) => {
                for op in ops {
                    self.apply_operation(&mut next, op)?;
                }
            }
            ConfigChange::Replace(new) => {
                next.clear();
                for (key, value) in new {
                    self.validate(key, value)?;
                    next.insert(key.clone(), value.clone());
                }
            }
        }
        if self == Scope::Cluster && !next.contains_key(CLUSTER_MIN_ISR) {
            return Err(Refusal::InvalidConfig(format!(
                "the cluster-level {CLUSTER_MIN_ISR} cannot be removed"
            )));
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operations_compose_on_the_current_set() {
        let list = quota::FOLLOWER_REPLICAS;
        let base = set(&[("retention.ms", "1000"), (list, "0:1")]);
        let change = ConfigChange::Operations(vec![
            ConfigOp::Append(list.into(), "1:2,0:1".into()),
            ConfigOp::Delete("retention.ms".into()),
            ConfigOp::Set("segment.ms".into(), "5000".into()),
        ]);
        let next = Scope::Topic.apply(&change, &base).expect("valid");
        assert_eq!(next, set(&[(list, "0:1,1:2"), ("segment.ms", "5000")]));
        let less =
            ConfigChange::Operations(vec![ConfigOp::Subtract(list.into(), "0:1,1:2".into())]);
        let next = Scope::Topic.apply(&less, &next).expect("valid");
        assert_eq!(
            next,
            set(&[("segment.ms", "5000")]),
            "an emptied list is removed"
        );
    }

    #[test]
    fn refusals_say_which_kind_and_change_nothing() {
        let base = set(&[(CLUSTER_MIN_ISR, "2")]);
        let bad =
            |scope: Scope, ops: Vec<ConfigOp>| scope.apply(&ConfigChange::Operations(ops), &base);
        assert!(matches!(
            bad(
                Scope::Topic,
                vec![ConfigOp::Set("retention.ms".into(), "soon".into())]
            ),
            Err(Refusal::InvalidConfig(_))
        ));
        assert!(matches!(
            bad(
                Scope::Broker,
                vec![ConfigOp::Set("log.segment.bytes".into(), "1".into())]
            ),
            Err(Refusal::InvalidRequest(_))
        ));
        assert!(matches!(
            bad(
                Scope::Cluster,
                vec![ConfigOp::Delete(CLUSTER_MIN_ISR.into())]
            ),
            Err(Refusal::InvalidConfig(_))
        ));
        assert!(matches!(
            bad(
                Scope::Cluster,
                vec![ConfigOp::Append(CLUSTER_MIN_ISR.into(), "3".into())]
            ),
            Err(Refusal::InvalidConfig(_))
        ));
        assert!(matches!(
            ConfigOp::from_wire(9, "retention.ms", None),
            Err(Refusal::InvalidConfig(_))
        ));
        let twice = ConfigChange::Operations(vec![
            ConfigOp::Set(CLUSTER_MIN_ISR.into(), "1".into()),
            ConfigOp::Set(CLUSTER_MIN_ISR.into(), "3".into()),
        ]);
        assert!(matches!(
            Scope::Cluster.apply(&twice, &base),
            Err(Refusal::InvalidRequest(_))
        ));
        let replaced = Scope::Cluster
            .apply(
                &ConfigChange::Replace(vec![(CLUSTER_MIN_ISR.into(), "3".into())]),
                &base,
            )
            .expect("valid");
        assert_eq!(replaced, set(&[(CLUSTER_MIN_ISR, "3")]));
    }
}
