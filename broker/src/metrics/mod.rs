//! Broker metrics: what operators watch a Kafka cluster by, under the names Kafka's JMX beans
//! get from the common Prometheus JMX exporter rules (`kafka_server_replicamanager_...`), so
//! existing dashboards and alerts (under-replicated partitions, offline partitions, the active
//! controller) read them unchanged. Served as OpenMetrics text by [`http`] at
//! `--metrics-listen`.
//!
//! Counters are atomics the request paths bump (cheap, never read by any decision, so the
//! simulator's behaviour does not depend on them). Gauges are computed at scrape time from the
//! broker's state: the partitions from this node's metadata image (its view of the committed
//! ISR), the controller's counts only on the active controller, as in Kafka, so a sum over
//! every broker counts each partition once.

pub mod http;

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use kafka_protocol::messages::ApiKey;

use crate::apis::KafkaApis;
use crate::protocol::SUPPORTED_APIS;
use crate::storage::Storage;

/// Bound on the API keys counted (Kafka's are below 100).
const API_KEYS_MAX: usize = 128;

type Labels = Vec<(String, String)>;

/// Request time buckets, seconds: 0.5 ms doubling to about 33 s (past the longest wait a
/// request may be held: a produce timeout or a fetch's max wait).
fn request_time_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 17))
}

type TimeFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Counters bumped where things happen, and the registry that renders them with the gauges.
pub struct BrokerMetrics {
    registry: Mutex<(Registry, Gauges)>,
    /// Requests handled, by API key (a handle on the family's counter for each known key).
    requests: Vec<Option<Counter>>,
    /// Time from a request's arrival to its response written, by API; each API's series is
    /// made at its first request (the buckets of every API would bloat every scrape).
    request_time: TimeFamily,
    request_time_by_key: Vec<OnceLock<Histogram>>,
    messages_in: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    replication_bytes_out: Counter,
    failed_produce: Counter,
    isr_shrinks: Counter,
    isr_expands: Counter,
    connections: Gauge,
}

/// Gauges set from a [`Snapshot`] at every scrape.
struct Gauges {
    partitions: Gauge,
    leaders: Gauge,
    under_replicated: Gauge,
    under_min_isr: Gauge,
    at_min_isr: Gauge,
    active_controller: Gauge,
    offline: Gauge,
    fenced_brokers: Gauge,
    active_brokers: Gauge,
    quorum_leader: Gauge,
}

