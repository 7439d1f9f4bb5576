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

use std::path::{Path, PathBuf};

use broker::log::batch::{decode_records, validate_for_append, COMPRESSION_MASK};
use broker::log::{crc_ok, Log, LogConfig, RecordBatchHeader};
use broker::storage::{MemStorage, Storage, StorageFile};

/// A target body: arbitrary bytes in, a panic is a finding.
pub type Target = fn(&[u8]);

/// The targets, by the name of their binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("request_frame", request_frame),
    ("record_batch", record_batch),
    ("log_recovery", log_recovery),
    ("dispatch", dispatch),
    ("group_actions", group_actions),
];

/// Any bytes as a request frame (size prefix removed): decoding returns a request or an error.
/// Never a panic, and never an allocation the frame's length does not bound (the vendored
/// kafka-protocol caps its allocation hints; libFuzzer's -malloc_limit_mb checks it).
pub fn request_frame(data: &[u8]) {
    let _ = broker::protocol::decode_request(bytes::Bytes::copy_from_slice(data));
}

/// The max.message.bytes the record_batch target validates against (Kafka's default).
pub const MAX_MESSAGE_BYTES: u32 = 1024 * 1024 + 12;

/// Any bytes as a produce buffer: `validate_for_append` accepts or refuses them, and
/// `decode_records` decodes or refuses them. If validation accepts, every uncompressed batch it
/// reported must decode into exactly its record count, with offsets inside the batch.
pub fn record_batch(data: &[u8]) {
    let _ = decode_records(data);
    let Ok(infos) = validate_for_append(data, MAX_MESSAGE_BYTES) else {
        return;
    };
    let mut end = 0;
    for info in &infos {
        assert_eq!(info.pos, end, "batches must tile the buffer");
        end = info.pos + info.size;
        let batch = &data[info.pos..end];
        assert!(crc_ok(batch), "validated batch with a bad CRC");
        if info.attributes & COMPRESSION_MASK != 0 {
            continue;
        }
        let records = decode_records(batch)
            .unwrap_or_else(|e| panic!("validated batch at {} does not decode: {e}", info.pos));
        assert_eq!(records.len(), info.record_count as usize);
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
        );
        for request in requests {
            let (key, version) = (request.api_key, request.api_version);
            let correlation_id = request.header.correlation_id;
            if let broker::apis::Reply::Now(response) = apis.handle(request, "127.0.0.1") {
                if let Err(e) =
                    broker::protocol::encode_response(key, version, correlation_id, &response)
                {
                    panic!("{key:?} v{version}: response does not encode: {e:#}");
                }
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
