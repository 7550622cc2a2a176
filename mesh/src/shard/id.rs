//! Shard identifiers and their lease scope names (`shard/{namespace}/{id}`).

use core::fmt;
use core::str::FromStr;

use thiserror::Error;

use crate::lease::{MAX_SCOPE_BYTES, MAX_SEGMENT_BYTES, Scope, SegmentFault, check_segment};

/// Longest namespace, in characters (all of them ASCII, so also in bytes): a namespace is a
/// segment of its shards' lease scopes.
pub const MAX_NAMESPACE_CHARS: usize = MAX_SEGMENT_BYTES;

/// The punctuation a namespace may hold, after its first character (a scope segment may also
/// hold `.` and `_`; namespaces keep to `-`).
const NAMESPACE_PUNCTUATION: &[char] = &['-'];

/// The form every scope name of a shard takes, quoted by the parse errors.
const SCOPE_FORM: &str = "shard/{namespace}/{id}, with a namespace of 1-64 characters of \
                          [a-z0-9-] starting with a letter or digit and an id in decimal \
                          (0..=4294967295, no sign, no leading zeros)";

/// The prefix of every shard scope in the lease table.
const SCOPE_PREFIX: &str = "shard/";

// The longest shard scope (the longest namespace, the largest id) is a valid scope.
const _: () =
    assert!(SCOPE_PREFIX.len() + MAX_NAMESPACE_CHARS + "/4294967295".len() <= MAX_SCOPE_BYTES);

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
    /// A shard of `namespace`: 1 to [`MAX_NAMESPACE_CHARS`] characters of `[a-z0-9-]`, the first
    /// a letter or digit (the lease scope grammar's rule for a segment, so every shard has a
    /// scope).
    ///
    /// # Errors
    ///
    /// [`ShardIdError::EmptyNamespace`], [`ShardIdError::InvalidNamespaceChar`],
    /// [`ShardIdError::InvalidNamespaceStart`] or [`ShardIdError::NamespaceTooLong`]; a caller
    /// fault.
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
    pub fn scope(&self) -> Scope {
        // A namespace passes the scope grammar's own segment rule (`check_namespace`) and the
        // longest shard scope fits (the const assertion above), so every shard has a scope.
        Scope::new(&self.to_string()).expect("a shard's name is a valid lease scope")
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

/// The one namespace rule, for [`ShardId::new`] and for parsing a scope name: the lease scope
/// grammar's segment rule, with `-` as the only punctuation.
fn check_namespace(namespace: &str) -> Result<(), ShardIdError> {
    check_segment(namespace, NAMESPACE_PUNCTUATION).map_err(|fault| match fault {
        SegmentFault::Empty => ShardIdError::EmptyNamespace,
        SegmentFault::Char { found, position } => {
            ShardIdError::InvalidNamespaceChar { found, position }
        }
        SegmentFault::Start { found } => ShardIdError::InvalidNamespaceStart { found },
        SegmentFault::TooLong { len } => ShardIdError::NamespaceTooLong {
            len_chars: len,
            max_chars: MAX_NAMESPACE_CHARS,
        },
    })
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
    /// The namespace starts with `-` (a lease scope's segment starts with a letter or digit).
    #[error("shard namespace starts with {found:?}: it must start with a letter (a-z) or a digit")]
    InvalidNamespaceStart {
        /// The first character.
        found: char,
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

    /// A namespace may not start with `-`: the lease scope grammar refuses such a segment, so a
    /// shard of it could never be leased. `ShardId` keeps to the scope's own segment rule.
    #[test]
    fn a_namespace_starting_with_a_dash_is_refused() {
        for ns in ["-", "-orders", "--", "-0"] {
            assert_eq!(
                ShardId::new(ns, 1),
                Err(ShardIdError::InvalidNamespaceStart { found: '-' }),
                "{ns}"
            );
            assert_eq!(
                format!("shard/{ns}/1").parse::<ShardId>(),
                Err(ShardIdError::InvalidNamespaceStart { found: '-' }),
                "{ns}"
            );
        }
        for ns in ["orders-", "0-a", "a--b"] {
            assert!(ShardId::new(ns, 1).is_ok(), "{ns}");
        }
        // A character refused anywhere is named first, even at the start.
        assert_eq!(
            ShardId::new(".a", 1),
            Err(ShardIdError::InvalidNamespaceChar {
                found: '.',
                position: 0
            })
        );
    }

    proptest::proptest! {
        /// Adversarial names (punctuation the scope grammar allows and namespaces do not,
        /// separators, upper case, non-ASCII, lengths around the bound): a namespace is accepted
        /// exactly when it is 1-64 characters of `[a-z0-9-]` starting with a letter or digit, and
        /// every shard it makes has a lease scope that names that shard back.
        #[test]
        fn every_accepted_namespace_has_a_lease_scope(
            ns in "[a-z0-9._/ Aé-]{0,3}[a-z0-9-]{0,62}[a-z0-9._-]{0,2}",
            id in proptest::prelude::any::<u32>(),
        ) {
            let expected = !ns.is_empty()
                && ns.len() <= MAX_NAMESPACE_CHARS
                && !ns.starts_with('-')
                && ns.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            let built = ShardId::new(&ns, id);
            proptest::prop_assert_eq!(built.is_ok(), expected, "{:?}: {:?}", ns, built);
            let scope = Scope::shard(&ns, &id.to_string());
            if let Ok(shard) = built {
                proptest::prop_assert_eq!(scope, Ok(shard.scope()));
                proptest::prop_assert_eq!(shard.scope().as_shard(), Some(shard));
            } else {
                proptest::prop_assert!(
                    scope.map_or(true, |s| s.as_shard().is_none()),
                    "{:?} is refused as a namespace but names a shard's scope", ns
                );
            }
        }
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
