//! Tests of the group coordinator state machine: every transition, fencing and error code, the
//! persist hand-shake, replay, and a proptest of random request sequences against the invariants.
//!
//! Every response is encoded at its request's version (kafka-protocol refuses fields a version
//! lacks), and every request must be answered exactly once.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, ListGroupsRequest,
    OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;
use proptest::prelude::*;

use super::*;

const GROUP: &str = "g";
const NONE: i16 = 0;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

macro_rules! expect {
    ($r:expr, $variant:ident) => {
        match $r {
            GroupResponse::$variant(x) => x,
            other => panic!("expected {}, got {other:?}", stringify!($variant)),
        }
    };
}

fn test_config() -> GroupConfig {
    GroupConfig::default()
}

/// Encode a response at `version`: kafka-protocol fails on fields the version lacks.
fn encode_check(r: &GroupResponse, version: i16) {
    let mut buf = BytesMut::new();
    let result = match r {
        GroupResponse::Join(x) => x.encode(&mut buf, version),
        GroupResponse::Sync(x) => x.encode(&mut buf, version),
        GroupResponse::Heartbeat(x) => x.encode(&mut buf, version),
        GroupResponse::Leave(x) => x.encode(&mut buf, version),
        GroupResponse::OffsetCommit(x) => x.encode(&mut buf, version),
        GroupResponse::OffsetFetch(x) => x.encode(&mut buf, version),
        GroupResponse::OffsetDelete(x) => x.encode(&mut buf, version),
        GroupResponse::Describe(x) => x.encode(&mut buf, version),
        GroupResponse::List(x) => x.encode(&mut buf, version),
        GroupResponse::Delete(x) => x.encode(&mut buf, version),
    };
    if let Err(e) = result {
        panic!("response does not encode at v{version}: {e} {r:?}");
    }
}

/// A test harness: a coordinator, a clock, and bookkeeping of outstanding requests.
struct H {
    c: GroupCoordinator,
    now: i64,
    next_id: RequestId,
    /// Requests not answered yet → their version.
    outstanding: BTreeMap<RequestId, i16>,
    ready: BTreeMap<RequestId, GroupResponse>,
    /// Every record polled, in order (the "log").
    log: Vec<(PersistId, GroupRecord)>,
    polled_through: PersistId,
    settled_through: PersistId,
}

impl H {
    fn new() -> Self {
        Self::with(test_config())
    }

    fn with(config: GroupConfig) -> Self {
        H {
            c: GroupCoordinator::new(config, 7),
            now: 1_000_000,
            next_id: 0,
            outstanding: BTreeMap::new(),
            ready: BTreeMap::new(),
            log: Vec::new(),
            polled_through: 0,
            settled_through: 0,
        }
    }

    fn send(&mut self, version: i16, request: GroupRequest) -> RequestId {
        self.next_id += 1;
        let id = self.next_id;
        self.outstanding.insert(id, version);
        self.c
            .handle(self.now, id, version, "client", "/10.0.0.1", request);
        self.drain();
        id
    }

    fn drain(&mut self) {
        while let Some((id, r)) = self.c.poll_response() {
            let version = self
                .outstanding
                .remove(&id)
                .unwrap_or_else(|| panic!("request {id} answered twice or never sent"));
            encode_check(&r, version);
            self.ready.insert(id, r);
        }
        self.c.check_invariants();
    }

    fn take(&mut self, id: RequestId) -> GroupResponse {
        self.drain();
        self.ready
            .remove(&id)
            .unwrap_or_else(|| panic!("no response to request {id} yet"))
    }

    fn waiting(&mut self, id: RequestId) -> bool {
        self.drain();
        self.outstanding.contains_key(&id)
    }

    fn poll_records(&mut self) -> Vec<GroupRecord> {
        let mut new = Vec::new();
        while let Some((id, r)) = self.c.poll_record() {
            assert!(id > self.polled_through, "persist ids increase");
            self.polled_through = id;
            self.log.push((id, r.clone()));
            new.push(r);
        }
        new
    }

    /// Persist everything queued.
    fn persist(&mut self) -> Vec<GroupRecord> {
        let new = self.poll_records();
        if self.polled_through > self.settled_through {
            self.settled_through = self.polled_through;
            self.c.persisted(self.polled_through, self.now);
        }
        self.drain();
        new
    }

    fn fail_persist(&mut self) {
        self.poll_records();
        if self.polled_through > self.settled_through {
            self.settled_through = self.polled_through;
            self.c.persist_failed(self.polled_through, self.now);
        }
        self.drain();
    }

    fn advance(&mut self, ms: i64) {
        self.now += ms;
        self.c.tick(self.now);
        self.drain();
    }

    fn state(&self) -> Option<&'static str> {
        self.c.group_state(GROUP)
    }

    // --- requests -------------------------------------------------------------------------

    fn join(&mut self, version: i16, member: &str, instance: Option<&str>) -> RequestId {
        self.join_with(version, member, instance, &[("range", b"m")])
    }

    fn join_with(
        &mut self,
        version: i16,
        member: &str,
        instance: Option<&str>,
        protocols: &[(&str, &[u8])],
    ) -> RequestId {
        self.send(
            version,
            GroupRequest::Join(join_req(member, instance, protocols)),
        )
    }

    fn sync(
        &mut self,
        version: i16,
        generation: i32,
        member: &str,
        assign: &[(&str, &[u8])],
    ) -> RequestId {
        let mut r = SyncGroupRequest::default();
        r.group_id = GroupId(s(GROUP));
        r.generation_id = generation;
        r.member_id = s(member);
        r.assignments = assign
            .iter()
            .map(|(m, a)| {
                let mut x = SyncGroupRequestAssignment::default();
                x.member_id = s(m);
                x.assignment = Bytes::copy_from_slice(a);
                x
            })
            .collect();
        self.send(version, GroupRequest::Sync(r))
    }

    fn sync_static(&mut self, generation: i32, member: &str, instance: &str) -> RequestId {
        let mut r = SyncGroupRequest::default();
        r.group_id = GroupId(s(GROUP));
        r.generation_id = generation;
        r.member_id = s(member);
        r.group_instance_id = Some(s(instance));
        self.send(3, GroupRequest::Sync(r))
    }

    fn heartbeat(&mut self, generation: i32, member: &str, instance: Option<&str>) -> i16 {
        let mut r = HeartbeatRequest::default();
        r.group_id = GroupId(s(GROUP));
        r.generation_id = generation;
        r.member_id = s(member);
        r.group_instance_id = instance.map(s);
        let id = self.send(3, GroupRequest::Heartbeat(r));
        expect!(self.take(id), Heartbeat).error_code
    }

    fn commit(&mut self, generation: i32, member: &str, offsets: &[(&str, i32, i64)]) -> RequestId {
        self.send(
            8,
            GroupRequest::OffsetCommit(commit_req(generation, member, offsets)),
        )
    }

    fn fetch(
        &mut self,
        version: i16,
        topics: Option<&[(&str, &[i32])]>,
    ) -> Vec<(String, i32, i64)> {
        let topics_v = topics.map(|ts| {
            ts.iter()
                .map(|(t, ps)| (t.to_string(), ps.to_vec()))
                .collect::<Vec<_>>()
        });
        let mut r = OffsetFetchRequest::default();
        if version <= 7 {
            r.group_id = GroupId(s(GROUP));
            r.topics = topics_v.map(|ts| {
                ts.into_iter()
                    .map(|(t, ps)| {
                        let mut x = OffsetFetchRequestTopic::default();
                        x.name = TopicName(s(&t));
                        x.partition_indexes = ps;
                        x
                    })
                    .collect()
            });
        } else {
            let mut g = OffsetFetchRequestGroup::default();
            g.group_id = GroupId(s(GROUP));
            g.topics = topics_v.map(|ts| {
                ts.into_iter()
                    .map(|(t, ps)| {
                        let mut x =
                            kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopics::default();
                        x.name = TopicName(s(&t));
                        x.partition_indexes = ps;
                        x
                    })
                    .collect()
            });
            r.groups = vec![g];
        }
        let id = self.send(version, GroupRequest::OffsetFetch(r));
        let resp = expect!(self.take(id), OffsetFetch);
        let mut out = Vec::new();
        if version <= 7 {
            for t in resp.topics {
                for p in t.partitions {
                    assert_eq!(p.error_code, NONE);
                    out.push((t.name.0.to_string(), p.partition_index, p.committed_offset));
                }
            }
        } else {
            for g in resp.groups {
                for t in g.topics {
                    for p in t.partitions {
                        out.push((t.name.0.to_string(), p.partition_index, p.committed_offset));
                    }
                }
            }
        }
        out
    }

    /// A lone member's first join (v5, MEMBER_ID_REQUIRED round trip, initial delay) and sync.
    fn lone_member(&mut self) -> (String, i32) {
        let id = self.join(5, "", None);
        let r = expect!(self.take(id), Join);
        assert_eq!(r.error_code, code(ResponseError::MemberIdRequired));
        let member = r.member_id.to_string();
        let id = self.join(5, &member, None);
        assert!(self.waiting(id));
        self.advance(3_000);
        let r = expect!(self.take(id), Join);
        assert_eq!(r.error_code, NONE);
        let generation = r.generation_id;
        let sid = self.sync(3, generation, &member, &[(&member, b"A")]);
        self.persist();
        let r = expect!(self.take(sid), Sync);
        assert_eq!(r.error_code, NONE);
        assert_eq!(self.state(), Some("Stable"));
        (member, generation)
    }
}

