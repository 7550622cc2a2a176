//! Which connections the control API keeps, and for how long (docs/security.md).
//!
//! Anyone who can reach the port can open a connection, so what a connection holds is bounded
//! by who is on the other end:
//!
//! * **Every connection** holds one of [`ConnectionLimits::max_connections`] permits, from
//!   accept to close.
//! * **A handshake in progress** (TLS on TCP, QUIC) also holds one of
//!   [`ConnectionLimits::max_handshakes`], for at most [`ConnectionLimits::handshake_timeout`].
//! * **An anonymous connection** (handshake done, no client certificate: a load balancer's
//!   `/healthz`, a token holder, or an attacker) also holds one of the anonymous pool's permits:
//!   `max_connections - reserved_authenticated - max_handshakes`. The
//!   [`ConnectionLimits::reserved_authenticated`] permits left over are only ever taken by
//!   connections that presented a CA-signed client certificate, so a flood of anonymous
//!   connections cannot lock operators and nodes out.
//! * **Per source address** (an IPv4 address, or an IPv6 /64: what one host usually holds), the
//!   handshakes in progress are at most [`ConnectionLimits::max_per_address`], and so are the
//!   anonymous connections (counted apart, so an address full of idle anonymous connections can
//!   still start a handshake with a certificate): one address cannot take the anonymous pool
//!   or the handshakes from every other client (a load balancer's probes, other scrapers).
//!   Connections with a client certificate are not counted per address.
//! * **Deadlines**: a connection that sends no request within
//!   [`ConnectionLimits::first_request_timeout`] of its handshake, or none for
//!   [`ConnectionLimits::idle_timeout`] with nothing in flight (a long-lived answer such as
//!   server-sent events or a gRPC watch counts as in flight), is closed (HTTP/2 GOAWAY, HTTP/3
//!   `H3_NO_ERROR`). HTTP/2 also pings an idle peer and closes a connection whose peer stopped
//!   answering ([`H2_KEEP_ALIVE_INTERVAL`]).
//!
//! Refusals and closes are counted by [`AdmissionStats`] (rendered as
//! `mesh_transport_control_connections_refused_total{transport,reason}` and
//! `mesh_transport_control_connections_closed_total{transport,reason}`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Most connections one listener (TCP, or QUIC) holds at once; more are refused at accept.
/// Each costs a task, TLS state and HTTP/2 or HTTP/3 buffers (tens of KiB): 1,024 keeps the
/// control API under a few tens of MiB however it is used.
pub const MAX_CONNECTIONS: usize = 1024;
/// Connection permits only clients with a CA-signed certificate may take: operators (`meshctl`)
/// and other nodes keep this many connections however many anonymous clients are connected.
pub const RESERVED_AUTHENTICATED_CONNECTIONS: usize = 256;
/// Most TLS or QUIC handshakes in progress at once on one listener. A handshake costs a
/// signature (about 1 ms of a core) and lasts one or two round trips: 128 at once is far more
/// than honest clients need, and bounds what slow or abandoned handshakes hold.
pub const MAX_HANDSHAKES: usize = 128;
/// Most handshakes in progress, and most anonymous connections, from one source address (IPv4,
/// or an IPv6 /64; each counted on its own). A load balancer or scraper needs a few; 16 leaves
/// room for several behind one NAT while one address cannot take the anonymous pool or the
/// handshakes from everyone else.
pub const MAX_PER_ADDRESS: usize = 16;
/// Time a client has to finish its TLS (TCP) or QUIC handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection has, after its handshake, to send its first request head. Honest clients
/// send it in the same flight as the handshake's end; a connection that sends nothing only
/// holds a permit.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request in flight for this long is closed. Clients that keep a
/// connection for later requests (`meshctl`, Prometheus every 15 s to 1 min) reconnect in one
/// round trip; an idle connection otherwise holds a permit for nothing.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often an HTTP/2 connection pings a peer that sent nothing; a peer that does not answer
/// within the same time is gone (its long-lived streams with it).
pub const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Time a connection closed by a deadline has to finish its close (GOAWAY) before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The connection limits of one control API listener; [`Default`] gives the constants above.
/// Every field is a bound: see the module documentation for what each one protects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    max_connections: usize,
    reserved_authenticated: usize,
    max_handshakes: usize,
    max_per_address: usize,
    handshake_timeout: Duration,
    first_request_timeout: Duration,
    idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            reserved_authenticated: RESERVED_AUTHENTICATED_CONNECTIONS,
            max_handshakes: MAX_HANDSHAKES,
            max_per_address: MAX_PER_ADDRESS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            first_request_timeout: FIRST_REQUEST_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Connection limits that leave no permit for anonymous clients or for handshakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "connection limits: max_connections ({max_connections}) must exceed reserved_authenticated \
     ({reserved}) + max_handshakes ({handshakes}), and every count must be at least 1"
)]
#[non_exhaustive]
pub struct LimitsError {
    /// The total asked for.
    pub max_connections: usize,
    /// The reserved permits asked for.
    pub reserved: usize,
    /// The handshake permits asked for.
    pub handshakes: usize,
}

