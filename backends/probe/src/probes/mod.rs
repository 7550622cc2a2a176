//! The probe types: API, authorization behaviour, watch streams, transport.
//!
//! Each type is an [`AsyncProbe`]: the runtime's probe host calls `check` when a run is due, drops
//! the future at the group's timeout, and the core's scheduler turns results into states (Failing
//! after `failure_threshold` failures in a row, Degraded after slow passes, Healthy after
//! `success_threshold` passes). A probe only says pass or fail, with a message that names what it
//! saw.
//!
//! | type | probes per target | name |
//! | --- | --- | --- |
//! | [`api`] | one per endpoint | `<group>/api-<endpoint>@<target>` |
//! | [`authz`] | one | `<group>/authz@<target>` |
//! | [`watch`] | one per stream and protocol | `<group>/watch-<stream>-<sse\|grpc>@<target>` |
//! | [`transport`] | two | `<group>/transport-h3@<target>`, `<group>/transport-h2@<target>` |
//!
//! Every probe talks through the agent's own [`Clients`] (its own QUIC endpoints and TCP
//! connections, optionally from its own source address), never a production client's. What a
//! run learns besides pass or fail (the HTTP version that carried it, the certificate expiry the
//! node reports) goes to its [`RunNote`], which the agent reads when the run's result arrives.

pub mod api;
pub mod authz;
pub mod transport;
pub mod watch;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use meshkit_api::alpn::HttpProtocol;
use meshkit_client::{Client, ClientConfig, ClientError, Protocols};
use meshkit_runtime::probe_host::{AsyncProbe, ProbeFailure};

use crate::config::{Credentials, GroupConfig, Identity, ProbeType};

/// The longest piece of a response body quoted in a failure message, in bytes.
pub const MAX_QUOTED_BODY_BYTES: usize = 120;

/// How long the observer client sends a server whose HTTP/3 failed straight to TCP.
pub const FALLBACK_MEMORY: Duration = Duration::from_secs(10);

/// The agent's connections: one client per way of asking, each with its own QUIC endpoint and
/// TCP connections, none shared with anything else in the process.
#[derive(Debug)]
pub struct Clients {
    /// The agent's identity, HTTP/3 falling back to TLS over TCP: the read API and streams.
    pub observer: Client,
    /// The same identity over HTTP/3 only.
    pub h3: Client,
    /// The same identity over TLS over TCP only (HTTP/2).
    pub h2: Client,
    /// No credentials at all: what an anonymous caller gets.
    pub anonymous: Client,
}

impl Clients {
    /// The clients of `credentials`, their connections from `bind` if given, every request
    /// bounded by `timeout`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] for unreadable or unusable TLS material.
    pub fn new(
        credentials: &Credentials,
        bind: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let base = |with_identity: bool, protocols: Protocols| {
            let mut config = ClientConfig::new(&credentials.ca)?;
            if let Some(name) = &credentials.server_name {
                config = config.with_server_name(name)?;
            }
            if with_identity {
                config = match &credentials.identity {
                    Identity::Token { token, .. } => config.with_token(token)?,
                    Identity::Certificate { cert, key } => config.with_identity(cert, key)?,
                };
            }
            if let Some(ip) = bind {
                config = config.with_bind_address(ip);
            }
            // With a fallback, HTTP/3 gets a third of the run: a run over an HTTP/3 outage
            // still answers over TCP in time (the transport probes are the ones that report
            // the outage).
            let h3_timeout = if protocols == Protocols::H3ThenTcp {
                timeout / 3
            } else {
                timeout
            };
            let config = config
                .with_protocols(protocols)
                .with_h3_timeout(h3_timeout)
                .with_connect_timeout(timeout)
                .with_request_timeout(timeout)
                // Over an HTTP/3 outage the read probes go straight to TCP for a while rather
                // than wait for HTTP/3 on every request (the transport probes, HTTP/3 only,
                // are the ones that report the outage).
                .with_fallback_memory(FALLBACK_MEMORY);
            Client::new(&config)
        };
        Ok(Self {
            observer: base(true, Protocols::H3ThenTcp)?,
            h3: base(true, Protocols::H3Only)?,
            h2: base(true, Protocols::TcpOnly)?,
            anonymous: base(false, Protocols::H3ThenTcp)?,
        })
    }

    /// Closes every connection (a reload that replaces the clients, the agent's exit).
    pub async fn close(&self) {
        self.observer.close().await;
        self.h3.close().await;
        self.h2.close().await;
        self.anonymous.close().await;
    }
}

/// What one run learned besides its verdict, for the metrics and the history. Written by the
/// probe, read by the agent when the run's result arrives (at most one run of a probe is in
/// flight, so the note is that run's).
#[derive(Debug, Default)]
pub struct RunNote {
    inner: Mutex<NoteInner>,
}

#[derive(Clone, Copy, Debug, Default)]
struct NoteInner {
    protocol: Option<HttpProtocol>,
    cert_expiry_unix_s: Option<i64>,
}