fn join_req(member: &str, instance: Option<&str>, protocols: &[(&str, &[u8])]) -> JoinGroupRequest {
    let mut r = JoinGroupRequest::default();
    r.group_id = GroupId(s(GROUP));
    r.session_timeout_ms = 10_000;
    r.rebalance_timeout_ms = 30_000;
    r.member_id = s(member);
    r.group_instance_id = instance.map(s);
    r.protocol_type = s("consumer");
    r.protocols = protocols
        .iter()
        .map(|(n, m)| {
            let mut p = JoinGroupRequestProtocol::default();
            p.name = s(n);
            p.metadata = Bytes::copy_from_slice(m);
            p
        })
        .collect();
    r
}

fn commit_req(generation: i32, member: &str, offsets: &[(&str, i32, i64)]) -> OffsetCommitRequest {
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(s(GROUP));
    r.generation_id_or_member_epoch = generation;
    r.member_id = s(member);
    let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for (t, p, o) in offsets {
        by_topic.entry(t).or_default().push((*p, *o));
    }
    r.topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            let mut topic = OffsetCommitRequestTopic::default();
            topic.name = TopicName(s(t));
            topic.partitions = ps
                .into_iter()
                .map(|(p, o)| {
                    let mut x = OffsetCommitRequestPartition::default();
                    x.partition_index = p;
                    x.committed_offset = o;
                    x.committed_leader_epoch = 3;
                    x.committed_metadata = Some(s("meta"));
                    x
                })
                .collect();
            topic
        })
        .collect();
    r
}

fn commit_errors(r: GroupResponse) -> Vec<i16> {
    expect!(r, OffsetCommit)
        .topics
        .into_iter()
        .flat_map(|t| t.partitions.into_iter().map(|p| p.error_code))
        .collect()
}

fn subscription(topics: &[&str]) -> Vec<u8> {
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = topics.iter().map(|t| s(t)).collect();
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1i16.to_be_bytes());
    sub.encode(&mut buf, 1).expect("encode subscription");
    buf.to_vec()
}

// ---------------------------------------------------------------------------------------------
// Joining

#[test]
fn lone_member_joins_after_the_initial_delay_and_becomes_stable() {
    let mut h = H::new();
    assert_eq!(h.c.poll_timeout(), None);
    let id = h.join(5, "", None);
    let r = expect!(h.take(id), Join);
    assert_eq!(r.error_code, code(ResponseError::MemberIdRequired));
    let member = r.member_id.to_string();
    assert!(member.starts_with("client-"), "{member}");
    assert_eq!(
        h.state(),
        Some("Empty"),
        "a pending member does not start a rebalance"
    );
    // The pending member must come back within its session timeout.
    assert_eq!(h.c.poll_timeout(), Some(h.now + 10_000));

    let id = h.join(5, &member, None);
    assert_eq!(h.state(), Some("PreparingRebalance"));
    assert_eq!(h.c.poll_timeout(), Some(h.now + 3_000), "the initial delay");
    h.advance(2_999);
    assert!(h.waiting(id), "still within the initial delay");
    h.advance(1);
    let r = expect!(h.take(id), Join);
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.leader.as_str(), member);
    assert_eq!(r.member_id.as_str(), member);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(r.members.len(), 1, "the leader gets the members");
    assert_eq!(r.members[0].metadata.as_ref(), b"m");
    assert_eq!(h.state(), Some("CompletingRebalance"));

    let sid = h.sync(5, 1, &member, &[(&member, b"assignment")]);
    let records = h.poll_records();
    assert!(
        matches!(&records[..], [GroupRecord::Group { generation: 1, members, .. }]
        if members.len() == 1 && members[0].assignment == b"assignment")
    );
    assert!(
        h.waiting(sid),
        "the leader's sync waits for the Group record"
    );
    assert_eq!(h.state(), Some("CompletingRebalance"));
    h.persist();
    let r = expect!(h.take(sid), Sync);
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.assignment.as_ref(), b"assignment");
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(h.state(), Some("Stable"));
    assert_eq!(h.heartbeat(1, &member, None), NONE);
    assert_eq!(
        h.c.poll_timeout(),
        Some(h.now + 10_000),
        "the session deadline"
    );
}

#[test]
fn join_v3_adds_the_member_directly() {
    let mut h = H::new();
    let id = h.join(3, "", None);
    assert!(h.waiting(id));
    h.advance(3_000);
    let r = expect!(h.take(id), Join);
    assert_eq!(r.error_code, NONE);
    assert!(!r.member_id.is_empty());
    assert_eq!(r.leader, r.member_id);
}

#[test]
fn join_v0_to_v9_responses_encode() {
    for version in 0..=9 {
        let mut h = H::new();
        let id = h.join(version, "", None);
        if version >= 4 {
            let member = expect!(h.take(id), Join).member_id.to_string();
            let id = h.join(version, &member, None);
            h.advance(3_000);
            assert_eq!(expect!(h.take(id), Join).error_code, NONE);
        } else {
            h.advance(3_000);
            assert_eq!(expect!(h.take(id), Join).error_code, NONE);
        }
    }
}

