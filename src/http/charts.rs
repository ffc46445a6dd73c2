//! The admin page's pictures (README "Pictures"): aggregate endpoints that feed its SVG charts,
//! so the browser never receives thousands of runs.
//!
//! Owns: `GET /api/v1/jobs/{name}/timeline` (one cell per expected tick, from the job's schedule
//! merged with its run log), `GET /api/v1/jobs/{name}/durations` (p50/p95/max per time bucket),
//! `GET /api/v1/sparklines` (the newest runs of every listed job in one call),
//! `GET /api/v1/fleet/forecast` (ticks per minute of every enabled job, ahead) and
//! `GET /api/v1/fleet/load` (runs per worker and the planned ownership share), and their pure
//! cores ([`timeline_cells`], [`forecast`], [`planned_owners`]), unit-tested alone.
//! Leaves to others: the schedule dialect (`domain::schedule`), rendezvous ranking
//! (`actors::rank`), the aggregation itself (the log store's `run_buckets`, `run_points`,
//! `recent_runs`, `runs_per_worker`), the drawing (`static/charts.js`).

use std::collections::{BTreeMap, HashMap};

use actix_web::web::{Data, Path, Query};
use actix_web::HttpResponse;
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Serialize;

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::jobs::parse_name;
use super::{number_param, param, AppState};
use crate::backend::{RunBucket, RunPoint};
use crate::domain::{Dialect, Job, JobName, RunId, RunStatus, Schedule, Trigger, WorkerId, MAX_JITTER_SECS};

/// Most cells of a timeline drawn one per tick; a schedule with more expected ticks in the
/// window is drawn in time buckets ([`BUCKET_SECS_24H`], [`BUCKET_SECS_7D`]).
pub(crate) const MAX_TICK_CELLS: usize = 1440;
/// Most ticks counted per timeline in bucket mode (a per-second job over 7 days is 604,800);
/// past it a bucket's `ticks` is left out.
pub(crate) const MAX_COUNTED_TICKS: usize = 700_000;
/// Most run records read for one per-tick timeline (1,440 ticks with several attempts each).
const MAX_TIMELINE_RUNS: usize = 20_000;
/// Timeline bucket over 24 hours: 5 minutes (288 cells).
const BUCKET_SECS_24H: i64 = 300;
/// Timeline bucket over 7 days: 1 hour (168 cells).
const BUCKET_SECS_7D: i64 = 3600;
/// Duration chart bucket over 24 hours: 15 minutes (96 points).
const DURATION_BUCKET_SECS_24H: i64 = 900;
/// Duration chart bucket over 7 days: 2 hours (84 points).
const DURATION_BUCKET_SECS_7D: i64 = 7200;
/// Most ticks forecast per distinct schedule (a per-second job over 48 h plus the jitter lead).
const MAX_FORECAST_TICKS: usize = 200_000;
/// Longest forecast, hours.
const MAX_FORECAST_HOURS: u32 = 48;
/// Default runs per sparkline.
const DEFAULT_SPARK_RUNS: u32 = 20;
/// Most runs per sparkline.
const MAX_SPARK_RUNS: u32 = 50;

/// A chart window: `24h` (default) or `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Window {
    /// The last 24 hours.
    Day,
    /// The last 7 days.
    Week,
}

impl Window {
    fn parse(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        match param(query, "window") {
            None | Some("24h") => Ok(Self::Day),
            Some("7d") => Ok(Self::Week),
            Some(other) => Err(ApiError::bad_param("window", format!("window {other:?} is not one of 24h, 7d"))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Day => "24h",
            Self::Week => "7d",
        }
    }

    fn length(self) -> Duration {
        match self {
            Self::Day => Duration::hours(24),
            Self::Week => Duration::days(7),
        }
    }
}

/// One attempt (run record) of a tick.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct Attempt {
    /// Run id: `/api/v1/runs/{id}`, the page's `#/runs/{id}`.
    pub(crate) id: RunId,
    /// Its status.
    pub(crate) status: RunStatus,
    /// Attempt number, from 1.
    pub(crate) attempt: u32,
    /// Why it ran.
    pub(crate) trigger: Trigger,
    /// Wall time, ms.
    pub(crate) duration_ms: Option<u64>,
}

