//! `/api/v1/health/live` and `/api/v1/health/ready` (README "API").
//!
//! Liveness says the process answers. Readiness probes each backend and, on nodes that run
//! actors, reads the scheduler, executor pool and log pipeline status, every probe bounded by
//! [`CHECK_TIMEOUT`] and all run at once. An unreachable job store, or an essential actor
//! (scheduler, watch, log batching, lost-run recording) that is not running, makes the node
//! unavailable (503): a node that cannot schedule must not look ready. Anything else is
//! "degraded" with 200, since runs keep spooling.

use std::future::Future;
use std::time::Duration;

use actix::{Message, Recipient};
use actix_web::web::Data;
use actix_web::HttpResponse;
use chrono::Utc;
use serde::Serialize;
use serde_json::{json, Value};

use super::AppState;
use crate::actors::messages::{GetInvalidJobs, GetLogStatus, GetPoolStatus, GetSchedulerStatus, LogStatus};
use crate::backend::BackendError;
use crate::domain::JobName;

/// How long one probe may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /api/v1/health/live`.
#[derive(Serialize, utoipa::ToSchema)]
struct Liveness {
    /// Always `ok`.
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// One backend's probe.
#[derive(Serialize, utoipa::ToSchema)]
struct BackendCheck {
    /// The adapter (`etcd`, `mongodb`, `embedded`, ...).
    #[schema(value_type = String)]
    kind: &'static str,
    /// Whether it answered in time.
    ok: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The log store's probe, with the log pipeline's figures.
#[derive(Serialize, utoipa::ToSchema)]
struct LogBackendCheck {
    /// The probe (not ok either when the last write failed).
    #[serde(flatten)]
    check: BackendCheck,
    /// Bytes in the spool file (records waiting for the store).
    spool_bytes: u64,
    /// Records in the spool file.
    spool_records: u64,
    /// Records buffered, not yet written.
    buffered: usize,
    /// Records in the dead-letter file.
    dead_lettered: u64,
}

/// Every backend's probe.
#[derive(Serialize, utoipa::ToSchema)]
struct BackendChecks {
    /// Job store.
    jobs: BackendCheck,
    /// Membership.
    members: BackendCheck,
    /// Claims.
    claims: BackendCheck,
    /// Log store.
    logs: LogBackendCheck,
}

/// `GET /api/v1/health/ready`: the node's readiness and what it is made of.
#[derive(Serialize, utoipa::ToSchema)]
struct Readiness {
    /// `ready`, `degraded` (200) or `unavailable` (503).
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    /// `all`, `master` or `worker`.
    #[schema(value_type = String)]
    role: &'static str,
    /// This node's id.
    node_id: crate::domain::WorkerId,
    /// distcron version.
    #[schema(value_type = String)]
    version: &'static str,
    /// Seconds since start.
    uptime_secs: i64,
    /// Every backend's probe.
    backends: BackendChecks,
    /// The scheduler's status; `{"error"}` when it did not answer; null on role master.
    #[schema(value_type = Option<Object>)]
    scheduler: Value,
    /// The executor pool's status; as `scheduler`.
    #[schema(value_type = Option<Object>)]
    executors: Value,
    /// Stored documents that are not valid jobs (not planned): an array of `{name, reason}`;
    /// `{"error"}` when the watch did not answer; null on role master.
    #[schema(value_type = Value)]
    invalid_jobs: Value,
    /// Each essential actor: `running` or `stopped`.
    #[schema(value_type = std::collections::HashMap<String, String>)]
    actors: serde_json::Map<String, Value>,
}

/// `GET /api/v1/health/live`: the process answers. Needs no token.
#[utoipa::path(
    get,
    path = "/api/v1/health/live",
    tag = "health",
    operation_id = "health_live",
    responses((status = 200, description = "The process answers", body = Liveness))
)]
pub(crate) async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Liveness { status: "ok" })
}

/// Runs a backend probe with the timeout; the error as text.
async fn probe<T>(fut: impl Future<Output = Result<T, BackendError>>) -> Result<T, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}

/// Asks a local actor with the timeout; the error as text.
pub(super) async fn ask<M>(to: Option<&Recipient<M>>, msg: M) -> Option<Result<M::Result, String>>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    let to = to?;
    Some(match tokio::time::timeout(CHECK_TIMEOUT, to.send(msg)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("actor unreachable: {e}")),
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    })
}

/// `{"kind","ok","error"?}` for one backend.
fn backend_json<T>(kind: &'static str, res: &Result<T, String>) -> BackendCheck {
    match res {
        Ok(_) => BackendCheck { kind, ok: true, error: None },
        Err(e) => BackendCheck { kind, ok: false, error: Some(e.clone()) },
    }
}