#[test]
fn join_validation_errors() {
    let mut h = H::with(GroupConfig {
        members_max: 2,
        ..test_config()
    });
    let mut r = join_req("", None, &[("range", b"")]);
    r.group_id = GroupId(s(""));
    let id = h.send(5, GroupRequest::Join(r));
    assert_eq!(
        expect!(h.take(id), Join).error_code,
        code(ResponseError::InvalidGroupId)
    );

    for timeout in [5_999, 1_800_001] {
        let mut r = join_req("", None, &[("range", b"")]);
        r.session_timeout_ms = timeout;
        let id = h.send(5, GroupRequest::Join(r));
        let e = expect!(h.take(id), Join).error_code;
        assert_eq!(e, code(ResponseError::InvalidSessionTimeout));
    }

    let id = h.join(5, "nobody", None);
    assert_eq!(
        expect!(h.take(id), Join).error_code,
        code(ResponseError::UnknownMemberId)
    );
    assert_eq!(h.state(), None, "failed joins leave no group behind");

    let id = h.join_with(5, "", None, &[]);
    let e = expect!(h.take(id), Join).error_code;
    assert_eq!(
        e,
        code(ResponseError::InconsistentGroupProtocol),
        "no protocols"
    );

    // One member with "range"; "roundrobin"-only and another protocol type are inconsistent.
    let first = h.join(3, "", None);
    let id = h.join_with(3, "", None, &[("roundrobin", b"")]);
    let e = expect!(h.take(id), Join).error_code;
    assert_eq!(e, code(ResponseError::InconsistentGroupProtocol));
    let mut r = join_req("", None, &[("range", b"")]);
    r.protocol_type = s("connect");
    let id = h.send(3, GroupRequest::Join(r));
    let e = expect!(h.take(id), Join).error_code;
    assert_eq!(e, code(ResponseError::InconsistentGroupProtocol));

    // members_max = 2: a pending member counts.
    let second = h.join(5, "", None);
    assert_eq!(
        expect!(h.take(second), Join).error_code,
        code(ResponseError::MemberIdRequired)
    );
    let third = h.join(5, "", None);
    assert_eq!(
        expect!(h.take(third), Join).error_code,
        code(ResponseError::GroupMaxSizeReached)
    );
    assert!(h.waiting(first));
}

#[test]
fn groups_max_refuses_new_groups() {
    let mut h = H::with(GroupConfig {
        groups_max: 1,
        ..test_config()
    });
    h.join(3, "", None);
    let mut r = join_req("", None, &[("range", b"")]);
    r.group_id = GroupId(s("other"));
    let id = h.send(3, GroupRequest::Join(r));
    let e = expect!(h.take(id), Join).error_code;
    assert_eq!(e, code(ResponseError::CoordinatorNotAvailable));
}

#[test]
fn initial_delay_restarts_for_each_new_member_up_to_the_rebalance_timeout() {
    let mut h = H::new();
    let a = h.join(3, "", None);
    h.advance(2_000);
    let b = h.join(3, "", None);
    h.advance(1_000); // first delay ends; b joined meanwhile: extend by another delay
    assert!(h.waiting(a) && h.waiting(b));
    h.advance(2_999);
    assert!(h.waiting(a));
    h.advance(1);
    let ra = expect!(h.take(a), Join);
    let rb = expect!(h.take(b), Join);
    assert_eq!((ra.generation_id, rb.generation_id), (1, 1));
    assert_eq!(ra.leader, rb.leader);
    assert_eq!(
        ra.members.len() + rb.members.len(),
        2,
        "only the leader gets the members"
    );
}

#[test]
fn second_member_triggers_a_rebalance_and_fences_the_old_generation() {
    let mut h = H::new();
    let (a, g1) = h.lone_member();
    let cid = h.commit(g1, &a, &[("t", 0, 5)]);
    h.persist();
    assert_eq!(commit_errors(h.take(cid)), vec![NONE]);

    let bj = h.join(3, "", None);
    assert_eq!(h.state(), Some("PreparingRebalance"));
    assert_eq!(
        h.heartbeat(g1, &a, None),
        code(ResponseError::RebalanceInProgress)
    );
    let sid = h.sync(3, g1, &a, &[]);
    assert_eq!(
        expect!(h.take(sid), Sync).error_code,
        code(ResponseError::RebalanceInProgress)
    );
    // Commits of the current generation are still allowed while preparing (eager revocation).
    let cid = h.commit(g1, &a, &[("t", 0, 6)]);
    h.persist();
    assert_eq!(commit_errors(h.take(cid)), vec![NONE]);
    assert!(h.waiting(bj));

    let aj = h.join(3, &a, None);
    let ra = expect!(h.take(aj), Join);
    let rb = expect!(h.take(bj), Join);
    let g2 = ra.generation_id;
    assert_eq!(g2, g1 + 1);
    assert_eq!(rb.generation_id, g2);
    assert_eq!(ra.leader.as_str(), a, "the leader stays the leader");
    assert_eq!(ra.members.len(), 2);
    assert!(rb.members.is_empty());
    let b = rb.member_id.to_string();
    assert_eq!(h.state(), Some("CompletingRebalance"));

    // CompletingRebalance: heartbeats are fine, commits are not.
    assert_eq!(h.heartbeat(g2, &b, None), NONE);
    let cid = h.commit(g2, &b, &[("t", 1, 1)]);
    assert_eq!(
        commit_errors(h.take(cid)),
        vec![code(ResponseError::RebalanceInProgress)]
    );

    // The follower's sync waits for the leader's.
    let sb = h.sync(3, g2, &b, &[]);
    assert!(h.waiting(sb));
    let sa = h.sync(3, g2, &a, &[(&a, b"A"), (&b, b"B")]);
    assert!(h.waiting(sb) && h.waiting(sa));
    h.persist();
    assert_eq!(expect!(h.take(sa), Sync).assignment.as_ref(), b"A");
    assert_eq!(expect!(h.take(sb), Sync).assignment.as_ref(), b"B");
    assert_eq!(h.state(), Some("Stable"));

    // The old generation is fenced everywhere.
    assert_eq!(
        h.heartbeat(g1, &a, None),
        code(ResponseError::IllegalGeneration)
    );
    let sid = h.sync(3, g1, &a, &[]);
    assert_eq!(
        expect!(h.take(sid), Sync).error_code,
        code(ResponseError::IllegalGeneration)
    );
    let cid = h.commit(g1, &a, &[("t", 0, 7)]);
    assert_eq!(
        commit_errors(h.take(cid)),
        vec![code(ResponseError::IllegalGeneration)]
    );
    // Unknown members.
    assert_eq!(
        h.heartbeat(g2, "ghost", None),
        code(ResponseError::UnknownMemberId)
    );
    let cid = h.commit(g2, "ghost", &[("t", 0, 7)]);
    assert_eq!(
        commit_errors(h.take(cid)),
        vec![code(ResponseError::UnknownMemberId)]
    );
    let cid = h.commit(-1, "", &[("t", 0, 7)]);
    assert_eq!(
        commit_errors(h.take(cid)),
        vec![code(ResponseError::UnknownMemberId)],
        "a standalone commit to a group with members"
    );
    // A Stable sync answers the current assignment at once.
    let sid = h.sync(3, g2, &b, &[]);
    assert_eq!(expect!(h.take(sid), Sync).assignment.as_ref(), b"B");
}

#[test]
fn stable_follower_rejoin_gets_the_current_generation_and_leader_rejoin_rebalances() {
    let mut h = H::new();
    let (a, g1) = h.lone_member();
    let bj = h.join(3, "", None);
    let aj = h.join(3, &a, None);
    let b = expect!(h.take(bj), Join).member_id.to_string();
    let g2 = expect!(h.take(aj), Join).generation_id;
    h.sync(3, g2, &a, &[]);
    h.sync(3, g2, &b, &[]);
    h.persist();
    assert_eq!(h.state(), Some("Stable"));
    assert!(g2 > g1);

    let id = h.join(3, &b, None);
    let r = expect!(h.take(id), Join);
    assert_eq!((r.error_code, r.generation_id), (NONE, g2));
    assert_eq!(
        h.state(),
        Some("Stable"),
        "an unchanged follower rejoin is not a rebalance"
    );

    let id = h.join_with(3, &b, None, &[("range", b"changed")]);
    assert!(h.waiting(id));
    assert_eq!(
        h.state(),
        Some("PreparingRebalance"),
        "changed metadata rebalances"
    );
}

#[test]
fn sync_protocol_mismatch_v5() {
    let mut h = H::new();
    let (a, g) = h.lone_member();
    let mut r = SyncGroupRequest::default();
    r.group_id = GroupId(s(GROUP));
    r.generation_id = g;
    r.member_id = s(&a);
    r.protocol_type = Some(s("consumer"));
    r.protocol_name = Some(s("roundrobin"));
    let id = h.send(5, GroupRequest::Sync(r.clone()));
    let e = expect!(h.take(id), Sync).error_code;
    assert_eq!(e, code(ResponseError::InconsistentGroupProtocol));
    r.protocol_name = Some(s("range"));
    let id = h.send(5, GroupRequest::Sync(r));
    assert_eq!(expect!(h.take(id), Sync).error_code, NONE);
    let id = h.sync(3, g, "ghost", &[]);
    assert_eq!(
        expect!(h.take(id), Sync).error_code,
        code(ResponseError::UnknownMemberId)
    );
}

