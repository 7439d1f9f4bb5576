//! RaftStore tests over `MemStorage`: round trips, crashes after every kind of op and inside
//! compaction, torn tails, bit flips, disk full, a random-op proptest against a model, and three
//! `RaftCore`s running over stores with crashes.

use std::path::PathBuf;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::raft::{Committed, RaftConfig, RaftCore, Role};
use crate::storage::{MemStorage, TornWrite};

const DIR: &str = "/raft/node";

fn open(s: &MemStorage) -> (RaftStore<MemStorage>, Recovered) {
    RaftStore::open(s.clone(), PathBuf::from(DIR)).expect("open")
}

fn entry(offset: i64, epoch: i32, payload_bytes: usize) -> Entry {
    let mut p = format!("e{offset}-").into_bytes();
    p.resize(payload_bytes.max(p.len()), b'x');
    Entry {
        offset,
        epoch,
        payload: Bytes::from(p),
    }
}

fn entries(from: i64, to: i64, epoch: i32) -> Vec<Entry> {
    (from..to).map(|o| entry(o, epoch, 10)).collect()
}

fn qs(epoch: i32) -> QuorumState {
    QuorumState {
        epoch,
        voted_for: Some(2),
        leader: Some(3),
        rejoining: epoch % 2 == 0,
    }
}

fn snap(end_offset: i64, epoch: i32) -> Snapshot {
    Snapshot {
        id: SnapshotId { end_offset, epoch },
        data: Bytes::from(format!("state@{end_offset}")),
    }
}

/// What recovery returns, comparable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct State {
    qs: QuorumState,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
}

impl State {
    fn of(r: &Recovered) -> State {
        State {
            qs: r.quorum_state.clone(),
            snapshot: r.snapshot.clone(),
            entries: r.entries.clone(),
        }
    }

    fn snap_end(&self) -> i64 {
        self.snapshot.as_ref().map_or(0, |s| s.id.end_offset)
    }

    fn end(&self) -> i64 {
        self.snap_end() + self.entries.len() as i64
    }

    /// The states after `op` (one per entry of an Append), last one the state after it all.
    fn after(&self, op: &StorageOp) -> Vec<State> {
        let mut s = self.clone();
        let mut out = Vec::new();
        match op {
            StorageOp::PersistQuorumState(q) => s.qs = q.clone(),
            StorageOp::Append(es) => {
                for e in es {
                    s.entries.push(e.clone());
                    out.push(s.clone());
                }
                return out;
            }
            StorageOp::Truncate { end_offset } => s.entries.retain(|e| e.offset < *end_offset),
            StorageOp::WriteSnapshot(sn) => {
                s.entries.retain(|e| e.offset >= sn.id.end_offset);
                s.snapshot = Some(sn.clone());
            }
            StorageOp::InstallSnapshot(sn) => {
                s.entries.clear();
                s.snapshot = Some(sn.clone());
            }
            StorageOp::Sync { .. } => {}
        }
        out.push(s);
        out
    }
}

fn is_barrier(op: &StorageOp) -> bool {
    !matches!(op, StorageOp::Append(_) | StorageOp::Truncate { .. })
}

/// A store plus the states a crash may legally recover to.
struct Harness {
    storage: MemStorage,
    store: RaftStore<MemStorage>,
    /// Every state since the last barrier, the current one last.
    candidates: Vec<State>,
}

impl Harness {
    fn new() -> Harness {
        let storage = MemStorage::new();
        let (store, r) = open(&storage);
        assert_eq!(State::of(&r), State::default());
        Harness {
            storage,
            store,
            candidates: vec![State::default()],
        }
    }

    fn current(&self) -> &State {
        self.candidates.last().expect("never empty")
    }

    fn apply(&mut self, op: StorageOp) {
        let after = self.current().after(&op);
        let r = self.store.apply(&op).expect("apply");
        assert_eq!(
            r,
            match op {
                StorageOp::Sync { token } => Some(token),
                _ => None,
            }
        );
        if is_barrier(&op) {
            self.candidates = vec![after.last().cloned().expect("a state")];
        } else {
            self.candidates.extend(after);
        }
    }

