//! Replication throttles (Kafka's ReplicationQuotaManager): the config keys that name them, and
//! [`ReplicationQuota`], the sans-IO byte-rate limit a broker applies to the replicas those keys
//! mark as throttled.
//!
//! Kafka's scheme, which `kafka-reassign-partitions --throttle` and `kafka-configs` drive:
//! - a broker's rates, `leader.replication.throttled.rate` (bytes/s it serves to throttled
//!   followers) and `follower.replication.throttled.rate` (bytes/s it fetches for throttled
//!   replicas of its own), set per broker or cluster-wide;
//! - a topic's lists, `leader.replication.throttled.replicas` and
//!   `follower.replication.throttled.replicas`: `partition:broker` pairs, or `*` for all. The
//!   leader list names the brokers whose serving is throttled, the follower list the brokers
//!   whose fetching is;
//! - only replicas *outside* the ISR are ever throttled, so a throttle slows a reassignment's
//!   catch-up but never an acks=all produce.
//!
//! The limit is a token bucket: credit accrues at the rate, up to one second's worth, and every
//! throttled byte spends it; while the credit is negative the throttled replicas get nothing.
//! Time comes in as `now_ms`, so the simulator and production share this code.

/// Bytes per second this broker, as a leader, serves to throttled followers.
pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
/// Bytes per second this broker, as a follower, fetches for its throttled replicas.
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
/// Kafka's throttle on moving replicas between a broker's log directories. A broker here has
/// one data directory, so nothing moves between directories; the key is accepted (and shown)
/// because `kafka-reassign-partitions --verify` deletes it along with the two rates.
pub const LOG_DIRS_RATE: &str = "replica.alter.log.dirs.io.max.bytes.per.second";
/// Topic config: the `partition:broker` pairs (or `*`) whose serving as leader is throttled.
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
/// Topic config: the `partition:broker` pairs (or `*`) whose fetching as follower is throttled.
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";

/// The configs that can be set for one broker (Kafka's dynamic per-broker configs).
pub const BROKER_CONFIGS: &[&str] = &[LEADER_RATE, FOLLOWER_RATE, LOG_DIRS_RATE];

/// Kafka's default for the rates: Long.MAX_VALUE, no limit.
pub const RATE_UNLIMITED: &str = "9223372036854775807";

/// Most items a throttled-replicas list holds (a partition of every replica of 10,000
/// partitions at replication factor 5 fits).
pub const REPLICA_LIST_ITEMS_MAX: usize = 50_000;

/// Checks a rate value: a whole number of bytes per second, from 0.
pub fn validate_rate(value: &str) -> Result<(), String> {
    match value.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(()),
        _ => Err("must be a whole number of bytes per second, from 0".into()),
    }
}

/// A rate value as a limit: None when unset or at Kafka's "unlimited" (Long.MAX_VALUE).
pub fn parse_rate(value: Option<&String>) -> Option<u64> {
    let n = value?.trim().parse::<i64>().ok()?;
    (n >= 0 && n != i64::MAX).then_some(n as u64)
}

/// The items of a throttled-replicas list: `*`, or `partition:broker` pairs.
fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_pair(item: &str) -> Option<(i32, i32)> {
    let (partition, broker) = item.split_once(':')?;
    let partition = partition.trim().parse::<i32>().ok()?;
    let broker = broker.trim().parse::<i32>().ok()?;
    (partition >= 0 && broker >= 0).then_some((partition, broker))
}

/// Checks a throttled-replicas list: empty, `*`, or comma-separated `partition:broker` pairs.
pub fn validate_replicas(value: &str) -> Result<(), String> {
    let all: Vec<&str> = items(value).collect();
    if all.len() > REPLICA_LIST_ITEMS_MAX {
        return Err(format!("at most {REPLICA_LIST_ITEMS_MAX} items"));
    }
    if all == ["*"] {
        return Ok(());
    }
    match all.iter().find(|i| parse_pair(i).is_none()) {
        None => Ok(()),
        Some(bad) => Err(format!(
            "{bad:?} is not a partition:broker pair; the list is \"*\" or pairs such as \"0:1,0:2\""
        )),
    }
}

