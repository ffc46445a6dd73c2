//! The plan: every enabled job's next fire time, in a min-heap, so a wake-up costs O(log N) per
//! due tick and 100,000 idle jobs cost nothing between ticks.
//!
//! Pure data structure: no actix, no clock (callers pass `now`). Updates use lazy deletion: a
//! heap entry carries its job's generation and is ignored when the job has moved on; the heap
//! is rebuilt when stale entries outnumber live ones.
//!
//! Jitter (`jitter_secs`): a job planned with an offset sits in the heap at `tick + offset`, its
//! fire time, while [`Due::tick`] stays the tick (claims and `scheduled_at` are keyed by it).
//! Lateness (the misfire grace) is measured from the fire time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::domain::{JobName, Schedule};

/// Most missed ticks counted one by one before the plan jumps ahead.
const MAX_COUNTED_MISSES: u32 = 10_000;

#[derive(Debug)]
struct Entry {
    schedule: Schedule,
    tz: Tz,
    /// The next tick (not offset).
    next: DateTime<Utc>,
    /// Jitter: the tick fires this long after it.
    offset: chrono::Duration,
    generation: u64,
}

/// A tick that came due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Job.
    pub job: JobName,
    /// The tick to run now, if one is within the misfire grace.
    pub tick: Option<DateTime<Utc>>,
    /// Ticks that were later than the grace and will not run.
    pub missed: Option<Missed>,
}

/// Ticks skipped because the scheduler reached them too late.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    /// How many (a lower bound when `more` is set).
    pub count: u32,
    /// True when more than `count` were skipped.
    pub more: bool,
    /// First missed tick.
    pub first: DateTime<Utc>,
    /// Last missed tick counted.
    pub last: DateTime<Utc>,
}

/// Next fire time of every planned job.
#[derive(Debug, Default)]
pub struct Plan {
    heap: BinaryHeap<Reverse<(DateTime<Utc>, u64, JobName)>>,
    entries: HashMap<JobName, Entry>,
    generation: u64,
}

impl Plan {
    /// Plans `job` from its first fire time after `now` (replacing any previous plan for it).
    /// Returns that time, or `None` (and no plan) when the schedule never fires again.
    pub fn upsert(&mut self, job: JobName, schedule: Schedule, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.upsert_jittered(job, schedule, tz, chrono::Duration::zero(), now)
    }

    /// [`Self::upsert`] for a job whose ticks fire `offset` late (its jitter): plans the first
    /// tick whose fire time is after `now` (so a tick already passed but not yet fired still
    /// fires) and returns that tick.
    pub fn upsert_jittered(
        &mut self,
        job: JobName,
        schedule: Schedule,
        tz: Tz,
        offset: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let Some(next) = schedule.next_after(now - offset, tz) else {
            self.remove(&job);
            return None;
        };
        self.generation += 1;
        let generation = self.generation;
        self.heap.push(Reverse((next + offset, generation, job.clone())));
        self.entries.insert(job, Entry { schedule, tz, next, offset, generation });
        self.compact_if_needed();
        Some(next)
    }

    /// True when nothing is planned.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets `job`.
    pub fn remove(&mut self, job: &JobName) {
        self.entries.remove(job);
        self.compact_if_needed();
    }

    /// Whether `job` is planned.
    pub fn contains(&self, job: &JobName) -> bool {
        self.entries.contains_key(job)
    }

    /// The planned next tick of `job` (it fires at [`Self::fire_of`]).
    pub fn next_of(&self, job: &JobName) -> Option<DateTime<Utc>> {
        self.entries.get(job).map(|e| e.next)
    }

    /// The planned next fire time of `job`: its next tick plus its jitter offset.
    pub fn fire_of(&self, job: &JobName) -> Option<DateTime<Utc>> {
        self.entries.get(job).map(|e| e.next + e.offset)
    }

