//! The watch probes: a long-lived subscription to the leadership or shard feed, checked for
//! being alive beyond "connected".
//!
//! Each probe keeps one stream open in a task of its own (started by its first run, stopped when
//! the probe is removed) and reconnects on purpose every `resume_every`, resuming after the last
//! event it saw. The task records what the stream shows; a run judges the record and passes
//! when, since the last run:
//!
//! * the stream is connected (a connect error or a non-200 answer is the run's failure);
//! * a heartbeat (the node's keep-alive comment) or an event arrived within
//!   `heartbeat + tolerance` (a stalled stream fails even though its connection stays open);
//! * live events are fresh: an event that arrives once the backlog is through was recorded by
//!   the node at most `tolerance` before it arrived (both clocks are wall clocks);
//! * resuming lost nothing and repeated nothing: every event id (`<node>:<seq>`) is above the
//!   last one seen, the leadership feed's numbers follow each other without a gap (the shard
//!   feed is a filtered view, so only order is checked there), and the node sent no `reset`
//!   (its way of saying events were dropped).
//!
//! Over SSE the resume point is sent as `?after=<seq>` (the node treats it as `Last-Event-ID`);
//! over gRPC as `WatchLeadershipRequest { after_seq, node }`.
//!
//! Over gRPC (`WatchLeadership`, `WatchShards` on the observer client's
//! [`grpc_channel`](meshkit_client::Client::grpc_channel), HTTP/2 over TLS) the keep-alive is
//! the node's `Heartbeat` message (seq 0, not a feed entry), which also names the last entry
//! the stream covered: on the leadership feed a heartbeat covering more than the agent saw
//! means events were lost, one covering less that the node and the agent disagree. The node's
//! `OUT_OF_RANGE` (the resume point is no longer held) and `RESOURCE_EXHAUSTED` (the agent fell
//! behind and events were dropped) play the part of the SSE `reset`: each is a problem, and the
//! first starts the next connection afresh.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use meshkit_api::alpn::HttpProtocol;
use meshkit_api::grpc::proto::{LeadershipChange, LeadershipEvent, WatchLeadershipRequest};
use meshkit_api::json::FeedEntry;
use meshkit_client::grpc::ControlClient;
use meshkit_runtime::probe_host::{AsyncProbe, CheckFuture};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Clients, RunNote, fail, quote};
use crate::config::{WatchOptions, WatchStream};
use crate::record::now_unix_ms;

/// The most bytes of one SSE record held while it is incomplete.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// The most problems kept between two runs (the first ones tell the story).
pub const MAX_PROBLEMS: usize = 8;
/// How long after a (re)connect arriving events count as backlog, not live.
pub const BACKLOG_GRACE: Duration = Duration::from_secs(1);
/// The wait before dialling again after a failed connect.
pub const REDIAL_DELAY: Duration = Duration::from_millis(500);

/// How the stream is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Server-sent events over HTTP/2 (or HTTP/1.1).
    Sse,
    /// gRPC server streaming.
    Grpc,
}

impl Via {
    /// Its name in probe names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::Grpc => "grpc",
        }
    }
}

/// What the stream task saw, read and reset by each run.
#[derive(Debug, Default)]
struct Seen {
    /// When the current connection was made; `None` while disconnected.
    connected_at: Option<Instant>,
    /// Why the last connect failed or the stream ended.
    down_reason: Option<String>,
    /// The last heartbeat or event.
    last_activity: Option<Instant>,
    /// The last event id: node and sequence number.
    last_id: Option<(u64, u64)>,
    /// Problems since the last run.
    problems: Vec<String>,
    /// Deliberate reconnects made.
    resumes: u64,
}