impl ConnectionLimits {
    /// Limits with these connection counts (and the default deadlines): `max_connections` in
    /// all, of which `reserved_authenticated` only for client certificates and `max_handshakes`
    /// handshaking; at most `per_address` handshaking, and as many anonymous, from one address. The
    /// anonymous pool is what is left, and must not be empty.
    pub fn with_counts(
        self,
        max_connections: usize,
        reserved_authenticated: usize,
        max_handshakes: usize,
        per_address: usize,
    ) -> Result<Self, LimitsError> {
        let error = LimitsError {
            max_connections,
            reserved: reserved_authenticated,
            handshakes: max_handshakes,
        };
        let used = reserved_authenticated
            .checked_add(max_handshakes)
            .ok_or(error)?;
        if max_connections <= used || max_handshakes == 0 || per_address == 0 {
            return Err(error);
        }
        Ok(Self {
            max_connections,
            reserved_authenticated,
            max_handshakes,
            max_per_address: per_address,
            ..self
        })
    }

    /// Limits with these deadlines: for the handshake, for the first request after it, and
    /// for a connection with nothing in flight.
    pub fn with_timeouts(
        self,
        handshake: Duration,
        first_request: Duration,
        idle: Duration,
    ) -> Self {
        Self {
            handshake_timeout: handshake,
            first_request_timeout: first_request,
            idle_timeout: idle,
            ..self
        }
    }

    /// Most connections in all.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Permits only certificate-authenticated connections take.
    pub fn reserved_authenticated(&self) -> usize {
        self.reserved_authenticated
    }

    /// Most handshakes in progress.
    pub fn max_handshakes(&self) -> usize {
        self.max_handshakes
    }

    /// Most handshakes in progress, and most anonymous connections, from one address.
    pub fn max_per_address(&self) -> usize {
        self.max_per_address
    }

    /// Most anonymous connections (handshake done, no client certificate) in all.
    pub fn max_anonymous(&self) -> usize {
        self.max_connections - self.reserved_authenticated - self.max_handshakes
    }

    /// The handshake deadline.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The first-request deadline.
    pub fn first_request_timeout(&self) -> Duration {
        self.first_request_timeout
    }

    /// The idle deadline.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}

/// The transport a connection came over; a bounded metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TLS on TCP (HTTP/2, HTTP/1.1).
    Tcp,
    /// QUIC (HTTP/3).
    Quic,
}

impl Transport {
    const ALL: [Self; 2] = [Self::Tcp, Self::Quic];

    fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Quic => "quic",
        }
    }
}

/// Why a connection was refused; a bounded metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The listener holds [`ConnectionLimits::max_connections`] (at accept).
    Connections,
    /// [`ConnectionLimits::max_handshakes`] are in progress (at accept).
    Handshakes,
    /// The source address holds [`ConnectionLimits::max_per_address`] handshakes
    /// in progress (at accept) or anonymous connections (after the handshake).
    Address,
    /// The anonymous pool is empty: the connection finished its handshake without a client
    /// certificate, and only reserved permits are left.
    Anonymous,
}

