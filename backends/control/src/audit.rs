//! The control API's audit log: one JSON line per `mesh.operate` or `mesh.admin` call, allowed
//! or refused, plus a `tracing` event for each.
//!
//! ```json
//! {"time":"2026-11-22T14:03:07.25Z","identity":"meshctl-operator","auth":"client-certificate","method":"POST","path":"/control/drain","required_scope":"mesh.operate","outcome":"allowed","status":200}
//! ```
//!
//! Records leave the request path through a bounded queue ([`AUDIT_QUEUE_RECORDS`]) to one
//! writer thread, so a slow disk never blocks a runtime worker; when the queue is full the record
//! is dropped and counted (`mesh_control_audit_dropped_total{reason="queue_full"}`), and its
//! `tracing` event still goes out. The file is bounded by rotation: when the next line would take
//! it past `audit_log_max_bytes`, it is renamed to `<file>.1` (replacing the previous one) and a
//! new file starts, so the log never holds more than twice that size on disk.
//!
//! ## What a refusal can write
//!
//! The log exists for the calls of people who hold credentials, so nothing an anonymous client
//! does may push those records out through rotation (docs/security.md):
//!
//! * a refusal **without a verified identity** (401: no credential, a bad token, a certificate
//!   that names nobody) is never written to the file. Authorization counts it
//!   (`mesh_control_refusals_total{reason}`) and logs a sample of them (see
//!   [`super::auth`]);
//! * a refusal **of a verified identity** (403) is written, within a budget shared by every
//!   identity: at most [`AUDIT_REFUSALS_BURST`] records per [`AUDIT_REFUSALS_WINDOW`]
//!   ([`AuditLog::record_refusal`]). Those over the budget are counted
//!   (`mesh_control_audit_dropped_total{reason="refusal_rate"}`), and the next refusal written
//!   carries how many were left out before it as `suppressed`. So a credentialed but
//!   unprivileged client, which the records name, needs at least
//!   `audit_log_max_bytes / (AUDIT_REFUSALS_BURST x record size)` windows to fill one file:
//!   with about 250-byte records, about 56 hours at the 16 MiB default;
//! * allowed calls are always written.
//!
//! A gRPC call answers HTTP 200 whatever its outcome, so [`record_response`] holds its record
//! until the response's `grpc-status` is known (in the headers of an error-only answer, or in
//! the trailers after the body) and writes it as `grpc_status`.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use meshkit_api::permission::Permission;
use meshkit_net::log_limit::LogLimit;

/// How many records may wait for the writer before new ones are dropped.
pub const AUDIT_QUEUE_RECORDS: usize = 1024;
/// Default size at which the file rotates, in bytes (16 MiB).
pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Smallest allowed rotation size, in bytes: a few dozen records.
pub const MIN_AUDIT_MAX_BYTES: u64 = 16 * 1024;
/// Longest request path written, in bytes; longer ones are cut (a client chooses the path).
pub const MAX_AUDITED_PATH_BYTES: usize = 512;
/// Refusals of verified identities written per [`AUDIT_REFUSALS_WINDOW`], all identities
/// together; the rest are counted (`reason="refusal_rate"`) and summed into the next one
/// written. Enough for an operator's mistakes, too few for a flood to rotate the file quickly.
pub const AUDIT_REFUSALS_BURST: u32 = 20;
/// The window of [`AUDIT_REFUSALS_BURST`].
pub const AUDIT_REFUSALS_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// How a caller was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// A CA-verified client certificate.
    ClientCertificate,
    /// A signed bearer token.
    Token,
    /// No credential was presented.
    None,
}

impl AuthMethod {
    /// The name written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCertificate => "client-certificate",
            Self::Token => "token",
            Self::None => "none",
        }
    }
}

/// What became of an audited call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Authorized and passed to its handler (`status` is the handler's).
    Allowed,
    /// Refused with 401: no usable credential. Never written to the file by the control
    /// server (such refusals are counted and sampled instead, see the module docs); kept for
    /// records made by other callers of [`AuditLog::record`].
    Unauthenticated,
    /// Refused with 403: an identity without the scope.
    Forbidden,
}

