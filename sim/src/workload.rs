//! The Jepsen-style Kafka workload: idempotent producers sending unique values to keyed
//! partitions with acks=all, a consumer polling every partition under manual assignment, and a
//! final full read. Every operation is recorded in an `invariants` history with its invocation,
//! its completion and an honest outcome (acknowledged / definitely failed / indeterminate).
//!
//! The workload runs over any [`Connector`]: tokio TCP against a real bootstrap address
//! (`sim check`), or turmoil's simulated TCP against the real broker shell (`sim system`). It
//! runs on one thread (a `LocalSet`), so shared state is `Rc<RefCell<..>>`, and every random
//! choice comes from a seeded ChaCha RNG, so under turmoil a seed replays exactly.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use invariants::{History, HistoryBuilder, OpId, OpKind, PollResult, Record, SendResult};
use kafka_protocol::messages::{
    create_topics_request::CreatableTopic, fetch_request::FetchPartition,
    fetch_request::FetchTopic, metadata_request::MetadataRequestTopic,
    produce_request::PartitionProduceData, produce_request::TopicProduceData, BrokerId,
    CreateTopicsRequest, FetchRequest, InitProducerIdRequest, MetadataRequest, ProduceRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::client::{CallError, KafkaConn};
use crate::group_member::{final_committed, group_member};
use broker::log::batch::{decode_records, encode_batch, NewRecord, RecordBatchHeader};
use broker::log::testutil::set_producer;

/// Request versions the workload speaks: inside both this broker's and Kafka 3.x/4.x's ranges.
const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 11;
const METADATA_VERSION: i16 = 9;
const CREATE_TOPICS_VERSION: i16 = 5;
const INIT_PRODUCER_ID_VERSION: i16 = 3;

/// Attempts per send before it is given up as indeterminate (or failed, if every attempt was
/// refused before the write).
const SEND_ATTEMPTS_MAX: u32 = 6;
/// Records per produce request, at most.
const RECORDS_PER_SEND_MAX: u64 = 4;
/// Fetch bytes per partition and per response.
const FETCH_PARTITION_BYTES_MAX: i32 = 1024 * 1024;
const FETCH_RESPONSE_BYTES_MAX: i32 = 4 * 1024 * 1024;
/// How long a consumer reads from the replica a leader preferred before asking the leader
/// again (librdkafka: 5 minutes; short here, so runs move between leader and followers).
const PREFERRED_REPLICA_LEASE: Duration = Duration::from_millis(1_000);

/// Opens client connections: tokio TCP, or turmoil's simulated TCP.
pub trait Connector: Clone + 'static {
    type Read: AsyncRead + Unpin + 'static;
    type Write: AsyncWrite + Unpin + 'static;
    fn connect(
        &self,
        addr: String,
    ) -> impl Future<Output = std::io::Result<(Self::Read, Self::Write)>>;
    /// The client machine's wall clock, for record timestamps (brokers expire idempotent
    /// producer state by them, as Kafka does, so they must be current).
    fn now_ms(&self) -> i64;
}

/// tokio's TCP as the workload's connector, with the machine's wall clock: for real brokers
/// (`sim check`, the nemesis interop test), never under turmoil.
#[derive(Clone)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    async fn connect(&self, addr: String) -> std::io::Result<(Self::Read, Self::Write)> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream.into_split())
    }
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// What the workload does.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    /// Create the topic first (CreateTopics; an existing topic is fine).
    pub create_topic: bool,
    pub replication_factor: i16,
    pub producers: u32,
    /// Members of the consumer group (`group_member.rs`); 0 for none.
    pub group_members: u32,
    /// How long producers send and the consumer polls.
    pub run_for: Duration,
    /// Pause between a producer's sends.
    pub send_interval: Duration,
    /// Per-request timeout; a request without an answer by then is indeterminate and retried.
    pub request_timeout: Duration,
    /// How long the final full read may take before it gives up (then `final_read_complete` is
    /// false and unseen writes are only counted).
    pub final_read_timeout: Duration,
    /// Seeds keys and timing choices.
    pub seed: u64,
    /// Added to every value so values stay unique across runs against a long-lived cluster.
    pub value_base: u64,
    /// The consumer's rack (client.rack): its fetches name it, and it reads a partition from
    /// the replica a leader names as preferred (KIP-392) until that replica refuses. The final
    /// read always reads from leaders.
    pub client_rack: Option<String>,
    /// A commit answered NOT_COORDINATOR may still have been written. This broker promises it
    /// was not (a commit already in the log gets COORDINATOR_NOT_AVAILABLE); Apache Kafka's
    /// coordinator answers NOT_COORDINATOR when its offsets append fails on a leadership
    /// change, and that record may survive, so checking another broker needs this.
    pub not_coordinator_may_write: bool,
}

