//! Maintenance windows: when the alerts of some probes are recorded but not sent.
//!
//! A window is one-off (`start`/`end` as RFC 3339 times) or weekly (`weekdays` with `start`/
//! `end` as times of day, UTC), and covers the probes its selectors match:
//!
//! ```toml
//! [[alerting.maintenance]]             # one-off
//! start = "2026-12-06T02:00:00Z"
//! end = "2026-12-06T04:00:00Z"
//! clusters = ["prod-a"]
//! reason = "node upgrade (CHG-1234)"
//!
//! [[alerting.maintenance]]             # weekly, Sunday 02:00 to 04:00 UTC
//! weekdays = ["sunday"]                # names, 3-letter forms, ranges "monday:friday"
//! start = "02:00"
//! end = "04:00"                        # an end before the start runs past midnight
//! groups = ["core"]
//! probes = ["core/watch*"]             # `*` matches any run of characters
//! reason = "weekly restarts"
//! ```
//!
//! Rules: each selector (`clusters`, `namespaces`, `groups`, `probes`) left out matches every
//! probe; given, the probe's value must be one of it; a window covers a probe when all its
//! selectors match. A window is active from `start` (included) to `end` (excluded). `reason`
//! is required: it is written into the history and the reports beside each muted alert.

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::ConfigError;
use crate::record::ProbeKey;

/// Milliseconds in a minute, a day, a week.
const MINUTE_MS: i64 = 60_000;
/// See [`MINUTE_MS`].
const DAY_MS: i64 = 86_400_000;
/// Minutes in a day: the end of day a weekly `end = "24:00"` means.
const DAY_MINUTES: u32 = 24 * 60;
/// The most values in one selector list.
pub const MAX_SELECTOR_VALUES: usize = 256;

/// `[[alerting.maintenance]]` as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawMaintenanceWindow {
    /// RFC 3339 (one-off) or `HH:MM` UTC with `weekdays` (weekly).
    pub start: Option<String>,
    /// RFC 3339 (one-off) or `HH:MM` UTC with `weekdays` (weekly); excluded.
    pub end: Option<String>,
    /// The weekly form's days.
    pub weekdays: Option<Vec<String>>,
    /// Clusters covered (all when left out).
    pub clusters: Option<Vec<String>>,
    /// Namespaces covered (all when left out).
    pub namespaces: Option<Vec<String>>,
    /// Groups covered (all when left out).
    pub groups: Option<Vec<String>>,
    /// Probe names or `*` patterns covered (all when left out).
    pub probes: Option<Vec<String>>,
    /// Why: shown beside each muted alert in the history and the reports.
    pub reason: Option<String>,
}

/// One validated window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceWindow {
    schedule: Schedule,
    clusters: Vec<String>,
    namespaces: Vec<String>,
    groups: Vec<String>,
    probes: Vec<String>,
    reason: String,
}

/// When a window is active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// From `start_unix_ms` (included) to `end_unix_ms` (excluded).
    Once {
        /// The start, ms since the Unix epoch.
        start_unix_ms: i64,
        /// The end, ms since the Unix epoch.
        end_unix_ms: i64,
    },
    /// Each week on `weekdays`, from `start_minute` to `end_minute` of the day (UTC); an end at
    /// or before the start runs into the next day.
    Weekly {
        /// Bit `d` set: the window starts on day `d` (0 = Monday .. 6 = Sunday).
        weekdays: u8,
        /// Minutes after midnight UTC.
        start_minute: u32,
        /// Minutes after midnight UTC (up to 1440).
        end_minute: u32,
    },
}

impl MaintenanceWindow {
    /// Why the window exists.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// When it is active.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Whether it covers `key` at `now_unix_ms`.
    pub fn covers(&self, key: &ProbeKey, now_unix_ms: i64) -> bool {
        self.is_active(now_unix_ms) && self.selects(key)
    }

    /// Whether the selectors match `key` (whatever the time).
    pub fn selects(&self, key: &ProbeKey) -> bool {
        let listed =
            |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
        listed(&self.clusters, &key.cluster)
            && listed(&self.namespaces, &key.namespace)
            && listed(&self.groups, &key.group)
            && (self.probes.is_empty() || self.probes.iter().any(|p| glob(p, &key.probe)))
    }

