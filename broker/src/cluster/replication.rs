//! Replication on this broker (Kafka's ReplicaManager / ReplicaFetcherManager roles):
//!
//! - **registration**: at start the broker registers with the controller under a fresh
//!   incarnation; until the image holds that registration it leads nothing and deletes nothing
//!   (an image from before the restart does not describe this incarnation);
//! - **reconcile**: every new image is applied to the local partitions: create the logs of new
//!   topics (under the id the controller chose), remove deleted ones, set each partition's
//!   role (lead in epoch E, follow L in epoch E, or offline), and delete the copy of a
//!   partition a reassignment removed this broker from;
//! - **fetchers**: one task per leader this broker follows, sending Kafka Fetch requests with
//!   this broker's replica id for all partitions it follows there, from the log end; each
//!   fetch also tells the leader the durable end (a tagged field), since appended batches are
//!   fsynced by the partition's flusher while the next fetch is on its way (one round of
//!   batches at most is unsynced); diverging epochs truncate; a log that starts past ours
//!   restarts empty there; replicas outside the ISR that a topic's
//!   `follower.replication.throttled.replicas` names share this broker's follower throttle
//!   (`replica::quota`), and are left out of fetches while it is spent;
//! - **ISR**: leaders periodically ask the controller to shrink or expand their ISR.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::watch;
use uuid::Uuid;

use super::controller::{ControllerError, ControllerRequest, ELECT_PARTITIONS_MAX};
use super::ClusterView;
use crate::apis::{Advertised, Clock};
use crate::config::ClusterConfig;
use crate::metrics::BrokerMetrics;
use crate::protocol::client::KafkaConn;
use crate::raft::{MetadataImage, NodeId};
use crate::replica::{quota, FollowerPosition, ReplicaManager, ThrottleSide};
use crate::server::Dialer;
use crate::storage::Storage;

/// Fetch protocol version followers speak (has LastFetchedEpoch and DivergingEpoch).
pub const REPLICA_FETCH_VERSION: i16 = 12;
/// Tag of this broker's own tagged field in a follower's FetchPartition: the follower's durable
/// log end (i64, big-endian), which may trail its fetch offset while an fsync runs. Kafka's
/// tags in FetchPartition are small (0 and 1 so far); this one is far above them. A fetch
/// without it (another implementation's follower) counts its fetch offset as durable.
pub const DURABLE_END_OFFSET_TAG: i32 = 10_000;
/// Tag of this broker's own tagged field in a follower's FetchRequest: the follower's
/// incarnation (i64, big-endian), Kafka's broker epoch in a replica fetch (KIP-903). A leader
/// counts the fetch only when it matches the registration in its image, so a second process
/// started with the same `--node-id` cannot make the leader count its progress (or its lack)
/// as that of the registered one. A fetch without it (another implementation's follower) is
/// counted.
pub const REPLICA_INCARNATION_TAG: i32 = 10_001;
/// Most bytes one follower fetch asks for, in total and per partition.
pub const REPLICA_FETCH_BYTES_MAX: i32 = 32 * 1024 * 1024;
pub const REPLICA_FETCH_PARTITION_BYTES_MAX: i32 = 8 * 1024 * 1024;
/// How long a follower fetch waits at the leader for new data.
pub const REPLICA_FETCH_WAIT_MS: i32 = 500;
/// The least time a follower waits for a fetch's answer before it gives the connection up.
const REPLICA_FETCH_TIMEOUT_MS_MIN: u64 = 4 * REPLICA_FETCH_WAIT_MS as u64;
/// Pause after a failed fetch round before the next.
const FETCH_BACKOFF_MS: u64 = 100;
/// How often leaders check their ISR.
const ISR_CHECK_INTERVAL_MS: u64 = 200;
/// How often a broker repeats its report of failed copies while the image still counts them in
/// an ISR or ELR (a new image makes it report at once).
const OFFLINE_REPORT_RETRY_MS: u64 = 1_000;
/// Pause between registration attempts.
const REGISTER_RETRY_MS: u64 = 200;

