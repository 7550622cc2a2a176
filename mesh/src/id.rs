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
/// claim about itself or to announce a restart; a newer incarnation overrides any older claim.
///
/// Incarnations are compared in serial-number arithmetic (RFC 1982), not as plain integers, so
/// the counter has no ceiling: [`next`](Self::next) wraps, and the successor of any incarnation
/// is newer than it. That is what keeps a member's own refutation able to win over any claim
/// about it, however high a peer pushed the number (docs/security.md, "Membership claims").
/// Two incarnations are comparable while they are less than 2^31 apart; peers never move a
/// member's incarnation by more than `MAX_INCARNATION_STEP` per claim, and boot incarnations
/// (wall-clock seconds in the tokio node) move by the seconds a node was down.
///
/// There is deliberately no `Ord`: a plain `<` would be the wrong comparison near the wrap.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
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

    /// The next incarnation. Wraps from `u32::MAX` to 0, which is newer in serial arithmetic.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0.wrapping_add(1))
    }

    /// How many steps `self` is ahead of `other`: `Some(0)` when equal, `Some(n)` when newer by
    /// `n`, `None` when older (or exactly half the number space away, which is undefined).
    pub const fn steps_after(self, other: Self) -> Option<u32> {
        let d = self.0.wrapping_sub(other.0);
        if d < (1 << 31) { Some(d) } else { None }
    }

    /// Whether `self` is strictly newer than `other`.
    pub const fn is_newer_than(self, other: Self) -> bool {
        matches!(self.steps_after(other), Some(d) if d > 0)
    }

    /// Whether `self` is strictly older than `other`.
    pub const fn is_older_than(self, other: Self) -> bool {
        self.steps_after(other).is_none()
    }

    /// The newer of the two.
    #[must_use]
    pub const fn newest(self, other: Self) -> Self {
        if other.is_newer_than(self) {
            other
        } else {
            self
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnations_compare_across_the_wrap() {
        let top = Incarnation::new(u32::MAX);
        assert_eq!(top.next(), Incarnation::new(0));
        assert!(
            top.next().is_newer_than(top),
            "the successor of the ceiling is newer"
        );
        assert!(top.is_older_than(top.next()));
        assert_eq!(top.next().steps_after(top), Some(1));
        assert_eq!(
            Incarnation::new(5).steps_after(Incarnation::new(5)),
            Some(0)
        );
        assert_eq!(Incarnation::new(3).steps_after(Incarnation::new(5)), None);
        assert_eq!(Incarnation::new(1).newest(top), Incarnation::new(1));
        assert!(!Incarnation::new(1 << 31).is_newer_than(Incarnation::new(0)));
        assert!(!Incarnation::new(0).is_newer_than(Incarnation::new(1 << 31)));
    }

    /// The forms logs, events and the command-line tools show.
    #[test]
    fn display_forms() {
        assert_eq!(Incarnation::new(7).to_string(), "inc7");
        assert_eq!(MetaVersion::new(3, 12).to_string(), "3.12");
    }
}
