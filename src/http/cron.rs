//! `GET /api/v1/cron/preview`: validate a cron expression and list its next fire times in a zone,
//! each with the DST change of its local day if it has one (README "API"); with `name` and
//! `jitter_secs`, also the jittered times the ticks really fire at. The dialect itself is
//! `domain::schedule`'s, the jitter offset `domain::job`'s.

use std::collections::HashMap;

use actix_web::web::{Data, Query};
use actix_web::HttpResponse;
use chrono::{DateTime, NaiveDateTime, Offset, TimeZone, Utc};
use serde::Serialize;

use super::error::{ApiError, ErrorCode};
use super::{number_param, param, time_param, AppState};
use crate::domain::{jitter_offset, Dialect, JobName, Schedule, MAX_JITTER_SECS};

/// Default number of fire times.
const DEFAULT_COUNT: u32 = 5;
/// Most fire times per preview.
const MAX_COUNT: u32 = 100;

/// `GET /api/v1/cron/preview`: how an expression reads and when it fires next.
#[derive(Serialize, utoipa::ToSchema)]
struct Preview<'a> {
    /// The expression, as given.
    expr: &'a str,
    /// The zone the fire times are computed in.
    tz: &'a str,
    /// The dialect it was read in.
    dialect: Dialect,
    /// The next fire times (UTC); fewer than `count` when the schedule ends sooner.
    next: Vec<DateTime<Utc>>,
    /// Per fire time: the UTC offset change on its local day, or null.
    dst: Vec<Option<DstChange>>,
    /// The expression in words.
    description: String,
    /// The expression field by field (each field's values and reading).
    #[schema(value_type = Object)]
    fields: serde_json::Value,
    /// The jitter asked for (0 = none).
    jitter_secs: u32,
    /// The job's stable offset in `[0, jitter_secs)` (a hash of `name`).
    jitter_offset_secs: u32,
    /// The real fire times: each tick of `next` plus the offset.
    fire_at: Vec<DateTime<Utc>>,
}

/// `GET /api/v1/cron/preview?expr&tz&after&count&dialect&name&jitter_secs`.
#[utoipa::path(
    get,
    path = "/api/v1/cron/preview",
    tag = "cron",
    operation_id = "preview_cron",
    params(
        ("expr" = String, Query, description = "The cron expression"),
        ("tz" = Option<String>, Query, description = "IANA zone (default: the node's `default_tz`)"),
        ("after" = Option<String>, Query, format = DateTime, description = "List fire times after this instant (default now)"),
        ("count" = Option<u32>, Query, minimum = 1, maximum = 100, description = "How many fire times (default 5)"),
        ("dialect" = Option<Dialect>, Query, description = "`distcron` (default) or `seed` (6 fields = 5 + year)"),
        ("name" = Option<String>, Query, description = "The job's name: required with `jitter_secs` (the offset is a hash of it)"),
        ("jitter_secs" = Option<u32>, Query, minimum = 0, maximum = 3600, description = "Jitter of the job (default 0): `fire_at` lists the real fire times"),
    ),
    responses(
        (status = 200, description = "The next fire times and the expression's reading", body = Preview),
        (status = 400, description = "Invalid expression (`invalid_cron_expr`, field `expr`) or parameter (`invalid_request`)", body = super::error::ErrorBody),
    )
)]
pub(crate) async fn preview(
    state: Data<AppState>,
    query: Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let expr = param(&query, "expr").ok_or_else(|| ApiError::bad_param("expr", "expr is required"))?;
    let tz_name = param(&query, "tz").unwrap_or(&state.config.default_tz);
    let tz: chrono_tz::Tz = tz_name.parse().map_err(|_| {
        ApiError::bad_param("tz", format!("unknown time zone {tz_name:?}; use an IANA name such as \"Europe/Berlin\""))
    })?;
    let after = time_param(&query, "after")?.unwrap_or_else(Utc::now);
    let count = number_param(&query, "count", 1..=MAX_COUNT)?.unwrap_or(DEFAULT_COUNT);
    let dialect = match param(&query, "dialect") {
        None | Some("distcron") => Dialect::Distcron,
        Some("seed") => Dialect::Seed,
        Some(other) => {
            return Err(ApiError::bad_param("dialect", format!("dialect {other:?} is not one of distcron, seed")))
        }
    };
    let schedule = Schedule::parse(expr, dialect)
        .map_err(|e| ApiError::with_field(ErrorCode::InvalidCronExpr, "expr", e.to_string()))?;
    let jitter_secs = number_param(&query, "jitter_secs", 0..=MAX_JITTER_SECS)?.unwrap_or(0);
    let offset = match (jitter_secs, param(&query, "name")) {
        (0, _) => 0,
        (secs, Some(name)) => {
            let name = JobName::parse(name).map_err(|e| ApiError::bad_param("name", e.message))?;
            jitter_offset(name.as_str(), secs)
        }
        (_, None) => {
            return Err(ApiError::bad_param("name", "name is required with jitter_secs: the offset is a hash of it"))
        }
    };
    let shift = chrono::Duration::seconds(i64::from(offset));
    // The ticks whose fire time (tick + offset) is after `after`.
    let next = schedule.next_n(after - shift, tz, count as usize);
    let dst: Vec<Option<DstChange>> = next.iter().map(|t| dst_change_on_local_day(*t, tz)).collect();
    let fire_at: Vec<DateTime<Utc>> = next.iter().map(|t| *t + shift).collect();
    Ok(HttpResponse::Ok().json(Preview {
        expr,
        tz: tz.name(),
        dialect,
        next,
        dst,
        description: schedule.describe(),
        fields: schedule.fields(),
        jitter_secs,
        jitter_offset_secs: offset,
        fire_at,
    }))
}

