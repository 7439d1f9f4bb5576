//! Tests of `Log`: appends, reads, rolls, retention, indexes, timestamps, truncation, flush
//! bookkeeping, crash recovery on both storages, and a model-based property test.

use super::batch::RecordBatchHeader;
use super::testutil::{compress_batch, idempotent_batch, set_transactional, simple_batch};
use super::*;
use crate::storage::{FileStorage, MemStorage, Storage, StorageFile, TornWrite};

const T0: i64 = 1_700_000_000_000;

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1000,
        segment_ms: 1_000_000,
        retention_ms: -1,
        retention_bytes: -1,
        index_interval_bytes: 100,
        max_message_bytes: 1 << 20,
    }
}

fn mem_log(config: LogConfig) -> (MemStorage, Log<MemStorage>) {
    let s = MemStorage::new();
    let (log, report) = Log::open(s.clone(), PathBuf::from("/data/t-0"), config, T0).unwrap();
    assert!(!report.clean_shutdown);
    assert_eq!(log.log_end_offset(), 0);
    (s, log)
}

/// A batch of `records` records with `value_bytes`-byte values.
fn batch(ts: i64, records: usize, value_bytes: usize) -> Vec<u8> {
    let v = vec![b'v'; value_bytes];
    let values: Vec<&[u8]> = (0..records).map(|_| v.as_slice()).collect();
    simple_batch(ts, &values)
}

/// (base offset, last offset, size) of every batch in a read result; checks CRCs.
fn split(bytes: &[u8]) -> Vec<(i64, i64, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let h = RecordBatchHeader::parse(&bytes[pos..]).unwrap();
        let size = h.total_size() as usize;
        assert!(crc_ok(&bytes[pos..pos + size]));
        out.push((h.base_offset(), h.last_offset(), size));
        pos += size;
    }
    assert_eq!(pos, bytes.len());
    out
}

fn read_all<S: Storage>(log: &Log<S>) -> Vec<(i64, i64, usize)> {
    let start = log.log_start_offset();
    split(&log.read(start, usize::MAX, i64::MAX).unwrap())
}

#[test]
fn append_assigns_offsets_and_patches_headers() {
    let (_s, log) = mem_log(LogConfig::default());
    check_append_patches_headers(log);
}

/// The same on real files, where the leader's append hands the kernel patched header copies
/// and the rest of each batch straight from the request (`append_parts`).
#[test]
fn append_on_files_assigns_offsets_and_patches_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    let (log, _) = Log::open(FileStorage::new(), dir, LogConfig::default(), T0).unwrap();
    check_append_patches_headers(log);
}

fn check_append_patches_headers<S: Storage>(mut log: Log<S>) {
    let mut req = batch(T0, 3, 10);
    req.extend(batch(T0 + 5, 2, 10));
    let info = log.append(&req, 7, T0).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.batches),
        (0, 4, 2)
    );
    assert_eq!(info.max_timestamp, T0 + 5 + 1);
    assert_eq!(info.bytes, req.len());
    let info = log.append(&batch(T0, 1, 1), 8, T0).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (5, 5));
    assert_eq!(log.log_end_offset(), 6);
    let data = log.read(0, usize::MAX, i64::MAX).unwrap();
    let got: Vec<(i64, i64)> = split(&data).iter().map(|(b, l, _)| (*b, *l)).collect();
    assert_eq!(got, vec![(0, 2), (3, 4), (5, 5)]);
    let h = RecordBatchHeader::parse(&data).unwrap();
    assert_eq!(h.partition_leader_epoch(), 7);
    // Apart from the patched fields, stored bytes equal the request.
    let first = split(&data)[0].2;
    assert_eq!(&data[16..first], &req[16..first]);
    assert_eq!(&data[first + 16..req.len()], &req[first + 16..]);
    assert_eq!(&data[first..first + 8], &3i64.to_be_bytes());
    assert_eq!(&data[first + 12..first + 16], &7i32.to_be_bytes());
    // What was stored still passes the CRC (the patched fields are outside it).
    assert!(validate_replicated(&data, u32::MAX).is_ok());
}

#[test]
fn invalid_requests_append_nothing() {
    let (_s, mut log) = mem_log(LogConfig::default());
    let mut req = batch(T0, 1, 1);
    let mut bad = batch(T0, 1, 1);
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    req.extend(bad);
    assert!(matches!(
        log.append(&req, 0, T0),
        Err(AppendError::CorruptMessage(_))
    ));
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
    log.set_config(LogConfig {
        max_message_bytes: 100,
        ..LogConfig::default()
    });
    assert!(matches!(
        log.append(&batch(T0, 1, 200), 0, T0),
        Err(AppendError::MessageTooLarge(_))
    ));
}

#[test]
fn reads_respect_max_offset_ranges_and_kip74() {
    let (_s, mut log) = mem_log(small_config());
    for i in 0..10 {
        log.append(&batch(T0 + i, 2, 50), 0, T0).unwrap();
    }
    assert_eq!(log.log_end_offset(), 20);
    // Offset inside a batch starts with that batch.
    let r = split(&log.read(5, usize::MAX, i64::MAX).unwrap());
    assert_eq!(r[0].0, 4);
    assert_eq!(r.last().unwrap().1, 19);
    // High watermark bounds the read (no batch with base >= 10).
    let r = split(&log.read(5, usize::MAX, 10).unwrap());
    assert_eq!(r.iter().map(|b| b.0).collect::<Vec<_>>(), vec![4, 6, 8]);
    // A hw inside a batch excludes batches whose base >= hw only.
    let r = split(&log.read(5, usize::MAX, 9).unwrap());
    assert_eq!(r.last().unwrap().0, 8);
    assert!(log.read(10, 100, 10).unwrap().is_empty());
    assert!(log.read(20, 100, i64::MAX).unwrap().is_empty());
    assert!(matches!(
        log.read(21, 100, i64::MAX),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.read(-1, 100, i64::MAX),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    // KIP-74: one whole batch even if bigger than max_bytes; then only what fits.
    let size = split(&log.read(0, usize::MAX, i64::MAX).unwrap())[0].2;
    assert_eq!(split(&log.read(0, 1, i64::MAX).unwrap()).len(), 1);
    assert_eq!(split(&log.read(0, 2 * size, i64::MAX).unwrap()).len(), 2);
    assert_eq!(
        split(&log.read(0, 2 * size - 1, i64::MAX).unwrap()).len(),
        1
    );
}

#[test]
fn rolls_by_size_and_reads_across_segments() {
    let (s, mut log) = mem_log(small_config());
    for i in 0..30 {
        log.append(&batch(T0 + i, 1, 100), 0, T0).unwrap(); // 170-byte batches
    }
    assert!(log.segment_count() >= 5);
    let bases = log.segment_base_offsets();
    assert_eq!(bases[0], 0);
    for b in &bases {
        let p = log.dir().join(format!("{b:020}.log"));
        assert!(s.exists(&p), "{p:?}");
    }
    for seg in log.segments.values() {
        assert!(seg.size_bytes() <= 1000);
    }
    // A read spanning every segment.
    let r = read_all(&log);
    assert_eq!(r.len(), 30);
    assert!(r.iter().enumerate().all(|(i, b)| b.0 == i as i64));
    // Rolled segments have index files.
    assert!(s.exists(&log.dir().join("00000000000000000000.index")));
    assert!(s.exists(&log.dir().join("00000000000000000000.timeindex")));
}

#[test]
fn rolls_by_age() {
    let mut cfg = small_config();
    cfg.segment_ms = 100;
    cfg.segment_bytes = 1 << 20;
    let (_s, mut log) = mem_log(cfg);
    log.append(&batch(T0, 1, 1), 0, T0).unwrap();
    log.append(&batch(T0, 1, 1), 0, T0 + 100).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(&batch(T0, 1, 1), 0, T0 + 101).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
    // An empty active segment never rolls.
    log.roll(T0 + 200).unwrap();
    log.roll(T0 + 300).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 3]);
}

#[test]
fn retention_by_time_advances_log_start_and_survives_restart() {
    let mut cfg = small_config();
    cfg.retention_ms = 1000;
    let (s, mut log) = mem_log(cfg.clone());
    for i in 0..20 {
        log.append(&batch(T0 + i * 100, 1, 100), 0, T0).unwrap();
    }
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 3);
    // Nothing expired yet.
    assert_eq!(log.apply_retention(T0 + 1000).unwrap().segments_deleted, 0);
    // At now = T0 + 2000, batches with ts < T0 + 1000 are expired: segments whose max < that.
    let report = log.apply_retention(T0 + 2000).unwrap();
    assert!(report.segments_deleted >= 1);
    let start = log.log_start_offset();
    assert_eq!(start, log.segment_base_offsets()[0]);
    assert_eq!(report.log_start_offset, start);
    assert!(start > 0);
    for seg in log.segments.values().take(log.segment_count() - 1) {
        assert!(seg.max_timestamp() >= T0 + 1000);
    }
    assert!(!s.exists(&log.dir().join("00000000000000000000.log")));
    assert!(!s.exists(&log.dir().join("00000000000000000000.index")));
    assert!(matches!(
        log.read(0, 100, i64::MAX),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log)[0].0, start);
    // Way later: everything but the active segment goes.
    log.apply_retention(T0 + 1_000_000).unwrap();
    assert_eq!(log.segment_count(), 1);
    let start = log.log_start_offset();
    log.close().unwrap();
    let (log, report) = Log::open(s.clone(), PathBuf::from("/data/t-0"), cfg, T0).unwrap();
    assert!(report.clean_shutdown);
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.log_end_offset(), 20);
}

#[test]
fn retention_by_bytes() {
    let mut cfg = small_config();
    cfg.retention_bytes = 2000;
    let (_s, mut log) = mem_log(cfg);
    for i in 0..40 {
        log.append(&batch(T0 + i, 1, 100), 0, T0).unwrap();
    }
    let before = log.size_bytes();
    let r = log.apply_retention(T0).unwrap();
    assert!(r.segments_deleted > 0);
    assert_eq!(log.size_bytes(), before - r.bytes_deleted);
    // Deleting one more segment would drop below the limit... or hit the active segment.
    let first = log.segments.values().next().unwrap().size_bytes();
    assert!(log.size_bytes() - first < 2000 || log.segment_count() == 1);
    assert_eq!(log.log_start_offset(), log.segment_base_offsets()[0]);
}

#[test]
fn delete_records_before_moves_log_start() {
    let (_s, mut log) = mem_log(small_config());
    for i in 0..20 {
        log.append(&batch(T0 + i, 1, 100), 0, T0).unwrap();
    }
    log.delete_records_before(7).unwrap();
    assert_eq!(log.log_start_offset(), 7);
    assert!(log.segment_base_offsets()[0] <= 7);
    assert_eq!(read_all(&log)[0].0, 7);
    assert!(log.delete_records_before(21).is_err());
    log.delete_records_before(20).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), 20);
}