    /// Crashes, reopens, and checks the recovered state is one the ops allow.
    fn crash(&mut self, torn: TornWrite) -> State {
        self.storage.crash(torn.clone());
        let (store, r) = open(&self.storage);
        let got = State::of(&r);
        assert!(
            self.candidates.contains(&got),
            "after {torn:?} recovered {got:?}, not one of {:#?}",
            self.candidates
        );
        self.store = store;
        self.check_files();
        self.candidates = vec![got.clone()];
        got
    }

    /// At rest: one log file, at most one snapshot file, nothing else but quorum state.
    fn check_files(&self) {
        let names = self.storage.list(Path::new(DIR)).unwrap();
        let logs = names.iter().filter(|n| n.starts_with("log-")).count();
        let snaps = names.iter().filter(|n| n.starts_with("snapshot-")).count();
        assert_eq!(logs, 1, "{names:?}");
        assert!(snaps <= 1, "{names:?}");
    }

    fn log_path(&self) -> PathBuf {
        PathBuf::from(DIR).join(log_name(self.store.log_start))
    }
}

#[test]
fn round_trip_and_clean_reopen() {
    let mut h = Harness::new();
    h.apply(StorageOp::PersistQuorumState(qs(1)));
    h.apply(StorageOp::Append(entries(0, 3, 1)));
    h.apply(StorageOp::Append(entries(3, 5, 1)));
    h.apply(StorageOp::Sync { token: 7 });
    let want = h.current().clone();
    assert_eq!(want.entries.len(), 5);
    // Reopen without a crash, then after one: the same state.
    let (_, r) = open(&h.storage);
    assert_eq!(State::of(&r), want);
    assert_eq!(h.crash(TornWrite::DropUnsynced), want);
    assert_eq!(h.store.log_end_offset(), 5);
    // Appending continues at the end.
    h.apply(StorageOp::Append(entries(5, 6, 1)));
    h.apply(StorageOp::Sync { token: 8 });
    assert_eq!(h.crash(TornWrite::DropUnsynced).entries.len(), 6);
}

#[test]
fn crash_after_each_kind_of_op() {
    let base = |h: &mut Harness| {
        h.apply(StorageOp::PersistQuorumState(qs(2)));
        h.apply(StorageOp::Append(entries(0, 6, 2)));
        h.apply(StorageOp::Sync { token: 1 });
    };
    let ops = [
        StorageOp::PersistQuorumState(qs(3)),
        StorageOp::Append(entries(6, 9, 2)),
        StorageOp::Truncate { end_offset: 4 },
        StorageOp::WriteSnapshot(snap(4, 2)),
        StorageOp::InstallSnapshot(snap(20, 2)),
        StorageOp::Sync { token: 2 },
    ];
    for op in ops {
        for torn in [
            TornWrite::DropUnsynced,
            TornWrite::KeepPrefix {
                sectors: 100,
                garbage: vec![],
            },
        ] {
            let mut h = Harness::new();
            base(&mut h);
            h.apply(op.clone());
            let all = torn != TornWrite::DropUnsynced;
            let got = h.crash(torn);
            // Barriers and truncates are durable at once; an unsynced append survives only if
            // the crash keeps its bytes.
            let survives = !matches!(op, StorageOp::Append(_)) || all;
            let full = h.current().clone();
            if survives {
                assert_eq!(got, full, "{op:?}");
            }
            // Whatever survived, the store keeps working.
            let end = h.store.log_end_offset();
            h.apply(StorageOp::Append(entries(
                end,
                end + 2,
                3.max(got.qs.epoch),
            )));
            h.apply(StorageOp::PersistQuorumState(qs(got.qs.epoch.max(3))));
            h.apply(StorageOp::Sync { token: 9 });
            h.crash(TornWrite::DropUnsynced);
        }
    }
}

