//! The validated [`FaultPlan`], its kinds and selectors, and its serde form [`RawFaultPlan`].

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{ConfigError, HumanDuration, check_duration, check_u32};
use crate::lease::{Scope, ScopeError};
use crate::shard::{ShardId, ShardIdError};
use crate::time::Duration;

/// The longest a plan may last. A host's own maximum (the chaos configuration's) is usually far
/// shorter; this bound only keeps every deadline representable and every plan finite.
pub const MAX_FAULT_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The longest a plan may wait before it starts.
pub const MAX_START_DELAY: Duration = Duration::from_secs(24 * 3600);
/// The most indices one selector or one partition's groups may list: every member of the
/// largest mesh the simulator runs, whose partitions lower to explicit groups.
pub const MAX_SELECTOR_INDICES: usize = 200_000;
/// The most explicit groups of one partition.
pub const MAX_PARTITION_GROUPS: usize = 64;
/// The longest added delay, reorder window or latency jitter.
pub const MAX_LINK_DELAY: Duration = Duration::from_secs(60);
/// The most members one membership surge adds.
pub const MAX_SURGE_JOINS: u32 = 100_000;
/// The longest remaining validity of a soon-expiring certificate.
pub const MAX_CERTIFICATE_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Clock-rate skew bounds: local seconds per real second.
pub const CLOCK_RATE_RANGE: (f64, f64) = (0.01, 100.0);
/// The most parameters of one [`FaultKind::Custom`] fault.
pub const MAX_CUSTOM_PARAMS: usize = 16;
/// The longest parameter value of a [`FaultKind::Custom`] fault, in bytes.
pub const MAX_CUSTOM_PARAM_BYTES: usize = 256;
/// The longest name of a [`FaultKind::Custom`] fault type or parameter key, in bytes.
pub const MAX_CUSTOM_NAME_BYTES: usize = 64;
/// The prefix of a custom fault type's name in an allow-list ([`FaultKind::allow_name`]).
pub const CUSTOM_KIND_PREFIX: &str = "custom:";

/// One fault: what ([`FaultKind`]), on which nodes ([`Selector`]) and links, when and for how
/// long. Every plan has a duration above zero and at most [`MAX_FAULT_DURATION`]: it reverts by
/// itself. Built only by [`FaultPlan::new`] (and its `with_*` methods) or from a
/// [`RawFaultPlan`], which check every field.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    kind: FaultKind,
    selector: Selector,
    peers: Selector,
    direction: LinkDirection,
    duration: Duration,
    start: Duration,
    seed: u64,
}

