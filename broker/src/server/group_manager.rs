//! GroupManager: the tokio shell around the sans-IO [`GroupCoordinator`]. It hands requests to
//! the core in arrival order, appends the records the core asks to persist to the internal
//! offsets log (`<data-dir>/__consumer_offsets-0`, through the same append path as user data),
//! tells the core when they are held by every in-sync replica of that log (the high watermark;
//! on a single broker that is its own fsync), delivers the core's responses, and calls `tick`
//! when the core's nearest deadline passes.
//!
//! Single broker: the manager owns the offsets log and replays it at start. Cluster: the
//! offsets log is the replicated topic `__consumer_offsets` (one partition); this broker is the
//! coordinator of every group exactly while it leads that partition. On becoming its leader it
//! replays the log into a fresh coordinator; on losing it, it drops the coordinator, so clients
//! find the new one: a request whose records are already in the log is answered
//! COORDINATOR_NOT_AVAILABLE (they may survive under the next leader, so it may have
//! happened), every other waiting request NOT_COORDINATOR (it did not).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

use crate::apis::Clock;
use crate::group::{
    GroupConfig, GroupCoordinator, GroupRecord, GroupRequest, GroupResponse, PersistId, RequestId,
};
use crate::log::batch::{
    decode_records, encode_batch, validate_for_append, NewRecord, RecordBatchHeader,
};
use crate::log::{Log, LogConfig};
use crate::replica::{AckPolicy, Partition};
use crate::storage::Storage;

/// The internal log's directory name, as in Kafka.
pub const OFFSETS_LOG_DIR: &str = "__consumer_offsets-0";
/// Bytes read per step while replaying the offsets log.
const REPLAY_READ_BYTES: usize = 1024 * 1024;
/// Records encoded into one batch of the offsets log at most.
const RECORDS_PER_APPEND_MAX: usize = 10_000;

/// The internal topic holding group metadata and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A loaded coordinator: its core, the offsets log it writes and the leader epoch it loaded in.
struct Coordinating<S: Storage> {
    core: GroupCoordinator,
    log: Arc<Partition<S>>,
    epoch: i32,
}

pub struct GroupManager<S: Storage> {
    /// None while this broker does not coordinate (cluster mode, not the offsets leader).
    state: Mutex<Option<Coordinating<S>>>,
    waiters: Mutex<BTreeMap<RequestId, oneshot::Sender<GroupResponse>>>,
    next_request: AtomicU64,
    timer: Notify,
    clock: Arc<dyn Clock>,
    group_config: GroupConfig,
    seed: u64,
    /// The single broker's own offsets log (None in cluster mode).
    owned_log: Option<Arc<Partition<S>>>,
    closed: std::sync::atomic::AtomicBool,
}

fn record_key(record: &GroupRecord) -> String {
    match record {
        GroupRecord::Offset {
            group,
            topic,
            partition,
            ..
        }
        | GroupRecord::OffsetTombstone {
            group,
            topic,
            partition,
        } => format!("offset/{group}/{topic}/{partition}"),
        GroupRecord::Group { group, .. } | GroupRecord::GroupTombstone { group } => {
            format!("group/{group}")
        }
    }
}

/// The coordinator's clock: the wall clock read once at start, then advanced by tokio's
/// monotonic clock. Session, rebalance and join deadlines are durations, and a wall clock that
/// steps (NTP, a resumed VM) would stretch or cut them; this one never steps. (Kafka's group
/// coordinator reads the wall clock and stalls on a backward step; found by the turmoil
/// simulation's clock faults.)
struct MonotonicClock {
    base_ms: i64,
    start: tokio::time::Instant,
}

