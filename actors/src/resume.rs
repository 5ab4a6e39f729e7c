//! What a restarted runner does with the claims a dead process left in the
//! claim journal: which `POST /resume` calls to make, and what to do with
//! each operation given the answer. Plain values and functions, so the
//! decisions are unit-tested without a control plane; the Poller carries
//! them out.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::model::{Operation, ResumeState, RESUME_MAX_OPERATIONS};
use crate::spool::{JournalEntry, ProgressMap, SpooledOperation};

/// The message of the terminal report of an operation the control plane
/// says this replica owns but did not give back in full.
pub const NOT_GIVEN_BACK_MESSAGE: &str =
    "runner restarted while the operation was running, and the control plane did not give the operation back (its secure option values are gone); its steps may have run";

/// One operation a dead process may own, as the spool knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub op_id: String,
    /// The replica that claimed it (or was about to).
    pub replica_id: String,
    /// Whether the claim's answer (the operation) was journaled.
    pub answered: bool,
    /// Whether the spool holds reports of it.
    pub spooled: bool,
}

/// One `POST /resume` to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeCall {
    pub previous_replica_id: String,
    pub operations: Vec<String>,
}

/// What to do with one leftover operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeAction {
    /// It is this replica's and the control plane gave it back: carry on
    /// with its steps (those that ended are not run again).
    CarryOn,
    /// It is this replica's: report it terminal (failed, "runner
    /// restarted..."), unless its terminal report is already spooled.
    ReportRestarted,
    /// Not this runner's, or nothing says it is: drop it from the journal.
    Release,
    /// No answer about it: keep it journaled for the next start.
    Keep,
}

/// The answer to one resume call, as far as the decisions go.
#[derive(Debug, Clone, PartialEq)]
pub enum ResumeAnswer {
    /// The per-operation states the control plane gave, and the owned
    /// operations it gave back in full (when asked).
    States(BTreeMap<String, ResumeState>, BTreeMap<String, Operation>),
    /// The control plane has no `POST /resume` (an older one).
    Unsupported,
}

/// The leftovers of a previous process: every journaled claim not made by
/// `replica_id` (the new replica), and every operation the spool holds
/// reports of that are not all acked, without a journal entry (a spool
/// written before the journal existed), attributed to `recorded_replica`.
pub fn leftovers(
    journal: &[JournalEntry],
    spooled: &[SpooledOperation],
    recorded_replica: Option<&str>,
    replica_id: &str,
) -> Vec<Leftover> {
    let has_reports = |op: &str| spooled.iter().any(|s| s.op_id == op);
    let mut out: Vec<Leftover> = journal
        .iter()
        .filter(|e| e.replica_id != replica_id && !e.replica_id.is_empty())
        .map(|e| Leftover {
            op_id: e.op_id.clone(),
            replica_id: e.replica_id.clone(),
            answered: e.answered,
            spooled: has_reports(&e.op_id),
        })
        .collect();
    if let Some(previous) = recorded_replica.filter(|r| *r != replica_id) {
        for s in spooled {
            let open = !s.terminal || s.acked < s.last_seq;
            if open && !journal.iter().any(|e| e.op_id == s.op_id) {
                out.push(Leftover {
                    op_id: s.op_id.clone(),
                    replica_id: previous.to_owned(),
                    answered: true,
                    spooled: true,
                });
            }
        }
    }
    out
}

/// The resume calls for `leftovers`: one per previous replica, split so
/// that none names more than [`RESUME_MAX_OPERATIONS`] operations. The
/// replica the spool recorded (`previous`, when it is not `replica_id`) gets
/// a call even with nothing to name, so that the control plane marks it
/// down at once and offers what was leased to it again without waiting.
pub fn resume_calls(
    leftovers: &[Leftover],
    previous: Option<&str>,
    replica_id: &str,
) -> Vec<ResumeCall> {
    let mut by_replica: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    if let Some(p) = previous.filter(|p| *p != replica_id && !p.is_empty()) {
        by_replica.insert(p, Vec::new());
    }
    for l in leftovers {
        by_replica
            .entry(&l.replica_id)
            .or_default()
            .push(l.op_id.clone());
    }
    by_replica
        .into_iter()
        .flat_map(|(previous, ops)| {
            let mut calls: Vec<ResumeCall> = ops
                .chunks(RESUME_MAX_OPERATIONS)
                .map(|chunk| ResumeCall {
                    previous_replica_id: previous.to_owned(),
                    operations: chunk.to_vec(),
                })
                .collect();
            if calls.is_empty() {
                calls.push(ResumeCall {
                    previous_replica_id: previous.to_owned(),
                    operations: Vec::new(),
                });
            }
            calls
        })
        .collect()
}

