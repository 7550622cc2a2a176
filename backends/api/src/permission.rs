//! Authorization scopes of the control API (docs/design.md §4).
//!
//! Three scopes, each implying the ones below it: `mesh.admin` ⊃ `mesh.operate` ⊃ `mesh.observe`.
//! A route needs one scope (see [`crate::routes::ROUTE_PERMISSIONS`]); an identity holds a
//! [`Permissions`] set, from the node's configuration (client certificates) or from a verified token.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use thiserror::Error;

/// One scope. The order is the order of implication: a greater scope implies every lesser one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// `mesh.observe`: reads (peers, shards, clusters, versions, metrics, event streams).
    Observe,
    /// `mesh.operate`: operations that move load (drain, resume, lease transfer).
    Operate,
    /// `mesh.admin`: everything, chaos and configuration included.
    Admin,
}

impl Permission {
    /// Every scope, weakest first.
    pub const ALL: [Self; 3] = [Self::Observe, Self::Operate, Self::Admin];

    /// The scope's name on the wire and in configuration files (`mesh.observe`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Observe => "mesh.observe",
            Self::Operate => "mesh.operate",
            Self::Admin => "mesh.admin",
        }
    }

    /// Whether holding `self` allows what `required` guards (admin implies operate implies
    /// observe).
    pub fn implies(self, required: Self) -> bool {
        self >= required
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A name that is not a scope.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("unknown scope {name:?}: expected {}", EXPECTED_SCOPES)]
pub struct UnknownPermission {
    /// The name given (cut to 64 bytes, as it may come from a client).
    pub name: String,
}

/// The allowed scope names, for error messages.
pub const EXPECTED_SCOPES: &str = "mesh.observe, mesh.operate or mesh.admin";

impl FromStr for Permission {
    type Err = UnknownPermission;

    fn from_str(s: &str) -> Result<Self, UnknownPermission> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownPermission {
                name: s.chars().take(64).collect(),
            })
    }
}

/// The scopes one identity holds. Empty means none: the identity is known but may do nothing
/// beyond the open routes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Permissions(BTreeSet<Permission>);

impl Permissions {
    /// No scope.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether any held scope implies `required`.
    pub fn allows(&self, required: Permission) -> bool {
        self.0.iter().any(|held| held.implies(required))
    }

    /// Whether no scope is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The held scopes, weakest first.
    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        self.0.iter().copied()
    }

    /// The space-separated form of OAuth's `scope` claim (RFC 8693 §4.2).
    pub fn to_claim(&self) -> String {
        self.iter()
            .map(Permission::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Parses the space-separated `scope` claim; every name must be a known scope.
    pub fn from_claim(claim: &str) -> Result<Self, UnknownPermission> {
        claim.split_whitespace().map(str::parse).collect()
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no scope");
        }
        f.write_str(&self.to_claim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_implies_operate_implies_observe() {
        use Permission::*;
        let table = [
            (Observe, [true, false, false]),
            (Operate, [true, true, false]),
            (Admin, [true, true, true]),
        ];
        for (held, allows) in table {
            for (required, expected) in Permission::ALL.into_iter().zip(allows) {
                assert_eq!(held.implies(required), expected, "{held} -> {required}");
                let set: Permissions = [held].into_iter().collect();
                assert_eq!(set.allows(required), expected);
            }
        }
        assert!(!Permissions::none().allows(Observe));
    }

    #[test]
    fn claim_round_trips_and_refuses_unknown_names() {
        let scopes = Permissions::from_claim("mesh.operate  mesh.observe").unwrap();
        assert_eq!(scopes.to_claim(), "mesh.observe mesh.operate");
        assert_eq!(Permissions::from_claim("").unwrap(), Permissions::none());
        assert!(Permissions::from_claim("mesh.observe mesh.root").is_err());
        assert!("MESH.ADMIN".parse::<Permission>().is_err());
    }
}
