//! A stateright model of the metadata quorum's election and commit rules (KIP-595 without
//! pre-vote, which only affects liveness): voters with bounded epochs and logs, one vote per
//! epoch, "log at least as up to date" vote checks, a leader that appends a leader-change entry
//! on election, and a high watermark that only passes a majority-replicated entry of the
//! leader's own epoch. Replication is abstracted to "the leader's whole log": a follower adopts
//! it unless it already extends it, and acknowledges the matching length. The network is the
//! set of every message ever sent (as in the TLA+ Raft specifications): delivery leaves a
//! message in place, so any message may be delivered again (duplication), late (reordering) or
//! never (loss). Independent of the broker crate: a model of the protocol, not the code.
//!
//! Wiped voters (`wipes_max` > 0): a voter may lose everything it stored and restart as a new
//! incarnation, as a replaced disk does. It then follows `RaftCore`'s rejoining rule. It follows
//! no leader until every other voter has answered a probe of this incarnation with its epoch and
//! whether its log is empty; it then moves to the highest epoch heard. It neither votes nor
//! stands until, also, either every answer was empty or it holds a leader's high watermark, from
//! an epoch at least the highest answer, whose entry below is from that epoch; it then moves
//! past the highest epoch it heard unless it follows a leader of that epoch. Acknowledgements
//! carry the incarnation, and a leader counts only the newest it has heard per voter. The
//! planted `early_follow` is the rule as it was before this model found it wrong.

use std::collections::BTreeSet;

