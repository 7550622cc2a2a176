//! The chaos control endpoints: plan, confirm, start, list, abort, kill switch, and the relay
//! between nodes that fans an experiment out (docs/diagnostics.md, "Chaos safety model";
//! docs/api.md, "Chaos").
//!
//! * `POST /control/chaos/plans` (`mesh.admin`, a [`FaultPlan`] as JSON): the node checks its
//!   own `[chaos]` (enabled, kind allowed, duration within the maximum, kill switch not
//!   engaged), resolves the plan against its view ([`NodeHandle::chaos_view`]) and answers the
//!   blast radius and a confirmation token ([`token`]) bound to the plan, the radius, the
//!   caller and an expiry (`[chaos] token_ttl`, a minute by default). Nothing starts.
//! * `POST /control/chaos/experiments` (`mesh.admin`, `{"plan": .., "token": ..}`): the token
//!   is redeemed (once), the plan resolved again (a radius that moved since it was shown is
//!   refused, 409), the experiment named `node-<this node>/<serial>` and sent to every node in
//!   the radius: this node applies its own part ([`NodeHandle::chaos_apply`]), each other target
//!   gets it over the relay. The answer lists every target's confirmation. When a target
//!   refuses (its own `[chaos]` says no), the targets that applied are aborted and the call
//!   answers that refusal: an experiment starts everywhere or nowhere. An unreachable target
//!   is reported (207) and not rolled back: it never got the fault.
//! * `GET /control/chaos/experiments` (`mesh.observe`): this node's active and recent
//!   experiments with their remaining time; on the origin of an experiment, each target's
//!   state (`targets`: whether it confirmed its revert, [`origin`]).
//! * `DELETE /control/chaos/experiments/{id}` (`mesh.admin`; `/` in the id as `%2F`), `POST
//!   /control/chaos/kill-switch` and `DELETE /control/chaos/kill-switch` (re-arm): done here
//!   and relayed to every member that publishes a control address.
//! * `POST /control/chaos/relay` (a `node-<id>` client certificate, whatever its scopes): one
//!   node asking another to apply, abort, kill or re-arm, or (the origin, after the deadline)
//!   how an experiment stands there (`status`, a read: audited only when refused). The receiver runs its own checks
//!   (`chaos_apply` refuses what its `[chaos]` does not allow), so a member certificate can do
//!   no more here than the receiver's configuration lets any admin do (docs/security.md,
//!   "Chaos relay").
//!
//! **The dead-man switch** is the runtime's: every node schedules the revert on its own clock
//! when it applies, so nothing here has to reach it again for the fault to end.
//!
//! **Audit**: every plan, start, relay, abort, kill switch and re-arm writes a record with a
//! `chaos` part ([`ChaosAudit`]) naming the action, the experiment, the caller (and, relayed,
//! the relaying node) and, for a refusal, the reason. Reverts at the deadline are the node's
//! own doing: a watcher ([`ChaosControl::watch_reverts`]) writes them with the node's name as
//! the identity.

pub mod origin;
pub mod token;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::future::join_all;
use thiserror::Error;

use meshkit::NodeId;
use meshkit::diag::fault::{BlastRadius, FaultPlan, ResolveError, resolve};
pub use meshkit_api::chaos::{
    ExperimentView, ExperimentsResponse, FanOutResponse, PlanResponse, RadiusView, RelayRequest,
    StartRequest, StartResponse, TargetResult,
};
use meshkit_client::Client;
use meshkit_net::clock::{SystemWallClock, WallClock};
use meshkit_runtime::chaos_host::{ChaosConfig, ChaosError, ExperimentRef, ExperimentStatus};
use meshkit_runtime::driver::{CONTROL_KEY, NodeHandle};

use self::origin::{Answer, Concluded, Ledger};
use self::token::{Confirmations, TokenRefusal, sha256_hex};
use crate::audit::{AuditLog, AuditRecord, ChaosAudit, Outcome};
use crate::auth::{AccessControl, Principal};
use meshkit_api::permission::Permission;

/// The client one node relays with.
pub type RelayClient = Client;

/// Largest plan or start body read, in bytes (a plan is a few hundred).
pub const MAX_CHAOS_BODY_BYTES: usize = 64 * 1024;
/// How long one relay call to a target may take before the target counts as unreachable.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the revert watcher reads the node's experiments while any is live.
pub const REVERT_WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// How often the origin's confirmer looks for asks that are due ([`origin::Ledger::due`]).
pub const CONFIRM_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// One node's chaos control state: the token secret, the experiment serials, the relay client,
/// the revert watcher and the ledger of the experiments it fanned out. One per control router; cheap to share behind an [`Arc`].
#[derive(Debug)]
pub struct ChaosControl {
    /// The node's `[chaos]`, for checks before anything is resolved or relayed (each target
    /// checks its own again when it applies); `None`: only the targets check.
    config: Option<ChaosConfig>,
    confirmations: Option<Confirmations>,
    relay: Option<Arc<Client>>,
    serial: AtomicU64,
    clock: Arc<dyn WallClock>,
    watcher: Mutex<Watcher>,
    origin: Mutex<Origin>,
    /// Targets left unconfirmed when their experiment's confirmation ended
    /// (`mesh_chaos_unconfirmed_reverts_total`).
    unconfirmed_total: AtomicU64,
}

impl meshkit_api::metrics::Source for ChaosControl {
    /// The origin's family: targets that never confirmed their revert.
    fn write(&self, families: &mut meshkit_api::metrics::Families<'_, '_>) -> std::fmt::Result {
        families.counter(
            &meshkit_api::metrics::catalogue::CHAOS_UNCONFIRMED_REVERTS,
            self.unconfirmed_total.load(Ordering::Relaxed),
        )
    }
}

/// The experiments this node fanned out, and whether the task asking their targets runs.
#[derive(Debug, Default)]
struct Origin {
    ledger: Ledger,
    running: bool,
}