/// What to do with `leftover` given the answer to its resume call; `carry_on`
/// says whether this runtime carries on with operations given back.
///
/// With an older control plane (no resume), an operation is reported
/// terminal when the runner knows it owned it (the claim was answered, or
/// reports of it are spooled); an intent alone proves nothing, so it is
/// dropped and left to the control plane's down-timeout.
pub fn resume_action(leftover: &Leftover, answer: &ResumeAnswer, carry_on: bool) -> ResumeAction {
    match answer {
        ResumeAnswer::States(states, resumed) => match states.get(&leftover.op_id) {
            // Given back under another id is not given back: the answer is
            // the control plane's word, checked like a claim's.
            Some(ResumeState::Owned)
                if carry_on
                    && resumed
                        .get(&leftover.op_id)
                        .is_some_and(|op| op.id == leftover.op_id) =>
            {
                ResumeAction::CarryOn
            }
            Some(ResumeState::Owned) => ResumeAction::ReportRestarted,
            Some(ResumeState::Released | ResumeState::Unknown) => ResumeAction::Release,
            None => ResumeAction::Keep,
        },
        ResumeAnswer::Unsupported => {
            if leftover.answered || leftover.spooled {
                ResumeAction::ReportRestarted
            } else {
                ResumeAction::Release
            }
        }
    }
}

/// The progress of the operations a restarted runner carries on with, from
/// the Poller's resume to the StepWorker that runs each: a named store the
/// runtime owns.
#[derive(Debug, Default)]
pub(crate) struct ResumePlans(Mutex<HashMap<String, Arc<ProgressMap>>>);

