//! Fetch: serve stored batches up to the high watermark, byte-for-byte as stored. A fetch that
//! finds fewer than `min_bytes` waits, and is answered the moment enough data becomes visible
//! (any high watermark advance wakes it) or when `max_wait_ms` runs out.
//!
//! Fetch sessions (KIP-227) are declined by answering session id 0, so clients send full fetches.
//!
//! A fetch with a replica id (>= 0) is a follower's: it reads up to the log end, reports the
//! follower's durable position to the leader (which may advance the high watermark), and is
//! answered with a diverging epoch when the follower's log went astray. Its long poll wakes on
//! any leader append; an in-sync follower's also answers, empty, once a high watermark it asks
//! about moves, so the follower passes it on to its consumers at once. A follower outside the ISR whose partition the topic's
//! `leader.replication.throttled.replicas` names on this broker is served within this
//! broker's leader throttle (`replica::quota`): nothing while it is spent.
//!
//! Fetch from follower (KIP-392): a v11+ consumer fetch may be served by an in-sync follower,
//! up to the high watermark the leader passed on. A leader whose `--replica-selector` is
//! `rack` answers a consumer that names its rack with a preferred read replica in that rack
//! and no records (`replica::selector`); the consumer then fetches from there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;

use super::{code, KafkaApis, Reply};
use crate::log::ReadError;
use crate::protocol::fetch_frame::{FetchReply, RecordsSlots};
use crate::replica::core::{ReplicaFetchError, ReplicaFetchPosition};
use crate::replica::selector::{ReadCandidate, ReplicaSelector};
use crate::replica::{quota, ThrottleSide};
use crate::storage::Storage;

