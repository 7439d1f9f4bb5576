//! Connection-level tests over in-memory pipes and the in-memory disk: pipelined requests are
//! answered in order, acks=0 gets no answer, a long-poll fetch is answered when data arrives,
//! bad frames close only their own connection, and a full disk is reported, not fatal.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use super::connection::{serve, ConnectionLimits};
use super::group_manager::GroupManager;
use crate::apis::{Advertised, Clock, KafkaApis};
use crate::config::BrokerConfig;
use crate::group::GroupConfig;
use crate::log::testutil::simple_batch;
use crate::log::LogConfig;
use crate::replica::AckPolicy;
use crate::replica::ReplicaManager;
use crate::storage::{FileStorage, MemStorage, Storage};

struct FixedClock;
impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        1_700_000_000_000
    }
}

const LIMITS: ConnectionLimits = ConnectionLimits {
    max_frame_bytes: 1024 * 1024,
    max_inflight_bytes: 4 * 1024 * 1024,
    max_inflight_requests: 64,
    idle_timeout_ms: 60_000,
};

struct Harness<S: Storage + Clone = MemStorage> {
    apis: Arc<KafkaApis<S>>,
    storage: S,
    _shutdown: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
}

impl Harness {
    fn new() -> Harness {
        Harness::on(MemStorage::new(), Path::new("/data"))
    }
}

impl<S: Storage + Clone> Harness<S> {
    fn on(storage: S, data_dir: &Path) -> Harness<S> {
        Harness::with_cluster(storage, data_dir, None)
    }

    fn with_cluster(
        storage: S,
        data_dir: &Path,
        cluster: Option<Arc<crate::cluster::ClusterView>>,
    ) -> Harness<S> {
        let config = BrokerConfig {
            data_dir: data_dir.into(),
            ..BrokerConfig::default()
        };
        let replicas = Arc::new(
            ReplicaManager::open(storage.clone(), config, 7, FixedClock.now_ms()).unwrap(),
        );
        let advertised = Advertised {
            node_id: 1,
            host: "127.0.0.1".into(),
            port: 9092,
        };
        let groups = GroupManager::open(
            storage.clone(),
            data_dir,
            &LogConfig::default(),
            AckPolicy::AfterFsync,
            GroupConfig::default(),
            Arc::new(FixedClock),
            1,
        )
        .unwrap();
        let apis = Arc::new(KafkaApis::new(
            replicas,
            groups,
            Arc::new(FixedClock),
            advertised,
            cluster,
        ));
        let (tx, rx) = watch::channel(false);
        Harness {
            apis,
            storage,
            _shutdown: tx,
            shutdown_rx: rx,
        }
    }

    /// A client end of a new connection served by the broker.
    fn connect(&self) -> DuplexStream {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (reader, writer) = tokio::io::split(server);
        let peer = "127.0.0.1:1".parse().unwrap();
        tokio::spawn(serve(
            reader,
            writer,
            peer,
            Arc::clone(&self.apis),
            LIMITS,
            self.shutdown_rx.clone(),
        ));
        client
    }
}

fn frame<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("test")));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf.freeze()
}

/// Reads one response frame; returns its correlation id and body bytes.
async fn read_response(
    stream: &mut (impl AsyncRead + Unpin),
    key: ApiKey,
    version: i16,
) -> (i32, Bytes) {
    let size = stream.read_i32().await.expect("response size");
    let mut buf = vec![0u8; size as usize];
    stream.read_exact(&mut buf).await.unwrap();
    let mut buf = Bytes::from(buf);
    let header = ResponseHeader::decode(&mut buf, key.response_header_version(version)).unwrap();
    (header.correlation_id, buf)
}

fn produce(topic: &str, acks: i16, values: &[&[u8]]) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(simple_batch(
                    1_700_000_000_000,
                    values,
                ))))])])
}

fn fetch(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1024 * 1024)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1024 * 1024)])])
}