impl Outcome {
    /// The name written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
        }
    }
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// When the call was decided, RFC 3339, UTC.
    pub time: String,
    /// Who, when known: the certificate's name or the token's subject.
    pub identity: Option<String>,
    /// How the caller was (or tried to be) authenticated.
    pub auth: AuthMethod,
    /// The HTTP method.
    pub method: String,
    /// The request path (no query), cut to [`MAX_AUDITED_PATH_BYTES`].
    pub path: String,
    /// The scope the route needs.
    pub required_scope: Permission,
    /// Allowed or refused.
    pub outcome: Outcome,
    /// The response status.
    pub status: u16,
    /// A gRPC call's `grpc-status` (0 is OK), read from the response's headers or trailers;
    /// absent for HTTP calls, and for a gRPC call whose response ended without one (the client
    /// went away first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<i32>,
    /// On a refusal: how many refusals before it were left out of the file by the budget
    /// ([`AUDIT_REFUSALS_BURST`]); absent when none were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
    /// A chaos action's details ([`ChaosAudit`]); absent on other records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chaos: Option<Box<ChaosAudit>>,
}

/// What a chaos record adds (docs/diagnostics.md, "Chaos safety model"): the action, the
/// experiment, and who asked when a node relayed it, or why it was refused.
///
/// ```json
/// {"action":"activate","experiment":"node-1/1765000000000","kind":"partition","nodes":[4,5]}
/// {"action":"relay-apply","experiment":"node-1/1765000000000","caller":"token:alice","relayed_by":"node-1","nodes":[4,5]}
/// {"action":"revert","experiment":"node-1/1765000000000","kind":"partition","reason":"deadline"}
/// {"action":"activate","refused":true,"reason":"token-replayed"}
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChaosAudit {
    /// `plan`, `activate`, `abort`, `kill-switch`, `rearm`, `revert` (written by the node as
    /// itself), or `relay-<op>` on a node another one asked.
    pub action: String,
    /// The experiment (`node-<origin>/<serial>`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The fault kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The nodes it touched (a plan's or start's radius; the members that confirmed an abort;
    /// on the origin's revert record, the targets that confirmed their revert).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<u64>>,
    /// Relayed: the original caller as the relaying node names it (`<auth>:<name>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// Relayed: the node certificate that relayed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relayed_by: Option<String>,
    /// Whether it was refused.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// A refusal's stable reason (`token-replayed`, `kind-not-allowed`, ...), or a revert's
    /// end reason (`deadline`, `aborted`, `kill-switch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On the origin's revert record of an experiment it fanned out: the targets that never
    /// confirmed their revert (`nodes` names the ones that did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unconfirmed: Option<Vec<u64>>,
}

impl AuditRecord {
    /// A record stamped with `now`; the path is cut to [`MAX_AUDITED_PATH_BYTES`].
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per field of the record"
    )]
    pub fn new(
        now: SystemTime,
        identity: Option<&str>,
        auth: AuthMethod,
        method: &str,
        path: &str,
        required_scope: Permission,
        outcome: Outcome,
        status: u16,
    ) -> Self {
        let mut end = path.len().min(MAX_AUDITED_PATH_BYTES);
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            time: rfc3339(now),
            identity: identity.map(str::to_owned),
            auth,
            method: method.to_owned(),
            path: path[..end].to_owned(),
            required_scope,
            outcome,
            status,
            grpc_status: None,
            suppressed: None,
            chaos: None,
        }
    }
}