/// What a fault does. A plan's [`Selector`] names the nodes; link kinds apply to the directed
/// links between those nodes and the plan's peers (see [`LinkDirection`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum FaultKind {
    /// The process exits at the start and is restarted at the end, with its durable state (a
    /// crash and restart; the duration is the downtime).
    ///
    /// The kinds without fields are written `Kill {}` rather than `Kill` so that the serde form
    /// refuses a stray key beside them (serde ignores keys beside a unit variant's tag).
    Kill {},
    /// The process stops running (timers and inbound datagrams wait) and resumes at the end:
    /// a gray failure.
    Pause {},
    /// Datagrams between groups of nodes are dropped.
    Partition {
        /// How the groups are formed.
        shape: PartitionShape,
        /// Both directions, or only from the first group out.
        #[serde(default)]
        direction: PartitionDirection,
    },
    /// Every datagram on the links waits `delay` plus an exponential extra of mean `jitter`.
    Latency {
        /// The added delay.
        #[serde(with = "duration_text")]
        delay: Duration,
        /// The mean of the extra delay (zero: none).
        #[serde(default, with = "duration_text")]
        jitter: Duration,
    },
    /// Each datagram on the links is lost with probability `rate`.
    Loss {
        /// 0.0..=1.0.
        rate: f64,
    },
    /// Bursty loss: a Gilbert-Elliott chain per link, stepped once per datagram.
    BurstyLoss {
        /// Probability of moving from the good to the bad state (0.0..=1.0).
        enter: f64,
        /// Probability of moving from the bad to the good state (0.0..=1.0).
        leave: f64,
        /// Loss probability in the bad state (0.0..=1.0).
        loss: f64,
    },
    /// Each datagram on the links is delivered twice with probability `rate`.
    Duplicate {
        /// 0.0..=1.0.
        rate: f64,
    },
    /// Each datagram on the links is held back by up to `max_delay` (uniform) with probability
    /// `rate`, so later ones overtake it.
    Reorder {
        /// 0.0..=1.0.
        rate: f64,
        /// The longest hold.
        #[serde(with = "duration_text")]
        max_delay: Duration,
    },
    /// The control listener refuses HTTP/3, so clients fall back to HTTP/2.
    TransportDowngrade {},
    /// The node serves an expired certificate, or one expiring `expires_in` from the start.
    CertificateExpiry {
        /// `None`: already expired.
        #[serde(
            default,
            with = "option_duration_text",
            skip_serializing_if = "Option::is_none"
        )]
        expires_in: Option<Duration>,
    },
    /// The node's clock runs at `rate` local seconds per real second.
    ClockSkew {
        /// 0.01..=100.
        rate: f64,
    },
    /// The selected nodes get new certificates from the mesh's CA, one after another over the
    /// plan's duration, while traffic runs: a rotation drill (nothing that should pass may be
    /// refused). The environment issues and writes them (a node holds no CA key); each node
    /// picks its files up with its certificate reload.
    CertificateRotation {},
    /// `joins` new members join through the selected nodes at the start and leave at the end.
    MembershipSurge {
        /// 1..=100,000.
        joins: u32,
    },
    /// A fault type a service registered on the nodes it embeds (docs/diagnostics.md, "A fault
    /// type of your own"): MeshKit knows only its name and parameters and leaves the effect to
    /// the type's own hooks on each target. Written
    /// `{ kind = "custom", name = "slow-disk", params = { delay = "200ms" } }`.
    ///
    /// The name keeps the kind open without an open enum: the plan's checks, the allow-list
    /// (as `custom:<name>`, [`allow_name`](Self::allow_name)), the maximum duration, the
    /// two-step token, the dead-man revert and the audit are the built-in kinds' own. A host
    /// with no type of that name refuses the plan rather than run it as nothing.
    Custom {
        /// The registered type's name: 1..=64 bytes of `a-z 0-9 . _ -`.
        name: String,
        /// Its parameters, at most [`MAX_CUSTOM_PARAMS`] (keys as the name, values at most
        /// [`MAX_CUSTOM_PARAM_BYTES`] bytes); their meaning is the type's, which checks them
        /// where the plan is applied.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        params: BTreeMap<String, String>,
    },
}

impl FaultKind {
    /// The kind's name: the `kind` key of the serde form, the allow-list entry and the metric
    /// label.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Kill {} => "kill",
            Self::Pause {} => "pause",
            Self::Partition { .. } => "partition",
            Self::Latency { .. } => "latency",
            Self::Loss { .. } => "loss",
            Self::BurstyLoss { .. } => "bursty-loss",
            Self::Duplicate { .. } => "duplicate",
            Self::Reorder { .. } => "reorder",
            Self::TransportDowngrade {} => "transport-downgrade",
            Self::CertificateExpiry { .. } => "certificate-expiry",
            Self::ClockSkew { .. } => "clock-skew",
            Self::CertificateRotation {} => "certificate-rotation",
            Self::MembershipSurge { .. } => "membership-surge",
            // The family: metric labels and the radius keep a `&'static str` (a bounded label
            // set); the type's own name is `allow_name`'s.
            Self::Custom { .. } => "custom",
        }
    }

    /// The kind's entry in an allow-list (`[chaos] allowed_kinds`): [`name`](Self::name) for
    /// a built-in kind, `custom:<name>` for a [`Custom`](Self::Custom) one, so that allowing
    /// one service's fault type allows no other, and a misspelled built-in kind is still
    /// refused as unknown rather than taken for a custom type.
    pub fn allow_name(&self) -> Cow<'_, str> {
        match self {
            Self::Custom { name, .. } => Cow::Owned(format!("{CUSTOM_KIND_PREFIX}{name}")),
            kind => Cow::Borrowed(kind.name()),
        }
    }

    /// Whether the kind acts on links (the plan's peers and direction apply) rather than on
    /// nodes.
    pub fn is_link_fault(&self) -> bool {
        matches!(
            self,
            Self::Latency { .. }
                | Self::Loss { .. }
                | Self::BurstyLoss { .. }
                | Self::Duplicate { .. }
                | Self::Reorder { .. }
        )
    }
}