#[derive(Debug, Default)]
struct Watcher {
    running: bool,
    /// Experiments whose revert was written, so each is written once.
    audited: BTreeSet<ExperimentRef>,
}

impl ChaosControl {
    /// Chaos control relaying to other nodes with `relay` (a client presenting this node's
    /// certificate); `None` serves only this node (an embedded router without `[tls]` files:
    /// every other target answers "no relay client").
    /// `config` is the node's `[chaos]`, checked before a plan is resolved (`None`: the
    /// runtime's checks at apply time only).
    pub fn new(relay: Option<Arc<Client>>, config: Option<ChaosConfig>) -> Self {
        Self::with_clock(relay, config, Arc::new(SystemWallClock))
    }

    /// The same, reading time from `clock`.
    pub fn with_clock(
        relay: Option<Arc<Client>>,
        config: Option<ChaosConfig>,
        clock: Arc<dyn WallClock>,
    ) -> Self {
        // Serials start at the wall clock's milliseconds, so a restarted node does not name
        // a new experiment like one its peers still list.
        let first = unix_ms(clock.now());
        let token_ttl = config
            .as_ref()
            .map_or(token::TOKEN_LIFETIME, |c| c.token_ttl);
        Self {
            config,
            confirmations: Confirmations::with_lifetime(token_ttl).ok(),
            relay,
            serial: AtomicU64::new(first),
            clock,
            watcher: Mutex::default(),
            origin: Mutex::default(),
            unconfirmed_total: AtomicU64::new(0),
        }
    }

