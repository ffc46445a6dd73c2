//! `/api/v1/jobs`: list (with each job's last run), get, create, replace (optimistic version
//! check), delete, enable/disable, run now and kill (README "API").
//!
//! Validation is `JobSpec::into_job`; storage, versions and timestamps are the job store's;
//! run-now and kill are signals the actors pick up from the store's watch. Every change is
//! written with its audit entry (`audit::context`: the caller, its address, the action).

use std::collections::HashMap;

use actix_web::web::{Data, Json, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::audit::context;
use super::error::{ApiError, ErrorBody};
use super::{number_param, param, AppState};
use crate::backend::{BackendError, Precondition, Signal};
use crate::config::Config;
use crate::domain::{jitter_offset, AuditAction, Caller, Job, JobName, JobSpec, RunId, RunRecord, RunStatus};

/// A job as served: the stored job plus its next fire time and the zone it is read in.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct JobView<'a> {
    /// The stored job.
    #[serde(flatten)]
    job: &'a Job,
    /// Next fire time (jitter included); null when disabled or the schedule never fires again.
    next_run_at: Option<DateTime<Utc>>,
    /// The job's stable jitter offset in seconds (`jitter_secs` > 0 only): each tick fires this
    /// long after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    jitter_offset_secs: Option<u32>,
    /// The zone the expression is read in (the job's, or the node default).
    effective_tz: &'static str,
    /// How the expression reads in words ("every 5 minutes, Monday to Friday").
    schedule_description: Option<String>,
}

/// The served form of `job`.
pub(crate) fn view<'a>(job: &'a Job, config: &Config) -> JobView<'a> {
    let tz = job.zone(config.default_zone());
    let schedule = job.schedule().ok();
    let offset = job.jitter_offset();
    let next_run_at =
        if job.enabled { schedule.as_ref().and_then(|s| s.next_after(Utc::now() - offset, tz)) } else { None };
    JobView {
        job,
        next_run_at: next_run_at.map(|tick| tick + offset),
        jitter_offset_secs: (job.jitter_secs > 0).then(|| jitter_offset(job.name.as_str(), job.jitter_secs)),
        effective_tz: tz.name(),
        schedule_description: schedule.map(|s| s.describe()),
    }
}

/// A job in the list: its view plus a summary of its newest run (null when it never ran).
#[derive(Serialize, utoipa::ToSchema)]
struct ListedJob<'a> {
    /// The job as served.
    #[serde(flatten)]
    view: JobView<'a>,
    /// Its newest run; null when it never ran (or the log store did not answer).
    last_run: Option<LastRun>,
}

/// A stored document that is not a valid job, as the job list shows it.
#[derive(Serialize, utoipa::ToSchema)]
struct ListedInvalidJob<'a> {
    /// The job's name, from its store key.
    name: &'a JobName,
    /// Why it is not a valid job (it is not planned).
    invalid: &'a str,
}

/// `GET /api/v1/jobs`.
#[derive(Serialize, utoipa::ToSchema)]
struct JobList<'a> {
    /// Every valid job matching `q`, sorted by name.
    jobs: Vec<ListedJob<'a>>,
    /// Stored documents that are not valid jobs (not planned), with the reason.
    invalid_jobs: Vec<ListedInvalidJob<'a>>,
    /// Why `last_run` is null everywhere: the log store did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_run_error: Option<String>,
}

/// `DELETE /api/v1/jobs/{name}`.
#[derive(Serialize, utoipa::ToSchema)]
struct Deleted<'a> {
    /// The job as it was.
    deleted: JobView<'a>,
}

/// `POST /api/v1/jobs/{name}/run`: the request is signalled; one worker runs it.
#[derive(Serialize, utoipa::ToSchema)]
struct RunRequested {
    /// The job.
    job: JobName,
    /// The request's id (the audit entry's `detail`).
    request: String,
}

/// `POST /api/v1/jobs/{name}/kill`: the kill is signalled to every worker.
#[derive(Serialize, utoipa::ToSchema)]
struct KillRequested {
    /// The job.
    job: JobName,
}

/// The newest run of a job (by start time), as the job list shows it.
#[derive(Serialize, utoipa::ToSchema)]
struct LastRun {
    /// Run id.
    id: RunId,
    /// Its status.
    status: RunStatus,
    /// When it started (or was decided, for runs that never started).
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    duration_ms: Option<u64>,
    exit_code: Option<i32>,
}

