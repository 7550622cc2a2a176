//! Client-side transport counters: requests by negotiated protocol, and fallbacks from HTTP/3
//! to TLS over TCP by protocol and reason. Both label sets are bounded enums.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use meshkit_api::alpn::HttpProtocol;

/// Why a request did not go over HTTP/3; a bounded metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FallbackReason {
    /// No QUIC handshake within the HTTP/3 timeout (UDP dropped on the way, or nothing there).
    Timeout,
    /// The UDP port answered with a refusal (ICMP unreachable, or a QUIC reset or refusal).
    Refused,
    /// The QUIC/TLS handshake failed (certificate, ALPN, version).
    Handshake,
    /// The connection came up but HTTP/3 failed on it before a response arrived.
    H3Error,
    /// HTTP/3 failed to this server recently, so it was not tried.
    Remembered,
}

impl FallbackReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 5] = [
        Self::Timeout,
        Self::Refused,
        Self::Handshake,
        Self::H3Error,
        Self::Remembered,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Refused => "refused",
            Self::Handshake => "handshake",
            Self::H3Error => "h3_error",
            Self::Remembered => "remembered",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Timeout => 0,
            Self::Refused => 1,
            Self::Handshake => 2,
            Self::H3Error => 3,
            Self::Remembered => 4,
        }
    }
}

impl std::fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The protocols a fallback can land on (TLS over TCP), in label order.
const TCP_PROTOCOLS: [HttpProtocol; 2] = [HttpProtocol::H2, HttpProtocol::Http11];

fn protocol_index(protocol: HttpProtocol) -> usize {
    match protocol {
        HttpProtocol::H3 => 0,
        HttpProtocol::H2 => 1,
        HttpProtocol::Http11 => 2,
    }
}

/// Live counters of one [`super::Client`].
#[derive(Debug, Default)]
pub struct ClientStats {
    requests: [AtomicU64; 3],
    fallbacks: [[AtomicU64; 5]; 2],
    failures: AtomicU64,
}

impl ClientStats {
    pub(super) fn count_request(&self, protocol: HttpProtocol) {
        self.requests[protocol_index(protocol)].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_fallback(&self, protocol: HttpProtocol, reason: FallbackReason) {
        // A fallback lands on TCP; HTTP/3 is not a fallback target.
        let row = usize::from(protocol == HttpProtocol::Http11);
        self.fallbacks[row][reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut snapshot = StatsSnapshot::default();
        for protocol in HttpProtocol::ALL {
            let n = self.requests[protocol_index(protocol)].load(Ordering::Relaxed);
            snapshot.add_requests(protocol, n);
        }
        for (row, protocol) in TCP_PROTOCOLS.into_iter().enumerate() {
            for reason in FallbackReason::ALL {
                let n = self.fallbacks[row][reason.index()].load(Ordering::Relaxed);
                snapshot.add_fallbacks(protocol, reason, n);
            }
        }
        snapshot.failures = self.failures.load(Ordering::Relaxed);
        snapshot
    }
}

/// Requests over one protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    /// `h3`, `h2` or `http1.1`.
    pub protocol: String,
    /// Requests answered over it.
    pub requests: u64,
}

/// Fallbacks that landed on one protocol for one reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackCount {
    /// The protocol negotiated after the fallback: `h2` or `http1.1`.
    pub protocol: String,
    /// Why HTTP/3 was not used.
    pub reason: FallbackReason,
    /// How many times.
    pub fallbacks: u64,
}

/// A copy of client counters: what `meshctl transport stats` prints (`--json` gives this
/// struct). Rows with a zero count are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Requests answered, by protocol.
    pub requests: Vec<RequestCount>,
    /// Fallbacks from HTTP/3, by landing protocol and reason.
    pub fallbacks: Vec<FallbackCount>,
    /// Requests that failed over every protocol tried.
    pub failures: u64,
}

impl StatsSnapshot {
    /// Requests answered over `protocol`.
    pub fn requests(&self, protocol: HttpProtocol) -> u64 {
        self.requests
            .iter()
            .filter(|r| r.protocol == protocol.as_str())
            .map(|r| r.requests)
            .sum()
    }

    /// Fallbacks for `reason`, whatever protocol they landed on.
    pub fn fallbacks(&self, reason: FallbackReason) -> u64 {
        self.fallbacks
            .iter()
            .filter(|f| f.reason == reason)
            .map(|f| f.fallbacks)
            .sum()
    }

    /// Adds `other`'s counts to these (meshctl accumulates its runs this way).
    pub fn merge(&mut self, other: &Self) {
        for r in &other.requests {
            if let Some(protocol) = HttpProtocol::ALL
                .into_iter()
                .find(|p| p.as_str() == r.protocol)
            {
                self.add_requests(protocol, r.requests);
            }
        }
        for f in &other.fallbacks {
            if let Some(protocol) = TCP_PROTOCOLS.into_iter().find(|p| p.as_str() == f.protocol) {
                self.add_fallbacks(protocol, f.reason, f.fallbacks);
            }
        }
        self.failures = self.failures.saturating_add(other.failures);
    }

