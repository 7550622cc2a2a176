//! Membership configuration: named profiles, and the validated [`Config`] built from its raw form.
//!
//! A [`Config`] can only be built through [`Config::from_profile`] or `TryFrom<RawConfig>`, which
//! rejects every out-of-range value with the field's name and the allowed range (parse, don't
//! validate). Fields are private; getters document default, unit and trade-off.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::time::Duration;

/// The LAN (and WAN) profile's floor of the minimum suspicion timeout, in milliseconds.
const SUSPICION_MIN_LAN_MS: u64 = 4_000;

/// A named starting point for [`Config`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Profile {
    /// MeshKit's default for one data centre: 1 s probes, Lifeguard suspicion scaled to detect a
    /// crash in a few seconds, bucketed anti-entropy whose cost does not grow with the mesh.
    #[default]
    Lan,
    /// Links of tens to hundreds of milliseconds: slower probes, longer timeouts.
    Wan,
    /// What HashiCorp memberlist's `DefaultLANConfig` does (probe 1 s, timeout 500 ms, suspicion
    /// multiplier 4, gossip every 200 ms to 3 nodes, retransmit multiplier 4, full-state push-pull
    /// every 30 s), run by this core; the baseline the benchmarks compare against.
    Memberlist,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lan => "lan",
            Self::Wan => "wan",
            Self::Memberlist => "memberlist",
        })
    }
}

impl FromStr for Profile {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "lan" => Ok(Self::Lan),
            "wan" => Ok(Self::Wan),
            "memberlist" => Ok(Self::Memberlist),
            _ => Err(ConfigError::UnknownProfile {
                expected: "lan, wan or memberlist",
            }),
        }
    }
}

/// How periodic anti-entropy exchanges state.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AntiEntropyMode {
    /// Compare 128 bucket digests (one datagram), then send only the members of differing
    /// buckets: steady-state cost is independent of the mesh size.
    Bucketed,
    /// Send every member's record each period, as memberlist's push-pull does; cost grows with N.
    FullState,
}

/// Validated membership configuration. Build with [`Config::from_profile`] or from a
/// [`RawConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    profile: Profile,
    probe_interval: Duration,
    probe_timeout: Duration,
    indirect_probes: u32,
    suspicion_mult: u32,
    suspicion_max_mult: u32,
    suspicion_confirmations: u32,
    suspicion_min: Duration,
    awareness_max: u32,
    gossip_interval: Duration,
    gossip_fanout: u32,
    retransmit_mult: u32,
    anti_entropy_interval: Duration,
    anti_entropy_mode: AntiEntropyMode,
    anti_entropy_max_buckets: u32,
    dead_probe_interval: Duration,
    dead_retention: Duration,
    tombstone_ttl: Duration,
    max_metadata_bytes: u32,
    max_members: u32,
    minority_rules: bool,
    mass_probes: bool,
}

impl Config {
    /// The defaults of a profile.
    pub fn from_profile(profile: Profile) -> Self {
        let ms = Duration::from_millis;
        let lan = Self {
            profile,
            probe_interval: ms(1_000),
            probe_timeout: ms(500),
            indirect_probes: 3,
            suspicion_mult: 1,
            suspicion_max_mult: 6,
            suspicion_confirmations: 3,
            // A member silent for less than this plus about one probe period is never declared
            // dead, whatever the mesh size: 4 s tolerates the multi-second stalls of a garbage
            // collector or a paused VM (docs/benchmarks.md, "Pauses and cut-off minorities").
            suspicion_min: ms(SUSPICION_MIN_LAN_MS),
            // Lifeguard's 8 stretches a node's probe period up to 9 times when its probes go
            // unanswered; a node cut off with a minority then takes minutes to hold the rest
            // dead. 2 (3 times at most) halves that and costs ~10% more suspicions under 20%
            // loss (docs/benchmarks.md, "Pauses and cut-off minorities").
            awareness_max: 2,
            gossip_interval: ms(200),
            gossip_fanout: 3,
            // memberlist's 4 leaves each node ~e^-(4 ceil(log10 N)) odds of missing an update
            // entirely (about 1 in 16,000 per node at N = 128); 6 makes that ~e^-17 for little
            // traffic, since updates are rare in a healthy mesh. Anti-entropy repairs the rest.
            retransmit_mult: 6,
            anti_entropy_interval: ms(30_000),
            anti_entropy_mode: AntiEntropyMode::Bucketed,
            anti_entropy_max_buckets: 16,
            dead_probe_interval: ms(5_000),
            dead_retention: Duration::from_secs(24 * 3600),
            tombstone_ttl: Duration::from_secs(600),
            max_metadata_bytes: 4096,
            max_members: 200_000,
            // Off: they cost false positives after a heal (see `minority_rules`).
            minority_rules: false,
            // Off: faster for a cut-off minority, but more false positives after a heal (see
            // `mass_probes`).
            mass_probes: false,
        };
        match profile {
            Profile::Lan => lan,
            Profile::Wan => Self {
                probe_interval: ms(5_000),
                probe_timeout: ms(3_000),
                suspicion_mult: 2,
                gossip_interval: ms(500),
                gossip_fanout: 4,
                anti_entropy_interval: ms(60_000),
                dead_probe_interval: ms(15_000),
                ..lan
            },
            Profile::Memberlist => Self {
                suspicion_mult: 4,
                retransmit_mult: 4,
                // memberlist: k = SuspicionMult - 2 expected confirmations.
                suspicion_confirmations: 2,
                // memberlist has no floor: its minimum is the formula's alone.
                suspicion_min: Duration::ZERO,
                // memberlist's `AwarenessMaxMultiplier`.
                awareness_max: 8,
                anti_entropy_mode: AntiEntropyMode::FullState,
                ..lan
            },
        }
    }

