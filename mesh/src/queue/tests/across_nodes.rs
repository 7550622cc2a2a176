//! [`Queues`] across nodes, driven through [`Node`] with instant delivery on virtual time: the
//! acknowledgement waits for the replicas, tokens are fenced, a new owner rebuilds from a
//! replica, backpressure reaches producers through gossip, a gone worker's items come back.
//!
//! The simulator's queue scenarios (`sim/tests/queues.rs`) check the same guarantees under
//! loss, kills and partitions at scale; these tests hold each rule of `queues.rs` on its own, so
//! that a change to one fails here, under the module's own test filter (`queue::`), in
//! milliseconds.
//!
//! The mesh: node 1 is the only voter (and the shard coordinator), a producer and a replica;
//! nodes 2..=4 contend for the shards, own them, serve their queues, and work.

use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;

use crate::config::{Config, Profile};
use crate::id::{Incarnation, NodeId};
use crate::lease::{Campaign, FencingToken, LeaseConfig};
use crate::membership::MemberState;
use crate::node::{Channel, Event, Node};
use crate::queue::{
    FailOutcome, OwnershipToken, QueueBody, QueueConfig, QueueError, QueueEvent, QueueMessage,
    Queues, ReplicaStore,
};
use crate::shard::{ShardConfig, ShardId};
use crate::time::{Duration, Instant};

const MEMBERS: u64 = 4;

fn id(n: u64) -> NodeId {
    NodeId::new(n)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn shards() -> ShardConfig {
    ShardConfig::new("jobs", 2).unwrap()
}

fn shard0() -> ShardId {
    ShardId::new("jobs", 0).unwrap()
}

fn queue_config() -> QueueConfig {
    QueueConfig::default()
        .with_replicas(1)
        .with_lease_timeout(secs(2))
        .with_max_attempts(2)
        .with_health_grace(secs(1))
}

/// A mesh on virtual time with instant delivery; a node in `down` neither sends, receives nor
/// runs its timers (a crash, or a pause while it is put back).
struct Mesh {
    nodes: Vec<Node>,
    now: Instant,
    down: BTreeSet<u64>,
    /// Every queue event, by node.
    events: Vec<(u64, QueueEvent)>,
    /// Drops the queue messages it returns true for (from, to, message): a lost datagram.
    drop_if: Option<DropFilter>,
    /// Every queue message delivered or dropped since the last `sent.clear()`: (from, to).
    sent: Vec<(u64, u64, QueueMessage)>,
}

type DropFilter = Box<dyn FnMut(u64, u64, &QueueMessage) -> bool>;

impl Mesh {
    fn new(config: &QueueConfig) -> Self {
        Self::with_shards(config, &shards())
    }

    /// A mesh whose shards are configured by `shard_config` (the TTL, say).
    fn with_shards(config: &QueueConfig, shard_config: &ShardConfig) -> Self {
        let now = Instant::ZERO;
        let base = |n: u64| {
            Node::new(
                Config::from_profile(Profile::Lan),
                id(n),
                Incarnation::new(1),
                n,
                now,
            )
        };
        let mut nodes = vec![
            base(1)
                .with_voter(now, LeaseConfig::default(), &[id(1)])
                .unwrap()
                .with_shards(now, shard_config.clone())
                .with_queues(now, shard_config, config.clone(), Default::default()),
        ];
        for k in 2..=MEMBERS {
            let mut member = base(k)
                .with_lease_client(
                    now,
                    LeaseConfig::default(),
                    &[id(1)],
                    Campaign::new(secs(3), Duration::from_millis(100)),
                )
                .with_shards(now, shard_config.clone())
                .with_queues(now, shard_config, config.clone(), Default::default());
            member.join(now, &[id(1)]);
            nodes.push(member);
        }
        let mut mesh = Self {
            nodes,
            now,
            down: BTreeSet::new(),
            events: Vec::new(),
            drop_if: None,
            sent: Vec::new(),
        };
        for k in 2..=MEMBERS {
            mesh.node(k).join_shards(now).unwrap();
        }
        mesh.run_for(secs(20));
        for s in shard_config.shards() {
            assert!(mesh.owner_of(&s).is_some(), "{s} is served after 20 s");
        }
        mesh.events.clear();
        mesh
    }

    fn node(&mut self, n: u64) -> &mut Node {
        &mut self.nodes[(n - 1) as usize]
    }

    /// A member that is neither `owner` nor `replica`, nor the voter (node 1).
    fn bystander(&self, owner: u64, replica: u64) -> u64 {
        (2..=MEMBERS)
            .find(|n| *n != owner && *n != replica)
            .unwrap()
    }

    /// Node `n`'s queues.
    fn queues(&self, n: u64) -> &Queues {
        self.nodes[(n - 1) as usize].queues().unwrap()
    }

    /// The node serving `shard`'s queue, if one does.
    fn owner_of(&self, shard: &ShardId) -> Option<u64> {
        let serving: Vec<u64> = (1..=MEMBERS)
            .filter(|n| !self.down.contains(n))
            .filter(|&n| {
                self.nodes[(n - 1) as usize]
                    .queues()
                    .is_some_and(|q| q.serving(shard).is_some())
            })
            .collect();
        assert!(serving.len() <= 1, "{shard} served by {serving:?}");
        serving.first().copied()
    }

    /// A live node that does not own `shard`, other than node 1 (which cannot own).
    fn other_member(&self, shard: &ShardId) -> u64 {
        let owner = self.owner_of(shard);
        (2..=MEMBERS)
            .find(|n| Some(*n) != owner && !self.down.contains(n))
            .unwrap()
    }

    /// Runs until `stop` holds for a queue event (returned with its node) or `limit` passes.
    fn run_until(
        &mut self,
        limit: Duration,
        mut stop: impl FnMut(u64, &QueueEvent) -> bool,
    ) -> Option<(u64, QueueEvent)> {
        let until = self.now + limit;
        let mut buf = Vec::new();
        for _ in 0..2_000_000 {
            let mut wire = Vec::new();
            for (i, node) in self.nodes.iter_mut().enumerate() {
                let n = i as u64 + 1;
                if self.down.contains(&n) {
                    continue;
                }
                while let Some(t) = node.poll_transmit(self.now, &mut buf) {
                    wire.push((node.local_id(), t.to, buf[..t.len].to_vec()));
                }
                let mut found = None;
                while let Some(event) = node.poll_event() {
                    if let Event::Queue(e) = event {
                        if found.is_none() && stop(n, &e) {
                            found = Some((n, e.clone()));
                        }
                        self.events.push((n, e));
                    }
                }
                if found.is_some() {
                    return found;
                }
            }
            if wire.is_empty() {
                let next = self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !self.down.contains(&(*i as u64 + 1)))
                    .filter_map(|(_, n)| n.poll_timeout())
                    .min()
                    .unwrap();
                if next > until {
                    self.now = until;
                    return None;
                }
                // A node back from `down` has timers due in the past: they fire now.
                self.now = next.max(self.now);
                for (i, node) in self.nodes.iter_mut().enumerate() {
                    if !self.down.contains(&(i as u64 + 1)) {
                        node.handle_timeout(self.now);
                    }
                }
            }
            for (from, to, bytes) in wire {
                if let Ok((Channel::Queue, payload)) = Channel::split(&bytes)
                    && let Ok(message) = QueueMessage::decode(payload)
                {
                    let dropped = self
                        .drop_if
                        .as_mut()
                        .is_some_and(|f| f(from.get(), to.get(), &message));
                    self.sent.push((from.get(), to.get(), message));
                    if dropped {
                        continue;
                    }
                }
                if !self.down.contains(&to.get()) {
                    self.nodes[(to.get() - 1) as usize]
                        .handle_datagram(self.now, from, &bytes)
                        .unwrap();
                }
            }
        }
        panic!("no progress in 2,000,000 steps");
    }

    fn run_for(&mut self, time: Duration) {
        assert!(self.run_until(time, |_, _| false).is_none());
    }

    /// Runs in steps of 10 ms while `go_on` holds, for at most 5 s (`what` the test needs).
    fn run_while(&mut self, what: &str, mut go_on: impl FnMut(&Self) -> bool) {
        for _ in 0..500 {
            if !go_on(self) {
                return;
            }
            self.run_for(Duration::from_millis(10));
        }
        panic!("the test needs {what} within 5 s");
    }

    /// Enqueues `payload` from node `from` and runs until it is answered.
    fn enqueue(&mut self, from: u64, shard: &ShardId, payload: &[u8]) -> QueueEvent {
        let now = self.now;
        let request = self
            .node(from)
            .queue_enqueue(now, shard.clone(), payload)
            .unwrap();
        self.answer(from, request)
    }

    /// Leases from node `worker` and runs until it is answered.
    fn lease(&mut self, worker: u64, shard: &ShardId) -> QueueEvent {
        let now = self.now;
        let request = self.node(worker).queue_lease(now, shard.clone()).unwrap();
        self.answer(worker, request)
    }

    /// Completes `token` from node `worker` and runs until it is answered.
    fn complete(&mut self, worker: u64, shard: &ShardId, token: OwnershipToken) -> QueueEvent {
        let now = self.now;
        let request = self
            .node(worker)
            .queue_complete(now, shard.clone(), token)
            .unwrap();
        self.answer(worker, request)
    }

    /// Runs until node `n` gets the answer to `request` (within 10 s: the request timeout).
    fn answer(&mut self, n: u64, request: u64) -> QueueEvent {
        let answered = |e: &QueueEvent| match e {
            QueueEvent::Enqueued { request: r, .. }
            | QueueEvent::Leased { request: r, .. }
            | QueueEvent::LeasedItems { request: r, .. }
            | QueueEvent::Empty { request: r, .. }
            | QueueEvent::Accepted { request: r, .. }
            | QueueEvent::Refused { request: r, .. } => *r == request,
            _ => false,
        };
        self.run_until(secs(10), |m, e| m == n && answered(e))
            .unwrap_or_else(|| panic!("request {request} of node {n} unanswered"))
            .1
    }

    /// Hands `owner` an acknowledgement from `replica` of `shard`'s changes up to `applied`
    /// under `fence`, as if it had come over the network.
    fn replica_ack(
        &mut self,
        replica: u64,
        owner: u64,
        shard: &ShardId,
        fence: FencingToken,
        applied: u64,
    ) {
        let ack = QueueMessage {
            shard: shard.clone(),
            body: QueueBody::ReplicaAck { fence, applied },
        };
        let mut bytes = alloc::vec![Channel::Queue.byte()];
        ack.encode(&mut bytes);
        let now = self.now;
        self.node(owner)
            .handle_datagram(now, id(replica), &bytes)
            .unwrap();
    }

    /// The queue events node `n` emitted since the last `events.clear()`.
    fn events_of(&self, n: u64) -> Vec<&QueueEvent> {
        self.events
            .iter()
            .filter(|(m, _)| *m == n)
            .map(|(_, e)| e)
            .collect()
    }
}