#[test]
fn index_lookups_find_every_offset() {
    let mut cfg = small_config();
    cfg.segment_bytes = 100_000;
    cfg.index_interval_bytes = 300;
    let (_s, mut log) = mem_log(cfg);
    for i in 0..100 {
        log.append(&batch(T0 + i, 1 + (i as usize % 3), 40), 0, T0)
            .unwrap();
    }
    let seg = log.segments.values().next().unwrap();
    assert!(seg.offset_index().len() > 10);
    let e = seg.offset_index().entries();
    assert!(e.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    let all = read_all(&log);
    for (base, last, _) in &all {
        for o in *base..=*last {
            let r = split(&log.read(o, 1, i64::MAX).unwrap());
            assert_eq!(r[0].0, *base, "offset {o}");
        }
    }
}

#[test]
fn offset_for_timestamp_matches_brute_force() {
    let (_s, mut log) = mem_log(small_config());
    // Non-monotonic timestamps.
    let ts: Vec<i64> = (0..40).map(|i| T0 + ((i * 37) % 23) * 10 + i).collect();
    for t in &ts {
        log.append(&batch(*t, 2, 60), 0, T0).unwrap();
    }
    let stored: Vec<(i64, i64)> = ts
        .iter()
        .enumerate()
        .map(|(i, t)| (2 * i as i64, t + 1))
        .collect();
    for target in (T0 - 5..T0 + 300).step_by(3) {
        let want = stored.iter().find(|(_, m)| *m >= target).copied();
        assert_eq!(
            log.offset_for_timestamp(target).unwrap(),
            want,
            "target {target}"
        );
    }
    let max = stored.iter().map(|(_, m)| *m).max().unwrap();
    let first_max = stored.iter().find(|(_, m)| *m == max).unwrap().0;
    assert_eq!(log.max_timestamp(), Some((first_max, max)));
    assert_eq!(log.offset_for_timestamp(max + 1).unwrap(), None);
    // Survives a clean restart (time index reloaded).
    let s = log.storage.clone();
    log.close().unwrap();
    let (log, r) = Log::open(s, PathBuf::from("/data/t-0"), small_config(), T0).unwrap();
    assert!(r.clean_shutdown);
    assert_eq!(r.segments_rebuilt, 0, "{r:?}");
    for target in (T0 - 5..T0 + 300).step_by(7) {
        let want = stored.iter().find(|(_, m)| *m >= target).copied();
        assert_eq!(log.offset_for_timestamp(target).unwrap(), want);
    }
    assert_eq!(log.max_timestamp(), Some((first_max, max)));
}

#[test]
fn truncate_to_then_append() {
    let (s, mut log) = mem_log(small_config());
    for i in 0..20 {
        log.append(&batch(T0 + i, 2, 100), 0, T0).unwrap();
    }
    let segs = log.segment_count();
    log.truncate_to(14).unwrap();
    assert_eq!(log.log_end_offset(), 14);
    assert_eq!(log.durable_offset(), 14);
    assert!(log.segment_count() < segs);
    assert_eq!(read_all(&log).last().unwrap().1, 13);
    let info = log.append(&batch(T0, 1, 1), 1, T0).unwrap();
    assert_eq!(info.base_offset, 14);
    // No-op at or beyond the end.
    log.truncate_to(100).unwrap();
    assert_eq!(log.log_end_offset(), 15);
    // Truncation is durable; a crash right after keeps exactly the truncated log.
    log.truncate_to(4).unwrap();
    drop(log);
    s.crash(TornWrite::DropUnsynced);
    let (log, _) = Log::open(s, PathBuf::from("/data/t-0"), small_config(), T0).unwrap();
    assert_eq!(log.log_end_offset(), 4);
}

/// A truncation whose sync fails reports the error with the log still consistent: nothing
/// at or above the new end counts as durable (found by the cluster sim with a failing disk:
/// the durable offset stayed above the end, and the next check panicked).
#[test]
fn a_truncation_whose_sync_fails_leaves_nothing_durable_past_the_end() {
    let (s, mut log) = mem_log(small_config());
    for i in 0..20 {
        log.append(&batch(T0 + i, 2, 100), 0, T0).unwrap();
    }
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), 40);
    s.fail_syncs("/data/t-0/", true);
    assert!(log.truncate_to(14).is_err());
    assert_eq!(log.log_end_offset(), 14);
    assert!(log.durable_offset() <= 14, "{}", log.durable_offset());
    s.fail_syncs("/data/t-0/", false);
    log.truncate_to(14).unwrap();
    assert_eq!(log.durable_offset(), 14);
}

/// The high-watermark checkpoint survives a clean restart, a lost (unsynced) write only makes
/// it older, a truncation lowers it durably first, and a damaged one is ignored.
#[test]
fn high_watermark_checkpoint_survives_restarts_and_follows_truncation() {
    let dir = || PathBuf::from("/data/t-0");
    let (s, mut log) = mem_log(small_config());
    assert_eq!(log.checkpointed_high_watermark(), None);
    for i in 0..10 {
        log.append(&batch(T0 + i, 1, 10), 0, T0).unwrap();
    }
    log.flush().unwrap();
    log.checkpoint_high_watermark(6).unwrap();
    assert_eq!(log.checkpointed_high_watermark(), Some(6));
    log.close().unwrap();
    drop(log);
    let (mut log, _) = Log::open(s.clone(), dir(), small_config(), T0).unwrap();
    assert_eq!(log.checkpointed_high_watermark(), Some(6));
    // Truncating below it lowers it, durably, even if the crash loses everything unsynced.
    log.truncate_to(4).unwrap();
    assert_eq!(log.checkpointed_high_watermark(), Some(4));
    log.append(&batch(T0, 3, 10), 1, T0).unwrap();
    log.flush().unwrap();
    log.checkpoint_high_watermark(7).unwrap();
    drop(log);
    s.crash(TornWrite::DropUnsynced);
    let (mut log, _) = Log::open(s.clone(), dir(), small_config(), T0).unwrap();
    let hw = log.checkpointed_high_watermark();
    assert!(matches!(hw, Some(4) | Some(7) | None), "{hw:?}");
    // A damaged file is no checkpoint at all.
    log.checkpoint_high_watermark(5).unwrap();
    drop(log);
    let f = s.open(&dir().join(HIGH_WATERMARK_FILE)).unwrap();
    f.truncate(0).unwrap();
    f.append(&[0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4]).unwrap();
    f.sync().unwrap();
    let (log, report) = Log::open(s, dir(), small_config(), T0).unwrap();
    assert_eq!(log.checkpointed_high_watermark(), None);
    assert!(
        report.notes.iter().any(|n| n.contains("high-watermark")),
        "{report:?}"
    );
}

#[test]
#[should_panic(expected = "batch boundary")]
fn truncate_to_mid_batch_panics() {
    let (_s, mut log) = mem_log(small_config());
    log.append(&batch(T0, 3, 1), 0, T0).unwrap();
    log.append(&batch(T0, 3, 1), 0, T0).unwrap();
    log.truncate_to(1).unwrap();
}

#[test]
fn truncate_below_log_start_restarts_there() {
    let (_s, mut log) = mem_log(small_config());
    for i in 0..20 {
        log.append(&batch(T0 + i, 1, 100), 0, T0).unwrap();
    }
    log.delete_records_before(10).unwrap();
    log.truncate_to(5).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 5));
    assert_eq!(log.append(&batch(T0, 1, 1), 0, T0).unwrap().base_offset, 5);
}

#[test]
fn storage_errors_leave_the_log_consistent() {
    let (s, mut log) = mem_log(small_config());
    log.append(&batch(T0, 1, 10), 0, T0).unwrap();
    s.set_disk_full(true);
    match log.append(&batch(T0, 1, 10), 0, T0) {
        Err(AppendError::Storage(e)) => assert_eq!(e.raw_os_error(), Some(28)),
        other => panic!("{other:?}"),
    }
    assert_eq!(log.log_end_offset(), 1);
    s.set_disk_full(false);
    assert_eq!(log.append(&batch(T0, 1, 10), 0, T0).unwrap().base_offset, 1);
    let path = log.dir().join("00000000000000000000.log");
    s.fail_reads(&path, true).unwrap();
    assert!(matches!(
        log.read(0, 100, i64::MAX),
        Err(ReadError::Storage(_))
    ));
    s.fail_reads(&path, false).unwrap();
    assert_eq!(read_all(&log).len(), 2);
}

#[test]
fn flush_tickets() {
    let (s, mut log) = mem_log(small_config());
    assert!(log.prepare_flush().is_none());
    for i in 0..10 {
        log.append(&batch(T0 + i, 1, 100), 0, T0).unwrap();
    }
    let t = log.prepare_flush().unwrap();
    assert_eq!(t.upto(), 10);
    assert_eq!(t.files().len(), log.segment_count());
    log.append(&batch(T0, 1, 100), 0, T0).unwrap();
    t.sync().unwrap();
    log.complete_flush(&t);
    assert_eq!(log.durable_offset(), 10);
    let t2 = log.prepare_flush().unwrap();
    assert_eq!(t2.files().len(), 1);
    // A truncation in between makes the ticket stale.
    log.truncate_to(9).unwrap();
    log.append(&batch(T0, 1, 100), 0, T0).unwrap();
    log.append(&batch(T0, 1, 100), 0, T0).unwrap();
    t2.sync().unwrap();
    log.complete_flush(&t2);
    assert_eq!(log.durable_offset(), 9);
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), 11);
    drop(log);
    s.crash(TornWrite::DropUnsynced);
    let (log, _) = Log::open(s, PathBuf::from("/data/t-0"), small_config(), T0).unwrap();
    assert_eq!(log.log_end_offset(), 11);
}

#[test]
fn clean_shutdown_fast_path() {
    let (s, mut log) = mem_log(small_config());
    for i in 0..30 {
        log.append(&batch(T0 + i, 1 + i as usize % 2, 80), 0, T0)
            .unwrap();
    }
    let indexes: Vec<(OffsetIndex, TimeIndex)> = log
        .segments
        .values()
        .map(|s| (s.offset_index().clone(), s.time_index().clone()))
        .collect();
    let end = log.log_end_offset();
    let dir = log.dir().to_path_buf();
    log.close().unwrap();
    assert!(s.exists(&dir.join(CLEAN_SHUTDOWN_FILE)));
    let (log, r) = Log::open(s.clone(), dir.clone(), small_config(), T0).unwrap();
    assert!(r.clean_shutdown);
    assert_eq!(r.segments_rebuilt, 0, "{r:?}");
    assert_eq!((r.truncated_bytes, r.segments_removed), (0, 0));
    assert!(!s.exists(&dir.join(CLEAN_SHUTDOWN_FILE)));
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.durable_offset(), end);
    let loaded: Vec<(OffsetIndex, TimeIndex)> = log
        .segments
        .values()
        .map(|s| (s.offset_index().clone(), s.time_index().clone()))
        .collect();
    assert_eq!(loaded, indexes);
    // The marker is gone, so a crash now means a full (unclean) recovery.
    drop(log);
    s.crash(TornWrite::DropUnsynced);
    let (mut log, r) = Log::open(s.clone(), dir.clone(), small_config(), T0).unwrap();
    assert!(!r.clean_shutdown);
    assert_eq!(r.segments_rebuilt, log.segment_count());
    assert_eq!(log.log_end_offset(), end);
    // Damaged index files after a clean shutdown are rebuilt, not trusted.
    log.close().unwrap();
    let f = s.open(&dir.join("00000000000000000000.index")).unwrap();
    f.truncate(3).unwrap();
    let (log, r) = Log::open(s, dir, small_config(), T0).unwrap();
    assert_eq!(r.segments_rebuilt, 1);
    assert_eq!(log.log_end_offset(), end);
}