fn metadata(topic: &str) -> MetadataRequest {
    MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.into()))))]))
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let h = Harness::new();
    let mut c = h.connect();
    let mut out = BytesMut::new();
    out.put(frame(ApiKey::Metadata, 9, 1, &metadata("t")));
    for i in 0..3 {
        out.put(frame(
            ApiKey::Produce,
            9,
            2 + i,
            &produce("t", -1, &[b"a", b"b"]),
        ));
    }
    out.put(frame(ApiKey::Fetch, 11, 5, &fetch("t", 0, 0)));
    out.put(frame(
        ApiKey::ApiVersions,
        3,
        6,
        &ApiVersionsRequest::default(),
    ));
    c.write_all(&out).await.unwrap();

    let (id, mut body) = read_response(&mut c, ApiKey::Metadata, 9).await;
    assert_eq!(id, 1);
    let md = MetadataResponse::decode(&mut body, 9).unwrap();
    assert_eq!(md.topics[0].error_code, 0, "auto-created");
    for i in 0..3 {
        let (id, mut body) = read_response(&mut c, ApiKey::Produce, 9).await;
        assert_eq!(id, 2 + i);
        let r = ProduceResponse::decode(&mut body, 9).unwrap();
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(
            (p.error_code, p.base_offset),
            (0, 2 * i as i64),
            "appends land in request order"
        );
    }
    let (id, mut body) = read_response(&mut c, ApiKey::Fetch, 11).await;
    assert_eq!(id, 5);
    let f = FetchResponse::decode(&mut body, 11).unwrap();
    let p = &f.responses[0].partitions[0];
    assert_eq!(
        p.high_watermark, 6,
        "fsync=always: acked data is durable and visible"
    );
    let records = p.records.clone().unwrap();
    let batches = crate::log::batch::validate_for_append(&records, u32::MAX).unwrap();
    assert_eq!(batches.len(), 3, "served the stored batches");
    let (id, _) = read_response(&mut c, ApiKey::ApiVersions, 3).await;
    assert_eq!(id, 6);
}

#[tokio::test]
async fn acks_zero_gets_no_response() {
    let h = Harness::new();
    let mut c = h.connect();
    c.write_all(&frame(ApiKey::Metadata, 9, 1, &metadata("z")))
        .await
        .unwrap();
    read_response(&mut c, ApiKey::Metadata, 9).await;
    c.write_all(&frame(ApiKey::Produce, 9, 2, &produce("z", 0, &[b"x"])))
        .await
        .unwrap();
    c.write_all(&frame(
        ApiKey::ApiVersions,
        3,
        3,
        &ApiVersionsRequest::default(),
    ))
    .await
    .unwrap();
    let (id, _) = read_response(&mut c, ApiKey::ApiVersions, 3).await;
    assert_eq!(id, 3, "the acks=0 produce was not answered");
    let log_end = h
        .apis
        .replicas()
        .partition("z", 0)
        .unwrap()
        .core()
        .log()
        .log_end_offset();
    assert_eq!(log_end, 1, "but it was appended");
}

