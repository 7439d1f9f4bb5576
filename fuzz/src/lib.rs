//! The bodies of the fuzz targets, shared by two callers so both run identical code:
//!
//! - the cargo-fuzz binaries in `fuzz/fuzz_targets/` (nightly, libFuzzer), and
//! - `broker/tests/fuzz_corpus.rs`, which includes this file with
//!   `#[path = "../../fuzz/src/lib.rs"] mod targets;` and replays every file of
//!   `fuzz/corpus/<target>/` on stable, so a crash found once stays fixed.
//!
//! Only `broker`, `bytes`, `crc32c` and `tokio` may be used here: they are dependencies of both the
//! `broker-fuzz` crate and the `broker` package whose tests include this file.
//!
//! Every function takes arbitrary bytes. It must return normally; a panic is a finding.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use broker::log::batch::{
    decode_records_limited, set_base_offset, set_partition_leader_epoch,
    validate_for_append_limited, COMPRESSION_MASK, MAGIC_V2, PARTITION_LEADER_EPOCH_POS,
};
use broker::log::compression::Codec;
use broker::log::testutil::{compress_batch, simple_batch};
use broker::log::{crc_ok, Log, LogConfig, RecordBatchHeader};
use broker::storage::{MemStorage, Storage, StorageFile, TornWrite};

/// A target body: arbitrary bytes in, a panic is a finding.
pub type Target = fn(&[u8]);

/// The targets, by the name of their binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("request_frame", request_frame),
    ("record_batch", record_batch),
    ("log_recovery", log_recovery),
    ("dispatch", dispatch),
    ("group_actions", group_actions),
    ("storage_faults", storage_faults),
    ("quorum_frame", quorum_frame),
    ("replication_actions", replication_actions),
];

/// The simulator's replication stepper (`sim --layer replication`), included by path: it uses
/// only `broker`, `bytes` and std, so both callers of this file can build it.
#[path = "../../sim/src/replication.rs"]
pub mod replication;

/// Most actions one replication_actions input runs (bytes past them are ignored).
pub const REPLICATION_ACTIONS_MAX: usize = 200;
/// Virtual time a replication_actions run is given after the final heal, in ms.
pub const REPLICATION_QUIET_MS: u64 = 15_000;

/// Any bytes as a program of replication actions (appends, event rounds, fetch rounds, fsyncs,
/// metadata deliveries, crashes, partitions and heals, controller failovers, cluster-level
/// min.insync.replicas changes) on the simulator's replication stepper: the first 8 bytes seed
/// its delays and parameters, then two
/// bytes per action (`replication::Action::decode`). The run ends healed and quiet, and the
/// layer's checks apply: acknowledged batches survive, replicas agree below the high
/// watermark, one leader per epoch, epochs and high watermarks never go back, and every
/// partition has a caught-up leader. A violation panics with its description.
pub fn replication_actions(data: &[u8]) {
    let mut seed = [0u8; 8];
    let n = data.len().min(8);
    seed[..n].copy_from_slice(&data[..n]);
    let mut rest = &data[n..];
    let mut actions = Vec::new();
    while actions.len() < REPLICATION_ACTIONS_MAX {
        match replication::Action::decode(&mut rest) {
            Some(a) => actions.push(a),
            None => break,
        }
    }
    let r = replication::run_replication_actions(
        u64::from_le_bytes(seed),
        &actions,
        REPLICATION_QUIET_MS,
        false,
    );
    if !r.passed() {
        panic!("replication stepper: {}", r.problems().join("; "));
    }
}