fn leased(event: QueueEvent) -> (OwnershipToken, Vec<u8>) {
    match event {
        QueueEvent::Leased { token, payload, .. } => (token, payload),
        other => panic!("not leased: {other:?}"),
    }
}

/// An enqueue is acknowledged only once the configured number of replicas hold the item: with
/// every other member down, the owner holds it and answers nothing; the replicas back, the
/// acknowledgement comes, and a replica's copy holds the item.
#[test]
fn an_enqueue_is_acknowledged_only_once_the_replicas_hold_it() {
    // A replica silent for the recovery wait is replaced (and not chosen again for a while):
    // the wait is longer than the second the replicas are down here.
    let config = queue_config().with_replicas(2).with_recovery_wait(secs(3));
    let mut mesh = Mesh::new(&config);
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let links: Vec<u64> = mesh
        .queues(owner)
        .replica_links(&s)
        .into_iter()
        .map(|(n, _)| n.get())
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
    // One replica of the two down (not node 1: it produces).
    let silent = *links.iter().find(|&&n| n != 1).unwrap();
    mesh.down.insert(silent);
    let now = mesh.now;
    let request = mesh.node(1).queue_enqueue(now, s.clone(), b"a").unwrap();
    let early = mesh.run_until(secs(1), |n, e| {
        n == 1 && matches!(e, QueueEvent::Enqueued { request: r, .. } if *r == request)
    });
    assert!(early.is_none(), "acknowledged with one replica of two");
    let q = mesh.queues(owner);
    let version = q.serving(&s).unwrap().version();
    let holding = q
        .replica_links(&s)
        .iter()
        .filter(|(_, acked)| *acked >= version)
        .count();
    assert_eq!(holding, 1, "the other replica holds it meanwhile");
    assert_eq!(
        mesh.queues(owner).serving(&s).unwrap().pending_count(),
        1,
        "the owner holds the item meanwhile"
    );
    mesh.down.clear();
    let answer = mesh.answer(1, request);
    let QueueEvent::Enqueued { item, fence, .. } = answer else {
        panic!("not acknowledged: {answer:?}");
    };
    let held: Vec<u64> = (1..=MEMBERS)
        .filter(|&n| {
            mesh.queues(n)
                .replicas()
                .get(&s)
                .is_some_and(|r| r.records().any(|rec| rec.id == item))
        })
        .collect();
    assert!(held.len() >= 2, "replicas holding it: {held:?}");
    assert!(!held.contains(&owner));
    let acked = mesh
        .events_of(owner)
        .into_iter()
        .any(|e| matches!(e, QueueEvent::Acknowledged { item: i, fence: f, .. } if *i == item && *f == fence));
    assert!(acked, "the owner reports the acknowledgement");
}

/// A leased item is completed once; the same token again, a token of another lease of it, and a
/// token under another fence are refused, and the owner counts the stale ones.
#[test]
fn a_token_completes_its_item_once_and_stale_tokens_are_refused() {
    let mut mesh = Mesh::new(&queue_config());
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let worker = mesh.other_member(&s);
    assert!(matches!(
        mesh.enqueue(1, &s, b"job"),
        QueueEvent::Enqueued { .. }
    ));
    let (token, payload) = leased(mesh.lease(worker, &s));
    assert_eq!(payload, b"job");
    assert!(matches!(mesh.lease(worker, &s), QueueEvent::Empty { .. }));

    let forged_fence = OwnershipToken {
        fence: FencingToken::new(token.fence.get() + 1),
        ..token
    };
    let QueueEvent::Refused { error, .. } = mesh.complete(worker, &s, forged_fence) else {
        panic!("a token under another fence was accepted");
    };
    assert!(matches!(error, QueueError::StaleFence { .. }), "{error:?}");

    let accepted = mesh.complete(worker, &s, token);
    assert!(matches!(accepted, QueueEvent::Accepted { token: t, .. } if t == token));
    let done = mesh.events_of(owner);
    assert!(
        done.iter()
            .any(|e| matches!(e, QueueEvent::Completed { token: t, .. } if *t == token))
    );
    let q = mesh.queues(owner);
    assert_eq!(
        (
            q.serving(&s).unwrap().pending_count(),
            q.serving(&s).unwrap().active_count()
        ),
        (0, 0)
    );
    assert!(matches!(mesh.lease(worker, &s), QueueEvent::Empty { .. }));
    let stale_before = mesh
        .events_of(owner)
        .iter()
        .filter(|e| matches!(e, QueueEvent::StaleRefused { .. }))
        .count();
    assert_eq!(stale_before, 1, "the forged fence was counted");
    let stats = mesh.queues(owner).stats();
    assert_eq!(stats.stale_refused, 1, "and in the owner's counters");
}