#[test]
fn torn_tail_with_garbage_is_cut_and_appending_resumes() {
    for sectors in 0..4 {
        let mut h = Harness::new();
        h.apply(StorageOp::PersistQuorumState(qs(1)));
        h.apply(StorageOp::Append(vec![entry(0, 1, 100)]));
        h.apply(StorageOp::Sync { token: 1 });
        h.apply(StorageOp::Append(
            (1..8).map(|o| entry(o, 1, 300)).collect(),
        ));
        let got = h.crash(TornWrite::KeepPrefix {
            sectors,
            garbage: vec![0x5a; 200],
        });
        assert!(!got.entries.is_empty());
        let len = h.storage.contents(&h.log_path()).unwrap().len() as u64;
        assert_eq!(len, h.store.log_bytes, "torn tail truncated away");
        let end = h.store.log_end_offset();
        h.apply(StorageOp::Append(entries(end, end + 3, 1)));
        h.apply(StorageOp::Sync { token: 2 });
        assert_eq!(
            h.crash(TornWrite::DropUnsynced).entries.len() as i64,
            end + 3
        );
    }
}

#[test]
fn bit_flip_in_the_middle_stops_recovery_there() {
    for (pos_in_entry, what) in [
        (2usize, "length"),
        (5, "crc"),
        (12, "offset"),
        (25, "payload"),
    ] {
        let mut h = Harness::new();
        h.apply(StorageOp::PersistQuorumState(qs(1)));
        h.apply(StorageOp::Append(entries(0, 10, 1)));
        h.apply(StorageOp::Sync { token: 1 });
        let at = h.store.positions[4] + pos_in_entry as u64;
        h.storage.flip_bit(&h.log_path(), at, 3).unwrap();
        let (store, r) = open(&h.storage);
        assert_eq!(r.entries, entries(0, 4, 1), "flip in the {what}");
        assert_eq!(store.log_end_offset(), 4);
        h.store = store;
        h.candidates = vec![State::of(&r)];
        h.apply(StorageOp::Append(entries(4, 6, 1)));
        h.apply(StorageOp::Sync { token: 2 });
        assert_eq!(h.crash(TornWrite::DropUnsynced).entries.len(), 6);
    }
}

#[test]
fn quorum_state_generations_survive_corruption_of_the_newest() {
    let mut h = Harness::new();
    for e in 1..=5 {
        h.apply(StorageOp::PersistQuorumState(qs(e)));
    }
    assert_eq!(h.crash(TornWrite::DropUnsynced).qs, qs(5));
    // Seq 5 lives in quorum-state-1; corrupting it falls back to epoch 4.
    h.storage
        .flip_bit(&PathBuf::from(DIR).join("quorum-state-1"), 9, 0)
        .unwrap();
    let (mut store, r) = open(&h.storage);
    assert_eq!(r.quorum_state, qs(4));
    // The next write goes to the corrupt file's slot, not over epoch 4.
    store.apply(&StorageOp::PersistQuorumState(qs(6))).unwrap();
    let (_, r) = open(&h.storage);
    assert_eq!(r.quorum_state, qs(6));
}

#[test]
fn disk_full_fails_cleanly_and_the_store_stays_usable() {
    let mut h = Harness::new();
    h.apply(StorageOp::PersistQuorumState(qs(1)));
    h.apply(StorageOp::Append(entries(0, 4, 1)));
    h.apply(StorageOp::Sync { token: 1 });
    h.storage.set_disk_full(true);
    for op in [
        StorageOp::Append(entries(4, 6, 1)),
        StorageOp::PersistQuorumState(qs(2)),
        StorageOp::WriteSnapshot(snap(2, 1)),
        StorageOp::InstallSnapshot(snap(10, 1)),
    ] {
        let e = h.store.apply(&op).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28), "{op:?}");
        assert!(!h.store.broken, "{op:?} left the store broken");
    }
    h.storage.set_disk_full(false);
    assert_eq!(h.store.log_end_offset(), 4);
    let (_, r) = open(&h.storage);
    assert_eq!(
        State::of(&r),
        *h.current(),
        "failed ops changed nothing durable"
    );
    // The same ops now succeed.
    h.apply(StorageOp::Append(entries(4, 6, 1)));
    h.apply(StorageOp::PersistQuorumState(qs(2)));
    h.apply(StorageOp::WriteSnapshot(snap(2, 1)));
    h.apply(StorageOp::Sync { token: 2 });
    let got = h.crash(TornWrite::DropUnsynced);
    assert_eq!(got.entries, entries(2, 6, 1));
    assert_eq!(got.qs, qs(2));
}