/// Runs registration, reconciliation, fetchers and the ISR loop until `stop`.
pub async fn run<S, D>(
    view: Arc<ClusterView>,
    replicas: Arc<ReplicaManager<S>>,
    dialer: Arc<D>,
    config: ClusterConfig,
    advertised: Advertised,
    clock: Arc<dyn Clock>,
    metrics: Arc<BrokerMetrics>,
    stop: watch::Receiver<bool>,
) where
    S: Storage + Clone,
    D: Dialer,
{
    tokio::spawn(register(
        Arc::clone(&view),
        advertised.clone(),
        config.rack.clone(),
        stop.clone(),
    ));
    tokio::spawn(isr_loop(
        Arc::clone(&view),
        Arc::clone(&replicas),
        config.clone(),
        Arc::clone(&clock),
        metrics,
        stop.clone(),
    ));
    let mut fetchers: BTreeSet<NodeId> = BTreeSet::new();
    let mut stop_rx = stop.clone();
    let mut seen = u64::MAX;
    let mut applied = u64::MAX;
    loop {
        let version = view.version();
        if version != seen {
            seen = version;
            let image = view.image();
            reconcile(&view, &replicas, &image, clock.now_ms());
            if version != applied {
                // Only a new image can change roles; the periodic pass just retries.
                applied = version;
                view.roles_applied(version);
            }
            for (id, _) in image.brokers.iter() {
                if *id != view.me && fetchers.insert(*id) {
                    tokio::spawn(fetch_from(
                        *id,
                        Arc::clone(&view),
                        Arc::clone(&replicas),
                        Arc::clone(&dialer),
                        Arc::clone(&clock),
                        fetch_timeout_ms(&config),
                        stop.clone(),
                    ));
                }
            }
        }
        tokio::select! {
            biased;
            _ = stop_rx.changed() => return,
            _ = view.changed_since(seen) => {}
            _ = tokio::time::sleep(Duration::from_millis(1000)) => { seen = u64::MAX; }
        }
    }
}

async fn register(
    view: Arc<ClusterView>,
    advertised: Advertised,
    rack: Option<String>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let image = view.image();
        if view.displaced_by(&image).is_some() {
            // Registering again would take the id back from the other process, which would
            // take it back in turn; the server stops this one instead.
            return;
        }
        if !view.registered(&image) {
            let response = view
                .controller_request(ControllerRequest::RegisterBroker {
                    node_id: view.me,
                    host: advertised.host.clone(),
                    port: advertised.port as u16,
                    incarnation: view.incarnation,
                    logs_intact: view.logs_intact,
                    rack: rack.clone(),
                    directory_id: Some(view.directory_id),
                })
                .await;
            if response.error != ControllerError::None {
                tracing::debug!(error = ?response.error, "registration not accepted yet");
            }
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(REGISTER_RETRY_MS)) => {}
        }
    }
}

