//! `/api/v1/runs`: filtered, paginated run listing, one run with its output, and killing one run
//! (README "API"); `/api/v1/jobs/{name}/stats`: a job's run figures over a window.
//!
//! Filters are parsed strictly here (a bad value is a 400 naming the parameter); the query itself,
//! its order and its cursor semantics are the log store's.

use std::collections::HashMap;

use actix_web::web::{Data, Path, Query};
use actix_web::HttpResponse;

use serde::Serialize;

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::{number_param, param, time_param, AppState};
use crate::backend::{JobStats, RunCursor, RunFilter, RunQuery, Signal};
use crate::domain::{JobName, RunId, RunRecord, RunStatus, WorkerId};

/// `GET /api/v1/runs`: one page, newest first.
#[derive(Serialize, utoipa::ToSchema)]
struct RunList {
    /// The runs, without `output` (read one run for it).
    #[schema(value_type = Vec<RunRecord>)]
    runs: Vec<serde_json::Value>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    next_cursor: Option<String>,
}

/// `POST /api/v1/runs/{id}/kill`: the kill is signalled to the worker running it.
#[derive(Serialize, utoipa::ToSchema)]
struct RunKillRequested {
    /// The run.
    run: RunId,
    /// Its job.
    job: JobName,
}

/// `GET /api/v1/jobs/{name}/stats`: a job's figures over a window.
#[derive(Serialize, utoipa::ToSchema)]
struct StatsView {
    /// The figures.
    #[serde(flatten)]
    stats: JobStats,
    /// The job.
    job: String,
    /// The window asked for (`24h`).
    window: String,
    /// Start of the window (RFC 3339, UTC, ms).
    #[schema(format = DateTime)]
    since: String,
    /// succeeded / (succeeded + failed); null when neither.
    success_rate: Option<f64>,
}

/// Default page size.
const DEFAULT_LIMIT: u32 = 50;
/// Largest page size.
const MAX_LIMIT: u32 = 1000;

/// Parses the query string of `GET /api/v1/runs` into a [`RunQuery`].
pub(crate) fn parse_query(query: &HashMap<String, String>) -> Result<RunQuery, ApiError> {
    let job = param(query, "job")
        .map(|raw| JobName::parse(raw).map_err(|e| ApiError::bad_param("job", e.message)))
        .transpose()?;
    let status = param(query, "status")
        .map(|raw| {
            RunStatus::parse(raw).ok_or_else(|| {
                let valid: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::bad_param("status", format!("status {raw:?} is not one of {}", valid.join(", ")))
            })
        })
        .transpose()?;
    let worker = param(query, "worker").map(|w| WorkerId(w.to_owned()));
    let from = time_param(query, "from")?;
    let to = time_param(query, "to")?;
    let limit = number_param(query, "limit", 1..=MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let after = param(query, "cursor")
        .map(|raw| {
            RunCursor::decode(raw)
                .ok_or_else(|| ApiError::bad_param("cursor", "cursor is not one this server returned as next_cursor"))
        })
        .transpose()?;
    Ok(RunQuery { filter: RunFilter { job, status, worker, from, to }, after, skip: 0, limit })
}

/// A run for listings: everything but `output` (which can be large).
fn summary(run: &RunRecord) -> Result<serde_json::Value, ApiError> {
    let mut v = serde_json::to_value(run).map_err(ApiError::internal)?;
    if let Some(obj) = v.as_object_mut() {
        obj.remove("output");
    }
    Ok(v)
}

#[utoipa::path(
    get,
    path = "/api/v1/runs",
    tag = "runs",
    operation_id = "list_runs",
    params(
        ("job" = Option<String>, Query, description = "Only this job's runs"),
        ("status" = Option<RunStatus>, Query, description = "Only runs with this status"),
        ("worker" = Option<String>, Query, description = "Only runs of this worker"),
        ("from" = Option<String>, Query, format = DateTime, description = "Started at or after (RFC 3339)"),
        ("to" = Option<String>, Query, format = DateTime, description = "Started before (RFC 3339)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "A `next_cursor` from the previous page"),
    ),
    responses(
        (status = 200, description = "One page of runs, newest first, without their output", body = RunList),
        (status = 400, description = "A filter is invalid (`invalid_request`, `field` names it)", body = ErrorBody),
    )
)]
/// `GET /api/v1/runs?job&status&worker&from&to&limit&cursor`: newest first.
pub(crate) async fn list(
    state: Data<AppState>,
    query: Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let mut query = parse_query(&query)?;
    let limit = query.limit as usize;
    // One run more than asked tells whether another page exists, so `next_cursor` is null
    // exactly on the last page. A store that caps the page below limit + 1 answers with its own
    // cursor, which is then passed on (it may lead to an empty last page).
    query.limit += 1;
    let page = state.backends.logs.query(&query).await?;
    let mut runs = page.runs;
    let next_cursor = if runs.len() > limit {
        runs.truncate(limit);
        runs.last().map(|r| RunCursor { start_time: r.start_time(), id: r.id.clone() }.encode())
    } else if runs.len() == limit {
        page.next_cursor
    } else {
        None
    };
    let runs = runs.iter().map(summary).collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(RunList { runs, next_cursor }))
}