/// One timeline cell: an expected tick (mode `ticks`) or a time bucket (mode `buckets`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct Cell {
    /// The tick (or the bucket's start).
    pub(crate) at: DateTime<Utc>,
    /// The bucket's end (mode `buckets` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) until: Option<DateTime<Utc>>,
    /// The tick's account: the status of its last attempt (`succeeded`, `failed`, `timeout`,
    /// `killed`, `error`, `lost`, `running`, `skipped`, `missed`, `superseded`), or `none` when
    /// no record of it is stored (yet). A bucket shows its most serious status.
    pub(crate) status: String,
    /// The tick's attempts, oldest first (mode `ticks`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) attempts: Vec<Attempt>,
    /// Expected ticks in the bucket (mode `buckets`; absent when too many to count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ticks: Option<u64>,
    /// Runs started in the bucket, per status (mode `buckets`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub(crate) counts: BTreeMap<String, u64>,
}

/// `GET /api/v1/jobs/{name}/timeline`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Timeline {
    /// The job.
    job: JobName,
    /// `24h` or `7d`.
    window: &'static str,
    /// Start of the window (or the job's creation, when later).
    from: DateTime<Utc>,
    /// End of the window: now (or when the job was disabled).
    to: DateTime<Utc>,
    /// `ticks` (one cell per expected tick) or `buckets` (more than 1,440 ticks: one cell per
    /// `bucket_secs`).
    mode: &'static str,
    /// Bucket length (mode `buckets`).
    #[serde(skip_serializing_if = "Option::is_none")]
    bucket_secs: Option<i64>,
    /// The cells, oldest first.
    cells: Vec<Cell>,
    /// Runs in the window that belong to no expected tick (manual runs, ticks of an earlier schedule).
    other_runs: u64,
}

/// A duration bucket as served.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DurationPoint {
    /// The figures.
    #[serde(flatten)]
    bucket: RunBucket,
}

/// `GET /api/v1/jobs/{name}/durations`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Durations {
    /// The job.
    job: JobName,
    /// `24h` or `7d`.
    window: &'static str,
    /// Start of the window.
    from: DateTime<Utc>,
    /// End of the window (now).
    to: DateTime<Utc>,
    /// Bucket length, seconds (900 over 24 h, 7,200 over 7 d).
    bucket_secs: i64,
    /// The non-empty buckets, oldest first.
    #[schema(value_type = Vec<RunBucket>)]
    buckets: Vec<DurationPoint>,
}

/// `GET /api/v1/sparklines`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Sparklines {
    /// Runs per sparkline asked for.
    count: u32,
    /// Per job with runs: its newest runs, oldest first.
    #[schema(value_type = Object)]
    jobs: BTreeMap<JobName, Vec<SparkPoint>>,
}

/// One run of a sparkline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SparkPoint {
    /// Run id.
    id: RunId,
    /// Its status.
    status: RunStatus,
    /// When it started.
    start: DateTime<Utc>,
    /// Wall time, ms.
    duration_ms: Option<u64>,
}

/// `GET /api/v1/fleet/forecast`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Forecast {
    /// First minute (the next whole minute from now).
    pub(crate) from: DateTime<Utc>,
    /// End (exclusive).
    pub(crate) to: DateTime<Utc>,
    /// Fire times (tick plus jitter) per minute from `from`: `minutes[i]` counts those in
    /// `[from + i min, from + (i + 1) min)`.
    pub(crate) minutes: Vec<u32>,
    /// Enabled jobs counted.
    pub(crate) jobs: usize,
    /// Fire times in all.
    pub(crate) ticks: u64,
    /// Jobs whose ticks were cut at the per-schedule bound (200,000).
    pub(crate) capped: Vec<JobName>,
    /// The busiest minute and its count.
    pub(crate) peak: Option<Peak>,
}

