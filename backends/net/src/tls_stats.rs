//! What the node's TLS did: certificate reloads, the expiry of the certificate in use, and
//! handshakes refused, by listener and reason. One [`TlsStats`] is shared by the QUIC transport
//! (listener `mesh`), the control server (listener `control`, TCP and QUIC) and the reloader;
//! `/metrics` renders it through the transport's counters ([`TlsCounters`]).
//!
//! A peer whose certificate this node refuses (expired or not yet valid, signed by an unknown
//! CA, missing, unusable) is never refused silently: each refusal is counted under
//! `mesh_transport_handshake_failures_total{listener, reason}` and logged at `warn` with the
//! peer's address and rustls's reason, at most [`REFUSAL_LOG_BURST`] lines per listener every
//! [`REFUSAL_LOG_WINDOW`] (the next line says how many were left out), so a peer retrying in a
//! loop cannot flood the log.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rustls::AlertDescription;
use tokio::sync::watch;

/// Refusals logged per listener within one [`REFUSAL_LOG_WINDOW`]; the rest are only counted.
pub const REFUSAL_LOG_BURST: u32 = 10;
/// The window of [`REFUSAL_LOG_BURST`].
pub const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(60);

/// Where a handshake was refused: a bounded metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Listener {
    /// The node-to-node QUIC transport: incoming handshakes, and dials whose server
    /// certificate this node refused.
    Mesh,
    /// The control API (TLS over TCP, and HTTP/3 over QUIC).
    Control,
}

impl Listener {
    /// Every listener, in label order.
    pub const ALL: [Self; 2] = [Self::Mesh, Self::Control];

    /// The metric label: `mesh` or `control`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mesh => "mesh",
            Self::Control => "control",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Mesh => 0,
            Self::Control => 1,
        }
    }
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why a handshake failed: a bounded metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FailureReason {
    /// The peer's certificate is outside its validity period (expired, or not yet valid: TLS
    /// has one alert for both; the log line says which).
    Expired,
    /// The peer's certificate does not chain to a CA this node trusts.
    Untrusted,
    /// Anything else: another certificate fault (missing, wrong usage, bad signature), a
    /// protocol error, a timeout, a peer without a node identity.
    Other,
}

