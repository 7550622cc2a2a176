//! [`HistoryWriter`]: the one writer of the history, on a thread of its own.
//!
//! The agent's tasks call [`HistoryWriter::run`] and [`HistoryWriter::alert`] from async code;
//! SQLite is blocking, so the connection lives on a std thread fed by a bounded channel. A full
//! channel drops the record and counts it: the agent's cadence never waits for a disk. The
//! thread batches what queued up into one transaction, writes a heartbeat every
//! [`WriterOptions::heartbeat_every`] (the reports' evidence that the agent was alive) and
//! prunes past the retention every [`WriterOptions::prune_every`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use meshkit::Duration;

use super::{History, HistoryConfig, HistoryError, MAX_BATCH_RECORDS};
use crate::record::{AlertTransition, RunRecord, now_unix_ms};

/// How many records wait for the writer before new ones are dropped: about 16 s of 1,000
/// probes a second, longer than any fsync stall worth waiting out.
pub const WRITER_QUEUE_CAPACITY: usize = 16_384;
/// How often the writer records that the agent is alive; the reports call a gap of more than
/// two of these agent downtime.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(60);
/// How often rows past the retention are deleted.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How the writer runs; [`Default`] is what the agent uses. Tests shorten the periods and the
/// queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Queue capacity, in records (at least 1).
    pub capacity: usize,
    /// Heartbeat period.
    pub heartbeat_every: Duration,
    /// Prune period.
    pub prune_every: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            capacity: WRITER_QUEUE_CAPACITY,
            heartbeat_every: HEARTBEAT_EVERY,
            prune_every: PRUNE_EVERY,
        }
    }
}

/// What the writer did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Records (runs and alerts) stored.
    pub written: u64,
    /// Records not stored: the queue was full, the writer was closed, or their batch failed.
    pub dropped: u64,
    /// Database operations that failed (a batch, a heartbeat, a prune); each is logged.
    pub errors: u64,
    /// Rows deleted by the retention.
    pub pruned: u64,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    pruned: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

#[derive(Debug)]
enum Message {
    Run(RunRecord),
    Alert(AlertTransition),
    Retention(Duration),
    /// Write what is queued, then answer.
    Flush(SyncSender<()>),
    /// Write what is queued, a last heartbeat, and stop.
    Close,
}

/// The handle of the history's writer thread. `Send + Sync`: share it with an `Arc`. Dropping
/// the last handle stops the thread after it wrote what was queued; [`close`](Self::close)
/// also waits for that.
#[derive(Debug)]
pub struct HistoryWriter {
    tx: SyncSender<Message>,
    counters: Arc<Counters>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Opens the history of `config` and starts its writer with the default options; heartbeats
/// carry `agent`.
///
/// # Errors
///
/// The database cannot be opened ([`HistoryError::Open`], [`HistoryError::NewerSchema`]) or the
/// thread not started ([`HistoryError::Spawn`]): the agent should not start without its history.
pub fn spawn_writer(config: &HistoryConfig, agent: &str) -> Result<HistoryWriter, HistoryError> {
    spawn_writer_with(config, agent, WriterOptions::default())
}

/// [`spawn_writer`] with explicit options.
///
/// # Errors
///
/// As [`spawn_writer`].
pub fn spawn_writer_with(
    config: &HistoryConfig,
    agent: &str,
    options: WriterOptions,
) -> Result<HistoryWriter, HistoryError> {
    // Opened here, not on the thread, so a bad path is the caller's error at start.
    let history = History::open(&config.path)?;
    let (tx, rx) = sync_channel(options.capacity.max(1));
    let counters = Arc::new(Counters::default());
    let state = WriterThread {
        history,
        rx,
        counters: Arc::clone(&counters),
        agent: agent.to_owned(),
        retention: config.retention,
        options,
    };
    let thread = std::thread::Builder::new()
        .name("probe-history".into())
        .spawn(move || state.run())
        .map_err(HistoryError::Spawn)?;
    Ok(HistoryWriter {
        tx,
        counters,
        thread: Mutex::new(Some(thread)),
    })
}

impl HistoryWriter {
    /// Queues a run; never blocks. Dropped and counted when the queue is full or the writer
    /// closed.
    pub fn run(&self, run: RunRecord) {
        self.offer(Message::Run(run));
    }

    /// Queues an alert transition; never blocks (same rule as [`run`](Self::run)).
    pub fn alert(&self, alert: AlertTransition) {
        self.offer(Message::Alert(alert));
    }

    /// Changes the retention (a config reload); applied at the next prune, which this triggers.
    pub fn set_retention(&self, retention: Duration) {
        // A control message, but still never blocking: lost only if the queue is full, and
        // then the next reload or restart applies it.
        if self.tx.try_send(Message::Retention(retention)).is_err() {
            tracing::warn!("history: queue full, retention change not applied");
        }
    }

