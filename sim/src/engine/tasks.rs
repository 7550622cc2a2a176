//! The engine's side of a `[queue]` run: the producers' and workers' tick, the queue events
//! (checks, figures and the workers' bookkeeping) and the end check. See `crate::queue`.

use core::fmt::Write as _;
use core::time::Duration;
use std::collections::BTreeSet;

use meshkit::NodeId;
use meshkit::queue::QueueEvent;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::{Engine, Node, NodeState, Slot, What, index_of};
use crate::queue::{Ask as WorkerAsk, Held, QUEUE_TICK, QueueRun};
use meshkit::Instant;

impl Engine<'_> {
    pub(super) fn queue_run(&self) -> Option<&QueueRun> {
        self.tasks.as_ref()
    }

    /// Every [`QUEUE_TICK`]: producers enqueue (holding back while the owner's backpressure
    /// they see is active, except in the burst), workers complete, heartbeat and ask for items.
    pub(super) fn queue_tick(&mut self) {
        let now = self.now;
        self.queue.push(now + QUEUE_TICK, What::QueueTick);
        let Some(mut q) = self.tasks.take() else {
            return;
        };
        let mut touched = BTreeSet::new();
        let shards = q.shards.clone();
        let burst = !q.burst_done && q.spec.burst_at.is_some_and(|b| now >= Instant::ZERO + b);
        if burst {
            q.burst_done = true;
        }
        let until = Instant::ZERO + q.spec.produce_until;
        for p in q.producers.clone() {
            let slot = &mut self.slots[p];
            if slot.state != NodeState::Running {
                continue;
            }
            let local = slot.clock.local(now);
            let Some(node) = slot.node.as_mut() else {
                continue;
            };
            let mut sends = if burst { q.spec.burst_items } else { 0 };
            if q.spec.rate_per_s > 0.0 && now < until {
                let rate = q.spec.rate_per_s;
                let rng = &mut self.queue_rng;
                let next = q
                    .next_enqueue
                    .entry(p)
                    .or_insert_with(|| now + exp_gap(rng, rate));
                while *next <= now {
                    let shard = &shards[self.queue_rng.random_range(0..shards.len())];
                    let held_back = node
                        .queues()
                        .and_then(|qs| qs.backpressure(node.queue_context(), shard))
                        .is_some_and(|(_, _, signal)| signal.is_active);
                    if held_back {
                        q.records.producer_waits += 1;
                    } else {
                        sends += 1;
                    }
                    *next += exp_gap(&mut self.queue_rng, rate);
                }
            }
            for _ in 0..sends {
                let shard = shards[self.queue_rng.random_range(0..shards.len())].clone();
                let payload = self.queue_rng.random::<u64>().to_be_bytes();
                if node.queue_enqueue(local, shard, &payload).is_ok() {
                    q.records.enqueues_sent += 1;
                }
            }
            touched.insert(p);
        }
        let heartbeat_every = q.spec.config.lease_timeout() / 3;
        for w in q.workers.clone() {
            let slot = &mut self.slots[w];
            if slot.state != NodeState::Running {
                continue;
            }
            let local = slot.clock.local(now);
            let Some(node) = slot.node.as_mut() else {
                continue;
            };
            let Some(ws) = q.worker_state.get_mut(&w) else {
                continue;
            };
            for h in ws.held.iter_mut().filter(|h| !h.completing) {
                let shard = shards[h.shard].clone();
                if now >= h.done_at {
                    if let Ok(r) = node.queue_complete(local, shard, h.token) {
                        ws.requests.insert(r, WorkerAsk::Complete(h.token));
                        h.completing = true;
                    }
                } else if now >= h.next_heartbeat
                    && let Ok(r) = node.queue_heartbeat(local, shard, h.token)
                {
                    ws.requests.insert(r, WorkerAsk::Heartbeat(h.token));
                    h.next_heartbeat = now + heartbeat_every;
                }
            }
            while ws.held.len() + (ws.asking as usize) < q.spec.worker_concurrency as usize
                && ws.next_poll.is_none_or(|t| t <= now)
            {
                let k = ws.next_shard % shards.len();
                ws.next_shard += 1;
                match node.queue_lease(local, shards[k].clone()) {
                    Ok(r) => {
                        ws.requests.insert(r, WorkerAsk::Lease);
                        ws.asking += 1;
                    }
                    Err(_) => break,
                }
            }
            touched.insert(w);
        }
        self.tasks = Some(q);
        for i in touched {
            self.drain(i);
        }
    }

    /// One queue event of node `index`: the checks and figures of `crate::queue`, and the
    /// worker's bookkeeping of its requests. Returns the violations found.
    pub(super) fn on_queue_event(&mut self, index: usize, e: &QueueEvent) -> Vec<String> {
        let now = self.now;
        self.trace.word(now.as_nanos());
        self.trace.word(index as u64);
        let _ = write!(self.trace, "{e:?}");
        if let QueueEvent::Published {
            key,
            value,
            version,
        } = e
        {
            self.invariants
                .record_write(index, *version, key, value.as_deref());
            return Vec::new();
        }
        let Some(q) = self.tasks.as_mut() else {
            return Vec::new();
        };
        let shard_run = self.leases.as_ref().and_then(|r| r.shards.as_ref());
        let fence_of = |s: usize| shard_run.map_or(0, |sh| sh.fence(s));
        let slot = &self.slots[index];
        let shards = q.shards.clone();
        let origin_of = |s: usize, item| {
            slot.node
                .as_ref()
                .and_then(Node::queues)
                .and_then(|qs| qs.serving(&shards[s]))
                .map(|queue| queue.record(item).map(|r| r.origin))
        };
        let mut violations = q.on_event(now, index, e, fence_of, origin_of);
        let processing = q.spec.processing_time;
        let heartbeat_every = q.spec.config.lease_timeout() / 3;
        let shard_index = |shard| q.shards.iter().position(|s| s == shard);
        let position = match e {
            QueueEvent::Leased { shard, .. } | QueueEvent::Refused { shard, .. } => {
                shard_index(shard)
            }
            _ => None,
        };
        if let QueueEvent::Refused { request, error, .. } = e
            && let Some(WorkerAsk::Complete(t)) = q
                .worker_state
                .get(&index)
                .and_then(|ws| ws.requests.get(request))
            && let Some(s) = position
        {
            let t = *t;
            violations.extend(q.on_completion_refused(index, s, t, error));
        }
        let Some(ws) = q.worker_state.get_mut(&index) else {
            return violations;
        };
        match e {
            // The guards take the request off the worker's books: an answer counts once.
            QueueEvent::Leased { request, token, .. }
                if ws.requests.remove(request) == Some(WorkerAsk::Lease) =>
            {
                ws.asking = ws.asking.saturating_sub(1);
                if let Some(shard) = position {
                    ws.held.push(Held {
                        shard,
                        token: *token,
                        done_at: now + processing,
                        next_heartbeat: now + heartbeat_every,
                        completing: false,
                    });
                }
            }
            QueueEvent::Empty { request, .. } if ws.requests.remove(request).is_some() => {
                ws.asking = ws.asking.saturating_sub(1);
                ws.next_poll = Some(now + crate::queue::EMPTY_BACKOFF);
            }
            QueueEvent::Accepted { request, .. } => {
                if let Some(WorkerAsk::Complete(t)) = ws.requests.remove(request) {
                    ws.held.retain(|h| h.token != t);
                }
            }
            QueueEvent::Refused { request, .. } => match ws.requests.remove(request) {
                Some(WorkerAsk::Lease) => {
                    ws.asking = ws.asking.saturating_sub(1);
                    ws.next_poll = Some(now + crate::queue::EMPTY_BACKOFF);
                }
                // A stale token or no answer: the worker gives the item up (it runs again
                // elsewhere).
                Some(WorkerAsk::Complete(t) | WorkerAsk::Heartbeat(t)) => {
                    ws.held.retain(|h| h.token != t)
                }
                None => {}
            },
            _ => {}
        }
        violations
    }

    /// At the end of a run with `[queue]`: invariant 5 of `crate::queue`.
    pub(super) fn check_queue_end(&mut self) {
        let Some(mut q) = self.tasks.take() else {
            return;
        };
        let slots = &self.slots;
        let live_slot = |s: &Slot| matches!(s.state, NodeState::Running | NodeState::Paused);
        let shards = q.shards.clone();
        let served = |k: usize| {
            slots
                .iter()
                .enumerate()
                .filter(|(_, s)| live_slot(s))
                .filter_map(|(i, s)| {
                    let queue = s.node.as_ref()?.queues()?.serving(&shards[k])?;
                    Some((i, queue.records().map(|r| (r.id, r.state)).collect()))
                })
                .collect()
        };
        let live = |node: NodeId| index_of(node, self.nodes).is_some_and(|i| live_slot(&slots[i]));
        let violations = q.check_end(served, live);
        self.tasks = Some(q);
        for v in violations {
            self.invariants.violation(self.now, v);
        }
    }
}

/// An exponential gap at `rate` per second.
fn exp_gap(rng: &mut ChaCha8Rng, rate: f64) -> Duration {
    let u: f64 = rng.random();
    Duration::from_secs_f64((-(1.0 - u).ln() / rate).min(1e9))
}
