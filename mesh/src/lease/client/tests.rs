//! The client against one voter whose answers the test writes: each refusal a voter can send,
//! and what the holder must conclude from it (the lease tests in `lease/tests.rs` run real
//! voters, which rarely send most of these).

use super::*;
use crate::lease::wire::encode;

const VOTER: NodeId = NodeId::new(1);
const TTL: Duration = Duration::from_secs(10);

fn client() -> LeaseClient {
    LeaseClient::new(
        LeaseConfig::default(),
        NodeId::new(2),
        Incarnation::new(1),
        &[VOTER],
        7,
    )
}

fn scope() -> Scope {
    Scope::new("jobs/nightly").unwrap()
}

fn token(n: u64) -> FencingToken {
    FencingToken::new(n)
}

/// What a holder of `scope()` at token 5 reports when `request` fails with `error`, which also
/// ends its lease: the loss, then the failure.
fn lost_then_failed(request: RequestId, error: LeaseError) -> [LeadershipEvent; 2] {
    [
        LeadershipEvent::Lost {
            scope: scope(),
            token: token(5),
            reason: error.clone(),
        },
        LeadershipEvent::Failed { request, error },
    ]
}

/// Delivers `reply` to `request` from `from`.
fn answer(
    c: &mut LeaseClient,
    now: Instant,
    from: NodeId,
    request: RequestId,
    reply: Reply,
) -> Result<(), MessageError> {
    let mut buf = Vec::new();
    encode(from, &LeaseMessage::Response { request, reply }, &mut buf);
    c.handle_message(now, from, &buf)
}

fn refused(refusal: Refusal) -> Reply {
    Reply::Outcome(Outcome::Refused(refusal))
}

fn events(c: &mut LeaseClient) -> Vec<LeadershipEvent> {
    let mut out = Vec::new();
    while let Some(e) = c.poll_event() {
        out.push(e.event);
    }
    out
}

/// A client that holds `scope()` under token 5, granted at time zero.
fn holder() -> LeaseClient {
    let mut c = client();
    let now = Instant::ZERO;
    let request = c.acquire(now, scope(), TTL).unwrap();
    let granted = Reply::Outcome(Outcome::Granted {
        token: token(5),
        term: Term::new(1),
        ttl: TTL,
    });
    answer(&mut c, now, VOTER, request, granted).unwrap();
    assert_eq!(c.holds(now, &scope()), Some(token(5)));
    events(&mut c);
    c
}

/// A renewal the voters refuse because the lease is no longer this node's (another holder, a
/// newer grant, or no lease at all) ends the lease at once: `Lost`, then the request's
/// `Failed`, each with the voters' reason.
#[test]
fn a_refused_renewal_loses_the_lease_with_the_voters_reason() {
    let now = Instant::ZERO + Duration::from_secs(1);
    let cases = [
        (
            Refusal::NotHolder {
                holder: NodeId::new(3),
            },
            LeaseError::NotHolder {
                scope: scope(),
                holder: NodeId::new(3),
            },
        ),
        (
            Refusal::StaleToken { current: token(9) },
            LeaseError::StaleToken {
                scope: scope(),
                presented: token(5),
                current: token(9),
            },
        ),
        (
            Refusal::UnknownScope,
            LeaseError::UnknownScope { scope: scope() },
        ),
    ];
    for (refusal, error) in cases {
        let mut c = holder();
        let request = c.renew(now, scope()).unwrap();
        answer(&mut c, now, VOTER, request, refused(refusal)).unwrap();
        assert_eq!(c.holds(now, &scope()), None, "{refusal:?}");
        assert_eq!(events(&mut c), lost_then_failed(request, error));
        assert_eq!(c.poll_timeout(), None, "no expiry left to watch");
    }
}

/// Refusals that say nothing about who holds the lease leave it held; each arrives as the
/// error the host can act on, with the client's own bounds filled in.
#[test]
fn other_refusals_keep_the_lease_and_name_their_bound() {
    let now = Instant::ZERO + Duration::from_secs(1);
    let config = LeaseConfig::default();
    let cases = [
        (
            Refusal::InvalidTtl,
            LeaseError::InvalidTtl {
                ttl: TTL,
                min: config.min_ttl(),
                max: config.max_ttl(),
            },
        ),
        (
            Refusal::TableFull,
            LeaseError::TableFull {
                max: super::super::table::MAX_LEASES,
            },
        ),
        (
            Refusal::Overloaded,
            LeaseError::Overloaded {
                max: config.max_pending_requests(),
            },
        ),
    ];
    for (refusal, error) in cases {
        let mut c = holder();
        let request = c.renew(now, scope()).unwrap();
        answer(&mut c, now, VOTER, request, refused(refusal)).unwrap();
        assert_eq!(c.holds(now, &scope()), Some(token(5)), "{refusal:?}");
        assert_eq!(events(&mut c), [LeadershipEvent::Failed { request, error }]);
    }
}

/// A transfer the voters refuse (a bad target) leaves the lease usable again; one whose
/// outcome is unknown (no answer) cannot be trusted and is lost.
#[test]
fn a_refused_transfer_keeps_the_lease_an_unanswered_one_loses_it() {
    let now = Instant::ZERO + Duration::from_secs(1);
    let to = NodeId::new(3);
    let mut c = holder();
    let request = c.transfer(now, scope(), to).unwrap();
    assert_eq!(c.holds(now, &scope()), None, "not usable while in flight");
    answer(&mut c, now, VOTER, request, refused(Refusal::InvalidTarget)).unwrap();
    assert_eq!(c.holds(now, &scope()), Some(token(5)));
    assert_eq!(
        events(&mut c),
        [LeadershipEvent::Failed {
            request,
            error: LeaseError::InvalidTarget { scope: scope(), to },
        }]
    );

    let request = c.transfer(now, scope(), to).unwrap();
    while c.requests.contains_key(&request) {
        let due = c.poll_timeout().unwrap();
        c.handle_timeout(due);
        let mut buf = Vec::new();
        while c.poll_transmit(due, &mut buf).is_some() {}
    }
    let attempts = LeaseConfig::default().request_attempts();
    let error = LeaseError::NoQuorum {
        scope: scope(),
        attempts,
    };
    assert_eq!(events(&mut c), lost_then_failed(request, error));
    assert!(c.held().next().is_none());
    assert_eq!(c.stats().no_quorum, 1);
}