    /// The profile this configuration started from.
    pub fn profile(&self) -> Profile {
        self.profile
    }
    /// Whether the rules for many suspicions at once apply: LAN and WAN, not the memberlist
    /// profile, which reproduces memberlist (the baseline every detector figure is compared
    /// against) and so has neither. A confirmed verdict falling while this node holds many
    /// suspicions waits longer (class 1, a one-way cut), and a node holding a quarter of
    /// the members it knows up Suspect may act as a node cut off with a minority (class 4,
    /// when [`minority_rules`](Self::minority_rules) is on); a suspicion never expects more
    /// confirmations than members left to send them (docs/benchmarks.md, "Class 1" and
    /// "Class 4").
    pub fn mass_failure_rules(&self) -> bool {
        !matches!(self.profile, Profile::Memberlist)
    }
    /// Whether a node holding a quarter of the members it knows up Suspect behaves as one cut
    /// off with a minority (class 4): it probes members nobody suspects first, counts its
    /// helpers' nacks and its own failed relayed pings as confirmations, and does not charge
    /// failed probes to its local health. Off by default in every profile: they bring a cut-off
    /// minority's view of the rest sooner (3 of 16: p50 29.2 -> 17.8 s) but, in the simulator's
    /// tour at 128 nodes (seeds 1..3), 19 running nodes were declared dead after a heal where 7
    /// were without them (docs/benchmarks.md, "Class 4"). Turn on with
    /// [`with_minority_rules`](Self::with_minority_rules) where a minority must act on its view
    /// soon and a flap after a heal is cheap. Never in the memberlist profile (it has no
    /// mass-failure rules: [`mass_failure_rules`](Self::mass_failure_rules)).
    pub fn minority_rules(&self) -> bool {
        self.minority_rules && self.mass_failure_rules()
    }
    /// This configuration with the cut-off minority's rules on or off (see
    /// [`minority_rules`](Self::minority_rules)).
    #[must_use]
    pub fn with_minority_rules(mut self, on: bool) -> Self {
        self.minority_rules = on;
        self
    }
    /// Whether a node in a mass failure it shares with others (an eighth or more of the members
    /// it knows up Suspect, two at least, each on another member's word too) probes more than one member a
    /// period, up to eight a probe interval in proportion to the share suspected (the period's
    /// stretch by local health made up for), each a whole probe with its indirect helpers, and
    /// gives every verdict one last direct check (class 4: a few nodes cut off from a large
    /// majority cannot suspect it fast enough at one probe a period). Off by default in every
    /// profile: 3 of 16 cut off hold the rest Dead within 18.7 s over seeds 1..20 (35.8 s
    /// without), but the simulator's tour at 128 nodes declared about twice as many running
    /// nodes dead just after its heal (a cut-off side still busy declaring the other dead has
    /// more verdicts falling at the instant of the heal); docs/benchmarks.md, "Class 4". The
    /// memberlist profile never applies it (it has no mass-failure rules:
    /// [`mass_failure_rules`](Self::mass_failure_rules)).
    pub fn mass_probes(&self) -> bool {
        self.mass_probes && self.mass_failure_rules()
    }
    /// This configuration with more probes a period in a mass failure on or off (see
    /// [`mass_probes`](Self::mass_probes)).
    #[must_use]
    pub fn with_mass_probes(mut self, on: bool) -> Self {
        self.mass_probes = on;
        self
    }
    /// SWIM protocol period: one member is probed per period (several in a shared mass failure
    /// with [`mass_probes`](Self::mass_probes)), default 1 s LAN. Shorter detects
    /// sooner and costs proportionally more traffic.
    pub fn probe_interval(&self) -> Duration {
        self.probe_interval
    }
    /// Wait for a direct ack before probing indirectly (default 500 ms LAN); must exceed the
    /// network's round trip with margin, and is scaled by the local health multiplier.
    pub fn probe_timeout(&self) -> Duration {
        self.probe_timeout
    }
    /// Members asked to probe indirectly after a missed direct ack (SWIM's k, default 3).
    pub fn indirect_probes(&self) -> u32 {
        self.indirect_probes
    }
    /// Minimum suspicion timeout = `suspicion_mult * max(1, log10(N)) * probe_interval`.
    pub fn suspicion_mult(&self) -> u32 {
        self.suspicion_mult
    }
    /// Floor of the minimum suspicion timeout (default 4 s LAN and WAN, none for the memberlist
    /// profile): the minimum is `max(suspicion_min, suspicion_mult * max(1, log10(N)) *
    /// probe_interval)`. A member that stops answering for less than about this plus one probe
    /// period (a garbage-collector pause, a stalled VM) refutes before anyone declares it dead;
    /// a longer floor detects every real crash later by as much.
    pub fn suspicion_min(&self) -> Duration {
        self.suspicion_min
    }
    /// Maximum (unconfirmed) suspicion timeout, as a multiple of the minimum (Lifeguard, default 6).
    pub fn suspicion_max_mult(&self) -> u32 {
        self.suspicion_max_mult
    }
    /// Independent confirmations after which the suspicion timeout reaches its minimum
    /// (Lifeguard's K).
    pub fn suspicion_confirmations(&self) -> u32 {
        self.suspicion_confirmations
    }
    /// Ceiling of the local health score (Lifeguard's S): probe period and timeouts stretch by
    /// `score + 1`, so at most `awareness_max + 1` times (default 2 LAN and WAN, 8 for the
    /// memberlist profile, as memberlist). Higher protects a slow node from accusing healthy
    /// ones a little more; it also slows a node cut off with a minority, whose probes fail for
    /// real, to that many times fewer probes.
    pub fn awareness_max(&self) -> u32 {
        self.awareness_max
    }
    /// Period of standalone gossip (default 200 ms LAN); one "gossip round".
    pub fn gossip_interval(&self) -> Duration {
        self.gossip_interval
    }
    /// Members each gossip round sends to (default 3).
    pub fn gossip_fanout(&self) -> u32 {
        self.gossip_fanout
    }
    /// An update is retransmitted `retransmit_mult * ceil(log10(N + 1))` times.
    pub fn retransmit_mult(&self) -> u32 {
        self.retransmit_mult
    }
    /// Period of anti-entropy with one random member (default 30 s LAN).
    pub fn anti_entropy_interval(&self) -> Duration {
        self.anti_entropy_interval
    }
    /// Bucketed digests (default) or memberlist-style full state.
    pub fn anti_entropy_mode(&self) -> AntiEntropyMode {
        self.anti_entropy_mode
    }
    /// Differing digest buckets repaired per exchange; bounds one exchange's burst.
    pub fn anti_entropy_max_buckets(&self) -> u32 {
        self.anti_entropy_max_buckets
    }
    /// How often one Dead member is probed again, so that partitions heal without an operator.
    pub fn dead_probe_interval(&self) -> Duration {
        self.dead_probe_interval
    }
    /// How long Dead and Left members are kept (and re-probed) before they are forgotten.
    pub fn dead_retention(&self) -> Duration {
        self.dead_retention
    }
    /// How long a deleted metadata key's tombstone is kept before garbage collection.
    pub fn tombstone_ttl(&self) -> Duration {
        self.tombstone_ttl
    }
    /// Bound on one member's metadata (keys plus values), in bytes (default 4 KiB).
    pub fn max_metadata_bytes(&self) -> u32 {
        self.max_metadata_bytes
    }
    /// Bound on the member table; records beyond it are refused.
    pub fn max_members(&self) -> u32 {
        self.max_members
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::from_profile(Profile::Lan)
    }
}

