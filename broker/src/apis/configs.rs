//! DescribeConfigs (topics and brokers), IncrementalAlterConfigs and the legacy AlterConfigs.
//!
//! What can change at run time: a topic's overrides; in a cluster, the cluster-level configs
//! (the broker resource with an empty name: `min.insync.replicas` and the replication throttle
//! rates) and one broker's own throttle rates (the broker resource named by its id). Both
//! travel to the controller and live in the metadata log. Every other broker config is static.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::admin::{topic_error_code, CONFIG_SOURCE_DEFAULT, CONFIG_SOURCE_TOPIC};
use super::{code, KafkaApis, Reply};
use crate::cluster::controller::{CLUSTER_CONFIGS, CLUSTER_MIN_ISR};
use crate::raft::NodeId;
use crate::replica::{quota, topic_config, TopicError};
use crate::storage::Storage;
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::ResponseKind;

/// Whose configs a change is for.
#[derive(Clone)]
enum Target {
    Topic(String),
    /// The default broker resource (empty name): the cluster-level configs.
    Cluster,
    /// One broker's dynamic configs.
    Broker(NodeId),
}

impl Target {
    fn scope(&self) -> Scope {
        match self {
            Target::Topic(_) => Scope::Topic,
            Target::Cluster => Scope::Cluster,
            Target::Broker(_) => Scope::Broker,
        }
    }
}

/// What a request asks of one resource's configs.
#[derive(Clone)]
enum Change {
    /// IncrementalAlterConfigs: operations on the current set.
    Operations(Vec<AlterableConfig>),
    /// The legacy AlterConfigs: the whole new set (min.insync.replicas included for the
    /// default broker resource).
    Replace(Vec<(String, String)>),
}

impl Change {
    fn apply(&self, scope: &Scope, configs: &mut BTreeMap<String, String>) -> Result<(), Refusal> {
        match self {
            Change::Operations(operations) => {
                for operation in operations {
                    apply_operation(scope, configs, operation)?;
                }
            }
            Change::Replace(new) => {
                configs.clear();
                for (key, value) in new {
                    scope.validate(key, value)?;
                    configs.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(())
    }
}

/// A config change for the controller: the new set and the set it was computed from.
struct Forward {
    /// The resource's name in the response.
    name: String,
    target: Target,
    change: Change,
    base: BTreeMap<String, String>,
    configs: BTreeMap<String, String>,
}

impl Forward {
    /// The controller's request. Operations carry `base` as their precondition: if the set
    /// changed since this broker read it (another change went through another broker), the
    /// controller refuses, and the operations are applied again to the newer set.
    fn request(&self) -> crate::cluster::controller::ControllerRequest {
        use crate::cluster::controller::ControllerRequest;
        let configs = self.configs.clone().into_iter().collect();
        let expected = match self.change {
            Change::Operations(_) => Some(self.base.clone().into_iter().collect()),
            Change::Replace(_) => None,
        };
        match &self.target {
            Target::Topic(name) => ControllerRequest::AlterTopicConfigs {
                name: name.clone(),
                configs,
                expected,
            },
            Target::Cluster => ControllerRequest::AlterClusterConfigs { configs, expected },
            Target::Broker(node_id) => ControllerRequest::AlterBrokerConfigs {
                node_id: *node_id,
                configs,
                expected,
            },
        }
    }
}

/// Longest a committed config change waits to be applied on the broker that forwarded it, and
/// a refused one for that broker to see the change that overtook it.
const APPLIED_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);
const APPLIED_POLL: std::time::Duration = std::time::Duration::from_millis(5);
/// How many times a resource's operations are sent to the controller, each on a newer set,
/// while changes sent through other brokers keep overtaking them.
const FORWARD_ATTEMPTS_MAX: u32 = 8;

/// Why a config change was refused: the resource's error code and message.
type Refusal = (i16, String);

/// Whose configs a change is for, which decides the keys and values it may hold.
enum Scope {
    Topic,
    /// The default broker resource (empty name): [`CLUSTER_CONFIGS`].
    Cluster,
    /// One broker: [`quota::BROKER_CONFIGS`], the replication throttle rates.
    Broker,
}

impl Scope {
    fn is_known(&self, key: &str) -> bool {
        match self {
            Scope::Topic => topic_config::is_known(key),
            Scope::Cluster => CLUSTER_CONFIGS.contains(&key),
            Scope::Broker => quota::BROKER_CONFIGS.contains(&key),
        }
    }

    /// Checks one key and value: an unknown key of a topic or the cluster is an invalid
    /// config, a broker config that cannot change at run time an invalid request (Kafka's
    /// answers to both).
    fn validate(&self, key: &str, value: &str) -> Result<(), Refusal> {
        let invalid = |m: String| (code(ResponseError::InvalidConfig), m);
        match self {
            Scope::Topic => topic_config::validate(key, value).map_err(invalid),
            Scope::Cluster | Scope::Broker if quota::BROKER_CONFIGS.contains(&key) => {
                quota::validate_rate(value)
                    .map_err(|e| invalid(format!("invalid value {value:?} for {key}: {e}")))
            }
            Scope::Cluster if key == CLUSTER_MIN_ISR => {
                topic_config::validate(key, value).map_err(invalid)
            }
            Scope::Cluster => Err(invalid(format!(
                "{key} cannot be set cluster-wide; only {CLUSTER_CONFIGS:?}"
            ))),
            Scope::Broker => Err((
                code(ResponseError::InvalidRequest),
                format!(
                    "{key} cannot be set per broker: only {:?} can; {CLUSTER_MIN_ISR} can be set \
                     cluster-wide (the broker resource with an empty name, kafka-configs \
                     --entity-default), and the other broker configs are static (command line)",
                    quota::BROKER_CONFIGS
                ),
            )),
        }
    }
}

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// Kafka's DYNAMIC_BROKER_CONFIG: set for this one broker, in the metadata log.
const CONFIG_SOURCE_DYNAMIC_BROKER: i8 = 2;
/// Kafka's DYNAMIC_DEFAULT_BROKER_CONFIG: set cluster-wide, in the metadata log.
const CONFIG_SOURCE_DYNAMIC_DEFAULT: i8 = 3;
const CONFIG_SOURCE_STATIC_BROKER: i8 = 4;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn entry(
    name: &str,
    value: String,
    source: i8,
    read_only: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value)))
        .with_read_only(read_only)
        .with_config_source(source);
    if version >= 3 {
        // STRING (2) for the enumerations, LIST (7) for the throttled-replicas lists, LONG (5)
        // for the numbers.
        let config_type = match name {
            "cleanup.policy" | "compression.type" | "message.timestamp.type" => 2,
            n if topic_config::is_list(n) => 7,
            _ => 5,
        };
        e = e.with_config_type(config_type);
    }
    e
}

