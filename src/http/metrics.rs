//! `GET /metrics` (README "Metrics") on every listener, and the middleware counting requests.
//!
//! Owns: reading the gauges that live in actors (scheduler, executor pool) just before a scrape,
//! each ask bounded like the readiness probes; dropping the series of deleted jobs against the
//! job store's current names; choosing the text format (OpenMetrics when the scraper asks for
//! it, else Prometheus 0.0.4); counting every request by route pattern, method and status.
//! Leaves to others: what the metrics are and how they are encoded ([`crate::metrics`]), who
//! may scrape (`auth.rs`: role viewer, or nobody asked when `metrics.public`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};

use super::health::ask;
use super::AppState;
use crate::actors::messages::{GetPoolStatus, GetSchedulerStatus};
use crate::metrics::{EngineLevels, OPENMETRICS_TEXT, PROMETHEUS_TEXT};

/// How long reading the job names for pruning may take; a slower store keeps the series a while.
const NAMES_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text exposition format (OpenMetrics when the `Accept` header asks for it); README \"Metrics\" lists the series", content_type = "text/plain", body = String),
        (status = 401, description = "No or a wrong token (`metrics.public = false`, the default)", body = super::error::ErrorBody),
    )
)]
/// `GET /metrics`.
pub(crate) async fn scrape(state: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let metrics = &state.metrics;
    if let Some(node) = &state.node {
        let (scheduler, pool) =
            futures::join!(ask(Some(&node.scheduler), GetSchedulerStatus), ask(Some(&node.pool), GetPoolStatus));
        let mut levels = EngineLevels::default();
        if let Some(Ok(s)) = scheduler {
            levels.planned_jobs = s.planned_jobs as u64;
            levels.due_ticks = s.due_ticks as u64;
        }
        if let Some(Ok(p)) = pool {
            levels.executors_busy = p.busy as u64;
            levels.executors_queued = p.queued as u64;
            levels.executors_size = p.size as u64;
        }
        metrics.set_engine(levels);
    }
    if metrics.has_job_series() {
        let read_at = Instant::now();
        match tokio::time::timeout(NAMES_TIMEOUT, state.backends.jobs.snapshot()).await {
            Ok(Ok((jobs, _))) => {
                let names: HashSet<_> = jobs.into_iter().map(|j| j.name).collect();
                metrics.retain_jobs(&names, read_at);
            }
            Ok(Err(e)) => log::debug!("Metrics: cannot read job names; deleted jobs' series kept for now. error={e}"),
            Err(_) => log::debug!("Metrics: job names not read in time; deleted jobs' series kept for now."),
        }
    }
    let openmetrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let body = metrics.encode(openmetrics);
    HttpResponse::Ok()
        .content_type(if openmetrics { OPENMETRICS_TEXT } else { PROMETHEUS_TEXT })
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// Counts every request, whatever answered it (a handler, auth, the perimeter).
pub(crate) async fn count_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<Data<AppState>>().cloned();
    let method = req.method().clone();
    let res = next.call(req).await;
    if let Some(state) = state {
        let (route, status) = match &res {
            Ok(res) => (res.request().match_pattern(), res.status().as_u16()),
            Err(e) => (None, e.as_response_error().status_code().as_u16()),
        };
        state.metrics.http_request(route.as_deref(), method.as_str(), status);
    }
    res
}