#[test]
fn compaction_drops_old_entries_from_disk() {
    let mut h = Harness::new();
    h.apply(StorageOp::PersistQuorumState(qs(1)));
    let mut end = 0;
    for round in 1..=5 {
        h.apply(StorageOp::Append(entries(end, end + 20, 1)));
        end += 20;
        h.apply(StorageOp::WriteSnapshot(snap(end - 5, 1)));
        h.check_files();
        let bytes = h.storage.contents(&h.log_path()).unwrap().len();
        assert!(
            bytes < 5 * 40,
            "round {round}: {bytes} bytes kept for 5 entries"
        );
    }
    h.apply(StorageOp::InstallSnapshot(snap(500, 1)));
    h.check_files();
    assert_eq!(h.storage.contents(&h.log_path()).unwrap().len(), 0);
    h.apply(StorageOp::Append(entries(500, 502, 1)));
    h.apply(StorageOp::Sync { token: 1 });
    let got = h.crash(TornWrite::DropUnsynced);
    assert_eq!(got.snapshot, Some(snap(500, 1)));
    assert_eq!(got.entries, entries(500, 502, 1));
}

/// A crash at every step of a WriteSnapshot or InstallSnapshot recovers the state before or
/// after it.
#[test]
fn crash_inside_snapshot_ops_recovers_before_or_after() {
    for install in [false, true] {
        for step in 0..20 {
            for torn in [
                TornWrite::DropUnsynced,
                TornWrite::KeepPrefix {
                    sectors: 1,
                    garbage: vec![0xee; 100],
                },
            ] {
                let mut h = Harness::new();
                h.apply(StorageOp::PersistQuorumState(qs(1)));
                h.apply(StorageOp::Append(entries(0, 10, 1)));
                h.apply(StorageOp::WriteSnapshot(snap(3, 1)));
                h.apply(StorageOp::Append(entries(10, 14, 1)));
                let op = if install {
                    StorageOp::InstallSnapshot(snap(30, 1))
                } else {
                    StorageOp::WriteSnapshot(snap(8, 1))
                };
                let before = h.current().clone();
                let after = before.after(&op).pop().unwrap();
                h.store.fail_at_step = Some(step);
                match h.store.apply(&op) {
                    Ok(_) => {
                        assert!(step > 3, "too few steps");
                        h.candidates = vec![after.clone()];
                    }
                    Err(_) => {
                        assert!(h.store.broken);
                        // The op's barrier synced everything before it.
                        h.candidates = vec![before.clone(), after.clone()];
                    }
                }
                h.crash(torn);
                // And the store works afterwards.
                let end = h.store.log_end_offset();
                h.apply(StorageOp::Append(entries(end, end + 1, 1)));
                h.apply(StorageOp::Sync { token: 3 });
                h.crash(TornWrite::DropUnsynced);
            }
        }
    }
}

#[test]
fn corrupt_newest_snapshot_is_removed() {
    let mut h = Harness::new();
    h.apply(StorageOp::PersistQuorumState(qs(1)));
    h.apply(StorageOp::InstallSnapshot(snap(10, 1)));
    h.apply(StorageOp::Append(entries(10, 12, 1)));
    h.apply(StorageOp::Sync { token: 1 });
    let path = PathBuf::from(DIR).join(snapshot_name(SnapshotId {
        end_offset: 10,
        epoch: 1,
    }));
    h.storage.flip_bit(&path, 14, 1).unwrap();
    // The log does not reach back to offset 0 without it: refused, nothing removed.
    let e = RaftStore::open(h.storage.clone(), PathBuf::from(DIR))
        .err()
        .expect("refused");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(h.storage.exists(&path));
    assert_eq!(h.storage.list(Path::new(DIR)).unwrap().len(), 3);
}

