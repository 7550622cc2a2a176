//! Lease scopes: the names leases are granted on.
//!
//! A [`Scope`] is one of three forms, checked when it is built (parse, don't validate):
//!
//! * `global-control`: the mesh-wide control leader;
//! * `shard/{namespace}/{id}`: the owner of one shard;
//! * a custom name: one or more `/`-separated segments whose first segment is neither `shard`
//!   nor `global-control`.
//!
//! Every segment is 1 to [`MAX_SEGMENT_BYTES`] bytes of `a-z`, `0-9`, `.`, `_`, `-`, starting
//! with a letter or digit; a whole scope is at most [`MAX_SCOPE_BYTES`] bytes, so a command that
//! names it always fits one datagram.

use core::fmt;
use core::str::FromStr;

use thiserror::Error;

use crate::shard::ShardId;

/// Longest scope, in bytes.
pub const MAX_SCOPE_BYTES: usize = 128;
/// Longest segment of a scope, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 64;

const GLOBAL_CONTROL: &str = "global-control";
const SHARD: &str = "shard";

/// The expected forms, quoted by every [`ScopeError`].
const EXPECTED: &str = "`global-control`, `shard/{namespace}/{id}` or a custom name of \
    `/`-separated segments of [a-z0-9._-] (each starting with a letter or digit, at most 64 \
    bytes; at most 128 bytes in all)";

/// The name of a lease, in one of three forms checked when it is built:
///
/// * `global-control`: the mesh-wide control leader;
/// * `shard/{namespace}/{id}`: the owner of one shard;
/// * a custom name: one or more `/`-separated segments whose first segment is neither `shard`
///   nor `global-control`.
///
/// Every segment is 1 to [`MAX_SEGMENT_BYTES`] bytes of `a-z`, `0-9`, `.`, `_`, `-`, starting
/// with a letter or digit; a whole scope is at most [`MAX_SCOPE_BYTES`] bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope(String);

/// Which form a [`Scope`] has.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ScopeKind<'a> {
    /// `global-control`.
    GlobalControl,
    /// `shard/{namespace}/{id}`.
    Shard {
        /// The shard's namespace.
        namespace: &'a str,
        /// The shard's id within its namespace.
        id: &'a str,
    },
    /// Any other valid name.
    Custom(&'a str),
}

/// Why a scope name was refused. Always a caller (or peer) fault; nothing was built.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScopeError {
    /// The name is empty or longer than [`MAX_SCOPE_BYTES`].
    #[error("scope of {len} bytes: expected 1..={max} bytes; forms: {EXPECTED}")]
    Length {
        /// Its length in bytes.
        len: usize,
        /// [`MAX_SCOPE_BYTES`].
        max: usize,
    },
    /// A segment is empty, too long, or holds a character outside `[a-z0-9._-]`.
    #[error("invalid segment {segment} of the scope (counting from 0): expected {EXPECTED}")]
    Segment {
        /// The segment's position.
        segment: usize,
    },
    /// A `shard/...` scope that is not exactly `shard/{namespace}/{id}`.
    #[error("a shard scope has {segments} segments: expected `shard/{{namespace}}/{{id}}`")]
    ShardForm {
        /// Segments found.
        segments: usize,
    },
    /// `global-control` with more segments after it.
    #[error("`global-control` takes no sub-scope: expected {EXPECTED}")]
    GlobalControlForm,
}

impl Scope {
    /// Parses and checks a scope name.
    pub fn new(name: &str) -> Result<Self, ScopeError> {
        check(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The `global-control` scope.
    pub fn global_control() -> Self {
        Self(GLOBAL_CONTROL.to_owned())
    }

    /// The scope `shard/{namespace}/{id}`.
    pub fn shard(namespace: &str, id: &str) -> Result<Self, ScopeError> {
        Self::new(&format!("{SHARD}/{namespace}/{id}"))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shard this scope owns, if it is one: `shard/{namespace}/{id}` in the canonical form
    /// [`ShardId`] writes (a valid namespace, a decimal `u32` id without sign or leading zeros).
    /// A scope of the shard form that names no valid shard (`shard/orders/x`, `shard/orders/01`)
    /// is `None`: no shard has two scope names, so only one of them can be a shard's lease.
    ///
    /// ```
    /// use meshkit::lease::Scope;
    /// use meshkit::shard::ShardId;
    ///
    /// let scope = Scope::new("shard/orders/7")?;
    /// assert_eq!(scope.as_shard(), Some(ShardId::new("orders", 7)?));
    /// assert_eq!(Scope::new("shard/orders/07")?.as_shard(), None);
    /// assert_eq!(Scope::global_control().as_shard(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn as_shard(&self) -> Option<ShardId> {
        match self.kind() {
            ScopeKind::Shard { .. } => self.0.parse().ok(),
            ScopeKind::GlobalControl | ScopeKind::Custom(_) => None,
        }
    }

    /// Which form this scope has.
    pub fn kind(&self) -> ScopeKind<'_> {
        if self.0 == GLOBAL_CONTROL {
            return ScopeKind::GlobalControl;
        }
        let mut parts = self.0.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(SHARD), Some(namespace), Some(id)) => ScopeKind::Shard { namespace, id },
            _ => ScopeKind::Custom(&self.0),
        }
    }
}