impl From<RunRecord> for LastRun {
    fn from(run: RunRecord) -> Self {
        Self {
            started_at: run.start_time(),
            id: run.id,
            status: run.status,
            ended_at: run.ended_at,
            duration_ms: run.duration_ms,
            exit_code: run.exit_code,
        }
    }
}

/// A job name from the URL (400 invalid_job, field `name`, when malformed).
pub(crate) fn parse_name(raw: &str) -> Result<JobName, ApiError> {
    Ok(JobName::parse(raw)?)
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    operation_id = "list_jobs",
    params(("q" = Option<String>, Query, description = "Only jobs whose name contains this")),
    responses(
        (status = 200, description = "Every job, sorted by name, each with its newest run", body = JobList),
    )
)]
/// `GET /api/v1/jobs[?q=substring]`: every job, sorted by name, each with its `last_run`.
///
/// The jobs come from the job store; when the log store cannot answer, the list is still served
/// with `last_run` null everywhere and `last_run_error` saying why.
pub(crate) async fn list(
    state: Data<AppState>,
    query: Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let q = param(&query, "q");
    let snapshot = state.backends.jobs.snapshot_checked().await?;
    let mut jobs = snapshot.jobs;
    jobs.retain(|j| q.is_none_or(|q| j.name.as_str().contains(q)));
    // Issue 9, item 8: documents in the store that are not valid jobs are listed apart, with
    // the reason they are not planned.
    let invalid: Vec<ListedInvalidJob<'_>> = snapshot
        .invalid
        .iter()
        .filter(|j| q.is_none_or(|q| j.name.as_str().contains(q)))
        .map(|j| ListedInvalidJob { name: &j.name, invalid: &j.reason })
        .collect();
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    // One log store call for every job's newest run (summaries: no output is read).
    let names: Vec<JobName> = jobs.iter().map(|j| j.name.clone()).collect();
    let (mut last_runs, last_run_error) = match state.backends.logs.last_runs(&names).await {
        Ok(found) => (found, None),
        Err(e) => (HashMap::new(), Some(e.to_string())),
    };
    let listed: Vec<ListedJob<'_>> = jobs
        .iter()
        .map(|job| ListedJob {
            view: view(job, &state.config),
            last_run: last_runs.remove(&job.name).map(LastRun::from),
        })
        .collect();
    if let Some(e) = &last_run_error {
        log::debug!("Job list served without last runs: the log store failed. error={e}");
    }
    let last_run_error = last_run_error.map(|e| format!("last runs unavailable: {e}"));
    Ok(HttpResponse::Ok().json(JobList { jobs: listed, invalid_jobs: invalid, last_run_error }))
}

/// Save-time check of `run_as_user` (README "Running jobs as another user"): the user must be
/// in this node's `executor.allowed_users`, and a node that runs jobs itself (role `all`) must
/// run as root. A master need not be root: its workers check that again before every run.
pub(crate) fn may_run_as(job: &Job, config: &Config) -> Result<(), crate::domain::JobValidationError> {
    let runs_jobs_here = config.role == crate::config::Role::All;
    let root_or_not_needed = !runs_jobs_here || nix::unistd::geteuid().is_root();
    crate::domain::check_run_as(job, &config.executor.allowed_users, root_or_not_needed)
}

#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    tag = "jobs",
    operation_id = "create_job",
    request_body = JobSpec,
    responses(
        (status = 201, description = "Created (version 1)", body = JobView),
        (status = 400, description = "A field is invalid (`invalid_job`, `invalid_cron_expr`, `invalid_request`; `field` names it)", body = ErrorBody),
        (status = 409, description = "A job of that name exists (`job_exists`)", body = ErrorBody),
    )
)]
/// `POST /api/v1/jobs`: create; 409 job_exists when the name is taken.
pub(crate) async fn create(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    spec: Json<JobSpec>,
) -> Result<HttpResponse, ApiError> {
    let job = spec.into_inner().into_job(None)?;
    may_run_as(&job, &state.config)?;
    super::alerts::check_job_channels(&job, &state.config)?;
    let audit = context(&req, &caller, AuditAction::Create);
    let out = state.backends.jobs.put_audited(job, Precondition::Absent, audit).await?;
    Ok(HttpResponse::Created().json(view(&out.job, &state.config)))
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs/{name}",
    tag = "jobs",
    operation_id = "get_job",
    params(("name" = String, Path, description = "The job's name: 1-128 of [A-Za-z0-9._-]")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "Invalid job name (`invalid_job`, field `name`)", body = ErrorBody),
        (status = 404, description = "No such job (`job_not_found`)", body = ErrorBody),
        (status = 409, description = "The stored document is not a valid job (`stored_job_invalid`)", body = ErrorBody),
    )
)]
/// `GET /api/v1/jobs/{name}`.
pub(crate) async fn get(state: Data<AppState>, name: Path<String>) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&name)?;
    let job = state.backends.jobs.get(&name).await?.ok_or_else(|| ApiError::job_not_found(name.as_str()))?;
    Ok(HttpResponse::Ok().json(view(&job, &state.config)))
}