/// Longest a fetch may wait, whatever the client asks.
pub const FETCH_WAIT_MS_MAX: i32 = 60_000;
/// Most bytes one fetch response carries, whatever the client asks (plus at most one batch).
pub const FETCH_RESPONSE_BYTES_MAX: i32 = 64 * 1024 * 1024;

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn fetch(
        &self,
        request: FetchRequest,
        version: i16,
        connection: &Arc<AtomicBool>,
    ) -> Reply {
        let max_wait_ms = request.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX);
        let min_bytes = request.min_bytes.max(0) as usize;
        let replica = request.replica_id.0.max(request.replica_state.replica_id.0);
        if replica >= 0 {
            let image = self.cluster.as_ref().map(|view| view.image());
            let registration = image.as_ref().and_then(|i| i.brokers.get(&replica));
            let incarnation = crate::cluster::replication::replica_incarnation(&request);
            if let (Some(b), Some(incarnation)) = (registration, incarnation) {
                if b.epoch != incarnation {
                    // Another process than the registered one (or this leader's image is
                    // behind a restart): nothing of it counts.
                    tracing::debug!(
                        replica,
                        incarnation,
                        registered = b.epoch,
                        "refusing a replica fetch from an unregistered incarnation"
                    );
                    self.metrics.fetched(true, 0);
                    return Reply::Fetch(FetchReply::in_memory(refused(
                        &request,
                        version,
                        ResponseError::StaleBrokerEpoch,
                    )));
                }
            }
            // Only registered brokers, so a client naming made-up replica ids cannot grow it.
            if registration.is_some() {
                self.follower_links
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(replica, Arc::clone(connection));
            }
            return self.replica_fetch(request, replica, version, max_wait_ms, min_bytes);
        }
        self.long_poll(request, max_wait_ms, min_bytes, None, move |apis, r| {
            apis.fetch_once(r, version)
        })
    }

    /// Answers `request` with `once(request)` now if it has `min_bytes` (or an error the client
    /// must act on, or no wait was asked for); otherwise re-runs it whenever data changes (any
    /// high watermark advance for consumers, any leader append for `replica`) until it does or
    /// `max_wait_ms` passes.
    fn long_poll(
        &self,
        request: FetchRequest,
        max_wait_ms: i32,
        min_bytes: usize,
        replica: Option<i32>,
        once: impl Fn(&Self, &FetchRequest) -> (FetchReply, usize) + Send + 'static,
    ) -> Reply {
        // An in-sync follower's fetch also answers, empty, once a high watermark it asks about
        // moves (its own report may move it): the follower passes it on to consumers that read
        // from it (KIP-392), and would otherwise learn it only with the next append.
        let watermarks = replica.map(|r| self.high_watermarks(&request, r));
        let (reply, bytes) = once(self, &request);
        if bytes >= min_bytes
            || max_wait_ms == 0
            || bytes_unreachable(reply.response())
            || self.high_watermark_moved(&request, replica, watermarks.as_deref())
        {
            self.metrics.fetched(replica.is_some(), bytes as u64);
            return Reply::Fetch(reply);
        }
        // The answer's record bytes, counted once, for the one answer sent.
        let answered = move |apis: &Self, (reply, bytes): (FetchReply, usize)| {
            apis.metrics.fetched(replica.is_some(), bytes as u64);
            reply
        };
        let apis = self.clone();
        Reply::FetchLater(Box::pin(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(max_wait_ms as u64);
            let versions = |apis: &Self| {
                (
                    apis.replicas.data_version(),
                    apis.replicas.log_end_version(),
                )
            };
            loop {
                let (data_seen, log_end_seen) = versions(&apis);
                // For a follower, re-reading also re-reports its position: harmless, it only
                // grows.
                let (reply, bytes) = once(&apis, &request);
                if bytes >= min_bytes
                    || bytes_unreachable(reply.response())
                    || apis.high_watermark_moved(&request, replica, watermarks.as_deref())
                    || tokio::time::Instant::now() >= deadline
                {
                    return answered(&apis, (reply, bytes));
                }
                let changed = async {
                    match replica {
                        None => apis.replicas.data_changed_since(data_seen).await,
                        Some(_) => tokio::select! {
                            _ = apis.replicas.log_end_changed_since(log_end_seen) => {}
                            _ = apis.replicas.data_changed_since(data_seen) => {}
                        },
                    }
                };
                let stopping = apis.stopping.wait_for(|s| *s);
                tokio::select! {
                    r = tokio::time::timeout_at(deadline, changed) => {
                        if r.is_err() {
                            // Deadline: answer with what there is.
                            return answered(&apis, once(&apis, &request));
                        }
                    }
                    _ = stopping => {
                        // Shutting down: answer now rather than hold the connection open.
                        return answered(&apis, once(&apis, &request));
                    }
                }
            }
        }))
    }

    /// In request order, the high watermark of each partition `request` names that this broker
    /// leads with `replica` in its ISR; i64::MAX for the others. Only an in-sync follower
    /// serves consumers, so only it needs the high watermark at once: a throttled replica
    /// catching up would otherwise be answered at every commit.
    fn high_watermarks(&self, request: &FetchRequest, replica: i32) -> Vec<i64> {
        let mut all = Vec::new();
        for t in &request.topics {
            let topic = self.replicas.topic(t.topic.0.as_str());
            for p in &t.partitions {
                let partition = topic.as_ref().and_then(|t| t.partition(p.partition));
                all.push(
                    partition
                        .filter(|p| p.in_isr(replica))
                        .map_or(i64::MAX, |p| p.high_watermark()),
                );
            }
        }
        all
    }

    /// Whether some partition's high watermark is above `before` (from
    /// [`high_watermarks`](Self::high_watermarks)); false without `before`.
    fn high_watermark_moved(
        &self,
        request: &FetchRequest,
        replica: Option<i32>,
        before: Option<&[i64]>,
    ) -> bool {
        let (Some(replica), Some(before)) = (replica, before) else {
            return false;
        };
        let now = self.high_watermarks(request, replica);
        now.iter().zip(before).any(|(now, before)| now > before)
    }

    /// Builds one fetch response from what is visible now; returns it with its record bytes.
    fn fetch_once(&self, request: &FetchRequest, version: i16) -> (FetchReply, usize) {
        let response_bytes_max = if version >= 3 {
            request.max_bytes
        } else {
            FETCH_RESPONSE_BYTES_MAX
        };
        let mut remaining = response_bytes_max.clamp(0, FETCH_RESPONSE_BYTES_MAX) as usize;
        let mut total = 0usize;
        let mut slots = RecordsSlots::new();
        let mut topics = Vec::with_capacity(request.topics.len());
        for fetch_topic in &request.topics {
            let topic = self.replicas.topic(fetch_topic.topic.0.as_str());
            let mut partitions = Vec::with_capacity(fetch_topic.partitions.len());
            for fp in &fetch_topic.partitions {
                let mut data = empty_partition_data(fp.partition, version);
                let partition = match servable(topic.as_ref(), fp.partition) {
                    Ok(p) => p,
                    Err(error) => {
                        partitions.push(data.with_error_code(code(error)));
                        continue;
                    }
                };
                // v11+ consumers may read from followers (KIP-392), up to the high watermark
                // the leader passed on.
                let leading = partition.is_leader();
                let serving = leading || (version >= 11 && partition.serves_follower_reads());
                if let Some(error) =
                    leader_check(serving, partition.leader_epoch(), fp.current_leader_epoch)
                {
                    // v12+: tell the client where the partition moved, when the image knows.
                    if let Some((leader, epoch)) =
                        self.known_leader(fetch_topic.topic.0.as_str(), fp.partition)
                    {
                        data = data.with_current_leader(
                            LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(leader))
                                .with_leader_epoch(epoch),
                        );
                    }
                    partitions.push(data.with_error_code(code(error)));
                    continue;
                }
                if leading && version >= 11 {
                    let rack = request.rack_id.as_str();
                    if let Some(replica) =
                        self.preferred_read_replica(&partition, rack, fp.fetch_offset)
                    {
                        // Nothing is read: the consumer reads from that replica instead.
                        let (_, high_watermark, log_start) = partition.fetch(fp.fetch_offset, 0);
                        partitions.push(
                            data.with_high_watermark(high_watermark)
                                .with_last_stable_offset(high_watermark)
                                .with_log_start_offset(log_start)
                                .with_preferred_read_replica(BrokerId(replica)),
                        );
                        continue;
                    }
                }
                let max_bytes = if remaining == 0 {
                    0
                } else {
                    (fp.partition_max_bytes.max(0) as usize)
                        .min(remaining)
                        .max(1)
                };
                let (result, high_watermark, log_start) =
                    partition.fetch(fp.fetch_offset, max_bytes);
                data = data
                    .with_high_watermark(high_watermark)
                    .with_last_stable_offset(high_watermark)
                    .with_log_start_offset(log_start);
                match result.and_then(|r| {
                    let n = r.len();
                    Ok((slots.slot(r)?, n))
                }) {
                    Ok((records, n)) => {
                        remaining = remaining.saturating_sub(n);
                        total += n;
                        partitions.push(data.with_records(Some(records)));
                    }
                    Err(ReadError::OffsetOutOfRange { .. }) => {
                        partitions
                            .push(data.with_error_code(code(ResponseError::OffsetOutOfRange)));
                    }
                    Err(e) => {
                        tracing::error!(topic = %partition.topic, partition = fp.partition, error = %e, "read failed");
                        partitions
                            .push(data.with_error_code(code(ResponseError::KafkaStorageError)));
                    }
                }
            }
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(fetch_topic.topic.clone())
                    .with_partitions(partitions),
            );
        }
        (
            slots.finish(
                FetchResponse::default()
                    .with_session_id(0)
                    .with_responses(topics),
            ),
            total,
        )
    }
}