#[test]
fn delete_removes_the_directory() {
    let (s, mut log) = mem_log(small_config());
    log.append(&batch(T0, 1, 1), 0, T0).unwrap();
    let dir = log.dir().to_path_buf();
    log.delete().unwrap();
    assert!(!s.exists(&dir));
}

// ---- idempotent producers ----

/// An idempotent batch of `records` 5-byte records.
fn pbatch(pid: i64, epoch: i16, seq: i32, records: usize) -> Vec<u8> {
    let values: Vec<&[u8]> = (0..records).map(|_| b"value".as_slice()).collect();
    idempotent_batch(T0, &values, pid, epoch, seq)
}

fn append_err(r: Result<AppendInfo, AppendError>) -> &'static str {
    match r {
        Ok(info) => panic!("expected an error, got {info:?}"),
        Err(AppendError::OutOfOrderSequence(_)) => "out_of_order",
        Err(AppendError::InvalidProducerEpoch(_)) => "epoch",
        Err(AppendError::InvalidRecord(_)) => "invalid",
        Err(AppendError::Storage(_)) => "storage",
        Err(e) => panic!("unexpected {e}"),
    }
}

/// Asserts `req` is answered as a duplicate of offsets `base..=last` and writes nothing.
fn assert_duplicate<S: Storage>(log: &mut Log<S>, req: &[u8], base: i64, last: i64) {
    let (end, size) = (log.log_end_offset(), log.size_bytes());
    let info = log.append(req, 0, T0).unwrap();
    assert!(info.duplicate, "{info:?}");
    assert_eq!((info.base_offset, info.last_offset), (base, last));
    assert_eq!((info.bytes, info.batches), (0, 0));
    assert_eq!((log.log_end_offset(), log.size_bytes()), (end, size));
}

#[test]
fn duplicate_retries_of_the_last_five_batches_return_original_offsets() {
    let (_s, mut log) = mem_log(small_config());
    let mut sent = Vec::new();
    for i in 0..6 {
        // A non-idempotent batch in between, so offsets and sequences differ.
        log.append(&batch(T0, 1, 5), 0, T0).unwrap();
        let b = pbatch(7, 0, 2 * i, 2);
        let info = log.append(&b, 0, T0).unwrap();
        assert!(!info.duplicate);
        sent.push((b, info.base_offset, info.last_offset));
    }
    assert_eq!(log.producer_state(7), Some((0, 11)));
    for (b, base, last) in &sent[1..] {
        assert_duplicate(&mut log, b, *base, *last);
        let stored = log.read(*base, 1, i64::MAX).unwrap();
        assert_eq!(
            &stored[16..],
            &b[16..],
            "the original batch is at those offsets"
        );
    }
    // The 6th-oldest batch is no longer remembered: it is out of order, not a duplicate.
    assert_eq!(append_err(log.append(&sent[0].0, 0, T0)), "out_of_order");
    assert_eq!(log.producer_state(7), Some((0, 11)));
    // The producer continues where it was.
    assert!(!log.append(&pbatch(7, 0, 12, 1), 0, T0).unwrap().duplicate);
    assert_eq!(log.producer_state(7), Some((0, 12)));
}

#[test]
fn sequence_gaps_and_stale_epochs_are_rejected() {
    let (_s, mut log) = mem_log(small_config());
    log.append(&pbatch(1, 3, 0, 2), 0, T0).unwrap();
    let end = log.log_end_offset();
    // Gap (and a same-epoch rewind that is not a retained batch).
    assert_eq!(
        append_err(log.append(&pbatch(1, 3, 3, 1), 0, T0)),
        "out_of_order"
    );
    assert_eq!(
        append_err(log.append(&pbatch(1, 3, 1, 1), 0, T0)),
        "out_of_order"
    );
    // Fenced: older epoch.
    assert_eq!(append_err(log.append(&pbatch(1, 2, 2, 1), 0, T0)), "epoch");
    // Newer epoch must start at 0.
    assert_eq!(
        append_err(log.append(&pbatch(1, 4, 2, 1), 0, T0)),
        "out_of_order"
    );
    // Negative sequences are invalid for idempotent batches.
    assert_eq!(
        append_err(log.append(&pbatch(1, 3, -5, 1), 0, T0)),
        "invalid"
    );
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.producer_state(1), Some((3, 1)));
    // A bump to epoch 4 with sequence 0 resets the entry; epoch 3 is fenced from then on.
    log.append(&pbatch(1, 4, 0, 3), 0, T0).unwrap();
    assert_eq!(log.producer_state(1), Some((4, 2)));
    assert_eq!(append_err(log.append(&pbatch(1, 3, 2, 1), 0, T0)), "epoch");
    // A retry of the old epoch's batch is fenced too, not a duplicate.
    assert_eq!(append_err(log.append(&pbatch(1, 3, 0, 2), 0, T0)), "epoch");
    assert_duplicate(&mut log, &pbatch(1, 4, 0, 3), end, end + 2);
}

#[test]
fn unknown_producers_start_at_any_sequence_and_plain_batches_are_unchecked() {
    let (_s, mut log) = mem_log(small_config());
    log.append(&pbatch(9, 5, 1234, 2), 0, T0).unwrap();
    assert_eq!(log.producer_state(9), Some((5, 1235)));
    assert_eq!(log.producer_state(10), None);
    // producerId -1: no checks, no state, retries are appended again.
    let plain = batch(T0, 1, 5);
    log.append(&plain, 0, T0).unwrap();
    log.append(&plain, 0, T0).unwrap();
    assert_eq!(log.producer_count(), 1);
    assert_eq!(log.log_end_offset(), 4);
    // Transactional batches get the same sequence checks (and do not crash the log).
    let mut t = pbatch(11, 0, 0, 1);
    set_transactional(&mut t, true);
    log.append(&t, 0, T0).unwrap();
    assert_duplicate(&mut log, &t, 4, 4);
    let mut t = pbatch(11, 0, 5, 1);
    set_transactional(&mut t, true);
    assert_eq!(append_err(log.append(&t, 0, T0)), "out_of_order");
}

#[test]
fn sequences_wrap_around_at_i32_max() {
    let (_s, mut log) = mem_log(small_config());
    log.append(&pbatch(3, 0, i32::MAX - 1, 2), 0, T0).unwrap();
    assert_eq!(log.producer_state(3), Some((0, i32::MAX)));
    assert_eq!(
        append_err(log.append(&pbatch(3, 0, 1, 1), 0, T0)),
        "out_of_order"
    );
    log.append(&pbatch(3, 0, 0, 1), 0, T0).unwrap();
    assert_eq!(log.producer_state(3), Some((0, 0)));
    // A batch spanning the wrap: MAX..=1 would need the previous last to be MAX - 1.
    let (_s, mut log) = mem_log(small_config());
    log.append(&pbatch(3, 0, i32::MAX - 5, 5), 0, T0).unwrap();
    log.append(&pbatch(3, 0, i32::MAX, 3), 0, T0).unwrap();
    assert_eq!(log.producer_state(3), Some((0, 1)));
    assert_duplicate(&mut log, &pbatch(3, 0, i32::MAX, 3), 5, 7);
    log.append(&pbatch(3, 0, 2, 1), 0, T0).unwrap();
}

#[test]
fn multi_batch_requests_are_all_or_nothing() {
    let (_s, mut log) = mem_log(small_config());
    // Checked in order against the state left by the earlier batches of the request.
    let mut req = pbatch(1, 0, 0, 2);
    req.extend(pbatch(1, 0, 2, 3));
    req.extend(batch(T0, 1, 1));
    req.extend(pbatch(2, 0, 0, 1));
    let info = log.append(&req, 0, T0).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.batches),
        (0, 6, 4)
    );
    assert_eq!(log.producer_state(1), Some((0, 4)));
    // A later batch out of order: nothing appended, no state changed.
    let mut bad = pbatch(1, 0, 5, 1);
    bad.extend(pbatch(2, 0, 1, 1));
    bad.extend(pbatch(1, 0, 7, 1));
    assert_eq!(append_err(log.append(&bad, 0, T0)), "out_of_order");
    assert_eq!(log.log_end_offset(), 7);
    assert_eq!(log.producer_state(1), Some((0, 4)));
    assert_eq!(log.producer_state(2), Some((0, 0)));
    // A whole retried request: duplicate, original offsets (first batch .. last batch).
    let mut retry = pbatch(1, 0, 0, 2);
    retry.extend(pbatch(1, 0, 2, 3));
    assert_duplicate(&mut log, &retry, 0, 4);
    let mut retry = pbatch(1, 0, 2, 3);
    retry.extend(pbatch(2, 0, 0, 1));
    assert_duplicate(&mut log, &retry, 2, 6);
    // Duplicates mixed with new batches (or plain ones) are refused.
    let mut mixed = pbatch(1, 0, 2, 3);
    mixed.extend(pbatch(1, 0, 5, 1));
    assert_eq!(append_err(log.append(&mixed, 0, T0)), "out_of_order");
    let mut mixed = pbatch(2, 0, 0, 1);
    mixed.extend(batch(T0, 1, 1));
    assert_eq!(append_err(log.append(&mixed, 0, T0)), "out_of_order");
    assert_eq!(log.log_end_offset(), 7);
    assert_eq!(log.producer_state(1), Some((0, 4)));
}

#[test]
fn failed_writes_do_not_advance_sequences() {
    let (s, mut log) = mem_log(small_config());
    log.append(&pbatch(1, 0, 0, 1), 0, T0).unwrap();
    s.set_disk_full(true);
    let next = pbatch(1, 0, 1, 2);
    assert_eq!(append_err(log.append(&next, 0, T0)), "storage");
    assert_eq!(log.producer_state(1), Some((0, 0)));
    // A new producer's failed write leaves no entry either.
    assert_eq!(
        append_err(log.append(&pbatch(2, 0, 0, 1), 0, T0)),
        "storage"
    );
    assert_eq!(log.producer_state(2), None);
    s.set_disk_full(false);
    // The retry is appended (it was never stored), not answered as a duplicate.
    let info = log.append(&next, 0, T0).unwrap();
    assert!(!info.duplicate);
    assert_eq!((info.base_offset, info.last_offset), (1, 2));
    assert_duplicate(&mut log, &next, 1, 2);
}

/// Producers 1..=3 with interleaved batches across several segments; returns what was sent.
fn produce_some<S: Storage>(log: &mut Log<S>) -> Vec<(Vec<u8>, i64, i64)> {
    let mut sent = Vec::new();
    let mut seqs = [0i32; 4];
    for i in 0..24usize {
        let pid = 1 + (i * 7 % 3);
        let records = 1 + i % 3;
        let b = pbatch(pid as i64, 0, seqs[pid], records);
        seqs[pid] += records as i32;
        let info = log.append(&b, 0, T0).unwrap();
        sent.push((b, info.base_offset, info.last_offset));
    }
    assert!(log.segment_count() > 2);
    sent
}