#[tokio::test]
async fn long_poll_fetch_is_answered_when_data_arrives() {
    let h = Harness::new();
    let mut consumer = h.connect();
    consumer
        .write_all(&frame(ApiKey::Metadata, 9, 1, &metadata("lp")))
        .await
        .unwrap();
    read_response(&mut consumer, ApiKey::Metadata, 9).await;
    // Waits up to 60 s for one byte at offset 0 of an empty partition.
    consumer
        .write_all(&frame(ApiKey::Fetch, 11, 2, &fetch("lp", 0, 60_000)))
        .await
        .unwrap();
    let mut producer = h.connect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    producer
        .write_all(&frame(
            ApiKey::Produce,
            9,
            1,
            &produce("lp", -1, &[b"hello"]),
        ))
        .await
        .unwrap();
    read_response(&mut producer, ApiKey::Produce, 9).await;
    let answered = tokio::time::timeout(
        Duration::from_secs(30),
        read_response(&mut consumer, ApiKey::Fetch, 11),
    )
    .await;
    let (id, mut body) =
        answered.expect("the fetch is answered once data arrives, not at max_wait_ms");
    assert_eq!(id, 2);
    let f = FetchResponse::decode(&mut body, 11).unwrap();
    assert!(!f.responses[0].partitions[0]
        .records
        .as_ref()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn bad_frames_close_only_their_connection() {
    let h = Harness::new();
    for bad in [
        Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff]), // 2 GiB frame
        Bytes::from_static(&[0xff, 0xff, 0xff, 0xf0]), // negative size
        Bytes::from_static(&[0, 0, 0, 8, 0x03, 0xe7, 0, 0, 0, 0, 0, 1]), // unknown api key 999
        Bytes::from_static(&[
            0, 0, 0, 14, 0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff,
        ]), // i32::MAX topics
    ] {
        let mut c = h.connect();
        c.write_all(&bad).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "connection closed without a response for {bad:?}"
        );
    }
    let mut good = h.connect();
    good.write_all(&frame(
        ApiKey::ApiVersions,
        3,
        9,
        &ApiVersionsRequest::default(),
    ))
    .await
    .unwrap();
    assert_eq!(read_response(&mut good, ApiKey::ApiVersions, 3).await.0, 9);
}

#[tokio::test]
async fn a_full_disk_is_reported_and_recovered_from() {
    let h = Harness::new();
    let mut c = h.connect();
    c.write_all(&frame(ApiKey::Metadata, 9, 1, &metadata("full")))
        .await
        .unwrap();
    read_response(&mut c, ApiKey::Metadata, 9).await;
    h.storage.set_disk_full(true);
    c.write_all(&frame(ApiKey::Produce, 9, 2, &produce("full", -1, &[b"x"])))
        .await
        .unwrap();
    let (_, mut body) = read_response(&mut c, ApiKey::Produce, 9).await;
    let r = ProduceResponse::decode(&mut body, 9).unwrap();
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(
        p.error_code,
        kafka_protocol::ResponseError::KafkaStorageError.code()
    );
    assert!(
        p.error_message.as_ref().is_some_and(|m| !m.is_empty()),
        "the producer is told why"
    );
    h.storage.set_disk_full(false);
    c.write_all(&frame(ApiKey::Produce, 9, 3, &produce("full", -1, &[b"y"])))
        .await
        .unwrap();
    let (_, mut body) = read_response(&mut c, ApiKey::Produce, 9).await;
    let r = ProduceResponse::decode(&mut body, 9).unwrap();
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(
        (p.error_code, p.base_offset),
        (0, 0),
        "nothing half-written was kept"
    );
}