impl<S: Storage + Clone> KafkaApis<S> {
    /// The replica this leader tells a consumer in `client_rack` fetching at `fetch_offset` to
    /// read from instead (this broker's `--replica-selector`), or None to serve it here. Only
    /// registered, unfenced brokers whose last fetch connection here is still open are named.
    fn preferred_read_replica(
        &self,
        partition: &crate::replica::Partition<S>,
        client_rack: &str,
        fetch_offset: i64,
    ) -> Option<i32> {
        let selector = self.replicas.config().cluster.replica_selector;
        if selector == ReplicaSelector::Leader || client_rack.is_empty() {
            return None;
        }
        let image = self.cluster.as_ref()?.image();
        let candidates = partition.read_candidates(fetch_offset, self.now_ms());
        let leader = candidates.first()?.0;
        let linked = |id: i32| {
            id == leader
                || self
                    .follower_links
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .is_some_and(|open| open.load(Ordering::Acquire))
        };
        let views: Vec<ReadCandidate<'_>> = candidates
            .iter()
            .filter_map(|&(id, log_end, last_caught_up_ms)| {
                let broker = image.brokers.get(&id).filter(|b| !b.fenced && linked(id))?;
                Some(ReadCandidate {
                    id,
                    rack: broker.rack.as_deref(),
                    log_end,
                    last_caught_up_ms,
                })
            })
            .collect();
        selector.select(client_rack, leader, &views)
    }

