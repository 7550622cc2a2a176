//! Unit tests of the queue's pure parts: the owner's queue, the replica, their checkpoint; and
//! of the protocol across nodes, rule by rule ([`across_nodes`]). The same protocol under loss,
//! kills and partitions at scale is tested in the simulator (`sim/tests/queues.rs`).

mod across_nodes;

use super::*;
use crate::Instant;
use crate::id::NodeId;
use crate::lease::FencingToken;
use crate::time::Duration;

fn origin(request: u64) -> Origin {
    Origin {
        node: NodeId::new(9),
        request,
    }
}

fn config() -> QueueConfig {
    QueueConfig::default()
        .with_lease_timeout(Duration::from_secs(1))
        .with_max_attempts(2)
}

fn ms(n: u64) -> Instant {
    Instant::from_nanos(n * 1_000_000)
}

fn batch(q: &WorkQueue, from: u64) -> Batch {
    Batch {
        fence: q.fence(),
        from,
        to: q.version(),
        done: true,
        pending: 0,
        active: 0,
        records: q.changed_since(from).cloned().collect(),
    }
}

#[test]
fn expiry_requeues_with_the_attempt_count_then_dead_letters() {
    let mut q = WorkQueue::new(FencingToken::new(1), &config());
    let w = NodeId::new(4);
    let item = q.enqueue(origin(1), b"x").unwrap();
    let (t1, d1) = q.lease(ms(0), w).unwrap();
    assert_eq!((t1.attempt, d1), (1, ms(1000)));
    // A heartbeat moves the deadline; expiry before it does nothing.
    assert_eq!(q.heartbeat(ms(500), &t1), Ok(ms(1500)));
    assert!(q.expire(ms(1000)).is_empty());
    assert_eq!(q.expire(ms(1500)), vec![(item, FailOutcome::Requeued)]);
    assert_eq!(
        q.complete(&t1),
        Err(QueueError::StaleLease {
            item,
            lease: t1.lease
        }),
        "an expired lease cannot complete"
    );
    let (t2, _) = q.lease(ms(1600), w).unwrap();
    assert_eq!(t2.attempt, 2);
    assert_eq!(
        q.fail(&t2, true),
        Ok(FailOutcome::DeadLettered),
        "max_attempts = 2"
    );
    assert_eq!(q.record(item).unwrap().state, ItemState::DeadLettered);
    assert_eq!(q.pending_count(), 0);
    assert!(q.lease(ms(1700), w).is_none());
}

#[test]
fn tokens_are_checked_for_fence_grant_and_item() {
    let mut q = WorkQueue::new(FencingToken::new(7), &config());
    let item = q.enqueue(origin(1), b"x").unwrap();
    let (t, _) = q.lease(ms(0), NodeId::new(4)).unwrap();
    let old = OwnershipToken {
        fence: FencingToken::new(6),
        ..t
    };
    assert_eq!(
        q.complete(&old),
        Err(QueueError::StaleFence {
            presented: FencingToken::new(6),
            current: FencingToken::new(7)
        })
    );
    let forged = OwnershipToken {
        item: ItemId::new(99),
        ..t
    };
    assert!(matches!(
        q.heartbeat(ms(1), &forged),
        Err(QueueError::UnknownItem { .. })
    ));
    q.complete(&t).unwrap();
    assert_eq!(q.record(item).unwrap().state, ItemState::Completed);
    assert!(
        matches!(q.complete(&t), Err(QueueError::StaleLease { .. })),
        "no second completion"
    );
}