/// Every sent batch still in the log and among its producer's last 5 is a duplicate.
fn assert_dedup_matches<S: Storage>(log: &mut Log<S>, sent: &[(Vec<u8>, i64, i64)]) {
    for (i, (b, base, last)) in sent.iter().enumerate() {
        let pid = RecordBatchHeader::parse(b).unwrap().producer_id();
        let newer = sent[i + 1..]
            .iter()
            .filter(|(o, _, _)| RecordBatchHeader::parse(o).unwrap().producer_id() == pid)
            .count();
        if *last < log.log_end_offset() && newer < NUM_BATCHES_TO_RETAIN {
            assert_duplicate(log, b, *base, *last);
        } else if *last < log.log_end_offset() {
            assert_eq!(append_err(log.append(b, 0, T0)), "out_of_order");
        }
    }
}

#[test]
fn producer_state_is_rebuilt_on_clean_reopen_and_after_a_crash() {
    let (s, mut log) = mem_log(small_config());
    let dir = log.dir().to_path_buf();
    let sent = produce_some(&mut log);
    let before = log.producer_state.clone();
    assert_eq!(before.len(), 3);
    log.close().unwrap();
    let (mut log, r) = Log::open(s.clone(), dir.clone(), small_config(), T0).unwrap();
    assert!(r.clean_shutdown);
    assert_eq!(log.producer_state, before);
    assert_dedup_matches(&mut log, &sent);

    // Crash: the unsynced tail is lost, and so is the producers' memory of it.
    log.flush().unwrap();
    let durable = log.log_end_offset();
    let mut tail = Vec::new();
    for (pid, seq) in [(1, 1000), (2, 2000)] {
        // Unknown-to-the-log sequences would be out of order: bump the epoch instead.
        let b = pbatch(pid, 1, 0, 2);
        let info = log.append(&b, 0, T0).unwrap();
        tail.push((b, info.base_offset, info.last_offset, seq));
    }
    assert_eq!(log.producer_state(1), Some((1, 1)));
    drop(log);
    s.crash(TornWrite::DropUnsynced);
    let (mut log, r) = Log::open(s.clone(), dir.clone(), small_config(), T0).unwrap();
    assert!(!r.clean_shutdown);
    assert_eq!(log.log_end_offset(), durable);
    assert_eq!(log.producer_state, before);
    assert_dedup_matches(&mut log, &sent);
    // The lost batches are appended again when retried (at new offsets), exactly once.
    for (b, _, _, _) in &tail {
        let info = log.append(b, 0, T0).unwrap();
        assert!(!info.duplicate);
        assert_duplicate(&mut log, b, info.base_offset, info.last_offset);
    }
}

#[test]
fn truncation_rolls_the_producer_state_back() {
    let (_s, mut log) = mem_log(small_config());
    let sent = produce_some(&mut log);
    // Replay the first 15 batches into a second log: its state is what truncation must give.
    let (_s2, mut prefix) = mem_log(small_config());
    for (b, _, _) in &sent[..15] {
        prefix.append(b, 0, T0).unwrap();
    }
    let cut = sent[15].1;
    assert_eq!(prefix.log_end_offset(), cut);
    log.truncate_to(cut).unwrap();
    assert_eq!(log.producer_state, prefix.producer_state);
    assert_dedup_matches(&mut log, &sent[..15]);
    // The truncated batches are new again, in order.
    for (b, base, last) in &sent[15..] {
        let info = log.append(b, 0, T0).unwrap();
        assert!(!info.duplicate);
        assert_eq!((info.base_offset, info.last_offset), (*base, *last));
    }
    // Truncating away only plain batches keeps the state as it is (no rebuild needed).
    let state = log.producer_state.clone();
    let end = log.log_end_offset();
    log.append(&batch(T0, 2, 5), 0, T0).unwrap();
    log.truncate_to(end).unwrap();
    assert_eq!(log.producer_state, state);
    // Truncating below the log start forgets every producer.
    log.delete_records_before(10).unwrap();
    log.truncate_to(5).unwrap();
    assert_eq!(log.producer_count(), 0);
    log.append(&sent[20].0, 0, T0).unwrap();
}

#[test]
fn retention_keeps_entries_until_they_expire() {
    let mut cfg = small_config();
    cfg.retention_ms = 1000;
    let (_s, mut log) = mem_log(cfg);
    let first = pbatch(1, 0, 0, 1);
    log.append(&first, 0, T0).unwrap();
    log.roll(T0).unwrap();
    log.append(&batch(T0 + 5000, 1, 100), 0, T0).unwrap();
    let r = log.apply_retention(T0 + 2000).unwrap();
    assert!(r.segments_deleted > 0 && log.log_start_offset() > 0);
    // The batch is gone but still remembered (as in Kafka): the retry is a duplicate.
    assert_eq!(log.producer_state(1), Some((0, 0)));
    assert_duplicate(&mut log, &first, 0, 0);
    // Idle for longer than producer.id.expiration.ms: forgotten.
    log.apply_retention(T0 + PRODUCER_ID_EXPIRATION_MS + 1)
        .unwrap();
    assert_eq!(log.producer_state(1), None);
}

/// Rebuild cost at open: `cargo test --release -p broker --lib rebuild_cost -- --ignored
/// --nocapture`.
#[test]
#[ignore]
fn rebuild_cost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    let cfg = LogConfig {
        segment_bytes: 64 << 20,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(FileStorage::new(), dir.clone(), cfg.clone(), T0).unwrap();
    let n = 200_000usize;
    let mut seqs = vec![0i32; 1000];
    let mut req = Vec::new();
    for i in 0..n {
        let pid = i % 1000;
        req.extend(pbatch(pid as i64, 0, seqs[pid], 4));
        seqs[pid] += 4;
        if req.len() > 64 << 10 {
            log.append(&req, 0, T0).unwrap();
            req.clear();
        }
    }
    log.append(&req, 0, T0).unwrap();
    let bytes = log.size_bytes();
    log.close().unwrap();
    for clean in [true, false] {
        if !clean {
            FileStorage::new()
                .remove(&dir.join(CLEAN_SHUTDOWN_FILE))
                .ok();
        }
        let started = std::time::Instant::now();
        let (log, r) = Log::open(FileStorage::new(), dir.clone(), cfg.clone(), T0).unwrap();
        let open = started.elapsed();
        let started = std::time::Instant::now();
        let mut log = log;
        log.rebuild_from_headers().unwrap();
        println!(
            "{n} batches, {bytes} bytes, {} segments, clean {}: open {open:?}, rebuild alone {:?}",
            log.segment_count(),
            r.clean_shutdown,
            started.elapsed()
        );
        assert_eq!(log.producer_count(), 1000);
        log.close().unwrap();
    }
}

// ---- recovery from damaged files, generic over storage ----

fn rewrite<S: Storage>(s: &S, path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let file = s.open(path).unwrap();
    let mut buf = vec![0u8; file.len() as usize];
    file.read_at(0, &mut buf).unwrap();
    f(&mut buf);
    file.truncate(0).unwrap();
    file.append(&buf).unwrap();
    file.sync().unwrap();
}

/// Writes 3 segments of 10-record batches, damages the last batch with `damage`, reopens.
fn recover_after<S: Storage + Clone>(
    s: S,
    dir: PathBuf,
    damage: impl FnOnce(&S, &Path, u64),
) -> (Log<S>, RecoveryReport, i64) {
    let (mut log, _) = Log::open(s.clone(), dir.clone(), small_config(), T0).unwrap();
    for i in 0..15 {
        log.append(&batch(T0 + i, 10, 10), 0, T0).unwrap();
    }
    assert!(log.segment_count() >= 3);
    log.flush().unwrap();
    let last_seg = *log.segment_base_offsets().last().unwrap();
    let path = dir.join(format!("{last_seg:020}.log"));
    let seg = log.segments.values().next_back().unwrap();
    let last_pos = seg
        .find_batch(log.log_end_offset() - 1)
        .unwrap()
        .unwrap()
        .pos;
    let end = log.log_end_offset();
    drop(log); // no close: unclean
    damage(&s, &path, last_pos);
    let (log, r) = Log::open(s, dir, small_config(), T0).unwrap();
    (log, r, end)
}

fn recovery_suite<S: Storage + Clone>(s: S, root: &Path) {
    // Torn tail: the file ends mid-batch.
    let (log, r, end) = recover_after(s.clone(), root.join("torn"), |s, p, pos| {
        s.open(p).unwrap().truncate(pos + 30).unwrap();
    });
    assert!(!r.clean_shutdown);
    assert_eq!(r.truncated_bytes, 30);
    assert_eq!(r.last_valid_offset, end - 11);
    assert_eq!(log.log_end_offset(), end - 10);
    assert_eq!(log.durable_offset(), log.log_end_offset());
    assert_eq!(read_all(&log).len(), 14);

    // Bit flip inside the last batch's records: CRC catches it.
    let (log, r, end) = recover_after(s.clone(), root.join("flip"), |s, p, pos| {
        rewrite(s, p, |b| b[pos as usize + 70] ^= 0x10);
    });
    assert_eq!(log.log_end_offset(), end - 10);
    assert!(r.truncated_bytes > 0);
    assert!(r.notes.iter().any(|n| n.contains("CRC")), "{:?}", r.notes);

    // Garbage after the last batch.
    let (log, r, end) = recover_after(s.clone(), root.join("garbage"), |s, p, _| {
        s.open(p).unwrap().append(&[0xAB; 100]).unwrap();
    });
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(r.truncated_bytes, 100);
    assert_eq!(read_all(&log).len(), 15);

    // Damage in an earlier segment removes every later segment.
    let (log, r, _) = recover_after(s.clone(), root.join("early"), |s, _p, _| {
        let first = root.join("early").join("00000000000000000000.log");
        rewrite(s, &first, |b| b[100] ^= 1);
    });
    assert!(r.segments_removed >= 2, "{r:?}");
    assert_eq!(log.segment_count(), 1);
    assert!(log.log_end_offset() < 10);
    let mut log = log;
    let next = log.log_end_offset();
    assert_eq!(
        log.append(&batch(T0, 1, 1), 0, T0).unwrap().base_offset,
        next
    );
}

#[test]
fn recovery_file_storage() {
    let tmp = tempfile::tempdir().unwrap();
    recovery_suite(FileStorage::new(), tmp.path());
}

#[test]
fn recovery_mem_storage() {
    recovery_suite(MemStorage::new(), Path::new("/data"));
}

#[test]
fn file_storage_clean_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    let (mut log, _) = Log::open(FileStorage::new(), dir.clone(), small_config(), T0).unwrap();
    for i in 0..25 {
        log.append(&batch(T0 + i, 3, 30), 0, T0).unwrap();
    }
    let before = log.read(0, usize::MAX, i64::MAX).unwrap();
    log.close().unwrap();
    let (log, r) = Log::open(FileStorage::new(), dir, small_config(), T0).unwrap();
    assert!(r.clean_shutdown);
    assert_eq!(r.segments_rebuilt, 0);
    assert_eq!(log.read(0, usize::MAX, i64::MAX).unwrap(), before);
}

