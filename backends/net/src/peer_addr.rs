//! Where another node (or this one, as peers should dial it) is, as an operator writes it: an IP
//! address and port, or a DNS name and port resolved when the node needs it.
//!
//! Why names: in docker-compose and Kubernetes a node's IP is known only once its container or
//! pod runs, and it changes when the container is recreated; its name (`meshkit-2`,
//! `meshkit-voter-1.meshkit-voters`) is fixed. A name is resolved by the node itself (the
//! advertised address once at start, a seed until it resolves), never when the configuration
//! is validated, so `meshkitd check-config` accepts a compose or Kubernetes configuration on any
//! machine.
//!
//! ```
//! use meshkit_net::peer_addr::PeerAddr;
//!
//! let ip: PeerAddr = "127.0.0.1:7001".parse()?;
//! assert!(ip.socket_addr().is_some());
//! let name: PeerAddr = "meshkit-voter-1.meshkit-voters:7001".parse()?;
//! assert_eq!(name.to_string(), "meshkit-voter-1.meshkit-voters:7001");
//! assert!("meshkit_1:7001".parse::<PeerAddr>().is_err()); // `_` is not a host name character
//! assert!("meshkit-1:0".parse::<PeerAddr>().is_err()); // nobody can be dialled on port 0
//! # Ok::<(), meshkit_net::peer_addr::PeerAddrError>(())
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use thiserror::Error;

/// Longest host name (RFC 1035 §2.3.4: 253 characters in text form).
pub const MAX_HOST_LEN: usize = 253;
/// Longest label between dots (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// An address to dial: an IP and port, or a host name and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    /// An IP address and port, used as it is.
    Socket(SocketAddr),
    /// A DNS name (or an `/etc/hosts` name) and port, resolved when needed.
    Name {
        /// The host name, as written (without a trailing dot).
        host: String,
        /// The port.
        port: u16,
    },
}

/// Why a text is not a [`PeerAddr`]; the message says what is expected.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PeerAddrError {
    /// No `:port` at the end.
    #[error("`{0}` has no port: expected host:port or ip:port, such as meshkit-1:7001")]
    NoPort(String),
    /// The port is not a number in 1..=65535.
    #[error("`{0}` does not end in a port in 1..=65535")]
    BadPort(String),
    /// The host is neither an IP address nor a host name (letters, digits and `-` in labels of
    /// 1 to 63 characters separated by dots, 253 characters at most).
    #[error(
        "`{0}` is not an IP address or a host name (labels of letters, digits and `-`, \
         1 to 63 characters, separated by dots; 253 characters at most)"
    )]
    BadHost(String),
}

/// Why a name could not be turned into an address.
#[derive(Debug, Error)]
pub enum ResolveError {
    /// The resolver failed (no such name, no DNS server answering).
    #[error("resolving `{name}`: {source}")]
    Lookup {
        /// The name and port.
        name: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The name resolved to no address.
    #[error("`{name}` resolved to no address")]
    NoAddress {
        /// The name and port.
        name: String,
    },
}

impl PeerAddr {
    /// The address, when it is written as one (no resolution needed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Socket(addr) => Some(*addr),
            Self::Name { .. } => None,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Self::Socket(addr) => addr.port(),
            Self::Name { port, .. } => *port,
        }
    }

    /// The address to dial: an IP as written, or the name resolved now by the system's
    /// resolver. Of several addresses, the first of `prefer`'s family (the family of the
    /// socket that will dial: an IPv4 socket cannot reach `::1`), else the first.
    pub async fn resolve(&self, prefer: Option<IpAddr>) -> Result<SocketAddr, ResolveError> {
        let (host, port) = match self {
            Self::Socket(addr) => return Ok(*addr),
            Self::Name { host, port } => (host.as_str(), *port),
        };
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| ResolveError::Lookup {
                name: self.to_string(),
                source,
            })?
            .collect();
        let same_family = |a: &&SocketAddr| prefer.is_none_or(|p| a.is_ipv4() == p.is_ipv4());
        found
            .iter()
            .find(same_family)
            .or(found.first())
            .copied()
            .ok_or_else(|| ResolveError::NoAddress {
                name: self.to_string(),
            })
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self::Socket(addr)
    }
}