// ---------------------------------------------------------------------------------------------
// Timeouts

#[test]
fn rebalance_timeout_removes_a_member_that_does_not_rejoin() {
    let mut h = H::new();
    let (a, _) = h.lone_member();
    let bj = h.join(3, "", None);
    // a keeps heartbeating (REBALANCE_IN_PROGRESS) but never rejoins.
    for _ in 0..5 {
        h.advance(5_000);
        assert_eq!(
            h.heartbeat(1, &a, None),
            code(ResponseError::RebalanceInProgress)
        );
    }
    assert!(h.waiting(bj));
    h.advance(5_000); // 30 s rebalance timeout
    let rb = expect!(h.take(bj), Join);
    assert_eq!(rb.error_code, NONE);
    assert_eq!(rb.generation_id, 2);
    assert_eq!(rb.leader, rb.member_id, "the remaining member leads");
    assert_eq!(rb.members.len(), 1);
    assert_eq!(
        h.heartbeat(2, &a, None),
        code(ResponseError::UnknownMemberId)
    );
}

#[test]
fn session_expiry_removes_a_silent_member_and_rebalances_then_empties() {
    let mut h = H::new();
    let (a, _) = h.lone_member();
    let bj = h.join(3, "", None);
    let aj = h.join(3, &a, None);
    let b = expect!(h.take(bj), Join).member_id.to_string();
    expect!(h.take(aj), Join);
    h.sync(3, 2, &a, &[]);
    h.sync(3, 2, &b, &[]);
    h.persist();
    assert_eq!(h.state(), Some("Stable"));

    // b heartbeats, a goes silent.
    for _ in 0..2 {
        h.advance(4_000);
        assert_eq!(h.heartbeat(2, &b, None), NONE);
    }
    assert_eq!(h.state(), Some("Stable"));
    h.advance(2_000);
    assert_eq!(
        h.state(),
        Some("PreparingRebalance"),
        "a expired after 10 s"
    );
    assert_eq!(
        h.heartbeat(2, &a, None),
        code(ResponseError::UnknownMemberId)
    );
    let bj = h.join(3, &b, None);
    let r = expect!(h.take(bj), Join);
    assert_eq!((r.generation_id, r.leader.to_string()), (3, b.clone()));
    let sid = h.sync(3, 3, &b, &[]);
    h.persist();
    assert_eq!(expect!(h.take(sid), Sync).error_code, NONE);

    // b goes silent too: the group empties and persists that.
    h.advance(10_000);
    assert_eq!(h.state(), Some("Empty"));
    let records = h.poll_records();
    assert!(
        matches!(&records[..], [GroupRecord::Group { generation: 4, members, protocol: None, .. }]
        if members.is_empty())
    );
    assert_eq!(h.c.poll_timeout(), None);
}

#[test]
fn members_with_parked_requests_do_not_expire() {
    let mut h = H::new();
    let (a, _) = h.lone_member();
    let bj = h.join(3, "", None);
    let aj = h.join(3, &a, None);
    let b = expect!(h.take(bj), Join).member_id.to_string();
    expect!(h.take(aj), Join);
    let sb = h.sync(3, 2, &b, &[]);
    // The leader takes 20 s (beyond b's 10 s session) but within the rebalance timeout.
    h.advance(9_000);
    assert_eq!(h.heartbeat(2, &a, None), NONE);
    h.advance(9_000);
    assert_eq!(h.heartbeat(2, &a, None), NONE);
    let sa = h.sync(3, 2, &a, &[]);
    h.persist();
    assert_eq!(expect!(h.take(sb), Sync).error_code, NONE);
    assert_eq!(expect!(h.take(sa), Sync).error_code, NONE);
}

#[test]
fn a_leader_that_never_syncs_is_removed_after_the_rebalance_timeout() {
    let mut h = H::new();
    let (a, _) = h.lone_member();
    let bj = h.join(3, "", None);
    let aj = h.join(3, &a, None);
    let b = expect!(h.take(bj), Join).member_id.to_string();
    expect!(h.take(aj), Join);
    let sb = h.sync(3, 2, &b, &[]);
    for _ in 0..6 {
        h.advance(5_000);
        h.heartbeat(2, &a, None);
    }
    // a heartbeats but never syncs: after 30 s it is removed; b's sync is told to rejoin.
    assert_eq!(
        expect!(h.take(sb), Sync).error_code,
        code(ResponseError::RebalanceInProgress)
    );
    assert_eq!(
        h.heartbeat(2, &a, None),
        code(ResponseError::UnknownMemberId)
    );
}

#[test]
fn pending_member_expires() {
    let mut h = H::new();
    let id = h.join(5, "", None);
    let member = expect!(h.take(id), Join).member_id.to_string();
    h.advance(10_000);
    assert_eq!(h.state(), None, "the group held only the pending member");
    let id = h.join(5, &member, None);
    assert_eq!(
        expect!(h.take(id), Join).error_code,
        code(ResponseError::UnknownMemberId)
    );
}

// ---------------------------------------------------------------------------------------------
// Leaving

#[test]
fn leave_single_v1_and_batched_v3() {
    let mut h = H::new();
    let (a, _) = h.lone_member();
    let mut r = LeaveGroupRequest::default();
    r.group_id = GroupId(s(GROUP));
    r.member_id = s("ghost");
    let id = h.send(1, GroupRequest::Leave(r.clone()));
    assert_eq!(
        expect!(h.take(id), Leave).error_code,
        code(ResponseError::UnknownMemberId)
    );
    r.member_id = s(&a);
    let id = h.send(1, GroupRequest::Leave(r));
    assert_eq!(expect!(h.take(id), Leave).error_code, NONE);
    assert_eq!(h.state(), Some("Empty"), "the last member left");

    // Two members, one static; leave both plus an unknown one in one v3 request.
    let aj = h.join(5, "", Some("inst-a"));
    let bj = h.join(3, "", None);
    h.advance(6_000);
    let a = expect!(h.take(aj), Join).member_id.to_string();
    let b = expect!(h.take(bj), Join).member_id.to_string();
    let mut r = LeaveGroupRequest::default();
    r.group_id = GroupId(s(GROUP));
    let identity = |m: &str, i: Option<&str>| {
        let mut x = MemberIdentity::default();
        x.member_id = s(m);
        x.group_instance_id = i.map(s);
        x
    };
    r.members = vec![
        identity("", Some("inst-a")),
        identity(&b, None),
        identity("ghost", None),
        identity("", Some("inst-unknown")),
    ];
    let id = h.send(3, GroupRequest::Leave(r));
    let resp = expect!(h.take(id), Leave);
    assert_eq!(resp.error_code, NONE);
    let errors: Vec<i16> = resp.members.iter().map(|m| m.error_code).collect();
    let unknown = code(ResponseError::UnknownMemberId);
    assert_eq!(errors, vec![NONE, NONE, unknown, unknown]);
    assert_eq!(resp.members[0].group_instance_id.as_deref(), Some("inst-a"));
    assert_eq!(h.state(), Some("Empty"));
    assert_eq!(
        h.heartbeat(2, &a, Some("inst-a")),
        code(ResponseError::UnknownMemberId)
    );
}