#[test]
fn mem_crash_drop_unsynced_and_torn_prefix() {
    let dir = PathBuf::from("/data/t-0");
    for sectors in [0u64, 1, 2, 5] {
        let s = MemStorage::new();
        let (mut log, _) = Log::open(s.clone(), dir.clone(), small_config(), T0).unwrap();
        for i in 0..6 {
            log.append(&batch(T0 + i, 2, 100), 0, T0).unwrap();
        }
        log.flush().unwrap();
        let durable = log.log_end_offset();
        for i in 0..6 {
            log.append(&batch(T0 + i, 2, 100), 0, T0).unwrap();
        }
        let end = log.log_end_offset();
        drop(log);
        s.crash(TornWrite::KeepPrefix {
            sectors,
            garbage: vec![0x5A; 300],
        });
        let (log, r) = Log::open(s.clone(), dir.clone(), small_config(), T0).unwrap();
        let got = log.log_end_offset();
        assert!(got >= durable && got <= end, "{sectors}: {got} {r:?}");
        assert_eq!(read_all(&log).last().map_or(-1, |b| b.1), got - 1);
        if sectors == 0 {
            assert_eq!(got, durable);
        }
    }
}

// ---- leader epoch cache and follower appends ----

/// The epoch cache a rebuild from the stored batch headers gives (first entry at the log start).
fn epochs_from_headers<S: Storage>(log: &Log<S>) -> Vec<(i32, i64)> {
    let start = log.log_start_offset();
    let data = log.read(start, usize::MAX, i64::MAX).unwrap();
    let mut out: Vec<(i32, i64)> = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let h = RecordBatchHeader::parse(&data[pos..]).unwrap();
        let epoch = h.partition_leader_epoch();
        if epoch >= 0 && out.last().is_none_or(|(e, _)| epoch > *e) {
            out.push((epoch, h.base_offset().max(start)));
        }
        pos += h.total_size() as usize;
    }
    out
}

/// The cache is the one the stored headers give, plus at most a latest epoch with no data.
fn assert_epochs_match_data<S: Storage>(log: &Log<S>) {
    let derived = epochs_from_headers(log);
    let got = log.epoch_entries();
    if got.len() == derived.len() + 1 {
        let (epoch, start) = *got.last().unwrap();
        assert_eq!(start, log.log_end_offset(), "{got:?} vs {derived:?}");
        assert!(derived.last().is_none_or(|(e, _)| *e < epoch));
        assert_eq!(got[..derived.len()], derived[..]);
    } else {
        assert_eq!(got, derived);
    }
}

/// Appends one `records`-record batch in `epoch`; returns its base offset.
fn append_in(log: &mut Log<MemStorage>, epoch: i32, records: usize) -> i64 {
    log.append(&batch(T0, records, 100), epoch, T0)
        .unwrap()
        .base_offset
}

#[test]
fn leader_appends_cache_the_first_offset_of_each_epoch() {
    let (_s, mut log) = mem_log(small_config());
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log.epoch_entries(), vec![]);
    append_in(&mut log, 0, 2);
    append_in(&mut log, 0, 3);
    append_in(&mut log, 2, 1); // offset 5
    let mut req = batch(T0, 2, 10);
    req.extend(batch(T0, 2, 10));
    log.append(&req, 5, T0).unwrap(); // offsets 6..=9, one entry
    append_in(&mut log, -1, 1); // no epoch: not cached
    append_in(&mut log, 5, 1);
    assert_eq!(log.epoch_entries(), vec![(0, 0), (2, 5), (5, 6)]);
    assert_eq!(log.latest_epoch(), Some(5));
    // A new leader records its epoch at its log end before appending.
    let end = log.log_end_offset();
    log.assign_epoch_start(7, end);
    log.assign_epoch_start(6, end); // older: ignored
    log.assign_epoch_start(7, end); // same: ignored
    assert_eq!(log.epoch_entries(), vec![(0, 0), (2, 5), (5, 6), (7, end)]);
    log.assign_epoch_start(8, end); // epoch 7 holds nothing: replaced
    assert_eq!(log.epoch_entries(), vec![(0, 0), (2, 5), (5, 6), (8, end)]);
    assert_eq!(append_in(&mut log, 8, 1), end);
    assert_eq!(log.epoch_entries(), vec![(0, 0), (2, 5), (5, 6), (8, end)]);
    assert_epochs_match_data(&log);
}

/// An older epoch than the log holds is refused, not a panic: the stored epoch field is outside
/// the CRC, so a flipped bit can raise it (found by the storage_faults fuzz target in CI).
#[test]
fn leader_append_in_an_older_epoch_is_refused() {
    let (_s, mut log) = mem_log(small_config());
    append_in(&mut log, 2, 1);
    let end = log.log_end_offset();
    match log.append(&batch(T0, 1, 100), 1, T0) {
        Err(AppendError::LeaderEpochRegression { latest: 2, got: 1 }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(log.log_end_offset(), end, "nothing written");
    append_in(&mut log, 2, 1);
}

#[test]
fn end_offset_for_epoch_follows_kafka() {
    let (_s, mut log) = mem_log(small_config());
    assert_eq!(log.end_offset_for_epoch(0), None);
    append_in(&mut log, 2, 3); // 0..=2
    append_in(&mut log, 4, 3); // 3..=5
    append_in(&mut log, 7, 3); // 6..=8
    assert_eq!(log.epoch_entries(), vec![(2, 0), (4, 3), (7, 6)]);
    // The latest epoch ends at the log end.
    assert_eq!(log.end_offset_for_epoch(7), Some((7, 9)));
    // A cached epoch ends where the next one starts.
    assert_eq!(log.end_offset_for_epoch(4), Some((4, 6)));
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 3)));
    // An unknown epoch between two: the floor epoch, ending where the next starts.
    assert_eq!(log.end_offset_for_epoch(5), Some((4, 6)));
    assert_eq!(log.end_offset_for_epoch(3), Some((2, 3)));
    // Below every cached epoch: the requested epoch, ending at the first cached start.
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 0)));
    // Above the latest, or undefined.
    assert_eq!(log.end_offset_for_epoch(8), Some((-1, -1)));
    assert_eq!(log.end_offset_for_epoch(-1), Some((-1, -1)));
    // A latest epoch without data yet.
    log.assign_epoch_start(9, 9);
    assert_eq!(log.end_offset_for_epoch(9), Some((9, 9)));
    assert_eq!(log.end_offset_for_epoch(7), Some((7, 9)));
    assert_eq!(log.end_offset_for_epoch(8), Some((7, 9)));
    // After retention removed epoch 2's data: epoch 2 is below every cached epoch.
    log.delete_records_before(4).unwrap();
    assert_eq!(log.epoch_entries(), vec![(4, 4), (7, 6), (9, 9)]);
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 4)));
}

#[test]
fn epoch_cache_survives_restart_and_crash() {
    let dir = PathBuf::from("/data/t-0");
    let s = MemStorage::new();
    let (mut log, _) = Log::open(s.clone(), dir.clone(), small_config(), T0).unwrap();
    for (i, epoch) in [0, 0, 1, 1, 1, 3, 3, 6].into_iter().enumerate() {
        append_in(&mut log, epoch, 1 + i % 3);
    }
    assert!(log.segment_count() > 1);
    let before = log.epoch_entries();
    assert_eq!(before.len(), 4);
    // Clean restart: the same cache, except an epoch that has no batch yet.
    let end = log.log_end_offset();
    log.assign_epoch_start(9, end);
    log.close().unwrap();
    let (log, r) = Log::open(s.clone(), dir.clone(), small_config(), T0).unwrap();
    assert!(r.clean_shutdown);
    assert_eq!(log.epoch_entries(), before);
    // Unclean restart (indexes rebuilt) gives the same.
    drop(log);
    s.crash(TornWrite::DropUnsynced);
    let (mut log, r) = Log::open(s.clone(), dir.clone(), small_config(), T0).unwrap();
    assert!(!r.clean_shutdown);
    assert_eq!(log.epoch_entries(), before);
    // A torn tail: the recovered cache is the old one cut at the recovered end.
    log.flush().unwrap();
    for epoch in [6, 10, 10, 12, 12] {
        append_in(&mut log, epoch, 2);
    }
    let full = log.epoch_entries();
    drop(log);
    s.crash(TornWrite::KeepPrefix {
        sectors: 1,
        garbage: vec![0x5A; 100],
    });
    let (log, _) = Log::open(s.clone(), dir.clone(), small_config(), T0).unwrap();
    let end = log.log_end_offset();
    let expected: Vec<(i32, i64)> = full.into_iter().filter(|(_, s)| *s < end).collect();
    assert_eq!(log.epoch_entries(), expected);
    assert_epochs_match_data(&log);
}

#[test]
fn truncation_and_retention_adjust_the_epoch_cache() {
    let dir = PathBuf::from("/data/t-0");
    let s = MemStorage::new();
    let (mut log, _) = Log::open(s.clone(), dir.clone(), small_config(), T0).unwrap();
    let mut starts = Vec::new();
    for epoch in 0..8 {
        starts.push(append_in(&mut log, epoch, 2));
        append_in(&mut log, epoch, 2);
    }
    assert!(log.segment_count() > 2);
    let all: Vec<(i32, i64)> = (0..8).map(|e| (e, starts[e as usize])).collect();
    assert_eq!(log.epoch_entries(), all);
    // Truncating inside epoch 6 keeps its entry; epoch 7 goes.
    log.truncate_to(starts[6] + 2).unwrap();
    assert_eq!(log.epoch_entries(), all[..7]);
    // Truncating at epoch 6's start drops it.
    log.truncate_to(starts[6]).unwrap();
    assert_eq!(log.epoch_entries(), all[..6]);
    assert_eq!(log.latest_epoch(), Some(5));
    // A truncation that does not need a producer-state rebuild still adjusts the cache.
    log.assign_epoch_start(9, starts[6]);
    append_in(&mut log, 9, 1);
    log.truncate_to(starts[6]).unwrap();
    assert_eq!(log.epoch_entries(), all[..6]);
    // Moving the log start into epoch 2 moves epoch 2's start; older epochs go.
    log.delete_records_before(starts[2] + 2).unwrap();
    assert_eq!(log.epoch_entries()[0], (2, starts[2] + 2));
    assert_eq!(log.epoch_entries()[1..], all[3..6]);
    let kept = log.epoch_entries();
    assert_epochs_match_data(&log);
    // Whole-segment retention.
    log.set_config(LogConfig {
        retention_bytes: 600,
        ..small_config()
    });
    let r = log.apply_retention(T0).unwrap();
    assert!(r.segments_deleted > 0);
    let start = log.log_start_offset();
    assert_eq!(log.epoch_entries()[0].1, start);
    assert!(log.epoch_entries().len() < kept.len());
    assert_epochs_match_data(&log);
    // Restart: the same cache.
    let kept = log.epoch_entries();
    log.close().unwrap();
    let (mut log, _) = Log::open(s.clone(), dir.clone(), small_config(), T0).unwrap();
    assert_eq!(log.epoch_entries(), kept);
    // Below the log start: everything goes.
    log.truncate_to(start - 1).unwrap();
    assert_eq!(log.epoch_entries(), vec![]);
    assert_eq!(log.end_offset_for_epoch(5), None);
}

