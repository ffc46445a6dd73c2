//! Catch-up after downtime and backfill of past ranges: the per-job `catchup` setting and the
//! pure arithmetic that turns a gap between the last claimed tick and now into ticks to run and
//! one `missed` summary.
//!
//! Owns: [`CatchUp`], [`CatchUpPolicy`], [`plan_gap`], [`GapPlan`], [`backfill_ticks`],
//! [`BackfillError`], and the run-now request id that carries a backfill ([`BackfillRequest`]).
//! Leaves to others: reading the durable last tick (the claims port), claiming and running the
//! ticks (the scheduler), HTTP validation errors (`http/jobs.rs`).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::Schedule;

/// Longest accepted `catchup.window_secs` (31 days).
pub const MAX_CATCHUP_WINDOW_SECS: u64 = 31 * 86_400;
/// Largest accepted `catchup.max_runs`.
pub const MAX_CATCHUP_RUNS: u32 = 1_000;
/// Most ticks one backfill request may run.
pub const MAX_BACKFILL_TICKS: usize = 1_000;
/// Most ticks of a gap counted one by one (a longer gap is reported as `count+`).
const MAX_COUNTED: u32 = 100_000;

/// What to do with the ticks a job missed while no worker ran it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CatchUpPolicy {
    /// Run none of them (they are recorded `missed`).
    #[default]
    Skip,
    /// Run the latest one within the window.
    Latest,
    /// Run up to `max_runs` of them (the latest ones within the window), oldest first.
    All,
}

/// Per-job `catchup = { policy, window_secs, max_runs }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatchUp {
    /// Which missed ticks run.
    #[serde(default)]
    pub policy: CatchUpPolicy,
    /// Only ticks at most this old (seconds, at start-up) may run.
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// Most catch-up runs per gap (policy `all`; `latest` runs at most one).
    #[serde(default = "default_max_runs")]
    pub max_runs: u32,
}

fn default_window() -> u64 {
    86_400
}

fn default_max_runs() -> u32 {
    10
}

impl Default for CatchUp {
    fn default() -> Self {
        Self { policy: CatchUpPolicy::Skip, window_secs: default_window(), max_runs: default_max_runs() }
    }
}

impl CatchUp {
    /// True for the default (omitted from stored jobs, so seed-shaped JSON stays lean).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the ranges; the message names the sub-field.
    ///
    /// # Errors
    /// A message saying which value is out of range.
    pub fn check(&self) -> Result<(), String> {
        if self.window_secs == 0 || self.window_secs > MAX_CATCHUP_WINDOW_SECS {
            return Err(format!(
                "catchup.window_secs is {}; allowed are 1..={MAX_CATCHUP_WINDOW_SECS}",
                self.window_secs
            ));
        }
        if self.max_runs == 0 || self.max_runs > MAX_CATCHUP_RUNS {
            return Err(format!("catchup.max_runs is {}; allowed are 1..={MAX_CATCHUP_RUNS}", self.max_runs));
        }
        Ok(())
    }

    /// How many of a gap's ticks may run.
    fn runs(&self) -> usize {
        match self.policy {
            CatchUpPolicy::Skip => 0,
            CatchUpPolicy::Latest => 1,
            CatchUpPolicy::All => usize::try_from(self.max_runs).unwrap_or(usize::MAX),
        }
    }
}

/// The ticks of a gap that are not run, as one summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapMissed {
    /// How many (a lower bound when `more`).
    pub count: u32,
    /// More than `count` ticks were missed.
    pub more: bool,
    /// First missed tick.
    pub first: DateTime<Utc>,
    /// Last missed tick.
    pub last: DateTime<Utc>,
}

/// What becomes of the ticks in a gap: the older ones missed, then the ones to run, in order
/// (every missed tick is older than every tick to run, so both are claimed in tick order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GapPlan {
    /// Ticks recorded `missed` (one summary), if any.
    pub missed: Option<GapMissed>,
    /// Ticks to run with `trigger = "catchup"`, oldest first.
    pub run: Vec<DateTime<Utc>>,
}

