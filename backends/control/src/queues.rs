//! The task queues over the control API (`docs/task-queues.md`): the `mesh_queue_*` families.

use meshkit_api::metrics::{Families, Histogram};
use meshkit_runtime::queue_host::{LAG_BOUNDS, NamespaceCounters, QueueStatus, ServedQueue};

/// The `mesh_queue_*` families of a node with `[queues]`: one series per configured namespace
/// (the `queue` label) and never per shard, written for every namespace even while this node
/// serves none of its shards, so a node's series do not come and go with shard moves.
pub(crate) fn write_metrics(families: &mut Families<'_, '_>, s: &QueueStatus) -> std::fmt::Result {
    use meshkit_api::metrics::catalogue::{
        QUEUE_ACTIVE, QUEUE_BACKPRESSURE_ACTIVE, QUEUE_BACKPRESSURE_TRANSITIONS,
        QUEUE_CHECKPOINT_WRITES, QUEUE_COMPLETED, QUEUE_DEAD_LETTERED, QUEUE_ENQUEUED,
        QUEUE_FAILED, QUEUE_PENDING, QUEUE_PENDING_REASSIGNMENTS, QUEUE_RECOVERIES,
        QUEUE_REPLICATION_LAG, QUEUE_REQUEUED, QUEUE_SERVED, QUEUE_STALE_REFUSED,
        QUEUE_UNHEALTHY_PEERS,
    };
    let none = NamespaceCounters::default();
    let namespaces: Vec<(&str, &NamespaceCounters)> = s
        .namespaces
        .iter()
        .map(|ns| (ns.as_str(), s.counters.get(ns).unwrap_or(&none)))
        .collect();
    let gauge = |f: fn(&ServedQueue) -> usize| {
        namespaces.iter().map(move |(ns, _)| {
            let sum: usize = s
                .served
                .iter()
                .filter(|q| q.shard.namespace() == *ns)
                .map(f)
                .sum();
            ([*ns], sum)
        })
    };
    families.gauges(&QUEUE_SERVED, gauge(|_| 1))?;
    families.gauges(&QUEUE_PENDING, gauge(|q| q.pending))?;
    families.gauges(&QUEUE_ACTIVE, gauge(|q| q.active))?;
    families.gauges(
        &QUEUE_BACKPRESSURE_ACTIVE,
        gauge(|q| usize::from(q.backpressure_active)),
    )?;
    let counter =
        |f: fn(&NamespaceCounters) -> u64| namespaces.iter().map(move |(ns, c)| ([*ns], f(c)));
    families.counters(&QUEUE_ENQUEUED, counter(|c| c.enqueued))?;
    families.counters(&QUEUE_COMPLETED, counter(|c| c.completed))?;
    families.counters(&QUEUE_FAILED, counter(|c| c.failed))?;
    families.counters(&QUEUE_REQUEUED, counter(|c| c.requeued))?;
    families.counters(&QUEUE_DEAD_LETTERED, counter(|c| c.dead_lettered))?;
    families.counters(&QUEUE_STALE_REFUSED, counter(|c| c.stale_refused))?;
    families.counters(
        &QUEUE_BACKPRESSURE_TRANSITIONS,
        namespaces.iter().flat_map(|(ns, c)| {
            [
                ([*ns, "active"], c.backpressure_activated),
                ([*ns, "inactive"], c.backpressure_deactivated),
            ]
        }),
    )?;
    families.gauge(&QUEUE_UNHEALTHY_PEERS, s.health_summary.unhealthy)?;
    families.gauge(
        &QUEUE_PENDING_REASSIGNMENTS,
        s.health_summary.pending_reassignments,
    )?;
    families.counter(&QUEUE_RECOVERIES, s.stats.recoveries)?;
    families.counter(&QUEUE_CHECKPOINT_WRITES, s.checkpoint_writes)?;
    families.histograms(
        &QUEUE_REPLICATION_LAG,
        namespaces.iter().map(|(ns, c)| {
            let lag = &c.replication_lag;
            (
                [*ns],
                Histogram {
                    bounds: &LAG_BOUNDS,
                    buckets: &lag.buckets,
                    sum: lag.sum,
                    count: lag.count,
                },
            )
        }),
    )
}