/// Any bytes as a controller-to-controller frame body (size prefix removed): decoding returns a
/// frame or an error, never a panic; a decoded frame re-encodes to a body that decodes to the
/// same frame (and, the encoding being canonical, to the same bytes). The same bytes are also
/// decoded as a controller request payload, which must round-trip too, and a controller
/// response's payload is decoded (elections, a topic id or nothing) without panicking.
pub fn quorum_frame(data: &[u8]) {
    if let Ok(request) = broker::cluster::requests::decode_request(data) {
        let again = broker::cluster::requests::encode_request(&request);
        assert_eq!(
            broker::cluster::requests::decode_request(&again).as_ref(),
            Ok(&request),
            "controller request decode(encode(x)) != x"
        );
    }
    let _ = broker::raft::wire::split_frame(data);
    let Ok(frame) = broker::raft::wire::decode_body(data) else {
        return;
    };
    if let broker::raft::wire::PeerFrame::ControllerResponse {
        error_code,
        message,
        payload,
        ..
    } = &frame
    {
        let _ = broker::cluster::requests::decode_response(*error_code, message.clone(), payload);
    }
    let mut out = Vec::new();
    broker::raft::wire::encode_frame(&frame, &mut out).expect("a decoded frame fits the limit");
    let (used, body) = broker::raft::wire::split_frame(&out)
        .expect("an encoded frame splits")
        .expect("an encoded frame is whole");
    assert_eq!(used, out.len());
    assert_eq!(body, data, "re-encoding changed the bytes");
    assert_eq!(
        broker::raft::wire::decode_body(body).as_ref(),
        Ok(&frame),
        "decode(encode(x)) != x"
    );
}

/// Any bytes as a request frame (size prefix removed): decoding returns a request or an error.
/// Never a panic, and never an allocation the frame's length does not bound (the vendored
/// kafka-protocol caps its allocation hints; libFuzzer's -malloc_limit_mb checks it).
pub fn request_frame(data: &[u8]) {
    let _ = broker::protocol::decode_request(bytes::Bytes::copy_from_slice(data));
}

/// The max.message.bytes the record_batch target validates against (Kafka's default).
pub const MAX_MESSAGE_BYTES: u32 = 1024 * 1024 + 12;

/// The decompression limit the record_batch target validates with: the broker's is 64 MiB,
/// which makes every bomb-like input cost a quarter second under ASan; the code path is the
/// same at 1 MiB.
pub const FUZZ_DECOMPRESSED_BYTES_MAX: u64 = 1024 * 1024;

/// Any bytes as a produce buffer: `validate_for_append` accepts or refuses them, and
/// `decode_records` decodes or refuses them. If validation accepts, every batch it reported,
/// compressed or not, must decode into exactly its record count (compressed ones through the
/// same bounded decompression), with offsets inside the batch.
pub fn record_batch(data: &[u8]) {
    let limit = FUZZ_DECOMPRESSED_BYTES_MAX;
    let _ = decode_records_limited(data, limit);
    let Ok(infos) = validate_for_append_limited(data, MAX_MESSAGE_BYTES, limit) else {
        return;
    };
    let mut end = 0;
    for info in &infos {
        assert_eq!(info.pos, end, "batches must tile the buffer");
        end = info.pos + info.size;
        let batch = &data[info.pos..end];
        assert!(crc_ok(batch), "validated batch with a bad CRC");
        let compressed = info.attributes & COMPRESSION_MASK != 0;
        let records = decode_records_limited(batch, limit).unwrap_or_else(|e| {
            panic!(
                "validated batch at {} (compressed: {compressed}) does not decode: {e}",
                info.pos
            )
        });
        assert_eq!(records.len(), info.record_count as usize);
        let h = RecordBatchHeader::parse(batch).unwrap();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, h.base_offset().saturating_add(i as i64));
        }
    }
    assert_eq!(end, data.len(), "validation must cover the whole buffer");
}

/// The partition directory the log_recovery target writes into.
pub const PARTITION_DIR: &str = "/data/topic-0";
/// First byte of a log_recovery input: which optional files to write (see `log_recovery`).
pub const RECOVERY_CLEAN_SHUTDOWN: u8 = 0x01;
pub const RECOVERY_OFFSET_INDEX: u8 = 0x02;
pub const RECOVERY_TIME_INDEX: u8 = 0x04;
pub const RECOVERY_LOG_START_CHECKPOINT: u8 = 0x08;