use stateright::{Model, Property};

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    pub epoch: u8,
    pub voted_for: Option<u8>,
    pub role: Role,
    /// Votes received (bit per voter) while candidate.
    pub votes: u8,
    /// Epoch of each log entry.
    pub log: Vec<u8>,
    /// Leader only: matched log length per voter.
    pub acked: Vec<u8>,
    /// Leader only: the incarnation whose acknowledgements `acked` counts, per voter.
    pub acked_inc: Vec<u8>,
    /// The leader this voter follows in its epoch (a voter that knows one grants no vote).
    pub leader: Option<u8>,
    /// Leader only: the high watermark (a majority-replicated prefix ending in its own epoch).
    pub hw: u8,
    /// Durable: started on an empty disk and may neither vote nor stand yet.
    pub rejoining: bool,
    /// This process's incarnation (a wipe starts a new one).
    pub inc: u8,
    /// Rejoining: each other voter's answer to this incarnation's probe (epoch, log empty).
    pub heard: Vec<Option<(u8, bool)>>,
    /// Rejoining: (leader epoch, high watermark) of an append whose high watermark this log
    /// held, with the entry below it from that epoch.
    pub caught_up: Option<(u8, u8)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Msg {
    /// Broadcast to every other voter (messages persist, so one copy serves all).
    VoteReq {
        epoch: u8,
        cand: u8,
        last_epoch: u8,
        len: u8,
    },
    VoteResp {
        epoch: u8,
        from: u8,
        to: u8,
    },
    /// The leader's log and high watermark, broadcast.
    Append {
        epoch: u8,
        leader: u8,
        log: Vec<u8>,
        hw: u8,
    },
    Ack {
        epoch: u8,
        from: u8,
        to: u8,
        len: u8,
        inc: u8,
    },
    /// A rejoining voter asks every other voter what it holds (broadcast).
    Probe {
        from: u8,
        inc: u8,
    },
    ProbeResp {
        from: u8,
        to: u8,
        inc: u8,
        epoch: u8,
        empty: bool,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct State {
    pub nodes: Vec<Node>,
    pub net: BTreeSet<Msg>,
    /// Ghost: every (epoch, leader) ever elected.
    pub elected: BTreeSet<(u8, u8)>,
    /// Ghost: the committed prefix, each entry as (entry epoch, epoch in which it committed).
    pub committed: Vec<(u8, u8)>,
    /// Ghost: a leader committed a prefix that disagrees with an earlier commit.
    pub commit_conflict: bool,
    /// Wipes so far (bounded by `wipes_max`).
    pub wipes: u8,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Action {
    Timeout(u8),
    Propose(u8),
    Replicate(u8),
    /// The voter loses its disk and restarts as a new incarnation.
    Wipe(u8),
    /// A rejoining voter probes the others.
    Probe(u8),
    /// The message stays in the network: it may be delivered again (duplication), later
    /// (reordering) or never (loss).
    Deliver {
        msg: Msg,
        to: u8,
    },
}

#[derive(Clone, Debug)]
pub struct QuorumModel {
    pub voters: u8,
    pub max_epoch: u8,
    pub max_log: usize,
    /// Voters below this id may time out and stand for election (the rest only vote): a
    /// bound on the state space that keeps competing candidates and leader changes.
    pub candidates: u8,
    /// The planted bug: a voter grants a second vote in the same epoch.
    pub vote_twice: bool,
    /// The other planted bug: the leader commits its whole log without a majority.
    pub commit_from_leader: bool,
    /// Wipes in all, of the voters in `wipeable` (a bit per voter).
    pub wipes_max: u8,
    pub wipeable: u8,
    /// Planted: a wiped voter votes and stands at once, as if its empty log were all it had
    /// acknowledged.
    pub wiped_votes: bool,
    /// Planted: a rejoining voter follows a leader before every other voter answered it (the
    /// broker's rule until this model refuted it).
    pub early_follow: bool,
}

impl Default for QuorumModel {
    fn default() -> Self {
        QuorumModel {
            voters: 3,
            max_epoch: 3,
            max_log: 2,
            candidates: 2,
            vote_twice: false,
            commit_from_leader: false,
            wipes_max: 0,
            wipeable: 0,
            wiped_votes: false,
            early_follow: false,
        }
    }
}

impl QuorumModel {
    fn majority(&self) -> usize {
        self.voters as usize / 2 + 1
    }

    /// The model with one wipe of any voter.
    pub fn with_wipes() -> Self {
        QuorumModel {
            wipes_max: 1,
            wipeable: 0b111,
            ..QuorumModel::default()
        }
    }

    fn observe_epoch(n: &mut Node, epoch: u8) {
        if epoch > n.epoch {
            n.epoch = epoch;
            n.voted_for = None;
            n.role = Role::Follower;
            n.leader = None;
            n.votes = 0;
            n.acked.clear();
            n.acked_inc.clear();
        }
    }

    /// What a voter that never stored anything starts as (a first start or a wipe).
    fn empty_node(&self, inc: u8, rejoining: bool) -> Node {
        Node {
            epoch: 0,
            voted_for: None,
            role: Role::Follower,
            votes: 0,
            log: Vec::new(),
            acked: Vec::new(),
            acked_inc: Vec::new(),
            leader: None,
            hw: 0,
            rejoining,
            inc,
            heard: if rejoining {
                vec![None; self.voters as usize]
            } else {
                Vec::new()
            },
            caught_up: None,
        }
    }

    /// Rejoining voter `i` has an answer from every other voter.
    fn heard_all(&self, n: &Node, i: usize) -> bool {
        (0..self.voters as usize).all(|v| v == i || n.heard[v].is_some())
    }

    /// Rejoining voter `i`: votes again once every other voter answered, and either every log
    /// was empty or this log holds a caught-up high watermark from an epoch at least the
    /// highest answer; then moves past that epoch unless it follows a leader of it.
    fn maybe_rejoined(&self, n: &mut Node, i: usize) {
        if !n.rejoining || !self.heard_all(n, i) {
            return;
        }
        let answers = n.heard.iter().flatten();
        let highest = answers.clone().map(|h| h.0).max().unwrap_or(0);
        let all_empty = answers.clone().all(|h| h.1);
        let caught_up = matches!(n.caught_up,
            Some((e, hw)) if e >= highest && n.log.len() >= hw as usize);
        if !all_empty && !caught_up {
            return;
        }
        let may_vote_in_highest = n.epoch < highest || (n.epoch == highest && n.leader.is_none());
        if highest > 0 && may_vote_in_highest {
            Self::observe_epoch(n, highest + 1);
        }
        n.rejoining = false;
        n.heard.clear();
        n.caught_up = None;
    }

    /// Leader `l`: advance the commit point from acknowledgements (own epoch only).
    fn commit(&self, s: &mut State, l: usize) {
        let n = &s.nodes[l];
        let mut lens: Vec<u8> = n.acked.clone();
        lens[l] = n.log.len() as u8;
        lens.sort_unstable_by(|a, b| b.cmp(a));
        let mut c = lens[self.majority() - 1] as usize;
        if self.commit_from_leader {
            c = n.log.len();
        }
        if c == 0 || n.log[c - 1] != n.epoch {
            return;
        }
        if self.wipes_max > 0 {
            // Only a rejoining voter reads the high watermark; without wipes it would only
            // multiply the appends in flight.
            s.nodes[l].hw = s.nodes[l].hw.max(c as u8);
        }
        let n = &s.nodes[l];
        let prefix = &n.log[..c];
        let known: Vec<u8> = s.committed.iter().map(|x| x.0).collect();
        let agree = known.iter().zip(prefix).all(|(a, b)| a == b);
        if !agree {
            s.commit_conflict = true;
        } else if c > known.len() {
            let epoch = n.epoch;
            for &e in &prefix[known.len()..] {
                s.committed.push((e, epoch));
            }
        }
    }
}

impl Model for QuorumModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            nodes: vec![self.empty_node(0, false); self.voters as usize],
            net: BTreeSet::new(),
            elected: BTreeSet::new(),
            committed: Vec::new(),
            commit_conflict: false,
            wipes: 0,
        }]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        for (i, n) in s.nodes.iter().enumerate() {
            let i = i as u8;
            if n.role != Role::Leader
                && n.epoch < self.max_epoch
                && i < self.candidates
                && !n.rejoining
            {
                out.push(Action::Timeout(i));
            }
            // One stateless voter at a time: losing two voters' state at once loses what they
            // alone acknowledged, whatever the protocol.
            let other_rejoining = s
                .nodes
                .iter()
                .enumerate()
                .any(|(j, m)| j != i as usize && m.rejoining);
            if s.wipes < self.wipes_max && self.wipeable & (1 << i) != 0 && !other_rejoining {
                out.push(Action::Wipe(i));
            }
            if n.rejoining
                && !s.net.contains(&Msg::Probe {
                    from: i,
                    inc: n.inc,
                })
            {
                out.push(Action::Probe(i));
            }
            if n.role == Role::Leader {
                if n.log.len() < self.max_log {
                    out.push(Action::Propose(i));
                }
                let msg = Msg::Append {
                    epoch: n.epoch,
                    leader: i,
                    log: n.log.clone(),
                    hw: n.hw,
                };
                // Replicate only while some voter is not known to have the whole log or the
                // high watermark moved, and not while the same append is in flight.
                let behind = (0..self.voters as usize)
                    .any(|v| v != i as usize && (n.acked[v] as usize) < n.log.len());
                if (behind || n.hw > 0) && !s.net.contains(&msg) {
                    out.push(Action::Replicate(i));
                }
            }
        }
        for msg in &s.net {
            match msg {
                Msg::VoteReq { cand: from, .. }
                | Msg::Append { leader: from, .. }
                | Msg::Probe { from, .. } => {
                    for to in (0..self.voters).filter(|t| t != from) {
                        out.push(Action::Deliver {
                            msg: msg.clone(),
                            to,
                        });
                    }
                }
                Msg::VoteResp { to, .. } | Msg::Ack { to, .. } | Msg::ProbeResp { to, .. } => {
                    out.push(Action::Deliver {
                        msg: msg.clone(),
                        to: *to,
                    });
                }
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Timeout(i) => {
                let n = &mut s.nodes[i as usize];
                n.epoch += 1;
                n.voted_for = Some(i);
                n.role = Role::Candidate;
                n.votes = 1 << i;
                n.leader = None;
                n.acked.clear();
                n.acked_inc.clear();
                let (epoch, last_epoch, len) = (
                    n.epoch,
                    n.log.last().copied().unwrap_or(0),
                    n.log.len() as u8,
                );
                s.net.insert(Msg::VoteReq {
                    epoch,
                    cand: i,
                    last_epoch,
                    len,
                });
            }
            Action::Propose(i) => {
                let n = &mut s.nodes[i as usize];
                let e = n.epoch;
                n.log.push(e);
                let l = i as usize;
                self.commit(&mut s, l);
            }
            Action::Replicate(leader) => {
                let n = &s.nodes[leader as usize];
                s.net.insert(Msg::Append {
                    epoch: n.epoch,
                    leader,
                    log: n.log.clone(),
                    hw: n.hw,
                });
            }
            Action::Wipe(i) => {
                let inc = s.nodes[i as usize].inc + 1;
                s.nodes[i as usize] = self.empty_node(inc, !self.wiped_votes);
                s.wipes += 1;
            }
            Action::Probe(i) => {
                let inc = s.nodes[i as usize].inc;
                s.net.insert(Msg::Probe { from: i, inc });
            }
            Action::Deliver { msg, to } => {
                let t = to as usize;
                match msg {
                    Msg::VoteReq {
                        epoch,
                        cand,
                        last_epoch,
                        len,
                    } => {
                        let n = &mut s.nodes[t];
                        Self::observe_epoch(n, epoch);
                        let mine = (n.log.last().copied().unwrap_or(0), n.log.len() as u8);
                        let free = match n.voted_for {
                            None => true,
                            Some(v) => v == cand || self.vote_twice,
                        };
                        if epoch == n.epoch
                            && n.role != Role::Leader
                            && n.leader.is_none()
                            && !n.rejoining
                            && free
                            && (last_epoch, len) >= mine
                        {
                            n.voted_for = Some(cand);
                            if n.role == Role::Candidate && cand != to {
                                n.role = Role::Follower;
                            }
                            s.net.insert(Msg::VoteResp {
                                epoch,
                                from: to,
                                to: cand,
                            });
                        }
                    }
                    Msg::VoteResp { epoch, from, .. } => {
                        let majority = self.majority();
                        let n = &mut s.nodes[t];
                        if n.role != Role::Candidate || n.epoch != epoch {
                            return None; // a stale vote changes nothing
                        }
                        n.votes |= 1 << from;
                        if n.votes.count_ones() as usize >= majority {
                            n.role = Role::Leader;
                            n.leader = Some(to);
                            n.hw = 0;
                            n.acked = vec![0; self.voters as usize];
                            n.acked_inc = vec![0; self.voters as usize];
                            if n.log.len() < self.max_log {
                                n.log.push(epoch);
                            }
                            s.elected.insert((epoch, to));
                        }
                    }
                    Msg::Append {
                        epoch,
                        leader,
                        log,
                        hw,
                    } => {
                        let n = &mut s.nodes[t];
                        if epoch < n.epoch
                            || (n.rejoining && !self.heard_all(n, t) && !self.early_follow)
                        {
                            // A rejoining voter follows no leader before it knows every epoch
                            // its old disk may have voted in.
                            return None;
                        }
                        Self::observe_epoch(n, epoch);
                        n.role = Role::Follower;
                        n.leader = Some(leader);
                        n.votes = 0;
                        if !n.log.starts_with(&log) {
                            n.log = log.clone();
                        }
                        let h = hw as usize;
                        if n.rejoining && h > 0 && h <= n.log.len() && n.log[h - 1] == epoch {
                            n.caught_up = Some((epoch, hw));
                        }
                        let inc = n.inc;
                        self.maybe_rejoined(n, t);
                        s.net.insert(Msg::Ack {
                            epoch,
                            from: to,
                            to: leader,
                            len: log.len() as u8,
                            inc,
                        });
                    }
                    Msg::Ack {
                        epoch,
                        from,
                        len,
                        inc,
                        ..
                    } => {
                        let n = &mut s.nodes[t];
                        if n.role != Role::Leader || n.epoch != epoch {
                            return None;
                        }
                        let f = from as usize;
                        if inc > n.acked_inc[f] {
                            // Another process answers for this voter: its old acks are void.
                            n.acked_inc[f] = inc;
                            n.acked[f] = len;
                        } else if inc == n.acked_inc[f] {
                            n.acked[f] = n.acked[f].max(len);
                        } else {
                            return None;
                        }
                        self.commit(&mut s, t);
                    }
                    Msg::Probe { from, inc } => {
                        let n = &s.nodes[t];
                        s.net.insert(Msg::ProbeResp {
                            from: to,
                            to: from,
                            inc,
                            epoch: n.epoch,
                            empty: n.log.is_empty(),
                        });
                    }
                    Msg::ProbeResp {
                        from,
                        inc,
                        epoch,
                        empty,
                        ..
                    } => {
                        let n = &mut s.nodes[t];
                        if !n.rejoining || inc != n.inc {
                            return None; // an answer to an earlier process says nothing now
                        }
                        let f = from as usize;
                        let e = n.heard[f].map_or(epoch, |h| h.0.max(epoch));
                        n.heard[f] = Some((e, empty));
                        if self.heard_all(n, t) {
                            // First to the highest epoch heard: no deposed leader counts it.
                            let highest = n.heard.iter().flatten().map(|h| h.0).max();
                            Self::observe_epoch(n, highest.unwrap_or(0));
                        }
                        self.maybe_rejoined(n, t);
                    }
                }
            }
        }
        (s != *last).then_some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("at most one leader per epoch", |_, s: &State| {
                let mut epochs = BTreeSet::new();
                s.elected.iter().all(|(e, _)| epochs.insert(*e))
            }),
            Property::always("committed entries never lost", |_, s: &State| {
                !s.commit_conflict
                    && s.nodes.iter().all(|n| {
                        n.role != Role::Leader
                            || s.committed
                                .iter()
                                .enumerate()
                                .all(|(i, &(e, ce))| ce >= n.epoch || n.log.get(i) == Some(&e))
                    })
            }),
            Property::sometimes("a leader is elected", |_, s: &State| {
                s.nodes.iter().any(|n| n.role == Role::Leader)
            }),
            Property::sometimes("an entry commits", |_, s: &State| !s.committed.is_empty()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stateright::{Checker, HasDiscoveries};
    use std::time::Instant;

    /// Steps explored with a wiped voter.
    const WIPED_DEPTH_MAX: usize = 15;

    /// Exhaustive BFS: 3 voters, epochs up to 3, logs up to 2 entries, two of the voters may
    /// stand for election. About 580k unique states.
    #[test]
    fn quorum_model_holds() {
        let t = Instant::now();
        let checker = QuorumModel::default()
            .checker()
            .threads(2)
            .spawn_bfs()
            .join();
        eprintln!(
            "quorum model: {} unique states ({} visited) in {:.1?}",
            checker.unique_state_count(),
            checker.state_count(),
            t.elapsed()
        );
        checker.assert_properties();
        assert!(checker.unique_state_count() > 100_000, "the model shrank");
    }

    /// BFS with one wipe of any voter at any point, every behaviour up to
    /// [`WIPED_DEPTH_MAX`] steps (about 6 million states, 40 s and 4 GiB on 2 cores; the full
    /// space does not fit in memory): the rejoining rule keeps both properties.
    #[test]
    fn quorum_model_with_a_wiped_voter_holds() {
        let t = Instant::now();
        let checker = QuorumModel::with_wipes()
            .checker()
            .threads(2)
            .target_max_depth(WIPED_DEPTH_MAX)
            .spawn_bfs()
            .join();
        eprintln!(
            "quorum model with a wipe: {} unique states ({} visited) in {:.1?}",
            checker.unique_state_count(),
            checker.state_count(),
            t.elapsed()
        );
        checker.assert_properties();
        assert!(checker.unique_state_count() > 1_000_000, "the model shrank");
    }

    /// Runs `model` (up to `depth` steps, 0 for all) until a safety property fails, and
    /// asserts that `property` did, printing the counterexample's length.
    fn assert_refuted(model: QuorumModel, depth: usize, property: &'static str, label: &str) {
        let t = Instant::now();
        let mut checker = model
            .checker()
            .threads(2)
            .finish_when(HasDiscoveries::AnyFailures);
        if depth > 0 {
            checker = checker.target_max_depth(depth);
        }
        let checker = checker.spawn_bfs().join();
        let path = checker.assert_any_discovery(property);
        eprintln!(
            "{label} counterexample ({property}): {} steps, {} states, {:.1?}",
            path.into_actions().len(),
            checker.unique_state_count(),
            t.elapsed()
        );
    }

    #[test]
    fn quorum_model_refutes_vote_twice() {
        let model = QuorumModel {
            vote_twice: true,
            ..QuorumModel::default()
        };
        assert_refuted(model, 0, "at most one leader per epoch", "vote-twice");
    }

    #[test]
    fn quorum_model_refutes_commit_from_leader() {
        let model = QuorumModel {
            commit_from_leader: true,
            ..QuorumModel::default()
        };
        assert_refuted(
            model,
            0,
            "committed entries never lost",
            "commit-from-leader",
        );
    }

    #[test]
    fn quorum_model_refutes_a_wiped_voter_that_votes_at_once() {
        let model = QuorumModel {
            wiped_votes: true,
            ..QuorumModel::with_wipes()
        };
        let (depth, property) = (WIPED_DEPTH_MAX, "at most one leader per epoch");
        assert_refuted(model, depth, property, "wiped-votes");
    }

    /// The rule `RaftCore` had until the model found it wrong: a rejoining voter followed the
    /// first leader it heard of, and its acknowledgements let a deposed leader commit entries
    /// that the leader its old disk had voted for never got.
    #[test]
    fn quorum_model_refutes_a_rejoining_voter_that_follows_before_all_answered() {
        let model = QuorumModel {
            early_follow: true,
            ..QuorumModel::with_wipes()
        };
        assert_refuted(model, 13, "committed entries never lost", "early-follow");
    }
}