#[test]
fn truncating_at_the_log_end_drops_an_epoch_without_data() {
    let (_ls, mut leader) = mem_log(small_config());
    append_in(&mut leader, 1, 2);
    let (_fs, mut follower) = mem_log(small_config());
    follower
        .append_as_follower(&leader.read(0, 1, i64::MAX).unwrap(), T0)
        .unwrap();
    append_in(&mut leader, 1, 2); // the follower misses this one
                                  // The follower leads briefly in epoch 2 without appending; the leader is back in epoch 3.
    follower.assign_epoch_start(2, 2);
    leader.assign_epoch_start(3, 4);
    append_in(&mut leader, 3, 1);
    let old = leader.read(2, 1, i64::MAX).unwrap();
    assert!(matches!(
        follower.append_as_follower(&old, T0),
        Err(AppendError::LeaderEpochRegression { latest: 2, got: 1 })
    ));
    // Reconciliation: the leader ends epoch 2 (as its floor epoch 1) at 4; the follower is
    // shorter and truncates at its log end, which forgets epoch 2.
    assert_eq!(leader.end_offset_for_epoch(2), Some((1, 4)));
    assert_eq!(follower.end_offset_for_epoch(1), Some((1, 2)));
    follower.truncate_to(2).unwrap();
    assert_eq!(follower.epoch_entries(), vec![(1, 0)]);
    replicate(&leader, &mut follower, 1);
    assert_eq!(all_bytes(&follower), all_bytes(&leader));
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
}

/// Copies everything the follower lacks from the leader, `chunk` bytes per fetch.
fn replicate(leader: &Log<MemStorage>, follower: &mut Log<MemStorage>, chunk: usize) {
    while follower.log_end_offset() < leader.log_end_offset() {
        let data = leader
            .read(follower.log_end_offset(), chunk, i64::MAX)
            .unwrap();
        let info = follower.append_as_follower(&data, T0).unwrap();
        assert_eq!(info.bytes, data.len());
    }
}

fn all_bytes<S: Storage>(log: &Log<S>) -> Bytes {
    log.read(log.log_start_offset(), usize::MAX, i64::MAX)
        .unwrap()
}

#[test]
fn follower_copy_is_byte_identical() {
    let (_ls, mut leader) = mem_log(small_config());
    let fs = MemStorage::new();
    let fdir = PathBuf::from("/data/f-0");
    let fconfig = LogConfig {
        segment_bytes: 500,
        ..small_config()
    };
    let (mut follower, _) = Log::open(fs.clone(), fdir.clone(), fconfig.clone(), T0).unwrap();
    let mut seq = [0i32; 3];
    let mut last_of_0 = None;
    for i in 0..30usize {
        let epoch = (i / 7) as i32;
        if i % 7 == 0 {
            let end = leader.log_end_offset();
            leader.assign_epoch_start(epoch, end);
        }
        if i % 3 == 0 {
            let pid = (i % 9 / 3) as i64;
            let records = 1 + i % 4;
            let b = pbatch(pid, 0, seq[pid as usize], records);
            let info = leader.append(&b, epoch, T0).unwrap();
            if pid == 0 {
                last_of_0 = Some((b, info.base_offset, info.last_offset));
            }
            seq[pid as usize] += records as i32;
        } else {
            let mut req = batch(T0 + i as i64, 1 + i % 3, 30);
            req.extend(compress_batch(
                &batch(T0, 2, 40),
                crate::log::compression::Codec::Gzip,
            ));
            leader.append(&req, epoch, T0).unwrap();
        }
        if i % 4 == 0 {
            replicate(&leader, &mut follower, 1 + i * 37);
        }
    }
    replicate(&leader, &mut follower, 300);
    assert_eq!(all_bytes(&follower), all_bytes(&leader));
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(follower.producer_count(), 3);
    for pid in 0..3 {
        assert_eq!(follower.producer_state(pid), leader.producer_state(pid));
    }
    assert_eq!(read_all(&follower), read_all(&leader));
    // The same after a restart of the follower.
    follower.close().unwrap();
    let (mut follower, _) = Log::open(fs, fdir, fconfig, T0).unwrap();
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    // The follower becomes leader: its dedup state is the old leader's.
    let end = follower.log_end_offset();
    follower.assign_epoch_start(10, end);
    let (retry, base, last) = last_of_0.unwrap();
    let info = follower.append(&retry, 10, T0).unwrap();
    assert!(info.duplicate);
    assert_eq!((info.base_offset, info.last_offset), (base, last));
    assert_eq!(follower.log_end_offset(), end);
    assert!(follower.append(&pbatch(0, 0, seq[0], 1), 10, T0).is_ok());
    assert_eq!(
        append_err(follower.append(&pbatch(0, 0, seq[0] + 5, 1), 10, T0)),
        "out_of_order"
    );
}

#[test]
fn follower_refuses_bad_appends_without_changing_the_log() {
    let (_ls, mut leader) = mem_log(small_config());
    for epoch in [1, 1, 3, 3] {
        append_in(&mut leader, epoch, 2);
    }
    let (_fs, mut follower) = mem_log(small_config());
    let first = leader.read(0, 1, i64::MAX).unwrap(); // batch 0..=1
    follower.append_as_follower(&first, T0).unwrap();
    let snapshot = |f: &Log<MemStorage>| {
        (
            all_bytes(f),
            f.log_end_offset(),
            f.size_bytes(),
            f.epoch_entries(),
        )
    };
    let before = snapshot(&follower);
    let check = |f: &mut Log<MemStorage>, bytes: &[u8], what: &str| {
        let e = f.append_as_follower(bytes, T0).unwrap_err();
        assert_eq!(snapshot(f), before, "{what}");
        e
    };
    // A gap: batches starting at 4 while the log ends at 2.
    let gap = leader.read(4, usize::MAX, i64::MAX).unwrap();
    assert!(matches!(
        check(&mut follower, &gap, "gap"),
        AppendError::OffsetMismatch {
            expected: 2,
            got: 4
        }
    ));
    // An overlap: the batch already stored.
    assert!(matches!(
        check(&mut follower, &first, "overlap"),
        AppendError::OffsetMismatch {
            expected: 2,
            got: 0
        }
    ));
    // Not contiguous inside the request: 2..=3 then 6..=7.
    let mut split_req = leader.read(2, 1, i64::MAX).unwrap().to_vec();
    split_req.extend_from_slice(&leader.read(6, 1, i64::MAX).unwrap());
    assert!(matches!(
        check(&mut follower, &split_req, "hole"),
        AppendError::OffsetMismatch {
            expected: 4,
            got: 6
        }
    ));
    // A damaged batch (the CRC covers the records), even after a good one.
    let mut bad = leader.read(2, usize::MAX, i64::MAX).unwrap().to_vec();
    let n = bad.len();
    bad[n - 1] ^= 0x01;
    assert!(matches!(
        check(&mut follower, &bad, "crc"),
        AppendError::CorruptMessage(_)
    ));
    // An epoch regression inside one request (the epoch is outside the CRC).
    let mut regress = leader.read(2, usize::MAX, i64::MAX).unwrap().to_vec();
    let second = split(&regress)[0].2;
    set_partition_leader_epoch(&mut regress[second..], 0);
    assert!(matches!(
        check(&mut follower, &regress, "regression"),
        AppendError::LeaderEpochRegression { latest: 1, got: 0 }
    ));
    // Older than the log's latest epoch.
    let mut old = leader.read(2, 1, i64::MAX).unwrap().to_vec();
    set_partition_leader_epoch(&mut old, 0);
    assert!(matches!(
        check(&mut follower, &old, "old epoch"),
        AppendError::LeaderEpochRegression { latest: 1, got: 0 }
    ));
    // Still appends what it should afterwards.
    replicate(&leader, &mut follower, usize::MAX);
    assert_eq!(all_bytes(&follower), all_bytes(&leader));
    assert_eq!(follower.epoch_entries(), vec![(1, 0), (3, 4)]);
}

