//! The protocol names client and server agree on: the ALPN identifiers of the control API's
//! transports, and [`HttpProtocol`], their bounded metric label. Here, below both, so that the
//! client names what the server speaks without linking the server.

/// ALPN name of HTTP/2 over TLS.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN name of HTTP/1.1 over TLS.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// ALPN name of HTTP/3.
pub const ALPN_H3: &[u8] = b"h3";

/// The HTTP versions the control API is served over; a bounded metric label.
///
/// Exhaustive on purpose: the server keeps a counter per protocol and the client a fallback
/// per protocol, in other crates; a new protocol must reach every one of those matches, which
/// the compiler checks only for an exhaustive enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HttpProtocol {
    /// HTTP/3 over QUIC.
    H3,
    /// HTTP/2 over TLS.
    H2,
    /// HTTP/1.1 over TLS.
    Http11,
}

impl HttpProtocol {
    /// Every protocol, in label order.
    pub const ALL: [Self; 3] = [Self::H3, Self::H2, Self::Http11];

    /// The metric label and ALPN-style name: `h3`, `h2` or `http1.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H3 => "h3",
            Self::H2 => "h2",
            Self::Http11 => "http1.1",
        }
    }
}

impl std::fmt::Display for HttpProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}