/// Splits a log_recovery input into the files it describes and writes them to `storage`.
///
/// Layout: one flags byte; then, for each of `RECOVERY_OFFSET_INDEX` and `RECOVERY_TIME_INDEX`
/// that is set (in that order), a big-endian u16 length and that many bytes of index file;
/// then, if `RECOVERY_LOG_START_CHECKPOINT` is set, 8 bytes of log start offset (the harness
/// adds the CRC so the checkpoint is believed); the rest is `00000000000000000000.log`.
/// `RECOVERY_CLEAN_SHUTDOWN` writes an empty `.clean_shutdown` marker.
pub fn write_recovery_input(storage: &MemStorage, data: &[u8]) -> std::io::Result<()> {
    let dir = Path::new(PARTITION_DIR);
    storage.create_dir_all(dir)?;
    let Some((&flags, mut rest)) = data.split_first() else {
        return Ok(());
    };
    let take = |n: usize, rest: &mut &[u8]| -> Vec<u8> {
        let n = n.min(rest.len());
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        head.to_vec()
    };
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (bit, name) in [
        (RECOVERY_OFFSET_INDEX, "00000000000000000000.index"),
        (RECOVERY_TIME_INDEX, "00000000000000000000.timeindex"),
    ] {
        if flags & bit != 0 {
            let len = take(2, &mut rest);
            let len = if len.len() == 2 {
                u16::from_be_bytes([len[0], len[1]]) as usize
            } else {
                0
            };
            files.push((name.into(), take(len, &mut rest)));
        }
    }
    if flags & RECOVERY_LOG_START_CHECKPOINT != 0 {
        let mut offset = take(8, &mut rest);
        offset.resize(8, 0);
        let crc = crc32c::crc32c(&offset);
        offset.extend_from_slice(&crc.to_be_bytes());
        files.push(("log-start-offset".into(), offset));
    }
    files.push(("00000000000000000000.log".into(), rest.to_vec()));
    if flags & RECOVERY_CLEAN_SHUTDOWN != 0 {
        files.push((".clean_shutdown".into(), Vec::new()));
    }
    for (name, bytes) in files {
        let f = storage.open(&dir.join(name))?;
        if !bytes.is_empty() {
            f.append(&bytes)?;
        }
        f.sync()?;
    }
    storage.sync_dir(dir)
}

const NOW_MS: i64 = 1_700_000_000_000;

/// Any bytes as a partition directory left by a crash (see `write_recovery_input`):
/// `Log::open` succeeds or returns an error, and after a successful open every offset from log
/// start to log end is readable as whole batches, CRC-valid ones after an unclean shutdown.
/// (After a clean shutdown recovery trusts the segments and does not re-read them, as Kafka
/// does; consumers check CRCs.) Closing cleanly and reopening must give the same log.
pub fn log_recovery(data: &[u8]) {
    let storage = MemStorage::new();
    write_recovery_input(&storage, data).expect("writing to an empty MemStorage");
    let dir = PathBuf::from(PARTITION_DIR);
    let Ok((mut log, _report)) =
        Log::open(storage.clone(), dir.clone(), LogConfig::default(), NOW_MS)
    else {
        return;
    };
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    let verify_crc = data
        .first()
        .is_some_and(|f| f & RECOVERY_CLEAN_SHUTDOWN == 0);
    check_readable(&log, start, end, verify_crc);
    log.close().expect("close after a successful open");
    drop(log);
    let (log, report) = Log::open(storage, dir, LogConfig::default(), NOW_MS)
        .expect("reopening a cleanly closed log");
    assert!(report.clean_shutdown);
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (start, end),
        "a clean close and reopen changed the log: {:?}",
        report.notes
    );
    check_readable(&log, start, end, verify_crc);
}

