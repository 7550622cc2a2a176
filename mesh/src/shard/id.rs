//! Shard identifiers and their lease scope names (`shard/{namespace}/{id}`).

use core::fmt;
use core::str::FromStr;

use thiserror::Error;

use crate::lease::{Scope, ScopeError};

/// Longest namespace, in characters (all of them ASCII, so also in bytes).
pub const MAX_NAMESPACE_CHARS: usize = 64;

/// The form every scope name of a shard takes, quoted by the parse errors.
const SCOPE_FORM: &str = "shard/{namespace}/{id}, with a namespace of 1-64 characters of \
                          [a-z0-9-] and an id in decimal (0..=4294967295, no sign, no leading \
                          zeros)";

/// The prefix of every shard scope in the lease table.
const SCOPE_PREFIX: &str = "shard/";

/// One shard: a namespace (a keyspace, a tenant, a table) and a number within it.
///
/// Built only through [`ShardId::new`] or by parsing its scope name, so every value is valid.
/// Ordered by namespace, then id; that order is the rebalancer's shard tie-break. Its
/// [`Display`](fmt::Display) form is the lease scope that owns it, `shard/{namespace}/{id}`
/// (docs/design.md §2), and [`FromStr`] parses exactly that form back:
///
/// ```
/// use meshkit::shard::ShardId;
///
/// let shard = ShardId::new("orders", 42)?;
/// assert_eq!(shard.to_string(), "shard/orders/42");
/// assert_eq!("shard/orders/42".parse::<ShardId>()?, shard);
/// assert!("lease/orders/42".parse::<ShardId>().is_err());
/// # Ok::<(), meshkit::shard::ShardIdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ShardId {
    namespace: String,
    id: u32,
}

impl ShardId {
    /// A shard of `namespace` (1 to [`MAX_NAMESPACE_CHARS`] characters of `[a-z0-9-]`).
    ///
    /// # Errors
    ///
    /// [`ShardIdError::EmptyNamespace`], [`ShardIdError::InvalidNamespaceChar`] or
    /// [`ShardIdError::NamespaceTooLong`]; a caller fault.
    pub fn new(namespace: &str, id: u32) -> Result<Self, ShardIdError> {
        check_namespace(namespace)?;
        Ok(Self {
            namespace: namespace.to_owned(),
            id,
        })
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The number within the namespace.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The lease scope that owns this shard (the inverse of [`Scope::as_shard`]).
    ///
    /// # Errors
    ///
    /// [`ScopeError`] for a shard whose name is no valid scope: a namespace that starts with
    /// `-` passes [`ShardId::new`] but not the scope grammar, so such a shard can never be
    /// leased (callers skip it).
    pub fn scope(&self) -> Result<Scope, ScopeError> {
        Scope::new(&self.to_string())
    }
}

impl fmt::Display for ShardId {
    /// The lease scope name, `shard/{namespace}/{id}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCOPE_PREFIX}{}/{}", self.namespace, self.id)
    }
}

impl FromStr for ShardId {
    type Err = ShardIdError;

    /// Parses a lease scope name, `shard/{namespace}/{id}`; only the canonical form that
    /// [`Display`](fmt::Display) writes is accepted, so one shard never has two scope names.
    fn from_str(scope: &str) -> Result<Self, ShardIdError> {
        let rest = scope
            .strip_prefix(SCOPE_PREFIX)
            .ok_or(ShardIdError::NotShardScope {
                expected: SCOPE_FORM,
            })?;
        let (namespace, id) = rest.split_once('/').ok_or(ShardIdError::NotShardScope {
            expected: SCOPE_FORM,
        })?;
        check_namespace(namespace)?;
        let canonical = !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && (id == "0" || !id.starts_with('0'));
        let id = id
            .parse::<u32>()
            .ok()
            .filter(|_| canonical)
            .ok_or(ShardIdError::InvalidId {
                expected: SCOPE_FORM,
            })?;
        Ok(Self {
            namespace: namespace.to_owned(),
            id,
        })
    }
}