/// Whether a throttled-replicas list names partition `partition` on broker `broker`.
pub fn lists(value: &str, partition: i32, broker: i32) -> bool {
    items(value).any(|item| item == "*" || parse_pair(item) == Some((partition, broker)))
}

/// A list value with `add` appended (items already there are not repeated) or, when `remove`,
/// with those items taken out: IncrementalAlterConfigs' APPEND and SUBTRACT.
pub fn edit_list(value: &str, change: &str, remove: bool) -> String {
    let mut out: Vec<&str> = items(value).collect();
    for item in items(change) {
        if remove {
            out.retain(|i| *i != item);
        } else if !out.contains(&item) {
            out.push(item);
        }
    }
    out.join(",")
}

/// A byte-rate limit over time passed in: a token bucket holding at most one second of credit.
/// Credit is kept in byte-milliseconds (bytes × 1,000), so refills of a few milliseconds at low
/// rates lose nothing to rounding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationQuota {
    /// None: unlimited.
    rate_bytes_per_s: Option<u64>,
    credit_byte_ms: i128,
    refilled_ms: i64,
}

impl Default for ReplicationQuota {
    fn default() -> Self {
        ReplicationQuota {
            rate_bytes_per_s: None,
            credit_byte_ms: 0,
            refilled_ms: 0,
        }
    }
}

impl ReplicationQuota {
    /// The limit now in force (None: unlimited).
    pub fn rate(&self) -> Option<u64> {
        self.rate_bytes_per_s
    }

    /// Sets the limit; a new limit starts with a full second of credit.
    pub fn set_rate(&mut self, rate_bytes_per_s: Option<u64>, now_ms: i64) {
        if rate_bytes_per_s == self.rate_bytes_per_s {
            return;
        }
        self.rate_bytes_per_s = rate_bytes_per_s;
        self.credit_byte_ms = self.burst_byte_ms();
        self.refilled_ms = now_ms;
    }

    fn burst_byte_ms(&self) -> i128 {
        self.rate_bytes_per_s.map_or(0, |r| r as i128 * 1000)
    }

    fn refill(&mut self, now_ms: i64) {
        let Some(rate) = self.rate_bytes_per_s else {
            return;
        };
        // A clock that steps back refills nothing, and the time it steps back over is not
        // earned twice.
        if now_ms <= self.refilled_ms {
            return;
        }
        let elapsed_ms = (now_ms - self.refilled_ms) as i128;
        self.refilled_ms = now_ms;
        let burst = self.burst_byte_ms();
        self.credit_byte_ms = (self.credit_byte_ms + rate as i128 * elapsed_ms).min(burst);
        assert!(self.credit_byte_ms <= burst, "credit above one second");
    }

    /// Whether throttled replicas must wait: a limit is set and its credit is spent.
    pub fn exceeded(&mut self, now_ms: i64) -> bool {
        if self.rate_bytes_per_s.is_none() {
            return false;
        }
        self.refill(now_ms);
        self.credit_byte_ms < 0
    }

    /// Spends credit on `bytes` of throttled replication.
    pub fn record(&mut self, bytes: usize, now_ms: i64) {
        if self.rate_bytes_per_s.is_none() {
            return;
        }
        self.refill(now_ms);
        let before = self.credit_byte_ms;
        self.credit_byte_ms -= bytes as i128 * 1000;
        assert!(self.credit_byte_ms <= before, "spending never adds credit");
    }

    /// Most bytes one fetch of a throttled replica should carry: one second's worth (at least
    /// one byte, so a fetch still returns its first batch), or `max` when unlimited.
    pub fn fetch_bytes_max(&self, max: usize) -> usize {
        match self.rate_bytes_per_s {
            None => max,
            Some(rate) => usize::try_from(rate)
                .unwrap_or(usize::MAX)
                .clamp(1, max.max(1)),
        }
    }