/// The punctuation a scope segment may hold after its first character.
pub(crate) const SEGMENT_PUNCTUATION: &[char] = &['.', '_', '-'];

/// Why a name breaks the segment rule of [`check_segment`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SegmentFault {
    /// No character at all.
    Empty,
    /// A character outside `a-z`, `0-9` and the punctuation allowed.
    Char {
        /// The first character refused.
        found: char,
        /// Its position, counted in characters from 0.
        position: usize,
    },
    /// Allowed punctuation as the first character.
    Start {
        /// The character.
        found: char,
    },
    /// More than [`MAX_SEGMENT_BYTES`] characters (all ASCII by then, so bytes).
    TooLong {
        /// Its length.
        len: usize,
    },
}

/// The rule for one segment of a scope name: 1 to [`MAX_SEGMENT_BYTES`] characters of `a-z`,
/// `0-9` and `punctuation` (a subset of [`SEGMENT_PUNCTUATION`]), the first a letter or digit.
/// A shard's namespace is the middle segment of its scope, so [`ShardId`] checks its namespaces
/// with this same function (with `-` alone as punctuation): every shard has a valid scope, and
/// the two rules cannot drift apart. Faults are reported in this order: a character refused,
/// punctuation first, too long.
pub(crate) fn check_segment(segment: &str, punctuation: &[char]) -> Result<(), SegmentFault> {
    debug_assert!(
        punctuation.iter().all(|c| SEGMENT_PUNCTUATION.contains(c)),
        "a segment rule wider than the scope grammar's"
    );
    if let Some((position, found)) = segment
        .chars()
        .enumerate()
        .find(|&(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || punctuation.contains(&c)))
    {
        return Err(SegmentFault::Char { found, position });
    }
    match segment.chars().next() {
        None => return Err(SegmentFault::Empty),
        Some(found) if punctuation.contains(&found) => return Err(SegmentFault::Start { found }),
        Some(_) => {}
    }
    if segment.len() > MAX_SEGMENT_BYTES {
        return Err(SegmentFault::TooLong { len: segment.len() });
    }
    Ok(())
}

fn check(name: &str) -> Result<(), ScopeError> {
    if name.is_empty() || name.len() > MAX_SCOPE_BYTES {
        return Err(ScopeError::Length {
            len: name.len(),
            max: MAX_SCOPE_BYTES,
        });
    }
    let mut segments = 0;
    for (i, segment) in name.split('/').enumerate() {
        segments += 1;
        if check_segment(segment, SEGMENT_PUNCTUATION).is_err() {
            return Err(ScopeError::Segment { segment: i });
        }
    }
    match name.split('/').next() {
        Some(SHARD) if segments != 3 => Err(ScopeError::ShardForm { segments }),
        Some(GLOBAL_CONTROL) if segments != 1 => Err(ScopeError::GlobalControlForm),
        _ => Ok(()),
    }
}

impl FromStr for Scope {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, ScopeError> {
        Self::new(s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_parse() {
        assert_eq!(
            Scope::new("global-control").unwrap().kind(),
            ScopeKind::GlobalControl
        );
        assert_eq!(
            Scope::new("shard/orders/17").unwrap().kind(),
            ScopeKind::Shard {
                namespace: "orders",
                id: "17"
            }
        );
        assert_eq!(
            Scope::shard("orders", "17").unwrap(),
            Scope::new("shard/orders/17").unwrap()
        );
        assert_eq!(
            Scope::new("billing/cron.nightly").unwrap().kind(),
            ScopeKind::Custom("billing/cron.nightly")
        );
        assert_eq!(Scope::global_control().as_str(), "global-control");
    }

    #[test]
    fn only_canonical_shard_scopes_name_a_shard() {
        let shard = ShardId::new("orders", 17).unwrap();
        assert_eq!(
            Scope::new("shard/orders/17").unwrap().as_shard(),
            Some(shard.clone())
        );
        assert_eq!(
            Scope::new(&shard.to_string()).unwrap().as_shard(),
            Some(shard)
        );
        let largest = ShardId::new(&"a".repeat(64), u32::MAX).unwrap();
        assert_eq!(
            Scope::new(&largest.to_string()).unwrap().as_shard(),
            Some(largest)
        );
        for other in [
            "global-control",
            "lock/backup",
            "shards/orders/1",
            "shard/orders/01",
            "shard/orders/x",
            "shard/orders/4294967296",
            "shard/or.ders/1",
        ] {
            assert_eq!(Scope::new(other).unwrap().as_shard(), None, "{other}");
        }
    }

    #[test]
    fn malformed_names_are_refused_with_the_expected_forms() {
        for bad in [
            "",
            "Global",
            "shard/orders",
            "shard/orders/1/2",
            "global-control/x",
            "a//b",
            "/a",
            "a/",
            "-a",
            "a b",
            "é",
        ] {
            let err = Scope::new(bad).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("global-control") || text.contains("shard/{namespace}/{id}"),
                "{bad:?}: {text}"
            );
        }
        let long = "a".repeat(MAX_SCOPE_BYTES + 1);
        assert!(matches!(
            Scope::new(&long),
            Err(ScopeError::Length { len: 129, max: 128 })
        ));
        let long_segment = format!("x/{}", "a".repeat(MAX_SEGMENT_BYTES + 1));
        assert_eq!(
            Scope::new(&long_segment),
            Err(ScopeError::Segment { segment: 1 })
        );
    }
}