impl Refusal {
    const ALL: [Self; 4] = [
        Self::Connections,
        Self::Handshakes,
        Self::Address,
        Self::Anonymous,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Handshakes => "handshakes",
            Self::Address => "address",
            Self::Anonymous => "anonymous",
        }
    }
}

/// Why an open connection was closed by the server; a bounded metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// No request within [`ConnectionLimits::first_request_timeout`] of the handshake.
    FirstRequestTimeout,
    /// Nothing in flight for [`ConnectionLimits::idle_timeout`].
    IdleTimeout,
}

impl Closed {
    const ALL: [Self; 2] = [Self::FirstRequestTimeout, Self::IdleTimeout];

    fn as_str(self) -> &'static str {
        match self {
            Self::FirstRequestTimeout => "first_request_timeout",
            Self::IdleTimeout => "idle_timeout",
        }
    }
}

/// Refusal and close counters of both listeners, and their open connections.
#[derive(Debug, Default)]
pub struct AdmissionStats {
    refused: [[AtomicU64; Refusal::ALL.len()]; Transport::ALL.len()],
    closed: [[AtomicU64; Closed::ALL.len()]; Transport::ALL.len()],
    quic_retries: AtomicU64,
    /// The listeners' permits, for the gauge of open connections (weak: the listener owns them).
    gauges: Mutex<[Weak<Admission>; Transport::ALL.len()]>,
}

impl AdmissionStats {
    /// Connections of `transport` refused for `reason`.
    pub fn refused(&self, transport: Transport, reason: Refusal) -> u64 {
        self.refused[transport as usize][reason as usize].load(Ordering::Relaxed)
    }

    /// Connections of `transport` the server closed for `reason`.
    pub fn closed(&self, transport: Transport, reason: Closed) -> u64 {
        self.closed[transport as usize][reason as usize].load(Ordering::Relaxed)
    }

    /// QUIC Retry packets sent: connection attempts from addresses that had not proven they
    /// receive packets, asked to echo a token first because more than half the handshake
    /// permits were taken.
    pub fn quic_retries(&self) -> u64 {
        self.quic_retries.load(Ordering::Relaxed)
    }