/// Applies one image to the local partitions.
fn reconcile<S: Storage + Clone>(
    view: &ClusterView,
    replicas: &ReplicaManager<S>,
    image: &MetadataImage,
    now_ms: i64,
) {
    let registered = view.registered(image);
    // Before any role: a leader's high-watermark rule reads min.insync.replicas from here.
    replicas.set_cluster_configs(&image.cluster_configs);
    replicas.set_throttle_rates(image.broker_configs.get(&view.me), now_ms);
    for (id, t) in &image.topics {
        let uuid = Uuid::from_bytes(*id);
        let local = match replicas.topic(&t.name) {
            Some(local) if local.id == uuid => Some(local),
            Some(stale) if registered => {
                tracing::info!(topic = %t.name, old = %stale.id, new = %uuid,
                    "topic recreated under a new id; removing the old logs");
                let _ = replicas.delete_topic(&t.name);
                None
            }
            Some(_) => continue,
            None => None,
        };
        let local = match local {
            Some(l) => l,
            None => {
                let configs = t.configs.clone();
                match replicas.create_topic_as(
                    &t.name,
                    Some(uuid),
                    t.partitions.len() as i32,
                    configs,
                    now_ms,
                ) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(topic = %t.name, error = %e.message(), "creating a replicated topic's logs");
                        continue;
                    }
                }
            }
        };
        if local.partition_count() < t.partitions.len() {
            if let Err(e) =
                replicas.create_partitions(&t.name, t.partitions.len() as i32, false, now_ms)
            {
                tracing::error!(topic = %t.name, error = %e.message(), "growing a replicated topic");
            }
        }
        if local.configs() != t.configs {
            let _ = replicas.set_topic_configs(&t.name, t.configs.clone());
        }
        for (index, p) in t.partitions.iter().enumerate() {
            let Some(partition) = local.partition(index as i32) else {
                continue;
            };
            // Lead only once this incarnation is registered (its restart bumped the epochs).
            let leader = if p.leader == view.me && !registered {
                -1
            } else {
                p.leader
            };
            let min_isr = replicas.min_insync_replicas(&local);
            partition.set_role(
                view.me,
                leader,
                p.leader_epoch,
                image.alter_partition_epoch(p),
                &p.replicas,
                &p.isr,
                min_isr,
                now_ms,
            );
            // A reassignment removed this broker. Only a registered incarnation acts on it:
            // before, the image may predate this broker's joining the replicas.
            let removed = !p.replicas.is_empty() && !p.replicas.contains(&view.me);
            if registered && removed {
                if let Err(e) = partition.drop_removed_replica() {
                    tracing::error!(topic = %t.name, partition = index, error = %e,
                        "deleting a removed replica's copy");
                }
            }
        }
    }
    if registered {
        for local in replicas.topics() {
            if !image.topic_ids.contains_key(&local.name) {
                tracing::info!(topic = %local.name, "topic deleted by the controller");
                let _ = replicas.delete_topic(&local.name);
            }
        }
    }
}

/// Leaders ask the controller to shrink or expand their ISR, and every broker reports its
/// failed copies, and its in-sync copies whose disk is full.
async fn isr_loop<S: Storage + Clone>(
    view: Arc<ClusterView>,
    replicas: Arc<ReplicaManager<S>>,
    config: ClusterConfig,
    clock: Arc<dyn Clock>,
    metrics: Arc<BrokerMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    // The image version and the time of the last report of failed copies.
    let mut reported: Option<(u64, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(ISR_CHECK_INTERVAL_MS)) => {}
        }
        let version = view.version();
        let image = view.image();
        let now_ms = clock.now_ms();
        let (failed, full) = failed_copies_counted_in(&image, &replicas, view.me);
        let due = reported.is_none_or(|(v, at)| {
            v != version || at.elapsed() >= Duration::from_millis(OFFLINE_REPORT_RETRY_MS)
        });
        if (!failed.is_empty() || !full.is_empty()) && due {
            // Said once per image; the repeats (a sole in-sync copy stays put) go to debug.
            let partitions = failed.len() + full.len();
            let news = reported.map(|(v, _)| v) != Some(version);
            reported = Some((version, tokio::time::Instant::now()));
            if news {
                tracing::warn!(
                    partitions,
                    "asking the controller to take this broker's failed or full copies out of their ISRs"
                );
            } else {
                tracing::debug!(
                    partitions,
                    "reporting this broker's failed or full copies again"
                );
            }
            for (partitions, full) in [(failed, false), (full, true)] {
                if partitions.is_empty() {
                    continue;
                }
                let request = ControllerRequest::ReplicasOffline {
                    node_id: view.me,
                    incarnation: view.incarnation,
                    partitions,
                    full,
                };
                let view = Arc::clone(&view);
                tokio::spawn(async move {
                    let r = view.controller_request(request).await;
                    if r.error != ControllerError::None {
                        tracing::info!(error = ?r.error, full, "failed copies' report not accepted");
                    }
                });
            }
        }
        for topic in replicas.topics() {
            let Some(topic_id) = image.topic_ids.get(&topic.name).copied() else {
                continue;
            };
            for p in topic.partitions() {
                let joinable = |n: NodeId| image.brokers.get(&n).is_some_and(|b| !b.fenced);
                let Some((epoch, partition_epoch, current, new)) =
                    p.isr_change(now_ms, config.replica_lag_time_max_ms as i64, joinable)
                else {
                    continue;
                };
                tracing::info!(topic = %topic.name, partition = p.index, epoch, partition_epoch, ?current, ?new,
                    "asking the controller for an ISR change");
                let metrics = Arc::clone(&metrics);
                let current_len = current.len();
                let view = Arc::clone(&view);
                let request = ControllerRequest::AlterPartition {
                    topic_id,
                    partition: p.index as u32,
                    leader: view.me,
                    leader_epoch: epoch,
                    partition_epoch,
                    current_isr: current,
                    new_isr: new.clone(),
                };
                tokio::spawn(async move {
                    let r = view.controller_request(request).await;
                    if r.error != ControllerError::None {
                        tracing::info!(error = ?r.error, "ISR change not accepted");
                    } else {
                        metrics.isr_changed(current_len, new.len());
                    }
                    if isr_change_refused_for_good(&r.error) {
                        p.isr_change_refused(&new, now_ms);
                    }
                });
            }
        }
    }
}