/// What the gauges show, computed from the broker's state at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Replicas this broker holds.
    pub partitions: i64,
    /// Of those, the ones it leads.
    pub leaders: i64,
    /// Led here with fewer ISR members than replicas.
    pub under_replicated: i64,
    /// Led here with fewer ISR members than `min.insync.replicas`: acks=all fails.
    pub under_min_isr: i64,
    /// Led here with exactly `min.insync.replicas` ISR members: one more loss fails acks=all.
    pub at_min_isr: i64,
    /// 1 on the active controller (a single broker is its own), else 0.
    pub active_controller: i64,
    /// Active controller only: partitions with no leader.
    pub offline: i64,
    /// Active controller only: registered brokers fenced, and unfenced.
    pub fenced_brokers: i64,
    pub active_brokers: i64,
    /// The quorum leader this node knows of, -1 if none (or a single broker).
    pub quorum_leader: i64,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerMetrics {
    pub fn new() -> BrokerMetrics {
        let mut r = Registry::default();
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::<u64, AtomicU64>::default();
            r.register(name, help, c.clone());
            c
        };
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        let family = Family::<Labels, Counter>::default();
        r.register(
            "kafka_network_requestmetrics_requests",
            "Requests handled, by API",
            family.clone(),
        );
        // One series per API this broker speaks, present from the start (at 0).
        let mut requests: Vec<Option<Counter>> = vec![None; API_KEYS_MAX];
        for (key, _, _) in SUPPORTED_APIS {
            let labels = vec![("request".to_string(), format!("{key:?}"))];
            let slot = requests
                .get_mut(*key as usize)
                .expect("API keys below API_KEYS_MAX");
            *slot = Some(family.get_or_create(&labels).clone());
        }
        let request_time = TimeFamily::new_with_constructor(request_time_buckets);
        r.register(
            "kafka_network_requestmetrics_totaltime_seconds",
            "Time from a request's arrival to its response written, by API",
            request_time.clone(),
        );
        let p = "kafka_server_replicamanager_";
        let c = "kafka_controller_kafkacontroller_";
        let gauges = Gauges {
            partitions: gauge(
                &mut r,
                &format!("{p}partitioncount"),
                "Replicas this broker holds",
            ),
            leaders: gauge(
                &mut r,
                &format!("{p}leadercount"),
                "Partitions this broker leads",
            ),
            under_replicated: gauge(
                &mut r,
                &format!("{p}underreplicatedpartitions"),
                "Partitions led here whose ISR is smaller than their replica set",
            ),
            under_min_isr: gauge(
                &mut r,
                &format!("{p}underminisrpartitioncount"),
                "Partitions led here whose ISR is below min.insync.replicas (acks=all fails)",
            ),
            at_min_isr: gauge(
                &mut r,
                &format!("{p}atminisrpartitioncount"),
                "Partitions led here whose ISR is exactly min.insync.replicas",
            ),
            active_controller: gauge(
                &mut r,
                &format!("{c}activecontrollercount"),
                "1 on the active controller",
            ),
            offline: gauge(
                &mut r,
                &format!("{c}offlinepartitionscount"),
                "Partitions without a leader (active controller only)",
            ),
            fenced_brokers: gauge(
                &mut r,
                &format!("{c}fencedbrokercount"),
                "Registered brokers that are fenced (active controller only)",
            ),
            active_brokers: gauge(
                &mut r,
                &format!("{c}activebrokercount"),
                "Registered brokers that are not fenced (active controller only)",
            ),
            quorum_leader: gauge(
                &mut r,
                "kafka_server_raftmetrics_currentleader",
                "The metadata quorum leader this node knows of, -1 if none",
            ),
        };
        let t = "kafka_server_brokertopicmetrics_";
        BrokerMetrics {
            requests,
            request_time,
            request_time_by_key: (0..API_KEYS_MAX).map(|_| OnceLock::new()).collect(),
            messages_in: counter(
                &mut r,
                &format!("{t}messagesin"),
                "Records appended by producers",
            ),
            bytes_in: counter(
                &mut r,
                &format!("{t}bytesin"),
                "Bytes appended by producers",
            ),
            bytes_out: counter(
                &mut r,
                &format!("{t}bytesout"),
                "Record bytes sent to consumers",
            ),
            replication_bytes_out: counter(
                &mut r,
                &format!("{t}replicationbytesout"),
                "Record bytes sent to following replicas",
            ),
            failed_produce: counter(
                &mut r,
                &format!("{t}failedproducerequests"),
                "Partitions of produce requests answered with an error",
            ),
            isr_shrinks: counter(
                &mut r,
                &format!("{p}isrshrinks"),
                "ISR shrinks this broker asked for as leader and the controller accepted",
            ),
            isr_expands: counter(
                &mut r,
                &format!("{p}isrexpands"),
                "ISR expansions this broker asked for as leader and the controller accepted",
            ),
            connections: gauge(
                &mut r,
                "kafka_server_socketservermetrics_connection_count",
                "Open client connections",
            ),
            registry: Mutex::new((r, gauges)),
        }
    }

    pub fn request(&self, api_key: i16) {
        let counter = usize::try_from(api_key)
            .ok()
            .and_then(|k| self.requests.get(k))
            .and_then(Option::as_ref);
        if let Some(c) = counter {
            c.inc();
        }
    }

    /// A response to a request of `api_key` was written `elapsed` after the request arrived.
    pub fn request_time(&self, api_key: i16, elapsed: Duration) {
        let Some(slot) = usize::try_from(api_key)
            .ok()
            .and_then(|k| self.request_time_by_key.get(k))
        else {
            return;
        };
        let histogram = slot.get_or_init(|| {
            let name = ApiKey::try_from(api_key)
                .map_or_else(|_| api_key.to_string(), |k| format!("{k:?}"));
            let labels = vec![("request".to_string(), name)];
            self.request_time.get_or_create(&labels).clone()
        });
        histogram.observe(elapsed.as_secs_f64());
    }

    /// One partition's batches appended for a producer (`records` 0 for a duplicate retry).
    pub fn produced(&self, records: u64, bytes: u64) {
        self.messages_in.inc_by(records);
        self.bytes_in.inc_by(bytes);
    }

    pub fn produce_failed(&self, partitions: u64) {
        self.failed_produce.inc_by(partitions);
    }

    /// A fetch answered with `bytes` of records, to a consumer or (`replica`) a follower.
    pub fn fetched(&self, replica: bool, bytes: u64) {
        if replica {
            self.replication_bytes_out.inc_by(bytes);
        } else {
            self.bytes_out.inc_by(bytes);
        }
    }

    /// The controller accepted an ISR change this broker asked for.
    pub fn isr_changed(&self, current: usize, new: usize) {
        if new < current {
            self.isr_shrinks.inc();
        } else if new > current {
            self.isr_expands.inc();
        }
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    /// OpenMetrics text of every metric, the gauges set from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let guard = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let (registry, g) = &*guard;
        g.partitions.set(snapshot.partitions);
        g.leaders.set(snapshot.leaders);
        g.under_replicated.set(snapshot.under_replicated);
        g.under_min_isr.set(snapshot.under_min_isr);
        g.at_min_isr.set(snapshot.at_min_isr);
        g.active_controller.set(snapshot.active_controller);
        g.offline.set(snapshot.offline);
        g.fenced_brokers.set(snapshot.fenced_brokers);
        g.active_brokers.set(snapshot.active_brokers);
        g.quorum_leader.set(snapshot.quorum_leader);
        let mut text = String::new();
        encode(&mut text, registry).expect("encoding into a String cannot fail");
        text
    }
}