    fn add_requests(&mut self, protocol: HttpProtocol, n: u64) {
        if n == 0 {
            return;
        }
        match self
            .requests
            .iter_mut()
            .find(|r| r.protocol == protocol.as_str())
        {
            Some(row) => row.requests = row.requests.saturating_add(n),
            None => {
                self.requests.push(RequestCount {
                    protocol: protocol.as_str().to_owned(),
                    requests: n,
                });
                self.requests.sort_by_key(|r| {
                    HttpProtocol::ALL
                        .iter()
                        .position(|p| p.as_str() == r.protocol)
                });
            }
        }
    }

    fn add_fallbacks(&mut self, protocol: HttpProtocol, reason: FallbackReason, n: u64) {
        if n == 0 {
            return;
        }
        match self
            .fallbacks
            .iter_mut()
            .find(|f| f.protocol == protocol.as_str() && f.reason == reason)
        {
            Some(row) => row.fallbacks = row.fallbacks.saturating_add(n),
            None => {
                self.fallbacks.push(FallbackCount {
                    protocol: protocol.as_str().to_owned(),
                    reason,
                    fallbacks: n,
                });
                self.fallbacks.sort_by(|a, b| {
                    (a.protocol.as_str(), a.reason).cmp(&(b.protocol.as_str(), b.reason))
                });
            }
        }
    }

    /// A human table: requests by protocol, then fallbacks by protocol and reason.
    pub fn render_table(&self) -> String {
        let mut out = format!("{:<10} {:>10}\n", "PROTOCOL", "REQUESTS");
        for protocol in HttpProtocol::ALL {
            let _ = writeln!(
                out,
                "{:<10} {:>10}",
                protocol.as_str(),
                self.requests(protocol)
            );
        }
        let _ = write!(
            out,
            "\n{:<10} {:<12} {:>10}\n",
            "FALLBACK", "REASON", "COUNT"
        );
        if self.fallbacks.is_empty() {
            out.push_str("(none)\n");
        }
        for f in &self.fallbacks {
            let _ = writeln!(
                out,
                "{:<10} {:<12} {:>10}",
                f.protocol, f.reason, f.fallbacks
            );
        }
        let _ = writeln!(out, "\nfailed requests: {}", self.failures);
        out
    }

    /// The Prometheus text exposition: `mesh_transport_client_requests_total{protocol}`,
    /// `mesh_transport_client_fallbacks_total{protocol,reason}` (every label pair, zeros
    /// included) and `mesh_transport_client_failures_total`.
    pub fn render_prometheus(&self) -> String {
        // The families are the catalogue's: they cannot be written against it.
        meshkit_api::metrics::encode(self.clone()).unwrap_or_default()
    }
}

impl meshkit_api::metrics::Source for StatsSnapshot {
    fn write(&self, families: &mut meshkit_api::metrics::Families<'_, '_>) -> std::fmt::Result {
        use meshkit_api::metrics::catalogue::{CLIENT_FAILURES, CLIENT_FALLBACKS, CLIENT_REQUESTS};
        families.counters(
            &CLIENT_REQUESTS,
            HttpProtocol::ALL.map(|p| ([p.as_str()], self.requests(p))),
        )?;
        let fallbacks = TCP_PROTOCOLS.into_iter().flat_map(|protocol| {
            FallbackReason::ALL.map(|reason| {
                let n = self
                    .fallbacks
                    .iter()
                    .find(|f| f.protocol == protocol.as_str() && f.reason == reason)
                    .map_or(0, |f| f.fallbacks);
                ([protocol.as_str(), reason.as_str()], n)
            })
        });
        families.counters(&CLIENT_FALLBACKS, fallbacks)?;
        families.counter(&CLIENT_FAILURES, self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_snapshot_merge_and_render() {
        let stats = ClientStats::default();
        stats.count_request(HttpProtocol::H3);
        stats.count_request(HttpProtocol::H2);
        stats.count_fallback(HttpProtocol::H2, FallbackReason::Timeout);
        stats.count_fallback(HttpProtocol::H2, FallbackReason::Timeout);
        stats.count_fallback(HttpProtocol::Http11, FallbackReason::Handshake);
        let mut a = stats.snapshot();
        assert_eq!(a.requests(HttpProtocol::H3), 1);
        assert_eq!(a.fallbacks(FallbackReason::Timeout), 2);
        a.merge(&stats.snapshot());
        assert_eq!(a.requests(HttpProtocol::H2), 2);
        assert_eq!(a.fallbacks(FallbackReason::Timeout), 4);
        assert_eq!(a.fallbacks(FallbackReason::Handshake), 2);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<StatsSnapshot>(&json).unwrap(), a);
        let text = a.render_prometheus();
        assert!(text.contains(
            "mesh_transport_client_fallbacks_total{protocol=\"h2\",reason=\"timeout\"} 4\n"
        ));
        assert!(text.contains(
            "mesh_transport_client_fallbacks_total{protocol=\"h2\",reason=\"remembered\"} 0\n"
        ));
        let table = a.render_table();
        assert!(
            table.contains("h2         timeout               4"),
            "{table}"
        );
    }
}