    fn origin(&self) -> std::sync::MutexGuard<'_, Origin> {
        // A poisoned lock only means a holder panicked between two whole updates.
        self.origin.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        unix_ms(self.clock.now())
    }

    fn confirmations(&self) -> Result<&Confirmations, ChaosCallError> {
        self.confirmations
            .as_ref()
            .ok_or(ChaosCallError::NoRandomness)
    }

    /// Starts the revert watcher unless it runs: while this node has a scheduled or active
    /// experiment, it reads them every [`REVERT_WATCH_INTERVAL`] and writes one audit record
    /// per revert, as the node.
    pub fn watch_reverts(self: &Arc<Self>, node: NodeHandle, audit: AuditLog) {
        {
            let mut w = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
            if w.running {
                return;
            }
            w.running = true;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let me = node.id().to_string();
            loop {
                tokio::time::sleep(REVERT_WATCH_INTERVAL).await;
                let Ok(experiments) = node.chaos_experiments().await else {
                    break;
                };
                let mut live = false;
                let mut w = this.watcher.lock().unwrap_or_else(|e| e.into_inner());
                for e in &experiments {
                    if e.phase != "reverted" {
                        live = true;
                        continue;
                    }
                    // The origin writes the revert of an experiment it fanned out when its
                    // targets have confirmed theirs (or never will): see `confirm_reverts`.
                    if this.origin().ledger.tracks(e.id) {
                        continue;
                    }
                    if w.audited.insert(e.id) {
                        audit.record(node_record(
                            this.clock.now(),
                            &me,
                            ChaosAudit {
                                action: "revert".to_owned(),
                                experiment: Some(e.id.to_string()),
                                kind: Some(e.kind.clone()),
                                reason: e.end_reason.clone(),
                                ..ChaosAudit::default()
                            },
                        ));
                    }
                }
                // Bounded by the runtime's bounded recent list: forget what it forgot.
                let listed: BTreeSet<ExperimentRef> = experiments.iter().map(|e| e.id).collect();
                w.audited.retain(|id| listed.contains(id));
                if !live {
                    w.running = false;
                    break;
                }
            }
        });
    }

    /// Records experiment `id`, fanned out to `targets` and ending at `deadline_ms`, and starts
    /// the task that asks its targets for their reverts after the deadline.
    fn fanned_out(
        self: &Arc<Self>,
        node: &NodeHandle,
        audit: &AuditLog,
        id: ExperimentRef,
        deadline_ms: u64,
        targets: &[TargetResult],
    ) {
        let pushed_out = {
            let mut o = self.origin();
            o.ledger.fanned_out(id, deadline_ms, targets)
        };
        if let Some(c) = pushed_out {
            self.audit_concluded(node, audit, &c);
        }
        self.confirm_reverts(node.clone(), audit.clone());
    }

    /// The origin's revert record of a fanned-out experiment, as the node: the targets that
    /// confirmed in `nodes`, the others in `unconfirmed`.
    fn audit_concluded(&self, node: &NodeHandle, audit: &AuditLog, c: &Concluded) {
        self.unconfirmed_total.fetch_add(
            u64::try_from(c.unconfirmed.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if c.unconfirmed.is_empty() {
            tracing::info!(experiment = %c.id, confirmed = ?c.confirmed, "every target confirmed its revert");
        } else {
            tracing::warn!(experiment = %c.id, confirmed = ?c.confirmed, unconfirmed = ?c.unconfirmed, "targets did not confirm their revert");
        }
        audit.record(node_record(
            self.clock.now(),
            &node.id().to_string(),
            ChaosAudit {
                action: "revert".to_owned(),
                experiment: Some(c.id.to_string()),
                kind: c.kind.clone(),
                nodes: Some(c.confirmed.clone()),
                reason: c.end_reason.clone(),
                unconfirmed: (!c.unconfirmed.is_empty()).then(|| c.unconfirmed.clone()),
                ..ChaosAudit::default()
            },
        ));
    }

    /// Starts the confirmer unless it runs: while the ledger has experiments being
    /// confirmed, every [`CONFIRM_POLL_INTERVAL`] it asks the targets whose asks are due
    /// ([`origin`]) and writes the revert record of each experiment concluded.
    fn confirm_reverts(self: &Arc<Self>, node: NodeHandle, audit: AuditLog) {
        {
            let mut o = self.origin();
            if o.running {
                return;
            }
            o.running = true;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CONFIRM_POLL_INTERVAL).await;
                let due = this.origin().ledger.due(this.now_ms());
                if !due.is_empty() {
                    let Ok(members) = this.members(&node).await else {
                        // The driver stopped: nothing left to ask from here.
                        this.origin().running = false;
                        break;
                    };
                    let members: BTreeMap<NodeId, Option<String>> = members.into_iter().collect();
                    for (id, targets) in due {
                        let asks = targets.iter().map(|t| {
                            let addr = members.get(&NodeId::new(*t)).cloned().flatten();
                            this.ask_status(&node, id, *t, addr)
                        });
                        let answers = join_all(asks).await;
                        let concluded = {
                            let mut o = this.origin();
                            for (target, answer) in targets.iter().zip(answers) {
                                o.ledger.answer(id, *target, answer);
                            }
                            o.ledger.round_done(id, this.now_ms())
                        };
                        if let Some(c) = concluded {
                            this.audit_concluded(&node, &audit, &c);
                        }
                    }
                }
                let mut o = this.origin();
                if !o.ledger.pending() {
                    o.running = false;
                    break;
                }
            }
        });
    }

    /// Target `target`'s state of `id`: this node's own list when it is the target, else a
    /// `status` relay call.
    async fn ask_status(
        &self,
        node: &NodeHandle,
        id: ExperimentRef,
        target: u64,
        addr: Option<String>,
    ) -> Answer {
        let me = node.id().get();
        if target == me {
            return match node.chaos_experiments().await {
                Ok(list) => match list.iter().find(|e| e.id == id) {
                    Some(e) => Answer::Listed(Box::new(view_of(me, e))),
                    None => Answer::Failed(format!("node-{me} no longer lists {id}")),
                },
                Err(_) => Answer::Failed(format!("node-{me}: driver stopped")),
            };
        }
        let request = RelayRequest::Status {
            id: id.to_string(),
            caller: format!(
                "{}:{}",
                crate::audit::AuthMethod::ClientCertificate.as_str(),
                node.id()
            ),
        };
        let answer = self
            .relay(node, NodeId::new(target), addr.as_deref(), &request)
            .await;
        match answer.experiment {
            Some(view) if answer.ok => Answer::Listed(Box::new(view)),
            _ => Answer::Failed(
                answer
                    .error
                    .unwrap_or_else(|| format!("node-{target} answered no experiment")),
            ),
        }
    }

    async fn relay(
        &self,
        node: &NodeHandle,
        target: NodeId,
        control: Option<&str>,
        request: &RelayRequest,
    ) -> TargetResult {
        let fail = |error: String, status: Option<u16>, reason: &str| TargetResult {
            node: target.get(),
            ok: false,
            experiment: None,
            reverted: None,
            error: Some(error),
            reason: Some(reason.to_owned()),
            status,
        };
        let Some(client) = &self.relay else {
            return fail(
                format!(
                    "{} has no relay client (a control router built without the node's \
                     [tls] files) and cannot reach {target}",
                    node.id()
                ),
                None,
                "no-relay-client",
            );
        };
        let Some(addr) = control else {
            return fail(
                format!("{target} publishes no control address: it cannot be reached"),
                None,
                "unreachable",
            );
        };
        let call = client.post_json(addr, "/control/chaos/relay", request);
        match tokio::time::timeout(RELAY_TIMEOUT, call).await {
            Err(_) => fail(
                format!("{target} at {addr} did not answer within {RELAY_TIMEOUT:?}"),
                None,
                "unreachable",
            ),
            Ok(Err(e)) => fail(format!("{target} at {addr}: {e}"), None, "unreachable"),
            Ok(Ok(response)) if response.status == 200 => {
                match serde_json::from_str::<TargetResult>(&response.body) {
                    Ok(result) => result,
                    Err(e) => fail(
                        format!("{target} answered an unreadable body: {e}"),
                        None,
                        "unreachable",
                    ),
                }
            }
            Ok(Ok(response)) => {
                let (error, reason) = match serde_json::from_str::<ChaosErrorBody>(&response.body) {
                    Ok(b) => (b.error, b.reason),
                    Err(_) => (response.body, "target-refused".to_owned()),
                };
                fail(
                    format!("{target} refused: {error}"),
                    Some(response.status),
                    &reason,
                )
            }
        }
    }

    /// Every member but this node with its control address (none for a member that publishes
    /// none), left members excepted.
    async fn members(
        &self,
        node: &NodeHandle,
    ) -> Result<Vec<(NodeId, Option<String>)>, ChaosCallError> {
        let snapshot = node.snapshot().await.map_err(|_| ChaosCallError::Stopped)?;
        Ok(snapshot
            .peers
            .iter()
            .filter(|p| p.id != snapshot.local_id)
            .filter(|p| p.state != meshkit::membership::MemberState::Left)
            .map(|p| (p.id, p.metadata.get(CONTROL_KEY).cloned()))
            .collect())
    }

    /// Sends `request` to every other member at once; their answers in node order.
    async fn fan_out(
        &self,
        node: &NodeHandle,
        request: &RelayRequest,
    ) -> Result<Vec<TargetResult>, ChaosCallError> {
        let members = self.members(node).await?;
        let calls = members
            .iter()
            .map(|(id, addr)| self.relay(node, *id, addr.as_deref(), request));
        Ok(join_all(calls).await)
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The error body of a chaos refusal: what, and a stable `reason` naming why.
pub use meshkit_api::chaos::ChaosErrorBody;

/// Why a chaos call was refused or failed. Each says whose fault; none changed anything (a
/// start refused by a target has rolled back the targets that applied it).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ChaosCallError {
    /// 400: the body is not a plan (or start request); the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// 400: not an experiment id.
    #[error(
        "{0:?} is not an experiment id: expected node-<origin>/<serial> (with / as %2F in a path)"
    )]
    BadId(String),
    /// 409: the plan names what the mesh does not have now (the caller's to fix, or to retry
    /// when roles settle).
    #[error("the plan cannot be resolved against this node's view: {0}")]
    Resolve(#[from] ResolveError),
    /// 400/403/503: the confirmation token was refused ([`TokenRefusal`]).
    #[error(transparent)]
    Token(#[from] TokenRefusal),
    /// 409: the radius resolved now is not the one the token was issued for.
    #[error(
        "the blast radius changed since the plan was confirmed (members or roles moved): plan \
         again to see the new radius"
    )]
    RadiusChanged,
    /// The node's `[chaos]` or its runtime refused ([`ChaosError`]).
    #[error("node-{node}: {source}")]
    Chaos {
        /// The node that refused.
        node: u64,
        /// Why.
        source: ChaosError,
    },
    /// A target refused a start; the targets that applied it were aborted.
    #[error("{message}")]
    TargetRefused {
        /// The refusing target's status.
        status: StatusCode,
        /// Its reason.
        reason: String,
        /// Who refused and why, in words.
        message: String,
        /// Every target's answer.
        targets: Vec<TargetResult>,
    },
    /// 403: the caller is not who this route takes.
    #[error("{0}")]
    Forbidden(String),
    /// 503: the node's driver has stopped.
    #[error("driver stopped")]
    Stopped,
    /// 503: no token secret could be drawn at start.
    #[error(
        "this node could not draw a token secret from the system random generator; chaos is unavailable until it restarts"
    )]
    NoRandomness,
}