/// The gauges' values for this broker now.
pub fn snapshot<S: Storage + Clone>(apis: &KafkaApis<S>) -> Snapshot {
    let replicas = apis.replicas();
    let mut s = Snapshot {
        quorum_leader: -1,
        ..Snapshot::default()
    };
    // One led partition's ISR against its replicas and min.insync.replicas.
    let led = |s: &mut Snapshot, isr: usize, replica_count: usize, min_isr: usize| {
        s.leaders += 1;
        s.under_replicated += i64::from(isr < replica_count);
        s.under_min_isr += i64::from(isr < min_isr);
        s.at_min_isr += i64::from(isr == min_isr);
    };
    let Some(view) = apis.cluster() else {
        // A single broker holds and leads every partition, alone in its ISR.
        for t in replicas.topics() {
            let min_isr = replicas.min_insync_replicas(&t);
            for _ in 0..t.partition_count() {
                s.partitions += 1;
                led(&mut s, 1, 1, min_isr);
            }
        }
        s.active_controller = 1;
        s.active_brokers = 1;
        return s;
    };
    let image = view.image();
    let me = view.me;
    for t in image.topics.values() {
        let min_isr = replicas
            .topic(&t.name)
            .map_or(1, |local| replicas.min_insync_replicas(&local));
        for p in &t.partitions {
            s.partitions += i64::from(p.replicas.contains(&me));
            if p.leader == me {
                led(&mut s, p.isr.len(), p.replicas.len(), min_isr);
            }
        }
    }
    let controller = view.controller_id();
    s.quorum_leader = controller.map_or(-1, i64::from);
    if controller == Some(me) {
        s.active_controller = 1;
        s.offline = image
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader < 0)
            .count() as i64;
        s.fenced_brokers = image.brokers.values().filter(|b| b.fenced).count() as i64;
        s.active_brokers = image.brokers.len() as i64 - s.fenced_brokers;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, name: &str) -> Option<String> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .map(|l| l[name.len() + 1..].to_string())
    }

    #[test]
    fn counters_and_gauges_render_under_kafka_names() {
        let m = BrokerMetrics::new();
        m.request(ApiKey::Produce as i16);
        m.request(ApiKey::Produce as i16);
        m.request(ApiKey::Fetch as i16);
        m.request(-1);
        m.request(i16::MAX);
        m.request(ApiKey::SaslHandshake as i16);
        m.produced(10, 1_000);
        m.produced(0, 0);
        m.fetched(false, 700);
        m.fetched(true, 2_000);
        m.isr_changed(3, 2);
        m.isr_changed(2, 3);
        m.isr_changed(2, 3);
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.request_time(ApiKey::Produce as i16, Duration::from_micros(700));
        m.request_time(ApiKey::Produce as i16, Duration::from_millis(3));
        m.request_time(-4, Duration::from_millis(3));
        let snapshot = Snapshot {
            partitions: 6,
            leaders: 2,
            under_replicated: 1,
            quorum_leader: 3,
            ..Snapshot::default()
        };
        let text = m.render(&snapshot);
        let v = |name: &str| value(&text, name).unwrap_or_else(|| panic!("{name} in {text}"));
        assert_eq!(
            v("kafka_network_requestmetrics_requests_total{request=\"Produce\"}"),
            "2"
        );
        assert_eq!(
            v("kafka_network_requestmetrics_requests_total{request=\"Fetch\"}"),
            "1"
        );
        assert_eq!(v("kafka_server_brokertopicmetrics_messagesin_total"), "10");
        assert_eq!(v("kafka_server_brokertopicmetrics_bytesin_total"), "1000");
        assert_eq!(v("kafka_server_brokertopicmetrics_bytesout_total"), "700");
        assert_eq!(
            v("kafka_server_brokertopicmetrics_replicationbytesout_total"),
            "2000"
        );
        assert_eq!(v("kafka_server_replicamanager_isrshrinks_total"), "1");
        assert_eq!(v("kafka_server_replicamanager_isrexpands_total"), "2");
        assert_eq!(v("kafka_server_socketservermetrics_connection_count"), "1");
        assert_eq!(v("kafka_server_replicamanager_partitioncount"), "6");
        assert_eq!(v("kafka_server_replicamanager_leadercount"), "2");
        assert_eq!(
            v("kafka_server_replicamanager_underreplicatedpartitions"),
            "1"
        );
        assert_eq!(
            v("kafka_controller_kafkacontroller_activecontrollercount"),
            "0"
        );
        assert_eq!(v("kafka_server_raftmetrics_currentleader"), "3");
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
        let t = "kafka_network_requestmetrics_totaltime_seconds";
        assert_eq!(v(&format!("{t}_count{{request=\"Produce\"}}")), "2");
        assert_eq!(
            v(&format!("{t}_bucket{{le=\"0.001\",request=\"Produce\"}}")),
            "1"
        );
        assert_eq!(
            v(&format!("{t}_bucket{{le=\"0.004\",request=\"Produce\"}}")),
            "2"
        );
        assert!(
            !text.contains(&format!("{t}_count{{request=\"Fetch\"}}")),
            "no fetch timed"
        );
        // Only the APIs this broker speaks have series.
        assert!(!text.contains("SaslHandshake"), "{text}");
        assert_eq!(
            v("kafka_network_requestmetrics_requests_total{request=\"DescribeQuorum\"}"),
            "0"
        );
        // Gauges follow the latest snapshot.
        let text = m.render(&Snapshot::default());
        assert_eq!(
            value(
                &text,
                "kafka_server_replicamanager_underreplicatedpartitions"
            )
            .as_deref(),
            Some("0")
        );
    }
}