/// One IncrementalAlterConfigs operation on `configs`: SET, DELETE, or for the list-valued
/// topic configs APPEND and SUBTRACT.
fn apply_operation(
    scope: &Scope,
    configs: &mut BTreeMap<String, String>,
    change: &AlterableConfig,
) -> Result<(), Refusal> {
    let key = change.name.as_str();
    let value = change
        .value
        .as_ref()
        .map(|v| v.as_str())
        .unwrap_or_default();
    match change.config_operation {
        OP_SET => {
            scope.validate(key, value)?;
            configs.insert(key.to_string(), value.to_string());
        }
        OP_DELETE => {
            if !scope.is_known(key) {
                // Kafka's answer to a key it does not know.
                scope.validate(key, "")?;
            }
            configs.remove(key);
        }
        op @ (OP_APPEND | OP_SUBTRACT) if matches!(scope, Scope::Topic) && topic_config::is_list(key) => {
            let current = configs.get(key).map_or("", String::as_str);
            let edited = quota::edit_list(current, value, op == OP_SUBTRACT);
            scope.validate(key, &edited)?;
            if edited.is_empty() {
                configs.remove(key);
            } else {
                configs.insert(key.to_string(), edited);
            }
        }
        op => {
            return Err((
                code(ResponseError::InvalidConfig),
                format!("operation {op} on {key}: APPEND and SUBTRACT apply to list-valued topic configs only"),
            ))
        }
    }
    Ok(())
}

impl<S: Storage + Clone> KafkaApis<S> {
    /// A topic config's value and its source: the topic's override, the cluster-level value,
    /// or this broker's default.
    pub(super) fn topic_config_value(
        &self,
        overrides: &BTreeMap<String, String>,
        name: &str,
    ) -> (String, i8) {
        if let Some(v) = overrides.get(name) {
            return (v.clone(), CONFIG_SOURCE_TOPIC);
        }
        match self.replicas.topic_default(name) {
            (v, true) => (v, CONFIG_SOURCE_DYNAMIC_DEFAULT),
            (v, false) => (v, CONFIG_SOURCE_DEFAULT),
        }
    }