/// A duration written as text: `250ms`, `1.5s`, `30s`, `10m`, `2h`, `500us`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = DurationParseError;
    fn from_str(s: &str) -> Result<Self, DurationParseError> {
        parse_duration(s).map(Self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

/// Why a duration string was refused: the text given and what is wrong with it. Always the
/// writer's fault (a config or scenario file, a command-line flag); nothing was built.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationParseError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: DurationErrorReason,
}

/// What is wrong with a duration string.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurationErrorReason {
    /// It starts with `-`.
    #[error("a duration cannot be negative")]
    Negative,
    /// A number without a unit, such as `10`.
    #[error("missing unit (ns, us, ms, s, m, h)")]
    MissingUnit,
    /// A unit this grammar does not know.
    #[error("unknown unit (ns, us, ms, s, m, h), such as 500ms, 30s, 10m or 1h")]
    UnknownUnit,
    /// A unit without a number, such as `ms`.
    #[error("missing number")]
    MissingNumber,
    /// Two decimal points, or more than 18 decimals.
    #[error("malformed number")]
    MalformedNumber,
    /// More than `u64::MAX` nanoseconds (about 584 years).
    #[error("too large")]
    TooLarge,
}

/// Parses `500ms`, `1.5s`, `30s`, `10m`, `1h`, `250us`, `10ns`: a decimal number and one of
/// `ns us µs ms s m min h`. The one duration grammar of `node.toml`, [`RawConfig`] and the
/// simulator's scenario files.
///
/// The fraction is exact, with no floating point: `0.1s` is exactly 100 ms on every platform,
/// so a scenario replays the same everywhere. A fraction below a nanosecond is dropped.
pub fn parse_duration(input: &str) -> Result<Duration, DurationParseError> {
    let err = |reason| DurationParseError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.starts_with('-') {
        return Err(err(DurationErrorReason::Negative));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit_ns: u128 = match unit.trim() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "" => return Err(err(DurationErrorReason::MissingUnit)),
        _ => return Err(err(DurationErrorReason::UnknownUnit)),
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(err(DurationErrorReason::MissingNumber));
    }
    if frac.contains('.') || frac.len() > 18 {
        return Err(err(DurationErrorReason::MalformedNumber));
    }
    let digits = |text: &str| -> Result<u128, DurationParseError> {
        if text.is_empty() {
            return Ok(0);
        }
        text.parse()
            .map_err(|_| err(DurationErrorReason::MalformedNumber))
    };
    let (int, frac_value) = (digits(int)?, digits(frac)?);
    // At most 18 decimals: 10^18 fits a u128 many times over, and so does frac * unit_ns.
    let scale = 10u128.pow(u32::try_from(frac.len()).unwrap_or(18));
    let nanos = int
        .checked_mul(unit_ns)
        .and_then(|n| n.checked_add(frac_value * unit_ns / scale))
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| err(DurationErrorReason::TooLarge))?;
    Ok(Duration::from_nanos(nanos))
}