impl ChaosCallError {
    /// The HTTP status it is answered with.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BadId(_) => StatusCode::BAD_REQUEST,
            Self::Resolve(_) | Self::RadiusChanged => StatusCode::CONFLICT,
            Self::Token(t) => match t {
                TokenRefusal::Malformed(_) | TokenRefusal::AlteredPlan { .. } => {
                    StatusCode::BAD_REQUEST
                }
                TokenRefusal::Busy => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::FORBIDDEN,
            },
            Self::Chaos { source, .. } => chaos_status(source),
            Self::TargetRefused { status, .. } => *status,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Stopped | Self::NoRandomness => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable reason, for the body and the audit log.
    pub fn reason(&self) -> String {
        match self {
            Self::BadRequest(_) => "bad-request".to_owned(),
            Self::BadId(_) => "bad-id".to_owned(),
            Self::Resolve(_) => "unresolvable".to_owned(),
            Self::Token(t) => t.reason().to_owned(),
            Self::RadiusChanged => "radius-changed".to_owned(),
            Self::Chaos { source, .. } => chaos_reason(source).to_owned(),
            Self::TargetRefused { reason, .. } => reason.clone(),
            Self::Forbidden(_) => "forbidden".to_owned(),
            Self::Stopped => "driver-stopped".to_owned(),
            Self::NoRandomness => "no-randomness".to_owned(),
        }
    }
}

/// The status of a runtime refusal: the node's configuration says no (403), the plan asks
/// more than it allows (400), the state forbids it now (409), nothing to act on (404).
pub fn chaos_status(e: &ChaosError) -> StatusCode {
    match e {
        ChaosError::Disabled | ChaosError::KindNotAllowed { .. } => StatusCode::FORBIDDEN,
        ChaosError::DurationOverMax { .. }
        | ChaosError::NotApplicableHere { .. }
        | ChaosError::ParamsRefused { .. } => StatusCode::BAD_REQUEST,
        ChaosError::KillSwitchEngaged | ChaosError::Schedule(_) => StatusCode::CONFLICT,
        ChaosError::UnknownExperiment(_) => StatusCode::NOT_FOUND,
        ChaosError::DriverStopped(_) => StatusCode::SERVICE_UNAVAILABLE,
        #[allow(unreachable_patterns, reason = "ChaosError may grow")]
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The stable reason of a runtime refusal.
pub fn chaos_reason(e: &ChaosError) -> &'static str {
    match e {
        ChaosError::Disabled => "chaos-disabled",
        ChaosError::KindNotAllowed { .. } => "kind-not-allowed",
        ChaosError::DurationOverMax { .. } => "duration-over-max",
        ChaosError::KillSwitchEngaged => "kill-switch-engaged",
        ChaosError::UnknownExperiment(_) => "unknown-experiment",
        ChaosError::NotApplicableHere { .. } => "not-applicable-here",
        ChaosError::ParamsRefused { .. } => "fault-params-refused",
        ChaosError::Schedule(_) => "schedule-refused",
        ChaosError::DriverStopped(_) => "driver-stopped",
        #[allow(unreachable_patterns, reason = "ChaosError may grow")]
        _ => "chaos-error",
    }
}

impl IntoResponse for ChaosCallError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let body = ChaosErrorBody {
            error: self.to_string(),
            reason: self.reason(),
            targets: match self {
                Self::TargetRefused { targets, .. } => Some(targets),
                _ => None,
            },
        };
        (status, axum::Json(body)).into_response()
    }
}

/// What a chaos call needs: the node, its chaos state, the audit log and who calls.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The node.
    pub node: NodeHandle,
    /// Its chaos control state.
    pub chaos: Arc<ChaosControl>,
    /// Its audit log.
    pub audit: AuditLog,
}

/// `<auth>:<name>`: the identity a token is bound to and the audit log's caller.
fn caller_id(p: &Principal) -> String {
    format!("{}:{}", p.auth.as_str(), p.name)
}

fn chaos_record(
    now: SystemTime,
    identity: &str,
    auth: crate::audit::AuthMethod,
    method: &str,
    path: &str,
    status: u16,
    chaos: ChaosAudit,
) -> AuditRecord {
    let mut record = AuditRecord::new(
        now,
        Some(identity),
        auth,
        method,
        path,
        Permission::Admin,
        Outcome::Allowed,
        status,
    );
    record.chaos = Some(Box::new(chaos));
    record
}