/// A lease of several items grants up to `max` of those pending in one request and one answer,
/// in queue order, each under its own token that completes once; an answer carries only as many
/// as fit a datagram; a lease of one is the one-item request; `max` out of range is refused
/// before anything is sent, naming the field.
#[test]
fn a_lease_of_several_grants_up_to_max_items_in_one_answer() {
    let mut mesh = Mesh::new(&queue_config());
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let worker = mesh.other_member(&s);
    for k in 0..5u8 {
        assert!(matches!(
            mesh.enqueue(1, &s, &[k; 8]),
            QueueEvent::Enqueued { .. }
        ));
    }
    let lease_up_to = |mesh: &mut Mesh, max: u16| {
        let now = mesh.now;
        mesh.sent.clear();
        let request = mesh
            .node(worker)
            .queue_lease_up_to(now, s.clone(), max)
            .unwrap();
        mesh.answer(worker, request)
    };
    let QueueEvent::LeasedItems { items, .. } = lease_up_to(&mut mesh, 3) else {
        panic!("no items leased");
    };
    let payloads: Vec<Vec<u8>> = items.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(
        payloads,
        [[0u8; 8], [1; 8], [2; 8]],
        "three, in queue order"
    );
    let requests = mesh
        .sent
        .iter()
        .filter(|(from, _, m)| {
            *from == worker && matches!(m.body, QueueBody::LeaseUpTo { max: 3, .. })
        })
        .count();
    let answers = mesh
        .sent
        .iter()
        .filter(|(from, to, m)| {
            *from == owner && *to == worker && matches!(m.body, QueueBody::LeasedItems { .. })
        })
        .count();
    assert_eq!((requests, answers), (1, 1), "one request, one answer");
    // Up to `max`: two are left of the five.
    let QueueEvent::LeasedItems { items: rest, .. } = lease_up_to(&mut mesh, 256) else {
        panic!("the last two not leased");
    };
    assert_eq!(rest.len(), 2);
    assert!(matches!(
        lease_up_to(&mut mesh, 4),
        QueueEvent::Empty { .. }
    ));
    for (token, _) in items.iter().chain(&rest) {
        let accepted = mesh.complete(worker, &s, *token);
        assert!(matches!(accepted, QueueEvent::Accepted { token: t, .. } if t == *token));
    }
    let q = mesh.queues(owner);
    assert_eq!(q.serving(&s).unwrap().active_count(), 0);

    // An answer carries as many as fit one datagram: items of the largest payload, two or three.
    for k in 0..5u8 {
        mesh.enqueue(1, &s, &[k; crate::queue::MAX_PAYLOAD_BYTES]);
    }
    let QueueEvent::LeasedItems { items: big, .. } = lease_up_to(&mut mesh, 5) else {
        panic!("no large items leased");
    };
    let fit = crate::queue::LEASED_ITEMS_BYTES
        / (crate::queue::MIN_LEASED_ITEM_BYTES + crate::queue::MAX_PAYLOAD_BYTES);
    assert_eq!(big.len(), fit, "as many as fit an answer");
    // A lease of one is the one-item request and answer every owner reads.
    assert!(matches!(
        lease_up_to(&mut mesh, 1),
        QueueEvent::Leased { .. }
    ));
    assert!(
        mesh.sent
            .iter()
            .any(|(_, _, m)| matches!(m.body, QueueBody::Lease { .. }))
    );

    let now = mesh.now;
    for max in [0, crate::queue::MAX_LEASE_ITEMS + 1] {
        mesh.sent.clear();
        let refused = mesh.node(worker).queue_lease_up_to(now, s.clone(), max);
        assert_eq!(
            refused,
            Err(QueueError::OutOfRange {
                field: "max",
                value: u64::from(max),
                min: 1,
                max: 256
            })
        );
        mesh.run_for(Duration::from_millis(10));
        assert!(
            !mesh.sent.iter().any(|(from, _, m)| *from == worker
                && matches!(
                    m.body,
                    QueueBody::Lease { .. } | QueueBody::LeaseUpTo { .. }
                )),
            "nothing sent for max = {max}"
        );
    }
}

/// A lease request resent because its answer was lost gets the item its first answer carried,
/// not one more: the owner remembers its grants for the request timeout. Before, each resend
/// leased another item that nobody took (its worker's node drops an answer to a request
/// already answered), held until the lease timeout.
#[test]
fn a_resent_lease_request_gets_the_same_item_not_another() {
    let mut mesh = Mesh::new(&queue_config());
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let worker = mesh.other_member(&s);
    for payload in [b"first", b"other"] {
        mesh.enqueue(1, &s, payload);
    }
    // The first answer of each kind to the worker is lost.
    let mut lost = BTreeSet::new();
    mesh.drop_if = Some(Box::new(move |from, to, m| {
        let kind = match m.body {
            QueueBody::Leased { .. } => 1,
            QueueBody::LeasedItems { .. } => 2,
            _ => return false,
        };
        from == owner && to == worker && lost.insert(kind)
    }));
    mesh.sent.clear();
    let (token, payload) = leased(mesh.lease(worker, &s));
    assert_eq!(payload, b"first");
    let answers = mesh
        .sent
        .iter()
        .filter(|(_, to, m)| *to == worker && matches!(m.body, QueueBody::Leased { .. }))
        .count();
    assert_eq!(
        answers, 2,
        "the first answer was lost and the request resent"
    );
    let q = mesh.queues(owner);
    assert_eq!(
        q.serving(&s).unwrap().active_count(),
        1,
        "the resend got the same item back, no other was leased"
    );
    assert!(matches!(
        mesh.complete(worker, &s, token),
        QueueEvent::Accepted { .. }
    ));
    // The same for a lease of several: the one left, once.
    let now = mesh.now;
    let request = mesh
        .node(worker)
        .queue_lease_up_to(now, s.clone(), 8)
        .unwrap();
    let QueueEvent::LeasedItems { items, .. } = mesh.answer(worker, request) else {
        panic!("nothing leased");
    };
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].1, b"other");
    let q = mesh.queues(owner);
    assert_eq!(q.serving(&s).unwrap().active_count(), 1);
}