    /// Refusals of every reason and transport.
    pub fn refused_total(&self) -> u64 {
        self.refused
            .iter()
            .flatten()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub(super) fn count_refused(&self, transport: Transport, reason: Refusal) {
        self.refused[transport as usize][reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_closed(&self, transport: Transport, reason: Closed) {
        self.closed[transport as usize][reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_quic_retry(&self) {
        self.quic_retries.fetch_add(1, Ordering::Relaxed);
    }

    fn attach(&self, transport: Transport, admission: &Arc<Admission>) {
        lock(&self.gauges)[transport as usize] = Arc::downgrade(admission);
    }
}

impl meshkit_api::metrics::Source for AdmissionStats {
    /// The listeners' connections refused and closed, the QUIC retries, the connections open.
    fn write(&self, families: &mut meshkit_api::metrics::Families<'_, '_>) -> std::fmt::Result {
        use meshkit_api::metrics::catalogue::{
            CONTROL_CONNECTIONS, CONTROL_CONNECTIONS_CLOSED, CONTROL_CONNECTIONS_REFUSED,
            CONTROL_QUIC_RETRIES,
        };
        let refused = Transport::ALL.into_iter().flat_map(|transport| {
            Refusal::ALL.map(|reason| {
                (
                    [transport.as_str(), reason.as_str()],
                    self.refused(transport, reason),
                )
            })
        });
        families.counters(&CONTROL_CONNECTIONS_REFUSED, refused)?;
        let closed = Transport::ALL.into_iter().flat_map(|transport| {
            Closed::ALL.map(|reason| {
                (
                    [transport.as_str(), reason.as_str()],
                    self.closed(transport, reason),
                )
            })
        });
        families.counters(&CONTROL_CONNECTIONS_CLOSED, closed)?;
        families.counter(&CONTROL_QUIC_RETRIES, self.quic_retries())?;
        let gauges = lock(&self.gauges).clone();
        let open = Transport::ALL.into_iter().flat_map(|transport| {
            let counts = gauges[transport as usize]
                .upgrade()
                .map_or([0; 3], |a| a.open());
            ["handshake", "anonymous", "authenticated"]
                .into_iter()
                .zip(counts)
                .map(move |(client, n)| ([transport.as_str(), client], n))
        });
        families.gauges(&CONTROL_CONNECTIONS, open)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps and slots stay consistent at every await-free step: a panic elsewhere
    // while holding the lock leaves nothing half-done.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The key connections are counted under per source: an IPv4 address, or an IPv6 /64 (an
/// IPv4-mapped IPv6 address counts as its IPv4 address).
fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// One listener's permits and per-address counts.
#[derive(Debug)]
pub struct Admission {
    limits: ConnectionLimits,
    transport: Transport,
    total: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    anonymous: Arc<Semaphore>,
    /// Handshakes in progress and anonymous connections per [`address_key`]; an entry exists
    /// only while a count is above zero, so the map holds at most as many entries as those
    /// connections.
    per_address: Mutex<HashMap<IpAddr, [usize; 2]>>,
    stats: Arc<AdmissionStats>,
}

impl Admission {
    /// The permits of one listener of `transport`, counting into `stats`.
    pub(super) fn new(
        limits: ConnectionLimits,
        transport: Transport,
        stats: Arc<AdmissionStats>,
    ) -> Arc<Self> {
        let admission = Arc::new(Self {
            limits,
            transport,
            total: Arc::new(Semaphore::new(limits.max_connections)),
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes)),
            anonymous: Arc::new(Semaphore::new(limits.max_anonymous())),
            per_address: Mutex::new(HashMap::new()),
            stats,
        });
        admission.stats.attach(transport, &admission);
        admission
    }

    /// Whether more than half the handshake permits are taken (QUIC then asks unvalidated
    /// addresses to prove themselves with a retry, so spoofed sources cannot fill them).
    pub(super) fn handshakes_busy(&self) -> bool {
        self.handshakes.available_permits() < self.limits.max_handshakes / 2
    }

    /// Handshaking, anonymous and authenticated connections open now.
    fn open(&self) -> [usize; 3] {
        let total = self.limits.max_connections - self.total.available_permits();
        let handshaking = self.limits.max_handshakes - self.handshakes.available_permits();
        let anonymous = self.limits.max_anonymous() - self.anonymous.available_permits();
        [
            handshaking,
            anonymous,
            total.saturating_sub(handshaking + anonymous),
        ]
    }

    /// A connection from `peer` at accept: the permits for its handshake, or why it is refused
    /// (counted).
    pub(super) fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Handshaking, Refusal> {
        let refuse = |reason| {
            self.stats.count_refused(self.transport, reason);
            Err(reason)
        };
        let Ok(total) = self.total.clone().try_acquire_owned() else {
            return refuse(Refusal::Connections);
        };
        let Ok(handshake) = self.handshakes.clone().try_acquire_owned() else {
            return refuse(Refusal::Handshakes);
        };
        let Some(slot) = self.take_slot(peer, HANDSHAKING) else {
            return refuse(Refusal::Address);
        };
        Ok(Handshaking {
            total,
            handshake,
            slot,
        })
    }

    /// One of `peer`'s address's `kind` counts, if it is under the limit.
    fn take_slot(self: &Arc<Self>, peer: SocketAddr, kind: usize) -> Option<AddressSlot> {
        let key = address_key(peer.ip());
        let mut counts = lock(&self.per_address);
        let count = &mut counts.entry(key).or_insert([0; 2])[kind];
        if *count >= self.limits.max_per_address {
            if counts.get(&key) == Some(&[0; 2]) {
                counts.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            admission: self.clone(),
            key,
            kind,
        })
    }
}

/// Index of handshakes in progress in a per-address count.
const HANDSHAKING: usize = 0;
/// Index of anonymous connections in a per-address count.
const ANONYMOUS: usize = 1;

/// One source address's count, given back when dropped.
#[derive(Debug)]
struct AddressSlot {
    admission: Arc<Admission>,
    key: IpAddr,
    kind: usize,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.admission.per_address);
        if let Some(count) = counts.get_mut(&self.key) {
            count[self.kind] = count[self.kind].saturating_sub(1);
            if *count == [0; 2] {
                counts.remove(&self.key);
            }
        }
    }
}

/// The permits of a connection in its handshake.
#[derive(Debug)]
pub(super) struct Handshaking {
    total: OwnedSemaphorePermit,
    handshake: OwnedSemaphorePermit,
    slot: AddressSlot,
}

impl Handshaking {
    /// The limits of the listener that admitted the connection.
    pub(super) fn limits(&self) -> &ConnectionLimits {
        &self.slot.admission.limits
    }

    /// The handshake ended with a CA-signed client certificate: the connection keeps its
    /// permit among all connections (the reserved ones included), and no longer counts against
    /// its address.
    pub(super) fn authenticated(self) -> Admitted {
        Admitted {
            _total: self.total,
            _anonymous: None,
        }
    }

    /// The handshake ended, with a CA-signed client certificate or without:
    /// [`authenticated`](Self::authenticated) or [`anonymous`](Self::anonymous). A refusal is
    /// counted there and logged here at `debug` only, so a flood writes no log lines.
    pub(super) fn finish(self, authenticated: bool, peer: SocketAddr) -> Option<Admitted> {
        if authenticated {
            return Some(self.authenticated());
        }
        self.anonymous(peer)
            .inspect_err(|reason| {
                tracing::debug!(%peer, ?reason, "control endpoint: anonymous connection refused");
            })
            .ok()
    }

    /// The handshake ended without a client certificate: the connection (from `peer`) takes a
    /// permit of the anonymous pool and counts against its address, or is refused (counted).
    pub(super) fn anonymous(self, peer: SocketAddr) -> Result<Admitted, Refusal> {
        let admission = self.slot.admission.clone();
        drop((self.handshake, self.slot));
        let refuse = |reason| {
            admission.stats.count_refused(admission.transport, reason);
            Err(reason)
        };
        let Some(slot) = admission.take_slot(peer, ANONYMOUS) else {
            return refuse(Refusal::Address);
        };
        match admission.anonymous.clone().try_acquire_owned() {
            Ok(anonymous) => Ok(Admitted {
                _total: self.total,
                _anonymous: Some((anonymous, slot)),
            }),
            Err(_) => refuse(Refusal::Anonymous),
        }
    }
}

/// The permits an open connection holds until it closes.
#[derive(Debug)]
pub(super) struct Admitted {
    _total: OwnedSemaphorePermit,
    _anonymous: Option<(OwnedSemaphorePermit, AddressSlot)>,
}

/// What a connection's requests report to its deadline ([`Activity::deadline`]): how many are in
/// flight and whether any has arrived.
#[derive(Clone, Debug)]
pub(super) struct Activity(Arc<watch::Sender<(usize, bool)>>);

/// A request in flight; dropped when its answer (the whole body) is done.
#[derive(Debug)]
pub(super) struct InFlight(Arc<watch::Sender<(usize, bool)>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|(n, _)| *n = n.saturating_sub(1));
    }
}

impl Activity {
    pub(super) fn new() -> Self {
        Self(Arc::new(watch::channel((0, false)).0))
    }

