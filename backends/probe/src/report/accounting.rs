//! The accounting: runs, alerts and heartbeats of a period in, a [`Report`] out. Pure (time
//! comes in as the period), so the rules of the [module documentation](super) are tested on
//! numbers, not files.

use meshkit::diag::probe::ProbeResult;
use serde::Serialize;

use crate::history::StoredRun;
use crate::record::{AlertName, AlertState, AlertTransition, ProbeKey};

/// A heartbeat gap longer than this is agent downtime (two missed heartbeats of one minute).
pub const AGENT_GAP_MS: i64 = 120_000;
/// The history writer's heartbeat period ([`crate::history::HEARTBEAT_EVERY`]), in ms.
pub const HEARTBEAT_MS: i64 = 60_000;
const _: () = assert!(
    HEARTBEAT_MS as u128 == crate::history::HEARTBEAT_EVERY.as_millis()
        && AGENT_GAP_MS == 2 * HEARTBEAT_MS,
    "the reports' heartbeat period is the writer's, and a gap is two of them"
);

/// Which report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// 24 hours, plotted per hour.
    Daily,
    /// 7 days, plotted per day.
    Weekly,
}

impl Period {
    /// Its name in file names and titles.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
        }
    }

    /// Its length, in ms.
    pub fn length_ms(self) -> i64 {
        match self {
            Self::Daily => 24 * 3_600_000,
            Self::Weekly => 7 * 24 * 3_600_000,
        }
    }

    /// The width of one plotted bucket, in ms: an hour (daily) or a day (weekly).
    pub fn bucket_ms(self) -> i64 {
        match self {
            Self::Daily => 3_600_000,
            Self::Weekly => 24 * 3_600_000,
        }
    }

    /// How many buckets a period has.
    pub fn buckets(self) -> usize {
        match self {
            Self::Daily => 24,
            Self::Weekly => 7,
        }
    }
}

/// A half-open span of time `[start, end)`, ms since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Span {
    /// First ms in it.
    pub start_unix_ms: i64,
    /// First ms after it.
    pub end_unix_ms: i64,
}

impl Span {
    /// Its length in ms (0 when empty).
    pub fn len_ms(self) -> i64 {
        (self.end_unix_ms - self.start_unix_ms).max(0)
    }

    fn contains(self, at: i64) -> bool {
        self.start_unix_ms <= at && at < self.end_unix_ms
    }

    fn clip(self, to: Self) -> Option<Self> {
        let s = Self {
            start_unix_ms: self.start_unix_ms.max(to.start_unix_ms),
            end_unix_ms: self.end_unix_ms.min(to.end_unix_ms),
        };
        (s.len_ms() > 0).then_some(s)
    }
}

/// One alert from firing to resolution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Incident {
    /// Which probe.
    pub cluster: String,
    /// Which probe.
    pub namespace: String,
    /// Which probe.
    pub group: String,
    /// Which probe.
    pub probe: String,
    /// The probe type.
    pub kind: String,
    /// The node it ran against.
    pub target: String,
    /// `MeshKitProbeFailing` or `MeshKitProbeSlow`.
    pub alert: &'static str,
    /// When it fired (possibly before the period).
    pub fired_unix_ms: i64,
    /// When it resolved; `None`: still firing at the end of the period.
    pub resolved_unix_ms: Option<i64>,
    /// A maintenance window muted it: recorded, not sent, its time not counted as downtime.
    pub muted: bool,
    /// Why it fired.
    pub reason: String,
    /// Why it ended (the resolution's reason, or the end of its maintenance window).
    pub ended_because: Option<String>,
}

/// One bucket of a probe's plot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// Its start.
    pub start_unix_ms: i64,
    /// Runs counted (neither in maintenance nor in agent downtime).
    pub runs: u64,
    /// Of those, up (pass or slow).
    pub up: u64,
    /// `up / runs`, as a percentage; `None` without runs.
    pub success_percent: Option<f64>,
    /// Median latency of the up runs, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of the up runs, ms.
    pub p99_ms: Option<f64>,
}