impl MonotonicClock {
    fn starting_at(base_ms: i64) -> Self {
        MonotonicClock {
            base_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> i64 {
        self.base_ms
            .saturating_add(i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX))
    }
}

impl<S: Storage + Clone> GroupManager<S> {
    /// Opens (recovering) the offsets log, replays it into a new coordinator and starts the timer.
    pub fn open(
        storage: S,
        data_dir: &Path,
        log_config: &LogConfig,
        policy: AckPolicy,
        group_config: GroupConfig,
        clock: Arc<dyn Clock>,
        seed: u64,
    ) -> anyhow::Result<Arc<Self>> {
        let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::starting_at(clock.now_ms()));
        let now_ms = clock.now_ms();
        // Offsets are kept until compaction exists: no time or size retention on this log.
        let config = LogConfig {
            retention_ms: -1,
            retention_bytes: -1,
            ..log_config.clone()
        };
        let (log, report) = Log::open(storage, data_dir.join(OFFSETS_LOG_DIR), config, now_ms)?;
        tracing::info!(report = ?report, "opened the group offsets log");
        let mut core = GroupCoordinator::new(group_config.clone(), seed);
        let replayed = replay(&log, &mut core)?;
        core.loaded(now_ms);
        tracing::info!(records = replayed, "replayed group offsets and metadata");
        // Nothing fetches this log, so its high-watermark notifications go nowhere.
        let unwatched = Arc::new(crate::sync::Watch::new(0u64));
        let log = Partition::new(
            OFFSETS_TOPIC.into(),
            0,
            log,
            policy,
            Arc::clone(&unwatched),
            unwatched,
            false,
        );
        let manager = Arc::new(GroupManager {
            state: Mutex::new(Some(Coordinating {
                core,
                log: Arc::clone(&log),
                epoch: 0,
            })),
            waiters: Mutex::new(BTreeMap::new()),
            next_request: AtomicU64::new(1),
            timer: Notify::new(),
            clock,
            group_config,
            seed,
            owned_log: Some(log),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(Arc::clone(&manager).run_timer());
        Ok(manager)
    }

    /// A cluster node's manager: coordinates nothing until [`GroupManager::follow`] finds this
    /// broker leading the offsets topic.
    pub fn clustered(group_config: GroupConfig, clock: Arc<dyn Clock>, seed: u64) -> Arc<Self> {
        let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::starting_at(clock.now_ms()));
        let manager = Arc::new(GroupManager {
            state: Mutex::new(None),
            waiters: Mutex::new(BTreeMap::new()),
            next_request: AtomicU64::new(1),
            timer: Notify::new(),
            clock,
            group_config,
            seed,
            owned_log: None,
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(Arc::clone(&manager).run_timer());
        manager
    }

    fn state(&self) -> MutexGuard<'_, Option<Coordinating<S>>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this broker coordinates groups now.
    pub fn is_coordinator(&self) -> bool {
        self.state().is_some()
    }

    /// Cluster mode: load or drop the coordinator as this broker gains or loses the leadership
    /// of the offsets partition (`offsets`, None while it does not exist here).
    pub fn follow(self: &Arc<Self>, offsets: Option<Arc<Partition<S>>>) {
        let leading = offsets
            .as_ref()
            .filter(|p| p.is_leader() && !p.is_failed() && !p.is_closed())
            .map(|p| (Arc::clone(p), p.leader_epoch()));
        let mut state = self.state();
        let current = state.as_ref().map(|c| (Arc::as_ptr(&c.log), c.epoch));
        let changing = match &leading {
            Some((p, epoch)) => current != Some((Arc::as_ptr(p), *epoch)),
            None => current.is_some(),
        };
        if !changing {
            return;
        }
        if let Some(old) = state.as_mut() {
            old.core.resign(self.clock.now_ms());
            self.deliver(&mut old.core);
        }
        // The old coordinator's other requests get NOT_COORDINATOR (their senders are dropped).
        // Cleared under the state lock, before a new coordinator takes requests: a request it
        // took in between would be answered NOT_COORDINATOR and then carried out anyway (found
        // by the nemesis interop test, seed 3: a commit so answered was read back).
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        match leading {
            Some((p, epoch)) => {
                let mut core = GroupCoordinator::new(self.group_config.clone(), self.seed);
                let replayed = {
                    let guard = p.core();
                    replay(guard.log(), &mut core)
                };
                match replayed {
                    Ok(n) => {
                        core.loaded(self.clock.now_ms());
                        tracing::info!(
                            epoch,
                            records = n,
                            "coordinating groups: loaded the offsets log"
                        );
                        *state = Some(Coordinating {
                            core,
                            log: p,
                            epoch,
                        });
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "loading the offsets log failed");
                        *state = None;
                    }
                }
                drop(state);
                self.timer.notify_one();
            }
            None => {
                tracing::info!("no longer coordinating groups");
                *state = None;
            }
        }
    }

    /// Hands `request` to the coordinator now (so requests reach it in arrival order) and returns
    /// where its response will arrive.
    pub fn submit(
        self: &Arc<Self>,
        version: i16,
        client_id: &str,
        client_host: &str,
        request: GroupRequest,
    ) -> oneshot::Receiver<GroupResponse> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut state = self.state();
        let Some(st) = state.as_mut() else {
            // Dropping `tx` answers NOT_COORDINATOR.
            return rx;
        };
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        st.core.handle(
            self.clock.now_ms(),
            id,
            version,
            client_id,
            client_host,
            request,
        );
        self.pump(st);
        rx
    }

    /// Moves everything the core produced: records to the log, responses to their requests.
    fn pump(self: &Arc<Self>, st: &mut Coordinating<S>) {
        let core = &mut st.core;
        loop {
            let mut records: Vec<(PersistId, GroupRecord)> = Vec::new();
            while records.len() < RECORDS_PER_APPEND_MAX {
                match core.poll_record() {
                    Some(r) => records.push(r),
                    None => break,
                }
            }
            if records.is_empty() {
                break;
            }
            self.persist(core, &st.log, st.epoch, records);
        }
        self.deliver(core);
    }

    /// Hands the core's responses to their waiting requests.
    fn deliver(&self, core: &mut GroupCoordinator) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((id, response)) = core.poll_response() {
            match waiters.remove(&id) {
                Some(tx) => {
                    let _ = tx.send(response);
                }
                None => tracing::error!(
                    request = id,
                    "group coordinator answered an unknown request"
                ),
            }
        }
        drop(waiters);
        self.timer.notify_one();
    }

