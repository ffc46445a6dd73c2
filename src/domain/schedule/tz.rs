//! From wall-clock matches to UTC fire instants in an IANA zone, with the ISC/Vixie DST rule
//! (ARCHITECTURE.md "Scheduling semantics"):
//!
//! - a wall-clock time that exists once fires at that instant;
//! - in a fall-back overlap a fixed-time job fires at the first occurrence only, a wildcard job
//!   at both;
//! - in a spring-forward gap a fixed-time job fires at the instant the gap ends, a wildcard job
//!   not at all;
//! - fire times on the same instant count once.
//!
//! Why this is exact: call `lo(n)` the earliest instant a matching wall-clock time `n` fires at
//! (the first occurrence, or the gap's end) and `hi(n)` the latest (the second occurrence in an
//! overlap). Both are non-decreasing in `n`, so the next fire time after `t` is `lo` of the first
//! match past the wall-clock threshold of `t`, or for wildcard jobs possibly `hi` of the first
//! match in the overlap `t` lies in. The field search in `calendar.rs` finds those matches.
//!
//! Everything is whole seconds: instants are Unix seconds, wall-clock times "naive seconds".

use chrono::{DateTime, MappedLocalTime, Offset, TimeZone};
use chrono_tz::Tz;

use super::calendar::CronSpec;

/// Generous bound on any UTC offset plus DST shift, for the gap search window.
const WINDOW_SECS: i64 = 26 * 3600;

/// How a wall-clock time maps to instants.
enum Local {
    Single(i64),
    /// Earlier, later.
    Ambiguous(i64, i64),
    Gap,
}

fn offset_at(tz: Tz, instant: i64) -> Option<i64> {
    let utc = DateTime::from_timestamp(instant, 0)?.naive_utc();
    Some(i64::from(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc()))
}

fn wall_clock(tz: Tz, instant: i64) -> Option<i64> {
    Some(instant + offset_at(tz, instant)?)
}

fn from_local(tz: Tz, naive: i64) -> Option<Local> {
    let local = DateTime::from_timestamp(naive, 0)?.naive_utc();
    let instant = |o: <Tz as TimeZone>::Offset| naive - i64::from(o.fix().local_minus_utc());
    Some(match tz.offset_from_local_datetime(&local) {
        MappedLocalTime::Single(o) => Local::Single(instant(o)),
        MappedLocalTime::Ambiguous(a, b) => {
            let (a, b) = (instant(a), instant(b));
            Local::Ambiguous(a.min(b), a.max(b))
        }
        MappedLocalTime::None => Local::Gap,
    })
}

/// For a wall-clock time `naive` inside a spring-forward gap: the instant the gap ends (the
/// transition) and the first wall-clock time after the gap.
fn gap_end(tz: Tz, naive: i64) -> Option<(i64, i64)> {
    // Binary search for the first instant whose wall clock is past `naive`: the wall clock only
    // jumps back at fall-back transitions, and none lies within a day of a spring-forward one.
    let (mut lo, mut hi) = (naive - WINDOW_SECS, naive + WINDOW_SECS);
    if wall_clock(tz, lo)? > naive || wall_clock(tz, hi)? <= naive {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if wall_clock(tz, mid)? > naive {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some((hi, wall_clock(tz, hi)?))
}

/// The first instant in `(earlier, later]` with `later`'s offset: the fall-back transition
/// between two occurrences of one wall-clock time.
fn transition_between(tz: Tz, earlier: i64, later: i64) -> Option<i64> {
    let target = offset_at(tz, later)?;
    let (mut lo, mut hi) = (earlier, later);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_at(tz, mid)? == target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// `lo(n)` for the first match `n >= start`, skipping matches with no fire time (wildcard jobs
/// in a gap).
fn first_lo(spec: &CronSpec, tz: Tz, mut start: i64) -> Option<i64> {
    loop {
        let n = spec.next_match(start)?;
        match from_local(tz, n)? {
            Local::Single(i) | Local::Ambiguous(i, _) => return Some(i),
            Local::Gap => match gap_end(tz, n) {
                Some((end, _)) if !spec.wildcard => return Some(end),
                Some((_, after_gap)) => start = after_gap.max(n + 1),
                // Unreachable with real zone data; move on rather than fire at a guess.
                None => start = n + 1,
            },
        }
    }
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The first fire instant strictly after `after` (Unix seconds), reading `spec` in `tz`.
pub(super) fn next_fire(spec: &CronSpec, after: i64, tz: Tz) -> Option<i64> {
    let wall = wall_clock(tz, after)?;
    let Local::Ambiguous(first, second) = from_local(tz, wall)? else {
        return first_lo(spec, tz, wall + 1);
    };
    // `after` lies in a fall-back overlap: wall-clock times in [start, end) occur twice.
    let (early_offset, late_offset) = (wall - first, wall - second);
    let t = transition_between(tz, first, second)?;
    let (start, end) = (t + late_offset, t + early_offset);
    let second_pass = |from: i64| spec.next_match(from).filter(|&n| n < end).map(|n| n - late_offset);
    if after < t {
        // First pass. Later first occurrences, and (wildcard) every second occurrence.
        let lo = first_lo(spec, tz, wall + 1);
        if spec.wildcard {
            min_some(lo, second_pass(start))
        } else {
            lo
        }
    } else {
        // Second pass: first occurrences resume after the overlap.
        let lo = first_lo(spec, tz, end);
        if spec.wildcard {
            min_some(lo, second_pass(wall + 1))
        } else {
            lo
        }
    }
}
