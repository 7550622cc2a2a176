//! The autoscaler's decisions, as a pure state machine: the backpressure signals it has seen
//! ([`Signals`]: the latest per shard, from the newest owner) folded into one verdict (any
//! shard active), and [`Policy`], which turns that verdict over time into scale-outs and
//! scale-ins with hysteresis. No clock, no I/O: the caller passes the time
//! ([`crate::workers`] runs it on the stack: the SSE stream in, Docker containers out).
//!
//! The rules, each with a test in `autoscale/tests.rs` that fails without it:
//!
//! - **dwell**: scale out only once the signal has been active for `scale_out_after` without a
//!   break (a blip of backpressure starts no container);
//! - **hysteresis**: scale in only once the signal has been inactive for `scale_in_after`,
//!   which is at least `scale_out_after` (workers are cheap to keep a while, and a queue that
//!   just dropped below its low watermark often rises again);
//! - **cooldown**: never two decisions within `cooldown` of each other, in either direction
//!   (a new worker needs time to show in the signal);
//! - **bounds**: never fewer than `min_workers`, never more than `max_workers`; one worker a
//!   decision.

use std::collections::BTreeMap;
use std::time::Duration;

use meshkit_api::json::BackpressureJson;
use serde::Serialize;

/// The policy's parameters (a scenario's `[autoscale]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Fewest workers.
    pub min_workers: u32,
    /// Most workers.
    pub max_workers: u32,
    /// Active this long without a break before a scale-out.
    pub scale_out_after: Duration,
    /// Inactive this long before a scale-in.
    pub scale_in_after: Duration,
    /// Shortest time between two decisions.
    pub cooldown: Duration,
}

impl From<&meshkit_sim::scenario::AutoscaleSpec> for PolicyConfig {
    fn from(a: &meshkit_sim::scenario::AutoscaleSpec) -> Self {
        Self {
            min_workers: a.min_workers,
            max_workers: a.max_workers,
            scale_out_after: a.scale_out_after,
            scale_in_after: a.scale_in_after,
            cooldown: a.cooldown,
        }
    }
}

/// Which way a decision goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// One worker more.
    ScaleOut,
    /// One worker fewer.
    ScaleIn,
}

/// A decision: the worker count to reach, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Which way.
    pub direction: Direction,
    /// Workers before.
    pub from: u32,
    /// Workers after.
    pub to: u32,
    /// Why, in words (the dwell or cooldown that was met).
    pub reason: String,
}

/// The hysteresis policy over a boolean signal (backpressure active or not).
#[derive(Clone, Debug)]
pub struct Policy {
    config: PolicyConfig,
    workers: u32,
    /// Since when the signal has been active without a break.
    active_since: Option<Duration>,
    /// Since when it has been inactive (from the first observation if never active).
    inactive_since: Option<Duration>,
    last_decision: Option<Duration>,
}

impl Policy {
    /// A policy at `min_workers` (the workers the autoscaler starts with).
    pub fn new(config: PolicyConfig) -> Self {
        let workers = config.min_workers;
        Self {
            config,
            workers,
            active_since: None,
            inactive_since: None,
            last_decision: None,
        }
    }

    /// The workers the policy holds now.
    pub fn workers(&self) -> u32 {
        self.workers
    }

    /// Folds the signal seen at `now` (times only move forward) and returns the decision due,
    /// if any; the policy counts it as made (the caller applies it).
    pub fn observe(&mut self, now: Duration, active: bool) -> Option<Decision> {
        if active {
            self.inactive_since = None;
            self.active_since.get_or_insert(now);
        } else {
            self.active_since = None;
            self.inactive_since.get_or_insert(now);
        }
        let c = &self.config;
        if let Some(last) = self.last_decision
            && now.saturating_sub(last) < c.cooldown
        {
            return None;
        }
        let since_last = self.last_decision.map_or_else(
            || "no decision yet".to_owned(),
            |last| {
                format!(
                    "{:.1} s since the last decision",
                    now.saturating_sub(last).as_secs_f64()
                )
            },
        );
        let decision = match (self.active_since, self.inactive_since) {
            (Some(since), _)
                if now.saturating_sub(since) >= c.scale_out_after
                    && self.workers < c.max_workers =>
            {
                Decision {
                    direction: Direction::ScaleOut,
                    from: self.workers,
                    to: self.workers + 1,
                    reason: format!(
                        "backpressure active for {:.1} s (scale_out_after {:.1} s), {since_last}",
                        now.saturating_sub(since).as_secs_f64(),
                        c.scale_out_after.as_secs_f64()
                    ),
                }
            }
            (_, Some(since))
                if now.saturating_sub(since) >= c.scale_in_after
                    && self.workers > c.min_workers =>
            {
                Decision {
                    direction: Direction::ScaleIn,
                    from: self.workers,
                    to: self.workers - 1,
                    reason: format!(
                        "backpressure inactive for {:.1} s (scale_in_after {:.1} s), {since_last}",
                        now.saturating_sub(since).as_secs_f64(),
                        c.scale_in_after.as_secs_f64()
                    ),
                }
            }
            _ => return None,
        };
        self.workers = decision.to;
        self.last_decision = Some(now);
        Some(decision)
    }
}

/// One shard's latest signal, as the autoscaler keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShardSignal {
    /// Producers should wait.
    pub active: bool,
    /// Items pending when the owner took it.
    pub pending: u32,
    /// The owner publishing it.
    pub owner: u64,
    /// The owner's fence.
    pub fence: u64,
}

/// The latest signal of every shard of the followed queue, whichever node's stream brought
/// it: when a shard's owner changes, the new owner publishes under a higher fence, and a late
/// or replayed signal of the old owner (a lower fence, e.g. from a reconnect to a node whose
/// view lags) is ignored.
#[derive(Clone, Debug, Default)]
pub struct Signals {
    shards: BTreeMap<String, ShardSignal>,
}

impl Signals {
    /// Takes `signal` unless a newer owner's is held for its shard; whether it was taken.
    pub fn update(&mut self, signal: &BackpressureJson) -> bool {
        if self
            .shards
            .get(&signal.shard)
            .is_some_and(|held| held.fence > signal.fence)
        {
            return false;
        }
        self.shards.insert(
            signal.shard.clone(),
            ShardSignal {
                active: signal.is_active,
                pending: signal.pending_count,
                owner: signal.owner,
                fence: signal.fence,
            },
        );
        true
    }

    /// Whether any shard's backpressure is active: one hot shard is enough to want workers
    /// (they lease from every shard).
    pub fn active(&self) -> bool {
        self.shards.values().any(|s| s.active)
    }

    /// Items pending over all shards, as last signalled.
    pub fn pending(&self) -> u64 {
        self.shards.values().map(|s| u64::from(s.pending)).sum()
    }

    /// Every shard's latest signal.
    pub fn shards(&self) -> &BTreeMap<String, ShardSignal> {
        &self.shards
    }
}

#[cfg(test)]
mod tests;