/// What a resent lease request and the expiry rest on: an item is leased under a token only
/// for that token's fence and grant, and its deadline is the grant's, moved by heartbeats.
#[test]
fn a_lease_is_known_by_its_token_and_its_deadline() {
    let mut q = WorkQueue::new(FencingToken::new(7), &config());
    let item = q.enqueue(origin(1), b"x").unwrap();
    let other = q.enqueue(origin(2), b"y").unwrap();
    assert_eq!(q.lease_deadline(item), None, "pending: no deadline");
    let (t, deadline) = q.lease(ms(10), NodeId::new(4)).unwrap();
    assert_eq!(t.item, item);
    assert_eq!(q.lease_deadline(item), Some(ms(1010)));
    assert_eq!(deadline, ms(1010));
    assert!(q.is_leased_under(&t));
    let older_fence = OwnershipToken {
        fence: FencingToken::new(6),
        ..t
    };
    assert!(!q.is_leased_under(&older_fence), "another owner's grant");
    let other_grant = OwnershipToken {
        lease: LeaseId::new(t.lease.get() + 1),
        ..t
    };
    assert!(
        !q.is_leased_under(&other_grant),
        "another grant of the item"
    );
    let pending = OwnershipToken { item: other, ..t };
    assert!(!q.is_leased_under(&pending), "an item not leased");
    // A completion or heartbeat needs the grant and the attempt both.
    assert_eq!(q.check(&t), Ok(()));
    for forged in [
        other_grant,
        OwnershipToken {
            attempt: t.attempt + 1,
            ..t
        },
    ] {
        assert!(
            matches!(q.check(&forged), Err(QueueError::StaleLease { .. })),
            "{forged:?}"
        );
    }
    assert_eq!(q.next_deadline(), Some(ms(1010)));
    let (t2, _) = q.lease(ms(300), NodeId::new(5)).unwrap();
    assert_eq!(q.next_deadline(), Some(ms(1010)), "the earliest of two");
    q.heartbeat(ms(600), &t).unwrap();
    assert_eq!(q.lease_deadline(item), Some(ms(1600)));
    assert_eq!(q.next_deadline(), Some(ms(1300)), "the other one's now");
    q.complete(&t).unwrap();
    assert_eq!(q.lease_deadline(item), None, "finished: no deadline");
    assert!(!q.is_leased_under(&t), "completed, no longer leased");
    q.complete(&t2).unwrap();
    assert_eq!(q.next_deadline(), None, "nothing leased");
}

#[test]
fn enqueue_is_idempotent_per_origin_and_bounded() {
    let mut q = WorkQueue::new(FencingToken::new(1), &QueueConfig::default());
    assert!(!q.knows(&origin(1)));
    let a = q.enqueue(origin(1), b"a").unwrap();
    assert!(
        q.knows(&origin(1)),
        "a resend is told apart before it is enqueued again"
    );
    assert_eq!(
        q.enqueue(origin(1), b"a").unwrap(),
        a,
        "a retry finds its item"
    );
    assert_eq!(q.pending_count(), 1);
    assert!(matches!(
        q.enqueue(origin(2), &[0; MAX_PAYLOAD_BYTES + 1]),
        Err(QueueError::PayloadTooLarge { .. })
    ));
    let raw = RawQueueConfig {
        max_items: Some(1),
        ..RawQueueConfig::default()
    };
    let small = QueueConfig::try_from(raw).unwrap();
    let mut q = WorkQueue::new(FencingToken::new(1), &small);
    q.enqueue(origin(1), b"a").unwrap();
    assert_eq!(q.enqueue(origin(2), b"b"), Err(QueueError::Full { max: 1 }));
}

#[test]
fn a_gone_worker_releases_only_its_own_items() {
    let mut q = WorkQueue::new(FencingToken::new(1), &config());
    let (a, b) = (NodeId::new(4), NodeId::new(5));
    q.enqueue(origin(1), b"1").unwrap();
    q.enqueue(origin(2), b"2").unwrap();
    let (ta, _) = q.lease(ms(0), a).unwrap();
    let (tb, _) = q.lease(ms(0), b).unwrap();
    assert_eq!(q.workers().len(), 2);
    assert_eq!(q.release_worker(a), vec![(ta.item, FailOutcome::Requeued)]);
    assert!(q.check(&tb).is_ok());
    assert_eq!(q.pending_count(), 1);
}