impl RunNote {
    fn lock(&self) -> std::sync::MutexGuard<'_, NoteInner> {
        // Nothing panics while holding it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A run starts: what the last one learned no longer holds.
    pub fn clear(&self) {
        self.lock().protocol = None;
    }

    /// The HTTP version that carried the run's request.
    pub fn set_protocol(&self, protocol: HttpProtocol) {
        self.lock().protocol = Some(protocol);
    }

    /// The expiry of the node's certificate, as the node reports it.
    pub fn set_cert_expiry(&self, unix_s: i64) {
        self.lock().cert_expiry_unix_s = Some(unix_s);
    }

    /// The HTTP version of the last run, if one answered.
    pub fn protocol(&self) -> Option<HttpProtocol> {
        self.lock().protocol
    }

    /// The certificate expiry last seen.
    pub fn cert_expiry_unix_s(&self) -> Option<i64> {
        self.lock().cert_expiry_unix_s
    }
}

/// One probe to register: its name parts and its check.
pub struct Built {
    /// The probe's name (`<group>/<type>[-<detail>]@<target>`).
    pub name: String,
    /// Its type (`kind` label).
    pub kind: ProbeType,
    /// The node it runs against.
    pub target: String,
    /// What its runs learn.
    pub note: Arc<RunNote>,
    /// The check.
    pub probe: Box<dyn AsyncProbeBox>,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// An [`AsyncProbe`] that can be registered from a box (the host takes `impl AsyncProbe`).
pub trait AsyncProbeBox: AsyncProbe {}

impl<T: AsyncProbe> AsyncProbeBox for T {}

impl AsyncProbe for Box<dyn AsyncProbeBox> {
    fn kind(&self) -> &str {
        self.as_ref().kind()
    }

    fn check(&self) -> meshkit_runtime::probe_host::CheckFuture {
        self.as_ref().check()
    }
}

/// The probe name of `detail` (may be empty) of `kind` in `group` against `target`.
pub fn probe_name(group: &str, kind: ProbeType, detail: &str, target: &str) -> String {
    if detail.is_empty() {
        format!("{group}/{}@{target}", kind.as_str())
    } else {
        format!("{group}/{}-{detail}@{target}", kind.as_str())
    }
}

/// Every probe `group` runs against `target`.
pub fn build(group: &GroupConfig, target: &str, clients: &Arc<Clients>) -> Vec<Built> {
    let mut out = Vec::new();
    let mut push = |kind, detail: &str, note: Arc<RunNote>, probe: Box<dyn AsyncProbeBox>| {
        out.push(Built {
            name: probe_name(&group.name, kind, detail, target),
            kind,
            target: target.to_owned(),
            note,
            probe,
        });
    };
    for kind in &group.probes {
        match kind {
            ProbeType::Api => {
                for endpoint in &group.api.endpoints {
                    let note = Arc::new(RunNote::default());
                    let probe = api::ApiProbe::new(
                        clients.clone(),
                        target,
                        *endpoint,
                        group.api.clone(),
                        note.clone(),
                    );
                    push(*kind, endpoint.as_str(), note, Box::new(probe));
                }
            }
            ProbeType::Authz => {
                let note = Arc::new(RunNote::default());
                let probe = authz::AuthzProbe::new(clients.clone(), target, note.clone());
                push(*kind, "", note, Box::new(probe));
            }
            ProbeType::Watch => {
                for stream in &group.watch.streams {
                    for (on, via) in [
                        (group.watch.sse, watch::Via::Sse),
                        (group.watch.grpc, watch::Via::Grpc),
                    ] {
                        if !on {
                            continue;
                        }
                        let note = Arc::new(RunNote::default());
                        let probe = watch::WatchProbe::new(
                            clients.clone(),
                            target,
                            *stream,
                            via,
                            group.watch.clone(),
                            note.clone(),
                        );
                        let detail = format!("{}-{}", stream.as_str(), via.as_str());
                        push(*kind, &detail, note, Box::new(probe));
                    }
                }
            }
            ProbeType::Transport => {
                for protocol in [HttpProtocol::H3, HttpProtocol::H2] {
                    let note = Arc::new(RunNote::default());
                    let probe = transport::TransportProbe::new(
                        clients.clone(),
                        target,
                        protocol,
                        group.transport.clone(),
                        note.clone(),
                    );
                    push(*kind, protocol.as_str(), note, Box::new(probe));
                }
            }
        }
    }
    out
}

/// The start of `body`, for a failure message.
pub(crate) fn quote(body: &str) -> &str {
    let body = body.trim();
    if body.len() <= MAX_QUOTED_BODY_BYTES {
        return body;
    }
    let mut cut = MAX_QUOTED_BODY_BYTES;
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    &body[..cut]
}

/// A failure saying `why`.
pub(crate) fn fail(why: impl std::fmt::Display) -> ProbeFailure {
    ProbeFailure::new(why)
}
