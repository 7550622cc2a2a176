//! Alerts from probe state changes: maintenance windows, Alertmanager's API v2 and plain
//! webhooks.
//!
//! Data runs one way:
//!
//! ```text
//! StateChange ──> AlertEngine ──> AlertTransition ──> Notifier ──> Alertmanager (POST /api/v2/alerts)
//!   (the core's      (pure: thresholds      │             (tokio task:  └──> webhooks (JSON, docs/probes.md)
//!    scheduler)       are the core's,       └──> history   resend, retries)
//!                     windows mute)
//! ```
//!
//! - [`config`]: `[alerting]` and its validation (every error names the key);
//! - [`maintenance`]: one-off and weekly windows and the probes they cover;
//! - [`engine`]: [`AlertEngine`], which alert fires or resolves when (no I/O, time passed in);
//! - [`notifier`]: [`Notifier`], which sends them and keeps firing ones alive at Alertmanager;
//! - [`payload`]: the JSON sent (Alertmanager's `postableAlert`, the webhook's own body);
//! - [`transport`]: TCP, or TLS with the CA of `alerting.ca`, under hyper-util's client.
//!
//! Rules that hold across the parts:
//!
//! - **No agent identity in an alert's labels.** Labels are `alertname`, `cluster`,
//!   `namespace`, `group`, `probe`, `kind`, `target`, `severity` and the configured static
//!   labels: every agent of a fleet that sees the same probe fail sends the same label set,
//!   Alertmanager holds one alert and notifies once. The agent shows only in `generatorURL`.
//! - **Muted alerts are recorded, never sent.** The engine marks them, the notifier skips them.
//! - **Nothing blocks the agent.** [`Notifier::send`] queues (bounded) or drops and counts.

pub mod config;
pub mod engine;
pub mod maintenance;
pub mod notifier;
pub mod payload;
pub mod transport;

pub use config::{AlertConfig, RawAlertConfig};
pub use engine::AlertEngine;
pub use maintenance::{MaintenanceWindow, RawMaintenanceWindow, Schedule};
pub use notifier::{Notifier, NotifierStats, spawn_notifier};
