//! A stateright model of the metadata quorum's election and commit rules (KIP-595 without
//! pre-vote, which only affects liveness): voters with bounded epochs and logs, one vote per
//! epoch, "log at least as up to date" vote checks, a leader that appends a leader-change entry
//! on election, and a high watermark that only passes a majority-replicated entry of the
//! leader's own epoch. Replication is abstracted to "the leader's whole log": a follower adopts
//! it unless it already extends it, and acknowledges the matching length. The network is the
//! set of every message ever sent (as in the TLA+ Raft specifications): delivery leaves a
//! message in place, so any message may be delivered again (duplication), late (reordering) or
//! never (loss). Independent of the broker crate: a model of the protocol, not the code.

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
    /// The leader's log, broadcast.
    Append {
        epoch: u8,
        leader: u8,
        log: Vec<u8>,
    },
    Ack {
        epoch: u8,
        from: u8,
        to: u8,
        len: u8,
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
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Action {
    Timeout(u8),
    Propose(u8),
    Replicate(u8),
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
        }
    }
}

impl QuorumModel {
    fn majority(&self) -> usize {
        self.voters as usize / 2 + 1
    }

    fn observe_epoch(n: &mut Node, epoch: u8) {
        if epoch > n.epoch {
            n.epoch = epoch;
            n.voted_for = None;
            n.role = Role::Follower;
            n.votes = 0;
            n.acked.clear();
        }
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
        let node = Node {
            epoch: 0,
            voted_for: None,
            role: Role::Follower,
            votes: 0,
            log: Vec::new(),
            acked: Vec::new(),
        };
        vec![State {
            nodes: vec![node; self.voters as usize],
            net: BTreeSet::new(),
            elected: BTreeSet::new(),
            committed: Vec::new(),
            commit_conflict: false,
        }]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        for (i, n) in s.nodes.iter().enumerate() {
            let i = i as u8;
            if n.role != Role::Leader && n.epoch < self.max_epoch && i < self.candidates {
                out.push(Action::Timeout(i));
            }
            if n.role == Role::Leader {
                if n.log.len() < self.max_log {
                    out.push(Action::Propose(i));
                }
                let msg = Msg::Append {
                    epoch: n.epoch,
                    leader: i,
                    log: n.log.clone(),
                };
                // Replicate only while some voter is not known to have the whole log, and
                // not while the same append is in flight.
                let behind = (0..self.voters as usize)
                    .any(|v| v != i as usize && (n.acked[v] as usize) < n.log.len());
                if behind && !s.net.contains(&msg) {
                    out.push(Action::Replicate(i));
                }
            }
        }
        for msg in &s.net {
            match msg {
                Msg::VoteReq { cand: from, .. } | Msg::Append { leader: from, .. } => {
                    for to in (0..self.voters).filter(|t| t != from) {
                        out.push(Action::Deliver {
                            msg: msg.clone(),
                            to,
                        });
                    }
                }
                Msg::VoteResp { to, .. } | Msg::Ack { to, .. } => {
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
                n.acked.clear();
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
                });
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
                            n.acked = vec![0; self.voters as usize];
                            if n.log.len() < self.max_log {
                                n.log.push(epoch);
                            }
                            s.elected.insert((epoch, to));
                        }
                    }
                    Msg::Append {
                        epoch, leader, log, ..
                    } => {
                        let n = &mut s.nodes[t];
                        if epoch < n.epoch {
                            return None;
                        }
                        Self::observe_epoch(n, epoch);
                        n.role = Role::Follower;
                        n.votes = 0;
                        if !n.log.starts_with(&log) {
                            n.log = log.clone();
                        }
                        s.net.insert(Msg::Ack {
                            epoch,
                            from: to,
                            to: leader,
                            len: log.len() as u8,
                        });
                    }
                    Msg::Ack {
                        epoch, from, len, ..
                    } => {
                        let n = &mut s.nodes[t];
                        if n.role != Role::Leader || n.epoch != epoch {
                            return None;
                        }
                        let a = &mut n.acked[from as usize];
                        *a = (*a).max(len);
                        self.commit(&mut s, t);
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

    #[test]
    fn quorum_model_refutes_vote_twice() {
        let t = Instant::now();
        let model = QuorumModel {
            vote_twice: true,
            ..QuorumModel::default()
        };
        let checker = model
            .checker()
            .finish_when(HasDiscoveries::AnyFailures)
            .spawn_bfs()
            .join();
        let path = checker.assert_any_discovery("at most one leader per epoch");
        eprintln!(
            "vote-twice counterexample: {} steps, {} states, {:.1?}",
            path.into_actions().len(),
            checker.unique_state_count(),
            t.elapsed()
        );
    }

    #[test]
    fn quorum_model_refutes_commit_from_leader() {
        let model = QuorumModel {
            commit_from_leader: true,
            ..QuorumModel::default()
        };
        let checker = model
            .checker()
            .finish_when(HasDiscoveries::AnyFailures)
            .spawn_bfs()
            .join();
        checker.assert_any_discovery("committed entries never lost");
    }
}