#[utoipa::path(
    put,
    path = "/api/v1/jobs/{name}",
    tag = "jobs",
    operation_id = "replace_job",
    params(("name" = String, Path, description = "The job's name: 1-128 of [A-Za-z0-9._-]")),
    request_body = JobSpec,
    responses(
        (status = 200, description = "Stored (created when absent and no version was given)", body = JobView),
        (status = 400, description = "A field is invalid, or the body's name is not the URL's (`invalid_job`, `invalid_cron_expr`, `invalid_request`)", body = ErrorBody),
        (status = 404, description = "A version was given and the job does not exist (`job_not_found`)", body = ErrorBody),
        (status = 409, description = "The job is at another version (`version_conflict`, field `version`)", body = ErrorBody),
    )
)]
/// `PUT /api/v1/jobs/{name}`: with `version`, replace only that version; without, create or replace.
pub(crate) async fn replace(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    name: Path<String>,
    spec: Json<JobSpec>,
) -> Result<HttpResponse, ApiError> {
    let spec = spec.into_inner();
    let precondition = spec.version.map_or(Precondition::Any, Precondition::Version);
    let job = spec.into_job(Some(name.as_str()))?;
    may_run_as(&job, &state.config)?;
    super::alerts::check_job_channels(&job, &state.config)?;
    // A replace that finds no job is recorded as a create.
    let audit = context(&req, &caller, AuditAction::Replace);
    let out = state.backends.jobs.put_audited(job, precondition, audit).await?;
    Ok(HttpResponse::Ok().json(view(&out.job, &state.config)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/jobs/{name}",
    tag = "jobs",
    operation_id = "delete_job",
    params(("name" = String, Path, description = "The job's name: 1-128 of [A-Za-z0-9._-]"), ("version" = Option<u64>, Query, description = "Delete only this version")),
    responses(
        (status = 200, description = "Deleted; the job as it was", body = Deleted),
        (status = 400, description = "Invalid name or version (`invalid_job`, `invalid_request`)", body = ErrorBody),
        (status = 404, description = "No such job (`job_not_found`)", body = ErrorBody),
        (status = 409, description = "The job is at another version (`version_conflict`)", body = ErrorBody),
    )
)]
/// `DELETE /api/v1/jobs/{name}[?version=N]`.
pub(crate) async fn remove(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    name: Path<String>,
    query: Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&name)?;
    let version = number_param(&query, "version", 0..=u64::MAX)?;
    let audit = context(&req, &caller, AuditAction::Delete);
    let job = state
        .backends
        .jobs
        .delete_audited(&name, version, audit)
        .await?
        .ok_or_else(|| ApiError::job_not_found(name.as_str()))?;
    Ok(HttpResponse::Ok().json(Deleted { deleted: view(&job, &state.config) }))
}

#[utoipa::path(
    post,
    path = "/api/v1/jobs/{name}/enable",
    tag = "jobs",
    operation_id = "enable_job",
    params(("name" = String, Path, description = "The job's name: 1-128 of [A-Za-z0-9._-]")),
    responses(
        (status = 200, description = "Enabled (a new version)", body = JobView),
        (status = 400, description = "Invalid job name (`invalid_job`, field `name`)", body = ErrorBody),
        (status = 404, description = "No such job (`job_not_found`)", body = ErrorBody),
        (status = 409, description = "Changed concurrently twice (`version_conflict`)", body = ErrorBody),
    )
)]
/// `POST /api/v1/jobs/{name}/enable`.
pub(crate) async fn enable(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_enabled(&state, &name, true, context(&req, &caller, AuditAction::Enable)).await
}

