//! The origin's ledger: for each experiment this node fanned out, every target's state, and
//! when to ask the targets that have not confirmed their revert (docs/diagnostics.md, "Reverts
//! confirmed to the origin").
//!
//! Each target reverts by itself at the deadline (the dead-man switch); nothing tells the
//! origin. So the origin asks: at the deadline plus [`REVERT_SLACK`] it asks every target for
//! the experiment (`op = "status"` over the relay), and asks again, after
//! [`FIRST_RETRY`] doubling up to [`MAX_RETRY`], the ones that did not answer that they
//! reverted, [`MAX_ASKS`] rounds at most or until the experiment leaves this ledger (the
//! [`MAX_FANNED_OUT`] newest are kept). A target that never answers stays `unconfirmed`: that
//! is what an operator must see, not a guess that the dead-man switch worked.
//!
//! Sans-IO: times are Unix milliseconds passed in, and the answers are passed in;
//! [`super::ChaosControl`] does the asking and writes the audit record a [`Concluded`] asks for.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use meshkit_api::chaos::{
    ExperimentView, TARGET_CONFIRMED, TARGET_UNCONFIRMED, TargetResult, TargetRevert,
};
use meshkit_runtime::chaos_host::{ExperimentRef, MAX_RECENT_EXPERIMENTS};

/// From an experiment's deadline to the first ask: a target reverts within a second of its
/// deadline on its own clock (docs/benchmarks.md); the rest is for clocks that disagree.
pub const REVERT_SLACK: Duration = Duration::from_millis(1500);
/// The wait before asking again the targets that did not confirm; doubled each round.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two rounds.
pub const MAX_RETRY: Duration = Duration::from_secs(8);
/// Rounds of asks per experiment: waits of 1 + 2 + 4 + 8 + 8 s, about 23 s after the first
/// ask, before a silent target is left `unconfirmed` for good.
pub const MAX_ASKS: u32 = 6;
/// Fanned-out experiments kept, newest first: as many as a node lists of its own.
pub const MAX_FANNED_OUT: usize = MAX_RECENT_EXPERIMENTS;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What one target answered when the origin asked it.
#[derive(Clone, Debug)]
pub enum Answer {
    /// It lists the experiment: its view.
    Listed(Box<ExperimentView>),
    /// It was not reached, refused, or does not know the experiment: why, in words.
    Failed(String),
}

#[derive(Clone, Debug)]
struct Entry {
    id: ExperimentRef,
    /// The experiment as the first target that described it did (for listing it here when
    /// this node is not a target and holds no copy of its own).
    view: Option<ExperimentView>,
    deadline_ms: u64,
    /// Set when this node aborted it or engaged the kill switch before the deadline.
    ended: Option<String>,
    targets: BTreeMap<u64, TargetRevert>,
    asks: u32,
    next_ask_ms: u64,
    concluded: bool,
}

impl Entry {
    fn all_confirmed(&self) -> bool {
        self.targets.values().all(|t| t.state == TARGET_CONFIRMED)
    }

    fn conclude(&mut self) -> Concluded {
        self.concluded = true;
        let (confirmed, unconfirmed): (Vec<&TargetRevert>, Vec<&TargetRevert>) = self
            .targets
            .values()
            .partition(|t| t.state == TARGET_CONFIRMED);
        Concluded {
            id: self.id,
            kind: self.view.as_ref().map(|v| v.kind.clone()),
            end_reason: confirmed
                .iter()
                .find_map(|t| t.end_reason.clone())
                .or_else(|| self.ended.clone()),
            confirmed: confirmed.iter().map(|t| t.node).collect(),
            unconfirmed: unconfirmed.iter().map(|t| t.node).collect(),
        }
    }
}

