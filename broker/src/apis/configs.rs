//! DescribeConfigs (topics and brokers), IncrementalAlterConfigs and the legacy AlterConfigs.
//!
//! What can change at run time: a topic's overrides; in a cluster, the cluster-level configs
//! (the broker resource with an empty name: `min.insync.replicas` and the replication throttle
//! rates) and one broker's own throttle rates (the broker resource named by its id). In a
//! cluster, all of them live in the metadata log: a change is checked here against this
//! broker's copy, then sent to the controller, which applies it to the log's set
//! ([`crate::cluster::config_change`]). Every other broker config is static.

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
use crate::cluster::config_change::{ConfigChange, ConfigOp, Refusal, Scope};
use crate::cluster::controller::{ControllerError, ControllerRequest, CLUSTER_MIN_ISR};
use crate::raft::NodeId;
use crate::replica::{quota, topic_config, TopicError};
use crate::storage::Storage;
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

/// A config change for the controller, and the set it leads to from this broker's copy.
struct Forward {
    /// The resource's name in the response.
    name: String,
    target: Target,
    change: ConfigChange,
    configs: BTreeMap<String, String>,
}

impl Forward {
    /// The controller's request: the change itself, which the controller applies to the set
    /// in the log, so that changes sent through other brokers meanwhile are kept.
    fn request(&self) -> ControllerRequest {
        let change = self.change.clone();
        match &self.target {
            Target::Topic(name) => ControllerRequest::AlterTopicConfigs {
                name: name.clone(),
                change,
            },
            Target::Cluster => ControllerRequest::AlterClusterConfigs { change },
            Target::Broker(node_id) => ControllerRequest::AlterBrokerConfigs {
                node_id: *node_id,
                change,
            },
        }
    }
}

/// Longest a committed config change waits to be applied on the broker that forwarded it.
const APPLIED_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);
const APPLIED_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Why a config change was refused: the resource's error code and message.
type Refused = (i16, String);

fn refused(r: Refusal) -> Refused {
    match r {
        Refusal::InvalidConfig(m) => (code(ResponseError::InvalidConfig), m),
        Refusal::InvalidRequest(m) => (code(ResponseError::InvalidRequest), m),
    }
}

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// Kafka's DYNAMIC_BROKER_CONFIG: set for this one broker, in the metadata log.
const CONFIG_SOURCE_DYNAMIC_BROKER: i8 = 2;
/// Kafka's DYNAMIC_DEFAULT_BROKER_CONFIG: set cluster-wide, in the metadata log.
const CONFIG_SOURCE_DYNAMIC_DEFAULT: i8 = 3;
const CONFIG_SOURCE_STATIC_BROKER: i8 = 4;

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
                        let racked = c.cluster.rack.clone().map(|r| ("broker.rack", r));
                        let selector = (
                            "replica.selector.class",
                            c.cluster.replica_selector.class_name().to_string(),
                        );
                        let configs = all
                            .into_iter()
                            .chain(racked)
                            .chain([selector])
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
    fn target(&self, resource_type: i8, name: &str) -> Result<Target, Refused> {
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
    fn current_configs(&self, target: &Target) -> Result<BTreeMap<String, String>, Refused> {
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

    /// Applies `change` to the configs of a resource, unless `validate_only`. It is first
    /// applied to this broker's copy, to answer at once with Kafka's error codes. A standalone
    /// broker then changes a topic's configs itself; a cluster's configs live in the metadata
    /// log, so the change goes into `forward` for the controller, which applies it to the
    /// log's set, and every broker applies the result from the image. Returns the error code
    /// and message for the resource's response.
    fn alter_resource_configs(
        &self,
        resource_type: i8,
        name: &str,
        validate_only: bool,
        forward: &mut Vec<Forward>,
        change: Result<ConfigChange, Refusal>,
    ) -> (i16, Option<String>) {
        let edited = self.target(resource_type, name).and_then(|target| {
            let change = change.map_err(refused)?;
            let current = self.current_configs(&target)?;
            let configs = target.scope().apply(&change, &current).map_err(refused)?;
            Ok(Forward {
                name: name.to_string(),
                target,
                change,
                configs,
            })
        });
        let f = match edited {
            Ok(f) => f,
            Err((error, message)) => return (error, Some(message)),
        };
        if validate_only {
            return (0, None);
        }
        if self.cluster.is_some() {
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
            let mut response = response;
            for f in forward {
                let r = view.controller_request(f.request()).await;
                let (error, message) = match r.error {
                    ControllerError::None => {
                        // Answer once this broker shows the set the controller wrote, so a
                        // next change sent here is checked against it.
                        let written: BTreeMap<String, String> =
                            r.configs.unwrap_or_default().into_iter().collect();
                        let deadline = tokio::time::Instant::now() + APPLIED_WAIT_MAX;
                        while apis.current_configs(&f.target).as_ref() != Ok(&written)
                            && tokio::time::Instant::now() < deadline
                        {
                            tokio::time::sleep(APPLIED_POLL).await;
                        }
                        continue;
                    }
                    ControllerError::InvalidRequest(message) => {
                        (code(ResponseError::InvalidConfig), message)
                    }
                    ControllerError::UnknownTopic => (
                        code(ResponseError::UnknownTopicOrPartition),
                        "unknown topic".into(),
                    ),
                    e => (
                        code(ResponseError::NotController),
                        format!("the controller did not apply the change: {e:?}"),
                    ),
                };
                set_error(&mut response, &f.name, error, message);
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
                    res.configs
                        .iter()
                        .map(|c| {
                            let value = c.value.as_ref().map(|v| v.as_str());
                            ConfigOp::from_wire(c.config_operation, c.name.as_str(), value)
                        })
                        .collect::<Result<_, _>>()
                        .map(ConfigChange::Operations),
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
                    Ok(ConfigChange::Replace(
                        res.configs
                            .iter()
                            .filter_map(|c| {
                                let value = c.value.as_ref()?;
                                Some((c.name.to_string(), value.to_string()))
                            })
                            .collect(),
                    )),
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