    /// The partition's leader and leader epoch in this broker's metadata image, if clustered
    /// and known.
    pub(crate) fn known_leader(&self, topic: &str, partition: i32) -> Option<(i32, i32)> {
        let image = self.cluster.as_ref()?.image();
        let id = image.topic_ids.get(topic)?;
        let p = image
            .topics
            .get(id)?
            .partitions
            .get(usize::try_from(partition).ok()?)?;
        (p.leader >= 0).then_some((p.leader, p.leader_epoch))
    }
}

/// The error a consumer's request gets from a replica that does not lead in the epoch the
/// client knows (-1: the client does not say), or None.
pub(crate) fn leader_check(leading: bool, epoch: i32, client_epoch: i32) -> Option<ResponseError> {
    if client_epoch >= 0 && client_epoch < epoch {
        Some(ResponseError::FencedLeaderEpoch)
    } else if client_epoch > epoch {
        Some(ResponseError::UnknownLeaderEpoch)
    } else if !leading {
        Some(ResponseError::NotLeaderOrFollower)
    } else {
        None
    }
}

impl<S: Storage + Clone> KafkaApis<S> {
    fn replica_fetch(
        &self,
        request: FetchRequest,
        replica: i32,
        version: i16,
        max_wait_ms: i32,
        min_bytes: usize,
    ) -> Reply {
        self.long_poll(
            request,
            max_wait_ms,
            min_bytes,
            Some(replica),
            move |apis, r| apis.replica_fetch_once(r, replica, version),
        )
    }