/// The busiest minute of a forecast.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Peak {
    /// Its start.
    at: DateTime<Utc>,
    /// Fire times in it.
    ticks: u32,
}

/// `GET /api/v1/fleet/load`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Load {
    /// Per worker (live ones, and any that ran something in the last 24 h), by id.
    workers: Vec<WorkerLoad>,
    /// Enabled jobs ranked for the planned share.
    enabled_jobs: usize,
}

/// One worker's load.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct WorkerLoad {
    /// Worker id.
    id: WorkerId,
    /// Live (in the membership) now.
    live: bool,
    /// Runs it started in the last hour.
    runs_1h: u64,
    /// Runs it started in the last 24 hours.
    runs_24h: u64,
    /// Enabled jobs it owns now (rendezvous rank 0 among the live workers that match the job's selector).
    planned_jobs: u64,
    /// `planned_jobs` over all enabled jobs with an eligible live worker (0..1).
    planned_share: f64,
}

/// The ticks of `schedule` in `tz` in `[from, to)` (whole seconds), at most `cap` (`true` when cut).
fn ticks_between(
    schedule: &Schedule,
    tz: chrono_tz::Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    cap: usize,
) -> (Vec<DateTime<Utc>>, bool) {
    let mut ticks = Vec::new();
    let mut cursor = from - Duration::milliseconds(1);
    while let Some(t) = schedule.next_after(cursor, tz) {
        if t >= to {
            return (ticks, false);
        }
        if ticks.len() == cap {
            return (ticks, true);
        }
        ticks.push(t);
        cursor = t;
    }
    (ticks, false)
}

/// How serious a status is, for a bucket's colour (higher wins).
fn severity(status: &str) -> u8 {
    match status {
        "lost" => 9,
        "failed" | "timeout" | "error" => 8,
        "killed" => 7,
        "missed" => 6,
        "skipped" | "superseded" => 5,
        "running" => 4,
        "succeeded" => 3,
        _ => 0,
    }
}

/// The cells of a per-tick timeline: each expected tick with the run records of that tick
/// (`scheduled_at` equal; attempts stacked, oldest first) or, when none, the `missed` summary
/// whose range covers it, else `none`. Returns the cells and how many points matched no tick.
pub(crate) fn timeline_cells(ticks: &[DateTime<Utc>], points: &[RunPoint]) -> (Vec<Cell>, u64) {
    let mut by_tick: HashMap<DateTime<Utc>, Vec<&RunPoint>> = HashMap::new();
    let mut missed: Vec<&RunPoint> = Vec::new();
    for p in points {
        by_tick.entry(p.scheduled_at).or_default().push(p);
        if p.missed_until.is_some() {
            missed.push(p);
        }
    }
    let mut matched = 0u64;
    let cells = ticks
        .iter()
        .map(|tick| {
            let mut attempts: Vec<&RunPoint> = by_tick.get(tick).cloned().unwrap_or_default();
            matched += attempts.len() as u64;
            if attempts.is_empty() {
                if let Some(m) = missed.iter().find(|m| m.scheduled_at <= *tick && m.missed_until >= Some(*tick)) {
                    attempts.push(m);
                }
            }
            attempts.sort_by(|a, b| (a.attempt, a.start, &a.id).cmp(&(b.attempt, b.start, &b.id)));
            let status = attempts.last().map_or("none", |a| a.status.as_str()).to_owned();
            Cell {
                at: *tick,
                until: None,
                status,
                attempts: attempts
                    .into_iter()
                    .map(|a| Attempt {
                        id: a.id.clone(),
                        status: a.status,
                        attempt: a.attempt,
                        trigger: a.trigger,
                        duration_ms: a.duration_ms,
                    })
                    .collect(),
                ticks: None,
                counts: BTreeMap::new(),
            }
        })
        .collect();
    (cells, (points.len() as u64).saturating_sub(matched))
}