/// One probe over the period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeSummary {
    /// Cluster label.
    pub cluster: String,
    /// Namespace label.
    pub namespace: String,
    /// Group label.
    pub group: String,
    /// The probe's name.
    pub probe: String,
    /// The probe type.
    pub kind: String,
    /// The node it ran against.
    pub target: String,
    /// Runs in the period, all of them.
    pub runs_total: u64,
    /// Runs counted: not in maintenance, not in agent downtime.
    pub runs_counted: u64,
    /// Counted runs that passed (within the latency threshold or slowly).
    pub up: u64,
    /// Counted runs that passed slowly (up, but degraded).
    pub slow: u64,
    /// Counted runs that failed or timed out.
    pub down: u64,
    /// Runs inside a muted alert's maintenance span.
    pub runs_in_maintenance: u64,
    /// `up / runs_counted` as a percentage; `None` without counted runs.
    pub availability_percent: Option<f64>,
    /// `slow / runs_counted` as a percentage.
    pub degraded_percent: Option<f64>,
    /// Time down: from a failing run to the next passing one, without maintenance and agent
    /// downtime, in ms.
    pub downtime_ms: i64,
    /// Time in maintenance (muted alerts' spans within the period), in ms.
    pub maintenance_ms: i64,
    /// Median latency of the up runs, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of the up runs, ms.
    pub p99_ms: Option<f64>,
    /// Incidents of this probe overlapping the period (muted ones included).
    pub incidents: usize,
    /// The plot: one bucket per hour (daily) or day (weekly).
    pub buckets: Vec<Bucket>,
}

/// A whole report, as computed; the HTML, Markdown and JSON are its renderings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Daily or weekly.
    pub period: Period,
    /// The period.
    pub span: Span,
    /// Agents whose heartbeats are in the period.
    pub agents: Vec<String>,
    /// Agent downtime: heartbeat gaps over [`AGENT_GAP_MS`], clipped to the period.
    pub agent_downtime: Vec<Span>,
    /// Their total, ms.
    pub agent_downtime_ms: i64,
    /// Every probe with runs or incidents in the period, in key order.
    pub probes: Vec<ProbeSummary>,
    /// Incidents overlapping the period, by firing time.
    pub incidents: Vec<Incident>,
    /// Up runs over counted runs of every probe, as a percentage.
    pub availability_percent: Option<f64>,
}

/// What one probe brings to the accounting.
#[derive(Clone, Debug)]
pub struct ProbeInput {
    /// Its key.
    pub key: ProbeKey,
    /// Its type.
    pub kind: String,
    /// Its target.
    pub target: String,
    /// Its runs in the period, oldest first.
    pub runs: Vec<StoredRun>,
}

/// Agent downtime in `span`: after each heartbeat followed by a gap longer than
/// [`AGENT_GAP_MS`], from when the next heartbeat was due ([`HEARTBEAT_MS`] later: the agent was
/// alive until then, its last runs are real) to the next heartbeat; likewise before the first
/// heartbeat (from the period's start) and after the last one (to the period's end). No
/// heartbeat at all: the whole period. `heartbeats` sorted; it may start with the last one
/// before the period.
pub fn agent_downtime(span: Span, heartbeats: &[i64]) -> Vec<Span> {
    let mut out = Vec::new();
    // Without a heartbeat before the period, the period's start stands for one that was due
    // then: a first heartbeat within two minutes of it is no gap.
    let mut due = span.start_unix_ms;
    let mut previous = span.start_unix_ms - HEARTBEAT_MS;
    for &at in heartbeats {
        if at - previous > AGENT_GAP_MS {
            out.push(Span {
                start_unix_ms: due,
                end_unix_ms: at,
            });
        }
        previous = at;
        due = at + HEARTBEAT_MS;
    }
    if span.end_unix_ms - previous > AGENT_GAP_MS {
        out.push(Span {
            start_unix_ms: due,
            end_unix_ms: span.end_unix_ms,
        });
    }
    out.into_iter().filter_map(|s| s.clip(span)).collect()
}