/// The serde form of [`Config`]: a profile plus optional overrides, as written in a TOML file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    missing_docs,
    reason = "each field is documented by the Config getter of the same name"
)]
pub struct RawConfig {
    pub profile: Option<Profile>,
    pub probe_interval: Option<HumanDuration>,
    pub probe_timeout: Option<HumanDuration>,
    pub indirect_probes: Option<u32>,
    pub suspicion_mult: Option<u32>,
    pub suspicion_max_mult: Option<u32>,
    pub suspicion_confirmations: Option<u32>,
    pub suspicion_min: Option<HumanDuration>,
    pub awareness_max: Option<u32>,
    pub gossip_interval: Option<HumanDuration>,
    pub gossip_fanout: Option<u32>,
    pub retransmit_mult: Option<u32>,
    pub anti_entropy_interval: Option<HumanDuration>,
    pub anti_entropy_mode: Option<AntiEntropyMode>,
    pub anti_entropy_max_buckets: Option<u32>,
    pub dead_probe_interval: Option<HumanDuration>,
    pub dead_retention: Option<HumanDuration>,
    pub tombstone_ttl: Option<HumanDuration>,
    pub max_metadata_bytes: Option<u32>,
    pub max_members: Option<u32>,
}

/// Why a [`RawConfig`] was refused. Nothing is built when this is returned; the caller's raw
/// form is untouched. Always a caller (operator) fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A number outside its allowed range.
    #[error("{field} = {value} is out of range: allowed {min}..={max}")]
    OutOfRange {
        /// The field's name as written in the file.
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A duration outside its allowed range (values in milliseconds).
    #[error("{field} = {value_ms}ms is out of range: allowed {min_ms}ms..={max_ms}ms")]
    DurationOutOfRange {
        /// The field's name as written in the file.
        field: &'static str,
        /// The value given, in milliseconds.
        value_ms: u64,
        /// Smallest allowed value, in milliseconds.
        min_ms: u64,
        /// Largest allowed value, in milliseconds.
        max_ms: u64,
    },
    /// Two fields that must relate in a certain way do not.
    #[error("{field} must be {relation} {other}")]
    Relation {
        /// The field at fault.
        field: &'static str,
        /// e.g. "less than".
        relation: &'static str,
        /// The field it is compared with.
        other: &'static str,
    },
    /// A profile name that does not exist.
    #[error("unknown profile: expected {expected}")]
    UnknownProfile {
        /// The names accepted.
        expected: &'static str,
    },
}

