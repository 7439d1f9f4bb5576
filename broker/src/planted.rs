//! Planted bugs: deliberate defects, compiled in only with the `planted-bugs` cargo feature, that
//! the simulator must catch. They prove the checkers can fail. Without the feature, [`enabled`]
//! is a constant `false` and every plant compiles away.

/// One planted defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlantedBug {
    /// Produce is acknowledged when the batch is written, before it is fsynced.
    AckBeforeFsync,
    /// Recovery after a crash checks batch structure but not the CRC.
    RecoverySkipsCrc,
    /// Fetch serves records past the high watermark (not yet durable).
    FetchPastHighWatermark,
    /// The group coordinator answers OffsetCommit (and applies the offsets) before the offset
    /// records are durable.
    CommitBeforePersist,
    /// A quorum voter grants a second vote in the same epoch to a different candidate.
    VoteTwice,
    /// The quorum leader advances the high watermark from its own log end, ignoring followers.
    HwFromLeader,
    /// The active controller elects a partition leader from any alive replica, not only from
    /// the ISR (an unclean election nobody asked for).
    OutOfIsrElection,
    /// A partition leader advances the high watermark while its ISR is below
    /// min.insync.replicas, past what the eligible leader replicas hold.
    HwBelowMinIsr,
    /// A replica's high-watermark checkpoint records its log end instead of its high
    /// watermark, so a restart calls an unreplicated suffix committed.
    HwCheckpointLogEnd,
    /// The quorum leader counts its observers (broker-only nodes) toward the high watermark as
    /// if they were voters.
    ObserverCounts,
    /// A broker that restarts on a replaced (wiped) data directory keeps its ISR and ELR
    /// memberships, as if its empty logs still held what the old directory did.
    ReplacedDirectoryKept,
    /// The active controller answers AllocateProducerIds without writing the log's next
    /// producer id, so every broker gets the same block.
    ProducerIdsReused,
    /// The active controller completes a reassignment (and lets replicas leave) as soon as
    /// the ISR says so, without hearing from the registered processes that would keep the data.
    ReassignTrustsIsr,
    /// A copy whose append fails for want of space is failed for good, as after a write error:
    /// it takes records again only after a restart.
    FullDiskFailsCopy,
    /// A metadata-log write refused for want of space ends the quorum, and the broker with it,
    /// instead of waiting for room.
    FullDiskEndsQuorum,
    /// A quorum voter that starts with nothing stored votes and stands at once, as if its
    /// empty log were all it ever acknowledged (a wiped disk's votes count again).
    WipedVoterVotes,
    /// The controller applies an AlterPartition whatever the partition epoch it names, so a
    /// late copy of an old request applies once the ISR it names is back.
    StaleAlterPartition,
    /// A follower told to truncate below its log start (an unclean leader that holds less
    /// than DeleteRecords left on it) stops at its log start, so a fully deleted log never
    /// changes and the leader says the same at every fetch.
    TruncationStopsAtLogStart,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 18] = [
        PlantedBug::AckBeforeFsync,
        PlantedBug::RecoverySkipsCrc,
        PlantedBug::FetchPastHighWatermark,
        PlantedBug::CommitBeforePersist,
        PlantedBug::VoteTwice,
        PlantedBug::HwFromLeader,
        PlantedBug::OutOfIsrElection,
        PlantedBug::HwBelowMinIsr,
        PlantedBug::HwCheckpointLogEnd,
        PlantedBug::ObserverCounts,
        PlantedBug::ReplacedDirectoryKept,
        PlantedBug::ProducerIdsReused,
        PlantedBug::ReassignTrustsIsr,
        PlantedBug::FullDiskFailsCopy,
        PlantedBug::FullDiskEndsQuorum,
        PlantedBug::WipedVoterVotes,
        PlantedBug::StaleAlterPartition,
        PlantedBug::TruncationStopsAtLogStart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::AckBeforeFsync => "ack-before-fsync",
            PlantedBug::RecoverySkipsCrc => "recovery-skips-crc",
            PlantedBug::FetchPastHighWatermark => "fetch-past-hw",
            PlantedBug::CommitBeforePersist => "commit-before-persist",
            PlantedBug::VoteTwice => "vote-twice",
            PlantedBug::HwFromLeader => "hw-from-leader",
            PlantedBug::OutOfIsrElection => "out-of-isr-election",
            PlantedBug::HwBelowMinIsr => "hw-below-min-isr",
            PlantedBug::HwCheckpointLogEnd => "hw-checkpoint-log-end",
            PlantedBug::ObserverCounts => "observer-counts",
            PlantedBug::ReplacedDirectoryKept => "replaced-directory-kept",
            PlantedBug::ProducerIdsReused => "producer-ids-reused",
            PlantedBug::ReassignTrustsIsr => "reassign-trusts-isr",
            PlantedBug::FullDiskFailsCopy => "full-disk-fails-copy",
            PlantedBug::FullDiskEndsQuorum => "full-disk-ends-quorum",
            PlantedBug::WipedVoterVotes => "wiped-voter-votes",
            PlantedBug::StaleAlterPartition => "stale-alter-partition",
            PlantedBug::TruncationStopsAtLogStart => "truncation-stops-at-log-start",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            PlantedBug::AckBeforeFsync => "acknowledge produce after the write, before fsync",
            PlantedBug::RecoverySkipsCrc => {
                "crash recovery trusts batch structure without checking the CRC"
            }
            PlantedBug::FetchPastHighWatermark => "fetch serves records above the high watermark",
            PlantedBug::CommitBeforePersist => {
                "the group coordinator acknowledges OffsetCommit before its records are durable"
            }
            PlantedBug::VoteTwice => {
                "a quorum voter grants a second vote in one epoch to a different candidate"
            }
            PlantedBug::HwFromLeader => {
                "the quorum leader, and a partition leader, advance the high watermark from their own log alone"
            }
            PlantedBug::OutOfIsrElection => {
                "the controller elects a partition leader from outside the ISR"
            }
            PlantedBug::HwBelowMinIsr => {
                "a partition leader advances the high watermark with its ISR below min.insync.replicas"
            }
            PlantedBug::HwCheckpointLogEnd => {
                "a replica checkpoints its log end as its high watermark"
            }
            PlantedBug::ObserverCounts => {
                "the quorum leader counts observers toward the high watermark"
            }
            PlantedBug::ReplacedDirectoryKept => {
                "a broker back on a wiped data directory keeps its ISR and ELR places"
            }
            PlantedBug::ProducerIdsReused => {
                "the controller hands every broker the same block of producer ids"
            }
            PlantedBug::ReassignTrustsIsr => {
                "the controller completes a reassignment on the ISR alone, unheard targets included"
            }
            PlantedBug::FullDiskFailsCopy => {
                "a copy refused an append for want of space fails until the broker restarts"
            }
            PlantedBug::FullDiskEndsQuorum => {
                "a metadata-log write refused for want of space stops the broker"
            }
            PlantedBug::WipedVoterVotes => {
                "a quorum voter back on an empty disk votes at once, as if it held what it acknowledged"
            }
            PlantedBug::StaleAlterPartition => {
                "the controller applies an AlterPartition from an older partition epoch"
            }
            PlantedBug::TruncationStopsAtLogStart => {
                "a follower told to truncate below its log start keeps its log start"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|b| b.name() == name)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

#[cfg(feature = "planted-bugs")]
static ENABLED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Whether `bug` is planted right now.
#[inline]
pub fn enabled(bug: PlantedBug) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        ENABLED.load(std::sync::atomic::Ordering::Relaxed) & bug.bit() != 0
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug.bit();
        false
    }
}

/// Plants exactly `bugs` (process-wide; the simulator runs one seed at a time). Returns false
/// when the crate was built without the `planted-bugs` feature, so nothing can be planted.
pub fn plant(bugs: &[PlantedBug]) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        let mask = bugs.iter().fold(0, |m, b| m | b.bit());
        ENABLED.store(mask, std::sync::atomic::Ordering::Relaxed);
        true
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        bugs.is_empty()
    }
}
