//! A stateright model of partition replication: one partition on three replicas, its leader
//! and ISR decided by a controller, followers that fetch from the leader and truncate a
//! diverging suffix, a high watermark from the ISR's durable log ends, eligible leader replicas
//! (KIP-966), fencing, crashes that lose the unsynced suffix, disks replaced by empty ones,
//! an operator's reassignments (KIP-455) and changes of min.insync.replicas. It follows the
//! rules of `PartitionCore` and the `Controller` (the broker crate), reduced to their
//! decisions:
//!
//! * The controller is one atomic state (the metadata log is always available). A node learns
//!   its latest state at any later point (a metadata fetch); learning an older state late is
//!   covered, since a node acts on nothing between two of its own steps.
//! * A fetch is answered at once, and the answer is taken at once or lost: a late answer is
//!   one taken at once by a follower that then waits, since a leader never takes back what it
//!   sent within its epoch. Followers sync what they append before they fetch again.
//! * AlterPartition requests and their refusals travel over a network that is the set of every
//!   message ever sent: any may be delivered again, late, or never (stronger than the broker's
//!   transport, which delivers a request at most once). Messages that can no longer change
//!   anything are dropped, and request ids renamed, so that equal situations are one state.
//! * A leader shrinks its ISR whenever it likes (lag is a timer, and any timing is possible),
//!   expands it with a follower whose durable log end reached the high watermark and the
//!   epoch's start, and asks for a pending expansion again as it knows the partition now.
//! * Logs hold entry ids; a ghost table gives each id's leader epoch, so two entries written
//!   in the same epoch at the same offset are still told apart.
//!
//! * min.insync.replicas is part of the image, so a leader applies a new value with the image
//!   that carries it, never before or after the ISR that image names. The controller drops a
//!   partition's ELR in the same batch as a change its ISR now satisfies.
//! * A reassignment may be replaced by another or cancelled at any time. The controller hears
//!   a broker's registered process (its metadata fetch) at any time while one is in
//!   progress; a disk is replaced only while another copy the partition keeps holds every
//!   committed entry, and the broker then registers a new directory, which takes it out of
//!   the ISR and ELR.
//!
//! Properties: every member of the controller's ISR and ELR holds every committed entry
//! durably (so any leader it elects has them), with at least one such member left once
//! anything is committed (a member on a replaced disk counts once it has registered again),
//! and every replica's log below its high watermark is a prefix of the committed entries
//! (consumers read nothing else).
//!
//! Three planted variants are rules the broker had until this model refuted them:
//! `ap_checks_isr` (the controller told a stale AlterPartition by the ISR it names rather than
//! the partition epoch, so a late copy applied after the ISR changed and changed back),
//! `refusal_ignores_ask` (a refusal freed the leader whichever copy of the request it
//! answered) and `refusal_keeps_epoch` (refusing an expansion of a fenced broker left the
//! partition epoch, so another copy applied once the broker was back). The others each undo a
//! rule the broker has: the high watermark's wait for a pending expansion and for
//! min.insync.replicas, the new epoch of a restarted leader, the epoch-start condition for
//! joining, and elections from the ISR or ELR only. Two more are reassignment rules the
//! replication sim found the broker without: `reassign_drops_in_sync` (a new target dropped
//! in-sync replicas the replaced move was adding; seed 10,200,352) and `reassign_trusts_isr`
//! (a move completed on the ISR alone, before hearing from the targets; seed 9,731,376).
//! `min_isr_after_isr` applies an image's ISR under the minimum the leader knew before, then
//! the image's: with a raised minimum, the shrink that put a replica in the ELR lets the
//! high watermark pass it. (The broker applies the stricter of the two while the ISR changes.)

use std::collections::BTreeSet;

use stateright::{Model, Property};

/// What the controller decided for the partition: the metadata image's part a node reads.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Image {
    pub leader: Option<u8>,
    pub epoch: u8,
    /// Bumped by every change of the partition (also the image's version).
    pub pepoch: u8,
    /// A bit per replica.
    pub isr: u8,
    pub elr: u8,
    pub fenced: u8,
    /// The partition's replicas (a reassignment's target and the replicas it removes), and
    /// those a reassignment adds and removes (KIP-455).
    pub replicas: u8,
    pub adding: u8,
    pub removing: u8,
    /// The topic's min.insync.replicas, a config record in the same metadata log.
    pub min_isr: u8,
}

impl Image {
    /// The min.insync.replicas in force for a partition of `replicas` (at most the replica
    /// count), as the controller and a leader holding this image apply it.
    fn min_isr_for(&self, replicas: u8) -> usize {
        usize::from(self.min_isr).min(count(replicas))
    }