/// A change of the zone's UTC offset (a DST transition) on the local day of a fire time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct DstChange {
    /// The instant the offset changes.
    pub(crate) at: DateTime<Utc>,
    /// The wall clock just before the change (`2026-03-08T02:00:00` in New York in spring).
    #[schema(value_type = String, example = "2026-03-08T02:00:00")]
    pub(crate) local_before: NaiveDateTime,
    /// The wall clock at the change (`2026-03-08T03:00:00`).
    #[schema(value_type = String, example = "2026-03-08T03:00:00")]
    pub(crate) local_after: NaiveDateTime,
    /// UTC offset before, in seconds.
    pub(crate) offset_before_secs: i32,
    /// UTC offset after, in seconds.
    pub(crate) offset_after_secs: i32,
}

/// The offset change on the local day (in `tz`) of `at`, if that day has one.
///
/// Steps through the day hour by hour (no zone changes its offset twice within an hour) and
/// finds the exact second by bisection; a change counts for the day when the wall clock just
/// before or just after it falls on that day.
pub(crate) fn dst_change_on_local_day(at: DateTime<Utc>, tz: chrono_tz::Tz) -> Option<DstChange> {
    let day = at.with_timezone(&tz).date_naive();
    let midnight = day.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
    // UTC offsets lie within ±15 h, so the local day lies within this window.
    let (start, end) = (midnight - 16 * 3600, midnight + 40 * 3600);
    let offset = |secs: i64| -> Option<i32> {
        let utc = DateTime::from_timestamp(secs, 0)?.naive_utc();
        Some(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc())
    };
    let wall = |secs: i64, off: i32| -> Option<NaiveDateTime> {
        Some(DateTime::from_timestamp(secs + i64::from(off), 0)?.naive_utc())
    };
    let on_day = |t: &NaiveDateTime| -> bool { t.date() == day };
    let mut t = start;
    while t < end {
        let next = (t + 3600).min(end);
        let before = offset(t)?;
        if offset(next)? != before {
            let (mut lo, mut hi) = (t, next);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if offset(mid)? == before {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let after = offset(hi)?;
            let (local_before, local_after) = (wall(hi, before)?, wall(hi, after)?);
            if on_day(&local_before) || on_day(&local_after) {
                return Some(DstChange {
                    at: DateTime::from_timestamp(hi, 0)?,
                    local_before,
                    local_after,
                    offset_before_secs: before,
                    offset_after_secs: after,
                });
            }
        }
        t = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("RFC 3339")
    }

    fn naive(s: &str) -> NaiveDateTime {
        s.parse().expect("naive date-time")
    }

    #[test]
    fn spring_forward_day_in_new_york_has_its_change() {
        let tz: chrono_tz::Tz = "America/New_York".parse().expect("zone");
        let change = dst_change_on_local_day(utc("2026-03-08T15:00:00Z"), tz).expect("a change");
        assert_eq!(change.at, utc("2026-03-08T07:00:00Z"));
        assert_eq!(
            (change.local_before, change.local_after),
            (naive("2026-03-08T02:00:00"), naive("2026-03-08T03:00:00"))
        );
        assert_eq!((change.offset_before_secs, change.offset_after_secs), (-5 * 3600, -4 * 3600));
        // late in the local day (already the next day in UTC)
        assert!(dst_change_on_local_day(utc("2026-03-09T03:30:00Z"), tz).is_some());
        assert_eq!(dst_change_on_local_day(utc("2026-03-09T15:00:00Z"), tz), None);
        assert_eq!(dst_change_on_local_day(utc("2026-03-07T15:00:00Z"), tz), None);
    }

    #[test]
    fn fall_back_and_half_hour_changes_are_found() {
        let ny: chrono_tz::Tz = "America/New_York".parse().expect("zone");
        let back = dst_change_on_local_day(utc("2026-11-01T12:00:00Z"), ny).expect("a change");
        assert_eq!((back.local_before, back.local_after), (naive("2026-11-01T02:00:00"), naive("2026-11-01T01:00:00")));
        let lord_howe: chrono_tz::Tz = "Australia/Lord_Howe".parse().expect("zone");
        let half = dst_change_on_local_day(utc("2026-04-05T03:00:00Z"), lord_howe).expect("a change");
        assert_eq!(half.offset_before_secs - half.offset_after_secs, 1800);
        assert_eq!(dst_change_on_local_day(utc("2026-06-01T00:00:00Z"), chrono_tz::UTC), None);
        assert_eq!(NaiveDate::from_ymd_opt(2026, 4, 5), Some(half.local_before.date()));
    }
}