/// The cells of a bucketed timeline: `[from, to)` in `bucket_secs` steps, each with its expected
/// ticks (`None` when not counted) and the stored runs per status.
fn bucket_cells(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_secs: i64,
    ticks: Option<&[DateTime<Utc>]>,
    buckets: &[RunBucket],
) -> Vec<Cell> {
    let step = Duration::seconds(bucket_secs);
    let mut cells = Vec::new();
    let mut at = from;
    while at < to {
        let until = (at + step).min(to);
        let counts = buckets.iter().find(|b| b.start >= at && b.start < until).map(|b| b.counts.clone());
        let counts = counts.unwrap_or_default();
        let status = counts.keys().max_by_key(|s| severity(s)).cloned().unwrap_or_else(|| "none".to_owned());
        let expected = ticks.map(|t| t.iter().filter(|t| **t >= at && **t < until).count() as u64);
        cells.push(Cell { at, until: Some(until), status, attempts: Vec::new(), ticks: expected, counts });
        at = until;
    }
    cells
}

/// A schedule's ticks (seconds since the epoch) and whether they were cut at the bound.
type ScheduleTicks = (Vec<i64>, bool);

/// Per-minute fire counts of `jobs` (enabled ones) in `[from, from + minutes)`: each distinct
/// (expression, dialect, zone) is iterated once, each job adds its jitter offset and is binned.
pub(crate) fn forecast(jobs: &[Job], default_tz: chrono_tz::Tz, from: DateTime<Utc>, minutes: usize) -> Forecast {
    let to = from + Duration::minutes(minutes as i64);
    // Ticks up to the longest jitter before `from` still fire in the window.
    let lead = from - Duration::seconds(i64::from(MAX_JITTER_SECS));
    let mut cache: HashMap<(&str, Dialect, chrono_tz::Tz), Option<ScheduleTicks>> = HashMap::new();
    let mut counts = vec![0u32; minutes];
    let mut result = Forecast { from, to, minutes: Vec::new(), jobs: 0, ticks: 0, capped: Vec::new(), peak: None };
    let from_secs = from.timestamp();
    for job in jobs.iter().filter(|j| j.enabled) {
        let tz = job.zone(default_tz);
        let entry = cache.entry((job.cron_expr.as_str(), job.dialect, tz)).or_insert_with(|| {
            let schedule = Schedule::parse(&job.cron_expr, job.dialect).ok()?;
            let (ticks, cut) = ticks_between(&schedule, tz, lead, to, MAX_FORECAST_TICKS);
            Some((ticks.iter().map(DateTime::timestamp).collect(), cut))
        });
        let Some((ticks, cut)) = entry else { continue };
        result.jobs += 1;
        if *cut {
            result.capped.push(job.name.clone());
        }
        let offset = job.jitter_offset().num_seconds();
        for t in ticks.iter() {
            let minute = (t + offset - from_secs).div_euclid(60);
            if let Some(slot) = usize::try_from(minute).ok().and_then(|m| counts.get_mut(m)) {
                *slot += 1;
                result.ticks += 1;
            }
        }
    }
    result.peak = counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .max_by_key(|(i, n)| (**n, std::cmp::Reverse(*i)))
        .map(|(i, n)| Peak { at: from + Duration::minutes(i as i64), ticks: *n });
    result.minutes = counts;
    result
}

/// How many enabled `jobs` each of `live` workers (id, labels) owns: the rendezvous top among
/// the live workers matching the job's selector (ARCHITECTURE.md "Claims, spread and failover").
/// Returns the counts and how many jobs had an eligible worker.
pub(crate) fn planned_owners(
    jobs: &[Job],
    live: &[(WorkerId, crate::domain::Labels)],
) -> (HashMap<WorkerId, u64>, usize) {
    let mut owned: HashMap<WorkerId, u64> = HashMap::new();
    let mut placed = 0;
    for job in jobs.iter().filter(|j| j.enabled) {
        let owner = live
            .iter()
            .filter(|(_, labels)| crate::domain::labels::matches(&job.selector, labels))
            .max_by_key(|(id, _)| (crate::actors::rank::score(job.name.as_str(), &id.0), &id.0));
        if let Some((id, _)) = owner {
            *owned.entry(id.clone()).or_insert(0) += 1;
            placed += 1;
        }
    }
    (owned, placed)
}