#[test]
fn leave_during_the_join_phase_answers_the_parked_join() {
    let mut h = H::new();
    let (a, _) = h.lone_member();
    let bj = h.join(3, "", None);
    let aj = h.join(3, &a, None);
    let b = expect!(h.take(bj), Join).member_id.to_string();
    expect!(h.take(aj), Join);
    let sa = h.sync(3, 2, &a, &[]);
    h.persist();
    expect!(h.take(sa), Sync);
    // a rejoins (rebalance); b leaves instead of rejoining: the join completes without b.
    let aj = h.join_with(3, &a, None, &[("range", b"new")]);
    assert!(h.waiting(aj));
    let mut r = LeaveGroupRequest::default();
    r.group_id = GroupId(s(GROUP));
    r.member_id = s(&b);
    h.send(0, GroupRequest::Leave(r));
    let r = expect!(h.take(aj), Join);
    assert_eq!(
        (r.error_code, r.generation_id, r.members.len()),
        (NONE, 3, 1)
    );
}

// ---------------------------------------------------------------------------------------------
// Static membership

#[test]
fn static_member_rejoin_within_the_session_keeps_the_assignment_without_a_rebalance() {
    let mut h = H::new();
    let aj = h.join(5, "", Some("ia"));
    let bj = h.join(5, "", Some("ib"));
    h.advance(6_000);
    let ra = expect!(h.take(aj), Join);
    let rb = expect!(h.take(bj), Join);
    let (a, b) = (ra.member_id.to_string(), rb.member_id.to_string());
    assert!(a.starts_with("ia-") && b.starts_with("ib-"));
    let leader = ra.leader.to_string();
    let (leader_inst, follower, follower_inst) = if leader == a {
        ("ia", b.clone(), "ib")
    } else {
        ("ib", a.clone(), "ia")
    };
    let s1 = h.sync(3, 1, &leader, &[(&a, b"A"), (&b, b"B")]);
    let s2 = h.sync(3, 1, &follower, &[]);
    h.persist();
    expect!(h.take(s1), Sync);
    let follower_assignment = expect!(h.take(s2), Sync).assignment;

    // The follower restarts: same instance id, no member id.
    h.advance(5_000);
    let id = h.join(5, "", Some(follower_inst));
    let records = h.poll_records();
    assert!(matches!(
        &records[..],
        [GroupRecord::Group { generation: 1, .. }]
    ));
    assert!(
        h.waiting(id),
        "the new member id is persisted before it is handed out"
    );
    h.persist();
    let r = expect!(h.take(id), Join);
    assert_eq!((r.error_code, r.generation_id), (NONE, 1));
    assert!(r.members.is_empty());
    let new_follower = r.member_id.to_string();
    assert_ne!(new_follower, follower);
    assert_eq!(h.state(), Some("Stable"), "no rebalance");
    let sid = h.sync_static(1, &new_follower, follower_inst);
    assert_eq!(expect!(h.take(sid), Sync).assignment, follower_assignment);

    // The old member id is fenced.
    assert_eq!(
        h.heartbeat(1, &follower, Some(follower_inst)),
        code(ResponseError::FencedInstanceId)
    );
    let sid = h.sync_static(1, &follower, follower_inst);
    assert_eq!(
        expect!(h.take(sid), Sync).error_code,
        code(ResponseError::FencedInstanceId)
    );
    let id = h.join(5, &follower, Some(follower_inst));
    assert_eq!(
        expect!(h.take(id), Join).error_code,
        code(ResponseError::FencedInstanceId)
    );
    let mut c = commit_req(1, &follower, &[("t", 0, 1)]);
    c.group_instance_id = Some(s(follower_inst));
    let cid = h.send(8, GroupRequest::OffsetCommit(c));
    assert_eq!(
        commit_errors(h.take(cid)),
        vec![code(ResponseError::FencedInstanceId)]
    );
    // A member id / instance id mismatch is fenced too.
    assert_eq!(
        h.heartbeat(1, &leader, Some(follower_inst)),
        code(ResponseError::FencedInstanceId)
    );
    assert_eq!(h.heartbeat(1, &leader, Some(leader_inst)), NONE);
    assert_eq!(h.heartbeat(1, &new_follower, Some(follower_inst)), NONE);
    assert_eq!(h.state(), Some("Stable"));
}

#[test]
fn static_leader_rejoin_v9_skips_assignment() {
    let mut h = H::new();
    let aj = h.join(9, "", Some("ia"));
    h.advance(3_000);
    let a = expect!(h.take(aj), Join).member_id.to_string();
    let sid = h.sync(5, 1, &a, &[(&a, b"A")]);
    h.persist();
    expect!(h.take(sid), Sync);
    let id = h.join(9, "", Some("ia"));
    h.persist();
    let r = expect!(h.take(id), Join);
    assert!(r.skip_assignment);
    assert_eq!(r.leader, r.member_id);
    assert_eq!(r.members.len(), 1);
    assert_eq!(h.state(), Some("Stable"));
}

#[test]
fn static_rejoin_with_a_new_protocol_rebalances() {
    let mut h = H::new();
    let aj = h.join(5, "", Some("ia"));
    h.advance(3_000);
    let a = expect!(h.take(aj), Join).member_id.to_string();
    let sid = h.sync(3, 1, &a, &[]);
    h.persist();
    expect!(h.take(sid), Sync);
    // A protocol the group never had is inconsistent (the old member's protocols count).
    let id = h.join_with(5, "", Some("ia"), &[("cooperative-sticky", b"")]);
    let e = expect!(h.take(id), Join).error_code;
    assert_eq!(e, code(ResponseError::InconsistentGroupProtocol));
    let id = h.join_with(
        5,
        "",
        Some("ia"),
        &[("cooperative-sticky", b""), ("range", b"")],
    );
    assert_eq!(
        h.state(),
        Some("CompletingRebalance"),
        "its only member rejoined at once"
    );
    let r = expect!(h.take(id), Join);
    assert_eq!(
        (r.generation_id, r.protocol_name.as_deref()),
        (2, Some("cooperative-sticky"))
    );
}

// ---------------------------------------------------------------------------------------------
// Offsets

#[test]
fn offset_commit_is_held_until_persisted() {
    let mut h = H::new();
    let cid = h.commit(-1, "", &[("t", 0, 42), ("t", 1, 43), ("u", 0, 44)]);
    assert_eq!(
        h.state(),
        Some("Empty"),
        "a standalone commit creates an Empty group"
    );
    assert!(h.waiting(cid));
    assert_eq!(
        h.fetch(7, Some(&[("t", &[0])])),
        vec![("t".into(), 0, -1)],
        "not yet durable"
    );
    let records = h.persist();
    assert_eq!(records.len(), 3);
    assert!(
        matches!(&records[0], GroupRecord::Offset { offset: 42, leader_epoch: 3, metadata: Some(m), .. } if m == "meta")
    );
    assert_eq!(commit_errors(h.take(cid)), vec![NONE, NONE, NONE]);
    assert_eq!(
        h.fetch(7, Some(&[("t", &[0, 1, 2])])),
        vec![
            ("t".into(), 0, 42),
            ("t".into(), 1, 43),
            ("t".into(), 2, -1)
        ]
    );
}

#[test]
fn persist_failed_answers_with_an_error() {
    let mut h = H::new();
    let cid = h.commit(-1, "", &[("t", 0, 42)]);
    h.fail_persist();
    let errors = commit_errors(h.take(cid));
    assert_eq!(errors, vec![code(ResponseError::CoordinatorNotAvailable)]);
    assert_eq!(h.fetch(7, Some(&[("t", &[0])])), vec![("t".into(), 0, -1)]);

    // A failed Group record of the leader's sync: the syncs get errors, the group rebalances.
    let id = h.join(5, "", None);
    let member = expect!(h.take(id), Join).member_id.to_string();
    let id = h.join(5, &member, None);
    h.advance(3_000);
    expect!(h.take(id), Join);
    let sid = h.sync(3, 1, &member, &[]);
    h.fail_persist();
    assert_eq!(
        expect!(h.take(sid), Sync).error_code,
        code(ResponseError::CoordinatorNotAvailable)
    );
    assert_eq!(h.state(), Some("PreparingRebalance"));
    let id = h.join(5, &member, None);
    let r = expect!(h.take(id), Join);
    assert_eq!(r.generation_id, 2);
}