/// The workload's recorded result.
pub struct WorkloadOutcome {
    pub history: History,
    /// The final read reached every partition's high watermark (and, with group members, read
    /// the group's committed offsets).
    pub final_read_complete: bool,
    /// `(time_ns, line)` per client-visible event, for traces.
    pub events: Vec<(u64, String)>,
    pub leaders: Vec<LeaderSeen>,
    pub high_watermarks: Vec<HighWatermarkSeen>,
    /// Per partition, the high watermark the final read stopped at (it reached it).
    pub final_high_watermarks: BTreeMap<i32, i64>,
    /// Partition reads a follower served (KIP-392) with no error.
    pub follower_reads: u64,
    /// Each producer id InitProducerId handed out more than once, a line per repeat. A
    /// repeated id shares its sequence numbers with the earlier producer, so a batch of one
    /// can be taken for the other's duplicate and dropped after it was acknowledged.
    pub producer_ids_reused: Vec<String>,
}

/// Shared between the workload's tasks: the history, and the start time for op timestamps.
pub struct Recorder {
    pub(crate) history: HistoryBuilder,
    start: Instant,
    events: Vec<(u64, String)>,
    /// Every partition's leadership as some broker's Metadata response described it.
    leaders: Vec<LeaderSeen>,
    /// High watermarks fetches returned, tagged with the leader epoch the fetch named.
    high_watermarks: Vec<HighWatermarkSeen>,
    /// Per partition, one past the highest acknowledged offset.
    acked_end: BTreeMap<i32, i64>,
    /// Per partition, the high watermark the final read stopped at.
    final_high_watermarks: BTreeMap<i32, i64>,
    follower_reads: u64,
    /// Every producer id handed out, and to which process first.
    producer_ids: BTreeMap<i64, u64>,
    producer_ids_reused: Vec<String>,
}

/// One partition's leadership in one Metadata response.
#[derive(Clone, Debug)]
pub struct LeaderSeen {
    pub time_ns: u64,
    /// The broker that answered.
    pub from: String,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
}

/// One high watermark a fetch returned for a partition, from the leader of `leader_epoch` (the
/// fetch named that epoch, so the broker answered only as its leader).
#[derive(Clone, Debug)]
pub struct HighWatermarkSeen {
    pub process: u64,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
}

pub(crate) type Shared = Rc<RefCell<Recorder>>;

impl Recorder {
    pub(crate) fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub(crate) fn event(&mut self, line: String) {
        let t = self.now_ns();
        self.events.push((t, line));
    }
}