    /// Whether it is active at `now_unix_ms`.
    pub fn is_active(&self, now_unix_ms: i64) -> bool {
        match self.schedule {
            Schedule::Once {
                start_unix_ms,
                end_unix_ms,
            } => start_unix_ms <= now_unix_ms && now_unix_ms < end_unix_ms,
            Schedule::Weekly {
                weekdays,
                start_minute,
                end_minute,
            } => {
                let day = now_unix_ms.div_euclid(DAY_MS);
                let minute = u32::try_from(now_unix_ms.rem_euclid(DAY_MS) / MINUTE_MS)
                    .expect("a minute of the day fits u32");
                let starts_on = |day: i64| weekdays & (1 << weekday(day)) != 0;
                if start_minute < end_minute {
                    starts_on(day) && (start_minute..end_minute).contains(&minute)
                } else {
                    // Past midnight: tonight's part, or the morning part of yesterday's window.
                    (starts_on(day) && minute >= start_minute)
                        || (starts_on(day - 1) && minute < end_minute)
                }
            }
        }
    }
}

/// Monday = 0 .. Sunday = 6 of the `day`-th day since 1970-01-01 (a Thursday).
fn weekday(day: i64) -> u32 {
    u32::try_from((day + 3).rem_euclid(7)).expect("0..7")
}

impl RawMaintenanceWindow {
    /// Checks every key; `at` is the window's own key (`alerting.maintenance[2]`).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key (`alerting.maintenance[2].end`).
    pub fn validate(self, at: &str) -> Result<MaintenanceWindow, ConfigError> {
        let key = |name: &str| format!("{at}.{name}");
        let needed = |name: &str| {
            ConfigError::new(
                key(name),
                "required: a window needs start and end, RFC 3339 times \
                 (2026-12-06T02:00:00Z), or times of day (02:00, UTC) with weekdays",
            )
        };
        let start = self.start.ok_or_else(|| needed("start"))?;
        let end = self.end.ok_or_else(|| needed("end"))?;
        let schedule = match self.weekdays {
            None => {
                let start_unix_ms = rfc3339(&key("start"), &start)?;
                let end_unix_ms = rfc3339(&key("end"), &end)?;
                if end_unix_ms <= start_unix_ms {
                    return Err(ConfigError::new(
                        key("end"),
                        format!("{end:?} is not after start {start:?}"),
                    ));
                }
                Schedule::Once {
                    start_unix_ms,
                    end_unix_ms,
                }
            }
            Some(days) => {
                let weekdays = weekdays(&key("weekdays"), &days)?;
                let start_minute = time_of_day(&key("start"), &start)?;
                let end_minute = time_of_day(&key("end"), &end)?;
                if start_minute == DAY_MINUTES {
                    return Err(ConfigError::new(
                        key("start"),
                        "24:00 is the end of a day: a window starts at 00:00 to 23:59",
                    ));
                }
                if start_minute == end_minute {
                    return Err(ConfigError::new(
                        key("end"),
                        format!(
                            "{end:?} equals start: a weekly window lasts at least a minute \
                             (00:00 to 24:00 is a whole day)"
                        ),
                    ));
                }
                Schedule::Weekly {
                    weekdays,
                    start_minute,
                    end_minute,
                }
            }
        };
        let reason = self.reason.map(|r| r.trim().to_owned()).unwrap_or_default();
        if reason.is_empty() {
            return Err(ConfigError::new(
                key("reason"),
                "required: say why (it is shown beside each muted alert in the reports)",
            ));
        }
        Ok(MaintenanceWindow {
            schedule,
            clusters: selector(&key("clusters"), self.clusters)?,
            namespaces: selector(&key("namespaces"), self.namespaces)?,
            groups: selector(&key("groups"), self.groups)?,
            probes: selector(&key("probes"), self.probes)?,
            reason,
        })
    }
}

/// An RFC 3339 time as ms since the Unix epoch.
fn rfc3339(key: &str, text: &str) -> Result<i64, ConfigError> {
    let at = OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|e| {
        ConfigError::new(
            key,
            format!("{text:?} is not an RFC 3339 time ({e}): such as 2026-12-06T02:00:00Z"),
        )
    })?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| ConfigError::new(key, format!("{text:?} is out of range")))
}