#[utoipa::path(
    post,
    path = "/api/v1/jobs/{name}/disable",
    tag = "jobs",
    operation_id = "disable_job",
    params(("name" = String, Path, description = "The job's name: 1-128 of [A-Za-z0-9._-]")),
    responses(
        (status = 200, description = "Disabled (a new version)", body = JobView),
        (status = 400, description = "Invalid job name (`invalid_job`, field `name`)", body = ErrorBody),
        (status = 404, description = "No such job (`job_not_found`)", body = ErrorBody),
        (status = 409, description = "Changed concurrently twice (`version_conflict`)", body = ErrorBody),
    )
)]
/// `POST /api/v1/jobs/{name}/disable`.
pub(crate) async fn disable(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_enabled(&state, &name, false, context(&req, &caller, AuditAction::Disable)).await
}

/// Read, flip `enabled`, write back at the version read; a concurrent writer costs one retry.
async fn set_enabled(
    state: &AppState,
    raw: &str,
    enabled: bool,
    audit: crate::domain::AuditContext,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(raw)?;
    let mut retried = false;
    loop {
        let mut job = state.backends.jobs.get(&name).await?.ok_or_else(|| ApiError::job_not_found(name.as_str()))?;
        job.enabled = enabled;
        let version = job.version;
        match state.backends.jobs.put_audited(job, Precondition::Version(version), audit.clone()).await {
            Ok(out) => return Ok(HttpResponse::Ok().json(view(&out.job, &state.config))),
            Err(BackendError::VersionConflict { .. }) if !retried => retried = true,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The optional body of `POST /api/v1/jobs/{name}/run`.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunParams {
    /// Run parameters: extra environment variables for this run (validated like a job's env).
    #[serde(default)]
    pub(crate) env: std::collections::BTreeMap<String, String>,
}

impl RunParams {
    /// Parses an optional JSON body (empty = no parameters) and validates the names and values.
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let params: Self = serde_json::from_slice(body).map_err(|e| {
            let message = format!("run parameters must be {{\"env\": {{\"NAME\": \"value\", ...}}}}: {e}");
            let field = super::error::field_from_serde_message(&e.to_string()).unwrap_or_else(|| "env".into());
            ApiError::bad_param(&field, message)
        })?;
        crate::domain::retry::validate_params(&params.env).map_err(|e| ApiError::bad_param(e.field, e.message))?;
        Ok(params)
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/jobs/{name}/run",
    tag = "jobs",
    operation_id = "run_job_now",
    params(("name" = String, Path, description = "The job's name: 1-128 of [A-Za-z0-9._-]")),
    request_body(content = Option<RunParams>, description = "Optional run parameters (an empty body = none)"),
    responses(
        (status = 202, description = "Signalled: one worker runs it once (trigger `manual`)", body = RunRequested),
        (status = 400, description = "Invalid job name (`invalid_job`, field `name`) or run parameters (`invalid_request`, field `env`)", body = ErrorBody),
        (status = 404, description = "No such job (`job_not_found`)", body = ErrorBody),
    )
)]
/// `POST /api/v1/jobs/{name}/run`: run once now (even when disabled), on one worker; an optional
/// `{"env": {...}}` body adds environment variables to this run (recorded as its `params`).
pub(crate) async fn run_now(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    name: Path<String>,
    body: actix_web::web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&name)?;
    let params = RunParams::parse(&body)?;
    let Some(job) = state.backends.jobs.get(&name).await? else {
        return Err(ApiError::job_not_found(name.as_str()));
    };
    let request = uuid::Uuid::now_v7().to_string();
    let audit = context(&req, &caller, AuditAction::Run).with_detail(request.clone());
    let signal = Signal::RunNow { job: name.clone(), request: request.clone(), env: params.env, retry: None };
    state.backends.jobs.signal_audited(signal, Some(job), audit).await?;
    Ok(HttpResponse::Accepted().json(RunRequested { job: name, request }))
}

#[utoipa::path(
    post,
    path = "/api/v1/jobs/{name}/kill",
    tag = "jobs",
    operation_id = "kill_job",
    params(("name" = String, Path, description = "The job's name: 1-128 of [A-Za-z0-9._-]")),
    responses(
        (status = 202, description = "Signalled: every live run of the job is killed, wherever it runs", body = KillRequested),
        (status = 400, description = "Invalid job name (`invalid_job`, field `name`)", body = ErrorBody),
    )
)]
/// `POST /api/v1/jobs/{name}/kill`: kill every live run of the job, wherever it runs. The job
/// need not exist any more: runs of a deleted job can still be killed.
pub(crate) async fn kill(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&name)?;
    let current = state.backends.jobs.get(&name).await?;
    let audit = context(&req, &caller, AuditAction::Kill);
    state.backends.jobs.signal_audited(Signal::Kill { job: name.clone(), run: None }, current, audit).await?;
    Ok(HttpResponse::Accepted().json(KillRequested { job: name }))
}