/// A worker's failure requeues the item while attempts remain, then dead-letters it; a
/// heartbeat keeps a lease past its timeout and an expired lease requeues.
#[test]
fn failures_requeue_then_dead_letter_and_heartbeats_hold_a_lease() {
    let mut mesh = Mesh::new(&queue_config());
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let worker = mesh.other_member(&s);
    mesh.enqueue(1, &s, b"flaky");
    let (first, _) = leased(mesh.lease(worker, &s));
    let now = mesh.now;
    let r = mesh
        .node(worker)
        .queue_fail(now, s.clone(), first, true)
        .unwrap();
    assert!(matches!(
        mesh.answer(worker, r),
        QueueEvent::Accepted { .. }
    ));
    let (second, _) = leased(mesh.lease(worker, &s));
    assert_eq!(second.item, first.item);
    assert_eq!(second.attempt, first.attempt + 1);

    // Heartbeat past the 2 s lease timeout: still held.
    for _ in 0..3 {
        mesh.run_for(Duration::from_millis(1_500));
        let now = mesh.now;
        let r = mesh
            .node(worker)
            .queue_heartbeat(now, s.clone(), second)
            .unwrap();
        assert!(matches!(
            mesh.answer(worker, r),
            QueueEvent::Accepted { .. }
        ));
    }
    let now = mesh.now;
    let r = mesh
        .node(worker)
        .queue_fail(now, s.clone(), second, true)
        .unwrap();
    assert!(matches!(
        mesh.answer(worker, r),
        QueueEvent::Accepted { .. }
    ));
    let failed: Vec<FailOutcome> = mesh
        .events_of(owner)
        .iter()
        .filter_map(|e| match e {
            QueueEvent::Failed { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [FailOutcome::Requeued, FailOutcome::DeadLettered]);
    assert!(
        matches!(mesh.lease(worker, &s), QueueEvent::Empty { .. }),
        "max attempts 2"
    );

    // An expired lease comes back with the next attempt.
    mesh.enqueue(1, &s, b"slow");
    let (slow, _) = leased(mesh.lease(worker, &s));
    mesh.run_for(secs(3));
    let released = mesh.events_of(owner).into_iter().any(|e| {
        matches!(e, QueueEvent::Released { item, outcome: FailOutcome::Requeued, .. } if *item == slow.item)
    });
    assert!(released, "the expired lease was requeued");
    let (again, _) = leased(mesh.lease(worker, &s));
    assert_eq!((again.item, again.attempt), (slow.item, slow.attempt + 1));
    let QueueEvent::Refused { error, .. } = mesh.complete(worker, &s, slow) else {
        panic!("the expired lease's token completed the item");
    };
    assert!(matches!(error, QueueError::StaleLease { .. }), "{error:?}");
}

/// The owner crashes with an item acknowledged and leased: another member takes the shard
/// under a higher fence, rebuilds the queue from the replica, refuses the old lease's token,
/// and serves the item again once that lease expires.
#[test]
fn a_new_owner_rebuilds_from_the_replica_and_fences_the_old_workers() {
    let mut mesh = Mesh::new(&queue_config());
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let worker = mesh.other_member(&s);
    mesh.enqueue(1, &s, b"kept");
    mesh.enqueue(1, &s, b"leased");
    let (old, _) = leased(mesh.lease(worker, &s));
    mesh.down.insert(owner);
    mesh.events.clear();
    let recovering = mesh.run_until(
        secs(30),
        |_, e| matches!(e, QueueEvent::Recovering { shard, .. } if *shard == s),
    );
    assert!(recovering.is_some(), "no member took {s} over within 30 s");
    let recovering_at = mesh.now;
    let serving = mesh.run_until(
        secs(30),
        |_, e| matches!(e, QueueEvent::Serving { shard, .. } if *shard == s),
    );
    // The dead owner is suspect by then, and not waited for past the recovery wait (only a
    // member held alive is: see the next test).
    let took = mesh.now.saturating_duration_since(recovering_at);
    assert!(
        took <= queue_config().recovery_wait() + Duration::from_millis(100),
        "served {took:?} after it began recovering"
    );
    let Some((
        new_owner,
        QueueEvent::Serving {
            fence,
            source,
            items,
            ..
        },
    )) = serving
    else {
        panic!("no member served {s} again within 30 s");
    };
    assert_ne!(new_owner, owner);
    assert!(fence > old.fence, "{fence:?} after {:?}", old.fence);
    assert_eq!(items, 2);
    assert!(source.is_some(), "rebuilt from a replica, not empty");
    assert!(
        matches!(recovering, Some((n, QueueEvent::Recovering { fence: f, .. })) if n == new_owner && f == fence),
        "{recovering:?}"
    );

    // The deposed owner's token is refused by the new owner.
    let QueueEvent::Refused { error, .. } = mesh.complete(worker, &s, old) else {
        panic!("a deposed owner's token completed an item");
    };
    assert!(matches!(error, QueueError::StaleFence { .. }), "{error:?}");

    // Both items are served under the new fence: the pending one at once, the leased one once
    // its old lease expired.
    let mut payloads = Vec::new();
    for _ in 0..20 {
        match mesh.lease(worker, &s) {
            QueueEvent::Leased { token, payload, .. } => {
                assert_eq!(token.fence, fence);
                assert!(matches!(
                    mesh.complete(worker, &s, token),
                    QueueEvent::Accepted { .. }
                ));
                payloads.push(payload);
            }
            QueueEvent::Empty { .. } if payloads.len() < 2 => mesh.run_for(secs(1)),
            other => {
                assert!(matches!(other, QueueEvent::Empty { .. }), "{other:?}");
                break;
            }
        }
    }
    payloads.sort();
    assert_eq!(payloads, [b"kept".to_vec(), b"leased".to_vec()]);
}

/// A new owner waits past its recovery wait for a member that is alive and runs queues but has
/// not answered: it may hold the only copy of acknowledged items (issue 16, `queue-owner-lapse`
/// seed 425: the old owner's replica answered after 1 s of heavy loss, and the new owner,
/// having served at the wait, had lost every item of the shard). Membership still holds the
/// replica alive here: only its queue messages are lost.
#[test]
fn a_new_owner_waits_past_the_wait_for_a_silent_member_that_is_alive() {
    let config = queue_config();
    let mut mesh = Mesh::new(&config);
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let replica = replica_of(&mesh, owner, &s);
    mesh.enqueue(1, &s, b"one");
    mesh.enqueue(1, &s, b"two");
    mesh.down.insert(owner);
    mesh.events.clear();
    mesh.drop_if = Some(Box::new(move |from, _, m| {
        from == replica && matches!(m.body, QueueBody::Offer { .. })
    }));
    let recovering = mesh.run_until(
        secs(30),
        |_, e| matches!(e, QueueEvent::Recovering { shard, .. } if *shard == s),
    );
    let (new_owner, _) = recovering.expect("a member takes the shard over");
    assert_ne!(new_owner, replica, "the test needs the copy elsewhere");
    let early = mesh.run_until(
        config.recovery_wait() * 3,
        |_, e| matches!(e, QueueEvent::Serving { shard, .. } if *shard == s),
    );
    assert!(
        early.is_none(),
        "served without the silent replica: {early:?}"
    );
    mesh.drop_if = None;
    let serving = mesh.run_until(
        secs(10),
        |_, e| matches!(e, QueueEvent::Serving { shard, .. } if *shard == s),
    );
    let Some((n, QueueEvent::Serving { items, source, .. })) = serving else {
        panic!("not served once the replica answers");
    };
    assert_eq!((n, items, source), (new_owner, 2, Some(id(replica))));
}

/// Time a new owner did not run is not silence of the members it asked: one paused through its
/// recovery wait together with the old owner and its replica asks them again when it resumes,
/// and waits for their answers, though membership holds them suspect by then (issue 16,
/// `queue-owner-lapse` seed 7600: the new owner served at its first step back, from its own
/// stale copy, and lost 177 acknowledged items).
#[test]
fn a_new_owner_paused_through_its_wait_asks_again_when_it_resumes() {
    let config = queue_config();
    let mut mesh = Mesh::new(&config);
    let (s, owner, replica) = shards()
        .shards()
        .find_map(|s| {
            let owner = mesh.owner_of(&s)?;
            let replica = replica_of(&mesh, owner, &s);
            // Node 1 is the only voter: it stays up.
            (replica != 1).then_some((s, owner, replica))
        })
        .expect("a shard whose replica is not the voter");
    mesh.enqueue(1, &s, b"one");
    mesh.enqueue(1, &s, b"two");
    let the_other = (2..=MEMBERS)
        .find(|n| ![owner, replica].contains(n))
        .unwrap();
    let suspect = |mesh: &Mesh, n: u64| {
        mesh.nodes[(the_other - 1) as usize]
            .membership()
            .member(id(n))
            .is_some_and(|m| m.state == MemberState::Suspect)
    };
    // The replica goes first, and is suspect by the time the owner goes.
    mesh.down.insert(replica);
    mesh.run_while("the replica suspect", |m| !suspect(m, replica));
    assert_eq!(
        replica_of(&mesh, owner, &s),
        replica,
        "the test needs the replica kept"
    );
    mesh.down.insert(owner);
    mesh.events.clear();
    let recovering = mesh.run_until(
        secs(30),
        |_, e| matches!(e, QueueEvent::Recovering { shard, .. } if *shard == s),
    );
    let (new_owner, _) = recovering.expect("a member takes the shard over");
    assert_eq!(new_owner, the_other);
    // The new owner pauses at once, past its recovery wait (not its lease); then it runs again,
    // and the holders once it holds both suspect (resumed first, they would refute at once).
    mesh.down.insert(new_owner);
    mesh.run_for(config.recovery_wait() * 3 / 2);
    mesh.down.remove(&new_owner);
    mesh.run_while("both holders suspect", |m| {
        !(suspect(m, owner) && suspect(m, replica))
    });
    mesh.down.clear();
    mesh.run_for(secs(10));
    let served = mesh.events.iter().find_map(|(n, e)| match e {
        QueueEvent::Serving { shard, items, .. } if *shard == s => Some((*n, *items)),
        _ => None,
    });
    assert_eq!(
        served,
        Some((new_owner, 2)),
        "served without the holders' copies"
    );
}

/// A member that runs queues but not the shard a new owner recovers says at once that it holds
/// nothing of it (the message is still refused as for an unknown shard), so that the owner does
/// not wait for it past its recovery wait (see the test above).
#[test]
fn a_member_without_the_shard_offers_nothing_at_once() {
    let mut mesh = Mesh::new(&queue_config());
    let unknown = ShardId::new("jobs", 7).unwrap();
    let recover = QueueMessage {
        shard: unknown.clone(),
        body: QueueBody::Recover {
            fence: FencingToken::new(99),
        },
    };
    let mut bytes = vec![Channel::Queue.byte()];
    recover.encode(&mut bytes);
    let now = mesh.now;
    let refused = |mesh: &mut Mesh| mesh.node(3).queues().unwrap().stats().refused_messages;
    let before = refused(&mut mesh);
    assert!(mesh.node(3).handle_datagram(now, id(2), &bytes).is_err());
    assert_eq!(refused(&mut mesh), before + 1, "counted");
    // The answer is dropped before node 2, which does not run that shard either.
    let shard = unknown.clone();
    mesh.drop_if = Some(Box::new(move |_, _, m| m.shard == shard));
    mesh.sent.clear();
    mesh.run_for(Duration::from_millis(50));
    let offered = mesh.sent.iter().any(|(from, to, m)| {
        *from == 3
            && *to == 2
            && m.shard == unknown
            && matches!(m.body, QueueBody::Offer { fence, source, applied: 0 }
                if fence.get() == 99 && source.get() == 0)
    });
    assert!(offered, "{:?}", mesh.sent);
}

/// Backpressure: active once `pending >= high`, published in the owner's metadata so a
/// producer elsewhere sees it; inactive again at `pending <= low`, not before the cooldown.
#[test]
fn backpressure_reaches_producers_and_respects_the_cooldown() {
    let cooldown = secs(2);
    let config = queue_config()
        .with_watermarks(3, Some(1))
        .with_cooldown(cooldown);
    let mut mesh = Mesh::new(&config);
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let worker = mesh.other_member(&s);
    for k in 0..3u8 {
        mesh.enqueue(1, &s, &[k]);
    }
    let seen = |mesh: &Mesh, n: u64| {
        let node = &mesh.nodes[(n - 1) as usize];
        node.queues()
            .unwrap()
            .backpressure(node.queue_context(), &s)
            .map(|(o, _, signal)| (o, signal.is_active, signal.pending_count))
    };
    let became_active = mesh
        .events_of(owner)
        .into_iter()
        .find_map(|e| match e {
            QueueEvent::Backpressure { signal, .. } if signal.is_active => Some(signal.observed_at),
            _ => None,
        })
        .expect("active at the high watermark");
    // Gossip carries the owner's signal to the producer.
    mesh.run_for(secs(2));
    assert_eq!(seen(&mesh, 1), Some((id(owner), true, 3)));

    // Down to the low watermark at once: the transition waits out the cooldown.
    for _ in 0..2 {
        let (token, _) = leased(mesh.lease(worker, &s));
        mesh.complete(worker, &s, token);
    }
    mesh.run_for(secs(3));
    let inactive = mesh
        .events_of(owner)
        .into_iter()
        .find_map(|e| match e {
            QueueEvent::Backpressure { signal, .. } if !signal.is_active => {
                Some(signal.observed_at)
            }
            _ => None,
        })
        .expect("inactive at the low watermark");
    assert!(
        inactive >= became_active + cooldown,
        "{inactive:?} {became_active:?}"
    );
    mesh.run_for(secs(2));
    assert_eq!(
        seen(&mesh, 1).map(|(o, a, _)| (o, a)),
        Some((id(owner), false))
    );
}

/// A worker's node dies with an item leased: after the health grace the owner says so and
/// requeues the item at once, long before its lease would expire.
#[test]
fn a_dead_workers_items_are_requeued_after_the_grace() {
    let config = queue_config().with_lease_timeout(secs(600));
    let mut mesh = Mesh::new(&config);
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let worker = mesh.other_member(&s);
    mesh.enqueue(1, &s, b"orphan");
    let (token, _) = leased(mesh.lease(worker, &s));
    mesh.down.insert(worker);
    let released = mesh.run_until(secs(60), |n, e| {
        n == owner && matches!(e, QueueEvent::Released { item, .. } if *item == token.item)
    });
    assert!(
        released.is_some(),
        "the gone worker's item was not released"
    );
    assert!(
        mesh.events_of(owner)
            .iter()
            .any(|e| matches!(e, QueueEvent::WorkerDisconnected { node } if *node == id(worker))),
        "the health tracker's alert"
    );
    let now = mesh.now;
    let summary = mesh.queues(owner).health().summary(now);
    assert!(summary.unhealthy >= 1, "{summary:?}");
    let third = (2..=MEMBERS).find(|&n| n != owner && n != worker).unwrap();
    let (again, payload) = leased(mesh.lease(third, &s));
    assert_eq!(
        (again.item, payload.as_slice()),
        (token.item, &b"orphan"[..])
    );
}

/// Drain takes the pending items out (only at the owner); restore puts them back; both are
/// replicated, so a new owner would see the same queue.
#[test]
fn drain_and_restore_run_at_the_owner_only() {
    let mut mesh = Mesh::new(&queue_config());
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let other = mesh.other_member(&s);
    for k in 0..3u8 {
        mesh.enqueue(1, &s, &[k]);
    }
    let now = mesh.now;
    let error = mesh.node(other).queue_drain(now, &s).unwrap_err();
    assert!(
        matches!(error, QueueError::NotOwner { owner: Some(o) } if o == id(owner)),
        "{error:?}"
    );
    let drained = mesh.node(owner).queue_drain(now, &s).unwrap();
    assert_eq!(
        drained.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        [[0], [1], [2]]
    );
    mesh.run_for(secs(1));
    let replica_pending = |mesh: &Mesh| {
        (1..=MEMBERS)
            .filter_map(|n| mesh.queues(n).replicas().get(&s))
            .map(|r| r.records().filter(|rec| !rec.state.is_finished()).count())
            .max()
    };
    assert_eq!(
        replica_pending(&mesh),
        Some(0),
        "the drain reached the replica"
    );
    let now = mesh.now;
    assert_eq!(mesh.node(owner).queue_restore(now, &s, &drained), Ok(3));
    mesh.run_for(secs(1));
    assert_eq!(
        replica_pending(&mesh),
        Some(3),
        "the restore reached the replica"
    );
    let (_, payload) = leased(mesh.lease(other, &s));
    assert_eq!(payload, [0]);
}

/// A request to an owner that does not answer is refused as timed out at its deadline (the
/// producer's call never hangs), and leaves nothing in flight.
#[test]
fn a_request_to_a_silent_owner_times_out() {
    let config = queue_config().with_request_timeout(secs(1));
    let mut mesh = Mesh::new(&config);
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    mesh.down.insert(owner);
    let sent = mesh.now;
    let request = mesh.node(1).queue_enqueue(sent, s, b"lost?").unwrap();
    assert_eq!(mesh.nodes[0].queues().unwrap().requests_in_flight(), 1);
    let answer = mesh.answer(1, request);
    assert!(
        matches!(
            answer,
            QueueEvent::Refused {
                error: QueueError::TimedOut,
                ..
            }
        ),
        "{answer:?}"
    );
    let waited = mesh.now - sent;
    assert!(waited >= secs(1) && waited < secs(2), "{waited:?}");
    assert_eq!(mesh.nodes[0].queues().unwrap().requests_in_flight(), 0);
}

/// A completion sent again after it was accepted (its answer lost) is accepted again and not
/// counted again; a token naming an item the queue never had is refused as unknown.
#[test]
fn a_resent_completion_is_accepted_once_more_and_an_unknown_item_is_refused() {
    let mut mesh = Mesh::new(&queue_config());
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let worker = mesh.other_member(&s);
    mesh.enqueue(1, &s, b"once");
    let (token, _) = leased(mesh.lease(worker, &s));
    for _ in 0..2 {
        let answer = mesh.complete(worker, &s, token);
        assert!(matches!(answer, QueueEvent::Accepted { .. }), "{answer:?}");
    }
    let stats = mesh.queues(owner).stats();
    assert_eq!((stats.acknowledged, stats.completed), (1, 1), "{stats:?}");

    let forged = OwnershipToken {
        item: crate::queue::ItemId::new(token.item.get() + 1_000),
        ..token
    };
    let answer = mesh.complete(worker, &s, forged);
    assert!(
        matches!(answer, QueueEvent::Refused { error: QueueError::UnknownItem { item }, .. } if item == forged.item),
        "{answer:?}"
    );
}

/// An owner paused past its lease's expiry stops serving and keeps its queue; its renewal
/// comes back under a new fence (the table let the lease go: with instant delivery the
/// table's expiry and the client's local one fall within the same tick here, so the
/// same-fence resume is the simulator's `queue-owner-lapse`), so it rebuilds, from the replicas
/// and its own kept copy, the same items: nothing lost, the old grant's token refused.
#[test]
fn an_owner_whose_lease_lapses_stops_then_rebuilds_its_queue_under_a_new_fence() {
    let mut mesh = Mesh::new(&queue_config().with_lease_timeout(secs(60)));
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let worker = mesh.other_member(&s);
    mesh.enqueue(1, &s, b"a");
    mesh.enqueue(1, &s, b"b");
    let (token, _) = leased(mesh.lease(worker, &s));
    mesh.down.insert(owner);
    mesh.run_for(Duration::from_millis(2_900));
    mesh.down.clear();
    mesh.events.clear();
    let back = mesh.run_until(
        secs(10),
        |_, e| matches!(e, QueueEvent::Serving { shard, .. } if *shard == s),
    );
    let Some((server, QueueEvent::Serving { fence, items, .. })) = back else {
        panic!("nobody served {s} again: {:?}", mesh.events);
    };
    let stopped = mesh.events_of(owner).into_iter().any(
        |e| matches!(e, QueueEvent::Stopped { shard, fence: f } if *shard == s && *f == token.fence),
    );
    assert!(
        stopped,
        "the lapsed owner stopped serving: {:?}",
        mesh.events
    );
    assert!(fence > token.fence, "{fence:?}");
    assert_eq!(items, 2, "served by node {server}");
    let answer = mesh.complete(worker, &s, token);
    assert!(
        matches!(
            answer,
            QueueEvent::Refused {
                error: QueueError::StaleFence { .. },
                ..
            }
        ),
        "{answer:?}"
    );
}

/// The owner's refusals reach a producer on another node as the errors the owner raised, with
/// their bounds: a full queue (`Full`), and an owner whose enqueues wait for replicas that are
/// down, past [`MAX_WAITING_ACKS`](crate::queue::MAX_WAITING_ACKS) (`Overloaded`: the owner
/// bounds what a producer can make it hold).
#[test]
fn an_owners_refusals_reach_a_remote_producer_with_their_bounds() {
    // Full: two items fit, the third is refused and nothing is enqueued.
    let mut mesh = Mesh::new(&queue_config().with_max_items(2));
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    for payload in [b"a", b"b"] {
        let answer = mesh.enqueue(1, &s, payload);
        assert!(matches!(answer, QueueEvent::Enqueued { .. }), "{answer:?}");
    }
    let answer = mesh.enqueue(1, &s, b"c");
    assert!(
        matches!(
            answer,
            QueueEvent::Refused {
                error: QueueError::Full { max: 2 },
                ..
            }
        ),
        "{answer:?}"
    );
    let q = mesh.queues(owner);
    assert_eq!(q.serving(&s).unwrap().pending_count(), 2);

    // Overloaded: two replicas wanted, every member but the owner and node 1 down, so nothing
    // is acknowledged; the owner's own enqueue and node 1's 4,095 fill its 4,096 waiting slots
    // and node 1's next one is refused.
    let config = queue_config().with_replicas(2).with_recovery_wait(secs(60));
    let mut mesh = Mesh::new(&config);
    let owner = mesh.owner_of(&s).unwrap();
    for n in 2..=MEMBERS {
        if n != owner {
            mesh.down.insert(n);
        }
    }
    let now = mesh.now;
    mesh.node(owner)
        .queue_enqueue(now, s.clone(), b"own")
        .unwrap();
    let waiting = crate::queue::MAX_WAITING_ACKS;
    let mut last = 0;
    for k in 0..waiting {
        last = mesh
            .node(1)
            .queue_enqueue(now, s.clone(), &k.to_le_bytes())
            .unwrap();
    }
    // At once: the refusal comes back with the datagram round, not at the request timeout.
    let answer = mesh.run_until(Duration::from_millis(100), |n, e| {
        n == 1 && matches!(e, QueueEvent::Refused { request, .. } if *request == last)
    });
    assert!(
        matches!(
            answer,
            Some((_, QueueEvent::Refused {
                error: QueueError::Overloaded { max },
                ..
            })) if max == waiting
        ),
        "{answer:?}"
    );
    let refused = mesh
        .events_of(1)
        .into_iter()
        .filter(|e| matches!(e, QueueEvent::Refused { .. }))
        .count();
    assert_eq!(refused, 1, "only the one past the bound");
    let q = mesh.queues(owner);
    assert_eq!(q.serving(&s).unwrap().pending_count(), waiting);
}

/// The component's views: the owner's backpressure monitor and replica links, a replica's
/// copy, the configured shards and configuration on every node, and a new owner reported as
/// rebuilding until it serves.
#[test]
fn the_views_show_owners_replicas_and_a_rebuild() {
    let config = queue_config().with_watermarks(10, None);
    let mut mesh = Mesh::new(&config);
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let answer = mesh.enqueue(1, &s, b"x");
    let QueueEvent::Enqueued { item, .. } = answer else {
        panic!("{answer:?}");
    };
    for n in 1..=MEMBERS {
        let q = mesh.queues(n);
        assert_eq!(q.config(), &config);
        assert_eq!(
            q.shards().cloned().collect::<Vec<_>>(),
            shards().shards().collect::<Vec<_>>()
        );
        assert!(!q.is_recovering(&s));
        assert_eq!(q.monitor(&s).is_some(), n == owner, "node {n}");
    }
    let q = mesh.queues(owner);
    let monitor = q.monitor(&s).unwrap();
    assert!(!monitor.is_active(), "one item, high watermark 10");
    let signal = monitor.signal(mesh.now, 1);
    assert_eq!((signal.high_watermark, signal.low_watermark), (Some(10), 5));
    let version = q.serving(&s).unwrap().version();
    let [(replica, acked)] = q.replica_links(&s)[..] else {
        panic!("one replica: {:?}", q.replica_links(&s));
    };
    assert_eq!(acked, version);
    let copy = &mesh.queues(replica.get()).replicas()[&s];
    assert_eq!(copy.applied(), version);
    assert!(copy.records().any(|r| r.id == item));

    // The owner gone: the next one reports itself rebuilding until it serves.
    mesh.down.insert(owner);
    mesh.events.clear();
    let Some((next, _)) = mesh.run_until(
        secs(30),
        |_, e| matches!(e, QueueEvent::Recovering { shard, .. } if *shard == s),
    ) else {
        panic!("nobody took {s} over");
    };
    let q = mesh.queues(next);
    assert!(q.is_recovering(&s));
    assert!(q.serving(&s).is_none() && q.monitor(&s).is_none());
    assert!(q.owned().any(|(shard, _)| *shard == s));
    mesh.run_until(secs(30), |n, e| {
        n == next && matches!(e, QueueEvent::Serving { shard, .. } if *shard == s)
    })
    .expect("the new owner serves");
    let q = mesh.queues(next);
    assert!(!q.is_recovering(&s));
    assert!(q.monitor(&s).is_some());
}

/// The replica of `shard` its owner replicates to (one, with `queue_config`).
fn replica_of(mesh: &Mesh, owner: u64, shard: &ShardId) -> u64 {
    let links = mesh.queues(owner).replica_links(shard);
    assert_eq!(links.len(), 1, "{links:?}");
    links[0].0.get()
}

/// Enqueues made in one round (before the owner's transmits are polled) travel to the replica
/// in one Replicate message and come back in one acknowledgement; and an acknowledgement
/// answers exactly the enqueues whose change the version it names covers, none after it.
#[test]
fn enqueues_of_one_round_share_a_batch_and_an_ack_covers_exactly_its_versions() {
    let mut mesh = Mesh::new(&queue_config());
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let replica = replica_of(&mesh, owner, &s);
    let producer = (1..=MEMBERS).find(|&n| n != owner).unwrap();
    let base = mesh.queues(owner).serving(&s).unwrap().version();

    // Six enqueues in one round, their acknowledgements held back.
    mesh.sent.clear();
    mesh.drop_if = Some(Box::new(move |from, to, m| {
        from == replica && to == owner && matches!(m.body, QueueBody::ReplicaAck { .. })
    }));
    let now = mesh.now;
    let requests: Vec<u64> = (0..6u8)
        .map(|k| {
            mesh.node(producer)
                .queue_enqueue(now, s.clone(), &[k])
                .unwrap()
        })
        .collect();
    let early = mesh.run_until(Duration::from_millis(150), |n, e| {
        n == producer && matches!(e, QueueEvent::Enqueued { .. })
    });
    assert!(early.is_none(), "acknowledged without a replica's ack");
    let batches: Vec<&QueueMessage> = mesh
        .sent
        .iter()
        .filter(|(f, t, m)| {
            *f == owner && *t == replica && matches!(m.body, QueueBody::Replicate(_))
        })
        .map(|(_, _, m)| m)
        .collect();
    assert_eq!(batches.len(), 1, "one batch for the round: {batches:?}");
    let QueueBody::Replicate(batch) = &batches[0].body else {
        unreachable!()
    };
    assert_eq!(
        (batch.from, batch.to, batch.records.len()),
        (base, base + 6, 6)
    );
    let acks = mesh
        .sent
        .iter()
        .filter(|(f, _, m)| *f == replica && matches!(m.body, QueueBody::ReplicaAck { .. }))
        .count();
    assert_eq!(acks, 1, "one acknowledgement for the batch");

    // An acknowledgement of the third enqueue's version answers the first three only.
    mesh.replica_ack(replica, owner, &s, batch.fence, base + 3);
    mesh.events.clear();
    mesh.run_for(Duration::from_millis(50));
    assert_eq!(
        enqueued(&mesh, producer),
        requests[..3].to_vec(),
        "exactly the versions acknowledged"
    );

    // The real acknowledgements through: the other three.
    mesh.drop_if = None;
    mesh.run_for(secs(1));
    assert_eq!(
        enqueued(&mesh, producer),
        requests,
        "every enqueue answered once"
    );
}

/// An enqueue is answered only once a replica holds its item, though the item changed before
/// the batch covering its enqueue was built (issue 16, `queue-owner-lapse` seed 947): such a
/// batch (here a resend, cut at `MAX_BATCH_RECORDS`) lists the item at its new version, in a
/// later batch, so a replica that acknowledged the enqueue's version may not hold the item at
/// all. The owner answered on that acknowledgement and lapsed; two acknowledged items were
/// lost. Every batch covering the enqueue's version carries the item now.
#[test]
fn an_enqueue_is_answered_only_once_a_replica_holds_its_item_though_it_changed_since() {
    let mut mesh = Mesh::new(&queue_config());
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let replica = replica_of(&mesh, owner, &s);
    let producer = (1..=MEMBERS).find(|&n| n != owner).unwrap();
    // Whether any node's replica copy holds the item (the owner replaces a replica that
    // acknowledges nothing for the recovery wait).
    let holds = |mesh: &Mesh, item| {
        mesh.nodes.iter().any(|n| {
            n.queues()
                .unwrap()
                .replicas()
                .get(&s)
                .is_some_and(|r| r.records().any(|rec| rec.id == item))
        })
    };

    // Every batch to the replica is lost while the item is enqueued, 20 more after it, and the
    // item leased: its record moves past the others'.
    mesh.drop_if = Some(Box::new(move |from, to, m| {
        from == owner && to == replica && matches!(m.body, QueueBody::Replicate(_))
    }));
    let now = mesh.now;
    let first = mesh
        .node(producer)
        .queue_enqueue(now, s.clone(), b"first")
        .unwrap();
    mesh.run_for(Duration::from_millis(20));
    let now = mesh.now;
    for k in 0..20u8 {
        mesh.node(producer)
            .queue_enqueue(now, s.clone(), &[k])
            .unwrap();
    }
    mesh.run_for(Duration::from_millis(20));
    let (token, payload) = leased(mesh.lease(producer, &s));
    assert_eq!(payload, b"first", "the oldest item is leased first");
    let item = token.item;

    // Now only the batches that carry the item are lost, to any replica. The resends cover the
    // enqueue's version, and one that did not carry the item would be acknowledged without it.
    mesh.events.clear();
    mesh.drop_if = Some(Box::new(move |from, _, m| {
        from == owner
            && matches!(&m.body, QueueBody::Replicate(b) if b.records.iter().any(|r| r.id == item))
    }));
    mesh.run_for(secs(1));
    assert!(!holds(&mesh, item), "the item's batches were lost");
    assert!(
        !enqueued(&mesh, producer).contains(&first),
        "answered while no replica holds the item"
    );

    // The item's batch through: answered, and the replica holds it.
    mesh.drop_if = None;
    mesh.run_for(secs(1));
    assert!(enqueued(&mesh, producer).contains(&first));
    assert!(holds(&mesh, item));
}

/// An enqueue is answered once the replicas acknowledged the version that enqueued its item,
/// not whatever version the item's record has when the acknowledgement comes: a worker that
/// leased the item meanwhile (a fast worker, on real nodes the usual case) must not make the
/// enqueue wait for the lease's replication too. It did, and on real nodes every such
/// acknowledgement paid a second round trip and a second checkpoint sync (and a third, once
/// the completion changed the item again).
#[test]
fn an_enqueue_is_answered_on_its_own_version_though_the_item_was_leased_since() {
    let mut mesh = Mesh::new(&queue_config());
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let replica = replica_of(&mesh, owner, &s);
    let producer = (1..=MEMBERS).find(|&n| n != owner).unwrap();
    let version = |mesh: &Mesh| mesh.queues(owner).serving(&s).unwrap().version();
    let base = version(&mesh);

    // The replica's acknowledgements held back: the enqueue waits, and its item is leased.
    mesh.drop_if = Some(Box::new(move |from, to, m| {
        from == replica && to == owner && matches!(m.body, QueueBody::ReplicaAck { .. })
    }));
    let now = mesh.now;
    let request = mesh
        .node(producer)
        .queue_enqueue(now, s.clone(), b"a")
        .unwrap();
    mesh.run_for(Duration::from_millis(20));
    assert_eq!(version(&mesh), base + 1, "the enqueue's change");
    let (token, _) = leased(mesh.lease(producer, &s));
    assert_eq!(version(&mesh), base + 2, "the lease changed the item");
    mesh.events.clear();

    // An acknowledgement of the enqueue's version alone answers it.
    mesh.replica_ack(replica, owner, &s, token.fence, base + 1);
    mesh.run_for(Duration::from_millis(50));
    assert_eq!(
        enqueued(&mesh, producer),
        vec![request],
        "answered on the acknowledgement of its own version"
    );
    // The completion still waits for the acknowledgement of its own change.
    let now = mesh.now;
    let complete = mesh
        .node(producer)
        .queue_complete(now, s.clone(), token)
        .unwrap();
    let early = mesh.run_until(Duration::from_millis(150), |n, e| {
        n == producer && matches!(e, QueueEvent::Accepted { request: r, .. } if *r == complete)
    });
    assert!(
        early.is_none(),
        "a completion answered before its replica holds it"
    );
    mesh.drop_if = None;
    assert!(matches!(
        mesh.answer(producer, complete),
        QueueEvent::Accepted { .. }
    ));
}

/// The requests node `n` had answered as acknowledged enqueues since the last `events.clear()`,
/// with their items, in order (`answer` finds one request's answer only: the events of a run
/// are drained together).
fn enqueued(mesh: &Mesh, n: u64) -> Vec<u64> {
    mesh.events_of(n)
        .into_iter()
        .filter_map(|e| match e {
            QueueEvent::Enqueued { request, .. } => Some(*request),
            _ => None,
        })
        .collect()
}

/// A batch lost among several of one flush is sent again: every item is acknowledged, and the
/// replica ends up holding every one.
#[test]
fn a_batch_lost_among_several_is_resent() {
    let mut mesh = Mesh::new(&queue_config());
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let replica = replica_of(&mesh, owner, &s);
    let producer = (1..=MEMBERS).find(|&n| n != owner).unwrap();
    // Items of 250 bytes: three to a batch, so twelve take four batches in one flush.
    mesh.sent.clear();
    let mut lost = 0;
    mesh.drop_if = Some(Box::new(move |from, to, m| {
        let first = from == owner
            && to == replica
            && matches!(m.body, QueueBody::Replicate(_))
            && lost == 0;
        lost += usize::from(first);
        first
    }));
    let now = mesh.now;
    let requests: Vec<u64> = (0..12u8)
        .map(|k| {
            mesh.node(producer)
                .queue_enqueue(now, s.clone(), &[k; 250])
                .unwrap()
        })
        .collect();
    mesh.events.clear();
    mesh.run_for(secs(2));
    assert_eq!(
        enqueued(&mesh, producer),
        requests,
        "every enqueue answered once"
    );
    let items: BTreeSet<_> = mesh
        .events_of(producer)
        .into_iter()
        .filter_map(|e| match e {
            QueueEvent::Enqueued { item, .. } => Some(*item),
            _ => None,
        })
        .collect();
    let replicated =
        |m: &QueueMessage| matches!(&m.body, QueueBody::Replicate(b) if !b.records.is_empty());
    let sends: Vec<(u64, u64)> = mesh
        .sent
        .iter()
        .filter(|(f, t, m)| *f == owner && *t == replica && replicated(m))
        .map(|(_, _, m)| match &m.body {
            QueueBody::Replicate(b) => (b.from, b.to),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        sends[0].1 - sends[0].0,
        3,
        "three records a batch: {sends:?}"
    );
    assert_eq!(
        sends[3].1,
        sends[0].0 + 12,
        "four batches in the first flush: {sends:?}"
    );
    assert!(
        sends[4..].contains(&sends[0]),
        "the lost batch sent again: {sends:?}"
    );
    let held: BTreeSet<_> = mesh
        .queues(replica)
        .replicas()
        .get(&s)
        .unwrap()
        .records()
        .map(|r| r.id)
        .collect();
    assert!(
        items.is_subset(&held),
        "the replica holds every acknowledged item"
    );
}

/// A request made while its producer knows no owner (the old one declared dead, the new one's
/// metadata not heard yet) goes out at the first tick after an owner is known, not a whole
/// resend interval later: before, such a request waited for its next resend (200 ms), which was
/// most of the acknowledgement's p99 on real nodes (docs/benchmarks.md, "Where the
/// acknowledgement's latency went"). The shard lease outlives the dead verdict here (10 s), so
/// there is such a window: with a shorter one the coordinator moves the shard while the old
/// owner is only suspect, and the producer hears the new owner first.
#[test]
fn a_request_made_before_the_owner_is_known_goes_out_within_a_tick_of_learning_it() {
    use crate::queue::{QueueContext, TICK_INTERVAL};
    let mut mesh = Mesh::with_shards(&queue_config(), &shards().with_ttl(secs(10)));
    let s = shard0();
    let old = mesh.owner_of(&s).unwrap();
    let known = |mesh: &Mesh| {
        QueueContext {
            membership: mesh.nodes[0].membership(),
            client: None,
        }
        .owner(&s)
        .map(|(o, _, _)| o.get())
    };
    let step = Duration::from_millis(5);
    mesh.down.insert(old);
    let mut waited = Duration::ZERO;
    while known(&mesh) == Some(old) {
        mesh.run_for(step);
        waited += step;
        assert!(waited < secs(60), "node 1 still holds {old} the owner");
    }
    assert_eq!(
        known(&mesh),
        None,
        "node 1 heard the new owner before it gave up the old one: no window to test"
    );
    let now = mesh.now;
    let request = mesh
        .node(1)
        .queue_enqueue(now, s.clone(), b"early")
        .unwrap();
    mesh.sent.clear();
    let enqueues_from_1 = |mesh: &Mesh, to: Option<u64>| {
        mesh.sent.iter().any(|(from, t, m)| {
            *from == 1
                && to.is_none_or(|to| *t == to)
                && matches!(m.body, QueueBody::Enqueue { .. })
        })
    };
    // Node 1 learns the new owner within the last step of this loop (5 ms of virtual time).
    loop {
        mesh.run_for(step);
        if known(&mesh).is_some() {
            break;
        }
        assert!(
            !enqueues_from_1(&mesh, None),
            "sent before an owner was known"
        );
        waited += step;
        assert!(waited < secs(60), "node 1 never heard a new owner");
    }
    let learned = mesh.now;
    let new = known(&mesh).unwrap();
    while !enqueues_from_1(&mesh, Some(new)) {
        mesh.run_for(step);
        assert!(mesh.now < learned + secs(1), "the enqueue never went out");
    }
    assert!(
        mesh.now <= learned + TICK_INTERVAL + step,
        "sent {:?} after node 1 learned the owner (a tick is {TICK_INTERVAL:?})",
        mesh.now - learned
    );
    // Answered (during the steps above or the next second), by the new owner.
    mesh.run_for(secs(1));
    assert!(
        mesh.events.iter().any(|(n, e)| *n == 1
            && matches!(e, QueueEvent::Enqueued { request: r, .. } if *r == request))
    );
}

/// A replica that records its changes hands out checkpoint records that replay to its copy
/// exactly (what a restarted node reads back), and holds none back; a node that never asked
/// to record keeps none.
#[test]
fn a_recording_replicas_durable_writes_replay_to_its_copy() {
    let mut mesh = Mesh::new(&queue_config());
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let replica = replica_of(&mesh, owner, &s);
    let other = mesh.bystander(owner, replica);
    mesh.node(replica).record_queue_durable_writes();
    for k in 0..3u8 {
        mesh.enqueue(other, &s, &[b'a' + k]);
    }
    let (token, _) = leased(mesh.lease(other, &s));
    mesh.complete(other, &s, token);
    mesh.run_for(Duration::from_millis(200));
    let mut records = Vec::new();
    while let Some(write) = mesh.node(replica).poll_queue_durable() {
        assert_eq!(write.shard, s, "only the shard it replicates");
        records.push(write.record);
    }
    assert!(records.len() >= 2, "{} records", records.len());
    let restored = ReplicaStore::restore(records.iter().map(Vec::as_slice)).unwrap();
    let copy = mesh.queues(replica).replicas()[&s].clone();
    assert_eq!(copy.records().count(), 3, "the three items");
    assert_eq!(restored, copy);
    assert!(mesh.node(other).poll_queue_durable().is_none());
}

/// An owner replaces a replica that membership holds dead even while the replica was caught
/// up (nothing to acknowledge is not silence, so only membership can tell): an idle shard
/// must not keep a dead node as its only replica until the next enqueue.
#[test]
fn a_dead_replica_of_an_idle_queue_is_replaced() {
    let mut mesh = Mesh::new(&queue_config());
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    mesh.enqueue(1, &s, b"a");
    let replica = replica_of(&mesh, owner, &s);
    assert_ne!(replica, 1, "the test needs the voter up");
    mesh.down.insert(replica);
    // Membership's verdict takes a few seconds (the suspicion's minimum is 4 s).
    mesh.run_for(secs(20));
    let links = mesh.queues(owner).replica_links(&s);
    assert_eq!(links.len(), 1, "{links:?}");
    assert_ne!(links[0].0.get(), replica, "the dead node is no replica");
}

/// A new owner asks every member that has not left for its copy, and not one that left: it
/// holds nothing (it handed its work over), and waiting for its answer would only stretch
/// the recovery.
#[test]
fn a_new_owner_does_not_ask_a_member_that_left() {
    let mut mesh = Mesh::new(&queue_config());
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    let replica = replica_of(&mesh, owner, &s);
    let leaver = mesh.bystander(owner, replica);
    let now = mesh.now;
    mesh.node(leaver).leave(now);
    mesh.run_for(secs(2));
    mesh.down.insert(leaver);
    mesh.down.insert(owner);
    mesh.sent.clear();
    let serving = mesh.run_until(
        secs(30),
        |_, e| matches!(e, QueueEvent::Serving { shard, .. } if *shard == s),
    );
    assert!(serving.is_some(), "{s} served again");
    let asked: BTreeSet<u64> = mesh
        .sent
        .iter()
        .filter(|(_, _, m)| m.shard == s && matches!(m.body, QueueBody::Recover { .. }))
        .map(|(_, to, _)| *to)
        .collect();
    assert!(asked.contains(&owner), "the old owner is asked: {asked:?}");
    assert!(!asked.contains(&leaver), "node {leaver} left: {asked:?}");
}

/// A replica that membership holds alive but that acknowledges nothing new for the recovery
/// wait is replaced, and not chosen again for a while (it would stall the enqueues again); an
/// idle replica that is caught up is kept however long it has nothing to acknowledge.
#[test]
fn a_replica_that_stops_acknowledging_is_replaced_and_not_chosen_again_at_once() {
    let config = queue_config();
    let mut mesh = Mesh::new(&config);
    let s = shard0();
    let owner = mesh.owner_of(&s).unwrap();
    mesh.enqueue(1, &s, b"a");
    let replica = replica_of(&mesh, owner, &s);
    mesh.run_for(config.recovery_wait() * 3);
    assert_eq!(
        replica_of(&mesh, owner, &s),
        replica,
        "idle and caught up: kept"
    );
    mesh.drop_if = Some(Box::new(move |from, _, m| {
        from == replica && matches!(m.body, QueueBody::ReplicaAck { .. })
    }));
    let asked = mesh.now;
    let answer = mesh.enqueue(1, &s, b"b");
    assert!(matches!(answer, QueueEvent::Enqueued { .. }), "{answer:?}");
    let took = mesh.now.saturating_duration_since(asked);
    let next = replica_of(&mesh, owner, &s);
    assert_ne!(next, replica, "replaced");
    assert!(
        took <= config.recovery_wait() * 2,
        "acknowledged {took:?} after the enqueue, by the replacement"
    );
    // The replaced one is passed over while its ban lasts, though the replacement fails too.
    mesh.drop_if = Some(Box::new(move |from, _, m| {
        (from == replica || from == next) && matches!(m.body, QueueBody::ReplicaAck { .. })
    }));
    let answer = mesh.enqueue(1, &s, b"c");
    assert!(matches!(answer, QueueEvent::Enqueued { .. }), "{answer:?}");
    let third = replica_of(&mesh, owner, &s);
    assert!(third != replica && third != next, "node {third}");
}