/// A record the node writes as itself (no caller: a revert it saw happen or concluded).
fn node_record(now: SystemTime, me: &str, chaos: ChaosAudit) -> AuditRecord {
    chaos_record(
        now,
        me,
        crate::audit::AuthMethod::None,
        "-",
        "(node)",
        200,
        chaos,
    )
}

impl Ctx {
    /// Writes a chaos record for `who` calling `method path`: always for what was done, within
    /// the refusal budget for refusals (like any refusal of a verified identity).
    fn audit(
        &self,
        who: &Principal,
        method: &str,
        path: &str,
        result: &Result<u16, &ChaosCallError>,
        chaos: ChaosAudit,
    ) {
        let (status, chaos) = match result {
            Ok(status) => (*status, chaos),
            Err(e) => (
                e.http_status().as_u16(),
                ChaosAudit {
                    reason: Some(e.reason()),
                    refused: true,
                    ..chaos
                },
            ),
        };
        let refused = chaos.refused;
        let record = chaos_record(
            self.chaos.clock.now(),
            &who.name,
            who.auth,
            method,
            path,
            status,
            chaos,
        );
        if refused {
            self.audit.record_refusal(record);
        } else {
            self.audit.record(record);
        }
    }

    /// The plan call: checks, resolves, issues a token.
    pub async fn plan(&self, who: &Principal, body: &[u8]) -> Result<PlanResponse, ChaosCallError> {
        let parsed = parse_plan(body);
        let mut detail = ChaosAudit {
            action: "plan".to_owned(),
            ..ChaosAudit::default()
        };
        let result = async {
            let plan = parsed?;
            detail.kind = Some(plan.kind().allow_name().into_owned());
            self.preflight(&plan).await?;
            let view = self
                .node
                .chaos_view()
                .await
                .map_err(|_| ChaosCallError::Stopped)?;
            let radius = resolve(&plan, &view)?;
            let view = RadiusView::from(&radius);
            detail.nodes = Some(view.nodes.clone());
            let plan_hash = plan_hash(&plan);
            let caller = caller_id(who);
            let (token, expires) = self
                .chaos
                .confirmations()?
                .issue(
                    &plan_hash,
                    &radius_hash(&view),
                    &caller,
                    self.chaos.now_ms(),
                )
                .map_err(|_| ChaosCallError::NoRandomness)?;
            Ok(PlanResponse {
                node: self.node.id().get(),
                plan,
                radius: view,
                plan_hash,
                token,
                caller,
                expires_unix_ms: expires,
            })
        }
        .await;
        self.audit(
            who,
            "POST",
            "/control/chaos/plans",
            &result.as_ref().map(|_| 200),
            detail,
        );
        result
    }

    /// What this node's `[chaos]` says of `plan` now (the entry node must allow it even when
    /// it is not a target): the same checks, in the same order, as the runtime's apply.
    async fn preflight(&self, plan: &FaultPlan) -> Result<(), ChaosCallError> {
        let refuse = |source| ChaosCallError::Chaos {
            node: self.node.id().get(),
            source,
        };
        if let Some(config) = &self.chaos.config {
            if !config.enabled {
                return Err(refuse(ChaosError::Disabled));
            }
            let kind = plan.kind().allow_name();
            if !config.allowed_kinds.contains(kind.as_ref()) {
                return Err(refuse(ChaosError::KindNotAllowed {
                    kind: kind.into_owned(),
                }));
            }
            if plan.duration() > config.max_duration {
                return Err(refuse(ChaosError::DurationOverMax {
                    duration: plan.duration(),
                    max: config.max_duration,
                }));
            }
        }
        let snapshot = self
            .node
            .snapshot()
            .await
            .map_err(|_| ChaosCallError::Stopped)?;
        if snapshot.chaos.kill_switch_engaged {
            return Err(refuse(ChaosError::KillSwitchEngaged));
        }
        Ok(())
    }

    /// The start call: redeems the token, resolves again, fans out. `Ok((answer, every
    /// target confirmed))`.
    pub async fn start(
        &self,
        who: &Principal,
        body: &[u8],
    ) -> Result<(StartResponse, bool), ChaosCallError> {
        let mut detail = ChaosAudit {
            action: "activate".to_owned(),
            ..ChaosAudit::default()
        };
        let result = self.start_inner(who, body, &mut detail).await;
        let status = match &result {
            Ok((_, true)) => Ok(201),
            Ok((_, false)) => Ok(207),
            Err(e) => Err(e),
        };
        self.audit(who, "POST", "/control/chaos/experiments", &status, detail);
        result
    }