impl FailureReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 3] = [Self::Expired, Self::Untrusted, Self::Other];

    /// The metric label: `expired`, `untrusted` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Untrusted => "untrusted",
            Self::Other => "other",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Expired => 0,
            Self::Untrusted => 1,
            Self::Other => 2,
        }
    }

    /// The reason for a TLS alert this node sent.
    fn of_alert(alert: u8) -> Self {
        if alert == u8::from(AlertDescription::CertificateExpired) {
            Self::Expired
        } else if alert == u8::from(AlertDescription::UnknownCA) {
            Self::Untrusted
        } else {
            Self::Other
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Alerts a TLS stack sends when it refuses the peer's certificate.
fn is_certificate_alert(alert: u8) -> bool {
    [
        AlertDescription::BadCertificate,
        AlertDescription::UnsupportedCertificate,
        AlertDescription::CertificateRevoked,
        AlertDescription::CertificateExpired,
        AlertDescription::CertificateUnknown,
        AlertDescription::UnknownCA,
        AlertDescription::CertificateRequired,
    ]
    .into_iter()
    .any(|a| u8::from(a) == alert)
}

/// How a failed handshake was classified: its label, and whether this node refused the peer's
/// certificate (those are logged at `warn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    /// The metric label.
    pub reason: FailureReason,
    /// This node refused the certificate the peer presented (or its lack of one).
    pub certificate_refused: bool,
}

impl Classified {
    const OTHER: Self = Self {
        reason: FailureReason::Other,
        certificate_refused: false,
    };

    /// A rustls error met by this node's side of a handshake.
    pub fn of_rustls(error: &rustls::Error) -> Self {
        use rustls::CertificateError as C;
        match error {
            rustls::Error::InvalidCertificate(cert) => Self {
                reason: match cert {
                    C::Expired | C::ExpiredContext { .. } | C::NotValidYet => {
                        FailureReason::Expired
                    }
                    C::NotValidYetContext { .. } => FailureReason::Expired,
                    C::UnknownIssuer => FailureReason::Untrusted,
                    _ => FailureReason::Other,
                },
                certificate_refused: true,
            },
            rustls::Error::NoCertificatesPresented => Self {
                reason: FailureReason::Other,
                certificate_refused: true,
            },
            _ => Self::OTHER,
        }
    }

    /// An I/O error from a TLS handshake over TCP (tokio-rustls wraps rustls's errors).
    pub fn of_io(error: &std::io::Error) -> Self {
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map_or(Self::OTHER, Self::of_rustls)
    }

    /// A QUIC handshake that failed. A TLS failure on this side is a local transport error
    /// whose code carries the alert sent; a refusal by the peer arrives as its close.
    pub fn of_quic(error: &quinn::ConnectionError) -> Self {
        match error {
            quinn::ConnectionError::TransportError(e) => match crypto_alert(u64::from(e.code)) {
                Some(alert) if is_certificate_alert(alert) => Self {
                    reason: FailureReason::of_alert(alert),
                    certificate_refused: true,
                },
                _ => Self::OTHER,
            },
            _ => Self::OTHER,
        }
    }
}

/// The TLS alert in a QUIC transport error code (`0x100 + alert`), if it is one.
fn crypto_alert(code: u64) -> Option<u8> {
    (0x100..=0x1ff)
        .contains(&code)
        .then(|| u8::try_from(code - 0x100).ok())
        .flatten()
}

/// The peer's close of a QUIC handshake, when it refused this node's certificate: the alert's
/// reason text. Logged by dialers: the peer's refusal is counted by the peer, not here.
pub fn peer_refused_our_certificate(error: &quinn::ConnectionError) -> Option<String> {
    match error {
        quinn::ConnectionError::ConnectionClosed(close) => {
            crypto_alert(u64::from(close.error_code))
                .filter(|&alert| is_certificate_alert(alert))
                .map(|_| String::from_utf8_lossy(&close.reason).into_owned())
        }
        _ => None,
    }
}

#[derive(Debug, Default)]
struct LogWindow {
    opened: Option<tokio::time::Instant>,
    logged: u32,
    suppressed: u64,
}

/// At most [`REFUSAL_LOG_BURST`] log lines per [`REFUSAL_LOG_WINDOW`]: for refusals a peer can
/// repeat as fast as it likes.
#[derive(Debug, Default)]
pub(crate) struct LogLimiter(Mutex<LogWindow>);

impl LogLimiter {
    /// `Some(n)` when a line may be logged now (`n` lines were left out since the last one
    /// logged), `None` when this one is left out.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = tokio::time::Instant::now();
        // Every critical section leaves the window consistent: a poisoned lock is usable.
        let mut window = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if window
            .opened
            .is_none_or(|opened| now.duration_since(opened) >= REFUSAL_LOG_WINDOW)
        {
            window.opened = Some(now);
            window.logged = 0;
        }
        if window.logged >= REFUSAL_LOG_BURST {
            window.suppressed += 1;
            return None;
        }
        window.logged += 1;
        Some(std::mem::take(&mut window.suppressed))
    }
}

/// Counters of the node's TLS, shared by its listeners and its reloader. They only grow, except
/// the expiry, which follows the certificate in use.
#[derive(Debug)]
pub struct TlsStats {
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// `notAfter` of the node's own certificate, Unix seconds; `i64::MIN` until one is known.
    not_after: AtomicI64,
    /// A `certificate-expiry` stand-in's `notAfter` and the switch that serves it: while the
    /// switch is on, the expiry reported is the stand-in's, read at each snapshot as the
    /// listeners read the switch at each handshake (so the metric never lags the experiment).
    stand_in: OnceLock<(i64, watch::Receiver<bool>)>,
    failures: [[AtomicU64; 3]; 2],
    windows: [LogLimiter; 2],
}

impl Default for TlsStats {
    fn default() -> Self {
        Self {
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            not_after: AtomicI64::new(i64::MIN),
            stand_in: OnceLock::new(),
            failures: Default::default(),
            windows: Default::default(),
        }
    }
}

