//! One job's due ticks waiting for their claim: the per-job queue, the folding of ticks too late
//! to run into one `missed` range, when a rank may claim, and which part of a missed range
//! nobody claimed.
//!
//! Owns: [`Pending`], [`JobQueue`], [`fold_expired`], [`claim_at`], [`unclaimed_part`]. Pure
//! data and arithmetic over ticks: no actix, no clock (callers pass `now` or a horizon), no I/O.
//!
//! Leaves to others: sending claims and acting on their answers (the actor in [`super`]),
//! computing fire times ([`crate::domain::Schedule`]).

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::actors::plan::Missed;
use crate::backend::RunningMark;
use crate::domain::{Backoff, Schedule};

/// Most missed ticks counted one by one when a missed range is narrowed after a claim.
const MAX_COUNTED_MISSES: u32 = 10_000;

/// A due tick, or a range of ticks too late to run, waiting for its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pending {
    /// One tick to run.
    Tick(DateTime<Utc>),
    /// Ticks that can no longer run, claimed as a whole and recorded `missed`.
    Missed(Missed),
    /// A tick missed while no worker ran the job, to run late per its `catchup` policy (never
    /// folded into a missed range for being late).
    CatchUp(DateTime<Utc>),
}

impl Pending {
    /// The tick to claim (for a missed range its last tick: one claim covers the range).
    pub(super) fn last(&self) -> DateTime<Utc> {
        match self {
            Self::Tick(t) | Self::CatchUp(t) => *t,
            Self::Missed(m) => m.last,
        }
    }

    /// The earliest tick this item covers.
    pub(super) fn first(&self) -> DateTime<Utc> {
        match self {
            Self::Tick(t) | Self::CatchUp(t) => *t,
            Self::Missed(m) => m.first,
        }
    }
}

/// One job's ticks waiting to be claimed, in order; one claim in flight at a time.
#[derive(Debug, Default)]
pub(super) struct JobQueue {
    /// Identity of this queue: timers and answers for a queue that was dropped (job deleted,
    /// disabled) and made again do not touch the new one.
    pub(super) generation: u64,
    /// Waiting items, oldest first.
    pub(super) items: VecDeque<Pending>,
    /// A claim is in flight or scheduled.
    pub(super) busy: bool,
    /// Delay before the next retry after failed claims.
    pub(super) retry: Option<Backoff>,
    /// The mark prepared for the front tick, kept across retries of its claim (a retried claim
    /// whose first answer was lost is recognized by it).
    pub(super) front_mark: Option<RunningMark>,
    /// A claim with `front_mark` failed: it may have been written.
    pub(super) uncertain: bool,
}

impl JobQueue {
    /// An empty queue with its identity.
    pub(super) fn new(generation: u64) -> Self {
        Self { generation, ..Self::default() }
    }

    /// The mark left behind when the front tick is no longer the one it was prepared for
    /// (expired, skipped) after a claim that may have written it: to be cleared.
    pub(super) fn stale_mark(&mut self) -> Option<RunningMark> {
        let front = match self.items.front() {
            Some(Pending::Tick(t) | Pending::CatchUp(t)) => Some(*t),
            _ => None,
        };
        if self.front_mark.as_ref().is_some_and(|m| Some(m.scheduled_at) == front) {
            return None;
        }
        let mark = self.front_mark.take();
        std::mem::take(&mut self.uncertain).then_some(mark).flatten()
    }

    /// The front item was claimed (by anyone): it leaves, and the next one may be claimed.
    pub(super) fn front_settled(&mut self) {
        self.items.pop_front();
        self.busy = false;
        self.retry = None;
        self.front_mark = None;
        self.uncertain = false;
    }
}