/// A coordinator that loses its offsets partition's leadership tells a commit whose record is
/// already in the log that it may have happened (the record can survive under the next
/// leader), not NOT_COORDINATOR, which says it did not (found by the nemesis interop test: a
/// commit answered NOT_COORDINATOR was later read back). A join with nothing in the log is
/// left for the shell to answer NOT_COORDINATOR.
#[test]
fn a_resigning_coordinator_says_a_commit_in_the_log_may_have_happened() {
    let mut h = H::new();
    let cid = h.commit(-1, "", &[("t", 0, 42)]);
    assert_eq!(h.poll_records().len(), 1);
    let id = h.join(5, "", None);
    let member = expect!(h.take(id), Join).member_id.to_string();
    let join = h.join(5, &member, None);
    assert!(h.waiting(cid) && h.waiting(join));
    h.c.resign(h.now);
    let errors = commit_errors(h.take(cid));
    assert_eq!(errors, vec![code(ResponseError::CoordinatorNotAvailable)]);
    assert!(h.waiting(join));
}

/// The shell may settle a commit's records in two appends: if the first fails and the second
/// persists, the commit failed (found by the group harness: it was acknowledged).
#[test]
fn a_commit_straddling_a_failed_persist_answers_with_an_error() {
    let mut h = H::new();
    let cid = h.commit(-1, "", &[("t", 0, 42), ("t", 1, 43)]);
    let records = h.poll_records();
    assert_eq!(records.len(), 2);
    let (first, last) = (h.log[0].0, h.log[1].0);
    h.c.persist_failed(first, h.now);
    assert!(h.waiting(cid));
    h.c.persisted(last, h.now);
    h.settled_through = last;
    assert_eq!(
        commit_errors(h.take(cid)),
        vec![code(ResponseError::CoordinatorNotAvailable); 2]
    );
    assert_eq!(h.fetch(7, Some(&[("t", &[0, 1])])).len(), 2);
    assert_eq!(
        h.fetch(7, Some(&[("t", &[0, 1])])),
        vec![("t".into(), 0, -1), ("t".into(), 1, -1)],
        "nothing applied"
    );
    // Later commits are unaffected.
    let cid = h.commit(-1, "", &[("t", 0, 44)]);
    h.persist();
    assert_eq!(commit_errors(h.take(cid)), vec![NONE]);
}

#[test]
fn offset_commit_validation() {
    let mut h = H::with(GroupConfig {
        offset_metadata_bytes_max: 4,
        ..test_config()
    });
    let mut r = commit_req(-1, "", &[("t", 0, 1), ("t", 1, 2)]);
    r.topics[0].partitions[0].committed_metadata = Some(s("toolong"));
    let id = h.send(8, GroupRequest::OffsetCommit(r));
    h.persist();
    assert_eq!(
        commit_errors(h.take(id)),
        vec![code(ResponseError::OffsetMetadataTooLarge), NONE]
    );
    let mut r = commit_req(-1, "", &[("t", 0, 1)]);
    r.group_id = GroupId(s(""));
    let id = h.send(2, GroupRequest::OffsetCommit(r));
    assert_eq!(
        commit_errors(h.take(id)),
        vec![code(ResponseError::InvalidGroupId)]
    );
    let mut r = commit_req(3, "m", &[("t", 0, 1)]);
    r.group_id = GroupId(s("unknown"));
    let id = h.send(2, GroupRequest::OffsetCommit(r));
    assert_eq!(
        commit_errors(h.take(id)),
        vec![code(ResponseError::IllegalGeneration)]
    );
}

#[test]
fn offset_fetch_versions_and_all_partitions() {
    let mut h = H::new();
    let cid = h.commit(-1, "", &[("t", 0, 10), ("t", 3, 13), ("a", 0, 1)]);
    h.persist();
    commit_errors(h.take(cid));
    for version in [1, 2, 5, 7, 8, 9] {
        let all = h.fetch(version, None);
        assert_eq!(
            all,
            vec![("a".into(), 0, 1), ("t".into(), 0, 10), ("t".into(), 3, 13)]
        );
        let some = h.fetch(version, Some(&[("t", &[3, 4]), ("x", &[0])]));
        assert_eq!(
            some,
            vec![
                ("t".into(), 3, 13),
                ("t".into(), 4, -1),
                ("x".into(), 0, -1)
            ]
        );
    }
    // An unknown group has nothing committed.
    let mut r = OffsetFetchRequest::default();
    r.group_id = GroupId(s("unknown"));
    r.topics = None;
    let id = h.send(6, GroupRequest::OffsetFetch(r));
    let resp = expect!(h.take(id), OffsetFetch);
    assert!(resp.topics.is_empty() && resp.error_code == NONE);
}

#[test]
fn offset_delete_refuses_subscribed_topics() {
    let mut h = H::new();
    let id = h.join_with(3, "", None, &[("range", &subscription(&["t"]))]);
    h.advance(3_000);
    let a = expect!(h.take(id), Join).member_id.to_string();
    let sid = h.sync(3, 1, &a, &[]);
    h.persist();
    expect!(h.take(sid), Sync);
    let cid = h.commit(1, &a, &[("t", 0, 5), ("old", 0, 7)]);
    h.persist();
    assert_eq!(commit_errors(h.take(cid)), vec![NONE, NONE]);

    let mut r = OffsetDeleteRequest::default();
    r.group_id = GroupId(s(GROUP));
    for t in ["t", "old"] {
        let mut topic = OffsetDeleteRequestTopic::default();
        topic.name = TopicName(s(t));
        topic.partitions = vec![OffsetDeleteRequestPartition::default()];
        r.topics.push(topic);
    }
    let id = h.send(0, GroupRequest::OffsetDelete(r.clone()));
    let records = h.poll_records();
    assert!(matches!(&records[..], [GroupRecord::OffsetTombstone { topic, .. }] if topic == "old"));
    assert!(h.waiting(id));
    h.persist();
    let resp = expect!(h.take(id), OffsetDelete);
    assert_eq!(resp.error_code, NONE);
    let errors: Vec<i16> = resp
        .topics
        .iter()
        .map(|t| t.partitions[0].error_code)
        .collect();
    assert_eq!(
        errors,
        vec![code(ResponseError::GroupSubscribedToTopic), NONE]
    );
    assert_eq!(h.fetch(8, None), vec![("t".into(), 0, 5)]);

    r.group_id = GroupId(s("unknown"));
    let id = h.send(0, GroupRequest::OffsetDelete(r));
    let e = expect!(h.take(id), OffsetDelete).error_code;
    assert_eq!(e, code(ResponseError::GroupIdNotFound));
}

#[test]
fn offset_delete_strips_an_in_flight_commit() {
    let mut h = H::new();
    let cid = h.commit(-1, "", &[("t", 0, 5)]);
    let mut r = OffsetDeleteRequest::default();
    r.group_id = GroupId(s(GROUP));
    let mut topic = OffsetDeleteRequestTopic::default();
    topic.name = TopicName(s("t"));
    topic.partitions = vec![OffsetDeleteRequestPartition::default()];
    r.topics.push(topic);
    let did = h.send(0, GroupRequest::OffsetDelete(r));
    let records = h.persist();
    assert!(matches!(
        &records[..],
        [
            GroupRecord::Offset { .. },
            GroupRecord::OffsetTombstone { .. }
        ]
    ));
    commit_errors(h.take(cid));
    expect!(h.take(did), OffsetDelete);
    assert_eq!(
        h.fetch(8, None),
        vec![],
        "memory agrees with the log: offset, then tombstone"
    );
}