    /// Milliseconds until the credit is back to zero (0 if it is not negative or unlimited).
    pub fn wait_ms(&self) -> u64 {
        match self.rate_bytes_per_s {
            Some(rate) if self.credit_byte_ms < 0 => {
                if rate == 0 {
                    return u64::MAX;
                }
                let owed = -self.credit_byte_ms;
                u64::try_from((owed + rate as i128 - 1) / rate as i128).unwrap_or(u64::MAX)
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_lets_through_its_rate_and_no_more() {
        let mut q = ReplicationQuota::default();
        assert!(!q.exceeded(0), "no limit by default");
        q.record(1 << 30, 0);
        assert!(!q.exceeded(0));
        q.set_rate(Some(1_000), 0);
        // One second of credit to start with.
        q.record(999, 0);
        assert!(!q.exceeded(0));
        q.record(2, 0);
        assert!(q.exceeded(0));
        assert_eq!(q.wait_ms(), 1, "1 byte owed at 1,000 bytes/s");
        assert!(!q.exceeded(1));
        // Over ten seconds, 10,000 bytes pass in 100-byte fetches, and the 101st fetch waits.
        let mut q = ReplicationQuota::default();
        q.set_rate(Some(1_000), 0);
        q.record(1_000, 0);
        let mut sent = 0;
        for now_ms in 0..10_000 {
            if !q.exceeded(now_ms) {
                q.record(100, now_ms);
                sent += 100;
            }
        }
        assert!((10_000..=10_100).contains(&sent), "sent {sent}");
        // An idle spell earns one second of credit at most.
        assert!(!q.exceeded(1_000_000));
        q.record(1_001, 1_000_000);
        assert!(q.exceeded(1_000_000));
    }

    #[test]
    fn a_clock_step_back_earns_nothing_and_a_new_rate_starts_fresh() {
        let mut q = ReplicationQuota::default();
        q.set_rate(Some(100), 5_000);
        q.record(300, 5_000);
        assert!(q.exceeded(4_000));
        assert!(q.exceeded(5_000), "the step back did not count as time");
        q.set_rate(Some(1_000), 5_000);
        assert!(!q.exceeded(5_000));
        q.set_rate(None, 5_000);
        q.record(1 << 40, 5_000);
        assert!(!q.exceeded(5_000));
        assert_eq!(q.wait_ms(), 0);
        let mut zero = ReplicationQuota::default();
        zero.set_rate(Some(0), 0);
        zero.record(1, 0);
        assert!(zero.exceeded(i64::MAX / 2), "a zero rate never refills");
    }

    #[test]
    fn throttled_replica_lists_parse_like_kafkas() {
        assert!(validate_replicas("").is_ok());
        assert!(validate_replicas("*").is_ok());
        assert!(validate_replicas("0:1, 0:2,1:3").is_ok());
        assert!(validate_replicas("0:1,*").is_err());
        assert!(validate_replicas("0-1").is_err());
        assert!(validate_replicas("a:1").is_err());
        assert!(validate_replicas("-1:1").is_err());
        assert!(lists("0:1, 0:2", 0, 2));
        assert!(!lists("0:1, 0:2", 1, 2));
        assert!(!lists("10:1", 1, 1));
        assert!(lists("*", 7, 9));
        assert!(!lists("", 0, 0));
        assert_eq!(edit_list("0:1", "0:2, 0:1", false), "0:1,0:2");
        assert_eq!(edit_list("0:1,0:2", "0:1", true), "0:2");
        assert!(validate_rate("0").is_ok());
        assert!(validate_rate("-1").is_err());
        assert!(validate_rate("1.5").is_err());
        assert_eq!(parse_rate(Some(&RATE_UNLIMITED.to_string())), None);
        assert_eq!(parse_rate(Some(&"1000".to_string())), Some(1000));
        assert_eq!(parse_rate(None), None);
        let q = ReplicationQuota::default();
        assert_eq!(q.fetch_bytes_max(8 << 20), 8 << 20);
        let mut q = ReplicationQuota::default();
        q.set_rate(Some(1 << 20), 0);
        assert_eq!(q.fetch_bytes_max(8 << 20), 1 << 20);
        q.set_rate(Some(0), 0);
        assert_eq!(q.fetch_bytes_max(8 << 20), 1);
    }
}
