//! # MeshKit's sans-IO protocol core
//!
//! This crate holds MeshKit's protocol state machines and their wire format, with no I/O: no
//! sockets, no clock, no threads, no OS randomness. The same code runs inside the deterministic
//! simulator (`meshkit-sim`, thousands of nodes on virtual time) and inside the tokio/QUIC runtime.
//!
//! ## Start here
//!
//! * [`node`]: [`node::Node`], the one composition a host drives: membership, and optionally a
//!   lease voter, a lease client and its campaign, with the datagram channel framing and the
//!   in-process delivery of a node's messages to itself. Both the simulator and the tokio
//!   runtime drive it; its docs list the methods and the poll order.
//! * [`membership`]: SWIM failure detection with the Lifeguard refinements, piggybacked
//!   dissemination, anti-entropy, versioned per-member metadata. [`membership::Membership`]'s
//!   docs show how a driver feeds it.
//! * [`shard`]: shard ids and their lease scopes, the fenced [`shard::ShardMap`], and the
//!   [`shard::Rebalancer`] that plans the fewest moves to balance, fill and drain.
//! * [`queue`]: task queues per shard, held by the shard's owner, fenced by its lease,
//!   replicated before acknowledgement, with backpressure and peer lease health.
//! * [`wire`]: the versioned binary datagram format; decoding never panics.
//! * [`lease`]: leadership leases with fencing tokens, replicated by a Raft voter group
//!   ([`lease::LeaseGroup`]) and used through [`lease::LeaseClient`]; its own wire format.
//! * [`diag`]: health probes (an open [`diag::probe::Probe`] trait and the
//!   [`diag::probe::ProbeScheduler`]) and chaos faults ([`diag::fault::FaultPlan`], its blast
//!   radius and the self-reverting [`diag::fault::FaultSchedule`]).
//! * [`config`]: the validated [`config::Config`] and its LAN / WAN / memberlist profiles.
//! * [`Instant`], [`NodeId`], [`Incarnation`], [`MetaVersion`]: time and identifiers;
//!   [`Transmit`]: what every `poll_transmit` returns.
//!
//! ## Rules of the core
//!
//! Time is a value passed in (`now: Instant`); randomness comes from a ChaCha8 stream seeded by
//! the driver; no iteration order depends on hashing; no peer input can panic a node; every queue
//! and message has a bound. See `docs/architecture.md` in the repository.

#![deny(missing_docs)]

extern crate alloc;

pub mod config;
pub mod diag;
mod id;
pub mod lease;
pub mod membership;
pub mod node;
pub mod queue;
mod rng;
pub mod shard;
mod time;
mod timer;
mod transmit;
pub mod wire;

pub use id::{Incarnation, MetaVersion, NodeId};
pub use time::{Duration, Instant, RATE_ONE_PPM, SkewedClock};
pub use transmit::Transmit;

/// The crate's README, whose example runs as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