/// `now` in RFC 3339, UTC.
pub fn rfc3339(now: SystemTime) -> String {
    time::OffsetDateTime::from(now)
        .format(&time::format_description::well_known::Rfc3339)
        // Only years outside 0..=9999 fail to format; no clock of ours reads those.
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

enum Message {
    Record(AuditRecord),
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    queue_full: AtomicU64,
    write_failed: AtomicU64,
    refusal_rate: AtomicU64,
    refusals: RefusalBudget,
}

/// The budget of refusal records ([`AUDIT_REFUSALS_BURST`] per [`AUDIT_REFUSALS_WINDOW`]).
#[derive(Debug)]
struct RefusalBudget(LogLimit);

impl Default for RefusalBudget {
    fn default() -> Self {
        Self(LogLimit::new(AUDIT_REFUSALS_BURST, AUDIT_REFUSALS_WINDOW))
    }
}

/// The sending side of the audit log; cheap to clone. Dropping every clone ends the writer.
#[derive(Clone, Debug)]
pub struct AuditLog {
    queue: Option<mpsc::Sender<Message>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Record(r) => f.debug_tuple("Record").field(r).finish(),
            Self::Flush(_) => f.write_str("Flush"),
        }
    }
}

/// Why the audit log could not start. An operator fault; nothing was started.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    /// The file.
    pub path: PathBuf,
    /// Why it could not be opened, or the writer thread not started.
    pub source: std::io::Error,
}

impl AuditLog {
    /// An audit log that only emits `tracing` events (no `audit_log` file configured).
    pub fn tracing_only() -> Self {
        Self {
            queue: None,
            counters: Arc::default(),
        }
    }

    /// Opens (or creates) `path` for appending and starts its writer thread, which rotates the
    /// file at `max_bytes`. The file is opened here so a bad path fails at startup.
    pub fn start(path: &Path, max_bytes: u64) -> Result<Self, AuditError> {
        let err = |source| AuditError {
            path: path.to_owned(),
            source,
        };
        let file = open_append(path).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        let (queue, receiver) = mpsc::channel(AUDIT_QUEUE_RECORDS);
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            path: path.to_owned(),
            file,
            size,
            max_bytes,
            counters: counters.clone(),
        };
        std::thread::Builder::new()
            .name("meshkit-audit".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(err)?;
        Ok(Self {
            queue: Some(queue),
            counters,
        })
    }