/// Fire times listed per created or updated job in a plan.
const PLAN_FIRE_TIMES: usize = 3;

#[utoipa::path(
    post,
    path = "/api/v1/jobs:plan",
    tag = "jobs",
    operation_id = "plan_jobs",
    request_body = crate::domain::jobs_as_code::PlanRequest,
    responses(
        (status = 200, description = "The plan: `changes` (create, update with a field diff, delete), each with its next fire times, DST changes and warnings; `unchanged`; `summary`; the store `revision` it was computed at", body = Object),
        (status = 400, description = "The file is invalid (`invalid_job`, `invalid_cron_expr`, `invalid_request`; `field` names it, e.g. `jobs[2].cron_expr`)", body = ErrorBody),
    )
)]
/// `POST /api/v1/jobs:plan` (operator+): what applying a jobs file would change (README "Jobs as
/// code"). Reads the store once and changes nothing; each create and update carries its next
/// fire times, the DST change of each one's local day (as the preview shows them) and the DST
/// warnings of the coming year.
pub(crate) async fn plan(
    state: Data<AppState>,
    request: Json<crate::domain::jobs_as_code::PlanRequest>,
) -> Result<HttpResponse, ApiError> {
    use crate::domain::jobs_as_code::{self, Action, DstAdvisor};
    let request = request.into_inner();
    let desired = jobs_as_code::desired_jobs(&request).map_err(|e| {
        let code = match (e.cron, e.field.starts_with("jobs[")) {
            (true, _) => super::error::ErrorCode::InvalidCronExpr,
            (false, true) => super::error::ErrorCode::InvalidJob,
            (false, false) => super::error::ErrorCode::InvalidRequest,
        };
        ApiError::with_field(code, e.field, e.message)
    })?;
    for (i, job) in desired.iter().enumerate() {
        may_run_as(job, &state.config).map_err(|e| {
            ApiError::with_field(super::error::ErrorCode::InvalidJob, format!("jobs[{i}].{}", e.field), e.message)
        })?;
    }
    let by_name: HashMap<JobName, Job> = desired.iter().map(|j| (j.name.clone(), j.clone())).collect();
    let snapshot = state.backends.jobs.snapshot_checked().await?;
    let plan =
        jobs_as_code::plan(desired, &snapshot.jobs, &snapshot.invalid, request.managed_by.as_deref(), request.prune);
    let now = Utc::now();
    let mut advisor = DstAdvisor::new(now);
    let default_tz = state.config.default_zone();
    let mut changes = Vec::with_capacity(plan.changes.len());
    for change in &plan.changes {
        let mut value = serde_json::to_value(change).map_err(ApiError::internal)?;
        if let (Some(job), Some(obj)) = (by_name.get(&change.name), value.as_object_mut()) {
            let tz = job.zone(default_tz);
            let schedule = job.schedule().ok();
            let next = match (&schedule, job.enabled) {
                (Some(s), true) => s.next_n(now, tz, PLAN_FIRE_TIMES),
                _ => Vec::new(),
            };
            let dst: Vec<_> = next.iter().map(|t| super::cron::dst_change_on_local_day(*t, tz)).collect();
            let mut warnings = change.warnings.clone();
            if let Some(s) = &schedule {
                warnings.extend(advisor.warnings(s, tz));
            }
            if !job.enabled {
                warnings.push("disabled: it keeps its definition and never fires".into());
            }
            obj.insert("effective_tz".into(), tz.name().into());
            obj.insert("schedule_description".into(), schedule.map(|s| s.describe()).into());
            obj.insert("next".into(), serde_json::to_value(next).map_err(ApiError::internal)?);
            obj.insert("dst".into(), serde_json::to_value(dst).map_err(ApiError::internal)?);
            obj.insert("warnings".into(), warnings.into());
        }
        changes.push(value);
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "managed_by": plan.managed_by,
        "prune": plan.prune,
        "revision": snapshot.revision,
        "changes": changes,
        "unchanged": plan.unchanged,
        "summary": {
            "create": plan.count(Action::Create),
            "update": plan.count(Action::Update),
            "delete": plan.count(Action::Delete),
            "unchanged": plan.unchanged.len(),
        },
    })))
}