/// `HH:MM` (00:00 to 24:00) as minutes after midnight.
fn time_of_day(key: &str, text: &str) -> Result<u32, ConfigError> {
    let refuse = || {
        ConfigError::new(
            key,
            format!(
                "{text:?} is not a time of day: HH:MM from 00:00 to 24:00, UTC (with weekdays; \
                 without them start and end are RFC 3339 times)"
            ),
        )
    };
    let (h, m) = text.trim().split_once(':').ok_or_else(refuse)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(refuse());
    }
    let h: u32 = h.parse().map_err(|_| refuse())?;
    let m: u32 = m.parse().map_err(|_| refuse())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(refuse());
    }
    Ok(h * 60 + m)
}

/// Day names (`monday`, `mon`) and ranges (`monday:friday`, wrapping `saturday:monday`) as a
/// bit set, Monday = bit 0.
fn weekdays(key: &str, days: &[String]) -> Result<u8, ConfigError> {
    const NAMES: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let day = |text: &str| -> Result<u32, ConfigError> {
        let lower = text.trim().to_ascii_lowercase();
        NAMES
            .iter()
            .position(|n| *n == lower || (lower.len() == 3 && n.starts_with(&lower)))
            .map(|d| u32::try_from(d).expect("0..7"))
            .ok_or_else(|| {
                ConfigError::new(
                    key,
                    format!(
                        "{text:?} is not a weekday: monday .. sunday, mon .. sun, or a range \
                         such as monday:friday"
                    ),
                )
            })
    };
    if days.is_empty() {
        return Err(ConfigError::new(
            key,
            "empty: name at least one day (leave weekdays out for a one-off window)",
        ));
    }
    let mut set = 0u8;
    for entry in days {
        let (first, last) = match entry.split_once(':') {
            Some((a, b)) => (day(a)?, day(b)?),
            None => {
                let d = day(entry)?;
                (d, d)
            }
        };
        let mut d = first;
        loop {
            set |= 1 << d;
            if d == last {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(set)
}

/// A selector list: absent or empty matches all; values must be non-empty and few.
fn selector(key: &str, values: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let values = values.unwrap_or_default();
    if values.len() > MAX_SELECTOR_VALUES {
        return Err(ConfigError::new(
            key,
            format!("{} values: at most {MAX_SELECTOR_VALUES}", values.len()),
        ));
    }
    if let Some(i) = values.iter().position(|v| v.trim().is_empty()) {
        return Err(ConfigError::new(
            format!("{key}[{i}]"),
            "empty: leave the selector out to cover every probe",
        ));
    }
    Ok(values)
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (none
/// included) and everything else for itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cluster: &str, group: &str, probe: &str) -> ProbeKey {
        ProbeKey {
            cluster: cluster.to_owned(),
            namespace: "default".to_owned(),
            group: group.to_owned(),
            probe: probe.to_owned(),
        }
    }

    fn ms(text: &str) -> i64 {
        rfc3339("t", text).expect("a time")
    }

    fn raw(start: &str, end: &str) -> RawMaintenanceWindow {
        RawMaintenanceWindow {
            start: Some(start.to_owned()),
            end: Some(end.to_owned()),
            reason: Some("test".to_owned()),
            ..RawMaintenanceWindow::default()
        }
    }

    #[test]
    fn a_one_off_window_covers_start_but_not_end() {
        let w = raw("2026-12-06T02:00:00Z", "2026-12-06T04:00:00Z")
            .validate("w")
            .expect("valid");
        let k = key("prod", "core", "core/api@a");
        assert!(!w.covers(&k, ms("2026-12-06T01:59:59.999Z")));
        assert!(w.covers(&k, ms("2026-12-06T02:00:00Z")));
        assert!(w.covers(&k, ms("2026-12-06T03:59:59.999Z")));
        assert!(!w.covers(&k, ms("2026-12-06T04:00:00Z")));
    }

    #[test]
    fn a_weekly_window_repeats_and_crosses_midnight() {
        // 2026-12-06 is a Sunday.
        let w = RawMaintenanceWindow {
            weekdays: Some(vec!["sun".to_owned()]),
            ..raw("23:00", "01:30")
        }
        .validate("w")
        .expect("valid");
        let k = key("prod", "core", "core/api@a");
        assert!(w.covers(&k, ms("2026-12-06T23:00:00Z")));
        assert!(
            w.covers(&k, ms("2026-12-07T01:29:00Z")),
            "Monday morning part"
        );
        assert!(!w.covers(&k, ms("2026-12-07T01:30:00Z")));
        assert!(
            !w.covers(&k, ms("2026-12-07T23:30:00Z")),
            "not Monday night"
        );
        assert!(w.covers(&k, ms("2026-12-13T23:59:00Z")), "next Sunday");
        assert!(
            !w.covers(&k, ms("2026-12-06T00:30:00Z")),
            "Saturday's night is not in it"
        );
    }

    #[test]
    fn weekday_ranges_wrap() {
        let w = RawMaintenanceWindow {
            weekdays: Some(vec!["saturday:monday".to_owned()]),
            ..raw("00:00", "24:00")
        }
        .validate("w")
        .expect("valid");
        let k = key("prod", "core", "p");
        assert!(w.covers(&k, ms("2026-12-05T12:00:00Z")), "Saturday");
        assert!(w.covers(&k, ms("2026-12-07T23:59:00Z")), "Monday");
        assert!(!w.covers(&k, ms("2026-12-08T00:00:00Z")), "Tuesday");
    }

    #[test]
    fn selectors_narrow_a_window() {
        let w = RawMaintenanceWindow {
            clusters: Some(vec!["prod".to_owned()]),
            probes: Some(vec!["core/watch*@*:7443".to_owned()]),
            ..raw("2026-12-06T02:00:00Z", "2026-12-06T04:00:00Z")
        }
        .validate("w")
        .expect("valid");
        let now = ms("2026-12-06T03:00:00Z");
        assert!(w.covers(&key("prod", "core", "core/watch-sse@10.0.0.1:7443"), now));
        assert!(!w.covers(&key("prod", "core", "core/watch-sse@10.0.0.1:7444"), now));
        assert!(!w.covers(&key("stage", "core", "core/watch-sse@10.0.0.1:7443"), now));
        assert!(!w.covers(&key("prod", "core", "core/api@10.0.0.1:7443"), now));
    }

    #[test]
    fn glob_matches_runs() {
        assert!(glob("a*", "a"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXcYb"));
        assert!(!glob("ab*ba", "aba"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exact2"));
    }

    #[test]
    fn errors_name_the_key() {
        let refused = |w: RawMaintenanceWindow| {
            w.validate("alerting.maintenance[3]")
                .expect_err("refused")
                .key
        };
        assert_eq!(
            refused(raw("2026-12-06T02:00:00Z", "2026-12-06T02:00:00Z")),
            "alerting.maintenance[3].end"
        );
        assert_eq!(
            refused(raw("yesterday", "2026-12-06T02:00:00Z")),
            "alerting.maintenance[3].start"
        );
        assert_eq!(
            refused(RawMaintenanceWindow {
                reason: None,
                ..raw("2026-12-06T02:00:00Z", "2026-12-07T02:00:00Z")
            }),
            "alerting.maintenance[3].reason"
        );
        assert_eq!(
            refused(RawMaintenanceWindow {
                weekdays: Some(vec!["funday".into()]),
                ..raw("02:00", "04:00")
            }),
            "alerting.maintenance[3].weekdays"
        );
        assert_eq!(
            refused(RawMaintenanceWindow {
                weekdays: Some(vec!["sun".into()]),
                ..raw("2:00", "04:00")
            }),
            "alerting.maintenance[3].start"
        );
        assert_eq!(
            refused(RawMaintenanceWindow {
                weekdays: Some(vec!["sun".into()]),
                ..raw("02:00", "24:01")
            }),
            "alerting.maintenance[3].end"
        );
        assert_eq!(
            refused(RawMaintenanceWindow {
                groups: Some(vec![String::new()]),
                ..raw("2026-12-06T02:00:00Z", "2026-12-07T02:00:00Z")
            }),
            "alerting.maintenance[3].groups[0]"
        );
        assert_eq!(
            refused(RawMaintenanceWindow {
                end: None,
                ..raw("2026-12-06T02:00:00Z", "")
            }),
            "alerting.maintenance[3].end"
        );
    }
}