/// Pairs alert transitions (sorted by time) into incidents, and keeps those overlapping
/// `span`. A muted alert that fires again unmuted (its window ended while it still fired) ends
/// the muted incident there and opens an unmuted one.
pub fn incidents(span: Span, alerts: &[AlertTransition]) -> Vec<Incident> {
    let mut open: std::collections::BTreeMap<(ProbeKey, AlertName), Incident> =
        std::collections::BTreeMap::new();
    let mut done = Vec::new();
    for a in alerts {
        let slot = (a.key.clone(), a.alert);
        match a.state {
            AlertState::Firing => {
                if let Some(current) = open.get(&slot) {
                    if current.muted && !a.muted {
                        let mut ended = open.remove(&slot).expect("checked just above");
                        ended.resolved_unix_ms = Some(a.at_unix_ms);
                        ended.ended_because =
                            Some("maintenance ended while it still fired".to_owned());
                        done.push(ended);
                    } else {
                        // A repeat of what already fires (a restart re-recording it).
                        continue;
                    }
                }
                open.insert(
                    slot,
                    Incident {
                        cluster: a.key.cluster.clone(),
                        namespace: a.key.namespace.clone(),
                        group: a.key.group.clone(),
                        probe: a.key.probe.clone(),
                        kind: a.kind.clone(),
                        target: a.target.clone(),
                        alert: a.alert.as_str(),
                        fired_unix_ms: a.at_unix_ms,
                        resolved_unix_ms: None,
                        muted: a.muted,
                        reason: a.reason.clone(),
                        ended_because: None,
                    },
                );
            }
            AlertState::Resolved => {
                // A resolution without its firing (pruned by the retention) is left out.
                if let Some(mut ended) = open.remove(&slot) {
                    ended.resolved_unix_ms = Some(a.at_unix_ms);
                    ended.ended_because = Some(a.reason.clone());
                    done.push(ended);
                }
            }
        }
    }
    done.extend(open.into_values());
    done.retain(|i| {
        i.fired_unix_ms < span.end_unix_ms
            && i.resolved_unix_ms.is_none_or(|r| r >= span.start_unix_ms)
    });
    done.sort_by(|a, b| {
        (a.fired_unix_ms, &a.probe, a.alert).cmp(&(b.fired_unix_ms, &b.probe, b.alert))
    });
    done
}

/// Builds the report of `span` from each probe's runs, the alert transitions and the
/// heartbeats, by the rules of the [module documentation](super).
pub fn build(
    period: Period,
    span: Span,
    agents: Vec<String>,
    heartbeats: &[i64],
    alerts: &[AlertTransition],
    probes: Vec<ProbeInput>,
) -> Report {
    let agent_downtime = agent_downtime(span, heartbeats);
    let incidents = incidents(span, alerts);
    let mut summaries = Vec::new();
    let (mut all_up, mut all_counted) = (0u64, 0u64);
    for input in probes {
        let mine: Vec<&Incident> = incidents
            .iter()
            .filter(|i| {
                i.cluster == input.key.cluster
                    && i.namespace == input.key.namespace
                    && i.group == input.key.group
                    && i.probe == input.key.probe
            })
            .collect();
        if input.runs.is_empty() && mine.is_empty() {
            continue;
        }
        let summary = summarize(period, span, &agent_downtime, &mine, input);
        all_up += summary.up;
        all_counted += summary.runs_counted;
        summaries.push(summary);
    }
    summaries.sort_by(|a, b| {
        (&a.cluster, &a.namespace, &a.group, &a.probe).cmp(&(
            &b.cluster,
            &b.namespace,
            &b.group,
            &b.probe,
        ))
    });
    Report {
        period,
        span,
        agents,
        agent_downtime_ms: agent_downtime.iter().map(|s| s.len_ms()).sum(),
        agent_downtime,
        probes: summaries,
        incidents,
        availability_percent: percent(all_up, all_counted),
    }
}