impl Seen {
    fn problem(&mut self, what: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(what);
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    seen: Mutex<Seen>,
    /// Wakes the task for a deliberate reconnect.
    reconnect: Notify,
}

impl Shared {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Nothing panics while holding it.
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Aborts the stream task when the probe is dropped (removed from the host).
#[derive(Debug)]
struct TaskGuard(tokio::task::AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One stream of one node, over one protocol.
#[derive(Debug)]
pub struct WatchProbe {
    clients: Arc<Clients>,
    target: Arc<str>,
    stream: WatchStream,
    via: Via,
    options: Arc<WatchOptions>,
    note: Arc<RunNote>,
    shared: Arc<Shared>,
    task: OnceLock<TaskGuard>,
}

impl WatchProbe {
    /// The probe of `stream` on `target` over `via`.
    pub fn new(
        clients: Arc<Clients>,
        target: &str,
        stream: WatchStream,
        via: Via,
        options: WatchOptions,
        note: Arc<RunNote>,
    ) -> Self {
        Self {
            clients,
            target: target.into(),
            stream,
            via,
            options: Arc::new(options),
            note,
            shared: Arc::default(),
            task: OnceLock::new(),
        }
    }

    fn start_task(&self) {
        self.task.get_or_init(|| {
            let run = StreamTask {
                clients: self.clients.clone(),
                target: self.target.clone(),
                stream: self.stream,
                via: self.via,
                options: self.options.clone(),
                note: self.note.clone(),
                shared: self.shared.clone(),
            };
            TaskGuard(tokio::spawn(run.run()).abort_handle())
        });
    }
}

impl AsyncProbe for WatchProbe {
    fn kind(&self) -> &str {
        "watch"
    }

    fn check(&self) -> CheckFuture {
        self.start_task();
        let shared = self.shared.clone();
        let options = self.options.clone();
        Box::pin(async move {
            // The first run waits for the first connection (the host's timeout bounds it).
            loop {
                {
                    let seen = shared.seen();
                    if seen.connected_at.is_some() || !seen.problems.is_empty() {
                        break;
                    }
                    if seen.down_reason.is_some() {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let now = Instant::now();
            let mut seen = shared.seen();
            let problems = std::mem::take(&mut seen.problems);
            if !problems.is_empty() {
                return Err(fail(problems.join("; ")));
            }
            let Some(connected_at) = seen.connected_at else {
                return Err(fail(format!(
                    "not connected: {}",
                    seen.down_reason.as_deref().unwrap_or("connecting")
                )));
            };
            let allowed = options.heartbeat + options.tolerance;
            let since = seen.last_activity.unwrap_or(connected_at).max(connected_at);
            let quiet = now.saturating_duration_since(since);
            if quiet > allowed {
                return Err(fail(format!(
                    "no heartbeat or event for {:.1} s (the node sends one every {:?}, \
                     tolerance {:?}): the stream is stalled",
                    quiet.as_secs_f64(),
                    options.heartbeat,
                    options.tolerance
                )));
            }
            if now.saturating_duration_since(connected_at) >= options.resume_every {
                // Resume on purpose; the events that follow show whether it lost or repeated.
                shared.reconnect.notify_one();
            }
            Ok(())
        })
    }
}

/// The task that holds the stream open.
struct StreamTask {
    clients: Arc<Clients>,
    target: Arc<str>,
    stream: WatchStream,
    via: Via,
    options: Arc<WatchOptions>,
    note: Arc<RunNote>,
    shared: Arc<Shared>,
}

/// How one connection ended.
enum Ended {
    /// The probe asked for a reconnect.
    OnPurpose,
    /// The stream failed or ended, saying why.
    Down(String),
}

impl StreamTask {
    async fn run(self) {
        loop {
            let ended = match self.via {
                Via::Sse => self.sse_once().await,
                Via::Grpc => self.grpc_once().await,
            };
            let down = {
                let mut seen = self.shared.seen();
                seen.connected_at = None;
                match ended {
                    Ended::OnPurpose => {
                        seen.resumes += 1;
                        false
                    }
                    Ended::Down(why) => {
                        seen.down_reason = Some(why);
                        true
                    }
                }
            };
            if down {
                tokio::time::sleep(REDIAL_DELAY).await;
            }
        }
    }

    fn connected(&self) -> Instant {
        let now = Instant::now();
        let mut seen = self.shared.seen();
        seen.connected_at = Some(now);
        seen.down_reason = None;
        seen.last_activity = Some(now);
        now
    }

    /// One SSE connection, from the last event seen, until it ends or a reconnect is asked.
    async fn sse_once(&self) -> Ended {
        let last = self.shared.seen().last_id;
        let path = match last {
            Some((_, seq)) => format!("{}?after={seq}", self.stream.path()),
            None => self.stream.path().to_owned(),
        };
        let mut response = match self.clients.observer.get_stream(&self.target, &path).await {
            Ok(r) => r,
            Err(e) => return Ended::Down(format!("GET {}: {e}", self.stream.path())),
        };
        self.note.set_protocol(response.protocol());
        if response.status() != 200 {
            let status = response.status();
            let body = match response.into_response().await {
                Ok(r) => quote(&r.body).to_owned(),
                Err(e) => e.to_string(),
            };
            return Ended::Down(format!(
                "GET {} answered {status}: {body}",
                self.stream.path()
            ));
        }
        let connected_at = self.connected();
        let mut buffer = String::new();
        loop {
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk,
                () = self.shared.reconnect.notified() => return Ended::OnPurpose,
            };
            let bytes = match chunk {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return Ended::Down("the node ended the stream".to_owned()),
                Err(e) => return Ended::Down(format!("the stream failed: {e}")),
            };
            buffer.push_str(&String::from_utf8_lossy(&bytes));
            // The SSE format allows CRLF; records end with a blank line.
            if buffer.contains('\r') {
                buffer = buffer.replace("\r\n", "\n");
            }
            while let Some(end) = buffer.find("\n\n") {
                let record: String = buffer.drain(..end + 2).collect();
                self.sse_record(&record, connected_at);
            }
            if buffer.len() > MAX_RECORD_BYTES {
                self.shared.seen().problem(format!(
                    "an SSE record longer than {MAX_RECORD_BYTES} bytes"
                ));
                return Ended::Down("an over-long SSE record".to_owned());
            }
        }
    }

    /// One complete SSE record: a keep-alive comment, an event or a reset.
    fn sse_record(&self, record: &str, connected_at: Instant) {
        let mut event = None;
        let mut id = None;
        let mut data = String::new();
        for line in record.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                event = Some(value.trim());
            } else if let Some(value) = line.strip_prefix("id:") {
                id = Some(value.trim());
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        let now = Instant::now();
        let mut seen = self.shared.seen();
        seen.last_activity = Some(now);
        if event == Some("reset") {
            seen.problem(format!("the node reset the stream: {}", quote(&data)));
            return;
        }
        let Some(id) = id else {
            // A keep-alive comment.
            return;
        };
        let parsed = id
            .split_once(':')
            .and_then(|(n, s)| Some((n.parse::<u64>().ok()?, s.parse::<u64>().ok()?)));
        let Some((node, seq)) = parsed else {
            seen.problem(format!("an event id that is not <node>:<seq>: {id:?}"));
            return;
        };
        let entry: Option<FeedEntry> = serde_json::from_str(&data).ok();
        if entry.is_none() {
            seen.problem(format!(
                "event {id}: the data is not a feed entry: {}",
                quote(&data)
            ));
        }
        drop(seen);
        self.event(node, seq, entry.map(|e| e.unix_ms), now, connected_at);
    }

    /// An event `node:seq` recorded at `unix_ms` by the node, arrived `now`.
    fn event(
        &self,
        node: u64,
        seq: u64,
        unix_ms: Option<u64>,
        now: Instant,
        connected_at: Instant,
    ) {
        let mut seen = self.shared.seen();
        on_event(
            &mut seen,
            self.stream,
            self.options.tolerance,
            Arrival {
                node,
                seq,
                unix_ms,
                now,
                connected_at,
            },
        );
    }

    /// One gRPC stream, from the last event seen, until it ends or a reconnect is asked.
    async fn grpc_once(&self) -> Ended {
        let last = self.shared.seen().last_id;
        let method = match self.stream {
            WatchStream::Leadership => "WatchLeadership",
            WatchStream::Shards => "WatchShards",
        };
        // Opening is bounded like a heartbeat's wait: the node answers the call at once.
        let bound = self.options.heartbeat + self.options.tolerance;
        let opened = tokio::time::timeout(bound, async {
            let channel = self
                .clients
                .observer
                .grpc_channel(&self.target)
                .await
                .map_err(|e| format!("gRPC connect: {e}"))?;
            let mut client = ControlClient::new(channel);
            let request = WatchLeadershipRequest {
                after_seq: last.map_or(0, |(_, seq)| seq),
                node: last.map_or(0, |(node, _)| node),
            };
            let answer = match self.stream {
                WatchStream::Leadership => client.watch_leadership(request).await,
                WatchStream::Shards => client.watch_shards(request).await,
            };
            answer.map_err(|status| self.status(method, &status))
        })
        .await;
        let mut events = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(why)) => return Ended::Down(why),
            Err(_) => return Ended::Down(format!("{method}: no answer within {bound:?}")),
        };
        // gRPC rides HTTP/2 (the channel refuses anything else).
        self.note.set_protocol(HttpProtocol::H2);
        let connected_at = self.connected();
        loop {
            let message = tokio::select! {
                message = events.message() => message,
                () = self.shared.reconnect.notified() => return Ended::OnPurpose,
            };
            match message {
                Ok(Some(event)) => self.grpc_event(&event, connected_at),
                Ok(None) => return Ended::Down(format!("the node ended {method}")),
                Err(status) => return Ended::Down(self.status(method, &status)),
            }
        }
    }

    /// Why a gRPC call or stream failed; the node's own ways of saying events were dropped
    /// are recorded as problems (see the module docs).
    fn status(&self, method: &str, status: &tonic::Status) -> String {
        let why = format!("{method}: {:?}: {}", status.code(), status.message());
        match status.code() {
            tonic::Code::OutOfRange => {
                let mut seen = self.shared.seen();
                seen.problem(format!("the node no longer holds the resume point: {why}"));
                // Start afresh: this resume point will never work again.
                seen.last_id = None;
            }
            tonic::Code::ResourceExhausted => {
                self.shared
                    .seen()
                    .problem(format!("the node dropped events for this stream: {why}"));
            }
            _ => {}
        }
        why
    }

    /// One message of a gRPC stream: a heartbeat or a feed entry.
    fn grpc_event(&self, event: &LeadershipEvent, connected_at: Instant) {
        let now = Instant::now();
        let mut seen = self.shared.seen();
        seen.last_activity = Some(now);
        match &event.change {
            Some(LeadershipChange::Heartbeat(beat)) => {
                on_heartbeat(&mut seen, self.stream, event.node, beat.last_seq);
            }
            // An entry of a kind this build does not know is an entry all the same.
            _ if event.seq != 0 => {
                drop(seen);
                self.event(
                    event.node,
                    event.seq,
                    Some(event.unix_ms),
                    now,
                    connected_at,
                );
            }
            // Seq 0 without a known change: a newer node's keep-alive of another form.
            _ => {}
        }
    }
}

/// One feed entry as it arrived.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    /// Its node and number.
    node: u64,
    seq: u64,
    /// When the node recorded it (wall clock), if known.
    unix_ms: Option<u64>,
    /// When it arrived.
    now: Instant,
    /// When its connection was made.
    connected_at: Instant,
}

/// Checks an entry of `stream` against what was seen: above the last one (not repeated), the
/// next one on the leadership feed (nothing lost), fresh within `tolerance` once the backlog
/// is through; it becomes the last one seen.
fn on_event(seen: &mut Seen, stream: WatchStream, tolerance: Duration, at: Arrival) {
    let Arrival {
        node,
        seq,
        unix_ms,
        now,
        connected_at,
    } = at;
    if let Some((last_node, last_seq)) = seen.last_id
        && last_node == node
    {
        if seq <= last_seq {
            seen.problem(format!(
                "event {node}:{seq} repeated or out of order (the last was {node}:{last_seq})"
            ));
            return;
        }
        if stream == WatchStream::Leadership && seq != last_seq + 1 {
            seen.problem(format!(
                "events {node}:{}..={node}:{} were lost",
                last_seq + 1,
                seq - 1
            ));
        }
    }
    seen.last_id = Some((node, seq));
    if now.saturating_duration_since(connected_at) >= BACKLOG_GRACE
        && let Some(at) = unix_ms
    {
        let age_ms = now_unix_ms().saturating_sub(i64::try_from(at).unwrap_or(i64::MAX));
        let tolerance_ms = i64::try_from(tolerance.as_millis()).unwrap_or(i64::MAX);
        if age_ms > tolerance_ms {
            seen.problem(format!(
                "event {node}:{seq} arrived {:.1} s after the node recorded it (tolerance \
                 {tolerance:?})",
                age_ms as f64 / 1000.0,
            ));
        }
    }
}

/// Checks a gRPC heartbeat of `stream` from `node`, saying the stream covered the feed up to
/// `last_seq`, against the last entry seen. On the leadership feed every entry is sent, so the
/// two must agree: more means entries were lost on the way. The shard feed skips entries, so
/// there it may only be ahead, and it becomes the resume point (nothing the stream sends lies
/// between).
fn on_heartbeat(seen: &mut Seen, stream: WatchStream, node: u64, last_seq: u64) {
    match seen.last_id {
        Some((last_node, seen_seq)) if last_node == node => {
            if last_seq < seen_seq {
                seen.problem(format!(
                    "a heartbeat covers the feed up to {node}:{last_seq}, but {node}:{seen_seq} \
                     was already received"
                ));
            } else if last_seq > seen_seq {
                if stream == WatchStream::Leadership {
                    seen.problem(format!(
                        "events {node}:{}..={node}:{last_seq} were lost (a heartbeat covers \
                         them)",
                        seen_seq + 1
                    ));
                }
                seen.last_id = Some((node, last_seq));
            }
        }
        // Nothing seen yet from this node's feed (or another node answers after a
        // restart elsewhere): the heartbeat's point is where a resume starts.
        _ => seen.last_id = Some((node, last_seq)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(node: u64, seq: u64) -> Arrival {
        let now = Instant::now();
        Arrival {
            node,
            seq,
            unix_ms: None,
            now,
            connected_at: now,
        }
    }

    fn events(stream: WatchStream, seqs: &[u64]) -> Seen {
        let mut seen = Seen::default();
        for &seq in seqs {
            on_event(&mut seen, stream, Duration::from_secs(2), arrival(1, seq));
        }
        seen
    }

    #[test]
    fn entries_in_order_pass_and_a_repeat_or_a_gap_is_a_problem() {
        let seen = events(WatchStream::Leadership, &[3, 4, 5]);
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
        assert_eq!(seen.last_id, Some((1, 5)));

        let seen = events(WatchStream::Leadership, &[3, 4, 4]);
        assert_eq!(seen.problems.len(), 1, "{:?}", seen.problems);
        assert!(seen.problems[0].contains("repeated"), "{:?}", seen.problems);

        let seen = events(WatchStream::Leadership, &[3, 6]);
        assert!(
            seen.problems[0].contains("1:4..=1:5 were lost"),
            "{:?}",
            seen.problems
        );
        // The shard feed skips entries: only order counts there.
        let seen = events(WatchStream::Shards, &[3, 6, 9]);
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    }

    #[test]
    fn a_live_entry_recorded_long_before_it_arrived_is_stale() {
        let mut seen = Seen::default();
        let now = Instant::now();
        let at = |ago_ms: i64| u64::try_from(now_unix_ms() - ago_ms).expect("after 1970");
        let live = Arrival {
            node: 1,
            seq: 1,
            unix_ms: Some(at(100)),
            now,
            connected_at: now.checked_sub(BACKLOG_GRACE * 2).unwrap_or(now),
        };
        on_event(
            &mut seen,
            WatchStream::Leadership,
            Duration::from_secs(2),
            live,
        );
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
        let stale = Arrival {
            seq: 2,
            unix_ms: Some(at(5_000)),
            ..live
        };
        on_event(
            &mut seen,
            WatchStream::Leadership,
            Duration::from_secs(2),
            stale,
        );
        assert!(
            seen.problems[0].contains("after the node recorded it"),
            "{:?}",
            seen.problems
        );
    }

    #[test]
    fn a_heartbeat_covering_more_than_the_leadership_entries_seen_means_they_were_lost() {
        // Agrees with what was seen: fine.
        let mut seen = events(WatchStream::Leadership, &[3, 4]);
        on_heartbeat(&mut seen, WatchStream::Leadership, 1, 4);
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
        // Covers 5 and 6, never received: lost; the resume point moves past them.
        on_heartbeat(&mut seen, WatchStream::Leadership, 1, 6);
        assert!(
            seen.problems[0].contains("1:5..=1:6 were lost"),
            "{:?}",
            seen.problems
        );
        assert_eq!(seen.last_id, Some((1, 6)));
        // Behind what was received: the node and the agent disagree.
        let mut seen = events(WatchStream::Leadership, &[3, 4]);
        on_heartbeat(&mut seen, WatchStream::Leadership, 1, 2);
        assert!(
            seen.problems[0].contains("already received"),
            "{:?}",
            seen.problems
        );
    }

    #[test]
    fn a_shard_heartbeat_may_cover_skipped_entries_and_becomes_the_resume_point() {
        let mut seen = events(WatchStream::Shards, &[3]);
        on_heartbeat(&mut seen, WatchStream::Shards, 1, 9);
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
        assert_eq!(seen.last_id, Some((1, 9)));
        // An entry the heartbeat covered, sent again after it: a repeat.
        on_event(
            &mut seen,
            WatchStream::Shards,
            Duration::from_secs(2),
            arrival(1, 8),
        );
        assert!(seen.problems[0].contains("repeated"), "{:?}", seen.problems);
        // Before any entry: the heartbeat's point is where the next connection resumes.
        let mut fresh = Seen::default();
        on_heartbeat(&mut fresh, WatchStream::Leadership, 2, 0);
        assert!(fresh.problems.is_empty());
        assert_eq!(fresh.last_id, Some((2, 0)));
    }
}
