//! raft-rs logs through `slog`; this drain forwards its records to `tracing` events (target
//! `meshkit::raft`), so one subscriber sees the whole core. Key-values are formatted only when
//! the event's level is enabled.

use core::fmt::{self, Write as _};

use slog::{Drain, KV, Level, OwnedKVList, Record, Serializer};

/// A `slog::Drain` that emits every record as a `tracing` event.
pub(crate) struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        macro_rules! forward {
            ($level:expr, $mac:ident) => {
                if tracing::enabled!(target: "meshkit::raft", $level) {
                    let mut kv = KvText(String::new());
                    let _ = record.kv().serialize(record, &mut kv);
                    let _ = values.serialize(record, &mut kv);
                    tracing::$mac!(target: "meshkit::raft", "{}{}", record.msg(), kv.0);
                }
            };
        }
        match record.level() {
            Level::Critical | Level::Error => forward!(tracing::Level::ERROR, error),
            Level::Warning => forward!(tracing::Level::WARN, warn),
            Level::Info => forward!(tracing::Level::INFO, info),
            Level::Debug => forward!(tracing::Level::DEBUG, debug),
            Level::Trace => forward!(tracing::Level::TRACE, trace),
        }
        Ok(())
    }
}

/// Collects `key=value` pairs as text.
struct KvText(String);

impl Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

/// The logger handed to raft-rs.
pub(crate) fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}

#[cfg(test)]
mod tests;