#[tokio::test]
async fn stored_records_go_from_files_to_a_tcp_socket_intact() {
    // Real files and a real socket: large fetches take the sendfile path.
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::on(FileStorage::new(), dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (apis, shutdown) = (Arc::clone(&h.apis), h.shutdown_rx.clone());
    tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        let (reader, writer) = stream.into_split();
        serve(reader, writer, peer, apis, LIMITS, shutdown).await;
    });
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(&frame(ApiKey::Metadata, 9, 1, &metadata("big")))
        .await
        .unwrap();
    read_response(&mut client, ApiKey::Metadata, 9).await;
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for b in 0..6u8 {
        let values: Vec<Vec<u8>> = (0..20u8)
            .map(|i| vec![b.wrapping_mul(31) ^ i; 4096])
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        client
            .write_all(&frame(ApiKey::Produce, 9, 2, &produce("big", -1, &refs)))
            .await
            .unwrap();
        let (_, mut body) = read_response(&mut client, ApiKey::Produce, 9).await;
        let r = ProduceResponse::decode(&mut body, 9).unwrap();
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        sent.extend(values);
    }
    client
        .write_all(&frame(ApiKey::Fetch, 11, 3, &fetch("big", 0, 0)))
        .await
        .unwrap();
    let (id, mut body) = read_response(&mut client, ApiKey::Fetch, 11).await;
    assert_eq!(id, 3);
    let f = FetchResponse::decode(&mut body, 11).unwrap();
    let p = &f.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 120));
    let mut records = p.records.clone().expect("records");
    assert!(
        records.len() > 6 * 20 * 4096,
        "all six batches in one response"
    );
    let got: Vec<Vec<u8>> = RecordBatchDecoder::decode_all(&mut records)
        .expect("whole batches")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| r.value.expect("a value").to_vec())
        .collect();
    assert_eq!(got, sent);
    // The connection is still in step: a second request gets its own answer.
    client
        .write_all(&frame(ApiKey::Metadata, 9, 4, &metadata("big")))
        .await
        .unwrap();
    assert_eq!(read_response(&mut client, ApiKey::Metadata, 9).await.0, 4);
}

#[tokio::test]
async fn a_waiting_fetch_is_answered_when_the_broker_starts_stopping() {
    let h = Harness::new();
    let mut consumer = h.connect();
    consumer
        .write_all(&frame(ApiKey::Metadata, 9, 1, &metadata("stop")))
        .await
        .unwrap();
    read_response(&mut consumer, ApiKey::Metadata, 9).await;
    // Waits up to 60 s for data that never comes.
    consumer
        .write_all(&frame(ApiKey::Fetch, 11, 2, &fetch("stop", 0, 60_000)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.apis.begin_stopping();
    let answered = tokio::time::timeout(
        Duration::from_secs(10),
        read_response(&mut consumer, ApiKey::Fetch, 11),
    )
    .await;
    let (id, mut body) = answered.expect("answered when stopping begins, not at max_wait_ms");
    assert_eq!(id, 2);
    let f = FetchResponse::decode(&mut body, 11).unwrap();
    let p = &f.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 0));
}