/// How a partition forms its groups (the Jepsen nemesis shapes, plus regions and explicit
/// groups). `n` is the number of members in the view; "drawn" means shuffled with the plan's
/// seed. See [`resolve`](super::resolve) for the exact link sets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PartitionShape {
    /// `floor(n/2)` nodes drawn from the selected ones against the rest.
    Halves,
    /// One node drawn from the selected ones against the rest (select `raft-leader` to cut off
    /// the leader).
    One,
    /// A minority, `max(1, floor((n-1)/2))` nodes drawn from the selected ones, against the rest.
    Minority,
    /// A majority, `min(floor(n/2)+1, n-1)` nodes drawn from the selected ones, against the rest.
    Majority,
    /// One node drawn from the selected ones talks to everyone; the others are shuffled into two
    /// sides (`floor((n-1)/2)` and the rest) that cannot talk to each other.
    Bridge,
    /// The members shuffled into a ring; two nodes talk only if they are within `k` places of
    /// each other, `k = ceil(floor(n/2)/2)`: each sees a majority (itself and `2k` others) and no
    /// two see the same one. Two-way only; every member takes part.
    MajoritiesRing,
    /// One group per region. Two-way only; every member takes part.
    Regions,
    /// Explicit groups of member indices; unlisted members form one more group. Every member
    /// takes part.
    Groups(Vec<Vec<u32>>),
}

impl PartitionShape {
    /// The shape's name in the serde form.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Halves => "halves",
            Self::One => "one",
            Self::Minority => "minority",
            Self::Majority => "majority",
            Self::Bridge => "bridge",
            Self::MajoritiesRing => "majorities-ring",
            Self::Regions => "regions",
            Self::Groups(_) => "groups",
        }
    }

    /// Whether the shape draws its first group (or bridge node) from the plan's selector; the
    /// others partition every member and need the selector `all`.
    pub fn uses_selector(&self) -> bool {
        matches!(
            self,
            Self::Halves | Self::One | Self::Minority | Self::Majority | Self::Bridge
        )
    }
}

/// Which directions a partition cuts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionDirection {
    /// Both directions between groups (the default).
    #[default]
    TwoWay,
    /// Only datagrams from the first group (the drawn one, bridge's first side, the first explicit
    /// group) to the others; the reverse still flows.
    OneWay,
}

/// Which directed links a link fault applies to, relative to the selected nodes `S` and the
/// plan's peers `P` (every member by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkDirection {
    /// `s -> p` and `p -> s` (the default).
    #[default]
    Both,
    /// `s -> p` only: what the selected nodes send.
    Outbound,
    /// `p -> s` only: what the selected nodes receive.
    Inbound,
}

/// Which nodes a plan applies to, resolved when it starts against the host's
/// [`ClusterView`](super::ClusterView). Indices count members in node-id order from 0.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Selector {
    /// Every member.
    All,
    /// These member indices.
    Indices(Vec<u32>),
    /// That many distinct members, drawn with the plan's seed (all if fewer).
    Count(u32),
    /// That share of the members in percent (0..=100), rounded to nearest, at least one when
    /// above zero; drawn with the plan's seed.
    Share(u32),
    /// The members in this region.
    Region(String),
    /// The holder of this lease scope.
    LeaseHolder(Scope),
    /// The Raft leader of the lease group.
    RaftLeader,
    /// The owner of this shard.
    ShardOwner(ShardId),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Indices(i) => write!(f, "indices {i:?}"),
            Self::Count(n) => write!(f, "{n} drawn"),
            Self::Share(p) => write!(f, "{p}%"),
            Self::Region(r) => write!(f, "region {r}"),
            Self::LeaseHolder(s) => write!(f, "holder of {s}"),
            Self::RaftLeader => f.write_str("raft leader"),
            Self::ShardOwner(s) => write!(f, "owner of {s}"),
        }
    }
}