/// The job `name` (404 job_not_found).
async fn find_job(state: &AppState, name: &str) -> Result<Job, ApiError> {
    let name = parse_name(name)?;
    state
        .backends
        .jobs
        .get(&name)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::JobNotFound, format!("no job named {name}")))
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs/{name}/timeline",
    tag = "charts",
    operation_id = "job_timeline",
    params(
        ("name" = String, Path, description = "The job"),
        ("window" = Option<String>, Query, description = "`24h` (default) or `7d`"),
    ),
    responses(
        (status = 200, description = "One cell per expected tick (or per bucket past 1,440 ticks), oldest first", body = Timeline),
        (status = 400, description = "Bad window (`invalid_request`, field `window`) or name", body = ErrorBody),
        (status = 404, description = "No such job (`job_not_found`)", body = ErrorBody),
    )
)]
/// `GET /api/v1/jobs/{name}/timeline?window=24h|7d`.
pub(crate) async fn timeline(
    state: Data<AppState>,
    name: Path<String>,
    query: Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let window = Window::parse(&query)?;
    let job = find_job(&state, &name).await?;
    let now = Utc::now();
    let from = (now - window.length()).max(job.created_at);
    // A disabled job fires no more: its timeline ends when it was disabled.
    let to = if job.enabled { now } else { job.updated_at.min(now) };
    let schedule =
        job.schedule().map_err(|e| ApiError::with_field(ErrorCode::InvalidCronExpr, "cron_expr", e.to_string()))?;
    let tz = job.zone(state.config.default_zone());
    // Ticks whose fire time (tick + jitter) has passed.
    let fired_by = to - job.jitter_offset() + Duration::milliseconds(1);
    // One walk of the schedule: up to MAX_COUNTED_TICKS, drawn as cells when they fit.
    let (ticks, too_many) = ticks_between(&schedule, tz, from, fired_by.max(from), MAX_COUNTED_TICKS);
    // Records start at or after their tick; a minute of slack for worker clocks.
    let read_from = from - Duration::minutes(1);
    let read_to = now + Duration::minutes(1);
    let (mode, bucket_secs, cells, other_runs) = if too_many || ticks.len() > MAX_TICK_CELLS {
        let bucket_secs = match window {
            Window::Day => BUCKET_SECS_24H,
            Window::Week => BUCKET_SECS_7D,
        };
        let start = from.duration_trunc(Duration::seconds(bucket_secs)).unwrap_or(from);
        let buckets = state.backends.logs.run_buckets(&job.name, start, read_to, bucket_secs * 1000).await?;
        let cells = bucket_cells(start, to, bucket_secs, (!too_many).then_some(ticks.as_slice()), &buckets);
        ("buckets", Some(bucket_secs), cells, 0)
    } else {
        let points = state.backends.logs.run_points(&job.name, read_from, read_to, MAX_TIMELINE_RUNS).await?;
        let (cells, other_runs) = timeline_cells(&ticks, &points);
        ("ticks", None, cells, other_runs)
    };
    let body =
        Timeline { job: job.name.clone(), window: window.name(), from, to, mode, bucket_secs, cells, other_runs };
    Ok(HttpResponse::Ok().json(body))
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs/{name}/durations",
    tag = "charts",
    operation_id = "job_durations",
    params(
        ("name" = String, Path, description = "The job"),
        ("window" = Option<String>, Query, description = "`24h` (default, 15-minute buckets) or `7d` (2-hour buckets)"),
    ),
    responses(
        (status = 200, description = "Duration percentiles per time bucket, computed by the log store", body = Durations),
        (status = 400, description = "Bad window (`invalid_request`, field `window`) or name", body = ErrorBody),
        (status = 404, description = "No such job (`job_not_found`)", body = ErrorBody),
    )
)]
/// `GET /api/v1/jobs/{name}/durations?window=24h|7d`.
pub(crate) async fn durations(
    state: Data<AppState>,
    name: Path<String>,
    query: Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let window = Window::parse(&query)?;
    let job = find_job(&state, &name).await?;
    let to = Utc::now();
    let bucket_secs = match window {
        Window::Day => DURATION_BUCKET_SECS_24H,
        Window::Week => DURATION_BUCKET_SECS_7D,
    };
    let from = (to - window.length()).duration_trunc(Duration::seconds(bucket_secs)).unwrap_or(to - window.length());
    let buckets =
        state.backends.logs.run_buckets(&job.name, from, to + Duration::seconds(1), bucket_secs * 1000).await?;
    let buckets = buckets.into_iter().map(|bucket| DurationPoint { bucket }).collect();
    Ok(HttpResponse::Ok().json(Durations { job: job.name, window: window.name(), from, to, bucket_secs, buckets }))
}

