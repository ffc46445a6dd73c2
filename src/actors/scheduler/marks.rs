//! This worker's running-mark changes waiting to be published: puts and clears, in order, sent
//! as batches with one batch in flight (so a mark is never cleared before it was put).
//!
//! Owns: [`MarkOp`], [`MarkQueue`] (the ordered changes and the batch in flight), and
//! [`coalesce`] (a batch as the store calls it needs). Pure: no actix, no I/O.
//!
//! Leaves to others: calling the claims port and retrying (the actor in [`super`]).

use std::collections::{HashSet, VecDeque};

use crate::backend::RunningMark;
use crate::domain::{JobName, RunId};

/// A change of this worker's running marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MarkOp {
    /// The run is live on this worker.
    Put(RunningMark),
    /// The run ended (or never started).
    Clear(JobName, RunId),
}

impl MarkOp {
    /// Puts of `marks`, in order.
    pub(super) fn puts(marks: Vec<RunningMark>) -> Vec<MarkOp> {
        marks.into_iter().map(MarkOp::Put).collect()
    }

    /// Clears of `runs`, in order.
    pub(super) fn clears(runs: Vec<(JobName, RunId)>) -> Vec<MarkOp> {
        runs.into_iter().map(|(job, run)| MarkOp::Clear(job, run)).collect()
    }
}

/// A batch of mark changes as the store takes them: first the puts, then the clears.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct MarkBatch {
    /// Marks to write.
    pub(super) puts: Vec<RunningMark>,
    /// Marks to remove.
    pub(super) clears: Vec<(JobName, RunId)>,
}

impl MarkBatch {
    /// The batch's changes again as ops, in the order they are sent (for a retry).
    pub(super) fn into_ops(self) -> Vec<MarkOp> {
        let mut ops = MarkOp::puts(self.puts);
        ops.extend(MarkOp::clears(self.clears));
        ops
    }
}

/// Turns ordered changes into one batch: a run put and cleared within the batch (it started and
/// ended meanwhile) needs neither; every other put and clear is kept in its order.
pub(super) fn coalesce(ops: Vec<MarkOp>) -> MarkBatch {
    let cleared: HashSet<RunId> =
        ops.iter().filter_map(|op| if let MarkOp::Clear(_, run) = op { Some(run.clone()) } else { None }).collect();
    let put: HashSet<RunId> =
        ops.iter().filter_map(|op| if let MarkOp::Put(m) = op { Some(m.run.clone()) } else { None }).collect();
    let mut batch = MarkBatch::default();
    for op in ops {
        match op {
            MarkOp::Put(m) if !cleared.contains(&m.run) => batch.puts.push(m),
            MarkOp::Clear(job, run) if !put.contains(&run) => batch.clears.push((job, run)),
            _ => {}
        }
    }
    batch
}

/// Mark changes not yet published, in order, and whether a batch is scheduled or in flight.
#[derive(Debug, Default)]
pub(super) struct MarkQueue {
    ops: VecDeque<MarkOp>,
    busy: bool,
}

impl MarkQueue {
    /// Queues a change; true when no batch is scheduled or in flight, so the caller must start
    /// one.
    #[must_use]
    pub(super) fn push(&mut self, op: MarkOp) -> bool {
        self.ops.push_back(op);
        !std::mem::replace(&mut self.busy, true)
    }

    /// Takes every queued change as one batch; `None` (and the queue idle) when there is none.
    pub(super) fn take_batch(&mut self) -> Option<MarkBatch> {
        if self.ops.is_empty() {
            self.busy = false;
            return None;
        }
        self.busy = true;
        Some(coalesce(self.ops.drain(..).collect()))
    }

    /// A batch that failed goes first again, in its order, before changes queued meanwhile.
    pub(super) fn requeue(&mut self, batch: MarkBatch) {
        for op in batch.into_ops().into_iter().rev() {
            self.ops.push_front(op);
        }
    }

    /// Nothing queued and nothing in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.ops.is_empty() && !self.busy
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::domain::WorkerId;

    fn job() -> JobName {
        JobName::parse("j").expect("name")
    }

    fn mark(run: &RunId) -> RunningMark {
        let t = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("time");
        RunningMark {
            job: job(),
            run: run.clone(),
            worker: WorkerId("w".into()),
            scheduled_at: t,
            since: t,
            fence: None,
            trigger: None,
        }
    }

    #[test]
    fn a_run_that_started_and_ended_within_one_batch_needs_neither_put_nor_clear() {
        let (a, b, c) = (RunId::generate(), RunId::generate(), RunId::generate());
        let batch = coalesce(vec![
            MarkOp::Put(mark(&a)),
            MarkOp::Put(mark(&b)),
            MarkOp::Clear(job(), a.clone()),
            MarkOp::Clear(job(), c.clone()),
        ]);
        assert_eq!(batch.puts, vec![mark(&b)]);
        assert_eq!(batch.clears, vec![(job(), c)]);
    }

    #[test]
    fn the_first_change_starts_a_batch_and_later_ones_join_the_next() {
        let mut q = MarkQueue::default();
        let a = RunId::generate();
        assert!(q.push(MarkOp::Put(mark(&a))), "idle queue: the caller starts a batch");
        assert!(!q.push(MarkOp::Clear(job(), RunId::generate())), "a batch is already scheduled");
        let batch = q.take_batch().expect("two changes");
        assert_eq!((batch.puts.len(), batch.clears.len()), (1, 1));
        assert!(!q.is_idle(), "the batch is in flight");
        assert!(!q.push(MarkOp::Clear(job(), a.clone())), "queued behind the batch in flight");
        let next = q.take_batch().expect("the clear");
        assert_eq!(next.clears, vec![(job(), a)]);
        assert!(q.take_batch().is_none());
        assert!(q.is_idle());
    }

    #[test]
    fn a_failed_batch_is_sent_again_before_changes_queued_meanwhile() {
        let mut q = MarkQueue::default();
        let (a, b) = (RunId::generate(), RunId::generate());
        let _ = q.push(MarkOp::Put(mark(&a)));
        let failed = q.take_batch().expect("batch");
        let _ = q.push(MarkOp::Clear(job(), b.clone()));
        q.requeue(failed);
        let again = q.take_batch().expect("retry");
        assert_eq!(again.puts, vec![mark(&a)]);
        assert_eq!(again.clears, vec![(job(), b)]);
    }
}