#[test]
fn torn_newest_snapshot_falls_back_to_the_older_one() {
    let mut h = Harness::new();
    h.apply(StorageOp::PersistQuorumState(qs(1)));
    h.apply(StorageOp::Append(entries(0, 10, 1)));
    h.apply(StorageOp::WriteSnapshot(snap(4, 1)));
    h.apply(StorageOp::Sync { token: 1 });
    let want = h.current().clone();
    // A newer snapshot whose write was torn (as a crash during write_snapshot_file leaves it).
    let torn = PathBuf::from(DIR).join(snapshot_name(SnapshotId {
        end_offset: 8,
        epoch: 1,
    }));
    let f = h.storage.open(&torn).unwrap();
    f.append(&8i64.to_be_bytes()).unwrap();
    f.append(&[0, 0, 0, 1, 7, 7, 7]).unwrap();
    assert_eq!(h.crash(TornWrite::DropUnsynced), want);
    assert!(!h.storage.exists(&torn));
}

/// Entries with valid CRCs but a gap or a decreasing epoch end recovery there.
#[test]
fn a_gap_or_epoch_regression_stops_recovery() {
    for (bad, what) in [(entry(5, 1, 10), "gap"), (entry(3, 0, 10), "epoch")] {
        let mut h = Harness::new();
        h.apply(StorageOp::PersistQuorumState(qs(1)));
        h.apply(StorageOp::Append(entries(0, 3, 1)));
        h.apply(StorageOp::Sync { token: 1 });
        let mut buf = Vec::new();
        encode_entry(&bad, &mut buf);
        encode_entry(&entry(4, 1, 10), &mut buf);
        let f = h.storage.open(&h.log_path()).unwrap();
        f.append(&buf).unwrap();
        f.sync().unwrap();
        let got = h.crash(TornWrite::DropUnsynced);
        assert_eq!(got.entries, entries(0, 3, 1), "{what}");
        assert_eq!(
            h.storage.contents(&h.log_path()).unwrap().len() as u64,
            h.store.log_bytes
        );
    }
}

#[test]
fn ops_out_of_order_are_refused() {
    let mut h = Harness::new();
    h.apply(StorageOp::PersistQuorumState(qs(1)));
    h.apply(StorageOp::Append(entries(0, 3, 1)));
    assert!(h.store.apply(&StorageOp::Append(entries(5, 6, 1))).is_err());
    h.apply(StorageOp::WriteSnapshot(snap(2, 1)));
    assert!(h
        .store
        .apply(&StorageOp::Truncate { end_offset: 1 })
        .is_err());
    assert!(h
        .store
        .apply(&StorageOp::WriteSnapshot(snap(1, 1)))
        .is_err());
    assert!(!h.store.broken);
    h.apply(StorageOp::Sync { token: 1 });
    h.crash(TornWrite::DropUnsynced);
}