    /// Appends `records` (in PersistId order) as one batch; when every in-sync replica holds
    /// it the core is told, from a task, so the lock is not held across the wait.
    fn persist(
        self: &Arc<Self>,
        core: &mut GroupCoordinator,
        log: &Arc<Partition<S>>,
        loaded_epoch: i32,
        records: Vec<(PersistId, GroupRecord)>,
    ) {
        let last_id = records
            .last()
            .map(|(id, _)| *id)
            .expect("records is not empty");
        let encoded: Vec<(String, Vec<u8>)> = records
            .iter()
            .map(|(_, r)| {
                (
                    record_key(r),
                    serde_json::to_vec(r).expect("group records serialize"),
                )
            })
            .collect();
        let now_ms = self.clock.now_ms();
        let batch = encode_batch(
            now_ms,
            &encoded
                .iter()
                .map(|(k, v)| NewRecord {
                    key: Some(k.as_bytes()),
                    value: Some(v),
                    ..NewRecord::default()
                })
                .collect::<Vec<_>>(),
        );
        match log.produce(&batch, Some(1), now_ms) {
            Ok((info, _, epoch)) => {
                let end = info.last_offset + 1;
                let me = Arc::clone(self);
                let log = Arc::clone(log);
                tokio::spawn(async move {
                    let durable = if log.is_standalone() {
                        log.wait_acknowledgeable(end).await
                    } else {
                        log.wait_replicated(end, epoch, 1).await
                    };
                    let mut state = me.state();
                    // A coordinator loaded since has its own records to wait for.
                    let Some(st) = state
                        .as_mut()
                        .filter(|st| Arc::ptr_eq(&st.log, &log) && st.epoch == loaded_epoch)
                    else {
                        return;
                    };
                    let now_ms = me.clock.now_ms();
                    match durable {
                        Ok(()) => st.core.persisted(last_id, now_ms),
                        Err(e) => {
                            tracing::error!(error = ?e, "group records could not be replicated");
                            st.core.persist_failed(last_id, now_ms);
                        }
                    }
                    me.pump(st);
                });
            }
            Err(e) => {
                tracing::error!(error = ?e, "appending group records failed");
                core.persist_failed(last_id, now_ms);
            }
        }
    }

    async fn run_timer(self: Arc<Self>) {
        loop {
            let deadline = self.state().as_ref().and_then(|st| st.core.poll_timeout());
            let wait_ms = match deadline {
                Some(at) => (at - self.clock.now_ms()).max(0) as u64,
                None => 3_600_000,
            };
            tokio::select! {
                biased;
                _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {
                    let mut state = self.state();
                    if let Some(st) = state.as_mut() {
                        st.core.tick(self.clock.now_ms());
                        self.pump(st);
                    }
                }
                _ = self.timer.notified() => {}
            }
            if self.closed.load(Ordering::Acquire) {
                break;
            }
        }
    }

    /// The offsets log partition this broker writes now (for shutdown and tests).
    pub fn log(&self) -> Option<Arc<Partition<S>>> {
        self.state().as_ref().map(|st| Arc::clone(&st.log))
    }

    /// Clean shutdown: fsync and mark the single broker's offsets log clean (a cluster's is a
    /// replicated partition, closed with the others).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.timer.notify_one();
        if let Some(log) = &self.owned_log {
            log.close();
            if let Err(e) = log.core().log_mut().close() {
                tracing::error!(error = %e, "closing the group offsets log");
            }
        }
    }
}

/// Feeds every record of the offsets log to the coordinator, in log order.
fn replay<S: Storage>(log: &Log<S>, core: &mut GroupCoordinator) -> anyhow::Result<usize> {
    let (mut offset, end) = (log.log_start_offset(), log.log_end_offset());
    let mut count = 0;
    while offset < end {
        let bytes = log.read(offset, REPLAY_READ_BYTES, end)?;
        let batches = validate_for_append(&bytes, u32::MAX)
            .map_err(|e| anyhow::anyhow!("offsets log: {e}"))?;
        anyhow::ensure!(
            !batches.is_empty(),
            "offsets log read at {offset} returned nothing"
        );
        for info in &batches {
            let batch = &bytes[info.pos..info.pos + info.size];
            let header = RecordBatchHeader::parse(batch).expect("validated above");
            let next = header.last_offset() + 1;
            for record in decode_records(batch).map_err(|e| anyhow::anyhow!("offsets log: {e}"))? {
                if record.offset < offset {
                    continue;
                }
                let value = record.value.unwrap_or_default();
                match serde_json::from_slice::<GroupRecord>(&value) {
                    Ok(r) => {
                        core.replay(r);
                        count += 1;
                    }
                    Err(e) => {
                        tracing::warn!(offset = record.offset, error = %e, "skipping unreadable group record")
                    }
                }
            }
            offset = offset.max(next);
        }
    }
    Ok(count)
}
