//! Identifiers: newtypes, never aliases, so a node id cannot be passed where an incarnation goes.

use core::fmt;

/// A member of the mesh. Drivers map it to an address (the tokio driver through the member's
/// published address metadata; the simulator by index).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeId(u64);

impl NodeId {
    /// Wraps a raw id.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node-{}", self.0)
    }
}

/// SWIM's incarnation number: only the member itself raises it, to refute a suspicion or death
/// claim about itself or to announce a restart; a higher incarnation overrides any older claim.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Incarnation(u32);

impl Incarnation {
    /// Wraps a raw incarnation number.
    pub const fn new(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The next incarnation; saturates, because a member refuting 4 billion times is already lost.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inc{}", self.0)
    }
}

/// The version of one member's metadata.
///
/// `epoch` is the member's boot incarnation (a restart starts a new, empty epoch); `seq` counts the
/// writes (sets and deletes) within the epoch. A copy of a member's metadata at version `v` always
/// equals the owner's state right after write `v`: copies only ever advance whole versions.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct MetaVersion {
    /// The owner's boot incarnation.
    pub epoch: u32,
    /// Writes within the epoch.
    pub seq: u32,
}

impl MetaVersion {
    /// A version from its parts.
    pub const fn new(epoch: u32, seq: u32) -> Self {
        Self { epoch, seq }
    }
}

impl fmt::Display for MetaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.seq)
    }
}