#[test]
fn drain_and_restore_move_pending_items() {
    let mut q = WorkQueue::new(FencingToken::new(1), &config());
    q.enqueue(origin(1), b"1").unwrap();
    q.enqueue(origin(2), b"2").unwrap();
    let items = q.drain();
    assert_eq!(items.len(), 2);
    assert_eq!(q.pending_count(), 0);
    assert!(q.records().all(|r| r.state == ItemState::Drained));
    let mut other = WorkQueue::new(FencingToken::new(3), &config());
    assert_eq!(other.restore(&items), Ok(2));
    assert_eq!(other.pending_count(), 2);
    assert!(
        other
            .records()
            .all(|r| r.change == EventKind::RestoreSnapshot)
    );
    // Back into the queue that drained them: the same items, pending again; a repeat of the
    // restore restores nothing more.
    let ids: Vec<ItemId> = q.records().map(|r| r.id).collect();
    assert_eq!(q.restore(&items), Ok(2));
    assert_eq!(q.pending_count(), 2);
    assert!(
        q.records()
            .all(|r| r.state == ItemState::Pending && r.change == EventKind::RestoreSnapshot)
    );
    assert_eq!(q.records().map(|r| r.id).collect::<Vec<_>>(), ids);
    assert_eq!(q.restore(&items), Ok(0));
    assert_eq!(q.pending_count(), 2);
}

#[test]
fn a_replica_applies_in_order_skips_what_it_has_and_reports_gaps() {
    let mut q = WorkQueue::new(FencingToken::new(3), &config());
    let mut r = ReplicaStore::new();
    q.enqueue(origin(1), b"1").unwrap();
    let first = batch(&q, 0);
    assert_eq!(
        r.apply(&first),
        Applied::Applied {
            applied: 1,
            records: 1
        }
    );
    q.enqueue(origin(2), b"2").unwrap();
    q.lease(ms(0), NodeId::new(4)).unwrap();
    let from_two = Batch {
        from: 2,
        ..batch(&q, 2)
    };
    assert_eq!(
        r.apply(&from_two),
        Applied::Gap { applied: 1 },
        "version 2 was lost"
    );
    assert_eq!(
        r.apply(&batch(&q, 1)),
        Applied::Applied {
            applied: 3,
            records: 2
        }
    );
    assert_eq!(
        r.apply(&first),
        Applied::Applied {
            applied: 3,
            records: 0
        },
        "a replayed batch changes nothing"
    );
    // A newer owner is promised: the old one is fenced out.
    assert_eq!(r.promise(FencingToken::new(8)), (FencingToken::new(3), 3));
    assert_eq!(r.promised(), FencingToken::new(8));
    // A promise is never taken back: an older owner's recovery does not lower it.
    r.promise(FencingToken::new(5));
    assert_eq!(r.promised(), FencingToken::new(8));
    q.enqueue(origin(3), b"3").unwrap();
    assert_eq!(
        r.apply(&batch(&q, 3)),
        Applied::Fenced {
            promised: FencingToken::new(8)
        }
    );
    assert_eq!(r.records().count(), 2);
    // The new owner's first batch (from 0) replaces the copy.
    let next = WorkQueue::rebuild(FencingToken::new(8), &config(), r.records().cloned(), 3);
    assert_eq!(
        next.pending_count(),
        2,
        "the leased item went back to pending"
    );
    assert!(matches!(r.apply(&batch(&next, 0)), Applied::Applied { .. }));
    assert_eq!(r.source(), FencingToken::new(8));
    assert_eq!(r.applied(), next.version());
}

#[test]
fn snapshot_chunks_rebuild_the_whole_copy() {
    let mut q = WorkQueue::new(FencingToken::new(3), &config());
    for k in 0..7 {
        q.enqueue(origin(k), &[k as u8; 100]).unwrap();
    }
    let mut r = ReplicaStore::new();
    r.apply(&batch(&q, 0));
    let (source, after, got) = pull_all(&r);
    assert_eq!((source, after), (r.source(), r.applied()));
    let rebuilt: Vec<(FencingToken, ItemRecord)> = r
        .sourced_records()
        .map(|(f, rec)| (f, rec.clone()))
        .collect();
    assert_eq!(got, rebuilt);
}