// ---------------------------------------------------------------------------------------------
// Replay

#[test]
fn replay_restores_offsets_membership_and_generation() {
    let mut h = H::new();
    let (a, g) = h.lone_member();
    let bj = h.join(5, "", Some("ib"));
    let aj = h.join(5, &a, None);
    let b = expect!(h.take(bj), Join).member_id.to_string();
    let g2 = expect!(h.take(aj), Join).generation_id;
    assert_eq!(g2, g + 1);
    let sa = h.sync(3, g2, &a, &[(&a, b"A"), (&b, b"B")]);
    let cid = h.commit(g2, &a, &[]);
    h.persist();
    expect!(h.take(sa), Sync);
    expect!(h.take(cid), OffsetCommit);
    let cid = h.commit(g2, &a, &[("t", 0, 9)]);
    h.persist();
    commit_errors(h.take(cid));
    let cid = h.commit(-1, "", &[("x", 1, 1)]);
    let mut other = commit_req(-1, "", &[("y", 0, 3)]);
    other.group_id = GroupId(s("standalone"));
    h.send(8, GroupRequest::OffsetCommit(other));
    h.persist();
    assert_eq!(
        commit_errors(h.take(cid)),
        vec![code(ResponseError::UnknownMemberId)]
    );

    let mut r = H::new();
    r.now = h.now + 60_000;
    for (_, record) in h.log.clone() {
        r.c.replay(record);
    }
    r.c.loaded(r.now);
    r.c.check_invariants();
    assert_eq!(r.state(), Some("Stable"));
    assert_eq!(r.c.group_generation(GROUP), Some(g2));
    assert_eq!(r.c.group_state("standalone"), Some("Empty"));
    assert_eq!(
        r.c.poll_timeout(),
        Some(r.now + 10_000),
        "fresh session deadlines"
    );
    assert_eq!(r.fetch(8, None), vec![("t".into(), 0, 9)]);
    assert_eq!(r.heartbeat(g2, &a, None), NONE);
    assert_eq!(r.heartbeat(g2, &b, Some("ib")), NONE);
    let sid = r.sync_static(g2, &b, "ib");
    assert_eq!(expect!(r.take(sid), Sync).assignment.as_ref(), b"B");
    // The restarted static member replaces its old id without a rebalance.
    let id = r.join(5, "", Some("ib"));
    r.persist();
    assert_eq!(expect!(r.take(id), Join).generation_id, g2);
    // Loaded members expire like any other.
    r.advance(5_000);
    assert_eq!(r.heartbeat(g2, &a, None), NONE);
    r.advance(5_000);
    assert_eq!(r.state(), Some("PreparingRebalance"));

    // A GroupTombstone drops the group and its offsets.
    let mut t = H::new();
    for (_, record) in h.log.clone() {
        t.c.replay(record);
    }
    t.c.replay(GroupRecord::GroupTombstone {
        group: GROUP.into(),
    });
    t.c.loaded(t.now);
    assert_eq!(t.state(), None);
    assert_eq!(t.fetch(8, None), vec![]);
}

// ---------------------------------------------------------------------------------------------
// Administration

#[test]
fn describe_list_and_delete() {
    let mut h = H::new();
    let (a, _) = h.lone_member();
    let cid = h.commit(-1, "", &[]);
    expect!(h.take(cid), OffsetCommit);
    let mut other = commit_req(-1, "", &[("t", 0, 1)]);
    other.group_id = GroupId(s("simple"));
    let cid = h.send(8, GroupRequest::OffsetCommit(other));
    h.persist();
    commit_errors(h.take(cid));

    let mut r = DescribeGroupsRequest::default();
    r.groups = vec![GroupId(s(GROUP)), GroupId(s("simple")), GroupId(s("nope"))];
    for version in [0, 3, 4, 5] {
        let id = h.send(version, GroupRequest::Describe(r.clone()));
        let resp = expect!(h.take(id), Describe);
        let g = &resp.groups[0];
        assert_eq!(
            (g.group_state.as_str(), g.protocol_type.as_str()),
            ("Stable", "consumer")
        );
        assert_eq!(g.protocol_data.as_str(), "range");
        assert_eq!(g.members.len(), 1);
        assert_eq!(g.members[0].member_id.as_str(), a);
        assert_eq!(g.members[0].client_id.as_str(), "client");
        assert_eq!(g.members[0].client_host.as_str(), "/10.0.0.1");
        assert_eq!(g.members[0].member_metadata.as_ref(), b"m");
        assert_eq!(g.members[0].member_assignment.as_ref(), b"A");
        assert_eq!(resp.groups[1].group_state.as_str(), "Empty");
        assert_eq!(resp.groups[2].group_state.as_str(), "Dead");
        assert_eq!(resp.groups[2].error_code, NONE);
    }

    for version in [0, 3, 4] {
        let mut r = ListGroupsRequest::default();
        if version >= 4 {
            r.states_filter = vec![s("stable")];
        }
        let id = h.send(version, GroupRequest::List(r));
        let resp = expect!(h.take(id), List);
        let names: Vec<&str> = resp.groups.iter().map(|g| g.group_id.0.as_str()).collect();
        if version >= 4 {
            assert_eq!(names, vec![GROUP]);
            assert_eq!(resp.groups[0].group_state.as_str(), "Stable");
        } else {
            assert_eq!(names, vec![GROUP, "simple"]);
        }
    }

    let mut r = DeleteGroupsRequest::default();
    r.groups_names = vec![GroupId(s(GROUP)), GroupId(s("simple")), GroupId(s("nope"))];
    let id = h.send(1, GroupRequest::Delete(r));
    let records = h.poll_records();
    assert_eq!(
        records,
        vec![GroupRecord::GroupTombstone {
            group: "simple".into()
        }]
    );
    assert!(
        h.waiting(id),
        "the delete is answered once the tombstone is durable"
    );
    h.persist();
    let resp = expect!(h.take(id), Delete);
    let errors: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
    assert_eq!(
        errors,
        vec![
            code(ResponseError::NonEmptyGroup),
            NONE,
            code(ResponseError::GroupIdNotFound)
        ]
    );
    assert_eq!(h.c.group_state("simple"), None);
}

#[test]
fn fifty_members_join_in_one_rebalance() {
    let mut h = H::new();
    let mut first = Vec::new();
    for _ in 0..50 {
        let id = h.join(5, "", None);
        first.push(expect!(h.take(id), Join).member_id.to_string());
    }
    let joins: Vec<RequestId> = first.iter().map(|m| h.join(5, m, None)).collect();
    h.advance(3_000);
    assert!(
        h.waiting(joins[0]),
        "members joined during the delay: it restarts once"
    );
    h.advance(3_000);
    let mut leaders = 0;
    let mut leader = String::new();
    for id in joins {
        let r = expect!(h.take(id), Join);
        assert_eq!((r.error_code, r.generation_id), (NONE, 1));
        if !r.members.is_empty() {
            leaders += 1;
            assert_eq!(r.members.len(), 50);
            leader = r.member_id.to_string();
        }
    }
    assert_eq!(leaders, 1);
    let assign: Vec<(String, Vec<u8>)> = first
        .iter()
        .map(|m| (m.clone(), m.as_bytes().to_vec()))
        .collect();
    let assign_ref: Vec<(&str, &[u8])> = assign
        .iter()
        .map(|(m, a)| (m.as_str(), a.as_slice()))
        .collect();
    let syncs: Vec<(String, RequestId)> = first
        .iter()
        .filter(|m| **m != leader)
        .map(|m| (m.clone(), h.sync(3, 1, m, &[])))
        .collect();
    let ls = h.sync(3, 1, &leader, &assign_ref);
    h.persist();
    assert_eq!(
        expect!(h.take(ls), Sync).assignment.as_ref(),
        leader.as_bytes()
    );
    for (m, id) in syncs {
        assert_eq!(expect!(h.take(id), Sync).assignment.as_ref(), m.as_bytes());
    }
    assert_eq!(h.state(), Some("Stable"));
}