/// Walks the log batch by batch: a read at each offset not yet covered returns whole batches,
/// the first containing that offset. Batches can span huge offset ranges, so offsets inside a
/// batch are covered by reading its first and last offset, not every one.
fn check_readable<S: Storage>(log: &Log<S>, start: i64, end: i64, verify_crc: bool) {
    assert!(start <= end, "log start {start} beyond log end {end}");
    let mut offset = start;
    while offset < end {
        let bytes = log
            .read(offset, 1, i64::MAX)
            .unwrap_or_else(|e| panic!("read at {offset} in [{start}, {end}): {e}"));
        assert!(
            !bytes.is_empty(),
            "empty read at {offset} in [{start}, {end})"
        );
        let mut pos = 0usize;
        let mut first_last = None;
        while pos < bytes.len() {
            let h = RecordBatchHeader::parse(&bytes[pos..])
                .unwrap_or_else(|| panic!("read at {offset}: partial header at {pos}"));
            let size = usize::try_from(h.total_size()).expect("negative batch size");
            assert!(
                pos + size <= bytes.len(),
                "read at {offset}: torn batch at {pos}"
            );
            let batch = &bytes[pos..pos + size];
            assert!(
                !verify_crc || crc_ok(batch),
                "read at {offset}: bad CRC at {pos}"
            );
            if first_last.is_none() {
                assert!(
                    h.base_offset() <= offset && offset <= h.last_offset(),
                    "read at {offset} returned batch [{}, {}]",
                    h.base_offset(),
                    h.last_offset()
                );
                first_last = Some(h.last_offset());
            }
            pos += size;
        }
        let last = first_last.unwrap();
        if last > offset {
            // The batch's last offset must find the same batch.
            let again = log
                .read(last, 1, i64::MAX)
                .expect("read at a batch's last offset");
            let h = RecordBatchHeader::parse(&again).expect("header at a batch's last offset");
            assert!(h.base_offset() <= last && last <= h.last_offset());
        }
        offset = last + 1;
    }
}

/// A fixed clock for the dispatch target, so a run is a function of its input.
struct FixedClock;
impl broker::apis::Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        NOW_MS
    }
}

/// Most frames one dispatch input is split into.
pub const DISPATCH_FRAMES_MAX: usize = 8;

/// Splits a dispatch input into frames: each is a big-endian u16 length and that many bytes
/// (a short last frame takes what is left).
pub fn dispatch_frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while data.len() >= 2 && frames.len() < DISPATCH_FRAMES_MAX {
        let len = (u16::from_be_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
        frames.push(&data[2..2 + len]);
        data = &data[2 + len..];
    }
    frames
}

/// Up to `DISPATCH_FRAMES_MAX` request frames (see `dispatch_frames`) against a fresh broker on
/// an in-memory disk, in order, as one connection would send them: every frame that decodes is
/// handled by `KafkaApis::handle`, and an immediate response must encode. Deferred responses
/// (fsync waits, long-poll fetches) are dropped unawaited.
pub fn dispatch(data: &[u8]) {
    use std::sync::Arc;

    let frames = dispatch_frames(data);
    let requests: Vec<_> = frames
        .iter()
        .filter_map(|f| broker::protocol::decode_request(bytes::Bytes::copy_from_slice(f)).ok())
        .collect();
    if requests.is_empty() {
        return;
    }
    // A fresh runtime per input: dropping it ends the group timer task the broker spawns.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async move {
        let storage = MemStorage::new();
        let config = broker::config::BrokerConfig {
            data_dir: "/data".into(),
            ..broker::config::BrokerConfig::default()
        };
        let group_config = config.group.clone();
        let replicas = Arc::new(
            broker::replica::ReplicaManager::open(storage.clone(), config, 7, NOW_MS).unwrap(),
        );
        let groups = broker::server::group_manager::GroupManager::open(
            storage,
            Path::new("/data"),
            &LogConfig::default(),
            broker::replica::AckPolicy::AfterFsync,
            group_config,
            Arc::new(FixedClock),
            1,
        )
        .unwrap();
        let apis = broker::apis::KafkaApis::new(
            replicas,
            groups,
            Arc::new(FixedClock),
            broker::apis::Advertised {
                node_id: 1,
                host: "127.0.0.1".into(),
                port: 9092,
            },
            None,
        );
        for request in requests {
            let (key, version) = (request.api_key, request.api_version);
            let correlation_id = request.header.correlation_id;
            let client = broker::apis::ClientConnection::new("127.0.0.1".to_string());
            let encoded = match apis.handle(request, &client) {
                broker::apis::Reply::Now(response) => {
                    broker::protocol::encode_response(key, version, correlation_id, &response)
                        .map(drop)
                }
                broker::apis::Reply::Fetch(reply) => {
                    reply.encode(version, correlation_id).map(drop)
                }
                _ => Ok(()),
            };
            if let Err(e) = encoded {
                panic!("{key:?} v{version}: response does not encode: {e:#}");
            }
        }
    });
}