    /// A request has arrived; it is in flight until the value returned is dropped.
    pub(super) fn start(&self) -> InFlight {
        self.0.send_modify(|(n, seen)| {
            *n += 1;
            *seen = true;
        });
        InFlight(self.0.clone())
    }

    /// Resolves when the connection has had nothing in flight for its deadline: the first
    /// request's if none has arrived, else the idle one.
    pub(super) async fn deadline(&self, limits: &ConnectionLimits) -> Closed {
        let mut rx = self.0.subscribe();
        loop {
            let (in_flight, seen) = *rx.borrow_and_update();
            if in_flight > 0 {
                // The sender lives as long as `self`: `changed` cannot fail here.
                let _ = rx.changed().await;
                continue;
            }
            let (limit, reason) = if seen {
                (limits.idle_timeout, Closed::IdleTimeout)
            } else {
                (limits.first_request_timeout, Closed::FirstRequestTimeout)
            };
            if tokio::time::timeout(limit, rx.changed()).await.is_err() {
                return reason;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 1)
    }

    #[test]
    fn anonymous_connections_leave_the_reserved_permits_and_are_capped_per_address() {
        let stats = Arc::new(AdmissionStats::default());
        let limits = ConnectionLimits::default().with_counts(8, 2, 2, 3).unwrap();
        assert_eq!(limits.max_anonymous(), 4);
        let admission = Admission::new(limits, Transport::Tcp, stats.clone());
        let anonymous = |ip: &str| admission.admit(addr(ip)).unwrap().anonymous(addr(ip));
        // One address: three anonymous connections at most.
        let a: Vec<Admitted> = (0..3).map(|_| anonymous("10.0.0.1").unwrap()).collect();
        assert_eq!(anonymous("10.0.0.1").unwrap_err(), Refusal::Address);
        // An IPv6 /64 is one address.
        let v6 = anonymous("2001:db8::1").unwrap();
        // Two handshakes in all.
        let held = admission.admit(addr("2001:db8::2")).unwrap();
        let other = admission.admit(addr("10.0.1.1")).unwrap();
        assert_eq!(
            admission.admit(addr("10.0.2.1")).unwrap_err(),
            Refusal::Handshakes
        );
        drop(other);
        // Four anonymous in all: the fifth finds only reserved permits.
        assert_eq!(anonymous("2001:db8:1::1").unwrap_err(), Refusal::Anonymous);
        // Certificates still get in, from the address that is full of anonymous connections
        // too, up to the total.
        let authenticated: Vec<Admitted> = (0..2)
            .map(|_| admission.admit(addr("10.0.0.1")).unwrap().authenticated())
            .collect();
        assert_eq!(admission.open(), [1, 4, 2]);
        drop(held);
        let _last: Vec<Admitted> = (0..2)
            .map(|_| admission.admit(addr("10.0.0.9")).unwrap().authenticated())
            .collect();
        assert_eq!(
            admission.admit(addr("10.0.0.3")).unwrap_err(),
            Refusal::Connections
        );
        drop((a, v6, authenticated));
        assert!(lock(&admission.per_address).is_empty());
        assert_eq!(stats.refused(Transport::Tcp, Refusal::Address), 1);
        assert_eq!(stats.refused(Transport::Tcp, Refusal::Anonymous), 1);
        assert_eq!(stats.refused(Transport::Quic, Refusal::Address), 0);
    }

    #[test]
    fn handshakes_are_capped_per_address() {
        let stats = Arc::new(AdmissionStats::default());
        let limits = ConnectionLimits::default()
            .with_counts(16, 2, 8, 2)
            .unwrap();
        let admission = Admission::new(limits, Transport::Quic, stats.clone());
        let held: Vec<Handshaking> = (0..2)
            .map(|_| admission.admit(addr("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(
            admission.admit(addr("10.0.0.1")).unwrap_err(),
            Refusal::Address
        );
        assert!(admission.admit(addr("10.0.0.2")).is_ok());
        drop(held);
        assert!(admission.admit(addr("10.0.0.1")).is_ok());
        assert_eq!(stats.refused(Transport::Quic, Refusal::Address), 1);
    }

    #[test]
    fn limits_that_leave_no_anonymous_permit_are_refused() {
        assert!(ConnectionLimits::default().with_counts(4, 2, 2, 1).is_err());
        assert!(ConnectionLimits::default().with_counts(5, 2, 2, 0).is_err());
        assert!(ConnectionLimits::default().with_counts(5, 2, 2, 1).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_is_the_first_requests_then_the_idle_one_and_waits_for_answers() {
        let limits = ConnectionLimits::default().with_timeouts(
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(5),
        );
        let activity = Activity::new();
        let start = tokio::time::Instant::now();
        assert_eq!(
            activity.deadline(&limits).await,
            Closed::FirstRequestTimeout
        );
        assert_eq!(start.elapsed(), Duration::from_secs(2));

        let request = activity.start();
        let deadline = activity.deadline(&limits);
        tokio::pin!(deadline);
        // In flight for a minute: no deadline.
        assert!(
            tokio::time::timeout(Duration::from_secs(60), deadline.as_mut())
                .await
                .is_err()
        );
        drop(request);
        let start = tokio::time::Instant::now();
        assert_eq!(deadline.await, Closed::IdleTimeout);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