#[utoipa::path(
    get,
    path = "/api/v1/sparklines",
    tag = "charts",
    operation_id = "sparklines",
    params(
        ("q" = Option<String>, Query, description = "Only jobs whose name contains this (as the job list)"),
        ("count" = Option<u32>, Query, minimum = 1, maximum = 50, description = "Runs per job (default 20)"),
    ),
    responses(
        (status = 200, description = "The newest runs of every matching job, oldest first, in one call", body = Sparklines),
        (status = 400, description = "Bad count (`invalid_request`, field `count`)", body = ErrorBody),
    )
)]
/// `GET /api/v1/sparklines?q&count`: the jobs list's sparklines.
pub(crate) async fn sparklines(
    state: Data<AppState>,
    query: Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let count = number_param(&query, "count", 1..=MAX_SPARK_RUNS)?.unwrap_or(DEFAULT_SPARK_RUNS);
    let q = param(&query, "q");
    let (jobs, _) = state.backends.jobs.snapshot().await?;
    let names: Vec<JobName> =
        jobs.into_iter().map(|j| j.name).filter(|n| q.is_none_or(|q| n.as_str().contains(q))).collect();
    let found = state.backends.logs.recent_runs(&names, count).await?;
    let jobs = found
        .into_iter()
        .map(|(job, points)| {
            let mut line: Vec<SparkPoint> = points
                .into_iter()
                .map(|p| SparkPoint { id: p.id, status: p.status, start: p.start, duration_ms: p.duration_ms })
                .collect();
            line.reverse();
            (job, line)
        })
        .collect();
    Ok(HttpResponse::Ok().json(Sparklines { count, jobs }))
}

#[utoipa::path(
    get,
    path = "/api/v1/fleet/forecast",
    tag = "charts",
    operation_id = "fleet_forecast",
    params(("hours" = Option<u32>, Query, minimum = 1, maximum = 48, description = "How far ahead (default 24)")),
    responses(
        (status = 200, description = "Fire times per minute of every enabled job, from the next whole minute", body = Forecast),
        (status = 400, description = "Bad hours (`invalid_request`, field `hours`)", body = ErrorBody),
    )
)]
/// `GET /api/v1/fleet/forecast?hours=24`.
pub(crate) async fn fleet_forecast(
    state: Data<AppState>,
    query: Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let hours = number_param(&query, "hours", 1..=MAX_FORECAST_HOURS)?.unwrap_or(24);
    let (jobs, _) = state.backends.jobs.snapshot().await?;
    let now = Utc::now();
    let from = now.duration_trunc(Duration::minutes(1)).unwrap_or(now) + Duration::minutes(1);
    let tz = state.config.default_zone();
    let minutes = hours as usize * 60;
    // Pure CPU over every job: off the HTTP worker's thread.
    let forecast =
        actix_web::web::block(move || forecast(&jobs, tz, from, minutes)).await.map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(forecast))
}