/// Most actions one group_actions input runs (bytes past them are ignored).
pub const GROUP_ACTIONS_MAX: usize = 400;

/// Any bytes as a program of `GroupAction`s (see `GroupAction::decode`) against the group
/// coordinator under simulated consumers, persist faults and crashes
/// (`broker::group::harness`). Every action is followed by the harness's checks, and the run
/// ends with `finish` (everything persists, time passes, every request must be answered). A
/// violation panics with its description.
pub fn group_actions(data: &[u8]) {
    use broker::group::harness::{GroupAction, GroupHarness};

    let mut data = data;
    let mut h = GroupHarness::new(7);
    for _ in 0..GROUP_ACTIONS_MAX {
        let Some(action) = GroupAction::decode(&mut data) else {
            break;
        };
        if let Err(v) = h.step(action) {
            panic!("group harness: {v}");
        }
    }
    if let Err(v) = h.finish() {
        panic!("group harness: {v}");
    }
}

/// Most operations one storage_faults input runs.
pub const STORAGE_FAULTS_OPS_MAX: usize = 48;

/// A byte source that yields zeros once the input is used up.
struct Input<'a>(&'a [u8]);
impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the storage_faults harness knows about one appended batch.
#[derive(Clone, Debug)]
struct ModelBatch {
    /// The bytes as stored (base offset and leader epoch patched in, flips applied).
    bytes: Vec<u8>,
    /// The bytes as appended, before any flip.
    appended: Vec<u8>,
    last_offset: i64,
}

impl ModelBatch {
    /// Flips left it different from what was appended, outside the leader epoch (which is
    /// outside the CRC and means nothing to recovery: bit rot there stays). Recovery must never
    /// serve such a batch. (Two flips of the same bit cancel out.)
    fn corrupt(&self) -> bool {
        let epoch = PARTITION_LEADER_EPOCH_POS..PARTITION_LEADER_EPOCH_POS + 4;
        self.bytes
            .iter()
            .zip(&self.appended)
            .enumerate()
            .any(|(i, (a, b))| a != b && !epoch.contains(&i))
    }
}

/// The log under test plus the model of what it must hold.
struct FaultHarness {
    storage: MemStorage,
    dir: PathBuf,
    config: LogConfig,
    log: Option<Log<MemStorage>>,
    now_ms: i64,
    /// Batches in the segment files, by base offset, in file order.
    model: BTreeMap<i64, ModelBatch>,
    /// Segment files whose reads are failing.
    failing: Vec<PathBuf>,
    /// A flip since the last open: a clean close would make recovery trust the files, so the
    /// harness crashes instead (bit rot under a clean shutdown is not detected, as in Kafka).
    flipped_since_open: bool,
    appended: u64,
}

impl FaultHarness {
    fn log(&mut self) -> &mut Log<MemStorage> {
        self.log.as_mut().expect("the harness keeps a log open")
    }