    async fn start_inner(
        &self,
        who: &Principal,
        body: &[u8],
        detail: &mut ChaosAudit,
    ) -> Result<(StartResponse, bool), ChaosCallError> {
        let request: StartRequest = serde_json::from_slice(body)
            .map_err(|e| ChaosCallError::BadRequest(format!("the start request: {e}")))?;
        let plan = request.plan;
        detail.kind = Some(plan.kind().allow_name().into_owned());
        let claims = self.chaos.confirmations()?.redeem(
            &request.token,
            &plan_hash(&plan),
            &caller_id(who),
            self.chaos.now_ms(),
        )?;
        self.preflight(&plan).await?;
        let view = self
            .node
            .chaos_view()
            .await
            .map_err(|_| ChaosCallError::Stopped)?;
        let radius = resolve(&plan, &view)?;
        let radius_view = RadiusView::from(&radius);
        if radius_hash(&radius_view) != claims.radius_hash {
            return Err(ChaosCallError::RadiusChanged);
        }
        detail.nodes = Some(radius_view.nodes.clone());
        let id = ExperimentRef {
            origin: self.node.id(),
            serial: self.chaos.serial.fetch_add(1, Ordering::Relaxed),
        };
        detail.experiment = Some(id.to_string());
        let activated = self.chaos.now_ms();
        let targets = self
            .apply_everywhere(who, id, &plan, &radius, &radius_view)
            .await?;
        let confirmed = self.chaos.now_ms();
        let refusal = targets
            .iter()
            .find(|t| !t.ok && t.status.is_some())
            .cloned();
        if let Some(refused) = refusal {
            // Everywhere or nowhere: take it back where it applied.
            let abort = RelayRequest::Abort {
                id: id.to_string(),
                caller: caller_id(who),
            };
            for t in targets.iter().filter(|t| t.ok) {
                if t.node == self.node.id().get() {
                    let _ = self.node.chaos_abort(id).await;
                } else {
                    let members = self.chaos.members(&self.node).await?;
                    let addr = members
                        .iter()
                        .find(|(n, _)| n.get() == t.node)
                        .and_then(|(_, a)| a.clone());
                    let _ = self
                        .chaos
                        .relay(&self.node, NodeId::new(t.node), addr.as_deref(), &abort)
                        .await;
                }
            }
            let status = refused
                .status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::CONFLICT);
            let message = refused.error.clone().unwrap_or_default();
            let reason = refused
                .reason
                .clone()
                .unwrap_or_else(|| "target-refused".to_owned());
            return Err(ChaosCallError::TargetRefused {
                status,
                reason,
                message: format!("{message}; the targets that applied it were aborted"),
                targets,
            });
        }
        let all = targets.iter().all(|t| t.ok);
        let deadline = activated
            .saturating_add(radius_view.start_ms)
            .saturating_add(radius_view.duration_ms);
        self.chaos
            .fanned_out(&self.node, &self.audit, id, deadline, &targets);
        Ok((
            StartResponse {
                id: id.to_string(),
                activated_unix_ms: activated,
                confirmed_unix_ms: confirmed,
                deadline_unix_ms: deadline,
                radius: radius_view,
                targets,
            },
            all,
        ))
    }

    async fn apply_everywhere(
        &self,
        who: &Principal,
        id: ExperimentRef,
        plan: &FaultPlan,
        radius: &BlastRadius,
        radius_view: &RadiusView,
    ) -> Result<Vec<TargetResult>, ChaosCallError> {
        let me = self.node.id();
        let members: BTreeMap<NodeId, Option<String>> =
            self.chaos.members(&self.node).await?.into_iter().collect();
        let request = RelayRequest::Apply {
            id: id.to_string(),
            plan: Box::new(plan.clone()),
            radius: radius_view.clone(),
            caller: caller_id(who),
        };
        let calls = radius.nodes.iter().map(|target| {
            let request = &request;
            let members = &members;
            async move {
                if *target == me {
                    self.apply_here(id, plan.clone(), radius.clone()).await
                } else {
                    let addr = members.get(target).cloned().flatten();
                    self.chaos
                        .relay(&self.node, *target, addr.as_deref(), request)
                        .await
                }
            }
        });
        Ok(join_all(calls).await)
    }

    async fn apply_here(
        &self,
        id: ExperimentRef,
        plan: FaultPlan,
        radius: BlastRadius,
    ) -> TargetResult {
        let me = self.node.id().get();
        match self.node.chaos_apply(id, plan, radius).await {
            Ok(status) => {
                self.chaos
                    .watch_reverts(self.node.clone(), self.audit.clone());
                target_ok(me, &status)
            }
            Err(e) => target_error(me, &e),
        }
    }

    /// This node's experiments.
    pub async fn list(&self) -> Result<ExperimentsResponse, ChaosCallError> {
        let me = self.node.id().get();
        let experiments = self
            .node
            .chaos_experiments()
            .await
            .map_err(|_| ChaosCallError::Stopped)?;
        let snapshot = self
            .node
            .snapshot()
            .await
            .map_err(|_| ChaosCallError::Stopped)?;
        let now = self.chaos.now_ms();
        let o = self.chaos.origin();
        let mut views: Vec<ExperimentView> = experiments
            .iter()
            .map(|e| {
                let mut v = view_of(me, e);
                v.targets = o.ledger.targets(e.id).unwrap_or_default();
                v
            })
            .collect();
        // Fanned out from here to other nodes only: listed from the ledger.
        let held: BTreeSet<ExperimentRef> = experiments.iter().map(|e| e.id).collect();
        views.extend(o.ledger.views_not_held(me, now, |id| held.contains(&id)));
        Ok(ExperimentsResponse {
            node: me,
            kill_switch_engaged: snapshot.chaos.kill_switch_engaged,
            experiments: views,
        })
    }

    /// Aborts `id` here and on every member.
    pub async fn abort(&self, who: &Principal, id: &str) -> Result<FanOutResponse, ChaosCallError> {
        let mut detail = ChaosAudit {
            action: "abort".to_owned(),
            experiment: Some(id.chars().take(64).collect()),
            ..ChaosAudit::default()
        };
        let result = async {
            let parsed: ExperimentRef = id
                .parse()
                .map_err(|_| ChaosCallError::BadId(id.chars().take(64).collect()))?;
            let me = self.node.id().get();
            let here = match self.node.chaos_abort(parsed).await {
                Ok(status) => target_ok(me, &status),
                Err(e) => target_error(me, &e),
            };
            self.chaos.origin().ledger.ended(parsed, "aborted");
            let mut targets = vec![here];
            targets.extend(
                self.chaos
                    .fan_out(
                        &self.node,
                        &RelayRequest::Abort {
                            id: parsed.to_string(),
                            caller: caller_id(who),
                        },
                    )
                    .await?,
            );
            Ok(FanOutResponse {
                action: "abort".to_owned(),
                id: Some(parsed.to_string()),
                targets,
            })
        }
        .await;
        if let Ok(r) = &result {
            detail.nodes = Some(r.targets.iter().filter(|t| t.ok).map(|t| t.node).collect());
        }
        self.audit(
            who,
            "DELETE",
            "/control/chaos/experiments/{id}",
            &result.as_ref().map(|_| 200),
            detail,
        );
        result
    }

    /// Engages (`engage`) or re-arms the kill switch here and on every member.
    pub async fn kill_switch(
        &self,
        who: &Principal,
        engage: bool,
    ) -> Result<FanOutResponse, ChaosCallError> {
        let action = if engage { "kill-switch" } else { "rearm" };
        let mut detail = ChaosAudit {
            action: action.to_owned(),
            ..ChaosAudit::default()
        };
        let result = async {
            let here = self.local_kill_switch(engage).await?;
            if engage {
                self.chaos.origin().ledger.end_all("kill-switch");
            }
            let request = if engage {
                RelayRequest::KillSwitch {
                    caller: caller_id(who),
                }
            } else {
                RelayRequest::Rearm {
                    caller: caller_id(who),
                }
            };
            let mut targets = vec![here];
            targets.extend(self.chaos.fan_out(&self.node, &request).await?);
            Ok(FanOutResponse {
                action: action.to_owned(),
                id: None,
                targets,
            })
        }
        .await;
        if let Ok(r) = &result {
            detail.nodes = Some(r.targets.iter().filter(|t| t.ok).map(|t| t.node).collect());
        }
        let method = if engage { "POST" } else { "DELETE" };
        self.audit(
            who,
            method,
            "/control/chaos/kill-switch",
            &result.as_ref().map(|_| 200),
            detail,
        );
        result
    }

    async fn local_kill_switch(&self, engage: bool) -> Result<TargetResult, ChaosCallError> {
        let me = self.node.id().get();
        let reverted = if engage {
            Some(
                self.node
                    .chaos_kill_switch()
                    .await
                    .map_err(|_| ChaosCallError::Stopped)?,
            )
        } else {
            self.node
                .chaos_rearm()
                .await
                .map_err(|_| ChaosCallError::Stopped)?;
            None
        };
        Ok(TargetResult {
            node: me,
            ok: true,
            experiment: None,
            reverted,
            error: None,
            reason: None,
            status: None,
        })
    }

    /// The relay route: another node asks this one. `who` must be a node certificate (the
    /// permission table's [`Requirement::NodeCertificate`](meshkit_api::routes::Requirement)
    /// already checked it; checked again here, as the rule is this route's).
    pub async fn relay(
        &self,
        who: &Principal,
        body: &[u8],
    ) -> Result<TargetResult, ChaosCallError> {
        let mut detail = ChaosAudit {
            action: "relay".to_owned(),
            relayed_by: Some(who.name.clone()),
            ..ChaosAudit::default()
        };
        let result = self.relay_inner(who, body, &mut detail).await;
        // A status ask changes nothing: like a listing, it is not written unless refused.
        if result.is_ok() && detail.action == "relay-status" {
            return result;
        }
        // A relay refused by this node's own checks is refused as a whole: the origin rolls
        // back. A target's per-node error travels as its status.
        self.audit(
            who,
            "POST",
            "/control/chaos/relay",
            &result.as_ref().map(|_| 200),
            detail,
        );
        result
    }

    async fn relay_inner(
        &self,
        who: &Principal,
        body: &[u8],
        detail: &mut ChaosAudit,
    ) -> Result<TargetResult, ChaosCallError> {
        if who.auth != crate::audit::AuthMethod::ClientCertificate
            || !crate::auth::is_node_name(&who.name)
        {
            return Err(ChaosCallError::Forbidden(format!(
                "{} may not relay chaos: POST /control/chaos/relay takes node certificates only",
                who.name
            )));
        }
        let request: RelayRequest = serde_json::from_slice(body)
            .map_err(|e| ChaosCallError::BadRequest(format!("the relay request: {e}")))?;
        detail.action = format!("relay-{}", request.op());
        detail.caller = Some(request.caller().chars().take(128).collect());
        let me = self.node.id().get();
        let here = |source| ChaosCallError::Chaos { node: me, source };
        match request {
            RelayRequest::Apply {
                id, plan, radius, ..
            } => {
                detail.experiment = Some(id.chars().take(64).collect());
                detail.kind = Some(plan.kind().allow_name().into_owned());
                let id: ExperimentRef = id
                    .parse()
                    .map_err(|_| ChaosCallError::BadId(id.chars().take(64).collect()))?;
                let radius = radius
                    .to_radius(&plan)
                    .map_err(|e| ChaosCallError::BadRequest(e.to_string()))?;
                if !radius.nodes.contains(&self.node.id()) {
                    return Err(ChaosCallError::BadRequest(format!(
                        "node-{me} is not in the radius it was asked to apply"
                    )));
                }
                detail.nodes = Some(radius.nodes.iter().map(|n| n.get()).collect());
                let status = self
                    .node
                    .chaos_apply(id, *plan, radius)
                    .await
                    .map_err(here)?;
                self.chaos
                    .watch_reverts(self.node.clone(), self.audit.clone());
                Ok(target_ok(me, &status))
            }
            RelayRequest::Abort { id, .. } => {
                detail.experiment = Some(id.chars().take(64).collect());
                let id: ExperimentRef = id
                    .parse()
                    .map_err(|_| ChaosCallError::BadId(id.chars().take(64).collect()))?;
                let status = self.node.chaos_abort(id).await.map_err(here)?;
                Ok(target_ok(me, &status))
            }
            RelayRequest::Status { id, .. } => {
                detail.experiment = Some(id.chars().take(64).collect());
                let id: ExperimentRef = id
                    .parse()
                    .map_err(|_| ChaosCallError::BadId(id.chars().take(64).collect()))?;
                let experiments = self
                    .node
                    .chaos_experiments()
                    .await
                    .map_err(|_| ChaosCallError::Stopped)?;
                let status = experiments
                    .iter()
                    .find(|e| e.id == id)
                    .ok_or_else(|| here(ChaosError::UnknownExperiment(id)))?;
                Ok(target_ok(me, status))
            }
            RelayRequest::KillSwitch { .. } => self.local_kill_switch(true).await,
            RelayRequest::Rearm { .. } => self.local_kill_switch(false).await,
        }
    }
}