#[utoipa::path(
    get,
    path = "/api/v1/fleet/load",
    tag = "charts",
    operation_id = "fleet_load",
    responses((status = 200, description = "Runs per worker (last hour, last 24 h) and the planned ownership share", body = Load))
)]
/// `GET /api/v1/fleet/load`.
pub(crate) async fn fleet_load(state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    let now = Utc::now();
    let (jobs, _) = state.backends.jobs.snapshot().await?;
    let live = state.backends.members.live().await?;
    let hour = state.backends.logs.runs_per_worker(now - Duration::hours(1)).await?;
    let day = state.backends.logs.runs_per_worker(now - Duration::hours(24)).await?;
    let live_ids: Vec<(WorkerId, crate::domain::Labels)> =
        live.iter().map(|w| (w.id.clone(), w.labels.clone())).collect();
    let enabled_jobs = jobs.iter().filter(|j| j.enabled).count();
    let (owned, placed) = actix_web::web::block({
        let live_ids = live_ids.clone();
        move || planned_owners(&jobs, &live_ids)
    })
    .await
    .map_err(ApiError::internal)?;
    let mut ids: Vec<WorkerId> = live_ids.iter().map(|(id, _)| id.clone()).chain(day.keys().cloned()).collect();
    ids.sort();
    ids.dedup();
    let workers = ids
        .into_iter()
        .map(|id| {
            let planned_jobs = owned.get(&id).copied().unwrap_or(0);
            WorkerLoad {
                live: live_ids.iter().any(|(w, _)| *w == id),
                runs_1h: hour.get(&id).copied().unwrap_or(0),
                runs_24h: day.get(&id).copied().unwrap_or(0),
                planned_jobs,
                planned_share: if placed == 0 { 0.0 } else { planned_jobs as f64 / placed as f64 },
                id,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(Load { workers, enabled_jobs }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::conformance::sample_job;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("RFC 3339")
    }

    fn point(tick: &str, status: RunStatus, attempt: u32) -> RunPoint {
        RunPoint {
            id: RunId::generate(),
            status,
            trigger: if attempt > 1 { Trigger::Retry } else { Trigger::Schedule },
            scheduled_at: utc(tick),
            start: utc(tick) + Duration::seconds(i64::from(attempt)),
            attempt,
            duration_ms: Some(10),
            missed_until: None,
        }
    }

    #[test]
    fn timeline_stacks_attempts_and_spreads_missed_ranges_over_their_ticks() {
        let ticks: Vec<DateTime<Utc>> = (0..6).map(|i| utc("2026-12-01T10:00:00Z") + Duration::minutes(i)).collect();
        let mut missed = point("2026-12-01T10:02:00Z", RunStatus::Missed, 1);
        missed.missed_until = Some(utc("2026-12-01T10:03:00Z"));
        let manual = RunPoint { trigger: Trigger::Manual, ..point("2026-12-01T10:00:30Z", RunStatus::Succeeded, 1) };
        let points = vec![
            point("2026-12-01T10:00:00Z", RunStatus::Succeeded, 1),
            point("2026-12-01T10:01:00Z", RunStatus::Succeeded, 2),
            point("2026-12-01T10:01:00Z", RunStatus::Failed, 1),
            missed,
            point("2026-12-01T10:04:00Z", RunStatus::Lost, 1),
            manual,
        ];
        let (cells, other) = timeline_cells(&ticks, &points);
        let statuses: Vec<&str> = cells.iter().map(|c| c.status.as_str()).collect();
        assert_eq!(statuses, ["succeeded", "succeeded", "missed", "missed", "lost", "none"]);
        let attempts: Vec<(RunStatus, u32)> = cells[1].attempts.iter().map(|a| (a.status, a.attempt)).collect();
        assert_eq!(attempts, [(RunStatus::Failed, 1), (RunStatus::Succeeded, 2)], "attempts oldest first");
        assert_eq!(cells[2].attempts[0].id, cells[3].attempts[0].id, "one summary covers both ticks");
        assert_eq!(other, 1, "the manual run is on no tick");
    }

    #[test]
    fn bucket_cells_count_ticks_and_show_the_most_serious_status() {
        let from = utc("2026-12-01T00:00:00Z");
        let ticks: Vec<DateTime<Utc>> = (0..600).map(|i| from + Duration::seconds(i)).collect();
        let mut counts = BTreeMap::new();
        counts.insert("succeeded".to_owned(), 290);
        counts.insert("failed".to_owned(), 2);
        let buckets = vec![RunBucket { start: from + Duration::seconds(300), counts, ..RunBucket::default() }];
        let cells = bucket_cells(from, from + Duration::seconds(600), 300, Some(&ticks), &buckets);
        assert_eq!(cells.len(), 2);
        assert_eq!((cells[0].status.as_str(), cells[0].ticks), ("none", Some(300)));
        assert_eq!((cells[1].status.as_str(), cells[1].ticks), ("failed", Some(300)));
    }

    #[test]
    fn forecast_bins_fire_times_per_minute_with_jitter_and_skips_disabled_jobs() {
        let from = utc("2026-12-01T10:00:00Z");
        let mut hourly = sample_job(&JobName::parse("hourly").expect("name"));
        hourly.cron_expr = "0 * * * *".into();
        hourly.dialect = Dialect::Distcron;
        let mut jittered = hourly.clone();
        jittered.name = JobName::parse("jittered").expect("name");
        jittered.jitter_secs = 600;
        let mut off = hourly.clone();
        off.name = JobName::parse("off").expect("name");
        off.enabled = false;
        let f = forecast(&[hourly, jittered.clone(), off], chrono_tz::UTC, from, 180);
        assert_eq!(f.jobs, 2);
        assert_eq!(f.minutes.len(), 180);
        assert_eq!(f.minutes[0], 1, "10:00 of the plain hourly job");
        let offset = usize::try_from(jittered.jitter_offset().num_minutes()).expect("minutes");
        assert_eq!(f.minutes.iter().sum::<u32>(), 6);
        assert!(f.minutes[offset] >= 1 && f.minutes[60 + offset] >= 1);
        assert_eq!(f.peak.as_ref().map(|p| p.ticks), Some(if offset == 0 { 2 } else { 1 }));
    }

    #[test]
    fn forecast_of_a_hundred_thousand_hourly_jobs_is_bounded() {
        let base = sample_job(&JobName::parse("base").expect("name"));
        let jobs: Vec<Job> = (0..100_000)
            .map(|i| {
                let mut j = base.clone();
                j.name = JobName::parse(&format!("job-{i}")).expect("name");
                j.cron_expr = format!("{} * * * *", i % 60);
                j.dialect = Dialect::Distcron;
                j
            })
            .collect();
        let f = forecast(&jobs, chrono_tz::UTC, utc("2026-12-01T10:00:00Z"), 24 * 60);
        assert_eq!(f.ticks, 2_400_000);
        assert!(f.minutes.iter().all(|n| *n > 0));
    }

    #[test]
    fn the_owner_is_the_rendezvous_top_among_matching_workers() {
        let mut jobs = Vec::new();
        for i in 0..200 {
            let mut j = sample_job(&JobName::parse(&format!("j{i}")).expect("name"));
            j.enabled = true;
            // Every tenth job wants zone b: only worker b matches it.
            j.selector = if i % 10 == 0 {
                [("zone".to_owned(), "b".to_owned())].into_iter().collect()
            } else {
                Default::default()
            };
            jobs.push(j);
        }
        let zone_b: crate::domain::Labels = [("zone".to_owned(), "b".to_owned())].into_iter().collect();
        let live = vec![(WorkerId("a".into()), Default::default()), (WorkerId("b".into()), zone_b)];
        let (owned, placed) = planned_owners(&jobs, &live);
        assert_eq!(placed, 200);
        let a_first = jobs
            .iter()
            .filter(|j| j.selector.is_empty() && crate::actors::rank::rank(j.name.as_str(), "a", ["b"]) == 0)
            .count();
        assert_eq!(owned.get(&WorkerId("a".into())).copied(), Some(a_first as u64), "as the scheduler ranks");
        assert_eq!(owned.get(&WorkerId("b".into())).copied(), Some(200 - a_first as u64));
        assert!(a_first > 50 && a_first < 150, "spread: {owned:?}");
    }
}