/// This broker's failed copies (a sync or write error) that `image` still counts in an ISR or
/// ELR, and its full ones (appends refused for want of space) still in an ISR, at most one
/// request's worth of each.
fn failed_copies_counted_in<S: Storage + Clone>(
    image: &MetadataImage,
    replicas: &ReplicaManager<S>,
    me: NodeId,
) -> (Vec<([u8; 16], u32)>, Vec<([u8; 16], u32)>) {
    let (mut failed, mut full) = (Vec::new(), Vec::new());
    for topic in replicas.topics() {
        let Some(&topic_id) = image.topic_ids.get(&topic.name) else {
            continue;
        };
        let Some(t) = image.topics.get(&topic_id) else {
            continue;
        };
        for p in topic.partitions() {
            let image = usize::try_from(p.index)
                .ok()
                .and_then(|i| t.partitions.get(i));
            // A failed copy leaves the ELR too (what it holds is unknown); a full one only the
            // ISR, where it would hold the high watermark and, as leader, refuse every record.
            let (counted, into) = if p.is_failed() {
                let counted = image.is_some_and(|ip| ip.isr.contains(&me) || ip.elr.contains(&me));
                (counted, &mut failed)
            } else {
                let counted = p.is_out_of_space() && image.is_some_and(|ip| ip.isr.contains(&me));
                (counted, &mut full)
            };
            if counted && into.len() < ELECT_PARTITIONS_MAX {
                into.push((topic_id, p.index as u32));
            }
        }
    }
    (failed, full)
}

/// How long a follower waits for a fetch's answer. A connection can die without a reset or an
/// error (a middlebox that forgot it, a peer's host gone): its call would then wait for good
/// while the leader, reachable on a new connection, drops this follower from the ISR. By the
/// lag time the follower is out of the ISR anyway, so giving up then costs nothing.
fn fetch_timeout_ms(config: &ClusterConfig) -> u64 {
    config
        .replica_lag_time_max_ms
        .max(REPLICA_FETCH_TIMEOUT_MS_MIN)
}

