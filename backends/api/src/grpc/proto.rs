//! The messages of `meshkit.control.v1`, generated from `proto/control.proto` when the crate
//! builds (see `build.rs`): field for field and tag for tag what the file says, documented by
//! its comments. They need only `prost`.

#![allow(
    // The generated code spells paths and derives as prost writes them.
    unused_qualifications,
    clippy::use_self,
    clippy::derive_partial_eq_without_eq,
    clippy::doc_markdown
)]

include!(concat!(env!("OUT_DIR"), "/messages/meshkit.control.v1.rs"));

/// What a [`LeadershipEvent`] records (its `oneof change`).
pub use self::leadership_event::Change as LeadershipChange;

impl PeerState {
    /// The state `GET /meshkit/peers` names `name` (`Unspecified` for a name it does not use).
    pub fn from_json_name(name: &str) -> Self {
        match name {
            "alive" => Self::Alive,
            "suspect" => Self::Suspect,
            "dead" => Self::Dead,
            "left" => Self::Left,
            _ => Self::Unspecified,
        }
    }

    /// The state's name as `GET /meshkit/peers` writes it (`alive`, ...; `unspecified`).
    pub fn as_json_name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
        }
    }
}