/// `value` (or `default`) if within `min..=max`; the error names `field` and the range.
pub(crate) fn check_u32(
    field: &'static str,
    value: Option<u32>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ConfigError> {
    let v = value.unwrap_or(default);
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value: v.into(),
            min: min.into(),
            max: max.into(),
        })
    }
}

/// `value` (or `default`) if within `min..=max`; the error names `field` and the range.
pub(crate) fn check_duration(
    field: &'static str,
    value: Option<HumanDuration>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let v = value.map_or(default, |h| h.0);
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Err(ConfigError::DurationOutOfRange {
            field,
            value_ms: ms(v),
            min_ms: ms(min),
            max_ms: ms(max),
        })
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let d = Self::from_profile(raw.profile.unwrap_or_default());
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        let config = Self {
            profile: d.profile,
            probe_interval: check_duration(
                "probe_interval",
                raw.probe_interval,
                d.probe_interval,
                ms(10),
                secs(60),
            )?,
            probe_timeout: check_duration(
                "probe_timeout",
                raw.probe_timeout,
                d.probe_timeout,
                ms(1),
                secs(60),
            )?,
            indirect_probes: check_u32(
                "indirect_probes",
                raw.indirect_probes,
                d.indirect_probes,
                0,
                16,
            )?,
            suspicion_mult: check_u32(
                "suspicion_mult",
                raw.suspicion_mult,
                d.suspicion_mult,
                1,
                32,
            )?,
            suspicion_max_mult: check_u32(
                "suspicion_max_mult",
                raw.suspicion_max_mult,
                d.suspicion_max_mult,
                1,
                32,
            )?,
            suspicion_confirmations: check_u32(
                "suspicion_confirmations",
                raw.suspicion_confirmations,
                d.suspicion_confirmations,
                0,
                16,
            )?,
            suspicion_min: check_duration(
                "suspicion_min",
                raw.suspicion_min,
                d.suspicion_min,
                Duration::ZERO,
                secs(600),
            )?,
            awareness_max: check_u32("awareness_max", raw.awareness_max, d.awareness_max, 0, 64)?,
            gossip_interval: check_duration(
                "gossip_interval",
                raw.gossip_interval,
                d.gossip_interval,
                ms(10),
                secs(60),
            )?,
            gossip_fanout: check_u32("gossip_fanout", raw.gossip_fanout, d.gossip_fanout, 1, 32)?,
            retransmit_mult: check_u32(
                "retransmit_mult",
                raw.retransmit_mult,
                d.retransmit_mult,
                1,
                32,
            )?,
            anti_entropy_interval: check_duration(
                "anti_entropy_interval",
                raw.anti_entropy_interval,
                d.anti_entropy_interval,
                secs(1),
                secs(3600),
            )?,
            anti_entropy_mode: raw.anti_entropy_mode.unwrap_or(d.anti_entropy_mode),
            anti_entropy_max_buckets: check_u32(
                "anti_entropy_max_buckets",
                raw.anti_entropy_max_buckets,
                d.anti_entropy_max_buckets,
                1,
                crate::wire::DIGEST_BUCKETS as u32,
            )?,
            dead_probe_interval: check_duration(
                "dead_probe_interval",
                raw.dead_probe_interval,
                d.dead_probe_interval,
                ms(100),
                secs(3600),
            )?,
            dead_retention: check_duration(
                "dead_retention",
                raw.dead_retention,
                d.dead_retention,
                secs(60),
                secs(7 * 86_400),
            )?,
            tombstone_ttl: check_duration(
                "tombstone_ttl",
                raw.tombstone_ttl,
                d.tombstone_ttl,
                secs(1),
                secs(7 * 86_400),
            )?,
            max_metadata_bytes: check_u32(
                "max_metadata_bytes",
                raw.max_metadata_bytes,
                d.max_metadata_bytes,
                0,
                crate::wire::MAX_METADATA_BYTES as u32,
            )?,
            max_members: check_u32("max_members", raw.max_members, d.max_members, 1, 1_000_000)?,
            minority_rules: d.minority_rules,
            mass_probes: d.mass_probes,
        };
        if config.probe_timeout >= config.probe_interval {
            return Err(ConfigError::Relation {
                field: "probe_timeout",
                relation: "less than",
                other: "probe_interval",
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert!(parse_duration("ten seconds").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn durations_are_exact_and_errors_say_why() {
        // No floating point: 0.1 s is 100 ms exactly, and nine decimals of a second are kept.
        assert_eq!(parse_duration("0.1s").unwrap(), Duration::from_millis(100));
        assert_eq!(
            parse_duration("1.000000001s").unwrap(),
            Duration::from_nanos(1_000_000_001)
        );
        assert_eq!(parse_duration("5min").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration(" 2h ").unwrap(), Duration::from_secs(7200));
        let reason = |s: &str| parse_duration(s).unwrap_err().reason;
        assert_eq!(reason("-1s"), DurationErrorReason::Negative);
        assert_eq!(reason("10"), DurationErrorReason::MissingUnit);
        assert_eq!(reason("10 parsecs"), DurationErrorReason::UnknownUnit);
        assert_eq!(reason("ms"), DurationErrorReason::MissingNumber);
        assert_eq!(reason("1.2.3s"), DurationErrorReason::MalformedNumber);
        assert_eq!(
            reason("99999999999999999999h"),
            DurationErrorReason::TooLarge
        );
        let e = parse_duration("-1s").unwrap_err().to_string();
        assert_eq!(e, "invalid duration \"-1s\": a duration cannot be negative");
    }

    #[test]
    fn out_of_range_names_field_and_range() {
        let raw: RawConfig = toml::from_str("gossip_fanout = 0").unwrap();
        let err = Config::try_from(raw).unwrap_err();
        assert_eq!(
            err.to_string(),
            "gossip_fanout = 0 is out of range: allowed 1..=32"
        );

        let raw: RawConfig = toml::from_str("suspicion_min = \"11m\"").unwrap();
        let err = Config::try_from(raw).unwrap_err().to_string();
        assert!(
            err.contains("suspicion_min") && err.contains("0ms..=600000ms"),
            "{err}"
        );
        let raw: RawConfig = toml::from_str("suspicion_min = \"2s\"").unwrap();
        assert_eq!(
            Config::try_from(raw).unwrap().suspicion_min(),
            Duration::from_secs(2)
        );

        let raw: RawConfig = toml::from_str("probe_interval = \"1h\"").unwrap();
        let err = Config::try_from(raw).unwrap_err().to_string();
        assert!(
            err.contains("probe_interval") && err.contains("10ms..=60000ms"),
            "{err}"
        );
    }

    #[test]
    fn relations_are_checked() {
        let raw: RawConfig = toml::from_str("probe_interval = \"400ms\"").unwrap();
        let err = Config::try_from(raw).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Relation {
                field: "probe_timeout",
                ..
            }
        ));
    }

    #[test]
    fn unknown_keys_and_profiles_are_refused() {
        assert!(toml::from_str::<RawConfig>("probe_intervall = \"1s\"").is_err());
        assert!(toml::from_str::<RawConfig>("profile = \"moon\"").is_err());
        let raw: RawConfig = toml::from_str("profile = \"wan\"").unwrap();
        assert_eq!(
            Config::try_from(raw).unwrap(),
            Config::from_profile(Profile::Wan)
        );
    }

    #[test]
    fn every_profile_is_valid() {
        for p in [Profile::Lan, Profile::Wan, Profile::Memberlist] {
            let raw = RawConfig {
                profile: Some(p),
                ..RawConfig::default()
            };
            assert_eq!(Config::try_from(raw).unwrap(), Config::from_profile(p));
        }
    }
}