/// The serde form of a [`Selector`]: `"all"`, `"raft-leader"`, `{ indices = [0, 3] }`,
/// `{ count = 2 }`, `{ share = 20 }`, `{ region = "eu" }`,
/// `{ lease-holder = "global-control" }`, `{ shard-owner = "shard/orders/3" }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[expect(
    missing_docs,
    reason = "each variant is the Selector variant of the same name"
)]
pub enum RawSelector {
    #[default]
    All,
    Indices(Vec<u32>),
    Count(u32),
    Share(u32),
    Region(String),
    LeaseHolder(String),
    RaftLeader,
    ShardOwner(String),
}

impl From<Selector> for RawSelector {
    fn from(s: Selector) -> Self {
        match s {
            Selector::All => Self::All,
            Selector::Indices(i) => Self::Indices(i),
            Selector::Count(n) => Self::Count(n),
            Selector::Share(p) => Self::Share(p),
            Selector::Region(r) => Self::Region(r),
            Selector::LeaseHolder(s) => Self::LeaseHolder(s.to_string()),
            Selector::RaftLeader => Self::RaftLeader,
            Selector::ShardOwner(s) => Self::ShardOwner(s.to_string()),
        }
    }
}

/// The serde form of [`FaultPlan`], as written in TOML or JSON:
///
/// ```toml
/// duration = "30s"                 # required: above zero, at most 24h
/// start = "5s"                     # optional delay after it is scheduled (default 0s)
/// selector = { share = 20 }        # which nodes (default "all")
/// peers = "all"                    # link kinds only: the other end of each link (default "all")
/// direction = "outbound"           # link kinds only: both | outbound | inbound (default both)
/// seed = 7                         # draws of share, count and shapes (default 0)
///
/// [fault]
/// kind = "loss"                    # see FaultKind; its fields beside it
/// rate = 0.2
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    missing_docs,
    reason = "each field is documented by the FaultPlan getter of the same name"
)]
pub struct RawFaultPlan {
    pub fault: FaultKind,
    #[serde(with = "duration_text")]
    pub duration: Duration,
    #[serde(
        default,
        with = "option_duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub start: Option<Duration>,
    #[serde(default)]
    pub selector: RawSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<RawSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<LinkDirection>,
    #[serde(default)]
    pub seed: u64,
}

impl From<FaultPlan> for RawFaultPlan {
    fn from(plan: FaultPlan) -> Self {
        let link = plan.kind.is_link_fault();
        Self {
            fault: plan.kind,
            duration: plan.duration,
            start: (!plan.start.is_zero()).then_some(plan.start),
            selector: plan.selector.into(),
            peers: link.then(|| plan.peers.into()),
            direction: link.then_some(plan.direction),
            seed: plan.seed,
        }
    }
}