    /// Opens the log; with faults active an open may fail, then the faults are cleared and the
    /// open must succeed.
    fn open(&mut self) {
        assert!(self.log.is_none());
        let first = Log::open(
            self.storage.clone(),
            self.dir.clone(),
            self.config.clone(),
            self.now_ms,
        );
        let log = match first {
            Ok((log, _)) => log,
            Err(e) => {
                let faulty = !self.failing.is_empty();
                self.storage.set_disk_full(false);
                for p in std::mem::take(&mut self.failing) {
                    let _ = self.storage.fail_reads(&p, false);
                }
                let (log, _) = Log::open(
                    self.storage.clone(),
                    self.dir.clone(),
                    self.config.clone(),
                    self.now_ms,
                )
                .unwrap_or_else(|e2| {
                    panic!("open fails without faults: {e2} (first attempt: {e}, reads failing: {faulty})")
                });
                log
            }
        };
        self.log = Some(log);
        self.flipped_since_open = false;
        // Faults stay injected only while running; the check reads everything.
        self.storage.set_disk_full(false);
        for p in std::mem::take(&mut self.failing) {
            let _ = self.storage.fail_reads(&p, false);
        }
        self.check_reopened();
    }

    /// After an open: the log serves exactly a prefix-consistent view of the model.
    fn check_reopened(&mut self) {
        let log = self.log.as_ref().unwrap();
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        let durable = log.durable_offset();
        assert!(
            start <= durable && durable <= end,
            "log start {start}, durable {durable}, log end {end}"
        );
        // Read every batch from the log start: CRC-valid, magic 2, contiguous, byte-identical to
        // what was appended, never a corrupted one.
        let mut served: BTreeMap<i64, ModelBatch> = BTreeMap::new();
        let mut offset = start;
        while offset < end {
            let bytes = log
                .read(offset, 1, i64::MAX)
                .unwrap_or_else(|e| panic!("read at {offset} in [{start}, {end}): {e}"));
            let h = RecordBatchHeader::parse(&bytes)
                .unwrap_or_else(|| panic!("read at {offset}: no whole header"));
            let size = usize::try_from(h.total_size()).expect("negative batch size");
            assert!(size <= bytes.len(), "read at {offset}: torn batch");
            let batch = &bytes[..size];
            assert!(crc_ok(batch), "read at {offset}: bad CRC");
            assert_eq!(h.magic(), MAGIC_V2, "read at {offset}: magic");
            if offset == start {
                assert!(
                    h.base_offset() <= offset && offset <= h.last_offset(),
                    "first batch [{}, {}] does not hold the log start {start}",
                    h.base_offset(),
                    h.last_offset()
                );
            } else {
                assert_eq!(h.base_offset(), offset, "offsets are not contiguous");
            }
            let want = self
                .model
                .get(&h.base_offset())
                .unwrap_or_else(|| panic!("served a batch at {} never appended", h.base_offset()));
            assert!(
                !want.corrupt(),
                "served the bit-flipped batch at {}",
                h.base_offset()
            );
            assert!(
                batch == &want.bytes[..],
                "batch at {} differs from what was appended",
                h.base_offset()
            );
            served.insert(h.base_offset(), want.clone());
            offset = h.last_offset() + 1;
        }
        assert_eq!(
            offset.max(start),
            end,
            "the last batch does not end at the log end"
        );
        self.model = served;
    }

    /// Crash (torn per `torn`) and recover. Every batch that was durable before the crash, not
    /// deleted by retention and not at or after a corrupted batch, must survive.
    fn crash_and_reopen(&mut self, torn: TornWrite) {
        let durable = self.log.as_ref().map_or(0, |l| l.durable_offset());
        let must_keep: Vec<i64> = {
            let first_corrupt = self
                .model
                .iter()
                .find(|(_, b)| b.corrupt())
                .map_or(i64::MAX, |(&base, _)| base);
            self.model
                .iter()
                .filter(|(&base, b)| b.last_offset < durable && base < first_corrupt)
                .map(|(&base, _)| base)
                .collect()
        };
        self.log = None;
        self.storage.crash(torn);
        self.open();
        let start = self.log.as_ref().unwrap().log_start_offset();
        for base in must_keep {
            let last = self.model.get(&base).map(|b| b.last_offset);
            assert!(
                self.model.contains_key(&base) || last.is_none() && base < start,
                "durable batch at {base} lost (log start {start})"
            );
        }
    }