/// A single broker leads every partition it has: ElectLeaders finds nothing to elect for an
/// existing partition, reports unknown ones, lists nothing when asked for every partition, and
/// refuses an unknown election type for the whole request (v1+).
#[tokio::test]
async fn elect_leaders_on_a_single_broker() {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
    let h = Harness::new();
    let mut c = h.connect();
    c.write_all(&frame(ApiKey::Metadata, 4, 1, &metadata("t")))
        .await
        .unwrap();
    read_response(&mut c, ApiKey::Metadata, 4).await;
    let named = |election_type| {
        ElectLeadersRequest::default()
            .with_election_type(election_type)
            .with_timeout_ms(1000)
            .with_topic_partitions(Some(vec![
                TopicPartitions::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![0, 7]),
                TopicPartitions::default()
                    .with_topic(TopicName(StrBytes::from_static_str("none")))
                    .with_partitions(vec![0]),
            ]))
    };
    let rows = |r: &ElectLeadersResponse| -> Vec<(String, i32, i16)> {
        let each = r.replica_election_results.iter().flat_map(|t| {
            let name = t.topic.0.to_string();
            t.partition_result
                .iter()
                .map(move |p| (name.clone(), p.partition_id, p.error_code))
        });
        each.collect()
    };
    for (version, election_type) in [(0, 0), (2, 0), (2, 1)] {
        let request = named(election_type);
        c.write_all(&frame(ApiKey::ElectLeaders, version, 2, &request))
            .await
            .unwrap();
        let (_, mut body) = read_response(&mut c, ApiKey::ElectLeaders, version).await;
        let r = ElectLeadersResponse::decode(&mut body, version).unwrap();
        assert_eq!(r.error_code, 0);
        let want = vec![
            ("t".into(), 0, 84),
            ("t".into(), 7, 3),
            ("none".into(), 0, 3),
        ];
        assert_eq!(rows(&r), want, "v{version} type {election_type}");
    }
    let all = ElectLeadersRequest::default().with_topic_partitions(None);
    c.write_all(&frame(ApiKey::ElectLeaders, 2, 3, &all))
        .await
        .unwrap();
    let (_, mut body) = read_response(&mut c, ApiKey::ElectLeaders, 2).await;
    let r = ElectLeadersResponse::decode(&mut body, 2).unwrap();
    assert_eq!((r.error_code, rows(&r)), (0, vec![]));
    c.write_all(&frame(ApiKey::ElectLeaders, 1, 4, &named(5)))
        .await
        .unwrap();
    let (_, mut body) = read_response(&mut c, ApiKey::ElectLeaders, 1).await;
    let r = ElectLeadersResponse::decode(&mut body, 1).unwrap();
    assert_eq!(r.error_code, 42, "INVALID_REQUEST");
    assert!(rows(&r).iter().all(|row| row.2 == 42), "{:?}", rows(&r));
    // Too many partitions: refused whole, at v0 (no top-level error) in every row.
    let many: Vec<i32> = (0..=crate::apis::ELECT_LEADERS_NAMED_MAX as i32).collect();
    let huge =
        ElectLeadersRequest::default()
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(many)]));
    c.write_all(&frame(ApiKey::ElectLeaders, 0, 5, &huge))
        .await
        .unwrap();
    let (_, mut body) = read_response(&mut c, ApiKey::ElectLeaders, 0).await;
    let r = ElectLeadersResponse::decode(&mut body, 0).unwrap();
    let got = rows(&r);
    assert_eq!(got.len(), crate::apis::ELECT_LEADERS_NAMED_MAX + 1);
    assert!(got.iter().all(|row| row.2 == 42));
}