/// Splits the ticks in `(last, until]` per `catchup`: the latest `runs()` ticks not older than
/// `now - window_secs` run, every other tick of the gap is missed.
pub fn plan_gap(
    schedule: &Schedule,
    tz: Tz,
    catchup: &CatchUp,
    last: DateTime<Utc>,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> GapPlan {
    let window_start = now - chrono::Duration::seconds(i64::try_from(catchup.window_secs).unwrap_or(i64::MAX / 1000));
    let keep = catchup.runs();
    let mut run: std::collections::VecDeque<DateTime<Utc>> = std::collections::VecDeque::new();
    let mut missed: Option<GapMissed> = None;
    let mut note_missed = |t: DateTime<Utc>, more: bool| {
        let m = missed.get_or_insert(GapMissed { count: 0, more: false, first: t, last: t });
        m.count = m.count.saturating_add(1);
        m.more |= more;
        m.first = m.first.min(t);
        m.last = m.last.max(t);
    };
    let mut at = last;
    let mut counted = 0u32;
    while let Some(next) = schedule.next_after(at, tz) {
        if next > until {
            break;
        }
        counted += 1;
        if counted > MAX_COUNTED {
            // Too many to count: the rest are summarized up to the gap's end.
            let m = missed.get_or_insert(GapMissed { count: 0, more: true, first: next, last: next });
            m.more = true;
            break;
        }
        at = next;
        if keep > 0 && next >= window_start {
            run.push_back(next);
            if run.len() > keep {
                if let Some(old) = run.pop_front() {
                    note_missed(old, false);
                }
            }
        } else {
            note_missed(next, false);
        }
    }
    GapPlan { missed, run: run.into() }
}

/// Why a backfill range is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackfillError {
    /// `from` is after `to`.
    #[error("from ({from}) is after to ({to})")]
    Reversed {
        /// Start.
        from: DateTime<Utc>,
        /// End.
        to: DateTime<Utc>,
    },
    /// `to` is in the future.
    #[error("to ({to}) is in the future; backfill runs past ticks only")]
    Future {
        /// End.
        to: DateTime<Utc>,
    },
    /// The range holds more ticks than one backfill may run.
    #[error("the range holds more than {max} ticks of the job; split it")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// No tick of the job falls in the range.
    #[error("no tick of the job falls between from and to")]
    Empty,
}

/// The ticks of `schedule` in `[from, to]`, checked against `now` and [`MAX_BACKFILL_TICKS`].
///
/// # Errors
/// [`BackfillError`] saying what is wrong with the range.
pub fn backfill_ticks(
    schedule: &Schedule,
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, BackfillError> {
    if from > to {
        return Err(BackfillError::Reversed { from, to });
    }
    if to > now {
        return Err(BackfillError::Future { to });
    }
    let mut ticks = Vec::new();
    let mut at = from - chrono::Duration::milliseconds(1);
    while let Some(next) = schedule.next_after(at, tz) {
        if next > to {
            break;
        }
        if ticks.len() == MAX_BACKFILL_TICKS {
            return Err(BackfillError::TooMany { max: MAX_BACKFILL_TICKS });
        }
        ticks.push(next);
        at = next;
    }
    if ticks.is_empty() {
        return Err(BackfillError::Empty);
    }
    Ok(ticks)
}

/// Prefix of a run-now request id that carries a backfill.
const BACKFILL_PREFIX: &str = "backfill:";

/// A backfill travels as a run-now signal whose request id carries the range (both stores
/// carry request ids verbatim, so no store format changes): `backfill:<uuid>:<from ms>:<to ms>`.
/// The worker that claims the request id runs the range's ticks one after another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRequest {
    /// Unique id of the request.
    pub id: String,
    /// Start of the range.
    pub from: DateTime<Utc>,
    /// End of the range.
    pub to: DateTime<Utc>,
}

impl BackfillRequest {
    /// The request id to signal.
    pub fn to_request_id(&self) -> String {
        format!("{BACKFILL_PREFIX}{}:{}:{}", self.id, self.from.timestamp_millis(), self.to.timestamp_millis())
    }