/// A target's confirmation: the experiment as it now stands there.
fn target_ok(node: u64, status: &ExperimentStatus) -> TargetResult {
    TargetResult {
        node,
        ok: true,
        experiment: Some(view_of(node, status)),
        reverted: None,
        error: None,
        reason: None,
        status: None,
    }
}

fn target_error(node: u64, e: &ChaosError) -> TargetResult {
    TargetResult {
        node,
        ok: false,
        experiment: None,
        reverted: None,
        status: Some(chaos_status(e).as_u16()),
        error: Some(format!("node-{node}: {e}")),
        reason: Some(chaos_reason(e).to_owned()),
    }
}

/// A plan from a request body, the error naming the field.
fn parse_plan(body: &[u8]) -> Result<FaultPlan, ChaosCallError> {
    if body.len() > MAX_CHAOS_BODY_BYTES {
        return Err(ChaosCallError::BadRequest(format!(
            "the plan is over {MAX_CHAOS_BODY_BYTES} bytes"
        )));
    }
    serde_json::from_slice(body).map_err(|e| ChaosCallError::BadRequest(format!("the plan: {e}")))
}

/// SHA-256 of the plan's canonical JSON (the [`RawFaultPlan`](meshkit::diag::fault::RawFaultPlan)
/// form with every default written, fields in declaration order).
pub fn plan_hash(plan: &FaultPlan) -> String {
    // A plan of strings and numbers: serializing cannot fail.
    sha256_hex(&serde_json::to_vec(plan).unwrap_or_default())
}