/// A single broker holds every partition itself: AlterPartitionReassignments takes only the
/// target [this broker] (a no-op), refuses any other (INVALID_REPLICA_ASSIGNMENT, also at v1
/// without leave to change the replication factor), has nothing to cancel
/// (NO_REASSIGNMENT_IN_PROGRESS), reports unknown partitions, refuses too many partitions
/// whole; ListPartitionReassignments lists nothing.
#[tokio::test]
async fn partition_reassignments_on_a_single_broker() {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
        ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    };
    let h = Harness::new();
    let mut c = h.connect();
    c.write_all(&frame(ApiKey::Metadata, 4, 1, &metadata("t")))
        .await
        .unwrap();
    read_response(&mut c, ApiKey::Metadata, 4).await;
    let part = |p: i32, replicas: Option<&[i32]>| {
        ReassignablePartition::default()
            .with_partition_index(p)
            .with_replicas(replicas.map(|r| r.iter().map(|&b| BrokerId(b)).collect()))
    };
    let topic = |name: &'static str, partitions| {
        ReassignableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_partitions(partitions)
    };
    let rows = |r: &AlterPartitionReassignmentsResponse| -> Vec<(String, i32, i16)> {
        let each = r.responses.iter().flat_map(|t| {
            let name = t.name.0.to_string();
            t.partitions
                .iter()
                .map(move |p| (name.clone(), p.partition_index, p.error_code))
        });
        each.collect()
    };
    let request = AlterPartitionReassignmentsRequest::default().with_topics(vec![
        topic(
            "t",
            vec![
                part(0, Some(&[1])),
                part(0, Some(&[2])), // the first entry for a partition counts
                part(7, Some(&[1])),
            ],
        ),
        topic("none", vec![part(0, Some(&[1]))]),
    ]);
    let other = AlterPartitionReassignmentsRequest::default()
        .with_topics(vec![topic("t", vec![part(0, Some(&[2])), part(-1, None)])]);
    let cancel = AlterPartitionReassignmentsRequest::default()
        .with_topics(vec![topic("t", vec![part(0, None)])]);
    let no_rf_change = AlterPartitionReassignmentsRequest::default()
        .with_allow_replication_factor_change(false)
        .with_topics(vec![topic(
            "t",
            vec![part(0, Some(&[1])), part(0, Some(&[1, 2]))],
        )]);
    let known = rows_of(&[("t", 0, 0), ("t", 7, 3), ("none", 0, 3)]);
    let cases = [
        (0, &request, known.clone()),
        (1, &request, known),
        (0, &other, rows_of(&[("t", 0, 39), ("t", -1, 3)])),
        (1, &cancel, rows_of(&[("t", 0, 85)])),
        (1, &no_rf_change, rows_of(&[("t", 0, 0)])),
    ];
    for (i, (version, request, want)) in cases.into_iter().enumerate() {
        let correlation = 10 + i as i32;
        c.write_all(&frame(
            ApiKey::AlterPartitionReassignments,
            version,
            correlation,
            request,
        ))
        .await
        .unwrap();
        let (id, mut body) =
            read_response(&mut c, ApiKey::AlterPartitionReassignments, version).await;
        assert_eq!(id, correlation);
        let r = AlterPartitionReassignmentsResponse::decode(&mut body, version).unwrap();
        assert_eq!((r.error_code, rows(&r)), (0, want), "case {i} v{version}");
        if version == 1 {
            assert_eq!(
                r.allow_replication_factor_change,
                request.allow_replication_factor_change
            );
        }
    }
    // The invalid target's row says why.
    c.write_all(&frame(ApiKey::AlterPartitionReassignments, 0, 20, &other))
        .await
        .unwrap();
    let (_, mut body) = read_response(&mut c, ApiKey::AlterPartitionReassignments, 0).await;
    let r = AlterPartitionReassignmentsResponse::decode(&mut body, 0).unwrap();
    let message = r.responses[0].partitions[0].error_message.as_deref();
    assert!(
        message.is_some_and(|m| m.contains("broker 1")),
        "{message:?}"
    );
    assert_eq!(r.error_message, None);

    // Too many partitions: refused whole, top-level and every row.
    let many = (0..=crate::apis::REASSIGN_NAMED_MAX as i32)
        .map(|p| part(p, None))
        .collect();
    let huge = AlterPartitionReassignmentsRequest::default().with_topics(vec![topic("t", many)]);
    c.write_all(&frame(ApiKey::AlterPartitionReassignments, 0, 21, &huge))
        .await
        .unwrap();
    let (_, mut body) = read_response(&mut c, ApiKey::AlterPartitionReassignments, 0).await;
    let r = AlterPartitionReassignmentsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(r.error_code, 42, "INVALID_REQUEST");
    let got = rows(&r);
    assert_eq!(got.len(), crate::apis::REASSIGN_NAMED_MAX + 1);
    assert!(got.iter().all(|row| row.2 == 42));

    // Nothing is ever being reassigned: all, named, and unknown topics list nothing.
    let named = ListPartitionReassignmentsRequest::default().with_topics(Some(vec![
        ListPartitionReassignmentsTopics::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_indexes(vec![0]),
        ListPartitionReassignmentsTopics::default()
            .with_name(TopicName(StrBytes::from_static_str("none")))
            .with_partition_indexes(vec![0]),
    ]));
    let all = ListPartitionReassignmentsRequest::default().with_topics(None);
    for (correlation, request) in [(30, &all), (31, &named)] {
        c.write_all(&frame(
            ApiKey::ListPartitionReassignments,
            0,
            correlation,
            request,
        ))
        .await
        .unwrap();
        let (id, mut body) = read_response(&mut c, ApiKey::ListPartitionReassignments, 0).await;
        assert_eq!(id, correlation);
        let r = ListPartitionReassignmentsResponse::decode(&mut body, 0).unwrap();
        assert_eq!((r.error_code, r.topics.len()), (0, 0), "{r:?}");
    }
}