/// Why a plan was refused; the message names the field. Nothing was built. Always the caller's
/// fault (the operator or scenario that wrote the plan).
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum FaultPlanError {
    /// A number or duration out of its range (`duration`, `start`, `selector.share`, ...).
    #[error("{0}")]
    Range(#[from] ConfigError),
    /// A probability or rate outside its range, or not a number.
    #[error("{field} = {value} is out of range: allowed {min}..={max}")]
    Rate {
        /// The field, such as `fault.rate`.
        field: &'static str,
        /// The value given.
        value: f64,
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
    },
    /// `direction = "one-way"` on a shape that has no first group.
    #[error("fault.direction = one-way: the {shape} shape is symmetric, use two-way")]
    OneWayShape {
        /// The shape.
        shape: &'static str,
    },
    /// A selector other than `all` on a shape that partitions every member.
    #[error("selector = {selector}: the {shape} shape partitions every member, use \"all\"")]
    SelectorWithShape {
        /// The shape.
        shape: &'static str,
        /// The selector given.
        selector: Selector,
    },
    /// A custom fault type's name or parameter that breaks its rules.
    #[error("{field} {value:?}: {problem}")]
    Custom {
        /// `fault.name`, `fault.params key` or `fault.params value` (then `value` is the key).
        field: &'static str,
        /// What was given.
        value: String,
        /// Which rule it breaks.
        problem: &'static str,
    },
    /// `peers` or `direction` on a kind that acts on nodes, not links.
    #[error("{field} applies to link faults only, not to {kind}")]
    NotALinkFault {
        /// `peers` or `direction`.
        field: &'static str,
        /// The kind.
        kind: &'static str,
    },
    /// A selector or partition listing more indices than [`MAX_SELECTOR_INDICES`], or more
    /// groups than [`MAX_PARTITION_GROUPS`].
    #[error("{field} lists {count}: at most {max}")]
    TooMany {
        /// `selector.indices`, `fault.shape.groups` or the like.
        field: &'static str,
        /// How many were given.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// An empty explicit group, or an index in two groups (or twice in one).
    #[error("fault.shape.groups: index {index} is listed twice, or a group is empty")]
    Groups {
        /// The repeated index (`u32::MAX` for an empty group).
        index: u32,
    },
    /// A selector naming a lease scope that is not one.
    #[error("{field}.lease-holder {value:?}: {source}")]
    Scope {
        /// `selector` or `peers`.
        field: &'static str,
        /// As given.
        value: String,
        /// Why.
        source: ScopeError,
    },
    /// A selector naming a shard that is not one.
    #[error("{field}.shard-owner {value:?}: {source}")]
    Shard {
        /// `selector` or `peers`.
        field: &'static str,
        /// As given.
        value: String,
        /// Why.
        source: ShardIdError,
    },
}

impl FaultPlan {
    /// A plan of `kind` on the `selector`'s nodes for `duration`, starting as soon as it is
    /// scheduled, on links to every member both ways (link kinds), seed 0.
    ///
    /// # Errors
    ///
    /// As for a [`RawFaultPlan`] with these values.
    pub fn new(
        kind: FaultKind,
        selector: Selector,
        duration: Duration,
    ) -> Result<Self, FaultPlanError> {
        Self::try_from(RawFaultPlan {
            fault: kind,
            duration,
            start: None,
            selector: selector.into(),
            peers: None,
            direction: None,
            seed: 0,
        })
    }

    /// The same, waiting `start` after it is scheduled.
    ///
    /// # Errors
    ///
    /// [`FaultPlanError::Range`] for a delay over [`MAX_START_DELAY`].
    pub fn with_start(self, start: Duration) -> Result<Self, FaultPlanError> {
        let mut raw = RawFaultPlan::from(self);
        raw.start = Some(start);
        Self::try_from(raw)
    }

    /// The same on the links between the selected nodes and `peers`, in `direction`.
    ///
    /// # Errors
    ///
    /// [`FaultPlanError::NotALinkFault`] for a kind that acts on nodes.
    pub fn with_links(
        self,
        peers: Selector,
        direction: LinkDirection,
    ) -> Result<Self, FaultPlanError> {
        let mut raw = RawFaultPlan::from(self);
        raw.peers = Some(peers.into());
        raw.direction = Some(direction);
        Self::try_from(raw)
    }

    /// The same with another seed: other draws for shares, counts and shapes.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// What the fault does.
    pub fn kind(&self) -> &FaultKind {
        &self.kind
    }

    /// Which nodes it applies to (for partitions: where the first group or bridge is drawn
    /// from).
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// The other end of each faulty link (link kinds; every member by default).
    pub fn peers(&self) -> &Selector {
        &self.peers
    }

    /// Which directions of those links (link kinds; both by default).
    pub fn direction(&self) -> LinkDirection {
        self.direction
    }

    /// How long the fault lasts once active; it reverts by itself at the end.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// How long after it is scheduled it starts.
    pub fn start(&self) -> Duration {
        self.start
    }

    /// The seed of its draws: the same plan against the same view resolves to the same blast
    /// radius, so the radius shown before confirmation is the one that starts.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

impl TryFrom<RawFaultPlan> for FaultPlan {
    type Error = FaultPlanError;

    fn try_from(raw: RawFaultPlan) -> Result<Self, FaultPlanError> {
        let duration = check_duration(
            "duration",
            Some(HumanDuration(raw.duration)),
            Duration::ZERO,
            Duration::from_millis(1),
            MAX_FAULT_DURATION,
        )?;
        let start = check_duration(
            "start",
            raw.start.map(HumanDuration),
            Duration::ZERO,
            Duration::ZERO,
            MAX_START_DELAY,
        )?;
        check_kind(&raw.fault)?;
        let selector = selector("selector", raw.selector)?;
        let kind_name = raw.fault.name();
        if !raw.fault.is_link_fault() {
            if raw.peers.is_some() {
                return Err(FaultPlanError::NotALinkFault {
                    field: "peers",
                    kind: kind_name,
                });
            }
            if raw.direction.is_some() {
                return Err(FaultPlanError::NotALinkFault {
                    field: "direction",
                    kind: kind_name,
                });
            }
        }
        if let FaultKind::Partition { shape, direction } = &raw.fault {
            let symmetric = matches!(
                shape,
                PartitionShape::MajoritiesRing | PartitionShape::Regions
            );
            if symmetric && *direction == PartitionDirection::OneWay {
                return Err(FaultPlanError::OneWayShape {
                    shape: shape.name(),
                });
            }
            if !shape.uses_selector() && selector != Selector::All {
                return Err(FaultPlanError::SelectorWithShape {
                    shape: shape.name(),
                    selector,
                });
            }
        }
        Ok(Self {
            kind: raw.fault,
            selector,
            peers: selector_or_all("peers", raw.peers)?,
            direction: raw.direction.unwrap_or_default(),
            duration,
            start,
            seed: raw.seed,
        })
    }
}

fn selector_or_all(
    field: &'static str,
    raw: Option<RawSelector>,
) -> Result<Selector, FaultPlanError> {
    raw.map_or(Ok(Selector::All), |raw| selector(field, raw))
}

fn selector(field: &'static str, raw: RawSelector) -> Result<Selector, FaultPlanError> {
    Ok(match raw {
        RawSelector::All => Selector::All,
        RawSelector::Indices(indices) => {
            if indices.len() > MAX_SELECTOR_INDICES {
                return Err(FaultPlanError::TooMany {
                    field: if field == "peers" {
                        "peers.indices"
                    } else {
                        "selector.indices"
                    },
                    count: indices.len(),
                    max: MAX_SELECTOR_INDICES,
                });
            }
            Selector::Indices(indices)
        }
        RawSelector::Count(n) => Selector::Count(n),
        RawSelector::Share(p) => Selector::Share(check_u32(
            if field == "peers" {
                "peers.share"
            } else {
                "selector.share"
            },
            Some(p),
            0,
            0,
            100,
        )?),
        RawSelector::Region(r) => Selector::Region(r),
        RawSelector::LeaseHolder(s) => {
            Selector::LeaseHolder(Scope::new(&s).map_err(|source| FaultPlanError::Scope {
                field,
                value: s.clone(),
                source,
            })?)
        }
        RawSelector::RaftLeader => Selector::RaftLeader,
        RawSelector::ShardOwner(s) => {
            Selector::ShardOwner(s.parse().map_err(|source| FaultPlanError::Shard {
                field,
                value: s.clone(),
                source,
            })?)
        }
    })
}

fn rate(field: &'static str, value: f64, min: f64, max: f64) -> Result<(), FaultPlanError> {
    // `contains` is false for NaN, so a NaN is refused too.
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(FaultPlanError::Rate {
            field,
            value,
            min,
            max,
        })
    }
}

fn check_kind(kind: &FaultKind) -> Result<(), FaultPlanError> {
    let link_delay = |field, d| {
        check_duration(
            field,
            Some(HumanDuration(d)),
            d,
            Duration::ZERO,
            MAX_LINK_DELAY,
        )
    };
    match kind {
        FaultKind::Kill {}
        | FaultKind::Pause {}
        | FaultKind::TransportDowngrade {}
        | FaultKind::CertificateRotation {} => {}
        FaultKind::Partition { shape, .. } => {
            if let PartitionShape::Groups(groups) = shape {
                if groups.len() > MAX_PARTITION_GROUPS {
                    return Err(FaultPlanError::TooMany {
                        field: "fault.shape.groups",
                        count: groups.len(),
                        max: MAX_PARTITION_GROUPS,
                    });
                }
                let listed: usize = groups.iter().map(Vec::len).sum();
                if listed > MAX_SELECTOR_INDICES {
                    return Err(FaultPlanError::TooMany {
                        field: "fault.shape.groups indices",
                        count: listed,
                        max: MAX_SELECTOR_INDICES,
                    });
                }
                let mut seen = alloc::collections::BTreeSet::new();
                for group in groups {
                    if group.is_empty() {
                        return Err(FaultPlanError::Groups { index: u32::MAX });
                    }
                    if let Some(&index) = group.iter().find(|&&i| !seen.insert(i)) {
                        return Err(FaultPlanError::Groups { index });
                    }
                }
            }
        }
        FaultKind::Latency { delay, jitter } => {
            link_delay("fault.delay", *delay)?;
            link_delay("fault.jitter", *jitter)?;
        }
        FaultKind::Loss { rate: r } => rate("fault.rate", *r, 0.0, 1.0)?,
        FaultKind::BurstyLoss { enter, leave, loss } => {
            rate("fault.enter", *enter, 0.0, 1.0)?;
            rate("fault.leave", *leave, 0.0, 1.0)?;
            rate("fault.loss", *loss, 0.0, 1.0)?;
        }
        FaultKind::Duplicate { rate: r } => rate("fault.rate", *r, 0.0, 1.0)?,
        FaultKind::Reorder { rate: r, max_delay } => {
            rate("fault.rate", *r, 0.0, 1.0)?;
            link_delay("fault.max_delay", *max_delay)?;
        }
        FaultKind::CertificateExpiry { expires_in } => {
            if let Some(d) = expires_in {
                check_duration(
                    "fault.expires_in",
                    Some(HumanDuration(*d)),
                    *d,
                    Duration::ZERO,
                    MAX_CERTIFICATE_EXPIRY,
                )?;
            }
        }
        FaultKind::ClockSkew { rate: r } => {
            rate("fault.rate", *r, CLOCK_RATE_RANGE.0, CLOCK_RATE_RANGE.1)?;
        }
        FaultKind::MembershipSurge { joins } => {
            check_u32("fault.joins", Some(*joins), 1, 1, MAX_SURGE_JOINS)?;
        }
        FaultKind::Custom { name, params } => {
            check_custom_name("fault.name", name)?;
            if params.len() > MAX_CUSTOM_PARAMS {
                return Err(FaultPlanError::TooMany {
                    field: "fault.params",
                    count: params.len(),
                    max: MAX_CUSTOM_PARAMS,
                });
            }
            for (key, value) in params {
                check_custom_name("fault.params key", key)?;
                if value.len() > MAX_CUSTOM_PARAM_BYTES {
                    return Err(FaultPlanError::Custom {
                        field: "fault.params value",
                        value: key.clone(),
                        problem: "longer than 256 bytes",
                    });
                }
            }
        }
    }
    Ok(())
}

/// A custom type's name or parameter key: 1..=64 bytes of `a-z 0-9 . _ -` (probe names' rule:
/// it becomes an allow-list entry, a log field and an audit value, so nothing needs escaping).
pub fn check_custom_name(field: &'static str, name: &str) -> Result<(), FaultPlanError> {
    let problem = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_CUSTOM_NAME_BYTES {
        "longer than 64 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        "only a-z, 0-9, '.', '_' and '-' are allowed"
    } else {
        return Ok(());
    };
    Err(FaultPlanError::Custom {
        field,
        value: name.into(),
        problem,
    })
}

impl Serialize for FaultPlan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RawFaultPlan::from(self.clone()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for FaultPlan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::try_from(RawFaultPlan::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Durations as the text of [`parse_duration`](crate::config::parse_duration), written exactly
/// (`"250us"`, `"1500ms"`, `"30s"`): a plan read back is the plan written.
pub(crate) mod duration_text {
    use alloc::format;
    use alloc::string::String;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::time::Duration;

    pub(crate) fn text(d: Duration) -> String {
        let ns = d.as_nanos();
        if ns.is_multiple_of(1_000_000_000) {
            format!("{}s", ns / 1_000_000_000)
        } else if ns.is_multiple_of(1_000_000) {
            format!("{}ms", ns / 1_000_000)
        } else if ns.is_multiple_of(1_000) {
            format!("{}us", ns / 1_000)
        } else {
            format!("{ns}ns")
        }
    }

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::config::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// [`duration_text`] for an optional duration.
pub(crate) mod option_duration_text {
    use alloc::string::String;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::duration_text::text(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        crate::config::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}
