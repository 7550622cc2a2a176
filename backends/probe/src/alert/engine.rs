//! [`AlertEngine`]: probe state changes in, alert transitions out. Pure: no I/O, no clock (time
//! comes in with each change and each [`AlertEngine::tick`]).
//!
//! The thresholds are the core scheduler's, not the engine's: a probe's state turns Failing
//! after `failure_threshold` failures in a row and Healthy after `success_threshold` passes,
//! and the engine follows those changes:
//!
//! | the probe turns | the alert |
//! | --- | --- |
//! | Failing | `MeshKitProbeFailing` fires |
//! | Degraded, the group has `alert_on_latency` | `MeshKitProbeSlow` fires |
//! | Degraded, without `alert_on_latency` | a firing alert resolves (a Failing probe passing again, slowly) |
//! | Healthy (or Unknown: re-registered) | a firing alert resolves |
//!
//! A probe has at most one alert at a time: a change from one to the other resolves the first
//! and fires the second (two transitions from one change).
//!
//! Maintenance: an alert that fires while a window covers its probe is **muted**: the
//! transition says `muted = true` (the history records it, the notifier does not send it), and
//! so does its resolution. A window ending while the alert still fires makes
//! [`tick`](AlertEngine::tick) fire it again, unmuted, at that moment. An alert already sent
//! when a window begins stays sent (the window mutes what planned work raises, not an incident
//! that was already open) and resolves as usual.

use std::collections::BTreeMap;

use meshkit::diag::probe::ProbeState;

use super::config::AlertConfig;
use super::maintenance::MaintenanceWindow;
use crate::record::{AlertName, AlertState, AlertTransition, ProbeKey, StateChange};

/// The alert engine of one agent. See the [module documentation](self) for its rules.
///
/// Driving: feed every [`StateChange`] to [`on_state`](Self::on_state), call
/// [`tick`](Self::tick) about once a second (windows end between state changes), hand every
/// transition returned to the notifier and the history. [`forget`](Self::forget) a probe
/// removed from the configuration; [`reconfigure`](Self::reconfigure) on a reload.
#[derive(Clone, Debug, Default)]
pub struct AlertEngine {
    windows: Vec<MaintenanceWindow>,
    active: BTreeMap<ProbeKey, Active>,
}

/// One firing alert.
#[derive(Clone, Debug)]
struct Active {
    alert: AlertName,
    kind: String,
    target: String,
    /// When it fired (the first time, if it was muted then).
    since_unix_ms: i64,
    /// Why it fired, without the maintenance note.
    cause: String,
    /// The reason of the window that muted it, while it is muted.
    muted_by: Option<String>,
}

impl AlertEngine {
    /// An engine with `config`'s maintenance windows and no alert firing.
    pub fn new(config: &AlertConfig) -> Self {
        Self {
            windows: config.maintenance().to_vec(),
            active: BTreeMap::new(),
        }
    }

    /// Takes `config`'s maintenance windows. New alerts follow them at once; a muted alert
    /// whose window is gone fires at the next [`tick`](Self::tick). Firing alerts stay.
    pub fn reconfigure(&mut self, config: &AlertConfig) {
        self.windows = config.maintenance().to_vec();
    }