fn rows_of(rows: &[(&str, i32, i16)]) -> Vec<(String, i32, i16)> {
    rows.iter()
        .map(|&(t, p, e)| (t.to_string(), p, e))
        .collect()
}

/// A standalone broker has no metadata quorum: DescribeQuorum gets INVALID_REQUEST (with its
/// reason from v2) at every version, and the connection stays usable.
#[tokio::test]
async fn describe_quorum_on_a_single_broker() {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    use kafka_protocol::messages::{DescribeQuorumRequest, DescribeQuorumResponse};
    let h = Harness::new();
    let mut c = h.connect();
    let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    for (correlation, version) in [(1, 0), (2, 1), (3, 2)] {
        c.write_all(&frame(
            ApiKey::DescribeQuorum,
            version,
            correlation,
            &request,
        ))
        .await
        .unwrap();
        let (_, mut body) = read_response(&mut c, ApiKey::DescribeQuorum, version).await;
        let r = DescribeQuorumResponse::decode(&mut body, version).unwrap();
        assert_eq!(r.error_code, 42, "INVALID_REQUEST at v{version}");
        if version >= 2 {
            let message = r.error_message.expect("a reason");
            assert!(message.contains("standalone"), "{message}");
        }
    }
    c.write_all(&frame(ApiKey::Metadata, 4, 4, &metadata("t")))
        .await
        .unwrap();
    read_response(&mut c, ApiKey::Metadata, 4).await;
}

/// A replica fetch counts only from the incarnation the image has registered for that replica
/// id: another process started with the same `--node-id` is answered STALE_BROKER_EPOCH for
/// every partition, and nothing of its fetch reaches a partition.
#[tokio::test]
async fn a_replica_fetch_from_an_unregistered_incarnation_is_refused() {
    use crate::cluster::replication::{REPLICA_FETCH_VERSION, REPLICA_INCARNATION_TAG};
    use crate::raft::metadata::MetadataRecord;
    let (inbox, _quorum) = tokio::sync::mpsc::channel(1);
    let view = crate::cluster::ClusterView::new(1, 9, true, [1; 16], inbox);
    let mut image = crate::raft::MetadataImage::default();
    let registration = MetadataRecord::RegisterBroker {
        node_id: 2,
        host: "h2".into(),
        port: 9092,
        epoch: 5,
        logs_intact: true,
        rack: None,
        directory_id: Some([2; 16]),
    };
    image.apply(0, &registration.encode());
    view.publish(Arc::new(image), None);
    let h = Harness::with_cluster(MemStorage::new(), Path::new("/data"), Some(view));
    let mut c = h.connect();
    let from = |incarnation: i64| {
        fetch("t", 0, 0)
            .with_replica_id(kafka_protocol::messages::BrokerId(2))
            .with_unknown_tagged_field(
                REPLICA_INCARNATION_TAG,
                Bytes::copy_from_slice(&incarnation.to_be_bytes()),
            )
    };
    let mut errors = Vec::new();
    for (id, incarnation) in [(1, 6), (2, 5)] {
        let request = frame(ApiKey::Fetch, REPLICA_FETCH_VERSION, id, &from(incarnation));
        c.write_all(&request).await.unwrap();
        let (got, mut body) = read_response(&mut c, ApiKey::Fetch, REPLICA_FETCH_VERSION).await;
        assert_eq!(got, id);
        let f = FetchResponse::decode(&mut body, REPLICA_FETCH_VERSION).unwrap();
        errors.push(f.responses[0].partitions[0].error_code);
    }
    let stale = kafka_protocol::ResponseError::StaleBrokerEpoch.code();
    assert_eq!(errors[0], stale, "another incarnation: refused");
    assert_ne!(
        errors[1], stale,
        "the registered one goes on to the partition checks"
    );
}