fn summarize(
    period: Period,
    span: Span,
    agent_downtime: &[Span],
    incidents: &[&Incident],
    input: ProbeInput,
) -> ProbeSummary {
    let runs = &input.runs;
    let maintenance = maintenance_spans(span, incidents, runs);
    let excluded: Vec<Span> = {
        let mut all: Vec<Span> = maintenance.iter().chain(agent_downtime).copied().collect();
        all.sort();
        all
    };
    let in_maintenance = |at: i64| maintenance.iter().any(|s| s.contains(at));
    let in_agent_downtime = |at: i64| agent_downtime.iter().any(|s| s.contains(at));

    let mut buckets: Vec<(Bucket, Vec<i64>)> = (0..period.buckets())
        .map(|i| {
            let start = span.start_unix_ms + period.bucket_ms() * i64::try_from(i).unwrap_or(0);
            (
                Bucket {
                    start_unix_ms: start,
                    ..Bucket::default()
                },
                Vec::new(),
            )
        })
        .collect();
    let (mut up, mut slow, mut down, mut maint, mut counted) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut latencies = Vec::new();
    let mut down_spans = Vec::new();
    let mut down_since = None::<i64>;
    for run in runs {
        if in_maintenance(run.at_unix_ms) {
            maint += 1;
            continue;
        }
        if in_agent_downtime(run.at_unix_ms) {
            continue;
        }
        counted += 1;
        let index = usize::try_from((run.at_unix_ms - span.start_unix_ms) / period.bucket_ms())
            .unwrap_or(0)
            .min(buckets.len() - 1);
        let (bucket, bucket_latencies) = &mut buckets[index];
        bucket.runs += 1;
        if run.result.is_failure() {
            down += 1;
            down_since.get_or_insert(run.at_unix_ms);
        } else {
            up += 1;
            bucket.up += 1;
            if run.result == ProbeResult::Slow {
                slow += 1;
            }
            latencies.push(run.latency_us);
            bucket_latencies.push(run.latency_us);
            if let Some(since) = down_since.take() {
                down_spans.push(Span {
                    start_unix_ms: since,
                    end_unix_ms: run.at_unix_ms,
                });
            }
        }
    }
    if let Some(since) = down_since {
        down_spans.push(Span {
            start_unix_ms: since,
            end_unix_ms: span.end_unix_ms,
        });
    }
    let downtime_ms = down_spans
        .iter()
        .map(|d| d.len_ms() - overlap_ms(*d, &excluded))
        .sum();
    let buckets = buckets
        .into_iter()
        .map(|(mut b, mut lat)| {
            b.success_percent = percent(b.up, b.runs);
            lat.sort_unstable();
            b.p50_ms = percentile_ms(&lat, 50.0);
            b.p99_ms = percentile_ms(&lat, 99.0);
            b
        })
        .collect();
    latencies.sort_unstable();
    ProbeSummary {
        cluster: input.key.cluster,
        namespace: input.key.namespace,
        group: input.key.group,
        probe: input.key.probe,
        kind: input.kind,
        target: input.target,
        runs_total: u64::try_from(runs.len()).unwrap_or(u64::MAX),
        runs_counted: counted,
        up,
        slow,
        down,
        runs_in_maintenance: maint,
        availability_percent: percent(up, counted),
        degraded_percent: percent(slow, counted),
        downtime_ms,
        maintenance_ms: maintenance.iter().map(|s| s.len_ms()).sum(),
        p50_ms: percentile_ms(&latencies, 50.0),
        p99_ms: percentile_ms(&latencies, 99.0),
        incidents: incidents.len(),
        buckets,
    }
}