/// Turns random bytes into a valid op sequence for the current state.
fn op_for(h: &Harness, kind: u8, arg: u8) -> Option<StorageOp> {
    let cur = h.current();
    let (snap_end, end, len) = (cur.snap_end(), cur.end(), cur.entries.len() as i64);
    let epoch = cur.qs.epoch;
    Some(match kind % 8 {
        0 | 1 => StorageOp::Append(
            (end..end + 1 + i64::from(arg % 3))
                .map(|o| entry(o, epoch, usize::from(arg) * 3))
                .collect(),
        ),
        2 => StorageOp::Truncate {
            end_offset: snap_end + i64::from(arg) % (len + 1),
        },
        3 if len > 0 => {
            let at = snap_end + 1 + i64::from(arg) % len;
            let e = cur.entries[(at - 1 - snap_end) as usize].epoch;
            StorageOp::WriteSnapshot(snap(at, e))
        }
        4 => StorageOp::InstallSnapshot(snap(end.max(snap_end + 1) + i64::from(arg % 3), epoch)),
        5 => StorageOp::PersistQuorumState(QuorumState {
            epoch: epoch + i32::from(arg % 2),
            voted_for: match arg % 3 {
                0 => None,
                v => Some(i32::from(v)),
            },
            leader: (arg % 5 == 1).then_some(1),
            rejoining: arg % 7 == 3,
        }),
        6 => StorageOp::Sync {
            token: u64::from(arg),
        },
        _ => return None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// After every crash the recovered state is the state as of some op (or entry of an
    /// Append) at or after the last barrier or Sync.
    #[test]
    fn random_ops_and_crashes_recover_a_state_the_ops_allow(
        steps in prop::collection::vec((any::<u8>(), any::<u8>()), 1..60),
    ) {
        let mut h = Harness::new();
        h.apply(StorageOp::PersistQuorumState(qs(1)));
        for (kind, arg) in steps {
            match op_for(&h, kind, arg) {
                Some(op) => h.apply(op),
                None => {
                    let torn = if arg % 2 == 0 {
                        TornWrite::DropUnsynced
                    } else {
                        TornWrite::KeepPrefix {
                            sectors: u64::from(arg % 4),
                            garbage: vec![arg; usize::from(arg) * 3],
                        }
                    };
                    h.crash(torn);
                }
            }
        }
        h.apply(StorageOp::Sync { token: 0 });
        let want = h.current().clone();
        prop_assert_eq!(h.crash(TornWrite::DropUnsynced), want);
    }
}

/// The same scheme over the real file system.
#[test]
fn file_storage_round_trip_with_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let fs = crate::storage::FileStorage::new();
    let (mut store, r) = RaftStore::open(fs, dir.clone()).unwrap();
    assert_eq!(State::of(&r), State::default());
    let mut model = State::default();
    let ops = [
        StorageOp::PersistQuorumState(qs(1)),
        StorageOp::Append(entries(0, 10, 1)),
        StorageOp::Truncate { end_offset: 8 },
        StorageOp::WriteSnapshot(snap(5, 1)),
        StorageOp::Append(entries(8, 12, 1)),
        StorageOp::PersistQuorumState(qs(2)),
        StorageOp::Sync { token: 1 },
    ];
    for op in &ops {
        store.apply(op).unwrap();
        model = model.after(op).pop().unwrap();
    }
    drop(store);
    let (mut store, r) = RaftStore::open(fs, dir.clone()).unwrap();
    assert_eq!(State::of(&r), model);
    let mut names = fs.list(&dir).unwrap();
    names.sort();
    assert_eq!(
        names,
        [
            "log-00000000000000000005",
            "quorum-state-0",
            "quorum-state-1",
            "snapshot-00000000000000000005-0000000001"
        ]
    );
    let op = StorageOp::InstallSnapshot(snap(40, 2));
    store.apply(&op).unwrap();
    model = model.after(&op).pop().unwrap();
    drop(store);
    let (_, r) = RaftStore::open(fs, dir.clone()).unwrap();
    assert_eq!(State::of(&r), model);
    assert!(fs.exists(&dir.join("log-00000000000000000040")));
}

// ---- three cores over stores ----

struct Node {
    cfg: RaftConfig,
    storage: MemStorage,
    store: RaftStore<MemStorage>,
    core: RaftCore,
    /// The state machine: every committed payload, in offset order.
    applied: Vec<Bytes>,
}

fn encode_state(applied: &[Bytes]) -> Bytes {
    let mut out = Vec::new();
    for p in applied {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    Bytes::from(out)
}

fn decode_state(mut b: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        out.push(Bytes::copy_from_slice(&b[4..4 + n]));
        b = &b[4 + n..];
    }
    out
}

impl Node {
    fn start(cfg: RaftConfig, storage: MemStorage, now: u64) -> Node {
        let (store, recovered) = open(&storage);
        let core = RaftCore::new(cfg.clone(), recovered, now);
        Node {
            cfg,
            storage,
            store,
            core,
            applied: Vec::new(),
        }
    }

    fn crash_and_restart(&mut self, torn: TornWrite, now: u64) {
        self.storage.crash(torn);
        *self = Node::start(self.cfg.clone(), self.storage.clone(), now);
    }

    /// Performs storage ops, applies committed entries, snapshots when hinted.
    fn work(&mut self, now: u64) -> bool {
        let mut progressed = false;
        while let Some(op) = self.core.poll_storage() {
            progressed = true;
            if let Some(token) = self.store.apply(&op).expect("store op") {
                self.core.synced(now, token);
            }
        }
        while let Some(c) = self.core.committed(self.applied.len() as i64, 100) {
            progressed = true;
            match c {
                Committed::Snapshot(s) => self.applied = decode_state(&s.data),
                Committed::Entries(es) => {
                    for e in es {
                        assert_eq!(e.offset, self.applied.len() as i64);
                        self.applied.push(e.payload);
                    }
                }
            }
        }
        if let Some(at) = self.core.snapshot_hint() {
            let at = at.min(self.applied.len() as i64);
            if at > self.core.log_start_offset() {
                let data = encode_state(&self.applied[..at as usize]);
                self.core.create_snapshot(now, at, data);
                progressed = true;
            }
        }
        progressed
    }
}

struct Cluster {
    nodes: Vec<Node>,
    now: u64,
}

impl Cluster {
    fn new(seed: u64) -> Cluster {
        let voters = vec![1, 2, 3];
        let nodes = voters
            .iter()
            .map(|&id| {
                let mut c = RaftConfig::new(id, voters.clone(), seed);
                c.election_timeout_ms = 100;
                c.election_jitter_ms = 100;
                c.fetch_timeout_ms = 200;
                c.fetch_backoff_ms = 5;
                c.request_timeout_ms = 50;
                c.max_fetch_entries = 3;
                c.max_log_entries = 6;
                c.snapshot_chunk_bytes = 16;
                Node::start(c, MemStorage::new(), 0)
            })
            .collect();
        Cluster { nodes, now: 0 }
    }

    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut progressed = false;
            for i in 0..self.nodes.len() {
                progressed |= self.nodes[i].work(self.now);
                while let Some(env) = self.nodes[i].core.poll_message() {
                    progressed = true;
                    let to = (env.to - 1) as usize;
                    self.nodes[to].core.step(self.now, env);
                }
            }
            if !progressed {
                return;
            }
        }
        panic!("cluster did not settle");
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += 1;
            for n in self.nodes.iter_mut() {
                if n.core.poll_timeout() <= self.now {
                    n.core.tick(self.now);
                }
            }
            self.settle();
        }
    }

    fn leader(&self) -> usize {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].core.role() == Role::Leader)
            .max_by_key(|&i| self.nodes[i].core.epoch())
            .expect("a leader")
    }

    /// Proposes `n` payloads through the leader and runs until they are committed everywhere.
    fn propose(&mut self, tag: &str, n: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        for k in 0..n {
            let l = self.leader();
            let p = Bytes::from(format!("{tag}-{k}"));
            self.nodes[l]
                .core
                .propose(self.now, p.clone())
                .expect("proposal");
            out.push(p);
            self.run(20);
        }
        self.run(500);
        out
    }

    /// Every node applied the same sequence, containing `payloads` in order.
    fn check(&self, payloads: &[Bytes]) {
        let first = &self.nodes[0].applied;
        for n in &self.nodes {
            assert_eq!(&n.applied, first, "node {} diverges", n.cfg.node_id);
        }
        let mut it = first.iter();
        for p in payloads {
            assert!(it.any(|a| a == p), "{p:?} lost");
        }
    }
}