    fn segment_path(&self, base: i64) -> PathBuf {
        self.dir.join(format!("{base:020}.log"))
    }

    /// Flips a bit of a segment file and records which batch it hit.
    fn flip(&mut self, segment: u8, pos: u16, bit: u8) {
        let bases = self.log().segment_base_offsets();
        let seg_base = bases[segment as usize % bases.len()];
        let next_base = bases
            .iter()
            .copied()
            .find(|&b| b > seg_base)
            .unwrap_or(i64::MAX);
        let path = self.segment_path(seg_base);
        let Some(contents) = self.storage.contents(&path) else {
            return;
        };
        // The model must describe the whole file, else the hit batch is unknown.
        let batches: Vec<i64> = self
            .model
            .range(seg_base..next_base)
            .map(|(&b, _)| b)
            .collect();
        let known: usize = batches.iter().map(|b| self.model[b].bytes.len()).sum();
        if contents.is_empty() || known != contents.len() {
            return;
        }
        let pos = pos as usize % contents.len();
        self.storage
            .flip_bit(&path, pos as u64, bit % 8)
            .expect("flip inside the file");
        self.flipped_since_open = true;
        let mut at = 0;
        for base in batches {
            let b = self.model.get_mut(&base).unwrap();
            if pos < at + b.bytes.len() {
                b.bytes[pos - at] ^= 1 << (bit % 8);
                return;
            }
            at += b.bytes.len();
        }
        unreachable!("position {pos} inside the file but past the model");
    }

    fn append(&mut self, records: u8, value_bytes: u8, codec: u8) {
        let values: Vec<Vec<u8>> = (0..records as usize % 4 + 1)
            .map(|i| vec![b'a' + (self.appended as u8 % 26); value_bytes as usize + i])
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        let mut batch = simple_batch(self.now_ms, &refs);
        if let Some(codec) = Codec::from_id((codec % 8) as i16) {
            batch = compress_batch(&batch, codec);
        }
        self.appended += 1;
        let now_ms = self.now_ms;
        let end_before = self.log().log_end_offset();
        // As a single broker's partition does: write in the latest epoch the log holds (a
        // flipped bit in a stored epoch field, which no CRC covers, can raise it).
        let epoch = self.log().latest_epoch().unwrap_or(0).max(0);
        match self.log().append(&batch, epoch, now_ms) {
            Ok(info) => {
                assert_eq!(info.base_offset, end_before);
                set_base_offset(&mut batch, info.base_offset);
                set_partition_leader_epoch(&mut batch, epoch);
                self.model.insert(
                    info.base_offset,
                    ModelBatch {
                        appended: batch.clone(),
                        bytes: batch,
                        last_offset: info.last_offset,
                    },
                );
            }
            Err(broker::log::AppendError::Storage(_)) => {
                assert_eq!(
                    self.log().log_end_offset(),
                    end_before,
                    "failed append moved the end"
                );
            }
            Err(e) => panic!("a valid batch was refused: {e}"),
        }
    }
}