    /// The backfill a request id carries, if it is one.
    pub fn parse(request: &str) -> Option<Self> {
        let rest = request.strip_prefix(BACKFILL_PREFIX)?;
        let mut parts = rest.rsplitn(3, ':');
        let to = DateTime::from_timestamp_millis(parts.next()?.parse().ok()?)?;
        let from = DateTime::from_timestamp_millis(parts.next()?.parse().ok()?)?;
        let id = parts.next()?.to_owned();
        Some(Self { id, from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Dialect;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    fn every_10s() -> Schedule {
        Schedule::parse("*/10 * * * * *", Dialect::Distcron).expect("schedule")
    }

    fn policy(policy: CatchUpPolicy, window_secs: u64, max_runs: u32) -> CatchUp {
        CatchUp { policy, window_secs, max_runs }
    }

    #[test]
    fn latest_runs_the_last_tick_of_the_gap_and_misses_the_rest() {
        let p = plan_gap(&every_10s(), chrono_tz::UTC, &policy(CatchUpPolicy::Latest, 3600, 5), at(0), at(65), at(65));
        assert_eq!(p.run, vec![at(60)]);
        assert_eq!(p.missed, Some(GapMissed { count: 5, more: false, first: at(10), last: at(50) }));
    }

    #[test]
    fn all_runs_the_latest_max_runs_in_order_and_skip_runs_none() {
        let all = plan_gap(&every_10s(), chrono_tz::UTC, &policy(CatchUpPolicy::All, 3600, 3), at(0), at(60), at(61));
        assert_eq!(all.run, vec![at(40), at(50), at(60)]);
        assert_eq!(all.missed.map(|m| (m.count, m.first, m.last)), Some((3, at(10), at(30))));
        let skip = plan_gap(&every_10s(), chrono_tz::UTC, &CatchUp::default(), at(0), at(60), at(61));
        assert!(skip.run.is_empty());
        assert_eq!(skip.missed.map(|m| m.count), Some(6));
    }

    #[test]
    fn ticks_older_than_the_window_never_run_and_an_empty_gap_is_empty() {
        let p = plan_gap(&every_10s(), chrono_tz::UTC, &policy(CatchUpPolicy::All, 25, 10), at(0), at(60), at(60));
        assert_eq!(p.run, vec![at(40), at(50), at(60)], "only ticks at or after now - 25 s");
        assert_eq!(p.missed.map(|m| m.count), Some(3));
        assert_eq!(
            plan_gap(&every_10s(), chrono_tz::UTC, &CatchUp::default(), at(0), at(5), at(5)),
            GapPlan::default()
        );
    }

    #[test]
    fn settings_are_range_checked_and_default_is_skip() {
        assert_eq!(CatchUp::default().policy, CatchUpPolicy::Skip);
        assert!(CatchUp::default().check().is_ok());
        assert!(policy(CatchUpPolicy::All, 0, 1).check().expect_err("out of range").contains("window_secs"));
        assert!(policy(CatchUpPolicy::All, 10, 0).check().expect_err("out of range").contains("max_runs"));
        assert!(policy(CatchUpPolicy::All, MAX_CATCHUP_WINDOW_SECS + 1, 1).check().is_err());
        let parsed: CatchUp = serde_json::from_str(r#"{"policy":"latest"}"#).expect("partial");
        assert_eq!((parsed.policy, parsed.window_secs, parsed.max_runs), (CatchUpPolicy::Latest, 86_400, 10));
        assert!(serde_json::from_str::<CatchUp>(r#"{"policy":"sometimes"}"#).is_err());
    }

    #[test]
    fn backfill_ranges_are_inclusive_and_refused_clearly() {
        let s = every_10s();
        let tz = chrono_tz::UTC;
        assert_eq!(backfill_ticks(&s, tz, at(10), at(30), at(100)), Ok(vec![at(10), at(20), at(30)]));
        assert!(matches!(backfill_ticks(&s, tz, at(30), at(10), at(100)), Err(BackfillError::Reversed { .. })));
        assert!(matches!(backfill_ticks(&s, tz, at(10), at(200), at(100)), Err(BackfillError::Future { .. })));
        assert_eq!(backfill_ticks(&s, tz, at(11), at(12), at(100)), Err(BackfillError::Empty));
        let long = backfill_ticks(&s, tz, at(0), at(20_000), at(30_000));
        assert_eq!(long, Err(BackfillError::TooMany { max: MAX_BACKFILL_TICKS }));
    }

    #[test]
    fn a_backfill_request_id_round_trips_and_plain_ids_are_not_backfills() {
        let r = BackfillRequest { id: "0190-abc".into(), from: at(0), to: at(100) };
        assert_eq!(BackfillRequest::parse(&r.to_request_id()), Some(r));
        assert_eq!(BackfillRequest::parse("0190-abc"), None);
        assert_eq!(BackfillRequest::parse("backfill:x:1:notanumber"), None);
    }
}