/// Pulls `r`'s whole copy chunk by chunk as a recovering owner does; returns where the pull
/// ended and every record with its owner's fence, in id order.
fn pull_all(r: &ReplicaStore) -> (FencingToken, u64, Vec<(FencingToken, ItemRecord)>) {
    let (mut source, mut after, mut got) = (FencingToken::default(), 0, Vec::new());
    for _ in 0..1_000 {
        let chunk = r.chunk(source, after);
        assert!(chunk.records.len() <= MAX_BATCH_RECORDS);
        assert!(
            (chunk.fence == source && chunk.from == after)
                || (chunk.fence > source && chunk.from == 0),
            "each chunk follows where the pull is"
        );
        got.extend(chunk.records.iter().map(|rec| (chunk.fence, rec.clone())));
        (source, after) = (chunk.fence, chunk.to);
        if chunk.done {
            got.sort_by_key(|(_, rec)| rec.id);
            return (source, after, got);
        }
    }
    panic!("the pull never ended");
}

/// Issue 16, `queue-owner-lapse` seed 569: a replica that held items of the owner under fence
/// 3 gets the first batch of a new owner under fence 8, which lapses after sending a part of
/// its queue. The replica must still hold, and offer to the next owner, every item of fence 3
/// that fence 8 had not sent yet; the items fence 8 sent replace fence 3's.
#[test]
fn a_new_owners_partial_copy_keeps_the_earlier_owners_items() {
    let mut old = WorkQueue::new(FencingToken::new(3), &config());
    for k in 0..40 {
        old.enqueue(origin(k), &[k as u8; 100]).unwrap();
    }
    let mut r = ReplicaStore::new();
    let mut log = Vec::new();
    let first = batch(&old, 0);
    r.apply(&first);
    log.push(r.checkpoint_record(first.records.iter()));
    assert_eq!(r.records().count(), 40);

    // Fence 8 rebuilt the same 40 items and changed one; its first batch reaches the replica,
    // the rest of its pass does not.
    let mut new = WorkQueue::rebuild(FencingToken::new(8), &config(), old.records().cloned(), 40);
    let (token, _) = new.lease(ms(0), NodeId::new(4)).unwrap();
    let mut part = batch(&new, 0);
    part.records.truncate(5);
    part.to = part.records.last().unwrap().version;
    assert!(matches!(
        r.apply(&part),
        Applied::Applied { records: 5, .. }
    ));
    log.push(r.checkpoint_record(part.records.iter()));
    assert_eq!((r.source(), r.applied()), (FencingToken::new(8), part.to));
    assert_eq!(r.records().count(), 40, "fence 3's other items are kept");
    let by_fence =
        |r: &ReplicaStore, f: u64| r.sourced_records().filter(|(s, _)| s.get() == f).count();
    assert_eq!((by_fence(&r, 8), by_fence(&r, 3)), (5, 35));

    // The next owner pulls both: every item once, each at its newest (fence, version).
    let (_, _, got) = pull_all(&r);
    assert_eq!(got.len(), 40);
    assert_eq!(got.iter().filter(|(f, _)| f.get() == 8).count(), 5);

    // Its checkpoint, replayed or compacted, gives the same replica.
    assert_eq!(
        ReplicaStore::restore(log.iter().map(Vec::as_slice)).unwrap(),
        r
    );
    let compacted = r.compacted(7);
    assert_eq!(
        ReplicaStore::restore(compacted.iter().map(Vec::as_slice)).unwrap(),
        r
    );

    // The rest of fence 8's pass replaces the rest: nothing of fence 3 is left.
    r.apply(&batch(&new, part.to));
    assert_eq!((by_fence(&r, 8), by_fence(&r, 3)), (40, 0));
    assert!(new.complete(&token).is_ok());
}

/// Records merged from the copies of two owners may carry the same versions; the rebuilt
/// queue must still list every item as changed, or no replica would ever get some of them.
#[test]
fn a_rebuilt_queue_replicates_every_item_even_when_versions_collide() {
    let mut a = WorkQueue::new(FencingToken::new(3), &config());
    let mut b = WorkQueue::new(FencingToken::new(4), &config());
    for k in 0..5 {
        a.enqueue(origin(k), b"a").unwrap();
    }
    // Fence 4 numbered its items from 6 on, with versions 1 to 5 again.
    b.raise_numbering((6, 1));
    for k in 10..15 {
        b.enqueue(origin(k), b"b").unwrap();
    }
    let merged = a.records().chain(b.records()).cloned();
    let next = WorkQueue::rebuild(FencingToken::new(9), &config(), merged, 5);
    assert_eq!(next.records().count(), 10);
    assert_eq!(
        next.changed_since(0).count(),
        10,
        "every item is replicated"
    );
    assert!(next.version() > 5);
}