    /// The transitions `change` causes: none, one, or two (one alert resolved, the other
    /// fired), in that order.
    pub fn on_state(&mut self, change: &StateChange) -> Vec<AlertTransition> {
        let wanted = match change.to {
            ProbeState::Failing => Some(AlertName::Failing),
            ProbeState::Degraded if change.alert_on_latency => Some(AlertName::Slow),
            ProbeState::Degraded | ProbeState::Healthy | ProbeState::Unknown => None,
        };
        let current = self.active.get(&change.key).map(|a| a.alert);
        if current == wanted {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(2);
        if let Some(old) = self.active.remove(&change.key) {
            let why = match change.to {
                ProbeState::Healthy => "healthy again: passing within its thresholds".to_owned(),
                ProbeState::Degraded if wanted.is_some() => {
                    "no longer failing: passing, slowly".to_owned()
                }
                ProbeState::Degraded => {
                    "passing again (slower than its latency threshold)".to_owned()
                }
                ProbeState::Unknown => "state unknown: the probe was registered again".to_owned(),
                ProbeState::Failing => "failing now, no longer only slow".to_owned(),
            };
            out.push(Self::resolved(&change.key, old, change.at_unix_ms, why));
        }
        if let Some(alert) = wanted {
            let cause = match alert {
                AlertName::Failing => change.last_error.clone().map_or_else(
                    || "failed failure_threshold times in a row".to_owned(),
                    |e| format!("failed failure_threshold times in a row; last: {e}"),
                ),
                AlertName::Slow => "passing slower than its latency threshold".to_owned(),
            };
            let muted_by = self
                .window(&change.key, change.at_unix_ms)
                .map(|w| w.reason().to_owned());
            let active = Active {
                alert,
                kind: change.kind.clone(),
                target: change.target.clone(),
                since_unix_ms: change.at_unix_ms,
                cause,
                muted_by,
            };
            out.push(Self::fired(&change.key, &active, change.at_unix_ms, None));
            self.active.insert(change.key.clone(), active);
        }
        out
    }

    /// Time has passed: every muted alert whose window has ended (or was removed by
    /// [`reconfigure`](Self::reconfigure)) while it still fires fires again at `now_unix_ms`,
    /// unmuted.
    pub fn tick(&mut self, now_unix_ms: i64) -> Vec<AlertTransition> {
        let mut out = Vec::new();
        let windows = &self.windows;
        for (key, active) in &mut self.active {
            let Some(window) = active.muted_by.take() else {
                continue;
            };
            if let Some(still) = windows.iter().find(|w| w.covers(key, now_unix_ms)) {
                active.muted_by = Some(still.reason().to_owned());
                continue;
            }
            let note = format!("maintenance ({window}) ended while still firing");
            out.push(Self::fired(key, active, now_unix_ms, Some(&note)));
        }
        out
    }

    /// `key` was removed from the configuration: its alert, if one fires, resolves at
    /// `now_unix_ms`.
    pub fn forget(&mut self, key: &ProbeKey, now_unix_ms: i64) -> Option<AlertTransition> {
        let old = self.active.remove(key)?;
        Some(Self::resolved(
            key,
            old,
            now_unix_ms,
            "the probe was removed from the configuration".to_owned(),
        ))
    }

    /// The alerts firing now, each as the transition that fired it (`muted` as it is now), in
    /// probe order.
    pub fn firing(&self) -> Vec<AlertTransition> {
        self.active
            .iter()
            .map(|(key, active)| Self::fired(key, active, active.since_unix_ms, None))
            .collect()
    }

    /// The first window covering `key` at `now_unix_ms`.
    pub fn window(&self, key: &ProbeKey, now_unix_ms: i64) -> Option<&MaintenanceWindow> {
        self.windows.iter().find(|w| w.covers(key, now_unix_ms))
    }

    fn fired(
        key: &ProbeKey,
        active: &Active,
        at_unix_ms: i64,
        note: Option<&str>,
    ) -> AlertTransition {
        let mut reason = active.cause.clone();
        if let Some(note) = note {
            reason = format!("{note}: {reason}");
        }
        if let Some(window) = &active.muted_by {
            reason.push_str(&format!(" (muted: maintenance: {window})"));
        }
        AlertTransition {
            key: key.clone(),
            alert: active.alert,
            kind: active.kind.clone(),
            target: active.target.clone(),
            state: AlertState::Firing,
            at_unix_ms,
            muted: active.muted_by.is_some(),
            reason,
        }
    }

    fn resolved(key: &ProbeKey, old: Active, at_unix_ms: i64, why: String) -> AlertTransition {
        let muted = old.muted_by.is_some();
        let reason = match old.muted_by {
            Some(window) => format!("{why} (muted: maintenance: {window})"),
            None => why,
        };
        AlertTransition {
            key: key.clone(),
            alert: old.alert,
            kind: old.kind,
            target: old.target,
            state: AlertState::Resolved,
            at_unix_ms,
            muted,
            reason,
        }
    }
}