/// An answer that does not fit the operation (a release answered with a grant: a confused or
/// old voter) fails the request rather than guess, and grants nothing.
#[test]
fn an_outcome_that_does_not_answer_the_operation_fails_it() {
    let now = Instant::ZERO + Duration::from_secs(1);
    let mut c = holder();
    let request = c.release(now, &scope()).unwrap();
    let granted = Reply::Outcome(Outcome::Granted {
        token: token(6),
        term: Term::new(1),
        ttl: TTL,
    });
    answer(&mut c, now, VOTER, request, granted).unwrap();
    assert_eq!(c.holds(now, &scope()), None);
    assert_eq!(
        events(&mut c),
        [LeadershipEvent::Failed {
            request,
            error: LeaseError::NoQuorum {
                scope: scope(),
                attempts: 1
            },
        }]
    );
}

/// A grant whose answer took longer than the TTL is already over by the holder's clock: it is
/// reported expired, never held.
#[test]
fn a_grant_answered_after_its_ttl_is_expired_at_once() {
    let mut c = client();
    let request = c.acquire(Instant::ZERO, scope(), TTL).unwrap();
    let late = Instant::ZERO + TTL;
    let granted = Reply::Outcome(Outcome::Granted {
        token: token(5),
        term: Term::new(1),
        ttl: TTL,
    });
    answer(&mut c, late, VOTER, request, granted).unwrap();
    assert!(c.held().next().is_none());
    assert_eq!(
        events(&mut c),
        [LeadershipEvent::Expired {
            scope: scope(),
            token: token(5)
        }]
    );
}

/// Messages a client never takes are refused as misrouted and counted; nothing changes.
#[test]
fn raft_and_requests_given_to_a_client_are_misrouted() {
    let now = Instant::ZERO;
    let mut c = client();
    let mut buf = Vec::new();
    let request = LeaseMessage::Request {
        request: RequestId::new(1),
        op: Op::Query { scope: scope() },
    };
    encode(VOTER, &request, &mut buf);
    assert_eq!(
        c.handle_message(now, VOTER, &buf),
        Err(MessageError::Misrouted { to: None })
    );
    let mut raft = raft::eraftpb::Message::default();
    raft.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    raft.from = 1;
    raft.to = 2;
    raft.term = 1;
    encode(VOTER, &LeaseMessage::Raft(raft), &mut buf);
    assert_eq!(
        c.handle_message(now, VOTER, &buf),
        Err(MessageError::Misrouted {
            to: Some(NodeId::new(2))
        })
    );
    assert_eq!(c.stats().messages_refused, 2);
    assert!(events(&mut c).is_empty());
}

/// A client without voters cannot ask anyone: refused at once, nothing queued. Past its bound
/// of pending requests it refuses too.
#[test]
fn no_voters_or_too_many_pending_requests_are_refused_locally() {
    let now = Instant::ZERO;
    let mut alone = LeaseClient::new(
        LeaseConfig::default(),
        NodeId::new(2),
        Incarnation::new(1),
        &[NodeId::new(0)],
        7,
    );
    assert!(alone.voters().is_empty(), "node id 0 is never a voter");
    assert_eq!(
        alone.acquire(now, scope(), TTL),
        Err(LeaseError::NoQuorum {
            scope: scope(),
            attempts: 0
        })
    );
    assert_eq!(alone.poll_timeout(), None);

    let mut c = client();
    let max = LeaseConfig::default().max_pending_requests();
    for i in 0..max {
        c.query(now, Scope::new(&format!("jobs/{i}")).unwrap())
            .unwrap();
    }
    assert_eq!(
        c.query(now, Scope::new("jobs/one-more").unwrap()),
        Err(LeaseError::Overloaded { max })
    );
    assert_eq!(c.local_id(), NodeId::new(2));
}

/// A leader hint that leaves the voter set is forgotten: the next request goes to a voter.
#[test]
fn a_leader_hint_outside_the_new_voter_set_is_dropped() {
    let now = Instant::ZERO;
    let mut c = LeaseClient::new(
        LeaseConfig::default(),
        NodeId::new(2),
        Incarnation::new(1),
        &[VOTER, NodeId::new(3)],
        7,
    );
    let request = c.query(now, scope()).unwrap();
    let mut buf = Vec::new();
    let t = c.poll_transmit(now, &mut buf).unwrap();
    // Whoever was asked names voter 3 as the leader.
    let hint = Reply::NotLeader {
        leader: Some(NodeId::new(3)),
    };
    answer(&mut c, now, t.to, request, hint).unwrap();
    if t.to != NodeId::new(3) {
        assert_eq!(c.poll_transmit(now, &mut buf).unwrap().to, NodeId::new(3));
    }
    answer(&mut c, now, NodeId::new(3), request, Reply::Lease(None)).unwrap();
    c.set_voters(&[VOTER]);
    assert_eq!(c.voters(), [VOTER]);
    c.query(now, scope()).unwrap();
    assert_eq!(c.poll_transmit(now, &mut buf).unwrap().to, VOTER);
}