    /// Emits the record's `tracing` event and queues it for the file without waiting; a full
    /// queue drops it and counts the drop.
    pub fn record(&self, record: AuditRecord) {
        let identity = record.identity.as_deref().unwrap_or("-");
        if record.outcome == Outcome::Allowed {
            // The target operators filter on (docs/hosting.md), kept from before the control
            // server left `meshkit-node`.
            tracing::info!(
                target: "meshkit_node::audit",
                identity,
                auth = record.auth.as_str(),
                method = %record.method,
                path = %record.path,
                scope = %record.required_scope,
                outcome = record.outcome.as_str(),
                status = record.status,
                grpc_status = record.grpc_status,
                "control call"
            );
        } else {
            tracing::warn!(
                target: "meshkit_node::audit",
                identity,
                auth = record.auth.as_str(),
                method = %record.method,
                path = %record.path,
                scope = %record.required_scope,
                outcome = record.outcome.as_str(),
                status = record.status,
                grpc_status = record.grpc_status,
                suppressed = record.suppressed.unwrap_or(0),
                "control call refused"
            );
        }
        let Some(queue) = &self.queue else {
            return;
        };
        match queue.try_send(Message::Record(record)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
            }
            // The writer thread ended (it only does when every sender is gone, or it panicked).
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.counters.write_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes the record of a refused call of a verified identity within the refusal budget
    /// (see the [module docs](self)): over it, the record and its `tracing` event are left out
    /// and counted, and the next one admitted carries the count as `suppressed`.
    pub fn record_refusal(&self, mut record: AuditRecord) {
        match self.counters.refusals.0.allow() {
            Some(suppressed) => {
                record.suppressed = (suppressed > 0).then_some(suppressed);
                self.record(record);
            }
            None => {
                self.counters.refusal_rate.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits until every record queued before this call is written (or failed).
    pub async fn flush(&self) {
        let Some(queue) = &self.queue else {
            return;
        };
        let (done, wait) = oneshot::channel();
        if queue.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Records written to the file.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Records dropped because the queue was full.
    pub fn dropped_queue_full(&self) -> u64 {
        self.counters.queue_full.load(Ordering::Relaxed)
    }

    /// Refusal records left out by the budget ([`AUDIT_REFUSALS_BURST`]).
    pub fn dropped_refusal_rate(&self) -> u64 {
        self.counters.refusal_rate.load(Ordering::Relaxed)
    }

    /// Records lost because writing failed.
    pub fn dropped_write_failed(&self) -> u64 {
        self.counters.write_failed.load(Ordering::Relaxed)
    }
}

/// Writes the record of an allowed call once its outcome is known: at once for an HTTP answer
/// or a gRPC answer whose status is in its headers, else when the gRPC body's trailers go out
/// (or the body ends or is dropped without them: `grpc_status` stays absent).
pub fn record_response(log: &AuditLog, mut record: AuditRecord, response: Response) -> Response {
    if !meshkit_api::grpc::is_grpc(response.headers()) {
        log.record(record);
        return response;
    }
    if let Some(code) = grpc_status(response.headers()) {
        record.grpc_status = Some(code);
        log.record(record);
        return response;
    }
    response.map(|inner| {
        Body::new(GrpcAudited {
            inner,
            pending: Some((log.clone(), record)),
        })
    })
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A gRPC response body that writes its call's audit record when the trailers pass.
struct GrpcAudited {
    inner: Body,
    pending: Option<(AuditLog, AuditRecord)>,
}

impl GrpcAudited {
    fn finish(&mut self, grpc_status: Option<i32>) {
        if let Some((log, mut record)) = self.pending.take() {
            record.grpc_status = grpc_status;
            log.record(record);
        }
    }
}

impl http_body::Body for GrpcAudited {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let status = grpc_status(trailers);
                    self.finish(status);
                }
            }
            Poll::Ready(Some(Err(_)) | None) => self.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for GrpcAudited {
    fn drop(&mut self) {
        self.finish(None);
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    counters: Arc<Counters>,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Message>) {
        while let Some(message) = receiver.blocking_recv() {
            match message {
                Message::Record(record) => match self.write(&record) {
                    Ok(()) => {
                        self.counters.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        self.counters.write_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(path = %self.path.display(), %error, "audit log write failed");
                    }
                },
                Message::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    fn write(&mut self, record: &AuditRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.file.flush()?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, old)?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str) -> AuditRecord {
        AuditRecord::new(
            std::time::UNIX_EPOCH,
            Some("meshctl-operator"),
            AuthMethod::ClientCertificate,
            "POST",
            path,
            Permission::Operate,
            Outcome::Allowed,
            200,
        )
    }

    #[test]
    fn record_is_one_json_line_with_rfc3339_time() {
        let line = serde_json::to_string(&record("/control/drain")).unwrap();
        assert_eq!(
            line,
            r#"{"time":"1970-01-01T00:00:00Z","identity":"meshctl-operator","auth":"client-certificate","method":"POST","path":"/control/drain","required_scope":"mesh.operate","outcome":"allowed","status":200}"#
        );
        let long = format!("/{}", "é".repeat(400));
        assert!(record(&long).path.len() <= MAX_AUDITED_PATH_BYTES);
    }

    #[tokio::test]
    async fn file_rotates_at_its_size_bound() {
        let dir = std::env::temp_dir().join(format!("meshkit-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let line_bytes = serde_json::to_vec(&record("/control/drain")).unwrap().len() as u64 + 1;
        let log = AuditLog::start(&path, MIN_AUDIT_MAX_BYTES).unwrap();
        let per_file = MIN_AUDIT_MAX_BYTES / line_bytes;
        for _ in 0..per_file + 3 {
            log.record(record("/control/drain"));
            // Keep the queue from filling: this test is about rotation, not drops.
            log.flush().await;
        }
        assert_eq!(log.written(), per_file + 3);
        let current = std::fs::read_to_string(&path).unwrap();
        let rotated = std::fs::read_to_string(dir.join("audit.jsonl.1")).unwrap();
        assert_eq!(rotated.lines().count() as u64, per_file);
        assert_eq!(current.lines().count(), 3);
        assert!(rotated.len() as u64 <= MIN_AUDIT_MAX_BYTES);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