fn check_namespace(namespace: &str) -> Result<(), ShardIdError> {
    if namespace.is_empty() {
        return Err(ShardIdError::EmptyNamespace);
    }
    if let Some((position, found)) = namespace
        .chars()
        .enumerate()
        .find(|&(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        return Err(ShardIdError::InvalidNamespaceChar { found, position });
    }
    // Every character is ASCII from here on, so bytes count characters.
    if namespace.len() > MAX_NAMESPACE_CHARS {
        return Err(ShardIdError::NamespaceTooLong {
            len_chars: namespace.len(),
            max_chars: MAX_NAMESPACE_CHARS,
        });
    }
    Ok(())
}

/// Why a [`ShardId`] could not be built or parsed. Nothing is built; always a caller fault (or,
/// for a scope name read from the lease table, a scope that is not a shard's).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardIdError {
    /// The namespace is empty.
    #[error("shard namespace is empty: expected 1-64 characters of [a-z0-9-]")]
    EmptyNamespace,
    /// The namespace holds a character outside `[a-z0-9-]`.
    #[error(
        "shard namespace has {found:?} at character {position}: allowed characters are a-z, 0-9 \
         and -"
    )]
    InvalidNamespaceChar {
        /// The first character refused.
        found: char,
        /// Its position, counted in characters from 0.
        position: usize,
    },
    /// The namespace is longer than [`MAX_NAMESPACE_CHARS`].
    #[error("shard namespace is {len_chars} characters long: allowed 1..={max_chars}")]
    NamespaceTooLong {
        /// Its length.
        len_chars: usize,
        /// [`MAX_NAMESPACE_CHARS`].
        max_chars: usize,
    },
    /// A scope name without the `shard/` prefix or without a `/` between namespace and id.
    #[error("not a shard scope: expected {expected}")]
    NotShardScope {
        /// The form expected.
        expected: &'static str,
    },
    /// A scope name whose id is not a canonical decimal `u32`.
    #[error("invalid shard id in scope: expected {expected}")]
    InvalidId {
        /// The form expected.
        expected: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_round_trips() {
        for (ns, id) in [("a", 0), ("orders-eu-1", 42), ("x", u32::MAX)] {
            let shard = ShardId::new(ns, id).unwrap();
            assert_eq!(shard.to_string().parse::<ShardId>().unwrap(), shard);
        }
        let longest = "z".repeat(MAX_NAMESPACE_CHARS);
        let shard = ShardId::new(&longest, 7).unwrap();
        assert_eq!(shard.to_string(), format!("shard/{longest}/7"));
    }

    #[test]
    fn bad_namespaces_are_refused() {
        assert_eq!(ShardId::new("", 1), Err(ShardIdError::EmptyNamespace));
        assert_eq!(
            ShardId::new("Orders", 1),
            Err(ShardIdError::InvalidNamespaceChar {
                found: 'O',
                position: 0
            })
        );
        assert_eq!(
            ShardId::new("a/b", 1),
            Err(ShardIdError::InvalidNamespaceChar {
                found: '/',
                position: 1
            })
        );
        assert_eq!(
            ShardId::new("né", 1),
            Err(ShardIdError::InvalidNamespaceChar {
                found: 'é',
                position: 1
            })
        );
        assert_eq!(
            ShardId::new(&"a".repeat(65), 1),
            Err(ShardIdError::NamespaceTooLong {
                len_chars: 65,
                max_chars: 64
            })
        );
    }

    #[test]
    fn bad_scopes_name_the_expected_form() {
        for scope in [
            "",
            "shard",
            "shard/",
            "shard/orders",
            "lease/orders/1",
            "global-control",
        ] {
            let err = scope.parse::<ShardId>().unwrap_err();
            assert!(
                matches!(err, ShardIdError::NotShardScope { .. }),
                "{scope}: {err:?}"
            );
            assert!(err.to_string().contains("shard/{namespace}/{id}"), "{err}");
        }
        for scope in [
            "shard/orders/",
            "shard/orders/-1",
            "shard/orders/+1",
            "shard/orders/01",
            "shard/orders/4294967296",
            "shard/orders/1/2",
            "shard/orders/ 1",
        ] {
            let err = scope.parse::<ShardId>().unwrap_err();
            assert!(
                matches!(err, ShardIdError::InvalidId { .. }),
                "{scope}: {err:?}"
            );
            assert!(err.to_string().contains("shard/{namespace}/{id}"), "{err}");
        }
        assert_eq!(
            "shard//1".parse::<ShardId>(),
            Err(ShardIdError::EmptyNamespace)
        );
        assert!(matches!(
            "shard/Orders/1".parse::<ShardId>(),
            Err(ShardIdError::InvalidNamespaceChar { found: 'O', .. })
        ));
    }

    #[test]
    fn order_is_namespace_then_id() {
        let a9 = ShardId::new("a", 9).unwrap();
        let a10 = ShardId::new("a", 10).unwrap();
        let b0 = ShardId::new("b", 0).unwrap();
        assert!(a9 < a10 && a10 < b0);
    }
}
