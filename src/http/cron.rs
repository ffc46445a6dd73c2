//! `GET /api/v1/cron/preview`: validate a cron expression and list its next fire times in a zone
//! (API.md "Other"). The dialect itself is `domain::schedule`'s.

use std::collections::HashMap;

use actix_web::web::{Data, Query};
use actix_web::HttpResponse;
use chrono::Utc;

use super::error::{ApiError, ErrorCode};
use super::{number_param, param, time_param, AppState};
use crate::domain::{Dialect, Schedule};

/// Default number of fire times.
const DEFAULT_COUNT: u32 = 5;
/// Most fire times per preview.
const MAX_COUNT: u32 = 100;

/// `GET /api/v1/cron/preview?expr&tz&after&count&dialect`.
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
    let next = schedule.next_n(after, tz, count as usize);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "expr": expr,
        "tz": tz.name(),
        "dialect": dialect,
        "next": next,
        "description": schedule.describe(),
        "fields": schedule.fields(),
    })))
}
