//! Where every record goes besides the metrics: the history (every run and every alert
//! transition) and the alerts (state changes through the [`AlertEngine`], its transitions to
//! the [`Notifier`]).
//!
//! Nothing here blocks the fan-out: the history's writer and the notifier queue and count
//! what their full queues refuse; the engine is pure and answers at once.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::alert::{AlertEngine, Notifier, spawn_notifier};
use crate::config::Config;
use crate::history::{HistoryWriter, spawn_writer};
use crate::metrics::Metrics;
use crate::record::{AlertTransition, ProbeKey, RunRecord, StateChange};

use super::AgentError;

/// The history writer, the alert engine and the notifier of one agent.
#[derive(Debug)]
pub(crate) struct Outputs {
    history: Arc<HistoryWriter>,
    engine: Mutex<AlertEngine>,
    notifier: Notifier,
}

impl Outputs {
    /// Opens the history of `config` and starts the notifier; `generator_url` is the agent's
    /// own endpoint, in every alert.
    pub(crate) fn start(config: &Config, generator_url: &str) -> Result<Self, AgentError> {
        let history = spawn_writer(&config.history, &config.agent.name)?;
        Ok(Self {
            history: Arc::new(history),
            engine: Mutex::new(AlertEngine::new(&config.alerting)),
            notifier: spawn_notifier(&config.alerting, generator_url),
        })
    }

    fn engine(&self) -> MutexGuard<'_, AlertEngine> {
        // The engine is pure and does not panic; a poisoned lock still holds whole state.
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn transitions(&self, transitions: Vec<AlertTransition>) {
        for t in transitions {
            if t.muted {
                tracing::info!(probe = %t.key.probe, state = t.state.as_str(), reason = %t.reason, "alert muted by a maintenance window");
            } else {
                tracing::warn!(probe = %t.key.probe, state = t.state.as_str(), reason = %t.reason, "alert");
            }
            self.history.alert(t.clone());
            self.notifier.send(t);
        }
    }

    /// One finished run: to the history.
    pub(crate) fn run(&self, record: &RunRecord) {
        self.history.run(record.clone());
    }

    /// One state change: to the alert engine, its transitions to the notifier and history.
    pub(crate) fn state(&self, change: &StateChange) {
        let transitions = self.engine().on_state(change);
        self.transitions(transitions);
    }

    /// Time passed (about once a second): maintenance windows that ended.
    pub(crate) fn tick(&self, now_unix_ms: i64) {
        let transitions = self.engine().tick(now_unix_ms);
        self.transitions(transitions);
    }

    /// A probe left the configuration: its alert resolves.
    pub(crate) fn removed(&self, key: &ProbeKey, now_unix_ms: i64) {
        let transition = self.engine().forget(key, now_unix_ms);
        self.transitions(transition.into_iter().collect());
    }

    /// A reload: the engine's windows, the notifier's receivers, the history's retention.
    pub(crate) fn reconfigure(&self, config: &Config) {
        self.engine().reconfigure(&config.alerting);
        self.notifier.reconfigure(config.alerting.clone());
        self.history.set_retention(config.history.retention);
    }

    /// Writes what the history and the notifier did into `metrics`.
    pub(crate) fn report(&self, metrics: &Metrics) {
        let h = self.history.stats();
        metrics.set_sink("history", "written", h.written);
        metrics.set_sink("history", "dropped", h.dropped);
        metrics.set_sink("history", "failed", h.errors);
        metrics.set_sink("history", "pruned", h.pruned);
        let n = self.notifier.stats();
        metrics.set_sink("notifier", "sent", n.sent);
        metrics.set_sink("notifier", "failed", n.failed);
        metrics.set_sink("notifier", "dropped", n.dropped);
        metrics.set_sink("notifier", "muted", n.muted);
        metrics.set_sink("notifier", "retries", n.retries);
    }

    /// Delivers what is queued to the receivers and the database, then stops both.
    pub(crate) async fn close(self) {
        self.notifier.close().await;
        let history = self.history;
        // The writer's close joins its thread: off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || history.close()).await;
    }
}