    fn reassigning(&self) -> bool {
        self.adding | self.removing != 0
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Not a replica the image names, or no leader.
    None,
    Follower {
        leader: u8,
        epoch: u8,
    },
    Leader {
        epoch: u8,
        pepoch: u8,
        /// The ISR the image showed.
        isr: u8,
        /// An AlterPartition sent and not yet seen in an image: its new ISR, and which of this
        /// leadership's requests asked it last.
        pending: Option<(u8, u8)>,
        /// The id of this leadership's next AlterPartition (ids are renumbered so that this
        /// is also how many may still matter).
        sends: u8,
        /// Per replica: the durable end its fetches in this epoch reported.
        durable_ends: Vec<Option<u8>>,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    /// Entry ids (see `State::entry_epoch`).
    pub log: Vec<u8>,
    /// How much of `log` survives a crash.
    pub durable: u8,
    /// The leader-epoch cache: (epoch, start offset), both increasing.
    pub cache: Vec<(u8, u8)>,
    pub hw: u8,
    /// The image applied last (None after a restart).
    pub image: Option<Image>,
    pub role: Role,
    /// Crashed and not yet registered again: it does nothing.
    pub down: bool,
    /// Down with an empty disk: its registration will name a new directory.
    pub wiped: bool,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum FetchAnswer {
    /// The follower truncates to at most `end` (Kafka's DivergingEpoch; `None`: undefined).
    Diverging { epoch: Option<u8>, end: Option<u8> },
    /// The leader's log from the fetch offset on, and its high watermark.
    Read { hw: u8 },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Msg {
    AlterPartition {
        from: u8,
        epoch: u8,
        pepoch: u8,
        /// The request's id in its leadership (the broker's is when it was sent).
        send: u8,
        current: u8,
        new: u8,
    },
    /// The controller refused an AlterPartition for good (a member it adds is fenced).
    Refused {
        to: u8,
        epoch: u8,
        send: u8,
        new: u8,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct State {
    pub ctl: Image,
    pub nodes: Vec<Node>,
    pub net: BTreeSet<Msg>,
    /// Ghost: each entry id's leader epoch.
    pub entry_epoch: Vec<u8>,
    /// Ghost: the longest prefix a leader's high watermark ever passed.
    pub acked: Vec<u8>,
    /// Ghost: a leader's high watermark passed a prefix that disagrees with `acked`.
    pub conflict: bool,
    pub fences: u8,
    pub crashes: u8,
    pub wipes: u8,
    pub reassigns: u8,
    pub min_isr_changes: u8,
    /// The controller heard each broker's registered process (its metadata fetch) since the
    /// reassignment in progress began.
    pub heard: u8,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Action {
    Produce(u8),
    Sync(u8),
    /// A follower fetches and the leader answers at once; `true`: the answer is lost.
    Fetch(u8, bool),
    /// The node reads the controller's latest image.
    Learn(u8),
    /// The leader asks for this ISR.
    AlterIsr(u8, u8),
    /// The leader gives up a pending shrink (it asks afresh after the retry interval).
    DropPendingShrink(u8),
    /// The leader asks for its pending expansion again, as the ISR and partition epoch it
    /// knows now (the retry after the interval).
    ResendExpansion(u8),
    /// The controller stops hearing the broker and fences it.
    Fence(u8),
    /// The controller hears the broker again.
    Unfence(u8),
    /// The node loses what it had not synced and stops until it registers again.
    Crash(u8),
    Register(u8),
    /// The node's disk is replaced by an empty one; it stops until it registers again.
    Wipe(u8),
    /// The controller hears the broker's registered process fetch the metadata log.
    Heard(u8),
    /// An operator moves the partition to these replicas (`None`: cancels the move).
    Reassign(Option<u8>),
    /// The controller completes the reassignment in progress.
    CompleteReassignment,
    /// An operator sets the topic's min.insync.replicas.
    SetMinIsr(u8),
    Deliver(Msg),
}

#[derive(Clone, Debug)]
pub struct ReplicationModel {
    pub replicas: u8,
    /// min.insync.replicas at the start.
    pub min_isr: u8,
    /// Changes of min.insync.replicas an operator makes in all.
    pub min_isr_changes_max: u8,
    /// Planted: a leader applies a new ISR under the min.insync.replicas it knew before, and
    /// only then the image's (the broker applies the stricter of the two first).
    pub min_isr_after_isr: bool,
    /// Entries produced in all.
    pub entries_max: u8,
    /// Partition changes in all (the controller's and the leaders' together).
    pub changes_max: u8,
    pub fences_max: u8,
    pub crashes_max: u8,
    pub wipes_max: u8,
    pub reassigns_max: u8,
    /// The partition's replicas at the start (a bit each).
    pub start_replicas: u8,
    /// Entries every start replica holds durably, committed, at the start (of `entries_max`).
    pub start_entries: u8,
    /// A fetch's answer may be lost.
    pub fetch_loss: bool,
    /// Planted: a new target or a cancellation drops the ISR and ELR members it leaves out at
    /// once (Kafka's rule for replicas the replaced move was adding; the broker's before
    /// replication sim seed 10,200,352).
    pub reassign_drops_in_sync: bool,
    /// Planted: a reassignment completes, or drops replicas, on the ISR alone, without
    /// hearing from the registered processes (the broker's before sim seed 9,731,376).
    pub reassign_trusts_isr: bool,
    /// The controller accepts an AlterPartition whose current ISR matches, whatever happened
    /// since (the broker's check before partition epochs).
    pub ap_checks_isr: bool,
    /// Planted: the high watermark counts only the committed ISR, not a pending expansion.
    pub hw_ignores_pending: bool,
    /// Planted: the high watermark moves while the ISR is below min.insync.replicas.
    pub hw_below_min_isr: bool,
    /// Planted: a leader that restarts keeps its leader epoch.
    pub restart_keeps_epoch: bool,
    /// Planted: a leader asks a follower into the ISR once it reaches the high watermark,
    /// before it reaches the leader epoch's start.
    pub join_before_epoch_start: bool,
    /// Planted: the controller elects any unfenced replica when the ISR and ELR cannot lead.
    pub elect_any: bool,
    /// AlterPartition requests of a leader that may still matter at once (a bound on the
    /// state space).
    pub sends_max: u8,
    /// A refusal clears a pending change with the same new ISR, whichever request it answers
    /// (the broker's rule before this model).
    pub refusal_ignores_ask: bool,
    /// The controller refuses an expansion that adds a fenced broker without moving the
    /// partition epoch (the broker's rule before this model).
    pub refusal_keeps_epoch: bool,
}

impl Default for ReplicationModel {
    fn default() -> Self {
        ReplicationModel {
            replicas: 3,
            min_isr: 2,
            min_isr_changes_max: 0,
            min_isr_after_isr: false,
            entries_max: 2,
            changes_max: 4,
            fences_max: 1,
            crashes_max: 1,
            wipes_max: 0,
            reassigns_max: 0,
            start_replicas: 0b111,
            start_entries: 0,
            fetch_loss: true,
            reassign_drops_in_sync: false,
            reassign_trusts_isr: false,
            ap_checks_isr: false,
            hw_ignores_pending: false,
            hw_below_min_isr: false,
            restart_keeps_epoch: false,
            join_before_epoch_start: false,
            elect_any: false,
            sends_max: 2,
            refusal_ignores_ask: false,
            refusal_keeps_epoch: false,
        }
    }
}

fn bit(n: u8) -> u8 {
    1 << n
}

fn has(mask: u8, n: u8) -> bool {
    mask & bit(n) != 0
}

fn count(mask: u8) -> usize {
    mask.count_ones() as usize
}

fn is_prefix(a: &[u8], b: &[u8]) -> bool {
    a.len() <= b.len() && b[..a.len()] == *a
}

/// Kafka's `LeaderEpochFileCache.assign`: a newer epoch starting at `start` (replacing a
/// latest epoch that starts there too, which holds no entries).
fn assign(cache: &mut Vec<(u8, u8)>, epoch: u8, start: u8) {
    if cache.last().is_some_and(|&(e, _)| epoch <= e) {
        return;
    }
    if cache.last().is_some_and(|&(_, s)| s == start) {
        cache.pop();
    }
    cache.push((epoch, start));
}

/// Kafka's `endOffsetFor`: (epoch, end offset) for a follower whose latest epoch is
/// `requested`; `None` with an empty cache (no check). `(None, None)` is undefined.
fn end_offset_for(cache: &[(u8, u8)], len: u8, requested: u8) -> Option<(Option<u8>, Option<u8>)> {
    let &(latest, _) = cache.last()?;
    if requested == latest {
        return Some((Some(latest), Some(len)));
    }
    let Some(&(_, higher_start)) = cache.iter().find(|(e, _)| *e > requested) else {
        return Some((None, None));
    };
    match cache.iter().rev().find(|(e, _)| *e <= requested) {
        Some(&(floor, _)) => Some((Some(floor), Some(higher_start))),
        None => Some((Some(requested), Some(higher_start))),
    }
}

impl ReplicationModel {
    /// The default model with these bounds.
    pub fn bounded(entries_max: u8, changes_max: u8, fences_max: u8, crashes_max: u8) -> Self {
        ReplicationModel {
            entries_max,
            changes_max,
            fences_max,
            crashes_max,
            ..ReplicationModel::default()
        }
    }

    fn all(&self) -> u8 {
        (1 << self.replicas) - 1
    }

    /// Raises the leader's high watermark to what its maximal ISR holds durably.
    fn advance_hw(&self, s: &mut State, i: usize) {
        let n = &s.nodes[i];
        let Role::Leader {
            isr,
            pending,
            durable_ends,
            ..
        } = &n.role
        else {
            return;
        };
        // A leader always holds the image that made it one.
        let Some(img) = n.image else {
            return;
        };
        if count(*isr) < img.min_isr_for(img.replicas) && !self.hw_below_min_isr {
            return;
        }
        let counted = if self.hw_ignores_pending {
            *isr
        } else {
            *isr | pending.map_or(0, |(p, _)| p)
        };
        let mut hw = n.durable;
        for m in 0..self.replicas {
            if m as usize != i && has(counted, m) {
                match durable_ends[m as usize] {
                    Some(d) => hw = hw.min(d),
                    None => return,
                }
            }
        }
        if hw <= n.hw {
            return;
        }
        let prefix = n.log[..hw as usize].to_vec();
        s.nodes[i].hw = hw;
        if is_prefix(&s.acked, &prefix) {
            s.acked = prefix;
        } else if !is_prefix(&prefix, &s.acked) {
            s.conflict = true;
        }
    }

    /// The ELR a partition gets when its ISR becomes `isr` (the controller's `next_elr`).
    fn next_elr(&self, old: &Image, isr: u8) -> u8 {
        if count(isr) >= old.min_isr_for(old.replicas) {
            return 0;
        }
        (old.isr | old.elr) & !isr
    }

    /// Commits a partition change: the ELR follows, the partition epoch moves.
    fn change(&self, s: &mut State, leader: Option<u8>, epoch: u8, isr: u8) {
        let old = s.ctl;
        s.ctl.elr = self.next_elr(&old, isr);
        s.ctl.leader = leader;
        s.ctl.epoch = epoch;
        s.ctl.isr = isr;
        s.ctl.pepoch += 1;
    }

    /// The controller's topic config change (`recheck_elr`): min.insync.replicas becomes `v`,
    /// and a partition whose ISR now reaches it drops its ELR in the same batch. `false`: no
    /// change, or the ELR change is past the bound.
    fn set_min_isr(&self, s: &mut State, v: u8) -> bool {
        if v == s.ctl.min_isr {
            return false;
        }
        s.ctl.min_isr = v;
        let c = s.ctl;
        if c.elr != 0 && count(c.isr) >= c.min_isr_for(c.replicas) {
            if !self.can_change(s) {
                return false;
            }
            self.change(s, c.leader, c.epoch, c.isr);
            debug_assert_eq!(s.ctl.elr, 0);
        }
        s.min_isr_changes += 1;
        true
    }

    fn can_change(&self, s: &State) -> bool {
        s.ctl.pepoch < self.changes_max
    }

    /// The controller's `reconcile_one` after a broker was fenced, unfenced or registered.
    fn reconcile(&self, s: &mut State) {
        let c = s.ctl;
        let usable = |n: u8| !has(c.fenced, n);
        let unfenced_isr = |keep: u8| (c.isr & !c.fenced) | bit(keep);
        let elect = |pool: u8| {
            let pool = pool & c.replicas;
            (0..self.replicas).find(|&r| Some(r) != c.leader && has(pool, r) && usable(r))
        };
        if let Some(l) = c.leader.filter(|&l| usable(l)) {
            let isr = unfenced_isr(l);
            if isr != c.isr {
                self.change(s, Some(l), c.epoch, isr);
            }
        } else if let Some(r) = elect(c.isr).or_else(|| elect(c.elr)) {
            self.change(s, Some(r), c.epoch + 1, unfenced_isr(r));
        } else if let Some(r) = elect(self.all()).filter(|_| self.elect_any) {
            self.change(s, Some(r), c.epoch + 1, unfenced_isr(r));
        } else if c.leader.is_some() {
            self.change(s, None, c.epoch + 1, c.isr);
        }
    }

    /// The node applies the controller's image (`Partition::set_role`).
    fn learn(&self, s: &mut State, i: usize) {
        let img = s.ctl;
        let me = i as u8;
        let n = &mut s.nodes[i];
        let known_min_isr = n.image.map(|old| old.min_isr);
        n.image = Some(img);
        match img.leader {
            Some(l) if l == me => {
                if let Role::Leader {
                    epoch,
                    pepoch,
                    isr,
                    pending,
                    ..
                } = &mut n.role
                {
                    if *epoch == img.epoch {
                        if pending.is_some_and(|(p, _)| p == img.isr) || *isr != img.isr {
                            *pending = None;
                        }
                        *isr = img.isr;
                        *pepoch = img.pepoch;
                        if let Some(known) = known_min_isr.filter(|_| self.min_isr_after_isr) {
                            let before = Image {
                                min_isr: known,
                                ..img
                            };
                            s.nodes[i].image = Some(before);
                            self.advance_hw(s, i);
                            s.nodes[i].image = Some(img);
                        }
                        self.advance_hw(s, i);
                        return;
                    }
                }
                let len = n.log.len() as u8;
                assign(&mut n.cache, img.epoch, len);
                n.role = Role::Leader {
                    epoch: img.epoch,
                    pepoch: img.pepoch,
                    isr: img.isr,
                    pending: None,
                    sends: 0,
                    durable_ends: vec![None; self.replicas as usize],
                };
                self.advance_hw(s, i);
            }
            Some(l) if has(img.replicas, me) => {
                n.role = Role::Follower {
                    leader: l,
                    epoch: img.epoch,
                }
            }
            _ if has(img.replicas, me) => n.role = Role::None,
            // Removed by a reassignment: it deletes its copy (`drop_removed_replica`).
            _ => {
                n.role = Role::None;
                Self::truncate(n, 0);
            }
        }
    }

    /// Whether a member of the ISR or ELR other than `i`, not itself wiped and not being
    /// removed, holds every committed entry durably: the sims replace a disk only then, as
    /// losing the last copy is no finding. (A move onto `i` alone may complete just before
    /// its disk is replaced, however recently the controller heard from it.)
    fn another_copy(&self, s: &State, i: u8) -> bool {
        let target = s.ctl.replicas & !s.ctl.removing;
        (0..self.replicas).any(|r| {
            let n = &s.nodes[r as usize];
            r != i
                && has(s.ctl.isr | s.ctl.elr, r)
                && has(target, r)
                && !n.wiped
                && is_prefix(&s.acked, &n.log[..n.durable as usize])
        })
    }

    /// The controller's `reassign`: moves the partition to `target` from its original
    /// replicas, or cancels the move in progress (`None`). ISR and ELR members it leaves out
    /// stay, being removed, until the new target is in sync. Replicas it drops need an
    /// in-sync replica that stays to have been heard from. `false`: refused or no change.
    fn reassign(&self, s: &mut State, target: Option<u8>) -> bool {
        let c = s.ctl;
        let original = c.replicas & !c.adding;
        let (mut replicas, adding, mut removing) = match target {
            None if !c.reassigning() => return false,
            None => (original, 0, 0),
            Some(t) => (t | original, t & !original, original & !t),
        };
        if !self.reassign_drops_in_sync {
            let keep = c.replicas & !replicas & (c.isr | c.elr);
            replicas |= keep;
            removing |= keep;
        }
        if (replicas, adding, removing) == (c.replicas, c.adding, c.removing) {
            return false;
        }
        let drops = c.replicas & !replicas != 0;
        if drops && !self.reassign_trusts_isr && c.isr & replicas & s.heard == 0 {
            return false;
        }
        self.move_to(s, replicas, adding, removing)
    }

    /// The controller's `complete_reassignments`: once every target replica is in the ISR and
    /// heard from since the move began, the replicas become the target.
    fn complete_reassignment(&self, s: &mut State) -> bool {
        let c = s.ctl;
        let target = c.replicas & !c.removing;
        let heard = self.reassign_trusts_isr || target & !s.heard == 0;
        if !c.reassigning() || target & !c.isr != 0 || !heard {
            return false;
        }
        self.move_to(s, target, 0, 0)
    }

    /// The controller's `reassign_to`: the ISR and ELR cut to `replicas`, the leader kept if
    /// it stays or else the first in-sync, unfenced one, a new leader epoch when a replica
    /// leaves or the leader changes. `false` when no in-sync replica is left to lead.
    fn move_to(&self, s: &mut State, replicas: u8, adding: u8, removing: u8) -> bool {
        let c = s.ctl;
        let isr = c.isr & replicas;
        if isr == 0 {
            return false;
        }
        let leader = match c.leader {
            Some(l) if !has(replicas, l) => {
                let first = (0..self.replicas).find(|&r| has(isr, r) && !has(c.fenced, r));
                let Some(r) = first else {
                    return false;
                };
                Some(r)
            }
            l => l,
        };
        let dropped = c.replicas & !replicas != 0;
        let epoch = c.epoch + u8::from(dropped || leader != c.leader);
        let mut elr = self.next_elr(&c, isr) & replicas;
        if count(isr) >= c.min_isr_for(replicas) {
            elr = 0;
        }
        s.ctl = Image {
            leader,
            epoch,
            pepoch: c.pepoch + 1,
            isr,
            elr,
            fenced: c.fenced,
            replicas,
            adding,
            removing,
            min_isr: c.min_isr,
        };
        // A new move begins, or none is in progress: nobody heard since.
        s.heard = 0;
        true
    }

    /// A broker's registration names a new directory (`forget_replicas_of`): it leaves the
    /// ISR and ELR, stops leading, and the partition moves to a new leader epoch.
    fn forget_replica(s: &mut State, i: u8) {
        let c = &mut s.ctl;
        if !has(c.replicas, i) {
            return;
        }
        c.isr &= !bit(i);
        c.elr &= !bit(i);
        if c.leader == Some(i) {
            c.leader = None;
        }
        c.epoch += 1;
        c.pepoch += 1;
    }

    fn truncate(n: &mut Node, to: u8) {
        n.log.truncate(to as usize);
        n.durable = n.durable.min(to);
        n.hw = n.hw.min(to);
        n.cache.retain(|&(_, start)| start < to);
    }

    /// Renames each leader's live request ids (its pending one's and those in messages) to
    /// 0, 1, ... in order, and its next id to their count: only which ids are equal matters,
    /// so states that differ only in the names are one.
    fn renumber_sends(&self, s: &mut State) {
        for i in 0..self.replicas {
            let Role::Leader { epoch, pending, .. } = &s.nodes[i as usize].role else {
                continue;
            };
            let epoch = *epoch;
            let mut ids: BTreeSet<u8> = pending.iter().map(|&(_, id)| id).collect();
            for m in &s.net {
                match *m {
                    Msg::AlterPartition {
                        from,
                        epoch: e,
                        send,
                        ..
                    } if from == i && e == epoch => {
                        ids.insert(send);
                    }
                    Msg::Refused {
                        to, epoch: e, send, ..
                    } if to == i && e == epoch => {
                        ids.insert(send);
                    }
                    _ => {}
                }
            }
            let rename = |id: u8| ids.iter().position(|&x| x == id).unwrap_or(0) as u8;
            let net = std::mem::take(&mut s.net);
            s.net = net
                .into_iter()
                .map(|m| match m {
                    Msg::AlterPartition {
                        from,
                        epoch: e,
                        pepoch,
                        send,
                        current,
                        new,
                    } if from == i && e == epoch => Msg::AlterPartition {
                        from,
                        epoch: e,
                        pepoch,
                        send: rename(send),
                        current,
                        new,
                    },
                    Msg::Refused {
                        to,
                        epoch: e,
                        send,
                        new,
                    } if to == i && e == epoch => Msg::Refused {
                        to,
                        epoch: e,
                        send: rename(send),
                        new,
                    },
                    m => m,
                })
                .collect();
            if let Role::Leader { pending, sends, .. } = &mut s.nodes[i as usize].role {
                if let Some((_, id)) = pending {
                    *id = rename(*id);
                }
                *sends = ids.len() as u8;
            }
        }
    }

    /// Drops messages whose delivery can change nothing any more, so that states differing
    /// only in them are one: an AlterPartition the controller must refuse as stale (its
    /// partition epoch, or under `ap_checks_isr` its leader epoch, has passed) and a refusal
    /// its leader's epoch has passed.
    fn forget_dead_messages(&self, s: &mut State) {
        let (ctl, nodes) = (s.ctl, &s.nodes);
        s.net.retain(|m| match *m {
            Msg::AlterPartition { epoch, pepoch, .. } => {
                epoch == ctl.epoch && (self.ap_checks_isr || pepoch == ctl.pepoch)
            }
            // Request ids only grow within a leadership, so a refusal that does not answer the
            // pending request's latest copy never will. (Under the planted rule, any leader of
            // that epoch may still take it; a node leads an epoch only as the image names it.)
            Msg::Refused {
                to,
                epoch,
                send,
                new,
            } => match &nodes[to as usize].role {
                Role::Leader { epoch: e, .. } if self.refusal_ignores_ask => *e == epoch,
                _ if self.refusal_ignores_ask => ctl.epoch == epoch,
                Role::Leader {
                    epoch: e, pending, ..
                } => *e == epoch && *pending == Some((new, send)),
                _ => false,
            },
        });
    }

    /// Follower `from` fetches; the leader it names answers into the network.
    fn fetch(&self, s: &mut State, from: u8, lost: bool) {
        let f = &s.nodes[from as usize];
        let Role::Follower { leader: to, epoch } = f.role else {
            return;
        };
        let (offset, durable) = (f.log.len() as u8, f.durable);
        let last_epoch = f.cache.last().map(|&(e, _)| e);
        let i = to as usize;
        let n = &s.nodes[i];
        let len = n.log.len() as u8;
        match n.role {
            Role::Leader { epoch: le, .. } if le == epoch && !n.down => {}
            // FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH or not the leader: it learns anew.
            _ => return,
        }
        if !n.image.is_some_and(|img| has(img.replicas, from)) {
            // Not a replica the leader knows of yet.
            return;
        }
        let diverging = if let Some((e, end)) = last_epoch
            .and_then(|le| end_offset_for(&n.cache, len, le).map(|r| (le, r)))
            .and_then(|(req, (e, end))| {
                (e != Some(req) || end.is_none_or(|end| end < offset)).then_some((e, end))
            }) {
            Some(FetchAnswer::Diverging { epoch: e, end })
        } else if offset > len {
            Some(FetchAnswer::Diverging {
                epoch: n.cache.last().map(|&(e, _)| e),
                end: Some(len),
            })
        } else {
            None
        };
        if let Some(answer) = diverging {
            if !lost {
                Self::follower_response(s, from, answer, &[]);
            }
            return;
        }
        if let Role::Leader { durable_ends, .. } = &mut s.nodes[i].role {
            durable_ends[from as usize] = Some(durable.min(offset));
        }
        self.advance_hw(s, i);
        let n = &s.nodes[i];
        let answer = FetchAnswer::Read { hw: n.hw };
        let entries = n.log[offset as usize..].to_vec();
        if !lost {
            Self::follower_response(s, from, answer, &entries);
        }
    }

    /// The follower takes the leader's answer (a late answer is one taken at once by a
    /// follower that then waits: it holds nothing the leader has not since).
    fn follower_response(s: &mut State, to: u8, answer: FetchAnswer, entries: &[u8]) {
        let n = &mut s.nodes[to as usize];
        match answer {
            FetchAnswer::Diverging { epoch: de, end } => {
                let len = n.log.len() as u8;
                let local_end = de
                    .and_then(|de| end_offset_for(&n.cache, len, de))
                    .map_or(len, |(_, end)| end.unwrap_or(0));
                let to = end.unwrap_or(0).min(local_end).min(len);
                Self::truncate(n, to);
            }
            FetchAnswer::Read { hw, .. } => {
                for &id in entries {
                    let e = s.entry_epoch[id as usize];
                    let at = n.log.len() as u8;
                    assign(&mut n.cache, e, at);
                    n.log.push(id);
                }
                // Followers sync before they fetch again (the model skips the unsynced round).
                n.durable = n.log.len() as u8;
                let hw = hw.min(n.durable);
                if hw > n.hw {
                    n.hw = hw;
                }
            }
        }
    }
}

impl Model for ReplicationModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let replicas = self.start_replicas & self.all();
        assert!(replicas != 0, "the partition starts with a replica");
        let ctl = Image {
            leader: (0..self.replicas).find(|&r| has(replicas, r)),
            epoch: 0,
            pepoch: 0,
            isr: replicas,
            elr: 0,
            fenced: 0,
            replicas,
            adding: 0,
            removing: 0,
            min_isr: self.min_isr,
        };
        let node = Node {
            log: Vec::new(),
            durable: 0,
            cache: Vec::new(),
            hw: 0,
            image: None,
            role: Role::None,
            down: false,
            wiped: false,
        };
        let mut s = State {
            ctl,
            nodes: vec![node; self.replicas as usize],
            net: BTreeSet::new(),
            entry_epoch: Vec::new(),
            acked: Vec::new(),
            conflict: false,
            fences: 0,
            crashes: 0,
            wipes: 0,
            reassigns: 0,
            min_isr_changes: 0,
            heard: 0,
        };
        for id in 0..self.start_entries {
            s.entry_epoch.push(0);
            s.acked.push(id);
        }
        for i in 0..self.replicas {
            let n = &mut s.nodes[i as usize];
            if has(replicas, i) && self.start_entries > 0 {
                n.log = s.acked.clone();
                n.durable = self.start_entries;
                n.hw = self.start_entries;
                n.cache = vec![(0, 0)];
            }
            self.learn(&mut s, i as usize);
        }
        vec![s]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        for i in 0..self.replicas {
            let n = &s.nodes[i as usize];
            if n.down {
                let changes = if n.wiped {
                    has(s.ctl.replicas, i)
                } else {
                    s.ctl.leader == Some(i) && !self.restart_keeps_epoch
                };
                if self.can_change(s) || !changes {
                    out.push(Action::Register(i));
                }
                continue;
            }
            if s.wipes < self.wipes_max && self.another_copy(s, i) {
                out.push(Action::Wipe(i));
            }
            if s.ctl.reassigning() && has(s.ctl.replicas, i) && !has(s.heard, i) {
                out.push(Action::Heard(i));
            }
            if n.image != Some(s.ctl) {
                out.push(Action::Learn(i));
            }
            if (n.durable as usize) < n.log.len() {
                out.push(Action::Sync(i));
            }
            match &n.role {
                Role::Leader {
                    isr,
                    pending,
                    sends,
                    durable_ends,
                    ..
                } => {
                    if s.entry_epoch.len() < self.entries_max as usize {
                        out.push(Action::Produce(i));
                    }
                    let can_send = *sends < self.sends_max;
                    match pending {
                        Some((p, _)) if *p & !*isr == 0 => out.push(Action::DropPendingShrink(i)),
                        Some(_) if can_send => out.push(Action::ResendExpansion(i)),
                        Some(_) => {}
                        None if !can_send => {}
                        None => {
                            let start = n.cache.last().map_or(0, |&(_, s)| s);
                            let joinable = |r: u8| {
                                n.image
                                    .is_some_and(|img| has(img.replicas, r) && !has(img.fenced, r))
                            };
                            for r in 0..self.replicas {
                                if r == i {
                                    continue;
                                }
                                if has(*isr, r) {
                                    out.push(Action::AlterIsr(i, isr & !bit(r)));
                                } else if durable_ends[r as usize].is_some_and(|d| {
                                    d >= n.hw && (d >= start || self.join_before_epoch_start)
                                }) && joinable(r)
                                {
                                    out.push(Action::AlterIsr(i, isr | bit(r)));
                                }
                            }
                        }
                    }
                }
                Role::Follower { leader, epoch } => {
                    let l = &s.nodes[*leader as usize];
                    let leads = matches!(l.role, Role::Leader { epoch: e, .. } if e == *epoch);
                    if leads && !l.down {
                        out.push(Action::Fetch(i, false));
                        if self.fetch_loss {
                            out.push(Action::Fetch(i, true));
                        }
                    }
                }
                Role::None => {}
            }
            if s.crashes < self.crashes_max {
                out.push(Action::Crash(i));
            }
            if has(s.ctl.fenced, i) {
                if self.can_change(s) {
                    out.push(Action::Unfence(i));
                }
            } else if s.fences < self.fences_max && self.can_change(s) {
                out.push(Action::Fence(i));
            }
        }
        if s.nodes.iter().any(|n| n.down) {
            // A crashed node is fenced too, once its heartbeats stop.
            for i in 0..self.replicas {
                if s.nodes[i as usize].down && !has(s.ctl.fenced, i) && self.can_change(s) {
                    out.push(Action::Fence(i));
                }
            }
        }
        if self.can_change(s) {
            if s.reassigns < self.reassigns_max {
                for t in 1..=self.all() {
                    out.push(Action::Reassign(Some(t)));
                }
                if s.ctl.reassigning() {
                    out.push(Action::Reassign(None));
                }
            }
            if s.ctl.reassigning() {
                out.push(Action::CompleteReassignment);
            }
        }
        if s.min_isr_changes < self.min_isr_changes_max {
            for v in (1..=self.replicas).filter(|&v| v != s.ctl.min_isr) {
                out.push(Action::SetMinIsr(v));
            }
        }
        for m in &s.net {
            out.push(Action::Deliver(m.clone()));
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Produce(i) => {
                let n = &mut s.nodes[i as usize];
                let Role::Leader { epoch, .. } = n.role else {
                    return None;
                };
                let id = s.entry_epoch.len() as u8;
                s.entry_epoch.push(epoch);
                n.log.push(id);
            }
            Action::Sync(i) => {
                let n = &mut s.nodes[i as usize];
                n.durable = n.log.len() as u8;
                self.advance_hw(&mut s, i as usize);
            }
            Action::Fetch(i, lost) => self.fetch(&mut s, i, lost),
            Action::Learn(i) => self.learn(&mut s, i as usize),
            // A new request, or the pending one asked again as the ISR and partition epoch the
            // leader knows now (the retry after the interval): either way the latest copy.
            Action::AlterIsr(i, _) | Action::ResendExpansion(i) => {
                let Role::Leader {
                    epoch,
                    pepoch,
                    isr,
                    pending,
                    sends,
                    ..
                } = &mut s.nodes[i as usize].role
                else {
                    return None;
                };
                let new = match action {
                    Action::AlterIsr(_, new) => new,
                    _ => pending.map(|(p, _)| p)?,
                };
                let send = *sends;
                *sends += 1;
                *pending = Some((new, send));
                s.net.insert(Msg::AlterPartition {
                    from: i,
                    epoch: *epoch,
                    pepoch: *pepoch,
                    send,
                    current: *isr,
                    new,
                });
            }
            Action::DropPendingShrink(i) => {
                if let Role::Leader { pending, .. } = &mut s.nodes[i as usize].role {
                    *pending = None;
                }
            }
            Action::Fence(i) => {
                s.fences += u8::from(!s.nodes[i as usize].down);
                s.ctl.fenced |= bit(i);
                // A partition change follows if its leadership or ISR must.
                self.reconcile(&mut s);
            }
            Action::Unfence(i) => {
                s.ctl.fenced &= !bit(i);
                self.reconcile(&mut s);
            }
            Action::Crash(i) => {
                s.crashes += 1;
                let entry_epoch = s.entry_epoch.clone();
                let n = &mut s.nodes[i as usize];
                n.log.truncate(n.durable as usize);
                n.hw = n.hw.min(n.durable);
                n.cache.clear();
                for (at, &id) in n.log.iter().enumerate() {
                    assign(&mut n.cache, entry_epoch[id as usize], at as u8);
                }
                n.image = None;
                n.role = Role::None;
                n.down = true;
            }
            Action::Register(i) => {
                let n = &mut s.nodes[i as usize];
                let wiped = n.wiped;
                (n.down, n.wiped) = (false, false);
                s.heard &= !bit(i);
                s.ctl.fenced &= !bit(i);
                if wiped {
                    Self::forget_replica(&mut s, i);
                }
                // A restarted leader moves to a new epoch (its unsynced tail is gone).
                if s.ctl.leader == Some(i) && !self.restart_keeps_epoch {
                    let c = s.ctl;
                    self.change(&mut s, c.leader, c.epoch + 1, c.isr);
                }
                self.reconcile(&mut s);
            }
            Action::Wipe(i) => {
                s.wipes += 1;
                let n = &mut s.nodes[i as usize];
                Self::truncate(n, 0);
                n.image = None;
                n.role = Role::None;
                (n.down, n.wiped) = (true, true);
            }
            Action::Heard(i) => s.heard |= bit(i),
            Action::Reassign(target) => {
                if !self.reassign(&mut s, target) {
                    return None;
                }
                s.reassigns += 1;
            }
            Action::CompleteReassignment => {
                if !self.complete_reassignment(&mut s) {
                    return None;
                }
            }
            Action::SetMinIsr(v) => {
                if !self.set_min_isr(&mut s, v) {
                    return None;
                }
            }
            Action::Deliver(msg) => match msg {
                Msg::AlterPartition {
                    from,
                    epoch,
                    pepoch,
                    send,
                    current,
                    new,
                } => {
                    let c = s.ctl;
                    let fresh = if self.ap_checks_isr {
                        c.isr == current
                    } else {
                        c.pepoch == pepoch
                    };
                    if c.leader != Some(from) || c.epoch != epoch || !fresh {
                        return None;
                    }
                    if new & !c.replicas != 0 {
                        return None;
                    }
                    if new & !c.isr & c.fenced != 0 {
                        // The refusal moves the partition epoch (a change to the same ISR),
                        // so no copy of this request can apply once the broker is unfenced.
                        if !self.refusal_keeps_epoch {
                            if !self.can_change(&s) {
                                return None;
                            }
                            self.change(&mut s, c.leader, c.epoch, c.isr);
                        }
                        s.net.insert(Msg::Refused {
                            to: from,
                            epoch,
                            send,
                            new,
                        });
                    } else if new != c.isr {
                        if !self.can_change(&s) {
                            return None;
                        }
                        self.change(&mut s, c.leader, c.epoch, new);
                    } else {
                        return None;
                    }
                }
                Msg::Refused {
                    to,
                    epoch: e,
                    send,
                    new,
                } => {
                    let n = &mut s.nodes[to as usize];
                    let answers =
                        |p: &(u8, u8)| p.0 == new && (p.1 == send || self.refusal_ignores_ask);
                    match &mut n.role {
                        Role::Leader { epoch, pending, .. }
                            if *epoch == e && pending.as_ref().is_some_and(answers) && !n.down =>
                        {
                            *pending = None;
                            self.advance_hw(&mut s, to as usize);
                        }
                        _ => return None,
                    }
                }
            },
        }
        self.forget_dead_messages(&mut s);
        self.renumber_sends(&mut s);
        (s != *last).then_some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always(
                "the ISR and ELR hold every committed entry",
                |m: &ReplicationModel, s: &State| {
                    // A wiped member leaves them when it registers again; until then the
                    // others must do.
                    let members = (0..m.replicas).filter(|&r| {
                        let n = &s.nodes[r as usize];
                        has(s.ctl.isr | s.ctl.elr, r) && !n.wiped
                    });
                    let mut members = members.peekable();
                    !s.conflict
                        && (s.acked.is_empty() || members.peek().is_some())
                        && members.all(|r| {
                            let n = &s.nodes[r as usize];
                            is_prefix(&s.acked, &n.log[..n.durable as usize])
                        })
                },
            ),
            Property::always("replicas serve only committed entries", |_, s: &State| {
                s.nodes
                    .iter()
                    .all(|n| is_prefix(&n.log[..n.hw as usize], &s.acked))
            }),
        ];
        if self.entries_max > self.start_entries {
            properties.push(Property::sometimes("an entry commits", |m, s: &State| {
                s.acked.len() > usize::from(m.start_entries)
            }));
            properties.push(Property::sometimes(
                "a later leader commits",
                |_, s: &State| s.acked.iter().any(|&id| s.entry_epoch[id as usize] > 0),
            ));
        }
        if self.reassigns_max > 0 {
            properties.push(Property::sometimes(
                "a reassignment completes",
                |m, s: &State| s.ctl.replicas != m.start_replicas && !s.ctl.reassigning(),
            ));
        }
        properties
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stateright::{Checker, HasDiscoveries};
    use std::time::Instant;

    /// Checks `model` (up to `depth` steps, 0 for all) and asserts every property held.
    fn assert_holds(model: ReplicationModel, depth: usize, label: &str, states_min: usize) {
        let t = Instant::now();
        let mut checker = model.checker().threads(2);
        if depth > 0 {
            checker = checker.target_max_depth(depth);
        }
        let checker = checker.spawn_bfs().join();
        eprintln!(
            "replication model, {label}: {} unique states ({} visited) in {:.1?}",
            checker.unique_state_count(),
            checker.state_count(),
            t.elapsed()
        );
        checker.assert_properties();
        assert!(
            checker.unique_state_count() > states_min,
            "the model shrank"
        );
    }

    /// Every behaviour with one entry, up to 4 partition changes and a broker fenced once
    /// (elections from the ISR and the ELR, shrinks, expansions and their refusals): about
    /// 1.9 million states.
    #[test]
    fn replication_model_with_fencing_holds() {
        let model = ReplicationModel::bounded(1, 4, 1, 0);
        assert_holds(model, 0, "fencing", 1_000_000);
    }

    /// Every behaviour with one entry, up to 4 partition changes and one crash that loses the
    /// unsynced suffix (then fencing and registration): about 1 million states.
    #[test]
    fn replication_model_with_a_crash_holds() {
        let model = ReplicationModel::bounded(1, 4, 0, 1);
        assert_holds(model, 0, "a crash", 500_000);
    }

    /// Two entries (divergent logs, truncation) and a crash, every behaviour up to 18 steps:
    /// about 1.8 million states. The whole space (8 million) takes minutes.
    #[test]
    fn replication_model_with_two_entries_holds() {
        let model = ReplicationModel::bounded(2, 4, 0, 1);
        assert_holds(model, 18, "two entries", 1_000_000);
    }

    /// The partition starts on nodes 0 and 1 with one committed entry; an operator moves it
    /// twice (a new target, or a cancellation, while one is in progress) and one disk is
    /// replaced. No fetch answer is lost and nothing else is produced, to keep it small.
    fn reassigning() -> ReplicationModel {
        ReplicationModel {
            start_replicas: 0b011,
            start_entries: 1,
            reassigns_max: 2,
            wipes_max: 1,
            fetch_loss: false,
            ..ReplicationModel::bounded(1, 4, 0, 0)
        }
    }

    /// Reassignments, their replacement and cancellation, and a replaced disk, every
    /// behaviour up to 14 steps: about 2.1 million states. The whole space (5.8 million)
    /// holds too, in about a minute.
    #[test]
    fn replication_model_with_reassignments_holds() {
        assert_holds(reassigning(), 14, "reassignments", 1_000_000);
    }

    /// An operator changes min.insync.replicas (from 2 to 1 or 3) while the ISR shrinks and
    /// expands and a broker is fenced: the controller drops the ELR in the same batch when the
    /// ISR reaches the new minimum, and leaders apply a new minimum with the image that
    /// carries it. Every behaviour up to 14 steps: about 2.2 million states. The whole space
    /// (20 million, 3.5 minutes) holds too, and so does the one with a crash instead of the
    /// fence (9.9 million): `MIN_ISR_CHANGES=1 cargo run --release -p models --example
    /// replication_size -- 1 4 1 0 0` (or `1 4 0 1 0`).
    #[test]
    fn replication_model_with_min_isr_changes_holds() {
        let model = ReplicationModel {
            min_isr_changes_max: 1,
            ..ReplicationModel::bounded(1, 4, 1, 0)
        };
        assert_holds(model, 14, "min.insync.replicas changes", 1_000_000);
    }

    /// Runs `model` until a safety property fails and asserts that `property` did, printing
    /// the counterexample.
    fn assert_refuted(model: ReplicationModel, property: &'static str, label: &str) {
        let t = Instant::now();
        let checker = model
            .checker()
            .threads(2)
            .finish_when(HasDiscoveries::AnyFailures)
            .spawn_bfs()
            .join();
        let path = checker.assert_any_discovery(property);
        eprintln!(
            "{label} counterexample ({property}), {} states, {:.1?}: {:?}",
            checker.unique_state_count(),
            t.elapsed(),
            path.into_actions()
        );
    }

    const HOLD: &str = "the ISR and ELR hold every committed entry";

    #[test]
    fn replication_model_refutes_alter_partition_checked_by_isr() {
        let model = ReplicationModel {
            ap_checks_isr: true,
            ..ReplicationModel::bounded(1, 4, 0, 0)
        };
        assert_refuted(model, HOLD, "ap-checks-isr");
    }

    #[test]
    fn replication_model_refutes_a_refusal_of_any_copy() {
        let model = ReplicationModel {
            refusal_ignores_ask: true,
            ..ReplicationModel::bounded(1, 4, 0, 1)
        };
        assert_refuted(model, HOLD, "refusal-ignores-ask");
    }

    #[test]
    fn replication_model_refutes_a_refusal_that_keeps_the_partition_epoch() {
        let model = ReplicationModel {
            refusal_keeps_epoch: true,
            ..ReplicationModel::bounded(1, 4, 0, 1)
        };
        assert_refuted(model, HOLD, "refusal-keeps-epoch");
    }

    #[test]
    fn replication_model_refutes_a_high_watermark_without_the_pending_expansion() {
        let model = ReplicationModel {
            hw_ignores_pending: true,
            ..ReplicationModel::bounded(1, 4, 1, 1)
        };
        assert_refuted(model, HOLD, "hw-ignores-pending");
    }

    #[test]
    fn replication_model_refutes_a_high_watermark_below_min_insync_replicas() {
        let model = ReplicationModel {
            hw_below_min_isr: true,
            ..ReplicationModel::bounded(1, 4, 1, 1)
        };
        assert_refuted(model, HOLD, "hw-below-min-isr");
    }

    #[test]
    fn replication_model_refutes_a_new_isr_under_the_old_min_isr() {
        let model = ReplicationModel {
            min_isr_changes_max: 1,
            min_isr_after_isr: true,
            ..ReplicationModel::bounded(1, 4, 0, 0)
        };
        assert_refuted(model, HOLD, "min-isr-after-isr");
    }

    #[test]
    fn replication_model_refutes_a_restarted_leader_in_its_old_epoch() {
        let model = ReplicationModel {
            restart_keeps_epoch: true,
            ..ReplicationModel::bounded(2, 4, 0, 1)
        };
        assert_refuted(model, HOLD, "restart-keeps-epoch");
    }

    #[test]
    fn replication_model_refutes_joining_before_the_epoch_start() {
        let model = ReplicationModel {
            join_before_epoch_start: true,
            ..ReplicationModel::bounded(1, 4, 1, 1)
        };
        assert_refuted(model, HOLD, "join-before-epoch-start");
    }

    #[test]
    fn replication_model_refutes_an_election_outside_the_isr_and_elr() {
        let model = ReplicationModel {
            elect_any: true,
            ..ReplicationModel::bounded(1, 4, 1, 1)
        };
        assert_refuted(model, HOLD, "elect-any");
    }

    #[test]
    fn replication_model_refutes_a_new_target_that_drops_in_sync_replicas() {
        let model = ReplicationModel {
            reassign_drops_in_sync: true,
            ..reassigning()
        };
        assert_refuted(model, HOLD, "reassign-drops-in-sync");
    }

    #[test]
    fn replication_model_refutes_a_reassignment_completed_on_the_isr_alone() {
        let model = ReplicationModel {
            reassign_trusts_isr: true,
            ..reassigning()
        };
        assert_refuted(model, HOLD, "reassign-trusts-isr");
    }
}