impl ResumePlans {
    pub(crate) fn insert(&self, op_id: &str, progress: ProgressMap) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(op_id.to_owned(), Arc::new(progress));
    }

    /// The plan of `op_id`, taken out (a StepWorker runs an operation once).
    pub(crate) fn take(&self, op_id: &str) -> Option<Arc<ProgressMap>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(op_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(op: &str, replica: &str, answered: bool) -> JournalEntry {
        JournalEntry {
            op_id: op.into(),
            replica_id: replica.into(),
            answered,
        }
    }

    fn spooled(op: &str, terminal: bool) -> SpooledOperation {
        SpooledOperation {
            op_id: op.into(),
            last_seq: 2,
            acked: 0,
            terminal,
        }
    }

    #[test]
    fn leftovers_are_the_journal_and_unjournaled_unfinished_operations() {
        let journal = [
            entry("a", "old", false),
            entry("b", "old", true),
            entry("c", "older", true),
            entry("d", "new", true),
        ];
        let acked = SpooledOperation {
            acked: 2,
            ..spooled("g", true)
        };
        let spool = [
            spooled("b", false),
            spooled("e", false),
            spooled("f", true),
            acked,
        ];
        let got = leftovers(&journal, &spool, Some("old"), "new");
        let ids: Vec<_> = got
            .iter()
            .map(|l| {
                (
                    l.op_id.as_str(),
                    l.replica_id.as_str(),
                    l.answered,
                    l.spooled,
                )
            })
            .collect();
        assert_eq!(
            ids,
            vec![
                ("a", "old", false, false),
                ("b", "old", true, true),
                ("c", "older", true, false),
                ("e", "old", true, true),
                // Terminal but not acked: the previous replica may still hold it.
                ("f", "old", true, true),
            ]
        );
        // No recorded replica: nothing to name the unjournaled one under.
        assert_eq!(leftovers(&journal, &spool, None, "new").len(), 3);
    }

    #[test]
    fn one_call_per_previous_replica_within_the_limit() {
        let mut many: Vec<Leftover> = (0..RESUME_MAX_OPERATIONS + 1)
            .map(|i| Leftover {
                op_id: format!("op{i}"),
                replica_id: "old".into(),
                answered: false,
                spooled: false,
            })
            .collect();
        many.push(Leftover {
            op_id: "x".into(),
            replica_id: "older".into(),
            answered: true,
            spooled: false,
        });
        let calls = resume_calls(&many, Some("oldest"), "new");
        let shape: Vec<_> = calls
            .iter()
            .map(|c| (c.previous_replica_id.as_str(), c.operations.len()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("old", RESUME_MAX_OPERATIONS),
                ("old", 1),
                ("older", 1),
                // Nothing to name, still marked down at once.
                ("oldest", 0)
            ]
        );
        assert!(resume_calls(&[], Some("new"), "new").is_empty());
        assert!(resume_calls(&[], None, "new").is_empty());
    }

    #[test]
    fn owned_is_reported_released_and_unknown_are_dropped_missing_kept() {
        let l = Leftover {
            op_id: "a".into(),
            replica_id: "old".into(),
            answered: false,
            spooled: false,
        };
        let answer = |s: Option<ResumeState>| {
            ResumeAnswer::States(
                s.map(|s| ("a".to_owned(), s)).into_iter().collect(),
                BTreeMap::new(),
            )
        };
        for carry_on in [false, true] {
            assert_eq!(
                resume_action(&l, &answer(Some(ResumeState::Owned)), carry_on),
                ResumeAction::ReportRestarted
            );
            assert_eq!(
                resume_action(&l, &answer(Some(ResumeState::Released)), carry_on),
                ResumeAction::Release
            );
            assert_eq!(
                resume_action(&l, &answer(Some(ResumeState::Unknown)), carry_on),
                ResumeAction::Release
            );
            assert_eq!(
                resume_action(&l, &answer(None), carry_on),
                ResumeAction::Keep
            );
        }
        // Given back in full: carried on with, when the runtime does.
        let op: Operation = serde_json::from_value(serde_json::json!({
            "id": "a", "execution": {"id": 1, "project": "p"},
            "steps": [], "nodes": []
        }))
        .unwrap();
        let given = ResumeAnswer::States(
            [("a".to_owned(), ResumeState::Owned)].into(),
            [("a".to_owned(), op)].into(),
        );
        assert_eq!(resume_action(&l, &given, true), ResumeAction::CarryOn);
        // An operation given back under another operation's id is not
        // carried on with.
        let other: Operation = serde_json::from_value(serde_json::json!({
            "id": "b", "execution": {"id": 1, "project": "p"},
            "steps": [], "nodes": []
        }))
        .unwrap();
        let swapped = ResumeAnswer::States(
            [("a".to_owned(), ResumeState::Owned)].into(),
            [("a".to_owned(), other)].into(),
        );
        assert_eq!(
            resume_action(&l, &swapped, true),
            ResumeAction::ReportRestarted
        );
        assert_eq!(
            resume_action(&l, &given, false),
            ResumeAction::ReportRestarted
        );
    }

    #[test]
    fn without_resume_only_what_the_runner_knows_it_owned_is_reported() {
        let intent = Leftover {
            op_id: "a".into(),
            replica_id: "old".into(),
            answered: false,
            spooled: false,
        };
        assert_eq!(
            resume_action(&intent, &ResumeAnswer::Unsupported, true),
            ResumeAction::Release
        );
        let answered = Leftover {
            answered: true,
            ..intent.clone()
        };
        assert_eq!(
            resume_action(&answered, &ResumeAnswer::Unsupported, true),
            ResumeAction::ReportRestarted
        );
        let with_reports = Leftover {
            spooled: true,
            ..intent
        };
        assert_eq!(
            resume_action(&with_reports, &ResumeAnswer::Unsupported, true),
            ResumeAction::ReportRestarted
        );
    }
}
