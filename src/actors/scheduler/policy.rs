//! The concurrency policy of a claimed tick: given the job's live runs here and elsewhere, run
//! it, skip it (`forbid`), or stop the live ones first (`replace`).
//!
//! Owns: [`decide`] and its [`Decision`], and the words of a `forbid` skip record. Pure: no
//! actix, no I/O; the live runs are passed in.
//!
//! Leaves to others: finding the live runs (this worker's table and the claims store's marks),
//! killing runs and writing records (the actor in [`super`]).

use crate::backend::RunningMark;
use crate::domain::{ConcurrencyPolicy, RunId, WorkerId};

/// A live run of the job: its id and, when it runs elsewhere, the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Live {
    /// The run.
    pub(super) run: RunId,
    /// `None` when it runs on this worker.
    pub(super) worker: Option<WorkerId>,
}

impl Live {
    /// Where the run is, in words for a record.
    fn place(&self) -> String {
        self.worker.as_ref().map_or_else(|| "on this worker".to_owned(), |w| format!("on worker {w}"))
    }
}

/// What to do with a claimed tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// Start the run.
    Run,
    /// Record the tick `skipped` with this reason; `alive` is the run that blocks it.
    Skip {
        /// The live run in the way.
        alive: RunId,
        /// The skip record's reason.
        reason: String,
    },
    /// Stop these live runs, then start the run.
    Replace {
        /// Runs of this worker, killed through the pool.
        local: Vec<RunId>,
        /// Runs of other workers, stopped through the job store's kill signal.
        remote: Vec<RunId>,
    },
}

/// The job's live runs other than `run` (the one this tick becomes): this worker's own runs
/// (authoritative, queued ones included) and the marks of other workers. A mark of this worker
/// is not trusted over its own table (it may be stale, e.g. left by a previous process).
pub(super) fn live_runs(
    run: &RunId,
    me: &WorkerId,
    local: impl IntoIterator<Item = RunId>,
    marks: Vec<RunningMark>,
) -> Vec<Live> {
    let mut live: Vec<Live> = local.into_iter().filter(|r| r != run).map(|run| Live { run, worker: None }).collect();
    for mark in marks {
        if mark.run != *run && mark.worker != *me && !live.iter().any(|l| l.run == mark.run) {
            live.push(Live { run: mark.run, worker: Some(mark.worker) });
        }
    }
    live
}

/// Applies `policy` to a tick whose job has `live` runs.
pub(super) fn decide(policy: ConcurrencyPolicy, live: Vec<Live>) -> Decision {
    match policy {
        ConcurrencyPolicy::Forbid => match live.first() {
            None => Decision::Run,
            Some(first) => Decision::Skip {
                alive: first.run.clone(),
                reason: format!(
                    "skipped: concurrency policy forbid and run {} of this job is still running {}",
                    first.run,
                    first.place()
                ),
            },
        },
        ConcurrencyPolicy::Allow => Decision::Run,
        ConcurrencyPolicy::Replace if live.is_empty() => Decision::Run,
        ConcurrencyPolicy::Replace => {
            let (local, remote): (Vec<Live>, Vec<Live>) = live.into_iter().partition(|l| l.worker.is_none());
            Decision::Replace {
                local: local.into_iter().map(|l| l.run).collect(),
                remote: remote.into_iter().map(|l| l.run).collect(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::domain::JobName;

    fn mark(run: &RunId, worker: &str) -> RunningMark {
        let t = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("time");
        RunningMark {
            job: JobName::parse("j").expect("name"),
            run: run.clone(),
            worker: WorkerId(worker.into()),
            scheduled_at: t,
            since: t,
            fence: None,
            trigger: None,
        }
    }

    #[test]
    fn the_tick_own_mark_and_this_worker_stale_marks_are_not_live_runs() {
        let me = WorkerId("me".into());
        let (this, ours, stale, theirs) = (RunId::generate(), RunId::generate(), RunId::generate(), RunId::generate());
        let live = live_runs(
            &this,
            &me,
            [ours.clone()],
            vec![mark(&this, "me"), mark(&stale, "me"), mark(&ours, "other"), mark(&theirs, "other")],
        );
        assert_eq!(
            live,
            vec![Live { run: ours, worker: None }, Live { run: theirs, worker: Some(WorkerId("other".into())) }],
            "our table first, a run listed twice once, our marks ignored"
        );
    }

    #[test]
    fn forbid_skips_naming_the_live_run_and_where_it_runs() {
        assert_eq!(decide(ConcurrencyPolicy::Forbid, vec![]), Decision::Run);
        let run = RunId::generate();
        let here = decide(ConcurrencyPolicy::Forbid, vec![Live { run: run.clone(), worker: None }]);
        let Decision::Skip { alive, reason } = here else { panic!("forbid with a live run must skip") };
        assert_eq!(alive, run);
        assert!(reason.contains("forbid") && reason.ends_with("still running on this worker"), "{reason}");
        let there = decide(ConcurrencyPolicy::Forbid, vec![Live { run, worker: Some(WorkerId("w2".into())) }]);
        assert!(matches!(there, Decision::Skip { reason, .. } if reason.ends_with("on worker w2")));
    }

    #[test]
    fn allow_always_runs_and_replace_stops_local_and_remote_runs_first() {
        let (a, b) = (RunId::generate(), RunId::generate());
        let live =
            vec![Live { run: a.clone(), worker: None }, Live { run: b.clone(), worker: Some(WorkerId("w2".into())) }];
        assert_eq!(decide(ConcurrencyPolicy::Allow, live.clone()), Decision::Run);
        assert_eq!(decide(ConcurrencyPolicy::Replace, vec![]), Decision::Run);
        assert_eq!(decide(ConcurrencyPolicy::Replace, live), Decision::Replace { local: vec![a], remote: vec![b] });
    }
}