impl FromStr for PeerAddr {
    type Err = PeerAddrError;

    fn from_str(text: &str) -> Result<Self, PeerAddrError> {
        let text = text.trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(PeerAddrError::BadPort(text.to_owned()));
            }
            return Ok(Self::Socket(addr));
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| PeerAddrError::NoPort(text.to_owned()))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| PeerAddrError::BadPort(text.to_owned()))?;
        let host = host.strip_suffix('.').unwrap_or(host);
        if !is_host_name(host) {
            return Err(PeerAddrError::BadHost(text.to_owned()));
        }
        Ok(Self::Name {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Socket(addr) => addr.fmt(f),
            Self::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// RFC 1123 host name syntax: dot-separated labels of ASCII letters, digits and `-`, not
/// starting or ending with `-`. (An IP-looking name such as `1.2.3` passes; the resolver then
/// says it does not exist, which is the error the operator needs.)
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_and_names_parse_and_print_as_written() {
        for text in [
            "127.0.0.1:7001",
            "[::1]:7001",
            "meshkit-1:7001",
            "localhost:9",
            "meshkit-voter-0.meshkit-voters.default.svc.cluster.local:7001",
        ] {
            let addr: PeerAddr = text.parse().expect(text);
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!(
            "meshkit-1.:7001".parse::<PeerAddr>().unwrap().to_string(),
            "meshkit-1:7001",
            "a fully qualified name's trailing dot is dropped"
        );
    }

    #[test]
    fn what_is_neither_an_address_nor_a_name_is_refused_saying_why() {
        let long_label = format!("{}:7001", "a".repeat(64));
        let long_name = format!("{}:7001", ["abcdefghi"; 26].join("."));
        for (text, want) in [
            ("meshkit-1", PeerAddrError::NoPort("meshkit-1".into())),
            ("meshkit-1:0", PeerAddrError::BadPort("meshkit-1:0".into())),
            ("127.0.0.1:0", PeerAddrError::BadPort("127.0.0.1:0".into())),
            (
                "meshkit-1:70000",
                PeerAddrError::BadPort("meshkit-1:70000".into()),
            ),
            (
                "meshkit_1:7001",
                PeerAddrError::BadHost("meshkit_1:7001".into()),
            ),
            (
                "-meshkit:7001",
                PeerAddrError::BadHost("-meshkit:7001".into()),
            ),
            ("a..b:7001", PeerAddrError::BadHost("a..b:7001".into())),
            (":7001", PeerAddrError::BadHost(":7001".into())),
            ("::1:7001", PeerAddrError::BadHost("::1:7001".into())),
            (&long_label, PeerAddrError::BadHost(long_label.clone())),
            (&long_name, PeerAddrError::BadHost(long_name.clone())),
        ] {
            assert_eq!(text.parse::<PeerAddr>(), Err(want), "{text}");
        }
    }

    #[tokio::test]
    async fn a_name_resolves_to_the_preferred_family() {
        let name: PeerAddr = "localhost:7001".parse().unwrap();
        let v4 = name
            .resolve(Some(IpAddr::from([127, 0, 0, 1])))
            .await
            .expect("localhost resolves");
        assert!(
            v4.is_ipv4() && v4.ip().is_loopback() && v4.port() == 7001,
            "{v4}"
        );
        let ip: PeerAddr = "10.1.2.3:7001".parse().unwrap();
        assert_eq!(
            ip.resolve(None).await.unwrap(),
            "10.1.2.3:7001".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn a_name_that_does_not_exist_is_an_error_naming_it() {
        // `.invalid` never resolves (RFC 2606).
        let name: PeerAddr = "meshkit-1.invalid:7001".parse().unwrap();
        let error = name.resolve(None).await.expect_err("no such name");
        assert!(
            error.to_string().contains("meshkit-1.invalid:7001"),
            "{error}"
        );
    }
}