#[test]
fn three_cores_over_stores_keep_committed_entries_through_crashes() {
    for seed in [11, 12, 13, 14] {
        three_cores_through_crashes(seed);
    }
}

fn three_cores_through_crashes(seed: u64) {
    let mut c = Cluster::new(seed);
    c.run(1000);
    let mut proposed = c.propose("a", 8);
    c.check(&proposed);

    // A follower crashes with a torn tail.
    let l = c.leader();
    let f = (l + 1) % 3;
    let now = c.now;
    c.nodes[f].crash_and_restart(
        TornWrite::KeepPrefix {
            sectors: 0,
            garbage: vec![0xab; 40],
        },
        now,
    );
    c.run(1000);
    proposed.extend(c.propose("b", 8));
    c.check(&proposed);

    // The leader crashes, dropping whatever it had not synced.
    let l = c.leader();
    let now = c.now;
    c.nodes[l].crash_and_restart(TornWrite::DropUnsynced, now);
    c.run(2000);
    proposed.extend(c.propose("c", 8));
    c.check(&proposed);

    // Everybody crashes at once.
    for i in 0..3 {
        let now = c.now;
        c.nodes[i].crash_and_restart(TornWrite::DropUnsynced, now);
    }
    c.run(2000);
    proposed.extend(c.propose("d", 3));
    c.check(&proposed);
    // Snapshots happened and compacted the logs.
    for n in &c.nodes {
        assert!(
            n.core.log_start_offset() > 0,
            "node {} never snapshotted",
            n.cfg.node_id
        );
    }
}