/// Runs producers and a consumer for `config.run_for`, waits for `quiesce` (the simulator heals
/// faults there), then reads every partition to its end.
pub async fn run<C: Connector>(
    connector: C,
    config: WorkloadConfig,
    quiesce: impl Future<Output = ()>,
) -> WorkloadOutcome {
    let shared: Shared = Rc::new(RefCell::new(Recorder {
        history: HistoryBuilder::new(),
        start: Instant::now(),
        events: Vec::new(),
        leaders: Vec::new(),
        high_watermarks: Vec::new(),
        acked_end: BTreeMap::new(),
        final_high_watermarks: BTreeMap::new(),
        follower_reads: 0,
        producer_ids: BTreeMap::new(),
        producer_ids_reused: Vec::new(),
    }));
    let mut router = Router::new(connector.clone(), &config, "setup");
    if config.create_topic {
        router.create_topic(&shared).await;
    }
    let deadline = Instant::now() + config.run_for;
    let mut tasks = Vec::new();
    for p in 0..config.producers {
        tasks.push(tokio::task::spawn_local(producer(
            connector.clone(),
            config.clone(),
            Rc::clone(&shared),
            u64::from(p) + 1,
            deadline,
        )));
    }
    {
        let polling = consumer(
            connector.clone(),
            config.clone(),
            Rc::clone(&shared),
            CONSUMER_PROCESS,
            Some(deadline),
        );
        tasks.push(tokio::task::spawn_local(async move {
            polling.await;
        }));
    }
    for m in 0..config.group_members {
        tasks.push(tokio::task::spawn_local(group_member(
            connector.clone(),
            config.clone(),
            Rc::clone(&shared),
            GROUP_MEMBER_PROCESS_BASE + u64::from(m),
            deadline,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    quiesce.await;
    let connector_for_offsets = connector.clone();
    let final_read_complete = tokio::time::timeout(
        config.final_read_timeout,
        consumer(
            connector,
            config.clone(),
            Rc::clone(&shared),
            FINAL_READER_PROCESS,
            None,
        ),
    )
    .await
    .unwrap_or(false);
    let offsets_read = config.group_members == 0
        || final_committed(
            connector_for_offsets,
            config.clone(),
            Rc::clone(&shared),
            FINAL_READER_PROCESS,
            Instant::now() + config.final_read_timeout,
        )
        .await;
    let recorder = Rc::try_unwrap(shared)
        .ok()
        .expect("workload tasks finished")
        .into_inner();
    WorkloadOutcome {
        history: recorder.history.build(),
        final_read_complete: final_read_complete && offsets_read,
        events: recorder.events,
        leaders: recorder.leaders,
        high_watermarks: recorder.high_watermarks,
        final_high_watermarks: recorder.final_high_watermarks,
        follower_reads: recorder.follower_reads,
        producer_ids_reused: recorder.producer_ids_reused,
    }
}

const CONSUMER_PROCESS: u64 = 1000;
const FINAL_READER_PROCESS: u64 = 1001;
const GROUP_MEMBER_PROCESS_BASE: u64 = 2000;

/// Connections and leadership, as one client task sees them.
pub(crate) struct Router<C: Connector> {
    connector: C,
    client_id: String,
    pub(crate) topic: String,
    /// See [`WorkloadConfig::not_coordinator_may_write`].
    pub(crate) not_coordinator_may_write: bool,
    partitions: i32,
    replication_factor: i16,
    bootstrap: String,
    request_timeout: Duration,
    brokers: BTreeMap<i32, String>,
    leaders: BTreeMap<i32, i32>,
    /// Leader epoch and ISR per partition, from the same Metadata response as `leaders`.
    pub(crate) epochs: BTreeMap<i32, i32>,
    pub(crate) isrs: BTreeMap<i32, Vec<i32>>,
    /// Where Metadata responses are recorded, if anywhere.
    observer: Option<Shared>,
    conns: BTreeMap<String, KafkaConn<C::Read, C::Write>>,
    last_error: Option<String>,
    last_metadata: String,
    /// Per partition, the replica a leader told this client to read from (KIP-392), and when
    /// that lease ends (then the leader is asked again, as librdkafka's lease does).
    preferred: BTreeMap<i32, (i32, Instant)>,
}

impl<C: Connector> Router<C> {
    pub(crate) fn new(connector: C, config: &WorkloadConfig, client_id: &str) -> Self {
        Router {
            connector,
            client_id: client_id.to_string(),
            topic: config.topic.clone(),
            not_coordinator_may_write: config.not_coordinator_may_write,
            partitions: config.partitions,
            replication_factor: config.replication_factor,
            bootstrap: config.bootstrap.clone(),
            request_timeout: config.request_timeout,
            brokers: BTreeMap::new(),
            leaders: BTreeMap::new(),
            epochs: BTreeMap::new(),
            isrs: BTreeMap::new(),
            observer: None,
            conns: BTreeMap::new(),
            last_error: None,
            last_metadata: String::new(),
            preferred: BTreeMap::new(),
        }
    }

    /// Records every Metadata response's leaderships into `shared`.
    pub(crate) fn observe(&mut self, shared: &Shared) {
        self.observer = Some(Rc::clone(shared));
    }

    /// The leader per partition from the last Metadata response.
    pub(crate) fn leaders_view(&self) -> &BTreeMap<i32, i32> {
        &self.leaders
    }

    /// Forgets the leaders, so the next lookup asks for metadata again.
    pub(crate) fn forget_leaders(&mut self) {
        self.leaders.clear();
        self.epochs.clear();
    }

    /// A call on the connection to `addr`, opened if needed and dropped on any failure.
    pub(crate) async fn call<Q: kafka_protocol::protocol::Request>(
        &mut self,
        addr: &str,
        request: &Q,
        version: i16,
    ) -> Result<Q::Response, CallError> {
        let timeout = self.request_timeout;
        self.call_within(addr, request, version, timeout).await
    }

    /// [`call`](Self::call) with its own timeout (JoinGroup waits for the whole rebalance).
    pub(crate) async fn call_within<Q: kafka_protocol::protocol::Request>(
        &mut self,
        addr: &str,
        request: &Q,
        version: i16,
        timeout: Duration,
    ) -> Result<Q::Response, CallError> {
        if !self.conns.contains_key(addr) {
            let (r, w) = tokio::time::timeout(
                self.request_timeout,
                self.connector.connect(addr.to_string()),
            )
            .await
            .map_err(|_| CallError::Io("connect timed out".into()))?
            .map_err(|e| CallError::Io(format!("connect: {e}")))?;
            self.conns
                .insert(addr.to_string(), KafkaConn::new(r, w, &self.client_id));
        }
        let conn = self.conns.get_mut(addr).expect("just inserted");
        let result = match tokio::time::timeout(timeout, conn.call(request, version)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Io("request timed out".into())),
        };
        if result.is_err() {
            self.conns.remove(addr);
        }
        result
    }

    /// Some broker address to ask for metadata: a known broker, else the bootstrap.
    pub(crate) fn any_broker(&self, attempt: u32) -> String {
        if self.brokers.is_empty() || attempt % 2 == 1 {
            return self.bootstrap.clone();
        }
        let i = attempt as usize / 2 % self.brokers.len();
        self.brokers
            .values()
            .nth(i)
            .cloned()
            .unwrap_or_else(|| self.bootstrap.clone())
    }

    pub(crate) async fn refresh_metadata(&mut self, attempt: u32) -> bool {
        let addr = self.any_broker(attempt);
        let request = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                TopicName(StrBytes::from_string(self.topic.clone())),
            ))]))
            .with_allow_auto_topic_creation(true);
        let response = match self.call(&addr, &request, METADATA_VERSION).await {
            Ok(r) => r,
            Err(e) => {
                self.last_error = Some(format!("metadata from {addr}: {e}"));
                return false;
            }
        };
        self.last_metadata = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| {
                format!(
                    "{}: leader {} error {}",
                    p.partition_index, p.leader_id.0, p.error_code
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        self.brokers = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        self.leaders.clear();
        self.epochs.clear();
        self.isrs.clear();
        for t in &response.topics {
            if t.error_code != 0 {
                continue;
            }
            for p in &t.partitions {
                let isr: Vec<i32> = p.isr_nodes.iter().map(|n| n.0).collect();
                if let Some(shared) = &self.observer {
                    let mut s = shared.borrow_mut();
                    let time_ns = s.now_ns();
                    s.leaders.push(LeaderSeen {
                        time_ns,
                        from: addr.clone(),
                        partition: p.partition_index,
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        isr: isr.clone(),
                    });
                }
                if p.error_code == 0 && p.leader_id.0 >= 0 {
                    self.leaders.insert(p.partition_index, p.leader_id.0);
                    self.epochs.insert(p.partition_index, p.leader_epoch);
                    self.isrs.insert(p.partition_index, isr);
                }
            }
        }
        self.leaders.len() == self.partitions as usize
    }

    /// The leader's address for `partition`, refreshing metadata when unknown.
    async fn leader(&mut self, partition: i32) -> Option<(i32, String)> {
        for attempt in 0..3 {
            if let Some(node) = self.leaders.get(&partition) {
                if let Some(addr) = self.brokers.get(node) {
                    return Some((*node, addr.clone()));
                }
            }
            self.refresh_metadata(attempt).await;
        }
        None
    }

    async fn create_topic(&mut self, shared: &Shared) {
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(self.topic.clone())))
                .with_num_partitions(self.partitions)
                .with_replication_factor(self.replication_factor)])
            .with_timeout_ms(self.request_timeout.as_millis() as i32);
        for attempt in 0..20u32 {
            let addr = self.any_broker(attempt);
            match self.call(&addr, &request, CREATE_TOPICS_VERSION).await {
                Ok(r) => {
                    let code = r.topics.first().map(|t| t.error_code).unwrap_or(-1);
                    shared
                        .borrow_mut()
                        .event(format!("create topic {}: error {code}", self.topic));
                    // 0 = created, 36 = TOPIC_ALREADY_EXISTS.
                    if code == 0 || code == 36 {
                        return;
                    }
                }
                Err(e) => shared.borrow_mut().event(format!("create topic: {e}")),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Error codes after which the batch was definitely not appended. Not NOT_LEADER_OR_FOLLOWER
/// (6): as on Kafka, an acks=all produce that was appended and then lost the leadership while
/// waiting for the ISR is answered with it, and the write may survive.
fn refused_before_write(code: i16) -> bool {
    matches!(
        code,
        2   // CORRUPT_MESSAGE
        | 3  // UNKNOWN_TOPIC_OR_PARTITION
        | 10 // MESSAGE_TOO_LARGE
        | 19 // NOT_ENOUGH_REPLICAS
        | 45 // OUT_OF_ORDER_SEQUENCE_NUMBER
        | 47 // INVALID_PRODUCER_EPOCH
        | 59 // UNKNOWN_PRODUCER_ID
        | 87 // INVALID_RECORD
    )
}

/// One idempotent producer. Each send is 1..=RECORDS_PER_SEND_MAX records to one partition, the
/// partition chosen by a random key; a send is retried with the same sequence numbers until it
/// is acknowledged or the attempts run out.
async fn producer<C: Connector>(
    connector: C,
    config: WorkloadConfig,
    shared: Shared,
    process: u64,
    deadline: Instant,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ process.wrapping_mul(0x9E37_79B9));
    let mut router = Router::new(connector, &config, &format!("producer-{process}"));
    router.observe(&shared);
    let mut counter: u64 = 0;
    let mut identity: Option<(i64, i16)> = None;
    let mut sequences: BTreeMap<i32, i32> = BTreeMap::new();
    while Instant::now() < deadline {
        if identity.is_none() {
            identity = init_producer_id(&mut router, &shared, process).await;
            sequences.clear();
            if identity.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let (producer_id, producer_epoch) = identity.expect("set above");
        let key: u64 = rng.gen_range(0..64);
        let partition = (key % config.partitions as u64) as i32;
        let count = rng.gen_range(1..=RECORDS_PER_SEND_MAX);
        let values: Vec<u64> = (0..count)
            .map(|_| {
                counter += 1;
                config.value_base + (process << 32) + counter
            })
            .collect();
        let sequence = *sequences.get(&partition).unwrap_or(&0);
        let ops: Vec<OpId> = {
            let mut s = shared.borrow_mut();
            let t = s.now_ns();
            values
                .iter()
                .map(|v| {
                    s.history
                        .send(process, t, config.topic.clone(), Some(key), *v, true)
                })
                .collect()
        };
        let key_bytes = key.to_be_bytes();
        let value_bytes: Vec<[u8; 8]> = values.iter().map(|v| v.to_be_bytes()).collect();
        let records: Vec<NewRecord<'_>> = value_bytes
            .iter()
            .map(|v| NewRecord {
                key: Some(&key_bytes),
                value: Some(v),
                ..NewRecord::default()
            })
            .collect();
        let mut batch = encode_batch(router.connector.now_ms(), &records);
        set_producer(&mut batch, producer_id, producer_epoch, sequence);
        let batch = Bytes::from(batch);
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(config.request_timeout.as_millis() as i32)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(config.topic.clone())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);

        let mut outcome: Option<SendResult> = None;
        let mut maybe_written = false;
        let mut last_error = String::new();
        for attempt in 0..SEND_ATTEMPTS_MAX {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await;
            }
            let Some((_, addr)) = router.leader(partition).await else {
                last_error = "no leader".into();
                continue;
            };
            match router.call(&addr, &request, PRODUCE_VERSION).await {
                Err(e) => {
                    maybe_written = true;
                    last_error = e.to_string();
                    // The leader may be gone: ask any broker who leads now.
                    router.forget_leaders();
                }
                Ok(response) => {
                    let p = response
                        .responses
                        .iter()
                        .flat_map(|t| t.partition_responses.iter())
                        .find(|p| p.index == partition);
                    let Some(p) = p else {
                        maybe_written = true;
                        last_error = "no partition in produce response".into();
                        continue;
                    };
                    if p.error_code == 0 {
                        outcome = Some(SendResult::Ok {
                            partition,
                            offset: p.base_offset,
                        });
                        break;
                    }
                    last_error = format!("error code {}", p.error_code);
                    if !refused_before_write(p.error_code) {
                        maybe_written = true;
                    }
                    if matches!(p.error_code, 6 | 3) {
                        router.forget_leaders();
                    }
                    if matches!(p.error_code, 45 | 47 | 59) {
                        // The producer's sequence state is gone: start a new identity.
                        break;
                    }
                }
            }
        }
        {
            let mut s = shared.borrow_mut();
            let t = s.now_ns();
            match &outcome {
                Some(SendResult::Ok { offset, .. }) => {
                    sequences.insert(partition, sequence.wrapping_add(count as i32));
                    let end = s.acked_end.entry(partition).or_insert(0);
                    *end = (*end).max(offset + count as i64);
                    for (i, op) in ops.iter().enumerate() {
                        let _ = s.history.complete_send(
                            *op,
                            t,
                            SendResult::Ok {
                                partition,
                                offset: offset + i as i64,
                            },
                        );
                    }
                    s.event(format!(
                        "p{process} send {partition}:{offset} x{count} seq {sequence}"
                    ));
                }
                _ => {
                    identity = None;
                    let result = if maybe_written {
                        SendResult::Indeterminate {
                            error: last_error.clone(),
                        }
                    } else {
                        SendResult::Failed {
                            error: last_error.clone(),
                        }
                    };
                    for op in &ops {
                        let _ = s.history.complete_send(*op, t, result.clone());
                    }
                    s.event(format!(
                        "p{process} send to {partition} x{count} gave up ({}): {last_error}",
                        if maybe_written {
                            "indeterminate"
                        } else {
                            "failed"
                        }
                    ));
                }
            }
        }
        tokio::time::sleep(config.send_interval).await;
    }
}