/// An actor status as JSON: the status, `{"error": ..}` when it did not answer, null when the
/// role runs no actors.
fn actor_json<T: serde::Serialize>(res: &Option<Result<T, String>>) -> Value {
    match res {
        None => Value::Null,
        Some(Ok(v)) => serde_json::to_value(v).unwrap_or(Value::Null),
        Some(Err(e)) => json!({ "error": e }),
    }
}

/// `GET /api/v1/health`: the same as `/api/v1/health/ready`.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "health",
    operation_id = "health",
    responses(
        (status = 200, description = "Ready or degraded (runs keep spooling)", body = Readiness),
        (status = 503, description = "Unavailable: the job store cannot be reached or an essential actor stopped", body = Readiness),
    )
)]
pub(crate) async fn summary(state: Data<AppState>) -> HttpResponse {
    ready(state).await
}

/// `GET /api/v1/health/ready`.
#[utoipa::path(
    get,
    path = "/api/v1/health/ready",
    tag = "health",
    operation_id = "health_ready",
    responses(
        (status = 200, description = "Ready or degraded (runs keep spooling)", body = Readiness),
        (status = 503, description = "Unavailable: the job store cannot be reached or an essential actor stopped", body = Readiness),
    )
)]
pub(crate) async fn ready(state: Data<AppState>) -> HttpResponse {
    let b = &state.backends;
    let node = state.node.as_ref();
    // Any name will do: the probe only needs the store to answer.
    let probe_name = JobName::parse("distcron-health-probe").ok();
    let jobs_probe = async {
        match &probe_name {
            Some(n) => probe(b.jobs.get(n)).await.map(|_| ()),
            None => probe(b.jobs.snapshot()).await.map(|_| ()),
        }
    };
    let (jobs, members, claims, logs, scheduler, pool, log, invalid) = futures::join!(
        jobs_probe,
        probe(b.members.live()),
        probe(b.claims.running(None)),
        probe(b.logs.ping()),
        ask(node.map(|n| &n.scheduler), GetSchedulerStatus),
        ask(node.map(|n| &n.pool), GetPoolStatus),
        ask(node.map(|n| &n.log), GetLogStatus),
        ask(node.map(|n| &n.watch), GetInvalidJobs),
    );

    let log_status: LogStatus = match &log {
        Some(Ok(s)) => s.clone(),
        _ => LogStatus::default(),
    };
    let mut logs_json = LogBackendCheck {
        check: backend_json(b.kinds.logs, &logs),
        spool_bytes: log_status.spool_bytes,
        spool_records: log_status.spool_records,
        buffered: log_status.buffered,
        dead_lettered: log_status.dead_lettered,
    };
    if matches!(&log, Some(Ok(s)) if !s.store_ok) && logs.is_ok() {
        logs_json.check.ok = false;
        let err = log_status.last_error.clone().unwrap_or_else(|| "last write to the log store failed".into());
        logs_json.check.error = Some(err);
    }
    let logs_ok = logs_json.check.ok;
    let essentials = state.essentials.states();
    let stopped: Vec<&str> = essentials.iter().filter(|(_, alive)| !alive).map(|(name, _)| *name).collect();
    let actors_json: serde_json::Map<String, Value> = essentials
        .iter()
        .map(|(name, alive)| ((*name).to_owned(), Value::from(if *alive { "running" } else { "stopped" })))
        .collect();

    let actors_ok =
        [scheduler.as_ref().map(Result::is_ok), pool.as_ref().map(Result::is_ok), log.as_ref().map(Result::is_ok)]
            .into_iter()
            .all(|r| r.unwrap_or(true));
    let synced = match &scheduler {
        Some(Ok(s)) => s.synced,
        _ => true,
    };
    let unavailable = jobs.is_err() || !stopped.is_empty();
    let status = if unavailable {
        "unavailable"
    } else if members.is_err() || claims.is_err() || !logs_ok || !actors_ok || !synced {
        "degraded"
    } else {
        "ready"
    };
    let body = Readiness {
        status,
        role: state.config.role.as_str(),
        node_id: state.node_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: (Utc::now() - state.started_at).num_seconds().max(0),
        backends: BackendChecks {
            jobs: backend_json(b.kinds.jobs, &jobs),
            members: backend_json(b.kinds.members, &members),
            claims: backend_json(b.kinds.claims, &claims),
            logs: logs_json,
        },
        scheduler: actor_json(&scheduler),
        executors: actor_json(&pool),
        // Issue 9, item 8: stored documents that are not valid jobs, not planned, with the reason.
        invalid_jobs: actor_json(&invalid),
        actors: actors_json,
    };
    if !stopped.is_empty() {
        log::warn!("Readiness: essential actors are not running. stopped={}", stopped.join(","));
    }
    if unavailable {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}