/// The maintenance spans of one probe: each muted incident from the start of the failing
/// stretch that raised it (the runs before the threshold was reached belong to the same
/// planned work) to its end, clipped to the period, merged.
fn maintenance_spans(span: Span, incidents: &[&Incident], runs: &[StoredRun]) -> Vec<Span> {
    let mut spans: Vec<Span> = incidents
        .iter()
        .filter(|i| i.muted)
        .filter_map(|i| {
            let mut start = i.fired_unix_ms;
            // Walk back over the failing runs that led to the firing.
            let upto = runs.partition_point(|r| r.at_unix_ms <= i.fired_unix_ms);
            for r in runs[..upto].iter().rev() {
                if !r.result.is_failure() && i.alert == AlertName::Failing.as_str() {
                    break;
                }
                if i.alert == AlertName::Slow.as_str() && r.result != ProbeResult::Slow {
                    break;
                }
                start = r.at_unix_ms;
            }
            Span {
                start_unix_ms: start,
                end_unix_ms: i.resolved_unix_ms.unwrap_or(span.end_unix_ms),
            }
            .clip(span)
        })
        .collect();
    spans.sort();
    let mut merged: Vec<Span> = Vec::new();
    for s in spans {
        match merged.last_mut() {
            Some(last) if s.start_unix_ms <= last.end_unix_ms => {
                last.end_unix_ms = last.end_unix_ms.max(s.end_unix_ms);
            }
            _ => merged.push(s),
        }
    }
    merged
}

/// How much of `span` the sorted, possibly overlapping `excluded` spans cover.
fn overlap_ms(span: Span, excluded: &[Span]) -> i64 {
    let mut covered = 0;
    let mut cursor = span.start_unix_ms;
    for e in excluded {
        let start = e.start_unix_ms.max(cursor);
        let end = e.end_unix_ms.min(span.end_unix_ms);
        if end > start {
            covered += end - start;
            cursor = end;
        }
    }
    covered
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    // Run counts are far below 2^52: exact as f64.
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

/// The nearest-rank percentile of sorted microsecond latencies, in ms: the smallest value
/// with at least `p` percent of the values at or below it.
pub fn percentile_ms(sorted_us: &[i64], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    // A rank among at most a few million runs: exact as f64, positive.
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil().max(1.0) as usize;
    let ms = sorted_us[rank.min(sorted_us.len()) - 1] as f64 / 1000.0;
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn span() -> Span {
        Span {
            start_unix_ms: 0,
            end_unix_ms: 60 * MIN,
        }
    }

    #[test]
    fn heartbeat_gaps_over_two_minutes_are_agent_downtime() {
        let beats: Vec<i64> = (0..=10)
            .map(|m| m * MIN)
            .chain((30..60).map(|m| m * MIN))
            .collect();
        // Alive until the heartbeat due at 11 min did not come.
        assert_eq!(
            agent_downtime(span(), &beats),
            vec![Span {
                start_unix_ms: 11 * MIN,
                end_unix_ms: 30 * MIN
            }]
        );
        // Exactly two minutes is not a gap; none at all is the whole period.
        assert!(agent_downtime(span(), &[0, 2 * MIN, 4 * MIN, 6 * MIN]).len() == 1);
        assert_eq!(agent_downtime(span(), &[]), vec![span()]);
        // A heartbeat 3 minutes before the period, then one 5 minutes into it, then none.
        assert_eq!(
            agent_downtime(span(), &[-3 * MIN, 5 * MIN]),
            vec![
                Span {
                    start_unix_ms: 0,
                    end_unix_ms: 5 * MIN
                },
                Span {
                    start_unix_ms: 6 * MIN,
                    end_unix_ms: 60 * MIN
                }
            ]
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<i64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile_ms(&v, 50.0), Some(50.0));
        assert_eq!(percentile_ms(&v, 99.0), Some(99.0));
        assert_eq!(percentile_ms(&[7_000], 99.0), Some(7.0));
        assert_eq!(percentile_ms(&[], 50.0), None);
    }

    #[test]
    fn overlap_counts_each_ms_once() {
        let d = Span {
            start_unix_ms: 0,
            end_unix_ms: 100,
        };
        let ex = [
            Span {
                start_unix_ms: 10,
                end_unix_ms: 30,
            },
            Span {
                start_unix_ms: 20,
                end_unix_ms: 40,
            },
            Span {
                start_unix_ms: 90,
                end_unix_ms: 200,
            },
        ];
        assert_eq!(overlap_ms(d, &ex), 40);
    }
}