    fn replica_fetch_once(
        &self,
        request: &FetchRequest,
        replica: i32,
        version: i16,
    ) -> (FetchReply, usize) {
        let now_ms = self.now_ms();
        let me = self.replicas.config().node_id;
        let throttling = self
            .replicas
            .with_quota(ThrottleSide::Leader, |q| q.rate().is_some());
        let mut remaining = request.max_bytes.clamp(0, FETCH_RESPONSE_BYTES_MAX) as usize;
        let mut total = 0usize;
        let mut slots = RecordsSlots::new();
        let mut topics = Vec::with_capacity(request.topics.len());
        for fetch_topic in &request.topics {
            let topic = self.replicas.topic(fetch_topic.topic.0.as_str());
            let mut partitions = Vec::with_capacity(fetch_topic.partitions.len());
            for fp in &fetch_topic.partitions {
                let mut data = empty_partition_data(fp.partition, version);
                let partition = match servable(topic.as_ref(), fp.partition) {
                    Ok(p) => p,
                    Err(error) => {
                        partitions.push(data.with_error_code(code(error)));
                        continue;
                    }
                };
                let mut max_bytes = (fp.partition_max_bytes.max(0) as usize)
                    .min(remaining)
                    .max(1);
                // A throttled replica outside the ISR gets at most one second of the leader's
                // throttle rate per fetch, and nothing while the rate is spent.
                let throttled = throttling
                    && topic
                        .as_ref()
                        .is_some_and(|t| t.throttled(quota::LEADER_REPLICAS, fp.partition, me))
                    && !partition.in_isr(replica);
                if throttled {
                    max_bytes = self.replicas.with_quota(ThrottleSide::Leader, |q| {
                        if q.exceeded(now_ms) {
                            0
                        } else {
                            q.fetch_bytes_max(max_bytes)
                        }
                    });
                }
                let last_fetched_epoch = if version >= 12 {
                    fp.last_fetched_epoch
                } else {
                    -1
                };
                match partition.replica_fetch(
                    replica,
                    fp.current_leader_epoch,
                    fp.fetch_offset,
                    crate::cluster::replication::durable_end_offset(fp),
                    last_fetched_epoch,
                    fp.log_start_offset,
                    max_bytes,
                    now_ms,
                ) {
                    Ok(read) => {
                        data = data
                            .with_high_watermark(read.high_watermark)
                            .with_last_stable_offset(read.high_watermark)
                            .with_log_start_offset(read.log_start_offset);
                        if let ReplicaFetchPosition::Diverging { epoch, end_offset } = read.position
                        {
                            data = data.with_diverging_epoch(
                                EpochEndOffset::default()
                                    .with_epoch(epoch)
                                    .with_end_offset(end_offset),
                            );
                        } else if fp.fetch_offset < read.log_start_offset {
                            data = data.with_error_code(code(ResponseError::OffsetOutOfRange));
                        }
                        let n = read.records.len();
                        if throttled {
                            self.replicas
                                .with_quota(ThrottleSide::Leader, |q| q.record(n, now_ms));
                        }
                        match slots.slot(read.records) {
                            Ok(records) => {
                                remaining = remaining.saturating_sub(n);
                                total += n;
                                partitions.push(data.with_records(Some(records)));
                            }
                            Err(e) => {
                                tracing::error!(topic = %partition.topic, partition = fp.partition, error = %e, "read for a follower failed");
                                partitions.push(
                                    data.with_error_code(code(ResponseError::KafkaStorageError)),
                                );
                            }
                        }
                    }
                    Err(e) => {
                        let error = match e {
                            ReplicaFetchError::NotLeader | ReplicaFetchError::NotReplica => {
                                ResponseError::NotLeaderOrFollower
                            }
                            ReplicaFetchError::FencedEpoch => ResponseError::FencedLeaderEpoch,
                            ReplicaFetchError::UnknownEpoch => ResponseError::UnknownLeaderEpoch,
                        };
                        partitions.push(data.with_error_code(code(error)));
                    }
                }
            }
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(fetch_topic.topic.clone())
                    .with_partitions(partitions),
            );
        }
        (
            slots.finish(
                FetchResponse::default()
                    .with_session_id(0)
                    .with_responses(topics),
            ),
            total,
        )
    }
}

/// Every partition `request` names, answered `error` and nothing else.
fn refused(request: &FetchRequest, version: i16, error: ResponseError) -> FetchResponse {
    let topics = request.topics.iter().map(|t| {
        let partitions = t
            .partitions
            .iter()
            .map(|fp| empty_partition_data(fp.partition, version).with_error_code(code(error)));
        FetchableTopicResponse::default()
            .with_topic(t.topic.clone())
            .with_partitions(partitions.collect())
    });
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(topics.collect())
}

/// A partition's answer before anything is read: no records, unknown offsets.
fn empty_partition_data(index: i32, version: i16) -> PartitionData {
    let data = PartitionData::default()
        .with_partition_index(index)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(Bytes::new()));
    if version >= 4 {
        data.with_aborted_transactions(Some(Vec::new()))
    } else {
        data
    }
}

/// The partition to read, or the error a fetch of it gets (unknown here, or storage failed).
fn servable<S: Storage>(
    topic: Option<&std::sync::Arc<crate::replica::Topic<S>>>,
    index: i32,
) -> Result<std::sync::Arc<crate::replica::Partition<S>>, ResponseError> {
    let partition = topic
        .and_then(|t| t.partition(index))
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    if partition.is_failed() || partition.is_closed() {
        return Err(ResponseError::KafkaStorageError);
    }
    Ok(partition)
}

/// True when waiting cannot help: some partition answered with an error the client must act on,
/// or sent the client to another replica.
fn bytes_unreachable(response: &FetchResponse) -> bool {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .any(|p| p.error_code != 0 || p.preferred_read_replica.0 >= 0)
}