/// Looks a run up (404 run_not_found when unknown).
async fn find(state: &AppState, id: &str) -> Result<RunRecord, ApiError> {
    state
        .backends
        .logs
        .get(&RunId(id.to_owned()))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::RunNotFound, format!("run {id} not found")))
}

#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    tag = "runs",
    operation_id = "get_run",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run's record, output (head and tail) included", body = RunRecord),
        (status = 404, description = "No such run (`run_not_found`)", body = ErrorBody),
    )
)]
/// `GET /api/v1/runs/{id}`: the full record, output included.
pub(crate) async fn get(state: Data<AppState>, id: Path<String>) -> Result<HttpResponse, ApiError> {
    let run = find(&state, &id).await?;
    Ok(HttpResponse::Ok().json(run))
}

#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/kill",
    tag = "runs",
    operation_id = "kill_run",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 202, description = "Signalled: the run is killed where it runs (status `killed`)", body = RunKillRequested),
        (status = 404, description = "No such run (`run_not_found`)", body = ErrorBody),
        (status = 409, description = "The run has ended (`run_not_running`)", body = ErrorBody),
    )
)]
/// `POST /api/v1/runs/{id}/kill`: kill one live run (409 run_not_running when it has ended).
pub(crate) async fn kill(
    state: Data<AppState>,
    req: actix_web::HttpRequest,
    caller: crate::domain::Caller,
    id: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let run = find(&state, &id).await?;
    if run.status != RunStatus::Running {
        return Err(ApiError::new(
            ErrorCode::RunNotRunning,
            format!("run {} is not running (status {})", run.id, run.status),
        ));
    }
    let current = state.backends.jobs.get(&run.job).await?;
    let audit = super::audit::context(&req, &caller, crate::domain::AuditAction::Kill).with_detail(run.id.0.clone());
    let signal = Signal::Kill { job: run.job.clone(), run: Some(run.id.clone()) };
    state.backends.jobs.signal_audited(signal, current, audit).await?;
    Ok(HttpResponse::Accepted().json(RunKillRequested { run: run.id, job: run.job }))
}

/// Longest stats window: a year.
const MAX_WINDOW_MINUTES: i64 = 365 * 24 * 60;

/// Parses a window like `90m`, `24h` or `7d`.
fn parse_window(raw: &str) -> Result<chrono::Duration, ApiError> {
    let bad = || {
        ApiError::bad_param(
            "window",
            format!("window {raw:?} must be a number followed by m, h or d (e.g. 24h), at most 365d"),
        )
    };
    let (digits, unit) = raw.split_at(raw.len().saturating_sub(1));
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let minutes = match unit {
        "m" => n,
        "h" => n.saturating_mul(60),
        "d" => n.saturating_mul(24 * 60),
        _ => return Err(bad()),
    };
    if !(1..=MAX_WINDOW_MINUTES).contains(&minutes) {
        return Err(bad());
    }
    Ok(chrono::Duration::minutes(minutes))
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs/{name}/stats",
    tag = "jobs",
    operation_id = "job_stats",
    params(
        ("name" = String, Path, description = "The job's name (deleted jobs too: their runs remain)"),
        ("window" = Option<String>, Query, description = "`<n>m`, `<n>h` or `<n>d`, at most 365d (default 24h)"),
    ),
    responses(
        (status = 200, description = "The job's run figures over the window", body = StatsView),
        (status = 400, description = "Invalid name or window (`invalid_request`)", body = ErrorBody),
    )
)]
/// `GET /api/v1/jobs/{name}/stats?window=24h`: runs with a final status started in the window,
/// how many succeeded and failed, the success rate (succeeded / (succeeded + failed)), p50/p95
/// duration and the last success and failure. Works for deleted jobs too (their runs remain).
pub(crate) async fn stats(
    state: Data<AppState>,
    name: Path<String>,
    query: Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let job = JobName::parse(&name).map_err(|e| ApiError::bad_param("name", e.message))?;
    let window_text = param(&query, "window").unwrap_or("24h").to_owned();
    let since = chrono::Utc::now() - parse_window(&window_text)?;
    let stats = state.backends.logs.stats(&job, since).await?;
    let decided = stats.succeeded + stats.failed;
    let success_rate = (decided > 0).then(|| stats.succeeded as f64 / decided as f64);
    Ok(HttpResponse::Ok().json(StatsView {
        stats,
        job: job.as_str().to_owned(),
        window: window_text,
        since: since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        success_rate,
    }))
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn windows_parse_in_minutes_hours_and_days() {
        assert_eq!(parse_window("90m").expect("m"), chrono::Duration::minutes(90));
        assert_eq!(parse_window("24h").expect("h"), chrono::Duration::hours(24));
        assert_eq!(parse_window("7d").expect("d"), chrono::Duration::days(7));
        for bad in ["", "h", "0h", "-1h", "24", "1w", "366d", "x1d"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }
}