/// A copy of [`TlsStats`] at one instant, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsCounters {
    /// Reloads of changed certificate files that were applied.
    pub reloads_ok: u64,
    /// Reloads refused (unreadable or unparsable file, key mismatch, wrong node, outside its
    /// validity, not signed by the CA); the node kept its previous material each time.
    pub reloads_failed: u64,
    /// `notAfter` of the certificate in use, Unix seconds.
    pub cert_not_after: Option<i64>,
    /// Failed handshakes, indexed by [`Listener`] then [`FailureReason`] (label order).
    pub handshake_failures: [[u64; 3]; 2],
}

impl TlsCounters {
    /// Failed handshakes on `listener` for `reason`.
    pub fn handshake_failures(&self, listener: Listener, reason: FailureReason) -> u64 {
        self.handshake_failures[listener.index()][reason.index()]
    }
}

impl meshkit_api::metrics::Source for TlsCounters {
    /// Certificate reloads and failed handshakes (the expiry gauge is written with the other
    /// transport families, by `meshkit_control::SnapshotMetrics`).
    fn write(&self, families: &mut meshkit_api::metrics::Families<'_, '_>) -> std::fmt::Result {
        use meshkit_api::metrics::catalogue::{
            TRANSPORT_CERT_RELOADS, TRANSPORT_HANDSHAKE_FAILURES,
        };
        families.counters(
            &TRANSPORT_CERT_RELOADS,
            [(["ok"], self.reloads_ok), (["error"], self.reloads_failed)],
        )?;
        let failures = Listener::ALL.into_iter().flat_map(|listener| {
            FailureReason::ALL.map(|reason| {
                (
                    [listener.as_str(), reason.as_str()],
                    self.handshake_failures(listener, reason),
                )
            })
        });
        families.counters(&TRANSPORT_HANDSHAKE_FAILURES, failures)
    }
}

impl TlsStats {
    /// A copy of the counters now.
    pub fn counters(&self) -> TlsCounters {
        let not_after = match self.stand_in.get() {
            Some((stand_in, serve)) if crate::tls::switch_on(serve) => *stand_in,
            _ => self.not_after.load(Ordering::Relaxed),
        };
        let mut handshake_failures = [[0; 3]; 2];
        for (row, counters) in handshake_failures.iter_mut().zip(&self.failures) {
            for (value, counter) in row.iter_mut().zip(counters) {
                *value = counter.load(Ordering::Relaxed);
            }
        }
        TlsCounters {
            reloads_ok: self.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.reloads_failed.load(Ordering::Relaxed),
            cert_not_after: (not_after != i64::MIN).then_some(not_after),
            handshake_failures,
        }
    }

    /// While `serve` holds `true`, the certificate in use is a stand-in that expires at
    /// `not_after` (Unix seconds). Set once, by the certificate reloader; a second call is
    /// ignored.
    pub fn set_stand_in(&self, not_after: i64, serve: watch::Receiver<bool>) {
        let _ = self.stand_in.set((not_after, serve));
    }

    /// The node's own certificate now expires at `not_after` (Unix seconds).
    pub fn set_cert_not_after(&self, not_after: i64) {
        self.not_after.store(not_after, Ordering::Relaxed);
    }

    /// A reload was applied.
    pub(crate) fn count_reload_ok(&self, not_after: i64) {
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        self.set_cert_not_after(not_after);
    }

