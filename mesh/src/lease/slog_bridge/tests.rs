//! The bridge is what makes raft-rs's log visible at all: its records must arrive as `tracing`
//! events of target `meshkit::raft`, at the matching level, with their key-values, and only
//! when that level is enabled.

use std::sync::{Arc, Mutex};

use slog::{Drain as _, Level, Record, b, o, record_static};
use tracing::span;

use super::*;

/// One event as a subscriber saw it: target, level, message.
type Seen = (String, tracing::Level, String);

/// A subscriber that records every event up to `max` (no spans are used here).
struct Capture {
    max: tracing::Level,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::from_level(self.max))
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let metadata = event.metadata();
        self.seen.lock().unwrap().push((
            metadata.target().to_owned(),
            *metadata.level(),
            message.0,
        ));
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

/// Sends one record of each slog level through the drain, with a subscriber enabled up to
/// `max`, and returns what it saw.
fn forward_each_level(max: tracing::Level) -> Vec<Seen> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let subscriber = Capture {
        max,
        seen: Arc::clone(&seen),
    };
    tracing::subscriber::with_default(subscriber, || {
        let values = o!("raft_id" => 3);
        let values = OwnedKVList::from(values);
        // Records built by hand: slog's macros compile `trace!` (and in release `debug!`) out.
        macro_rules! log_at {
            ($level:expr, $msg:expr) => {{
                static RS: slog::RecordStatic<'static> = record_static!($level, "");
                TracingDrain
                    .log(&Record::new(&RS, &format_args!($msg), b!("term" => 7)), &values)
                    .unwrap();
            }};
        }
        log_at!(Level::Critical, "critical");
        log_at!(Level::Error, "error");
        log_at!(Level::Warning, "warning");
        log_at!(Level::Info, "info");
        log_at!(Level::Debug, "debug");
        log_at!(Level::Trace, "trace");
    });
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

#[test]
fn each_slog_level_arrives_at_its_tracing_level_with_its_key_values() {
    let seen = forward_each_level(tracing::Level::TRACE);
    let expected = [
        (tracing::Level::ERROR, "critical"),
        (tracing::Level::ERROR, "error"),
        (tracing::Level::WARN, "warning"),
        (tracing::Level::INFO, "info"),
        (tracing::Level::DEBUG, "debug"),
        (tracing::Level::TRACE, "trace"),
    ];
    assert_eq!(seen.len(), expected.len(), "{seen:?}");
    for ((target, level, message), (want_level, want_message)) in seen.iter().zip(expected) {
        assert_eq!(target, "meshkit::raft");
        assert_eq!(*level, want_level, "{message}");
        // The record's own key-values, then the logger's.
        assert_eq!(*message, format!("{want_message} term=7 raft_id=3"));
    }
}

#[test]
fn records_below_the_enabled_level_are_not_forwarded() {
    let seen = forward_each_level(tracing::Level::WARN);
    let messages: Vec<&str> = seen.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(
        messages,
        [
            "critical term=7 raft_id=3",
            "error term=7 raft_id=3",
            "warning term=7 raft_id=3"
        ]
    );
}

/// The logger raft-rs gets is this drain: a record logged through it arrives too.
#[test]
fn the_logger_handed_to_raft_forwards() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let subscriber = Capture {
        max: tracing::Level::INFO,
        seen: Arc::clone(&seen),
    };
    tracing::subscriber::with_default(subscriber, || {
        let log = logger().new(o!("raft_id" => 1));
        slog::info!(log, "became leader"; "term" => 2);
    });
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        [(
            "meshkit::raft".to_owned(),
            tracing::Level::INFO,
            "became leader term=2 raft_id=1".to_owned()
        )]
    );
}