#[test]
fn poll_timeout_reports_the_nearest_deadline() {
    let mut h = H::new();
    let (a, _) = h.lone_member();
    let t0 = h.now;
    assert_eq!(h.c.poll_timeout(), Some(t0 + 10_000));
    h.advance(4_000);
    h.heartbeat(1, &a, None);
    assert_eq!(h.c.poll_timeout(), Some(h.now + 10_000));
    // A second group with an earlier deadline (a pending member with a 6 s session).
    let mut r = join_req("", None, &[("range", b"")]);
    r.group_id = GroupId(s("g2"));
    r.session_timeout_ms = 6_000;
    let id = h.send(5, GroupRequest::Join(r));
    expect!(h.take(id), Join);
    assert_eq!(h.c.poll_timeout(), Some(h.now + 6_000));
    // Ticking early changes nothing.
    h.c.tick(h.now + 5_999);
    h.drain();
    assert_eq!(h.c.poll_timeout(), Some(h.now + 6_000));
    h.advance(6_000);
    assert_eq!(h.c.group_state("g2"), None);
    assert_eq!(h.c.poll_timeout(), Some(h.now + 4_000));
}

// ---------------------------------------------------------------------------------------------
// Random sequences

#[derive(Clone, Debug)]
enum Op {
    Join {
        slot: usize,
        version: i16,
        known: bool,
        static_: bool,
        protocol: u8,
    },
    Sync {
        slot: usize,
        generation_delta: i32,
        assign: bool,
    },
    Heartbeat {
        slot: usize,
        generation_delta: i32,
    },
    Leave {
        slot: usize,
        batched: bool,
    },
    Commit {
        slot: usize,
        generation_delta: i32,
        simple: bool,
    },
    Fetch,
    Describe,
    Delete,
    Tick {
        ms: i64,
    },
    Persist,
    PersistFail,
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0usize..4;
    prop_oneof![
        2 => (slot.clone(), prop::sample::select(vec![0i16, 3, 4, 5, 7, 9]), any::<bool>(), any::<bool>(), 0u8..3)
            .prop_map(|(slot, version, known, static_, protocol)| Op::Join { slot, version, known, static_, protocol }),
        6 => (slot.clone(), -1i32..=1, any::<bool>())
            .prop_map(|(slot, generation_delta, assign)| Op::Sync { slot, generation_delta, assign }),
        3 => (slot.clone(), -1i32..=1).prop_map(|(slot, generation_delta)| Op::Heartbeat { slot, generation_delta }),
        1 => (slot.clone(), any::<bool>()).prop_map(|(slot, batched)| Op::Leave { slot, batched }),
        2 => (slot.clone(), -1i32..=1, any::<bool>())
            .prop_map(|(slot, generation_delta, simple)| Op::Commit { slot, generation_delta, simple }),
        1 => Just(Op::Fetch),
        1 => Just(Op::Describe),
        1 => Just(Op::Delete),
        3 => prop::sample::select(vec![1i64, 500, 2_999, 3_000, 6_000, 11_000, 31_000]).prop_map(|ms| Op::Tick { ms }),
        5 => Just(Op::Persist),
        1 => Just(Op::PersistFail),
    ]
}

/// What a simulated client remembers.
#[derive(Clone, Debug, Default)]
struct Client {
    member_id: String,
    generation: i32,
    /// Its outstanding join, to learn its member id and generation from.
    join: Option<RequestId>,
}

fn run(ops: Vec<Op>) {
    let mut h = H::with(GroupConfig {
        members_max: 3,
        ..test_config()
    });
    let mut clients = vec![Client::default(); 4];
    let mut generation_seen = 0;
    for op in ops {
        match op {
            Op::Join {
                slot,
                version,
                known,
                static_,
                protocol,
            } => {
                let member = if known {
                    clients[slot].member_id.clone()
                } else {
                    String::new()
                };
                let instance = format!("i{slot}");
                let instance = (static_ && version >= 5).then_some(instance.as_str());
                let protocols: &[(&str, &[u8])] = match protocol {
                    0 => &[("range", b"r")],
                    1 => &[("roundrobin", b"x"), ("range", b"r")],
                    _ => &[("cooperative-sticky", b"")],
                };
                let id = h.join_with(version, &member, instance, protocols);
                clients[slot].join = Some(id);
            }
            Op::Sync {
                slot,
                generation_delta,
                assign,
            } => {
                let c = clients[slot].clone();
                let assignments: Vec<(String, Vec<u8>)> = if assign {
                    clients
                        .iter()
                        .map(|c| (c.member_id.clone(), b"a".to_vec()))
                        .collect()
                } else {
                    Vec::new()
                };
                let a: Vec<(&str, &[u8])> = assignments
                    .iter()
                    .map(|(m, x)| (m.as_str(), x.as_slice()))
                    .collect();
                h.sync(3, c.generation + generation_delta, &c.member_id, &a);
            }
            Op::Heartbeat {
                slot,
                generation_delta,
            } => {
                let c = clients[slot].clone();
                h.heartbeat(c.generation + generation_delta, &c.member_id, None);
            }
            Op::Leave { slot, batched } => {
                let mut r = LeaveGroupRequest::default();
                r.group_id = GroupId(s(GROUP));
                let version = if batched {
                    let mut m = MemberIdentity::default();
                    m.member_id = s(&clients[slot].member_id);
                    r.members = vec![m];
                    3
                } else {
                    r.member_id = s(&clients[slot].member_id);
                    1
                };
                h.send(version, GroupRequest::Leave(r));
            }
            Op::Commit {
                slot,
                generation_delta,
                simple,
            } => {
                let c = clients[slot].clone();
                if simple {
                    h.commit(-1, "", &[("t", slot as i32, 1)]);
                } else {
                    h.commit(
                        c.generation + generation_delta,
                        &c.member_id,
                        &[("t", slot as i32, 2)],
                    );
                }
            }
            Op::Fetch => {
                h.fetch(8, None);
            }
            Op::Describe => {
                let mut r = DescribeGroupsRequest::default();
                r.groups = vec![GroupId(s(GROUP))];
                h.send(5, GroupRequest::Describe(r));
            }
            Op::Delete => {
                let mut r = DeleteGroupsRequest::default();
                r.groups_names = vec![GroupId(s(GROUP))];
                h.send(2, GroupRequest::Delete(r));
            }
            Op::Tick { ms } => h.advance(ms),
            Op::Persist => {
                h.persist();
            }
            Op::PersistFail => h.fail_persist(),
        }
        h.drain();
        // Learn member ids and generations from join responses.
        for c in clients.iter_mut() {
            if let Some(id) = c.join {
                if let Some(GroupResponse::Join(r)) = h.ready.get(&id) {
                    let r: &JoinGroupResponse = r;
                    if !r.member_id.is_empty() {
                        c.member_id = r.member_id.to_string();
                    }
                    if r.error_code == NONE {
                        c.generation = r.generation_id;
                    }
                    c.join = None;
                }
            }
        }
        h.ready.retain(|_, _| false);
        match h.c.group_generation(GROUP) {
            Some(g) => {
                assert!(
                    g >= generation_seen,
                    "generation never decreases ({generation_seen} → {g})"
                );
                generation_seen = g;
            }
            None => generation_seen = 0, // deleted (or never used): a new group starts over
        }
        if let Some(t) = h.c.poll_timeout() {
            assert!(t > h.now, "no timer is left due after an input");
        }
    }
    // Eventually every request is answered: persist everything and let time run.
    for _ in 0..20 {
        h.persist();
        h.advance(60_000);
    }
    h.persist();
    assert!(
        h.outstanding.is_empty(),
        "unanswered requests: {:?}",
        h.outstanding
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn random_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..120)) {
        run(ops);
    }
}