    /// A reload was refused.
    pub(crate) fn count_reload_failed(&self) {
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failed handshake with `peer` on `listener`; when this node refused the
    /// peer's certificate, logs it at `warn` (within the rate limit) with `detail`, rustls's
    /// reason. Returns the classification, for the caller's own logging.
    pub fn record(
        &self,
        listener: Listener,
        peer: SocketAddr,
        classified: Classified,
        detail: &dyn std::fmt::Display,
    ) -> Classified {
        self.failures[listener.index()][classified.reason.index()].fetch_add(1, Ordering::Relaxed);
        if classified.certificate_refused {
            self.log_refusal(listener, peer, classified.reason, detail);
        }
        classified
    }

    /// [`TlsStats::record`] of a failed TLS-over-TCP handshake.
    pub fn record_io(
        &self,
        listener: Listener,
        peer: SocketAddr,
        error: &std::io::Error,
    ) -> Classified {
        self.record(listener, peer, Classified::of_io(error), error)
    }

    /// [`TlsStats::record`] of a failed QUIC handshake.
    pub fn record_quic(
        &self,
        listener: Listener,
        peer: SocketAddr,
        error: &quinn::ConnectionError,
    ) -> Classified {
        self.record(listener, peer, Classified::of_quic(error), error)
    }

    /// [`TlsStats::record`] of a failure that is not a certificate refusal (a timeout, a peer
    /// without a node identity).
    pub fn record_other(&self, listener: Listener) {
        self.failures[listener.index()][FailureReason::Other.index()]
            .fetch_add(1, Ordering::Relaxed);
    }

    fn log_refusal(
        &self,
        listener: Listener,
        peer: SocketAddr,
        reason: FailureReason,
        detail: &dyn std::fmt::Display,
    ) {
        let Some(suppressed) = self.windows[listener.index()].admit() else {
            return;
        };
        tracing::warn!(
            %listener,
            %peer,
            %reason,
            suppressed,
            "refused the peer's TLS certificate: {detail}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_certificate_errors_map_to_bounded_reasons() {
        use rustls::CertificateError as C;
        let of = |e: C| Classified::of_rustls(&rustls::Error::InvalidCertificate(e));
        assert_eq!(of(C::Expired).reason, FailureReason::Expired);
        assert_eq!(of(C::NotValidYet).reason, FailureReason::Expired);
        assert_eq!(of(C::UnknownIssuer).reason, FailureReason::Untrusted);
        assert_eq!(of(C::BadSignature).reason, FailureReason::Other);
        assert!(of(C::BadSignature).certificate_refused);
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(C::UnknownIssuer),
        );
        assert_eq!(
            Classified::of_io(&io),
            Classified {
                reason: FailureReason::Untrusted,
                certificate_refused: true
            }
        );
        let timeout = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert_eq!(Classified::of_io(&timeout), Classified::OTHER);
    }

    #[test]
    fn quic_codes_carry_the_alert() {
        assert_eq!(crypto_alert(0x100 + 45), Some(45));
        assert_eq!(crypto_alert(0x0a), None);
        assert_eq!(FailureReason::of_alert(45), FailureReason::Expired);
        assert_eq!(FailureReason::of_alert(48), FailureReason::Untrusted);
        assert_eq!(FailureReason::of_alert(42), FailureReason::Other);
        assert!(is_certificate_alert(116) && !is_certificate_alert(40));
    }

    #[tokio::test]
    async fn counters_render_every_label_and_refusals_are_counted_past_the_log_limit() {
        let stats = TlsStats::default();
        let peer = SocketAddr::from(([127, 0, 0, 1], 9));
        let expired = Classified {
            reason: FailureReason::Expired,
            certificate_refused: true,
        };
        for _ in 0..REFUSAL_LOG_BURST + 5 {
            stats.record(Listener::Control, peer, expired, &"certificate expired");
        }
        stats.record_other(Listener::Mesh);
        stats.count_reload_ok(1_900_000_000);
        stats.count_reload_failed();
        let counters = stats.counters();
        assert_eq!(
            counters.handshake_failures(Listener::Control, FailureReason::Expired),
            u64::from(REFUSAL_LOG_BURST) + 5
        );
        assert_eq!(counters.cert_not_after, Some(1_900_000_000));
        let window = stats.windows[Listener::Control.index()].0.lock().unwrap();
        assert_eq!((window.logged, window.suppressed), (REFUSAL_LOG_BURST, 5));
        drop(window);
        let text = meshkit_api::metrics::encode(counters).expect("the exposition");
        let expired = format!(
            "mesh_transport_handshake_failures_total{{listener=\"control\",reason=\"expired\"}} {}\n",
            REFUSAL_LOG_BURST + 5
        );
        for sample in [
            "mesh_transport_cert_reloads_total{result=\"ok\"} 1\n",
            "mesh_transport_cert_reloads_total{result=\"error\"} 1\n",
            &expired,
            "mesh_transport_handshake_failures_total{listener=\"mesh\",reason=\"other\"} 1\n",
            "mesh_transport_handshake_failures_total{listener=\"mesh\",reason=\"untrusted\"} 0\n",
        ] {
            assert!(text.contains(sample), "{sample} missing from:\n{text}");
        }
    }
}
