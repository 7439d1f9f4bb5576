//! ReplicaSelector: which replica a consumer should read a partition from (KIP-392, "fetch from
//! follower"). A consumer that names its rack (`client.rack`) sends it in every Fetch (v11+); the
//! leader may answer with a *preferred read replica* in the consumer's rack instead of records,
//! and the consumer then fetches from that follower, up to the follower's high watermark. Teams
//! spread over availability zones use it to stop paying for cross-zone reads.
//!
//! Pure: the leader gathers the candidates (itself and the in-sync followers that hold the fetch
//! offset) and the brokers' racks, and this decides. Deterministic: ties break on the lowest id.

use std::str::FromStr;

use super::core::NodeId;

/// Kafka's name for the rack-aware selector (`replica.selector.class`).
pub const RACK_AWARE_CLASS: &str = "org.apache.kafka.common.replica.RackAwareReplicaSelector";
/// Kafka's name for its default, leader-only selector.
pub const LEADER_CLASS: &str = "org.apache.kafka.common.replica.LeaderSelector";

/// Which replica serves consumers (Kafka's `replica.selector.class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicaSelector {
    /// Consumers always read from the leader (Kafka's default).
    #[default]
    Leader,
    /// A consumer that names its rack reads from a replica in that rack when one is in sync
    /// and holds the offset; otherwise from the leader.
    RackAware,
}

impl FromStr for ReplicaSelector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "leader" | LEADER_CLASS => Ok(ReplicaSelector::Leader),
            "rack" | RACK_AWARE_CLASS => Ok(ReplicaSelector::RackAware),
            _ => Err(format!(
                "unknown replica selector {s:?}: want leader or rack (or Kafka's class names \
                 {LEADER_CLASS} and {RACK_AWARE_CLASS})"
            )),
        }
    }
}

impl ReplicaSelector {
    /// The value DescribeConfigs shows for `replica.selector.class`.
    pub fn class_name(self) -> &'static str {
        match self {
            ReplicaSelector::Leader => LEADER_CLASS,
            ReplicaSelector::RackAware => RACK_AWARE_CLASS,
        }
    }

    /// The replica a consumer in `client_rack` should read from instead of the leader, or None
    /// when the leader should serve it. `candidates` are the replicas that may serve the
    /// consumer's offset now: the leader and the in-sync followers holding it.
    pub fn select(
        self,
        client_rack: &str,
        leader: NodeId,
        candidates: &[ReadCandidate<'_>],
    ) -> Option<NodeId> {
        if self == ReplicaSelector::Leader || client_rack.is_empty() {
            return None;
        }
        let mut same_rack = candidates
            .iter()
            .filter(|c| c.rack == Some(client_rack))
            .peekable();
        same_rack.peek()?;
        let mut best: Option<&ReadCandidate<'_>> = None;
        for c in same_rack {
            if c.id == leader {
                // The leader is in the consumer's rack: nothing is nearer or fresher.
                return None;
            }
            let better = best.map_or(true, |b| {
                (c.log_end, c.last_caught_up_ms, -c.id) > (b.log_end, b.last_caught_up_ms, -b.id)
            });
            if better {
                best = Some(c);
            }
        }
        best.map(|c| c.id)
    }
}

/// One replica that could serve a consumer's fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCandidate<'a> {
    pub id: NodeId,
    /// The broker's registered rack, if any.
    pub rack: Option<&'a str>,
    /// Its log end as the leader last saw it.
    pub log_end: i64,
    /// When it last caught up with the leader's log end.
    pub last_caught_up_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: NodeId, rack: Option<&str>, log_end: i64, caught_up: i64) -> ReadCandidate<'_> {
        ReadCandidate {
            id,
            rack,
            log_end,
            last_caught_up_ms: caught_up,
        }
    }

    #[test]
    fn names_parse_both_ways() {
        for s in ["leader", LEADER_CLASS] {
            assert_eq!(s.parse(), Ok(ReplicaSelector::Leader));
        }
        for s in ["rack", RACK_AWARE_CLASS] {
            assert_eq!(s.parse(), Ok(ReplicaSelector::RackAware));
        }
        assert!("nearest".parse::<ReplicaSelector>().is_err());
        assert_eq!(ReplicaSelector::default(), ReplicaSelector::Leader);
    }

    #[test]
    fn rack_aware_picks_the_freshest_replica_in_the_consumers_rack() {
        let all = [
            c(1, Some("a"), 100, 50),
            c(2, Some("b"), 90, 40),
            c(3, Some("b"), 100, 30),
            c(4, Some("c"), 100, 50),
        ];
        let s = ReplicaSelector::RackAware;
        assert_eq!(s.select("b", 1, &all), Some(3), "highest log end in rack b");
        assert_eq!(s.select("c", 1, &all), Some(4));
        assert_eq!(s.select("a", 1, &all), None, "the leader is in rack a");
        assert_eq!(s.select("z", 1, &all), None, "no replica in rack z");
        assert_eq!(s.select("", 1, &all), None, "the consumer names no rack");
        assert_eq!(ReplicaSelector::Leader.select("b", 1, &all), None);
        // Equal log ends: the most recently caught up, then the lowest id.
        let tied = [
            c(1, Some("a"), 10, 0),
            c(5, Some("b"), 10, 7),
            c(6, Some("b"), 10, 9),
            c(7, Some("b"), 10, 9),
        ];
        assert_eq!(s.select("b", 1, &tied), Some(6));
        // Brokers without a rack never match.
        let unracked = [c(1, None, 10, 0), c(2, None, 10, 0)];
        assert_eq!(s.select("b", 1, &unracked), None);
    }
}