/// An experiment whose confirmation is over (every target confirmed, or the asks ran out, or
/// it was pushed out of the ledger): the origin writes its revert record from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Concluded {
    /// The experiment.
    pub id: ExperimentRef,
    /// Its kind, when a target described it.
    pub kind: Option<String>,
    /// Why it ended, as the confirming targets said (or as this node ended it).
    pub end_reason: Option<String>,
    /// The targets that confirmed their revert, by id.
    pub confirmed: Vec<u64>,
    /// The targets that did not.
    pub unconfirmed: Vec<u64>,
}

/// The origin's ledger of fanned-out experiments. See the [module docs](self).
#[derive(Debug, Default)]
pub struct Ledger {
    /// Newest first, at most [`MAX_FANNED_OUT`].
    entries: VecDeque<Entry>,
}

impl Ledger {
    /// Records experiment `id`, ending at `deadline_ms`, as each target answered its start.
    /// The first ask is due at the deadline plus [`REVERT_SLACK`]. When this pushes an
    /// experiment still being confirmed out of the ledger, that one is concluded as it stands.
    pub fn fanned_out(
        &mut self,
        id: ExperimentRef,
        deadline_ms: u64,
        targets: &[TargetResult],
    ) -> Option<Concluded> {
        let view = targets.iter().find_map(|t| t.experiment.clone());
        let targets = targets
            .iter()
            .map(|t| {
                let revert = TargetRevert {
                    node: t.node,
                    state: TARGET_UNCONFIRMED.to_owned(),
                    activated_unix_ms: t.experiment.as_ref().and_then(|e| e.activated_at_unix_ms),
                    reverted_unix_ms: None,
                    end_reason: None,
                    // A target the start did not reach never got the fault, as far as the
                    // origin knows; it is asked like the others all the same.
                    error: (!t.ok).then(|| {
                        format!(
                            "at the start: {}",
                            t.error.as_deref().unwrap_or("no confirmation")
                        )
                    }),
                };
                (t.node, revert)
            })
            .collect();
        self.entries.retain(|e| e.id != id);
        self.entries.push_front(Entry {
            id,
            view,
            deadline_ms,
            ended: None,
            targets,
            asks: 0,
            next_ask_ms: deadline_ms.saturating_add(ms(REVERT_SLACK)),
            concluded: false,
        });
        if self.entries.len() > MAX_FANNED_OUT {
            let mut oldest = self.entries.pop_back()?;
            return (!oldest.concluded).then(|| oldest.conclude());
        }
        None
    }