async fn init_producer_id<C: Connector>(
    router: &mut Router<C>,
    shared: &Shared,
    process: u64,
) -> Option<(i64, i16)> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(kafka_protocol::messages::ProducerId(-1))
        .with_producer_epoch(-1);
    for attempt in 0..4 {
        // Producers start at different brokers, so a cluster's brokers each hand out ids.
        let addr = router.any_broker(2 * process as u32 + attempt);
        match router.call(&addr, &request, INIT_PRODUCER_ID_VERSION).await {
            Ok(r) if r.error_code == 0 => {
                let mut s = shared.borrow_mut();
                let id = r.producer_id.0;
                s.event(format!(
                    "p{process} producer id {id} epoch {}",
                    r.producer_epoch
                ));
                // This workload never asks for an epoch bump, so every answer is a new id.
                if let Some(first) = s.producer_ids.insert(id, process) {
                    s.producer_ids_reused.push(format!(
                        "producer id {id} handed to p{first} and again to p{process} \
                         (epoch {})",
                        r.producer_epoch
                    ));
                }
                return Some((id, r.producer_epoch));
            }
            Ok(r) => shared.borrow_mut().event(format!(
                "p{process} init producer id: error {}",
                r.error_code
            )),
            Err(e) => shared
                .borrow_mut()
                .event(format!("p{process} init producer id: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A consumer assigned every partition. With a deadline it polls until then; without one (the
/// final read) it reads until every partition's position reaches the high watermark the broker
/// reports, and returns whether it got there.
async fn consumer<C: Connector>(
    connector: C,
    config: WorkloadConfig,
    shared: Shared,
    process: u64,
    deadline: Option<Instant>,
) -> bool {
    let mut router = Router::new(connector, &config, &format!("consumer-{process}"));
    router.observe(&shared);
    let partitions: Vec<i32> = (0..config.partitions).collect();
    {
        let mut s = shared.borrow_mut();
        let t = s.now_ns();
        s.history.push(
            process,
            t,
            OpKind::Assign {
                topic: config.topic.clone(),
                partitions: partitions.clone(),
            },
        );
    }
    let mut positions: BTreeMap<i32, i64> = partitions.iter().map(|p| (*p, 0)).collect();
    let mut caught_up: BTreeMap<i32, bool> = partitions.iter().map(|p| (*p, false)).collect();
    let max_wait_ms = if deadline.is_some() { 100 } else { 10 };
    // The final read (no deadline) reads from leaders.
    let rack = config.client_rack.as_deref().filter(|_| deadline.is_some());
    loop {
        if let Some(d) = deadline {
            if Instant::now() >= d {
                return false;
            }
        } else if caught_up.values().all(|c| *c) {
            return true;
        }
        let high_watermarks = poll(
            &mut router,
            &shared,
            process,
            &mut positions,
            max_wait_ms,
            rack,
        )
        .await;
        for (partition, hw) in high_watermarks {
            // The final read ends at a high watermark that covers every acknowledged offset: a
            // new leader's may still lag behind its predecessor's for a moment.
            let acked = shared
                .borrow()
                .acked_end
                .get(&partition)
                .copied()
                .unwrap_or(0);
            if positions[&partition] >= hw && (deadline.is_some() || hw >= acked) {
                caught_up.insert(partition, true);
                if deadline.is_none() {
                    shared
                        .borrow_mut()
                        .final_high_watermarks
                        .insert(partition, hw);
                }
            }
        }
    }
}

/// One poll of the partitions in `positions` (one fetch per broker read from), recorded as a
/// poll op per fetch; advances the positions past what it read. A consumer in `rack` reads a
/// partition from the replica its leader prefers (KIP-392) once told, and from the leader
/// again after any error there. Returns the high watermark each partition that answered
/// without error reported.
pub(crate) async fn poll<C: Connector>(
    router: &mut Router<C>,
    shared: &Shared,
    process: u64,
    positions: &mut BTreeMap<i32, i64>,
    max_wait_ms: i32,
    rack: Option<&str>,
) -> BTreeMap<i32, i64> {
    let mut high_watermarks = BTreeMap::new();
    let mut by_leader: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    // Per partition: the leader and leader epoch the fetch names (-1: unknown).
    let mut named: BTreeMap<i32, (i32, i32)> = BTreeMap::new();
    // Per partition: the broker asked, when not the leader.
    let mut via_follower: BTreeMap<i32, i32> = BTreeMap::new();
    let partitions: Vec<i32> = positions.keys().copied().collect();
    for p in partitions {
        match router.leader(p).await {
            Some((node, addr)) => {
                named.insert(p, (node, router.epochs.get(&p).copied().unwrap_or(-1)));
                let follower = router
                    .preferred
                    .get(&p)
                    .copied()
                    .filter(|&(f, until)| f != node && rack.is_some() && Instant::now() < until)
                    .and_then(|(f, _)| Some((f, router.brokers.get(&f)?.clone())));
                match follower {
                    Some((f, addr)) => {
                        via_follower.insert(p, f);
                        by_leader.entry(addr).or_default().push(p)
                    }
                    None => by_leader.entry(addr).or_default().push(p),
                }
            }
            None => {
                let e = router.last_error.take().unwrap_or_else(|| {
                    format!(
                        "no leader for partition {p} in metadata [{}]",
                        router.last_metadata
                    )
                });
                shared.borrow_mut().event(format!("c{process}: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    }
    for (addr, leads) in by_leader {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_RESPONSE_BYTES_MAX)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_rack_id(StrBytes::from_string(rack.unwrap_or("").to_string()))
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(router.topic.clone())))
                .with_partitions(
                    leads
                        .iter()
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(*p)
                                .with_current_leader_epoch(named[p].1)
                                .with_fetch_offset(positions[p])
                                .with_last_fetched_epoch(-1)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(FETCH_PARTITION_BYTES_MAX)
                        })
                        .collect(),
                )]);
        let (op, invoke_ns) = {
            let mut s = shared.borrow_mut();
            let t = s.now_ns();
            (s.history.poll(process, t, router.topic.clone()), t)
        };
        let result = router.call(&addr, &request, FETCH_VERSION).await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                {
                    let mut s = shared.borrow_mut();
                    let t = s.now_ns();
                    s.event(format!("c{process} poll: {e}"));
                    let _ = s
                        .history
                        .complete_poll(op, t, PollResult::Failed(e.to_string()));
                }
                router.forget_leaders();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut s = shared.borrow_mut();
        let t = s.now_ns();
        let mut polled = Vec::new();
        let mut error = None;
        for topic in &response.responses {
            for p in &topic.partitions {
                let partition = p.partition_index;
                let Some(position) = positions.get_mut(&partition) else {
                    continue;
                };
                let follower = via_follower.get(&partition).copied();
                if p.error_code != 0 && follower.is_some() {
                    // Whatever a follower refuses, the leader answers next (as librdkafka
                    // and the Java client do).
                    router.preferred.remove(&partition);
                    s.event(format!(
                        "c{process} poll: partition {partition}: error code {} from follower \
                         {}; back to the leader",
                        p.error_code,
                        follower.unwrap_or(-1)
                    ));
                    continue;
                }
                if p.preferred_read_replica.0 >= 0 && rack.is_some() {
                    let until = Instant::now() + PREFERRED_REPLICA_LEASE;
                    router
                        .preferred
                        .insert(partition, (p.preferred_read_replica.0, until));
                    continue;
                }
                match p.error_code {
                    0 => {}
                    1 => {
                        // OFFSET_OUT_OF_RANGE: retention moved the log start past us.
                        *position = p.log_start_offset.max(*position);
                        continue;
                    }
                    code => {
                        // NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH.
                        if matches!(code, 6 | 74 | 75) {
                            router.forget_leaders();
                        }
                        error = Some(format!("partition {partition}: error code {code}"));
                        continue;
                    }
                }
                if let Some(records) = &p.records {
                    match read_values(records, *position) {
                        Ok(values) => {
                            for (offset, value) in values {
                                polled.push(Record::new(partition, offset, value));
                                *position = offset + 1;
                            }
                        }
                        Err(e) => error = Some(format!("partition {partition}: {e}")),
                    }
                }
                high_watermarks.insert(partition, p.high_watermark);
                if follower.is_some() {
                    // A follower's high watermark trails the leader's: not one to compare
                    // within the leader epoch.
                    s.follower_reads += 1;
                } else if let Some(&(leader, leader_epoch)) = named.get(&partition) {
                    if leader_epoch >= 0 {
                        s.high_watermarks.push(HighWatermarkSeen {
                            process,
                            invoke_ns,
                            complete_ns: t,
                            partition,
                            leader,
                            leader_epoch,
                            high_watermark: p.high_watermark,
                        });
                    }
                }
            }
        }
        if let Some(e) = &error {
            s.event(format!("c{process} poll: {e}"));
        }
        let result = match (&error, polled.is_empty()) {
            (Some(e), true) => PollResult::Failed(e.clone()),
            _ => PollResult::Ok(polled),
        };
        let _ = s.history.complete_poll(op, t, result);
    }
    high_watermarks
}

/// `(offset, value)` of every record at or past `position` in a fetch response's record set.
/// Values are the workload's 8-byte big-endian numbers; control batches are skipped.
pub(crate) fn read_values(mut records: &[u8], position: i64) -> Result<Vec<(i64, u64)>, String> {
    let mut out = Vec::new();
    while !records.is_empty() {
        let Some(header) = RecordBatchHeader::parse(records) else {
            break; // a partial batch at the end of a size-limited response
        };
        let size = usize::try_from(header.total_size()).map_err(|_| "negative batch size")?;
        if size > records.len() {
            break;
        }
        let batch = &records[..size];
        records = &records[size..];
        if header.is_control() {
            continue;
        }
        for r in decode_records(batch)? {
            let offset = r.offset;
            if offset < position {
                continue;
            }
            let value = r
                .value
                .as_deref()
                .and_then(|v| v.get(..8))
                .map(|v| u64::from_be_bytes(v.try_into().expect("8 bytes")))
                .ok_or_else(|| format!("record at {offset} has no 8-byte value"))?;
            out.push((offset, value));
        }
    }
    Ok(out)
}
