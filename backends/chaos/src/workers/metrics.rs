//! The autoscaler's own `/metrics` (`meshkit-chaos autoscale --metrics ADDR`; the compose
//! stack's `autoscaler` service serves it on port 9466 and Prometheus scrapes it as job
//! `meshkit-autoscaler`). Every series carries the label `queue`, the one queue followed.
//!
//! | family | type | value |
//! | --- | --- | --- |
//! | `meshkit_autoscaler_workers` | gauge | worker containers running |
//! | `meshkit_autoscaler_workers_min` | gauge | the policy's `min_workers` |
//! | `meshkit_autoscaler_workers_max` | gauge | the policy's `max_workers` |
//! | `meshkit_autoscaler_decisions_total` | counter | decisions made, by `direction` (`scale-out`, `scale-in`) |
//! | `meshkit_autoscaler_backpressure_active` | gauge | 1 while the signal the policy follows is active (any shard) |
//! | `meshkit_autoscaler_backpressure_pending` | gauge | items pending over the shards, as last signalled |
//! | `meshkit_autoscaler_signals_total` | counter | backpressure signals taken (a stale owner's are not) |
//! | `meshkit_autoscaler_stream_connects_total` | counter | backpressure stream (re)connections |
//! | `meshkit_autoscaler_errors_total` | counter | Docker calls that failed |
//!
//! Bounded: one queue, two directions; nothing a peer sends becomes a label.

use std::borrow::Cow;
use std::sync::{Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::autoscale::Direction;

/// The `Content-Type` of [`Metrics::render`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every family of the autoscaler, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// One render at a time.
    render: Mutex<()>,
    workers: Gauge,
    decisions: Family<Vec<(&'static str, &'static str)>, Counter>,
    active: Gauge,
    pending: Gauge,
    signals: Counter,
    connects: Counter,
    errors: Counter,
}

impl Metrics {
    /// The families for `queue`, the bounds set from the policy.
    pub fn new(queue: &str, min_workers: u32, max_workers: u32) -> Self {
        let mut registry = Registry::with_labels(
            [(Cow::Borrowed("queue"), Cow::Owned(queue.to_owned()))].into_iter(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let workers = gauge(
            &mut registry,
            "meshkit_autoscaler_workers",
            "Worker containers running",
        );
        gauge(
            &mut registry,
            "meshkit_autoscaler_workers_min",
            "The policy's fewest workers",
        )
        .set(i64::from(min_workers));
        gauge(
            &mut registry,
            "meshkit_autoscaler_workers_max",
            "The policy's most workers",
        )
        .set(i64::from(max_workers));
        let decisions = Family::default();
        registry.register(
            "meshkit_autoscaler_decisions",
            "Scaling decisions made, by direction",
            decisions.clone(),
        );
        let active = gauge(
            &mut registry,
            "meshkit_autoscaler_backpressure_active",
            "1 while the followed queue's backpressure is active on any shard, as the autoscaler saw it",
        );
        let pending = gauge(
            &mut registry,
            "meshkit_autoscaler_backpressure_pending",
            "Items pending over the queue's shards, as last signalled",
        );
        let signals = counter(
            &mut registry,
            "meshkit_autoscaler_signals",
            "Backpressure signals taken",
        );
        let connects = counter(
            &mut registry,
            "meshkit_autoscaler_stream_connects",
            "Backpressure stream (re)connections",
        );
        let errors = counter(
            &mut registry,
            "meshkit_autoscaler_errors",
            "Docker calls that failed",
        );
        Self {
            registry,
            render: Mutex::new(()),
            workers,
            decisions,
            active,
            pending,
            signals,
            connects,
            errors,
        }
    }

    /// Workers running now.
    pub(crate) fn set_workers(&self, n: usize) {
        self.workers.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A decision made.
    pub(crate) fn decided(&self, direction: Direction) {
        let d = match direction {
            Direction::ScaleOut => "scale-out",
            Direction::ScaleIn => "scale-in",
        };
        self.decisions.get_or_create(&vec![("direction", d)]).inc();
    }

    /// A signal taken, and the verdict and pending count after it.
    pub(crate) fn signal(&self, active: bool, pending: u64) {
        self.signals.inc();
        self.active.set(i64::from(active));
        self.pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// A stream (re)connected.
    pub(crate) fn connected(&self) {
        self.connects.inc();
    }

    /// A Docker call failed.
    pub(crate) fn error(&self) {
        self.errors.inc();
    }

    /// The Prometheus text exposition (format 0.0.4, [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let _one = self.render.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = String::new();
        // Writing to a String cannot fail; an encoder error would mean a bad family, which the
        // test below catches: an empty page rather than a panic.
        if prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).is_err()
        {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The families render under the names docs/metrics.md lists, with the queue label, and
    /// follow what the scaler reports.
    #[test]
    fn families_render_with_the_queue_label() {
        let m = Metrics::new("jobs", 1, 3);
        m.set_workers(2);
        m.decided(Direction::ScaleOut);
        m.decided(Direction::ScaleOut);
        m.decided(Direction::ScaleIn);
        m.signal(true, 140);
        m.connected();
        let text = m.render();
        for line in [
            "meshkit_autoscaler_workers{queue=\"jobs\"} 2",
            "meshkit_autoscaler_workers_min{queue=\"jobs\"} 1",
            "meshkit_autoscaler_workers_max{queue=\"jobs\"} 3",
            "meshkit_autoscaler_decisions_total{queue=\"jobs\",direction=\"scale-out\"} 2",
            "meshkit_autoscaler_decisions_total{queue=\"jobs\",direction=\"scale-in\"} 1",
            "meshkit_autoscaler_backpressure_active{queue=\"jobs\"} 1",
            "meshkit_autoscaler_backpressure_pending{queue=\"jobs\"} 140",
            "meshkit_autoscaler_signals_total{queue=\"jobs\"} 1",
            "meshkit_autoscaler_stream_connects_total{queue=\"jobs\"} 1",
            "meshkit_autoscaler_errors_total{queue=\"jobs\"} 0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    /// docs/metrics.md, "Autoscaler", documents exactly the families rendered, each with its
    /// type.
    #[test]
    fn docs_metrics_md_documents_exactly_these_families() {
        const DOC: &str = include_str!("../../../../docs/metrics.md");
        let mut documented = std::collections::BTreeSet::new();
        for row in DOC.lines().filter_map(|l| l.trim().strip_prefix('|')) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let [names, kind, ..] = cells.as_slice() else {
                continue;
            };
            for name in names.split('`').skip(1).step_by(2) {
                if name.starts_with("meshkit_autoscaler_") {
                    let name = name.split('{').next().unwrap_or(name);
                    documented.insert(format!("{name} {kind}"));
                }
            }
        }
        let m = Metrics::new("jobs", 1, 3);
        m.decided(Direction::ScaleOut);
        let text = m.render();
        let rendered: std::collections::BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let (name, kind) = l.split_once(' ').unwrap_or((l, ""));
                // The exposition may name a counter's family without `_total`.
                let name = if kind == "counter" && !name.ends_with("_total") {
                    format!("{name}_total")
                } else {
                    name.to_owned()
                };
                format!("{name} {kind}")
            })
            .collect();
        assert_eq!(documented, rendered);
    }
}