/// One follower fetcher: fetches every partition this broker follows on `leader`.
async fn fetch_from<S, D>(
    leader: NodeId,
    view: Arc<ClusterView>,
    replicas: Arc<ReplicaManager<S>>,
    dialer: Arc<D>,
    clock: Arc<dyn Clock>,
    timeout_ms: u64,
    mut stop: watch::Receiver<bool>,
) where
    S: Storage + Clone,
    D: Dialer,
{
    let mut conn: Option<KafkaConn<D::Read, D::Write>> = None;
    let mut conn_addr = String::new();
    loop {
        if *stop.borrow() {
            return;
        }
        // What to fetch: every partition following `leader`, by topic.
        let roles_seen = view.roles_version();
        let image = view.image();
        let now_ms = clock.now_ms();
        // Throttled replicas (outside the ISR, named by the topic's follower list) share this
        // broker's follower rate: while it is spent they are left out of the fetch.
        let throttling = replicas.with_quota(ThrottleSide::Follower, |q| q.rate().is_some());
        let mut throttled: BTreeSet<(String, i32)> = BTreeSet::new();
        let mut held = false;
        let mut wanted: BTreeMap<String, Vec<(i32, FollowerPosition)>> = BTreeMap::new();
        for topic in replicas.topics() {
            for p in topic.partitions() {
                // A failed replica fetches nothing (until a restart recovers its log): the
                // leader drops it from the ISR for lagging, and the controller hears of it.
                if p.is_failed() {
                    continue;
                }
                if let Some(position) = p.follower_position() {
                    if position.leader == leader {
                        if throttling
                            && topic.throttled(quota::FOLLOWER_REPLICAS, p.index, view.me)
                            && !in_isr(&image, &topic.name, p.index, view.me)
                        {
                            if replicas.with_quota(ThrottleSide::Follower, |q| q.exceeded(now_ms)) {
                                held = true;
                                continue;
                            }
                            throttled.insert((topic.name.clone(), p.index));
                        }
                        wanted
                            .entry(topic.name.clone())
                            .or_default()
                            .push((p.index, position));
                    }
                }
            }
        }
        // Batches from the last round may still be syncing: then ask without a long poll, so
        // the durable end this fetch reports is not held at the leader while new data is
        // awaited (if nothing new comes, the sync is awaited below and reported next).
        let syncing = wanted
            .values()
            .flatten()
            .any(|(_, p)| p.durable_end < p.log_end);
        if wanted.is_empty() && held {
            let wait_ms = replicas.with_quota(ThrottleSide::Follower, |q| q.wait_ms());
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                _ = view.roles_changed_since(roles_seen) => {}
                _ = tokio::time::sleep(Duration::from_millis(wait_ms.clamp(1, 500))) => {}
            }
            continue;
        }
        let addr = image
            .brokers
            .get(&leader)
            .map(|b| format!("{}:{}", b.host, b.port));
        if wanted.is_empty() || addr.is_none() {
            conn = None;
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                _ = view.roles_changed_since(roles_seen) => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            continue;
        }
        let addr = addr.unwrap_or_default();
        if conn.is_none() || conn_addr != addr {
            match dialer.dial(addr.clone()).await {
                Ok((r, w)) => {
                    conn = Some(KafkaConn::new(r, w, &format!("replica-{}", view.me)));
                    conn_addr = addr.clone();
                }
                Err(e) => {
                    tracing::debug!(leader, %addr, error = %e, "cannot reach the leader");
                    tokio::time::sleep(Duration::from_millis(FETCH_BACKOFF_MS)).await;
                    continue;
                }
            }
        }
        let throttled_max = replicas.with_quota(ThrottleSide::Follower, |q| {
            q.fetch_bytes_max(REPLICA_FETCH_PARTITION_BYTES_MAX as usize)
        }) as i32;
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(view.me))
            .with_max_wait_ms(if syncing { 0 } else { REPLICA_FETCH_WAIT_MS })
            .with_min_bytes(1)
            .with_max_bytes(REPLICA_FETCH_BYTES_MAX)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(
                wanted
                    .iter()
                    .map(|(name, parts)| {
                        FetchTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(name.clone())))
                            .with_partitions(
                                parts
                                    .iter()
                                    .map(|(index, p)| {
                                        FetchPartition::default()
                                            .with_partition(*index)
                                            .with_current_leader_epoch(p.epoch)
                                            .with_fetch_offset(p.log_end)
                                            .with_last_fetched_epoch(p.last_epoch)
                                            .with_log_start_offset(p.log_start)
                                            .with_partition_max_bytes(
                                                if throttled.contains(&(name.clone(), *index)) {
                                                    throttled_max
                                                } else {
                                                    REPLICA_FETCH_PARTITION_BYTES_MAX
                                                },
                                            )
                                            .with_unknown_tagged_field(
                                                DURABLE_END_OFFSET_TAG,
                                                durable_end_offset_field(p.durable_end),
                                            )
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
            .with_unknown_tagged_field(
                REPLICA_INCARNATION_TAG,
                Bytes::copy_from_slice(&view.incarnation.to_be_bytes()),
            );
        let Some(c) = conn.as_mut() else { continue };
        // A new image may add partitions to follow here (a failover): do not let a long poll
        // for the old set delay them. Abandoning the call leaves its response unread on the
        // connection, so the connection is dropped too.
        let response = tokio::select! {
            biased;
            _ = stop.changed() => return,
            r = c.call(&request, REPLICA_FETCH_VERSION) => r,
            _ = view.roles_changed_since(roles_seen) => {
                conn = None;
                continue;
            }
            _ = tokio::time::sleep(Duration::from_millis(timeout_ms)) => {
                tracing::warn!(leader, timeout_ms, "no answer to a follower fetch; reconnecting");
                conn = None;
                continue;
            }
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(leader, error = %e, "follower fetch failed");
                conn = None;
                tokio::time::sleep(Duration::from_millis(FETCH_BACKOFF_MS)).await;
                continue;
            }
        };
        // Apply each partition on a blocking thread: appends and their fsyncs.
        let mut work = Vec::new();
        let mut throttled_bytes = 0usize;
        for t in response.responses {
            let name = t.topic.0.as_str().to_string();
            throttled_bytes += t
                .partitions
                .iter()
                .filter(|pd| throttled.contains(&(name.clone(), pd.partition_index)))
                .map(|pd| pd.records.as_ref().map_or(0, Bytes::len))
                .sum::<usize>();
            let Some(topic) = replicas.topic(&name) else {
                continue;
            };
            let sent = wanted.get(&name);
            for pd in t.partitions {
                let Some(partition) = topic.partition(pd.partition_index) else {
                    continue;
                };
                let Some(&(_, position)) =
                    sent.and_then(|s| s.iter().find(|s| s.0 == pd.partition_index))
                else {
                    continue;
                };
                work.push((partition, position.epoch, position.log_end, pd));
            }
        }
        if throttled_bytes > 0 {
            let now_ms = clock.now_ms();
            replicas.with_quota(ThrottleSide::Follower, |q| {
                q.record(throttled_bytes, now_ms)
            });
        }
        // The partitions this round fetched, and the offset each fetched from.
        let fetched: Vec<_> = work
            .iter()
            .map(|(partition, _, offset, _)| (Arc::clone(partition), *offset))
            .collect();
        let now_ms = clock.now_ms();
        let backoff = crate::blocking::run_blocking(move || {
            let mut backoff = false;
            for (partition, epoch, offset, pd) in work {
                let error = ResponseError::try_from_code(pd.error_code);
                if pd.diverging_epoch.epoch >= 0 {
                    let target = (pd.diverging_epoch.epoch, pd.diverging_epoch.end_offset);
                    if let Err(e) = partition.follower_truncate(epoch, target) {
                        tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "truncation failed");
                        partition.fail();
                    }
                    continue;
                }
                match error {
                    None => {
                        let records: Bytes = pd.records.unwrap_or_default();
                        if let Err(e) =
                            partition.follower_apply(
                                epoch,
                                &records,
                                pd.high_watermark,
                                pd.log_start_offset,
                                now_ms,
                            )
                        {
                            match &e {
                                // The log is intact; the next fetch asks for the same records
                                // (said once, by the partition, when the disk fills).
                                crate::log::AppendError::Storage(io)
                                    if crate::storage::is_disk_full(io) => {}
                                crate::log::AppendError::Storage(_) => {
                                    tracing::error!(topic = %partition.topic,
                                        partition = partition.index, error = ?e,
                                        "follower append failed");
                                    partition.fail();
                                }
                                _ => tracing::error!(topic = %partition.topic,
                                    partition = partition.index, error = ?e,
                                    "follower append failed"),
                            }
                            backoff = true;
                        }
                    }
                    Some(ResponseError::OffsetOutOfRange) if offset < pd.log_start_offset => {
                        if let Err(e) = partition.follower_restart_at(epoch, pd.log_start_offset) {
                            tracing::error!(error = %e, "restarting a replica failed");
                            partition.fail();
                        }
                    }
                    Some(e) => {
                        tracing::debug!(topic = %partition.topic, partition = partition.index, error = ?e, "follower fetch refused");
                        backoff = true;
                    }
                }
            }
            backoff
        })
        .await
        .unwrap_or(true);
        // At most one round's batches are unsynced: before the next fetch, what this one fetched
        // from is durable (with nothing new fetched, that is everything, and the long poll can
        // resume). A failed or closed partition is reported by its own flusher.
        let synced = async {
            for (partition, offset) in &fetched {
                let _ = partition.wait_follower_durable(*offset).await;
            }
        };
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = synced => {}
            _ = view.roles_changed_since(roles_seen) => {}
        }
        if backoff {
            tokio::time::sleep(Duration::from_millis(FETCH_BACKOFF_MS)).await;
        }
    }
}