fn radius_hash(radius: &RadiusView) -> String {
    sha256_hex(&serde_json::to_vec(radius).unwrap_or_default())
}

/// One experiment as this node holds it, on the wire.
pub fn view_of(node: u64, e: &ExperimentStatus) -> ExperimentView {
    ExperimentView {
        id: e.id.to_string(),
        node,
        kind: e.kind.clone(),
        plan: e.plan.clone(),
        radius: RadiusView::from(&e.radius),
        phase: e.phase.clone(),
        end_reason: e.end_reason.clone(),
        activated_at_unix_ms: e.activated_at_unix_ms,
        deadline_unix_ms: e.deadline_unix_ms,
        remaining_ms: e.remaining_ms,
        applied_here: e.applied_here,
        reverted_at_unix_ms: e.reverted_at_unix_ms,
        targets: Vec::new(),
    }
}

// ---- HTTP handlers ------------------------------------------------------------------------

/// What every chaos route needs: the node, the chaos state and audit log (a [`Ctx`]), and the
/// verified caller. Extracted once here rather than in each handler; a request without a
/// verified caller (the authorization layer lets none through to these routes) is refused 403.
pub struct ChaosCall {
    ctx: Ctx,
    who: Option<Principal>,
}

impl ChaosCall {
    fn caller(&self) -> Result<&Principal, ChaosCallError> {
        self.who
            .as_ref()
            .ok_or_else(|| ChaosCallError::Forbidden("no verified caller".to_owned()))
    }
}

impl axum::extract::FromRequestParts<NodeHandle> for ChaosCall {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        node: &NodeHandle,
    ) -> Result<Self, Response> {
        let missing = |what: &str| {
            tracing::error!("chaos route without its {what} extension: a router wiring bug");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        };
        let chaos = parts
            .extensions
            .get::<Arc<ChaosControl>>()
            .cloned()
            .ok_or_else(|| missing("ChaosControl"))?;
        let access = parts
            .extensions
            .get::<AccessControl>()
            .ok_or_else(|| missing("AccessControl"))?;
        Ok(Self {
            ctx: Ctx {
                node: node.clone(),
                chaos,
                audit: access.audit().clone(),
            },
            who: parts.extensions.get::<Principal>().cloned(),
        })
    }
}

/// 200 with the answer as JSON, or the error's own status and body.
fn reply<T: serde::Serialize>(outcome: Result<T, ChaosCallError>) -> Response {
    match outcome {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /control/chaos/plans`.
pub async fn plan_route(call: ChaosCall, body: Bytes) -> Response {
    reply(match call.caller() {
        Ok(who) => call.ctx.plan(who, &body).await,
        Err(e) => Err(e),
    })
}

/// `POST /control/chaos/experiments`: 201 when every target confirmed, 207 when some could not
/// be reached (each target's outcome is in the body).
pub async fn start_route(call: ChaosCall, body: Bytes) -> Response {
    let started = match call.caller() {
        Ok(who) => call.ctx.start(who, &body).await,
        Err(e) => Err(e),
    };
    match started {
        Ok((answer, true)) => (StatusCode::CREATED, axum::Json(answer)).into_response(),
        Ok((answer, false)) => (StatusCode::MULTI_STATUS, axum::Json(answer)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /control/chaos/experiments`.
pub async fn list_route(call: ChaosCall) -> Response {
    reply(call.ctx.list().await)
}

/// `DELETE /control/chaos/experiments/{id}`.
pub async fn abort_route(call: ChaosCall, Path(id): Path<String>) -> Response {
    reply(match call.caller() {
        Ok(who) => call.ctx.abort(who, &id).await,
        Err(e) => Err(e),
    })
}

/// `POST /control/chaos/kill-switch`.
pub async fn kill_switch_route(call: ChaosCall) -> Response {
    reply(match call.caller() {
        Ok(who) => call.ctx.kill_switch(who, true).await,
        Err(e) => Err(e),
    })
}

/// `DELETE /control/chaos/kill-switch`: re-arm.
pub async fn rearm_route(call: ChaosCall) -> Response {
    reply(match call.caller() {
        Ok(who) => call.ctx.kill_switch(who, false).await,
        Err(e) => Err(e),
    })
}

/// `POST /control/chaos/relay`.
pub async fn relay_route(call: ChaosCall, body: Bytes) -> Response {
    reply(match call.caller() {
        Ok(who) => call.ctx.relay(who, &body).await,
        Err(e) => Err(e),
    })
}
