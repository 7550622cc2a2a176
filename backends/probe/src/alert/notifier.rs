//! [`Notifier`]: a tokio task that sends alert transitions to Alertmanager's API v2 and to
//! plain webhooks, and keeps firing alerts alive at Alertmanager.
//!
//! Rules:
//!
//! - [`Notifier::send`] never waits: the transition goes into a bounded queue
//!   ([`QUEUE_CAPACITY`]) or is dropped and counted ([`NotifierStats::dropped`]).
//! - Muted transitions are counted ([`NotifierStats::muted`]) and not sent.
//! - Alertmanager (`POST <url>/api/v2/alerts`): a firing alert is sent at once with `endsAt`
//!   = now + 4 x `resend`, then again every `resend` while it fires (Alertmanager resolves an
//!   alert nobody refreshes at its `endsAt`, so an agent that dies leaves no alert behind for
//!   longer than that); a resolved alert is sent once with `endsAt` = the resolve time.
//! - Webhooks get each transition once (no resends), as the JSON of
//!   [`WebhookBody`].
//! - Each receiver (one URL) has its own worker and bounded queue ([`RECEIVER_QUEUE_BATCHES`]):
//!   a slow or dead receiver delays only itself, and the order of transitions to one receiver
//!   is kept (a resolution never overtakes its firing). A failed POST is retried `retries`
//!   times with a doubling backoff from [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`]; a 4xx answer
//!   (but 408 and 429) is not retried, resending it would not change it.
//! - Every queue and map is bounded: the firing alerts kept for resends by
//!   [`MAX_FIRING_ALERTS`], a POST by [`MAX_BATCH_ALERTS`], an answer read by
//!   [`MAX_ANSWER_BYTES`].
//! - HTTP/1.1 through hyper-util's pooled client, in clear for `http://` receivers and over
//!   TLS for `https://` ones ([`super::transport`]: rustls, the CA of `alerting.ca`).
//! - [`Notifier::reconfigure`] swaps receivers, timers and labels without losing what fires:
//!   every firing alert is sent to the new Alertmanager list at once, and an alert whose label
//!   set changed (new static labels) is resolved under its old labels first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::config::AlertConfig;
use super::payload::{self, PostableAlert, WEBHOOK_VERSION, WebhookBody};
use super::transport::Connector;
use crate::record::{AlertName, AlertState, AlertTransition, ProbeKey, now_unix_ms};

/// Transitions waiting for the notifier's task; more are dropped and counted.
pub const QUEUE_CAPACITY: usize = 4096;
/// Batches waiting for one receiver's worker; more are dropped and counted (their alerts).
pub const RECEIVER_QUEUE_BATCHES: usize = 64;
/// Alerts in one POST (a resend of many firing alerts is split).
pub const MAX_BATCH_ALERTS: usize = 256;
/// The wait before the first retry; each further one doubles it.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How much of a receiver's answer is read (for the log when it refuses).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// Firing alerts kept for resends (four times the core scheduler's most probes per host, so
/// an agent never reaches it): beyond it, a new alert is sent once, not resent, and counted
/// as dropped; Alertmanager then resolves it at its `endsAt`.
pub const MAX_FIRING_ALERTS: usize = 4 * 4096;
/// An alert sent to Alertmanager ends this many `resend` periods ahead unless sent again:
/// three resends may be lost before Alertmanager resolves it on its own.
pub const ENDS_AFTER_RESENDS: u32 = 4;

/// What the notifier has done since it started, counted per alert and receiver (one alert in
/// a POST to two Alertmanagers counts two).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotifierStats {
    /// Alerts a receiver accepted (2xx).
    pub sent: u64,
    /// Alerts given up after the retries (or refused with a 4xx).
    pub failed: u64,
    /// Transitions or alerts dropped because a queue was full.
    pub dropped: u64,
    /// Muted transitions (not sent).
    pub muted: u64,
    /// Attempts repeated after a failure.
    pub retries: u64,
}