/// Body of `POST /api/v1/jobs/{name}/backfill`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackfillBody {
    /// First instant of the range (inclusive), RFC 3339.
    #[schema(value_type = String, format = DateTime)]
    from: String,
    /// Last instant of the range (inclusive), RFC 3339; not in the future.
    #[schema(value_type = String, format = DateTime)]
    to: String,
}

/// `value` of body field `field` as an RFC 3339 instant.
fn rfc3339_field(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        ApiError::bad_param(field, format!("{field} must be an RFC 3339 time such as 2026-11-30T00:00:00Z: {e}"))
    })
}

/// `POST /api/v1/jobs/{name}/backfill`: the request is signalled; one worker runs its ticks.
#[derive(Serialize, utoipa::ToSchema)]
struct BackfillRequested {
    /// The job.
    job: JobName,
    /// The request's id (the audit entry's `detail`).
    request: String,
    /// How many ticks the range holds (each runs once).
    ticks: usize,
    /// The first tick of the range.
    first: Option<DateTime<Utc>>,
    /// The last tick of the range.
    last: Option<DateTime<Utc>>,
}

#[utoipa::path(
    post,
    path = "/api/v1/jobs/{name}/backfill",
    tag = "jobs",
    operation_id = "backfill_job",
    params(("name" = String, Path, description = "The job's name: 1-128 of [A-Za-z0-9._-]")),
    request_body = BackfillBody,
    responses(
        (status = 202, description = "Signalled: one worker runs the range's ticks in order, each once (trigger `backfill`)", body = BackfillRequested),
        (status = 400, description = "`from` after `to` or no tick in the range (field `from`); `to` in the future or too many ticks (field `to`)", body = ErrorBody),
        (status = 404, description = "No such job (`job_not_found`)", body = ErrorBody),
    )
)]
/// `POST /api/v1/jobs/{name}/backfill {from, to}`: runs the job's ticks in a past range, each
/// once cluster-wide and one after another on the worker that claims the request
/// (`trigger = "backfill"`, each with its own `scheduled_at`). At most
/// [`crate::domain::catchup::MAX_BACKFILL_TICKS`] ticks per request.
pub(crate) async fn backfill(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    name: Path<String>,
    body: Json<BackfillBody>,
) -> Result<HttpResponse, ApiError> {
    use crate::domain::catchup::{backfill_ticks, BackfillError, BackfillRequest};
    let name = parse_name(&name)?;
    let Some(job) = state.backends.jobs.get(&name).await? else {
        return Err(ApiError::job_not_found(name.as_str()));
    };
    let schedule =
        job.schedule().map_err(|e| ApiError::bad_param("cron_expr", format!("the job's schedule is invalid: {e}")))?;
    let tz = job.zone(state.config.default_zone());
    let BackfillBody { from, to } = body.into_inner();
    let (from, to) = (rfc3339_field("from", &from)?, rfc3339_field("to", &to)?);
    let ticks = backfill_ticks(&schedule, tz, from, to, Utc::now()).map_err(|e| {
        let field = match e {
            BackfillError::Reversed { .. } | BackfillError::Empty => "from",
            BackfillError::Future { .. } | BackfillError::TooMany { .. } => "to",
        };
        ApiError::bad_param(field, e.to_string())
    })?;
    let request = BackfillRequest { id: uuid::Uuid::now_v7().to_string(), from, to };
    let request_id = request.to_request_id();
    let audit = context(&req, &caller, AuditAction::Run).with_detail(request_id.clone());
    let signal =
        Signal::RunNow { job: name.clone(), request: request_id.clone(), env: Default::default(), retry: None };
    state.backends.jobs.signal_audited(signal, Some(job), audit).await?;
    Ok(HttpResponse::Accepted().json(BackfillRequested {
        job: name,
        request: request_id,
        ticks: ticks.len(),
        first: ticks.first().copied(),
        last: ticks.last().copied(),
    }))
}