    /// This node ended `id` early (`aborted`, `kill-switch`): listed so before any target
    /// confirms. The asks stay at the deadline: by then every target has ended it either way.
    pub fn ended(&mut self, id: ExperimentRef, reason: &str) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.ended.get_or_insert_with(|| reason.to_owned());
        }
    }

    /// Every experiment not yet concluded: the kill switch ends them all.
    pub fn end_all(&mut self, reason: &str) {
        for e in self.entries.iter_mut().filter(|e| !e.concluded) {
            e.ended.get_or_insert_with(|| reason.to_owned());
        }
    }

    /// The asks due at `now_ms`: each experiment with the targets that have not confirmed.
    pub fn due(&self, now_ms: u64) -> Vec<(ExperimentRef, Vec<u64>)> {
        self.entries
            .iter()
            .filter(|e| !e.concluded && e.next_ask_ms <= now_ms)
            .map(|e| {
                let nodes = e
                    .targets
                    .values()
                    .filter(|t| t.state != TARGET_CONFIRMED)
                    .map(|t| t.node)
                    .collect();
                (e.id, nodes)
            })
            .collect()
    }

    /// Target `node`'s answer about `id`. A target that lists it reverted has confirmed; one
    /// that lists it still running, or does not answer, has not (the reason is kept).
    pub fn answer(&mut self, id: ExperimentRef, node: u64, answer: Answer) {
        let Some(entry) = self.entries.iter_mut().find(|e| e.id == id) else {
            return;
        };
        let Some(target) = entry.targets.get_mut(&node) else {
            return;
        };
        match answer {
            Answer::Listed(view) => {
                target.activated_unix_ms = view.activated_at_unix_ms.or(target.activated_unix_ms);
                if view.phase == "reverted" {
                    target.state = TARGET_CONFIRMED.to_owned();
                    target.reverted_unix_ms = view.reverted_at_unix_ms;
                    target.end_reason = view.end_reason.clone();
                    target.error = None;
                } else {
                    target.error = Some(format!(
                        "node-{node} still lists it {} ({} ms left)",
                        view.phase, view.remaining_ms
                    ));
                }
                if entry.view.is_none() {
                    entry.view = Some(*view);
                }
            }
            Answer::Failed(error) => target.error = Some(error),
        }
    }

    /// A round of asks about `id` is over at `now_ms`: concluded when every target has
    /// confirmed or after [`MAX_ASKS`] rounds; otherwise the next round is scheduled.
    pub fn round_done(&mut self, id: ExperimentRef, now_ms: u64) -> Option<Concluded> {
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.id == id && !e.concluded)?;
        entry.asks = entry.asks.saturating_add(1);
        if entry.all_confirmed() || entry.asks >= MAX_ASKS {
            return Some(entry.conclude());
        }
        let wait = FIRST_RETRY
            .saturating_mul(1 << (entry.asks - 1).min(16))
            .min(MAX_RETRY);
        entry.next_ask_ms = now_ms.saturating_add(ms(wait));
        None
    }

    /// Whether any experiment is still being confirmed.
    pub fn pending(&self) -> bool {
        self.entries.iter().any(|e| !e.concluded)
    }

    /// Whether `id` is one this node fanned out and still keeps.
    pub fn tracks(&self, id: ExperimentRef) -> bool {
        self.entries.iter().any(|e| e.id == id)
    }

    /// `id`'s targets, by node id, when this node fanned it out.
    pub fn targets(&self, id: ExperimentRef) -> Option<Vec<TargetRevert>> {
        let e = self.entries.iter().find(|e| e.id == id)?;
        Some(e.targets.values().cloned().collect())
    }

    /// The experiments this node fanned out but does not hold itself (it is not one of their
    /// targets), as `node` lists them at `now_ms`, newest first. `held` says which it holds.
    pub fn views_not_held(
        &self,
        node: u64,
        now_ms: u64,
        held: impl Fn(ExperimentRef) -> bool,
    ) -> Vec<ExperimentView> {
        self.entries
            .iter()
            .filter(|e| !held(e.id))
            .filter_map(|e| {
                let mut v = e.view.clone()?;
                v.id = e.id.to_string();
                v.node = node;
                v.applied_here = false;
                v.deadline_unix_ms = e.deadline_ms;
                v.targets = e.targets.values().cloned().collect();
                let over = e.ended.is_some() || now_ms >= e.deadline_ms;
                if over {
                    v.phase = "reverted".to_owned();
                    v.remaining_ms = 0;
                    v.end_reason = e
                        .ended
                        .clone()
                        .or_else(|| v.targets.iter().find_map(|t| t.end_reason.clone()))
                        .or_else(|| Some("deadline".to_owned()));
                    v.reverted_at_unix_ms =
                        v.targets.iter().filter_map(|t| t.reverted_unix_ms).max();
                } else {
                    v.remaining_ms = e.deadline_ms - now_ms;
                    v.reverted_at_unix_ms = None;
                    v.end_reason = None;
                }
                Some(v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshkit::NodeId;
    use meshkit_api::chaos::RadiusView;

    const DEADLINE: u64 = 1_800_000_010_000;

    fn id(serial: u64) -> ExperimentRef {
        ExperimentRef {
            origin: NodeId::new(1),
            serial,
        }
    }

    fn view(node: u64, phase: &str) -> ExperimentView {
        let plan =
            serde_json::from_str(r#"{"duration":"10s","fault":{"kind":"latency","delay":"5ms"}}"#)
                .unwrap();
        ExperimentView {
            id: id(1).to_string(),
            node,
            kind: "latency".to_owned(),
            plan,
            radius: RadiusView {
                kind: "latency".to_owned(),
                nodes: vec![1, 2, 3],
                links: vec![],
                groups: vec![],
                start_ms: 0,
                duration_ms: 10_000,
            },
            phase: phase.to_owned(),
            end_reason: (phase == "reverted").then(|| "deadline".to_owned()),
            activated_at_unix_ms: Some(DEADLINE - 10_000),
            deadline_unix_ms: DEADLINE,
            remaining_ms: 0,
            applied_here: true,
            reverted_at_unix_ms: (phase == "reverted").then_some(DEADLINE + 3),
            targets: vec![],
        }
    }

    fn started(node: u64) -> TargetResult {
        TargetResult {
            node,
            ok: true,
            experiment: Some(view(node, "active")),
            reverted: None,
            error: None,
            reason: None,
            status: None,
        }
    }

    fn states(l: &Ledger, serial: u64) -> Vec<(u64, String)> {
        l.targets(id(serial))
            .unwrap()
            .into_iter()
            .map(|t| (t.node, t.state))
            .collect()
    }

    /// Nothing is asked before the deadline plus the slack; then every target is; one that
    /// confirms is not asked again; the experiment concludes when all have.
    #[test]
    fn targets_are_asked_after_the_deadline_until_each_confirms() {
        let mut l = Ledger::default();
        assert_eq!(
            l.fanned_out(id(1), DEADLINE, &[started(1), started(2), started(3)]),
            None
        );
        assert!(l.pending());
        let first = DEADLINE + ms(REVERT_SLACK);
        assert!(
            l.due(first - 1).is_empty(),
            "not before the deadline's slack"
        );
        assert_eq!(l.due(first), vec![(id(1), vec![1, 2, 3])]);
        l.answer(id(1), 1, Answer::Listed(Box::new(view(1, "reverted"))));
        l.answer(id(1), 2, Answer::Failed("node-2 did not answer".into()));
        l.answer(id(1), 3, Answer::Listed(Box::new(view(3, "active"))));
        assert_eq!(l.round_done(id(1), first), None);
        assert_eq!(
            states(&l, 1),
            [
                (1, "confirmed".to_owned()),
                (2, "unconfirmed".to_owned()),
                (3, "unconfirmed".to_owned())
            ]
        );
        let t = l.targets(id(1)).unwrap();
        assert_eq!(t[0].reverted_unix_ms, Some(DEADLINE + 3));
        assert_eq!(t[0].end_reason.as_deref(), Some("deadline"));
        assert_eq!(t[1].error.as_deref(), Some("node-2 did not answer"));
        assert!(
            t[2].error
                .as_deref()
                .unwrap()
                .contains("still lists it active")
        );
        // The retry waits, then asks only the two that have not confirmed.
        assert!(l.due(first + ms(FIRST_RETRY) - 1).is_empty());
        let second = first + ms(FIRST_RETRY);
        assert_eq!(l.due(second), vec![(id(1), vec![2, 3])]);
        l.answer(id(1), 2, Answer::Listed(Box::new(view(2, "reverted"))));
        l.answer(id(1), 3, Answer::Listed(Box::new(view(3, "reverted"))));
        let done = l.round_done(id(1), second).expect("every target confirmed");
        assert_eq!(done.confirmed, [1, 2, 3]);
        assert!(done.unconfirmed.is_empty());
        assert_eq!(done.end_reason.as_deref(), Some("deadline"));
        assert!(!l.pending());
        assert!(
            l.due(u64::MAX).is_empty(),
            "a concluded experiment is not asked"
        );
    }

    /// A target that never answers is asked [`MAX_ASKS`] times with growing waits, then stays
    /// `unconfirmed`, named by the conclusion.
    #[test]
    fn a_silent_target_stays_unconfirmed_after_bounded_asks() {
        let mut l = Ledger::default();
        l.fanned_out(id(1), DEADLINE, &[started(1), started(2)]);
        let mut now = DEADLINE + ms(REVERT_SLACK);
        let mut waits = Vec::new();
        let mut concluded = None;
        for round in 1..=MAX_ASKS {
            let due = l.due(now);
            assert_eq!(due.len(), 1, "round {round}");
            for node in &due[0].1 {
                let answer = if *node == 1 {
                    Answer::Listed(Box::new(view(1, "reverted")))
                } else {
                    Answer::Failed("unreachable".into())
                };
                l.answer(id(1), *node, answer);
            }
            if let Some(c) = l.round_done(id(1), now) {
                concluded = Some((round, c));
                break;
            }
            let before = now;
            while l.due(now).is_empty() {
                now += 250;
            }
            waits.push(now - before);
        }
        let (round, c) = concluded.expect("the asks end");
        assert_eq!(round, MAX_ASKS);
        assert_eq!(c.confirmed, [1]);
        assert_eq!(c.unconfirmed, [2]);
        assert_eq!(waits[0], ms(FIRST_RETRY));
        assert_eq!(*waits.last().unwrap(), ms(MAX_RETRY), "{waits:?}");
        assert_eq!(
            states(&l, 1),
            [(1, "confirmed".to_owned()), (2, "unconfirmed".to_owned())]
        );
        assert!(!l.pending());
    }

    /// The ledger keeps [`MAX_FANNED_OUT`]; the oldest pushed out while still being confirmed
    /// is concluded as it stands. An experiment the origin is no target of is listed from a
    /// target's view, with the origin's own deadline and the targets' states.
    #[test]
    fn the_ledger_is_bounded_and_lists_what_it_does_not_hold() {
        let mut l = Ledger::default();
        for serial in 0..MAX_FANNED_OUT as u64 {
            assert_eq!(l.fanned_out(id(serial), DEADLINE, &[started(2)]), None);
        }
        let pushed = l
            .fanned_out(id(1000), DEADLINE, &[started(2)])
            .expect("the oldest is pushed out");
        assert_eq!(pushed.id, id(0));
        assert_eq!(pushed.unconfirmed, [2]);
        assert!(!l.tracks(id(0)));
        let listed = l.views_not_held(1, DEADLINE - 4_000, |e| e != id(1000));
        assert_eq!(listed.len(), 1);
        let v = &listed[0];
        assert_eq!((v.node, v.id.as_str()), (1, "node-1/1000"));
        assert_eq!((v.phase.as_str(), v.remaining_ms), ("active", 4_000));
        assert!(!v.applied_here);
        assert_eq!(v.targets.len(), 1);
        l.ended(id(1000), "aborted");
        let v = &l.views_not_held(1, DEADLINE - 4_000, |e| e != id(1000))[0];
        assert_eq!(
            (v.phase.as_str(), v.end_reason.as_deref()),
            ("reverted", Some("aborted"))
        );
    }

    /// A target the start could not reach starts `unconfirmed` with that error, and is asked
    /// like the others.
    #[test]
    fn an_unreached_target_is_asked_too() {
        let mut l = Ledger::default();
        let unreached = TargetResult {
            node: 4,
            ok: false,
            experiment: None,
            reverted: None,
            error: Some("node-4 did not answer within 3s".into()),
            reason: Some("unreachable".into()),
            status: None,
        };
        l.fanned_out(id(1), DEADLINE, &[started(1), unreached]);
        let t = l.targets(id(1)).unwrap();
        assert!(
            t[1].error
                .as_deref()
                .unwrap()
                .starts_with("at the start: node-4")
        );
        assert_eq!(
            l.due(DEADLINE + ms(REVERT_SLACK)),
            vec![(id(1), vec![1, 4])]
        );
    }
}