    /// Number of planned jobs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Earliest planned fire time (jitter included).
    pub fn peek(&mut self) -> Option<DateTime<Utc>> {
        self.drop_stale_top();
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Takes every tick due at or before `now` and plans each job's following tick. Ticks older
    /// than `now - misfire_grace` are reported as missed instead of due (one summary per job).
    pub fn pop_due(&mut self, now: DateTime<Utc>, misfire_grace: chrono::Duration) -> Vec<Due> {
        let mut due = Vec::new();
        let horizon = now - misfire_grace;
        loop {
            self.drop_stale_top();
            let Some(Reverse((t, _, _))) = self.heap.peek() else { break };
            if *t > now {
                break;
            }
            let Some(Reverse((fire, _, job))) = self.heap.pop() else { break };
            let Some(entry) = self.entries.get_mut(&job) else { continue };
            // Ticks, not fire times, from here on: shift `now` and the horizon by the offset.
            let (offset, tick) = (entry.offset, fire - entry.offset);
            let (now, horizon) = (now - offset, horizon - offset);
            let mut missed: Option<Missed> = None;
            let mut current = Some(tick);
            while let Some(t) = current.filter(|t| *t < horizon) {
                let m = missed.get_or_insert(Missed { count: 0, more: false, first: t, last: t });
                if m.count >= MAX_COUNTED_MISSES {
                    m.more = true;
                    current = entry.schedule.next_after(horizon - chrono::Duration::milliseconds(1), entry.tz);
                    break;
                }
                m.count += 1;
                m.last = t;
                current = entry.schedule.next_after(t, entry.tz);
            }
            let (run_now, following) = match current {
                Some(t) if t <= now => (Some(t), entry.schedule.next_after(t, entry.tz)),
                other => (None, other),
            };
            match following {
                Some(next) => {
                    self.generation += 1;
                    entry.next = next;
                    entry.generation = self.generation;
                    self.heap.push(Reverse((next + offset, self.generation, job.clone())));
                }
                None => {
                    self.entries.remove(&job);
                }
            }
            due.push(Due { job, tick: run_now, missed });
        }
        due
    }

    fn drop_stale_top(&mut self) {
        while let Some(Reverse((_, generation, job))) = self.heap.peek() {
            match self.entries.get(job) {
                Some(e) if e.generation == *generation => return,
                _ => {
                    self.heap.pop();
                }
            }
        }
    }

    fn compact_if_needed(&mut self) {
        if self.heap.len() > 2 * self.entries.len() + 1024 {
            self.heap =
                self.entries.iter().map(|(job, e)| Reverse((e.next + e.offset, e.generation, job.clone()))).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Dialect;
    use chrono::TimeZone;

    fn name(s: &str) -> JobName {
        JobName::parse(s).expect("valid name")
    }
    fn sched(expr: &str) -> Schedule {
        Schedule::parse(expr, Dialect::Distcron).expect("valid expr")
    }
    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, h, m, s).single().expect("valid time")
    }
    const GRACE: chrono::Duration = chrono::Duration::seconds(60);

    #[test]
    fn pops_due_jobs_in_time_order_and_replans_them() {
        let mut plan = Plan::default();
        plan.upsert(name("every-second"), sched("* * * * * *"), chrono_tz::UTC, t(0, 0, 0));
        plan.upsert(name("every-minute"), sched("0 * * * * *"), chrono_tz::UTC, t(0, 0, 0));
        assert_eq!(plan.peek(), Some(t(0, 0, 1)));
        let due = plan.pop_due(t(0, 0, 1), GRACE);
        assert_eq!(due, vec![Due { job: name("every-second"), tick: Some(t(0, 0, 1)), missed: None }]);
        assert_eq!(plan.next_of(&name("every-second")), Some(t(0, 0, 2)));
        let due = plan.pop_due(t(0, 1, 0), GRACE);
        // every-second has 59 due ticks (0:00:02 ..= 0:01:00) but each pop takes one per job
        // and replans after it, so it keeps coming until its next tick is after now.
        let seconds = due.iter().filter(|d| d.job == name("every-second")).count();
        assert_eq!(seconds, 59);
        assert!(due.iter().any(|d| d.job == name("every-minute") && d.tick == Some(t(0, 1, 0))));
        assert_eq!(plan.peek(), Some(t(0, 1, 1)));
    }

    #[test]
    fn upsert_replaces_and_remove_forgets() {
        let mut plan = Plan::default();
        plan.upsert(name("a"), sched("* * * * * *"), chrono_tz::UTC, t(0, 0, 0));
        plan.upsert(name("a"), sched("0 0 * * * *"), chrono_tz::UTC, t(0, 0, 0));
        assert_eq!(plan.len(), 1);
        assert_eq!(plan.peek(), Some(t(1, 0, 0)));
        assert!(plan.pop_due(t(0, 30, 0), GRACE).is_empty(), "the old every-second entry is stale");
        plan.remove(&name("a"));
        assert_eq!(plan.peek(), None);
        assert!(plan.pop_due(t(5, 0, 0), GRACE).is_empty());
        assert!(!plan.contains(&name("a")));
    }

    #[test]
    fn late_ticks_beyond_grace_are_reported_missed_once() {
        let mut plan = Plan::default();
        plan.upsert(name("a"), sched("0 * * * * *"), chrono_tz::UTC, t(0, 0, 0));
        // the scheduler wakes 10 minutes late
        let due = plan.pop_due(t(0, 10, 30), GRACE);
        assert_eq!(due.len(), 1);
        let d = &due[0];
        assert_eq!(d.tick, Some(t(0, 10, 0)), "the tick within the grace still runs");
        let m = d.missed.as_ref().expect("missed ticks");
        assert_eq!((m.count, m.more, m.first, m.last), (9, false, t(0, 1, 0), t(0, 9, 0)));
        assert_eq!(plan.peek(), Some(t(0, 11, 0)));
    }

    #[test]
    fn huge_backlogs_are_counted_with_a_bound() {
        let mut plan = Plan::default();
        plan.upsert(name("a"), sched("* * * * * *"), chrono_tz::UTC, t(0, 0, 0));
        let now = t(20, 0, 0);
        let due = plan.pop_due(now, GRACE);
        let m = due[0].missed.as_ref().expect("missed");
        assert!(m.more);
        assert_eq!(m.count, MAX_COUNTED_MISSES);
        assert!(
            due[0].tick.is_some_and(|tick| tick >= now - GRACE && tick <= now),
            "the first tick within the grace runs"
        );
    }

    #[test]
    fn jittered_ticks_fire_at_tick_plus_offset_and_keep_the_tick() {
        let mut plan = Plan::default();
        let offset = chrono::Duration::seconds(1234);
        let tick = plan.upsert_jittered(name("j"), sched("0 * * * *"), chrono_tz::UTC, offset, t(0, 10, 0));
        // 00:00 fires at 00:20:34, still ahead at 00:10: it is the planned tick.
        assert_eq!(tick, Some(t(0, 0, 0)));
        assert_eq!(plan.peek(), Some(t(0, 20, 34)));
        assert_eq!(plan.fire_of(&name("j")), Some(t(0, 20, 34)));
        assert!(plan.pop_due(t(0, 20, 33), GRACE).is_empty());
        let due = plan.pop_due(t(0, 20, 34), GRACE);
        assert_eq!(due, vec![Due { job: name("j"), tick: Some(t(0, 0, 0)), missed: None }]);
        assert_eq!(plan.next_of(&name("j")), Some(t(1, 0, 0)));
        assert_eq!(plan.peek(), Some(t(1, 20, 34)));
        // Lateness counts from the fire time: 30 s after it the tick still runs, 2 h later
        // both ticks in between are missed and 02:00 runs.
        assert_eq!(plan.pop_due(t(1, 21, 4), GRACE)[0].tick, Some(t(1, 0, 0)));
        let due = plan.pop_due(t(4, 20, 50), GRACE);
        assert_eq!(due[0].tick, Some(t(4, 0, 0)));
        let m = due[0].missed.as_ref().expect("missed");
        assert_eq!((m.count, m.first, m.last), (2, t(2, 0, 0), t(3, 0, 0)));
        // Past its fire time the tick is not planned again (upsert after it fired).
        let tick = plan.upsert_jittered(name("j"), sched("0 * * * *"), chrono_tz::UTC, offset, t(4, 30, 0));
        assert_eq!(tick, Some(t(5, 0, 0)));
    }

    #[test]
    fn many_jobs_stay_compact_under_churn() {
        let mut plan = Plan::default();
        for round in 0..5 {
            for i in 0..10_000 {
                plan.upsert(name(&format!("j{i}")), sched("0 0 * * * *"), chrono_tz::UTC, t(0, 0, round));
            }
        }
        assert_eq!(plan.len(), 10_000);
        assert!(plan.heap.len() <= 2 * 10_000 + 1024 + 1);
        let due = plan.pop_due(t(1, 0, 0), GRACE);
        assert_eq!(due.len(), 10_000);
        assert_eq!(plan.peek(), Some(t(2, 0, 0)));
    }
}