    /// What the writer did so far.
    pub fn stats(&self) -> HistoryStats {
        HistoryStats {
            written: self.counters.written.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            errors: self.counters.errors.load(Ordering::Relaxed),
            pruned: self.counters.pruned.load(Ordering::Relaxed),
        }
    }

    /// Waits until everything queued before this call is written. Blocks (a test's or a
    /// shutdown's call, not the agent's hot path).
    pub fn flush(&self) {
        let (ack_tx, ack_rx) = sync_channel(1);
        if self.tx.send(Message::Flush(ack_tx)).is_ok() {
            // An error means the thread is gone; nothing left to wait for.
            let _ = ack_rx.recv();
        }
    }

    /// Writes what is queued, a last heartbeat, and stops the thread; waits for it. Later
    /// records are dropped and counted. Idempotent.
    pub fn close(&self) -> HistoryStats {
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // Blocking send: closing may wait for room; an error means the thread is gone.
            let _ = self.tx.send(Message::Close);
            if thread.join().is_err() {
                tracing::error!("history: the writer thread panicked");
            }
        }
        self.stats()
    }

    fn offer(&self, message: Message) {
        match self.tx.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                Counters::add(&self.counters.dropped, 1);
            }
        }
    }
}

struct WriterThread {
    history: History,
    rx: Receiver<Message>,
    counters: Arc<Counters>,
    agent: String,
    retention: Duration,
    options: WriterOptions,
}

impl WriterThread {
    fn run(mut self) {
        let start = Instant::now();
        let mut next_heartbeat = start;
        let mut next_prune = start;
        let mut runs = Vec::new();
        let mut alerts = Vec::new();
        let mut acks = Vec::new();
        loop {
            let now = Instant::now();
            if now >= next_heartbeat {
                self.heartbeat();
                next_heartbeat = now + self.options.heartbeat_every;
            }
            if now >= next_prune {
                self.prune();
                next_prune = now + self.options.prune_every;
            }
            let wait = next_heartbeat
                .min(next_prune)
                .saturating_duration_since(Instant::now());
            let mut closing = false;
            let first = match self.rx.recv_timeout(wait) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    // Every handle is gone: nothing more can arrive.
                    self.heartbeat();
                    return;
                }
            };
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(message) = next.take() {
                taken += 1;
                match message {
                    Message::Run(run) => runs.push(run),
                    Message::Alert(alert) => alerts.push(alert),
                    Message::Retention(retention) => {
                        // At once, not at the next turn of the loop: a flush queued after it
                        // then sees the prune done.
                        self.retention = retention;
                        self.prune();
                        next_prune = Instant::now() + self.options.prune_every;
                    }
                    Message::Flush(ack) => acks.push(ack),
                    Message::Close => closing = true,
                }
                if closing || taken >= MAX_BATCH_RECORDS {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            self.write(&mut runs, &mut alerts);
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
            if closing {
                self.heartbeat();
                return;
            }
        }
    }

    fn write(&mut self, runs: &mut Vec<RunRecord>, alerts: &mut Vec<AlertTransition>) {
        if !runs.is_empty() {
            match self.history.record_runs(runs) {
                Ok(n) => Counters::add(&self.counters.written, n),
                Err(error) => {
                    Counters::add(&self.counters.errors, 1);
                    Counters::add(&self.counters.dropped, runs.len());
                    tracing::warn!(%error, runs = runs.len(), "history: a batch of runs was lost");
                }
            }
            runs.clear();
        }
        if !alerts.is_empty() {
            match self.history.record_alerts(alerts) {
                Ok(n) => Counters::add(&self.counters.written, n),
                Err(error) => {
                    Counters::add(&self.counters.errors, 1);
                    Counters::add(&self.counters.dropped, alerts.len());
                    tracing::warn!(%error, alerts = alerts.len(), "history: alert transitions were lost");
                }
            }
            alerts.clear();
        }
    }

    fn heartbeat(&mut self) {
        if let Err(error) = self.history.record_heartbeat(&self.agent, now_unix_ms()) {
            Counters::add(&self.counters.errors, 1);
            tracing::warn!(%error, "history: heartbeat not recorded");
        }
    }

    fn prune(&mut self) {
        let retention_ms = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let before = now_unix_ms().saturating_sub(retention_ms);
        match self.history.prune(before) {
            Ok(counts) => {
                let rows = counts.runs + counts.alerts + counts.heartbeats;
                self.counters.pruned.fetch_add(rows, Ordering::Relaxed);
                if rows > 0 {
                    tracing::debug!(?counts, before, "history: pruned past the retention");
                }
            }
            Err(error) => {
                Counters::add(&self.counters.errors, 1);
                tracing::warn!(%error, "history: prune failed; retried next period");
            }
        }
    }
}