/// Whether the image lists `me` in the ISR of the partition.
fn in_isr(image: &MetadataImage, topic: &str, partition: i32, me: NodeId) -> bool {
    let t = image
        .topic_ids
        .get(topic)
        .and_then(|id| image.topics.get(id));
    let p = t.and_then(|t| t.partitions.get(usize::try_from(partition).ok()?));
    p.is_some_and(|p| p.isr.contains(&me))
}

/// Whether the controller's answer to an AlterPartition says it was not and will not be
/// committed (Kafka's INELIGIBLE_REPLICA and invalid requests). A stale request, or no answer,
/// leaves the outcome to the metadata.
pub fn isr_change_refused_for_good(error: &ControllerError) -> bool {
    matches!(
        error,
        ControllerError::IneligibleReplica(_)
            | ControllerError::InvalidRequest(_)
            | ControllerError::UnknownTopic
    )
}

/// The tagged-field value carrying a follower's durable log end.
pub fn durable_end_offset_field(offset: i64) -> Bytes {
    Bytes::copy_from_slice(&offset.to_be_bytes())
}

/// The incarnation a follower's FetchRequest carries, if it carries a well-formed one.
pub fn replica_incarnation(request: &FetchRequest) -> Option<i64> {
    let raw = request
        .unknown_tagged_fields
        .get(&REPLICA_INCARNATION_TAG)?;
    let bytes: [u8; 8] = raw.as_ref().try_into().ok()?;
    Some(i64::from_be_bytes(bytes))
}

/// The durable log end a follower's FetchPartition carries, if it carries a well-formed one.
pub fn durable_end_offset(partition: &FetchPartition) -> Option<i64> {
    let raw = partition
        .unknown_tagged_fields
        .get(&DURABLE_END_OFFSET_TAG)?;
    let bytes: [u8; 8] = raw.as_ref().try_into().ok()?;
    Some(i64::from_be_bytes(bytes))
}