// ---- model-based property test ----

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    pub enum Op {
        /// (records, value bytes) per batch.
        Append {
            batches: Vec<(u8, u16)>,
            advance_ms: u16,
        },
        Read {
            pick: u32,
            max_bytes: u16,
            hw_pick: u32,
        },
        Truncate {
            pick: u32,
        },
        Flush,
        PrepareAndSync,
        CompleteFlush,
        Crash,
        CrashTorn {
            sectors: u8,
            garbage: u16,
        },
        CloseReopen,
        Retention {
            advance_ms: u16,
        },
        /// An idempotent producer sends a new batch, or retries one it sent before.
        Produce {
            producer: u8,
            retry: Option<u32>,
            records: u8,
            advance_ms: u16,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (prop::collection::vec((1u8..5, 0u16..150), 1..4), 0u16..3000)
                .prop_map(|(batches, advance_ms)| Op::Append { batches, advance_ms }),
            3 => (any::<u32>(), 1u16..2000, any::<u32>())
                .prop_map(|(pick, max_bytes, hw_pick)| Op::Read { pick, max_bytes, hw_pick }),
            1 => any::<u32>().prop_map(|pick| Op::Truncate { pick }),
            1 => Just(Op::Flush),
            1 => Just(Op::PrepareAndSync),
            1 => Just(Op::CompleteFlush),
            1 => Just(Op::Crash),
            1 => (0u8..4, 0u16..700).prop_map(|(sectors, garbage)| Op::CrashTorn { sectors, garbage }),
            1 => Just(Op::CloseReopen),
            1 => (0u16..30000).prop_map(|advance_ms| Op::Retention { advance_ms }),
            5 => (0u8..3, prop::option::of(any::<u32>()), 1u8..4, 0u16..2000).prop_map(
                |(producer, retry, records, advance_ms)| Op::Produce {
                    producer,
                    retry,
                    records,
                    advance_ms
                }
            ),
        ]
    }

    /// What an idempotent producer (id 100 + index) knows.
    #[derive(Default)]
    struct ProducerModel {
        epoch: i16,
        next_seq: i32,
        /// Every batch it sent, as sent.
        sent: Vec<Vec<u8>>,
        /// A crash or truncation removed one of its stored batches, or a retry was appended
        /// again (its original was gone): the broker may expect another sequence than
        /// `next_seq` (a real client would get OUT_OF_ORDER_SEQUENCE_NUMBER too).
        desynced: bool,
    }

    const PRODUCER_ID_BASE: i64 = 100;

    struct Model {
        /// (base offset, stored bytes) of every batch at or above the log start.
        batches: Vec<(i64, Vec<u8>)>,
        log_start: i64,
        log_end: i64,
        durable: i64,
        generation: u64,
        producers: Vec<ProducerModel>,
    }

    /// Equal apart from the fields the log patches (base offset, length, leader epoch).
    fn same_batch(a: &[u8], b: &[u8]) -> bool {
        a[16..] == b[16..]
    }

    fn header(b: &[u8]) -> RecordBatchHeader<'_> {
        RecordBatchHeader::parse(b).unwrap()
    }

    impl Model {
        fn last_offset(b: &[u8]) -> i64 {
            RecordBatchHeader::parse(b).unwrap().last_offset()
        }

        fn expected_read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> Vec<u8> {
            let mut out = Vec::new();
            if offset >= max_offset || offset == self.log_end {
                return out;
            }
            for (base, b) in &self.batches {
                if Self::last_offset(b) < offset {
                    continue;
                }
                if *base >= max_offset || (!out.is_empty() && out.len() + b.len() > max_bytes) {
                    break;
                }
                out.extend_from_slice(b);
            }
            out
        }

        fn truncate(&mut self, end: i64) {
            for (_, b) in self.batches.iter().filter(|(base, _)| *base >= end) {
                let pid = header(b).producer_id();
                if pid >= PRODUCER_ID_BASE {
                    self.producers[(pid - PRODUCER_ID_BASE) as usize].desynced = true;
                }
            }
            self.batches.retain(|(b, _)| *b < end);
            self.log_end = end;
        }

        /// A retry of `b` must be a duplicate: it is among its producer's last 5 stored
        /// batches of the latest stored epoch.
        fn expect_duplicate(&self, b: &[u8]) -> bool {
            let pid = header(b).producer_id();
            let mine: Vec<&Vec<u8>> = self
                .batches
                .iter()
                .map(|(_, s)| s)
                .filter(|s| header(s).producer_id() == pid)
                .collect();
            let Some(latest) = mine.last() else {
                return false;
            };
            let epoch = header(latest).producer_epoch();
            mine.iter()
                .rev()
                .take(NUM_BATCHES_TO_RETAIN)
                .filter(|s| header(s).producer_epoch() == epoch)
                .any(|s| same_batch(s, b))
        }

        /// No idempotent batch is stored twice.
        fn check_no_duplicates(&self) {
            let mut seen = BTreeSet::new();
            for (base, b) in &self.batches {
                let h = header(b);
                if h.producer_id() >= 0 {
                    let key = (h.producer_id(), h.producer_epoch(), h.base_sequence());
                    assert!(seen.insert(key), "{key:?} stored twice (again at {base})");
                }
            }
        }

        fn push(&mut self, mut b: Vec<u8>, leader_epoch: i32) -> i64 {
            let base = self.log_end;
            set_base_offset(&mut b, base);
            set_partition_leader_epoch(&mut b, leader_epoch);
            let last = Self::last_offset(&b);
            self.batches.push((base, b));
            self.log_end = last + 1;
            last
        }

        fn is_boundary(&self, offset: i64) -> bool {
            offset == self.log_end || self.batches.iter().any(|(b, _)| *b == offset)
        }
    }

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 700,
            segment_ms: 10_000,
            retention_ms: 20_000,
            retention_bytes: 2500,
            index_interval_bytes: 128,
            max_message_bytes: 1 << 20,
        }
    }

    fn check(log: &Log<MemStorage>, m: &Model) {
        assert_eq!(log.log_start_offset(), m.log_start);
        assert_eq!(log.log_end_offset(), m.log_end);
        assert_eq!(log.durable_offset(), m.durable);
        assert_epochs_match_data(log);
        let all = log.read(m.log_start, usize::MAX, i64::MAX).unwrap();
        assert_eq!(
            all.as_ref(),
            m.expected_read(m.log_start, usize::MAX, i64::MAX)
                .as_slice()
        );
    }

    fn run(ops: Vec<Op>) {
        let s = MemStorage::new();
        let dir = PathBuf::from("/data/topic-0");
        let mut now = T0;
        let (mut log, _) = Log::open(s.clone(), dir.clone(), config(), now).unwrap();
        let mut m = Model {
            batches: Vec::new(),
            log_start: 0,
            log_end: 0,
            durable: 0,
            generation: 0,
            producers: (0..3).map(|_| ProducerModel::default()).collect(),
        };
        let mut ticket: Option<(FlushTicket<_>, u64)> = None;
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append {
                    batches,
                    advance_ms,
                } => {
                    now += advance_ms as i64;
                    let epoch = (step / 8) as i32;
                    let mut req = Vec::new();
                    let mut parts = Vec::new();
                    for (i, (records, value)) in batches.iter().enumerate() {
                        let b = batch(now - 50 + i as i64, *records as usize, *value as usize);
                        parts.push(b.clone());
                        req.extend(b);
                    }
                    let info = log.append(&req, epoch, now).unwrap();
                    assert_eq!(info.base_offset, m.log_end);
                    let mut next = m.log_end;
                    for mut b in parts {
                        set_base_offset(&mut b, next);
                        set_partition_leader_epoch(&mut b, epoch);
                        let last = Model::last_offset(&b);
                        m.batches.push((next, b));
                        next = last + 1;
                    }
                    assert_eq!(info.last_offset, next - 1);
                    m.log_end = next;
                }
                Op::Read {
                    pick,
                    max_bytes,
                    hw_pick,
                } => {
                    let span = (m.log_end - m.log_start + 1) as u32;
                    let offset = m.log_start + (pick % span) as i64;
                    let hw = offset + (hw_pick % (m.log_end - offset + 2) as u32) as i64;
                    let got = log.read(offset, max_bytes as usize, hw).unwrap();
                    assert_eq!(
                        got.as_ref(),
                        m.expected_read(offset, max_bytes as usize, hw).as_slice()
                    );
                    if m.log_start > 0 {
                        assert!(log.read(m.log_start - 1, 100, i64::MAX).is_err());
                    }
                    assert!(log.read(m.log_end + 1, 100, i64::MAX).is_err());
                }
                Op::Truncate { pick } => {
                    let n = m.batches.len() as u32 + 1;
                    let i = (pick % n) as usize;
                    let offset = m.batches.get(i).map_or(m.log_end, |(b, _)| *b);
                    log.truncate_to(offset).unwrap();
                    if offset < m.log_end {
                        m.truncate(offset);
                        m.durable = offset;
                        m.generation += 1;
                    }
                }
                Op::Flush => {
                    log.flush().unwrap();
                    m.durable = m.log_end;
                }
                Op::PrepareAndSync => {
                    if let Some(t) = log.prepare_flush() {
                        assert_eq!(t.upto(), m.log_end);
                        t.sync().unwrap();
                        ticket = Some((t, m.generation));
                    } else {
                        assert_eq!(m.durable, m.log_end);
                    }
                }
                Op::CompleteFlush => {
                    if let Some((t, generation)) = ticket.take() {
                        log.complete_flush(&t);
                        if generation == m.generation {
                            m.durable = m.durable.max(t.upto());
                        }
                    }
                }
                Op::Crash | Op::CrashTorn { .. } => {
                    drop(log);
                    // Bytes synced through a ticket not yet completed are on disk too.
                    let synced = match ticket.take() {
                        Some((t, generation)) if generation == m.generation => t.upto(),
                        _ => m.durable,
                    };
                    let torn = match op {
                        Op::CrashTorn { sectors, garbage } => TornWrite::KeepPrefix {
                            sectors: sectors as u64,
                            garbage: (0..garbage).map(|i| (i * 31 + 7) as u8).collect(),
                        },
                        _ => TornWrite::DropUnsynced,
                    };
                    let exact = torn == TornWrite::DropUnsynced;
                    s.crash(torn);
                    let (l, r) = Log::open(s.clone(), dir.clone(), config(), now).unwrap();
                    log = l;
                    assert!(!r.clean_shutdown);
                    let floor = m.durable.max(synced).max(m.log_start);
                    let got = log.log_end_offset();
                    if exact {
                        assert_eq!(got, floor, "{r:?}");
                    } else {
                        assert!(got >= floor && got <= m.log_end, "{got} {r:?}");
                        assert!(m.is_boundary(got));
                    }
                    m.truncate(got);
                    m.durable = got;
                    m.generation += 1;
                }
                Op::CloseReopen => {
                    ticket = None;
                    log.close().unwrap();
                    let (l, r) = Log::open(s.clone(), dir.clone(), config(), now).unwrap();
                    log = l;
                    assert!(r.clean_shutdown);
                    assert_eq!(r.segments_rebuilt, 0, "{r:?}");
                    m.durable = m.log_end;
                    m.generation += 1;
                }
                Op::Produce {
                    producer,
                    retry,
                    records,
                    advance_ms,
                } => {
                    now += advance_ms as i64;
                    let leader_epoch = (step / 8) as i32;
                    let pid = PRODUCER_ID_BASE + producer as i64;
                    let p = &m.producers[producer as usize];
                    let (b, is_retry) = match retry {
                        Some(pick) if !p.sent.is_empty() => {
                            (p.sent[pick as usize % p.sent.len()].clone(), true)
                        }
                        _ => {
                            let values: Vec<&[u8]> =
                                (0..records).map(|_| b"idempotent".as_slice()).collect();
                            let b = idempotent_batch(now - 10, &values, pid, p.epoch, p.next_seq);
                            (b, false)
                        }
                    };
                    let expect_duplicate = is_retry && m.expect_duplicate(&b);
                    let present = m.batches.iter().find(|(_, s)| same_batch(s, &b)).cloned();
                    match log.append(&b, leader_epoch, now) {
                        Ok(info) if info.duplicate => {
                            assert!(is_retry, "a new batch answered as a duplicate");
                            if info.base_offset >= m.log_start {
                                let (base, stored) = present.expect("duplicate of a stored batch");
                                assert_eq!(info.base_offset, base);
                                assert_eq!(info.last_offset, Model::last_offset(&stored));
                            } else {
                                assert!(present.is_none());
                            }
                        }
                        Ok(info) => {
                            assert!(!expect_duplicate, "a recent retry was appended again");
                            assert!(present.is_none(), "a stored batch was appended again");
                            assert_eq!(info.base_offset, m.log_end);
                            let last = m.push(b.clone(), leader_epoch);
                            assert_eq!(info.last_offset, last);
                            let p = &mut m.producers[producer as usize];
                            if is_retry {
                                p.desynced = true;
                            } else {
                                p.next_seq += records as i32;
                                p.sent.push(b);
                            }
                        }
                        Err(AppendError::OutOfOrderSequence(e)) => {
                            assert!(!expect_duplicate, "{e}");
                            if !is_retry {
                                let p = &mut m.producers[producer as usize];
                                assert!(p.desynced, "an in-sequence batch was refused: {e}");
                                // Like a KIP-360 client: bump the epoch, restart at 0.
                                p.epoch += 1;
                                p.next_seq = 0;
                            }
                        }
                        Err(AppendError::InvalidProducerEpoch(e)) => {
                            assert!(is_retry && !expect_duplicate, "{e}");
                        }
                        Err(e) => panic!("{e}"),
                    }
                    m.check_no_duplicates();
                }
                Op::Retention { advance_ms } => {
                    now += advance_ms as i64;
                    let r = log.apply_retention(now).unwrap();
                    let start = log.log_start_offset();
                    assert!(start >= m.log_start && m.is_boundary(start));
                    assert_eq!(r.log_start_offset, start);
                    if r.segments_deleted == 0 {
                        assert_eq!(start, m.log_start);
                    }
                    m.batches.retain(|(b, _)| *b >= start);
                    m.log_start = start;
                    assert!(
                        log.size_bytes() as i64 <= 2500 || log.segment_count() == 1 || {
                            // Only the active segment may keep it above the limit.
                            let first = log.segments.values().next().unwrap().size_bytes() as i64;
                            log.size_bytes() as i64 - first < 2500
                        }
                    );
                }
            }
            check(&log, &m);
        }
        log.close().unwrap();
        let (log, r) = Log::open(s, dir, config(), now).unwrap();
        assert!(r.clean_shutdown);
        m.durable = m.log_end;
        check(&log, &m);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn log_matches_model(ops in prop::collection::vec(op(), 1..80)) {
            run(ops);
        }
    }
}