/// Any bytes as a run of a partition log over a faulty in-memory disk: a few config bytes,
/// then up to `STORAGE_FAULTS_OPS_MAX` operations (append valid batches, some compressed;
/// flush; roll; retention after time passes; flip a bit of a segment file; disk full on/off;
/// failing reads on/off; crash with torn writes and recover; clean close and reopen). After
/// every reopen: no panic, log start <= durable offset <= log end, every batch from the log
/// start is CRC-valid, contiguous and byte-identical to what was appended (no bit-flipped
/// batch is ever served: recovery truncates at or before it), and every batch that was flushed
/// before the crash is still there unless retention deleted it or it lies at or after a
/// corrupted batch.
pub fn storage_faults(data: &[u8]) {
    let mut input = Input(data);
    let config = LogConfig {
        segment_bytes: 200 + input.byte() as u64 * 8,
        segment_ms: 1_000 + input.byte() as i64 * 1_000,
        retention_ms: match input.byte() {
            0..=127 => -1,
            b => b as i64 * 1_000,
        },
        retention_bytes: match input.byte() {
            0..=127 => -1,
            b => b as i64 * 16,
        },
        index_interval_bytes: 1 + input.byte() as u32 * 4,
        ..LogConfig::default()
    };
    let mut h = FaultHarness {
        storage: MemStorage::new(),
        dir: PathBuf::from(PARTITION_DIR),
        config,
        log: None,
        now_ms: NOW_MS,
        model: BTreeMap::new(),
        failing: Vec::new(),
        flipped_since_open: false,
        appended: 0,
    };
    h.open();
    for _ in 0..STORAGE_FAULTS_OPS_MAX {
        if input.is_empty() {
            break;
        }
        match input.byte() % 12 {
            0..=2 => {
                let (records, value_bytes, codec) = (input.byte(), input.byte(), input.byte());
                h.append(records, value_bytes, codec);
            }
            3 => {
                let _ = h.log().flush();
            }
            4 => {
                let now_ms = h.now_ms;
                let _ = h.log().roll(now_ms);
            }
            5 => {
                h.now_ms += input.byte() as i64 * 1_000;
                let now_ms = h.now_ms;
                let _ = h.log().apply_retention(now_ms);
                // Deleted segments take their batches along (even if the call failed midway).
                let first = h.log().segment_base_offsets()[0];
                h.model.retain(|_, b| b.last_offset >= first);
            }
            6 => {
                let (segment, pos, bit) = (input.byte(), input.u16(), input.byte());
                h.flip(segment, pos, bit);
            }
            7 => h.storage.set_disk_full(input.byte() & 1 == 1),
            8 => {
                let bases = h.log().segment_base_offsets();
                let path = h.segment_path(bases[input.byte() as usize % bases.len()]);
                if h.storage.fail_reads(&path, true).is_ok() {
                    h.failing.push(path);
                }
            }
            9 => {
                for p in std::mem::take(&mut h.failing) {
                    let _ = h.storage.fail_reads(&p, false);
                }
            }
            10 => {
                let b = input.byte();
                let torn = if b & 1 == 0 {
                    TornWrite::DropUnsynced
                } else {
                    let garbage: Vec<u8> = (0..b / 8).map(|i| i.wrapping_mul(37)).collect();
                    TornWrite::KeepPrefix {
                        sectors: (b as u64 >> 1) % 4,
                        garbage,
                    }
                };
                h.crash_and_reopen(torn);
            }
            _ => {
                if h.flipped_since_open {
                    h.crash_and_reopen(TornWrite::DropUnsynced);
                } else {
                    let mut log = h.log.take().unwrap();
                    let end_before = log.log_end_offset();
                    let closed = log.close();
                    drop(log);
                    if closed.is_err() {
                        // A failed close leaves no marker: the reopen recovers.
                        h.storage.crash(TornWrite::DropUnsynced);
                    }
                    let before: Vec<i64> = h.model.keys().copied().collect();
                    h.open();
                    if closed.is_ok() {
                        let log = h.log.as_ref().unwrap();
                        assert_eq!(
                            log.log_end_offset(),
                            end_before,
                            "clean reopen moved the end"
                        );
                        let start = log.log_start_offset();
                        for base in before {
                            assert!(
                                h.model.contains_key(&base) || base < start,
                                "batch at {base} lost by a clean close and reopen"
                            );
                        }
                    }
                }
            }
        }
    }
    h.storage.set_disk_full(false);
    h.crash_and_reopen(TornWrite::KeepPrefix {
        sectors: 1,
        garbage: vec![0xab; 7],
    });
}