#[test]
fn checkpoint_records_replay_to_the_same_replica_and_refuse_corruption() {
    let mut q = WorkQueue::new(FencingToken::new(3), &config());
    let mut r = ReplicaStore::new();
    let mut log: Vec<Vec<u8>> = Vec::new();
    for k in 0..4 {
        let from = r.applied();
        q.enqueue(origin(k), b"p").unwrap();
        let b = batch(&q, from);
        r.apply(&b);
        log.push(r.checkpoint_record(b.records.iter()));
    }
    r.promise(FencingToken::new(5));
    log.push(r.checkpoint_record([]));
    let back = ReplicaStore::restore(log.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(back, r);
    let mut bad = log.clone();
    bad[1].truncate(10);
    assert!(matches!(
        ReplicaStore::restore(bad.iter().map(Vec::as_slice)),
        Err(CheckpointError::Record { record: 1, .. })
    ));
}

/// Logs, events and `meshctl` show tokens in these forms; an item is finished exactly when no
/// transition leaves its state (completed, dead-lettered, drained), never while pending or leased.
#[test]
fn display_forms_and_finished_states() {
    let token = OwnershipToken {
        item: ItemId::new(7),
        attempt: 2,
        lease: LeaseId::new(3),
        fence: FencingToken::new(5),
    };
    assert_eq!(token.item.to_string(), "item7");
    assert_eq!(token.lease.to_string(), "lease3");
    assert_eq!(token.to_string(), "item7#2 lease3 fence5");

    let leased = ItemState::Leased {
        worker: NodeId::new(4),
        lease: LeaseId::new(1),
    };
    for (state, finished) in [
        (ItemState::Pending, false),
        (leased, false),
        (ItemState::Completed, true),
        (ItemState::DeadLettered, true),
        (ItemState::Drained, true),
    ] {
        assert_eq!(state.is_finished(), finished, "{state:?}");
    }
}

/// Issue 16: a completion whose Accepted answer was lost is resent; the owner must recognise
/// it as the completion it accepted (same fence, the item completed at the token's attempt),
/// and only that one: a token of an earlier attempt, or of another fence, is not.
#[test]
fn a_completed_item_is_recognised_as_completed_by_its_own_token_only() {
    let mut q = WorkQueue::new(FencingToken::new(3), &config());
    let w = NodeId::new(4);
    q.enqueue(origin(1), b"x").unwrap();
    let (t1, _) = q.lease(ms(0), w).unwrap();
    assert!(!q.completed_by(&t1), "leased, not completed");
    q.expire(ms(1000));
    let (t2, _) = q.lease(ms(1100), w).unwrap();
    q.complete(&t2).unwrap();
    assert!(q.completed_by(&t2));
    assert!(
        !q.completed_by(&t1),
        "the expired grant did not complete it"
    );
    let other_fence = OwnershipToken {
        fence: FencingToken::new(2),
        ..t2
    };
    assert!(!q.completed_by(&other_fence));
    // The resend is still refused by `complete` itself: accepting it again is the caller's
    // (Queues::on_finish) decision, answered without a second completion.
    assert!(q.complete(&t2).is_err());
}

/// Issue 16: a queue rebuilt from copies that lack the newest items (no replica holding them
/// answered in time) must still number above every id its own earlier queue gave.
#[test]
fn a_rebuilt_queue_numbers_above_the_floor_it_is_given() {
    let mut old = WorkQueue::new(FencingToken::new(3), &config());
    for k in 0..5 {
        old.enqueue(origin(k), b"x").unwrap();
    }
    old.lease(ms(0), NodeId::new(4)).unwrap();
    assert_eq!(old.numbering(), (6, 2));
    // A copy that holds only the first two items.
    let partial: Vec<ItemRecord> = old.records().take(2).cloned().collect();
    let mut next = WorkQueue::rebuild(FencingToken::new(9), &config(), partial, 2);
    assert_eq!(
        next.numbering(),
        (3, 2),
        "above the recovered items' ids and the grant item 1 was leased under (lease 1): \
         without the floor it would give item 3 again"
    );
    next.raise_numbering(old.numbering());
    let id = next.enqueue(origin(99), b"new").unwrap();
    assert_eq!(id, ItemId::new(6));
    let (token, _) = next.lease(ms(0), NodeId::new(4)).unwrap();
    assert!(token.lease.get() >= 2);
    // A floor below what it recovered changes nothing.
    next.raise_numbering((1, 1));
    assert_eq!(next.numbering().0, 7);
}

/// Each refusal has its own wire code and metric label (a shared one would turn one refusal
/// into another at the client, or merge two series), and its message names the values an
/// operator needs: the fences, the item and grant, the bound, the owner known.
#[test]
fn errors_have_distinct_codes_and_labels_and_say_what_they_hold() {
    let errors = [
        (
            QueueError::StaleFence {
                presented: FencingToken::new(3),
                current: FencingToken::new(4),
            },
            "token of fence3 is stale: the shard's owner now holds fence4",
        ),
        (
            QueueError::StaleLease {
                item: ItemId::new(7),
                lease: LeaseId::new(2),
            },
            "item7 is no longer leased under lease2",
        ),
        (
            QueueError::UnknownItem {
                item: ItemId::new(9),
            },
            "no item9 in this queue",
        ),
        (
            QueueError::Full { max: 64 },
            "the queue holds its maximum of 64 items",
        ),
        (
            QueueError::PayloadTooLarge { len: 70, max: 64 },
            "payload of 70 bytes exceeds the 64-byte bound",
        ),
        (
            QueueError::NotOwner {
                owner: Some(NodeId::new(5)),
            },
            "this node does not own the queue (owner: node-5)",
        ),
        (
            QueueError::NotOwner { owner: None },
            "this node does not own the queue",
        ),
        (
            QueueError::Recovering,
            "the owner is rebuilding the queue from its replicas",
        ),
        (
            QueueError::NoOwner,
            "no owner is known for this shard's queue",
        ),
        (QueueError::UnknownShard, "this shard has no queue"),
        (QueueError::NoQueues, "this node runs no queues"),
        (
            QueueError::Overloaded { max: 4096 },
            "too many queue requests in flight: at most 4096",
        ),
        (QueueError::TimedOut, "no answer within the request timeout"),
        (
            QueueError::OutOfRange {
                field: "max",
                value: 0,
                min: 1,
                max: 256,
            },
            "max = 0 is out of range 1..=256",
        ),
    ];
    for (error, text) in &errors {
        assert_eq!(error.to_string(), *text, "{error:?}");
    }
    let kinds: Vec<&QueueError> = errors
        .iter()
        .map(|(e, _)| e)
        .filter(|e| !matches!(e, QueueError::NotOwner { owner: None }))
        .collect();
    let codes: alloc::collections::BTreeSet<u8> = kinds.iter().map(|e| e.code()).collect();
    let labels: alloc::collections::BTreeSet<&str> = kinds.iter().map(|e| e.label()).collect();
    assert_eq!((codes.len(), labels.len()), (kinds.len(), kinds.len()));
    assert!(!codes.contains(&0), "0 is no refusal on the wire");
    let stale: Vec<&str> = kinds
        .iter()
        .filter(|e| e.is_stale())
        .map(|e| e.label())
        .collect();
    assert_eq!(stale, ["stale_fence", "stale_lease"]);

    assert_eq!(
        QueueConfigError::Watermarks { low: 8, high: 4 }.to_string(),
        "queue.low_watermark = 8 must be below high_watermark = 4"
    );
    assert_eq!(
        QueueConfigError::LowWithoutHigh.to_string(),
        "queue.low_watermark needs a high_watermark"
    );
}