// ---- replication property test ----

mod replication {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    pub enum Op {
        /// The leader appends (records per batch); `idempotent` batches come from one producer.
        Append { batches: Vec<u8>, idempotent: bool },
        /// A new leader: its log is the old one cut at a batch boundary, in a newer epoch.
        LeaderChange { pick: u32, append: bool },
        /// The follower fetches once, at most `max_bytes`.
        Fetch { max_bytes: u16 },
        /// The follower loses a tail (cut at one of its batch boundaries) and re-fetches.
        FollowerTruncate { pick: u32 },
        /// The follower crashes, losing what it did not flush.
        FollowerCrash { flush_first: bool },
        /// The follower is leader for one epoch and appends nothing; then the leader is
        /// elected again in a newer epoch, its log unchanged.
        FollowerLeadsBriefly,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (prop::collection::vec(1u8..4, 1..4), any::<bool>())
                .prop_map(|(batches, idempotent)| Op::Append { batches, idempotent }),
            2 => (any::<u32>(), any::<bool>())
                .prop_map(|(pick, append)| Op::LeaderChange { pick, append }),
            5 => (1u16..1500).prop_map(|max_bytes| Op::Fetch { max_bytes }),
            1 => any::<u32>().prop_map(|pick| Op::FollowerTruncate { pick }),
            1 => any::<bool>().prop_map(|flush_first| Op::FollowerCrash { flush_first }),
            1 => Just(Op::FollowerLeadsBriefly),
        ]
    }

    const PRODUCER_ID: i64 = 42;

    fn base_offsets<S: Storage>(log: &Log<S>) -> Vec<i64> {
        read_all(log).iter().map(|(b, _, _)| *b).collect()
    }

    fn leader_append(leader: &mut Log<MemStorage>, epoch: i32, records: &[u8], idem: bool) {
        let mut req = Vec::new();
        for (i, n) in records.iter().enumerate() {
            let mut b = batch(T0 + i as i64, *n as usize, 40);
            if idem {
                let (pe, seq) = match leader.producer_state(PRODUCER_ID) {
                    Some((e, last)) => (e, last + 1),
                    None => (0, 0),
                };
                // One batch per request: the next sequence depends on the stored ones.
                b = pbatch(PRODUCER_ID, pe, seq, *n as usize);
                leader.append(&b, epoch, T0).unwrap();
                continue;
            }
            req.extend(b);
        }
        if !req.is_empty() {
            leader.append(&req, epoch, T0).unwrap();
        }
    }

    /// Kafka's follower truncation after a leader change: ask the leader for the end of the
    /// follower's latest epoch, cut there, and repeat while the leader answers with an epoch
    /// the follower does not have.
    fn reconcile(leader: &Log<MemStorage>, follower: &mut Log<MemStorage>) {
        for _ in 0..1000 {
            let Some(epoch) = follower.latest_epoch() else {
                assert_eq!(follower.log_end_offset(), 0, "data without epochs");
                return;
            };
            let (leader_epoch, leader_end) = leader
                .end_offset_for_epoch(epoch)
                .expect("the leader has epochs");
            assert!(leader_end >= 0, "the leader's epochs reach the follower's");
            let end = follower.log_end_offset();
            let (mine, my_end) = follower
                .end_offset_for_epoch(leader_epoch)
                .expect("non-empty");
            if mine == leader_epoch {
                follower.truncate_to(leader_end.min(end)).unwrap();
                return;
            }
            // `my_end` may be the log end: that drops an epoch without data (a leadership
            // that ended before it appended anything).
            follower.truncate_to(my_end).unwrap();
        }
        panic!("reconciliation does not converge");
    }

    fn fetch(leader: &Log<MemStorage>, follower: &mut Log<MemStorage>, max_bytes: usize) {
        let end = follower.log_end_offset();
        assert!(end <= leader.log_end_offset());
        let data = leader.read(end, max_bytes, i64::MAX).unwrap();
        if !data.is_empty() {
            let info = follower.append_as_follower(&data, T0).unwrap();
            assert_eq!(info.base_offset, end);
        }
        // Whatever the follower has is the leader's.
        let mine = all_bytes(follower);
        let theirs = leader.read(0, mine.len().max(1), follower.log_end_offset());
        assert_eq!(mine, theirs.unwrap().slice(..mine.len()));
    }

    fn run(ops: Vec<Op>) {
        let (_ls, mut leader) = mem_log(small_config());
        let fs = MemStorage::new();
        let fdir = PathBuf::from("/data/f-0");
        let fconfig = LogConfig {
            segment_bytes: 600,
            ..small_config()
        };
        let (mut follower, _) = Log::open(fs.clone(), fdir.clone(), fconfig.clone(), T0).unwrap();
        let mut epoch = 0;
        let mut diverged = false;
        for op in ops {
            match op {
                Op::Append {
                    batches,
                    idempotent,
                } => leader_append(&mut leader, epoch, &batches, idempotent),
                Op::LeaderChange { pick, append } => {
                    let mut cuts = base_offsets(&leader);
                    cuts.push(leader.log_end_offset());
                    let cut = cuts[pick as usize % cuts.len()];
                    leader.truncate_to(cut).unwrap();
                    epoch += 1;
                    leader.assign_epoch_start(epoch, cut);
                    if append {
                        leader_append(&mut leader, epoch, &[1], false);
                    }
                    diverged = true;
                }
                Op::Fetch { max_bytes } => {
                    if diverged {
                        reconcile(&leader, &mut follower);
                        diverged = false;
                    }
                    fetch(&leader, &mut follower, max_bytes as usize);
                }
                Op::FollowerTruncate { pick } => {
                    let mut cuts = base_offsets(&follower);
                    cuts.push(follower.log_end_offset());
                    follower
                        .truncate_to(cuts[pick as usize % cuts.len()])
                        .unwrap();
                }
                Op::FollowerCrash { flush_first } => {
                    if flush_first {
                        follower.flush().unwrap();
                    }
                    drop(follower);
                    fs.crash(TornWrite::DropUnsynced);
                    let (f, _) = Log::open(fs.clone(), fdir.clone(), fconfig.clone(), T0).unwrap();
                    follower = f;
                }
                Op::FollowerLeadsBriefly => {
                    epoch += 1;
                    let end = follower.log_end_offset();
                    follower.assign_epoch_start(epoch, end);
                    epoch += 1;
                    let end = leader.log_end_offset();
                    leader.assign_epoch_start(epoch, end);
                    diverged = true;
                }
            }
            assert_epochs_match_data(&leader);
            assert_epochs_match_data(&follower);
        }
        // The leader writes in its epoch, then the follower catches up.
        leader_append(&mut leader, epoch, &[1], false);
        if diverged {
            reconcile(&leader, &mut follower);
        }
        while follower.log_end_offset() < leader.log_end_offset() {
            fetch(&leader, &mut follower, 700);
        }
        assert_eq!(all_bytes(&follower), all_bytes(&leader));
        assert_eq!(follower.epoch_entries(), leader.epoch_entries());
        assert_eq!(
            follower.producer_state(PRODUCER_ID),
            leader.producer_state(PRODUCER_ID)
        );
        follower.close().unwrap();
        let (follower, _) = Log::open(fs, fdir, fconfig, T0).unwrap();
        assert_eq!(follower.epoch_entries(), leader.epoch_entries());
        assert_eq!(all_bytes(&follower), all_bytes(&leader));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn follower_converges_to_the_leader(ops in prop::collection::vec(op(), 1..60)) {
            run(ops);
        }
    }
}

#[test]
fn header_cursor_reads_ahead_and_agrees_with_single_header_reads() {
    let (_s, mut log) = mem_log(LogConfig {
        segment_bytes: 8 << 20,
        index_interval_bytes: 4096,
        ..small_config()
    });
    // Small batches straddle the read-ahead window's edges; large ones exceed it.
    let sizes = [10usize, 300, 5000, 20_000, 10, 10, 9000, 61, 1];
    for i in 0..300 {
        let value_bytes = sizes[i % sizes.len()];
        log.append(&batch(T0, 1 + i % 3, value_bytes), 0, T0)
            .unwrap();
    }
    let seg = log.segments.values().next().unwrap();
    let mut cursor = seg.header_cursor();
    let (mut pos, mut batches) = (0u64, 0);
    while pos < seg.size_bytes() {
        let b = cursor.header(pos).unwrap();
        assert_eq!(b, seg.header(pos).unwrap(), "batch at {pos}");
        pos += b.size;
        batches += 1;
    }
    assert_eq!((pos, batches), (seg.size_bytes(), 300));
    // Reads through the cursor return the same batches as before it existed.
    let all = log.read(0, usize::MAX, i64::MAX).unwrap();
    assert_eq!(split(&all).len(), 300);
    let some = log.read(17, 30_000, i64::MAX).unwrap();
    let got = split(&some);
    assert!(got[0].0 <= 17 && got[0].1 >= 17, "{got:?}");
    assert!(some.len() <= 30_000 || got.len() == 1);
}

/// Cost of walking small batches' headers, one read each against the read-ahead cursor:
/// `cargo test --release -p broker --lib header_walk_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn header_walk_cost() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 256 << 20,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(FileStorage::new(), tmp.path().join("p-0"), cfg, T0).unwrap();
    // 200,000 one-record batches of 100-byte values (a producer with linger.ms=0).
    let one = batch(T0, 1, 100);
    let mut req = Vec::new();
    for _ in 0..200_000 {
        req.extend_from_slice(&one);
        if req.len() > 64 << 10 {
            log.append(&req, 0, T0).unwrap();
            req.clear();
        }
    }
    log.append(&req, 0, T0).unwrap();
    let seg = log.segments.values().next().unwrap();
    let started = std::time::Instant::now();
    let mut pos = 0;
    while pos < seg.size_bytes() {
        pos += seg.header(pos).unwrap().size;
    }
    let single = started.elapsed();
    let started = std::time::Instant::now();
    let (mut cursor, mut pos) = (seg.header_cursor(), 0);
    while pos < seg.size_bytes() {
        pos += cursor.header(pos).unwrap().size;
    }
    let ahead = started.elapsed();
    let started = std::time::Instant::now();
    let mut offset = 0;
    while offset < log.log_end_offset() {
        let stored = log.read_stored(offset, 1 << 20, i64::MAX).unwrap();
        offset = split(&stored.to_bytes().unwrap()).last().unwrap().1 + 1;
    }
    println!(
        "200,000 batches, {} bytes: header per read {single:?}, read-ahead {ahead:?}; \
         1 MiB fetches of everything (incl. copying out) {:?}",
        seg.size_bytes(),
        started.elapsed()
    );
}