/// The sending half: cheap to call from the agent's hot path. Dropping it (or
/// [`close`](Self::close)) ends the task once the queued transitions are handed to receivers.
#[derive(Debug)]
pub struct Notifier {
    transitions: mpsc::Sender<AlertTransition>,
    config: watch::Sender<AlertConfig>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

/// Starts the notifier's task on the current tokio runtime, sending to `config`'s receivers,
/// with `generator_url` (the agent's own endpoint) in every alert.
///
/// # Panics
///
/// Outside a tokio runtime (like `tokio::spawn`).
pub fn spawn_notifier(config: &AlertConfig, generator_url: impl Into<String>) -> Notifier {
    let (transitions, queue) = mpsc::channel(QUEUE_CAPACITY);
    let (config_tx, config_rx) = watch::channel(config.clone());
    let counters = Arc::new(Counters::default());
    let client = http_client(config);
    let task = Task {
        generator_url: generator_url.into(),
        firing: BTreeMap::new(),
        alertmanagers: Vec::new(),
        webhooks: Vec::new(),
        client,
        counters: Arc::clone(&counters),
        config: config.clone(),
    };
    let task = tokio::spawn(task.run(queue, config_rx));
    Notifier {
        transitions,
        config: config_tx,
        counters,
        task,
    }
}

impl Notifier {
    /// Queues `transition` to be sent; never waits. A full queue drops it (counted).
    pub fn send(&self, transition: AlertTransition) {
        if self.transitions.try_send(transition).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                capacity = QUEUE_CAPACITY,
                "alert notifier queue full or closed: a transition was dropped"
            );
        }
    }

    /// Takes `config` (receivers, resend, timeout, retries, labels, runbook); what fires stays
    /// firing and is sent to the new Alertmanager list at once.
    pub fn reconfigure(&self, config: AlertConfig) {
        self.config.send_replace(config);
    }

    /// The counts so far.
    pub fn stats(&self) -> NotifierStats {
        let c = &self.counters;
        NotifierStats {
            sent: c.sent.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            muted: c.muted.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    /// Stops taking transitions and waits until those queued are delivered or given up (each
    /// receiver's retries bound the wait).
    pub async fn close(self) {
        let Self {
            transitions,
            config,
            task,
            ..
        } = self;
        drop(transitions);
        drop(config);
        if let Err(error) = task.await {
            tracing::error!(%error, "the alert notifier's task ended abnormally");
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    muted: AtomicU64,
    retries: AtomicU64,
}

type HttpClient = Client<Connector, Full<Bytes>>;

/// The pooled client for `config`'s receivers (TLS trusting its CA).
fn http_client(config: &AlertConfig) -> HttpClient {
    let connector = Connector::new(config.ca_certs()).unwrap_or_else(|error| {
        // The config checked each certificate as a trust anchor; kept honest all the same:
        // https receivers then fail (counted), http ones work.
        tracing::error!(%error, "alerting.ca unusable: https receivers will fail");
        Connector::new(&[]).expect("a connector without TLS cannot fail")
    });
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// One firing alert as last sent.
#[derive(Debug)]
struct Firing {
    transition: AlertTransition,
    starts_unix_ms: i64,
}

/// One receiver: its worker and the queue feeding it.
#[derive(Debug)]
struct Receiver {
    url: String,
    queue: mpsc::Sender<Job>,
    worker: JoinHandle<()>,
}

/// One POST.
#[derive(Debug)]
struct Job {
    body: Bytes,
    alerts: u64,
}

/// The task's state.
struct Task {
    config: AlertConfig,
    generator_url: String,
    firing: BTreeMap<(ProbeKey, AlertName), Firing>,
    alertmanagers: Vec<Receiver>,
    webhooks: Vec<Receiver>,
    client: HttpClient,
    counters: Arc<Counters>,
}

impl Task {
    async fn run(
        mut self,
        mut queue: mpsc::Receiver<AlertTransition>,
        mut configs: watch::Receiver<AlertConfig>,
    ) {
        self.start_receivers();
        let mut resend = self.resend_timer();
        let mut configs_open = true;
        loop {
            tokio::select! {
                biased;
                changed = configs.changed(), if configs_open => {
                    if changed.is_err() {
                        configs_open = false;
                        continue;
                    }
                    let config = configs.borrow_and_update().clone();
                    self.reconfigure(config);
                    resend = self.resend_timer();
                }
                next = queue.recv() => {
                    let Some(first) = next else { break };
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH_ALERTS {
                        match queue.try_recv() {
                            Ok(t) => batch.push(t),
                            Err(_) => break,
                        }
                    }
                    self.handle(batch);
                }
                _ = resend.tick() => self.resend(),
            }
        }
        let workers: Vec<JoinHandle<()>> = self
            .alertmanagers
            .drain(..)
            .chain(self.webhooks.drain(..))
            .map(|r| r.worker)
            .collect();
        for worker in workers {
            let _ = worker.await;
        }
    }

    fn resend_timer(&self) -> tokio::time::Interval {
        let period = self.config.resend();
        let mut timer = tokio::time::interval_at(Instant::now() + period, period);
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        timer
    }

    fn start_receivers(&mut self) {
        let timeout = self.config.timeout();
        let retries = self.config.retries();
        let start = |url: String| {
            let (queue, jobs) = mpsc::channel(RECEIVER_QUEUE_BATCHES);
            let worker = tokio::spawn(deliver(
                self.client.clone(),
                url.clone(),
                jobs,
                timeout,
                retries,
                Arc::clone(&self.counters),
            ));
            Receiver { url, queue, worker }
        };
        self.alertmanagers = self
            .config
            .alertmanager()
            .iter()
            .map(|base| start(format!("{base}/api/v2/alerts")))
            .collect();
        self.webhooks = self.config.webhooks().iter().cloned().map(start).collect();
    }

    fn handle(&mut self, batch: Vec<AlertTransition>) {
        let now = now_unix_ms();
        let ends = now + self.ends_ahead_ms();
        let mut to_alertmanager = Vec::with_capacity(batch.len());
        let mut to_webhooks = Vec::with_capacity(batch.len());
        for t in batch {
            if t.muted {
                self.counters.muted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(probe = %t.key.probe, state = t.state.as_str(), "muted alert not sent");
                continue;
            }
            let id = (t.key.clone(), t.alert);
            match t.state {
                AlertState::Firing => {
                    let starts = self
                        .firing
                        .get(&id)
                        .map_or(t.at_unix_ms, |f| f.starts_unix_ms);
                    to_alertmanager.push(payload::postable(
                        &t,
                        &self.config,
                        starts,
                        ends,
                        &self.generator_url,
                    ));
                    to_webhooks.push(payload::webhook_alert(&t, &self.config, starts));
                    if self.firing.len() >= MAX_FIRING_ALERTS && !self.firing.contains_key(&id) {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            limit = MAX_FIRING_ALERTS,
                            probe = %t.key.probe,
                            "too many firing alerts: this one is sent once, not resent"
                        );
                        continue;
                    }
                    self.firing.insert(
                        id,
                        Firing {
                            transition: t,
                            starts_unix_ms: starts,
                        },
                    );
                }
                AlertState::Resolved => {
                    let starts = self
                        .firing
                        .remove(&id)
                        .map_or(t.at_unix_ms, |f| f.starts_unix_ms);
                    to_alertmanager.push(payload::postable(
                        &t,
                        &self.config,
                        starts,
                        t.at_unix_ms,
                        &self.generator_url,
                    ));
                    to_webhooks.push(payload::webhook_alert(&t, &self.config, starts));
                }
            }
        }
        self.to_alertmanagers(&to_alertmanager);
        if !to_webhooks.is_empty() {
            for chunk in to_webhooks.chunks(MAX_BATCH_ALERTS) {
                let body = WebhookBody {
                    version: WEBHOOK_VERSION,
                    source: "meshkit-probe",
                    generator_url: self.generator_url.clone(),
                    alerts: chunk.to_vec(),
                };
                enqueue(&self.webhooks, &body, chunk.len(), &self.counters);
            }
        }
    }

    /// Every firing alert to every Alertmanager again, ending `ENDS_AFTER_RESENDS` periods
    /// ahead.
    fn resend(&self) {
        if self.firing.is_empty() || self.alertmanagers.is_empty() {
            return;
        }
        let ends = now_unix_ms() + self.ends_ahead_ms();
        let alerts: Vec<PostableAlert> = self
            .firing
            .values()
            .map(|f| {
                payload::postable(
                    &f.transition,
                    &self.config,
                    f.starts_unix_ms,
                    ends,
                    &self.generator_url,
                )
            })
            .collect();
        tracing::debug!(alerts = alerts.len(), "resending firing alerts");
        self.to_alertmanagers(&alerts);
    }

    fn to_alertmanagers(&self, alerts: &[PostableAlert]) {
        for chunk in alerts.chunks(MAX_BATCH_ALERTS) {
            enqueue(&self.alertmanagers, &chunk, chunk.len(), &self.counters);
        }
    }

    fn ends_ahead_ms(&self) -> i64 {
        let ahead = self.config.resend() * ENDS_AFTER_RESENDS;
        i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX / 2)
    }

    fn reconfigure(&mut self, new: AlertConfig) {
        if new == self.config {
            return;
        }
        // An alert whose labels change is another alert at Alertmanager: resolve the old one.
        let now = now_unix_ms();
        let stale: Vec<PostableAlert> = self
            .firing
            .values()
            .filter(|f| {
                payload::labels(&f.transition, &self.config) != payload::labels(&f.transition, &new)
            })
            .map(|f| {
                payload::postable(
                    &f.transition,
                    &self.config,
                    f.starts_unix_ms,
                    now,
                    &self.generator_url,
                )
            })
            .collect();
        let ca_changed = new.ca_certs() != self.config.ca_certs();
        let receivers_changed = ca_changed
            || new.alertmanager() != self.config.alertmanager()
            || new.webhooks() != self.config.webhooks()
            || new.timeout() != self.config.timeout()
            || new.retries() != self.config.retries();
        self.config = new;
        if ca_changed {
            self.client = http_client(&self.config);
        }
        if receivers_changed {
            // The old workers finish what they hold and end when their queues close.
            self.alertmanagers.clear();
            self.webhooks.clear();
            self.start_receivers();
        }
        tracing::info!(
            alertmanagers = self.alertmanagers.len(),
            webhooks = self.webhooks.len(),
            relabelled = stale.len(),
            "alert notifier reconfigured"
        );
        self.to_alertmanagers(&stale);
        self.resend();
    }
}

/// `body` as JSON to each of `receivers`' queues; a full queue drops it (its `alerts` counted).
fn enqueue<T: serde::Serialize + ?Sized>(
    receivers: &[Receiver],
    body: &T,
    alerts: usize,
    counters: &Counters,
) {
    if receivers.is_empty() || alerts == 0 {
        return;
    }
    let body = match serde_json::to_vec(body) {
        Ok(body) => Bytes::from(body),
        Err(error) => {
            // Maps of strings and strings: serializing cannot fail; counted if it ever does.
            tracing::error!(%error, "alert body not serialized");
            counters.failed.fetch_add(
                u64::try_from(alerts * receivers.len()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            return;
        }
    };
    let alerts = u64::try_from(alerts).unwrap_or(u64::MAX);
    for receiver in receivers {
        let job = Job {
            body: body.clone(),
            alerts,
        };
        if receiver.queue.try_send(job).is_err() {
            counters.dropped.fetch_add(alerts, Ordering::Relaxed);
            tracing::warn!(
                url = %receiver.url,
                alerts,
                "receiver queue full: alerts dropped (the receiver is slow or down)"
            );
        }
    }
}

/// One receiver's worker: each job POSTed in order, retried with backoff.
async fn deliver(
    client: HttpClient,
    url: String,
    mut jobs: mpsc::Receiver<Job>,
    timeout: Duration,
    retries: u32,
    counters: Arc<Counters>,
) {
    while let Some(job) = jobs.recv().await {
        let mut attempt = 0u32;
        loop {
            match post(&client, &url, job.body.clone(), timeout).await {
                Ok(()) => {
                    counters.sent.fetch_add(job.alerts, Ordering::Relaxed);
                    tracing::debug!(%url, alerts = job.alerts, "alerts delivered");
                    break;
                }
                Err(error) if error.is_final() || attempt >= retries => {
                    counters.failed.fetch_add(job.alerts, Ordering::Relaxed);
                    tracing::warn!(%url, %error, attempts = attempt + 1, alerts = job.alerts, "alerts not delivered");
                    break;
                }
                Err(error) => {
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff(attempt);
                    tracing::debug!(%url, %error, ?wait, "alert delivery failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// The wait after the `attempt`-th failure (0-based).
fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF)
}

/// Why one POST failed.
#[derive(Debug, Error)]
#[non_exhaustive]
enum PostError {
    /// No answer within the timeout (connect included). Retried.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The URL could not be made a request (the config checked it; kept for honesty).
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
    /// Connect or exchange failed. Retried.
    #[error("{0}")]
    Exchange(#[from] hyper_util::client::legacy::Error),
    /// The receiver answered with an error status; 4xx but 408/429 is final.
    #[error("answered {status}: {body}")]
    Status {
        /// The status.
        status: http::StatusCode,
        /// The start of its body.
        body: String,
    },
}

impl PostError {
    /// Whether retrying cannot help.
    fn is_final(&self) -> bool {
        match self {
            Self::Request(_) => true,
            Self::Status { status, .. } => {
                status.is_client_error()
                    && *status != http::StatusCode::REQUEST_TIMEOUT
                    && *status != http::StatusCode::TOO_MANY_REQUESTS
            }
            Self::Timeout(_) | Self::Exchange(_) => false,
        }
    }
}

/// POSTs `body` (JSON) to `url`; Ok for a 2xx answer.
async fn post(
    client: &HttpClient,
    url: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<(), PostError> {
    let request = http::Request::post(url)
        .header(CONTENT_TYPE, "application/json")
        .header(
            USER_AGENT,
            concat!("meshkit-probe/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))?;
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            Err(PostError::Status {
                status,
                body: answer.chars().take(200).collect(),
            })
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(PostError::Timeout(timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_bounded() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