    pub(super) fn describe_configs(
        &self,
        request: DescribeConfigsRequest,
        version: i16,
    ) -> DescribeConfigsResponse {
        let results = request
            .resources
            .into_iter()
            .map(|res| {
                let wanted = |name: &str| {
                    res.configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
                };
                let r = DescribeConfigsResult::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone());
                match res.resource_type {
                    RESOURCE_TOPIC => {
                        let Some(topic) = self.replicas.topic(res.resource_name.as_str()) else {
                            return r
                                .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                                .with_error_message(Some(StrBytes::from_static_str(
                                    "unknown topic",
                                )));
                        };
                        let overrides = topic.configs();
                        let configs = topic_config::names()
                            .filter(|n| wanted(n))
                            .map(|n| {
                                let (value, source) = self.topic_config_value(&overrides, n);
                                entry(n, value, source, false, version)
                            })
                            .collect();
                        r.with_configs(configs)
                    }
                    RESOURCE_BROKER => {
                        let c = self.replicas.config();
                        let all = [
                            ("broker.id", c.node_id.to_string()),
                            ("num.partitions", c.default_partitions.to_string()),
                            (
                                "auto.create.topics.enable",
                                c.auto_create_topics.to_string(),
                            ),
                            ("log.retention.ms", c.log.retention_ms.to_string()),
                            ("log.retention.bytes", c.log.retention_bytes.to_string()),
                            ("log.segment.bytes", c.log.segment_bytes.to_string()),
                            (
                                "log.retention.check.interval.ms",
                                c.retention_check_interval_ms.to_string(),
                            ),
                            ("message.max.bytes", c.log.max_message_bytes.to_string()),
                            ("socket.request.max.bytes", c.max_frame_bytes.to_string()),
                            ("connections.max.idle.ms", c.idle_timeout_ms.to_string()),
                        ];
                        let cluster = self.replicas.cluster_configs();
                        if res.resource_name.is_empty() {
                            // The default broker resource: the cluster-level dynamic configs.
                            let configs = cluster
                                .iter()
                                .filter(|(n, _)| wanted(n))
                                .map(|(n, v)| {
                                    entry(
                                        n,
                                        v.clone(),
                                        CONFIG_SOURCE_DYNAMIC_DEFAULT,
                                        false,
                                        version,
                                    )
                                })
                                .collect();
                            return r.with_configs(configs);
                        }
                        let min_isr = match cluster.get(CLUSTER_MIN_ISR) {
                            Some(v) => (v.clone(), CONFIG_SOURCE_DYNAMIC_DEFAULT),
                            None => (
                                c.cluster.min_insync_replicas.to_string(),
                                CONFIG_SOURCE_STATIC_BROKER,
                            ),
                        };
                        // The throttle rates: this broker's own, else the cluster's, else none.
                        let mine = self.cluster.as_ref().and_then(|view| {
                            let id = res.resource_name.parse::<NodeId>().ok()?;
                            let image = view.image();
                            Some(image.broker_configs.get(&id).cloned().unwrap_or_default())
                        });
                        let rates = mine.iter().flat_map(|mine| {
                            quota::BROKER_CONFIGS.iter().map(|&n| {
                                match (mine.get(n), cluster.get(n)) {
                                    (Some(v), _) => (n, v.clone(), CONFIG_SOURCE_DYNAMIC_BROKER),
                                    (None, Some(v)) => {
                                        (n, v.clone(), CONFIG_SOURCE_DYNAMIC_DEFAULT)
                                    }
                                    (None, None) => (
                                        n,
                                        quota::RATE_UNLIMITED.to_string(),
                                        CONFIG_SOURCE_DEFAULT,
                                    ),
                                }
                            })
                        });
                        let configs = all
                            .into_iter()
                            .map(|(n, v)| (n, v, CONFIG_SOURCE_STATIC_BROKER))
                            .chain([(CLUSTER_MIN_ISR, min_isr.0, min_isr.1)])
                            .chain(rates)
                            .filter(|(n, _, _)| wanted(n))
                            .map(|(n, v, source)| {
                                let read_only = source == CONFIG_SOURCE_STATIC_BROKER;
                                entry(n, v, source, read_only, version)
                            })
                            .collect();
                        r.with_configs(configs)
                    }
                    other => r
                        .with_error_code(code(ResponseError::InvalidRequest))
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "resource type {other} is not supported"
                        )))),
                }
            })
            .collect();
        DescribeConfigsResponse::default().with_results(results)
    }

    /// Whose configs a request's resource names: a topic, or in a cluster the broker
    /// resource with an empty name (Kafka's default broker resource: the cluster-level
    /// configs) or one broker.
    fn target(&self, resource_type: i8, name: &str) -> Result<Target, Refusal> {
        match (resource_type, &self.cluster) {
            (RESOURCE_TOPIC, _) => Ok(Target::Topic(name.to_string())),
            (RESOURCE_BROKER, Some(_)) if name.is_empty() => Ok(Target::Cluster),
            (RESOURCE_BROKER, Some(_)) => match name.parse::<NodeId>() {
                Ok(id) if id >= 0 => Ok(Target::Broker(id)),
                _ => Err((
                    code(ResponseError::InvalidRequest),
                    format!("{name:?} is not a broker id"),
                )),
            },
            _ => Err((
                code(ResponseError::InvalidRequest),
                "only topic configs can be altered; a standalone broker's configs are static"
                    .into(),
            )),
        }
    }

    /// The target's configs as this broker has them.
    fn current_configs(&self, target: &Target) -> Result<BTreeMap<String, String>, Refusal> {
        match target {
            Target::Topic(name) => match self.replicas.topic(name) {
                Some(topic) => Ok(topic.configs()),
                None => Err((
                    topic_error_code(&TopicError::UnknownTopic),
                    "unknown topic".into(),
                )),
            },
            Target::Cluster => Ok(self.replicas.cluster_configs()),
            Target::Broker(id) => Ok(self
                .cluster
                .as_ref()
                .and_then(|view| view.image().broker_configs.get(id).cloned())
                .unwrap_or_default()),
        }
    }

    /// `change` applied to the target's current configs: the set it started from and the new
    /// one, or why it is refused.
    fn edit(&self, target: &Target, change: &Change) -> Result<Forward, Refusal> {
        let base = self.current_configs(target)?;
        let mut configs = base.clone();
        change.apply(&target.scope(), &mut configs)?;
        if matches!(target, Target::Cluster) && !configs.contains_key(CLUSTER_MIN_ISR) {
            let message = format!("the cluster-level {CLUSTER_MIN_ISR} cannot be removed");
            return Err((code(ResponseError::InvalidConfig), message));
        }
        Ok(Forward {
            name: String::new(),
            target: target.clone(),
            change: change.clone(),
            base,
            configs,
        })
    }

    /// Applies `change` to the configs of a resource, unless `validate_only`. A standalone
    /// broker changes a topic's configs itself; a cluster's configs live in the metadata log,
    /// so the change goes into `forward` for the controller, and every broker applies it from
    /// the image. Returns the error code and message for the resource's response.
    fn alter_resource_configs(
        &self,
        resource_type: i8,
        name: &str,
        validate_only: bool,
        forward: &mut Vec<Forward>,
        change: Change,
    ) -> (i16, Option<String>) {
        let edited = self
            .target(resource_type, name)
            .and_then(|target| self.edit(&target, &change));
        let mut f = match edited {
            Ok(f) => f,
            Err((error, message)) => return (error, Some(message)),
        };
        if validate_only {
            return (0, None);
        }
        if self.cluster.is_some() {
            f.name = name.to_string();
            forward.push(f);
            return (0, None);
        }
        match self.replicas.set_topic_configs(name, f.configs) {
            Ok(()) => (0, None),
            Err(e) => (topic_error_code(&e), Some(e.message())),
        }
    }

    /// Sends the config changes `forward` collected to the active controller, then answers.
    fn forward_configs<R: Send + 'static>(
        &self,
        response: R,
        forward: Vec<Forward>,
        set_error: fn(&mut R, &str, i16, String),
        into_kind: fn(R) -> ResponseKind,
    ) -> Reply {
        let Some(view) = self.cluster.clone().filter(|_| !forward.is_empty()) else {
            return Reply::Now(into_kind(response));
        };
        let apis = self.clone();
        Reply::Later(Box::pin(async move {
            use crate::cluster::controller::ControllerError;
            let mut response = response;
            for mut f in forward {
                let name = f.name.clone();
                // Until this broker's copy of the target's configs is `want` (or differs from
                // it), for at most APPLIED_WAIT_MAX.
                let wait = |target: Target, want: BTreeMap<String, String>, equal: bool| {
                    let apis = apis.clone();
                    async move {
                        let deadline = tokio::time::Instant::now() + APPLIED_WAIT_MAX;
                        while (apis.current_configs(&target).as_ref() == Ok(&want)) != equal
                            && tokio::time::Instant::now() < deadline
                        {
                            tokio::time::sleep(APPLIED_POLL).await;
                        }
                    }
                };
                let mut attempt = 1;
                let refusal = loop {
                    match view.controller_request(f.request()).await.error {
                        ControllerError::None => {
                            // Answer once this broker applies the change too, so a next
                            // change sent here starts from it.
                            wait(f.target.clone(), f.configs.clone(), true).await;
                            break None;
                        }
                        ControllerError::StaleRequest if attempt < FORWARD_ATTEMPTS_MAX => {
                            // Another change overtook this one: once this broker has it,
                            // apply the operations again, to the newer set.
                            attempt += 1;
                            wait(f.target.clone(), f.base.clone(), false).await;
                            match apis.edit(&f.target, &f.change) {
                                Ok(next) => {
                                    f = Forward {
                                        name: f.name,
                                        ..next
                                    }
                                }
                                Err(refusal) => break Some(refusal),
                            }
                        }
                        ControllerError::StaleRequest => {
                            break Some((
                                code(ResponseError::RequestTimedOut),
                                format!(
                                    "{FORWARD_ATTEMPTS_MAX} attempts were each overtaken by \
                                     another change to the same configs; retry"
                                ),
                            ))
                        }
                        ControllerError::InvalidRequest(message) => {
                            break Some((code(ResponseError::InvalidConfig), message))
                        }
                        ControllerError::UnknownTopic => {
                            break Some((
                                code(ResponseError::UnknownTopicOrPartition),
                                "unknown topic".into(),
                            ))
                        }
                        e => {
                            break Some((
                                code(ResponseError::NotController),
                                format!("the controller did not apply the change: {e:?}"),
                            ))
                        }
                    }
                };
                if let Some((error, message)) = refusal {
                    set_error(&mut response, &name, error, message);
                }
            }
            into_kind(response)
        }))
    }

    pub(super) fn incremental_alter_configs(
        &self,
        request: IncrementalAlterConfigsRequest,
        _version: i16,
    ) -> Reply {
        let validate_only = request.validate_only;
        let mut forward = Vec::new();
        let responses = request
            .resources
            .into_iter()
            .map(|res| {
                let (error, message) = self.alter_resource_configs(
                    res.resource_type,
                    res.resource_name.as_str(),
                    validate_only,
                    &mut forward,
                    Change::Operations(res.configs.clone()),
                );
                AlterConfigsResourceResponse::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name)
                    .with_error_code(error)
                    .with_error_message(message.map(StrBytes::from_string))
            })
            .collect();
        self.forward_configs(
            IncrementalAlterConfigsResponse::default().with_responses(responses),
            forward,
            |r, name, error, message| {
                for res in r
                    .responses
                    .iter_mut()
                    .filter(|x| x.resource_name.as_str() == name)
                {
                    res.error_code = error;
                    res.error_message = Some(StrBytes::from_string(message.clone()));
                }
            },
            ResponseKind::IncrementalAlterConfigs,
        )
    }

    /// The legacy AlterConfigs: the given set replaces all of the topic's overrides.
    pub(super) fn alter_configs(&self, request: AlterConfigsRequest, _version: i16) -> Reply {
        let validate_only = request.validate_only;
        let mut forward = Vec::new();
        let responses = request
            .resources
            .into_iter()
            .map(|res| {
                let (error, message) = self.alter_resource_configs(
                    res.resource_type,
                    res.resource_name.as_str(),
                    validate_only,
                    &mut forward,
                    Change::Replace(
                        res.configs
                            .iter()
                            .filter_map(|c| {
                                let value = c.value.as_ref()?;
                                Some((c.name.to_string(), value.to_string()))
                            })
                            .collect(),
                    ),
                );
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name)
                    .with_error_code(error)
                    .with_error_message(message.map(StrBytes::from_string))
            })
            .collect();
        self.forward_configs(
            AlterConfigsResponse::default().with_responses(responses),
            forward,
            |r, name, error, message| {
                for res in r
                    .responses
                    .iter_mut()
                    .filter(|x| x.resource_name.as_str() == name)
                {
                    res.error_code = error;
                    res.error_message = Some(StrBytes::from_string(message.clone()));
                }
            },
            ResponseKind::AlterConfigs,
        )
    }
}