/// Folds the leading items older than `horizon` into one missed range (a lone late tick
/// included): ticks that can no longer run are claimed once, as a range, and recorded `missed`.
pub(super) fn fold_expired(items: &mut VecDeque<Pending>, horizon: DateTime<Utc>) {
    let expired = items.iter().take_while(|p| p.last() < horizon && !matches!(p, Pending::CatchUp(_))).count();
    if expired == 0 || (expired == 1 && matches!(items.front(), Some(Pending::Missed(_)))) {
        return;
    }
    let mut folded: Option<Missed> = None;
    for item in items.drain(..expired) {
        let (count, more) = match &item {
            Pending::Tick(_) | Pending::CatchUp(_) => (1, false),
            Pending::Missed(m) => (m.count, m.more),
        };
        folded = Some(match folded {
            None => Missed { count, more, first: item.first(), last: item.last() },
            Some(f) => Missed {
                count: f.count.saturating_add(count),
                more: f.more || more,
                first: f.first.min(item.first()),
                last: f.last.max(item.last()),
            },
        });
    }
    if let Some(m) = folded {
        items.push_front(Pending::Missed(m));
    }
}

/// When a worker of `rank` for the job may claim `item`: the owner (rank 0) at the tick, rank k
/// after k times the failover grace.
pub(super) fn claim_at(item: &Pending, rank: usize, failover: Duration) -> DateTime<Utc> {
    let delay = failover.saturating_mul(u32::try_from(rank).unwrap_or(u32::MAX));
    item.last()
        .checked_add_signed(chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The ticks of `m` after `previous` (the job's claim before ours): those nobody claimed. `None`
/// when another worker claimed (and so accounted for) all of them.
pub(super) fn unclaimed_part(
    schedule: &Schedule,
    tz: Tz,
    m: Missed,
    previous: Option<DateTime<Utc>>,
) -> Option<Missed> {
    let Some(prev) = previous.filter(|p| *p >= m.first) else { return Some(m) };
    let (mut count, mut first, mut at) = (0u32, None, prev);
    while let Some(next) = schedule.next_after(at, tz) {
        if next > m.last {
            break;
        }
        count += 1;
        first.get_or_insert(next);
        at = next;
        if count >= MAX_COUNTED_MISSES {
            return Some(Missed { count, more: true, first: first?, last: m.last });
        }
    }
    first.map(|first| Missed { count, more: false, first, last: m.last })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobName, RunId, WorkerId};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    fn mark(tick: DateTime<Utc>) -> RunningMark {
        RunningMark {
            job: JobName::parse("j").expect("name"),
            run: RunId::generate(),
            worker: WorkerId("w".into()),
            scheduled_at: tick,
            since: tick,
            fence: None,
            trigger: None,
        }
    }

    #[test]
    fn ticks_too_late_to_run_fold_into_one_missed_range_and_the_rest_stay() {
        let mut items: VecDeque<Pending> = VecDeque::from(vec![
            Pending::Missed(Missed { count: 3, more: false, first: at(0), last: at(2) }),
            Pending::Tick(at(3)),
            Pending::Tick(at(4)),
            Pending::Tick(at(10)),
        ]);
        fold_expired(&mut items, at(5));
        assert_eq!(items.len(), 2);
        match &items[0] {
            Pending::Missed(m) => assert_eq!((m.count, m.more, m.first, m.last), (5, false, at(0), at(4))),
            other => panic!("expected a missed range, got {other:?}"),
        }
        assert!(matches!(items[1], Pending::Tick(t) if t == at(10)), "a tick still within the grace stays to run");
    }

    #[test]
    fn a_lone_late_tick_becomes_missed_and_timely_ticks_are_left_alone() {
        let mut items: VecDeque<Pending> = VecDeque::from(vec![Pending::Tick(at(1))]);
        fold_expired(&mut items, at(5));
        assert!(matches!(&items[0], Pending::Missed(m) if m.count == 1 && m.first == at(1)));
        let mut timely: VecDeque<Pending> = VecDeque::from(vec![Pending::Tick(at(6)), Pending::Tick(at(7))]);
        fold_expired(&mut timely, at(5));
        assert!(matches!(timely[0], Pending::Tick(_)) && timely.len() == 2);
        let mut one_range: VecDeque<Pending> =
            VecDeque::from(vec![Pending::Missed(Missed { count: 2, more: true, first: at(0), last: at(1) })]);
        fold_expired(&mut one_range, at(5));
        assert!(matches!(&one_range[0], Pending::Missed(m) if m.count == 2 && m.more));
    }

    #[test]
    fn catch_up_ticks_are_never_folded_as_late_and_stop_the_fold() {
        let mut items: VecDeque<Pending> = VecDeque::from(vec![
            Pending::Missed(Missed { count: 3, more: false, first: at(0), last: at(2) }),
            Pending::CatchUp(at(3)),
            Pending::Tick(at(4)),
        ]);
        fold_expired(&mut items, at(100));
        assert_eq!(items.len(), 3, "the catch-up tick stays to run, and what follows it waits");
        assert_eq!(items[1], Pending::CatchUp(at(3)));
    }

    #[test]
    fn the_owner_claims_at_the_tick_and_each_later_rank_one_grace_later() {
        let grace = Duration::from_secs(2);
        let tick = Pending::Tick(at(10));
        assert_eq!(claim_at(&tick, 0, grace), at(10));
        assert_eq!(claim_at(&tick, 1, grace), at(12));
        assert_eq!(claim_at(&tick, 3, grace), at(16));
        let range = Pending::Missed(Missed { count: 4, more: false, first: at(0), last: at(3) });
        assert_eq!(claim_at(&range, 1, grace), at(5), "a range is claimed by its last tick");
        assert_eq!(claim_at(&tick, usize::MAX, Duration::MAX), DateTime::<Utc>::MAX_UTC, "no overflow");
    }

    #[test]
    fn a_prepared_mark_is_stale_only_when_its_claim_may_have_written_it_and_its_tick_left() {
        let mut q = JobQueue::new(1);
        q.items.push_back(Pending::Tick(at(1)));
        q.front_mark = Some(mark(at(1)));
        q.uncertain = true;
        assert!(q.stale_mark().is_none(), "the mark still belongs to the front tick");
        q.items.pop_front();
        q.items.push_back(Pending::Tick(at(2)));
        let stale = q.stale_mark().expect("the tick left after an uncertain claim");
        assert_eq!(stale.scheduled_at, at(1));
        assert!(q.front_mark.is_none() && !q.uncertain);

        let mut certain = JobQueue::new(2);
        certain.front_mark = Some(mark(at(1)));
        assert!(certain.stale_mark().is_none(), "a mark never sent needs no clear");
        assert!(certain.front_mark.is_none(), "but is dropped with its tick");
    }

    #[test]
    fn a_settled_front_frees_the_queue_for_the_next_claim() {
        let mut q = JobQueue::new(1);
        q.items.extend([Pending::Tick(at(1)), Pending::Tick(at(2))]);
        q.busy = true;
        q.uncertain = true;
        q.front_mark = Some(mark(at(1)));
        q.front_settled();
        assert_eq!(q.items.front(), Some(&Pending::Tick(at(2))));
        assert!(!q.busy && !q.uncertain && q.front_mark.is_none() && q.retry.is_none());
    }

    #[test]
    fn only_the_ticks_after_the_previous_claim_are_unclaimed() {
        let schedule = Schedule::parse("* * * * * *", crate::domain::Dialect::Distcron).expect("every second");
        let tz = chrono_tz::UTC;
        let m = Missed { count: 10, more: false, first: at(1), last: at(10) };
        assert_eq!(unclaimed_part(&schedule, tz, m.clone(), None), Some(m.clone()), "no previous claim: all");
        assert_eq!(unclaimed_part(&schedule, tz, m.clone(), Some(at(0))), Some(m.clone()), "previous before range");
        assert_eq!(
            unclaimed_part(&schedule, tz, m.clone(), Some(at(6))),
            Some(Missed { count: 4, more: false, first: at(7), last: at(10) })
        );
        assert_eq!(unclaimed_part(&schedule, tz, m, Some(at(10))), None, "another worker accounted for all");
    }
}
