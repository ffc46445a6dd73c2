//! Alert routes (README "Alerts"): `GET /api/v1/alerts` (history, newest first),
//! `GET /api/v1/jobs/{name}/alerts` (a job's rules, alert state and history),
//! `GET /api/v1/alert-channels` (names and kinds, never URLs or secrets) and
//! `POST /api/v1/alert-channels/{name}/test` (operator: one attempt, recorded, answered with
//! the record).
//!
//! Owns: request shapes and the job-level channel check. Leaves to others: evaluation and
//! retried delivery (`actors/alerts.rs`), sending (`alerting`), records (the claims port).

use actix_web::web::{Data, Path, Query};
use actix_web::HttpResponse;
use serde::Deserialize;

use super::error::{ApiError, ErrorCode};
use super::jobs::parse_name;
use super::AppState;
use crate::actors::alerts::record_attempt;
use crate::backend::StoredAlert;
use crate::config::Config;
use crate::domain::alert::{validate_rules, AlertKind};
use crate::domain::{AlertRecord, DeliveryState, Job};

/// Default and largest page of `GET /api/v1/alerts`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Every channel a job's own rules name must be configured.
pub(crate) fn check_job_channels(job: &Job, config: &Config) -> Result<(), ApiError> {
    if let Some(rules) = &job.alerts {
        validate_rules(rules, Some(&config.alerts.channel_names()))?;
    }
    Ok(())
}

/// `GET /api/v1/alerts` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertsQuery {
    /// Only this job's alerts.
    job: Option<String>,
    /// Only alerts in this delivery state.
    state: Option<DeliveryState>,
    /// Only this kind.
    kind: Option<AlertKind>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

fn page(stored: Vec<StoredAlert>, q: &AlertsQuery) -> Result<Vec<AlertRecord>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_param("limit", format!("limit is {limit}; allowed are 1..={MAX_LIMIT}")));
    }
    Ok(stored
        .into_iter()
        .map(|s| s.record)
        .filter(|r| q.state.is_none_or(|st| r.state == st) && q.kind.is_none_or(|k| r.alert.kind == k))
        .take(limit)
        .collect())
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "alerts",
    operation_id = "list_alerts",
    params(
        ("job" = Option<String>, Query, description = "Only this job's alerts"),
        ("state" = Option<DeliveryState>, Query, description = "Only alerts in this delivery state"),
        ("kind" = Option<AlertKind>, Query, description = "Only this kind"),
        ("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)"),
    ),
    responses(
        (status = 200, description = "`{\"alerts\": [AlertRecord]}`, newest first", body = Object),
        (status = 400, description = "A bad parameter (`invalid_request`, `field` names it)", body = super::error::ErrorBody),
    )
)]
/// `GET /api/v1/alerts[?job&state&kind&limit]`: alert records, newest first.
pub(crate) async fn list(state: Data<AppState>, q: Query<AlertsQuery>) -> Result<HttpResponse, ApiError> {
    let job = q.job.as_deref().map(parse_name).transpose()?;
    let stored = state.backends.claims.alerts(job.as_ref().map(|j| j.as_str())).await?;
    let alerts = page(stored, &q)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "alerts": alerts })))
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs/{name}/alerts",
    tag = "alerts",
    operation_id = "job_alerts",
    params(("name" = String, Path, description = "The job's name")),
    responses(
        (status = 200, description = "`{job, rules, rules_source, state, alerts}`: the job's effective rules, its alert state (`alerting` or `ok`) and latest alerts", body = Object),
        (status = 400, description = "Invalid job name (`invalid_job`)", body = super::error::ErrorBody),
        (status = 404, description = "No such job (`job_not_found`)", body = super::error::ErrorBody),
    )
)]
/// `GET /api/v1/jobs/{name}/alerts`: the job's effective rules (`rules_source`: `job` or
/// `default`), its alert `state` (`alerting` while its newest failure or dead-man alert has
/// no `recovered` after it, else `ok`) and its latest alerts.
pub(crate) async fn job_alerts(state: Data<AppState>, name: Path<String>) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&name)?;
    let job = state.backends.jobs.get(&name).await?.ok_or_else(|| ApiError::job_not_found(name.as_str()))?;
    let (rules, source) = match &job.alerts {
        Some(rules) => (rules.clone(), "job"),
        None => (state.config.alerts.rules.clone(), "default"),
    };
    let mut alerts: Vec<AlertRecord> =
        state.backends.claims.alerts(Some(name.as_str())).await?.into_iter().map(|s| s.record).collect();
    alerts.truncate(DEFAULT_LIMIT);
    let newest_state_change = alerts.iter().find(|r| !matches!(r.alert.kind, AlertKind::Late | AlertKind::Test));
    let alerting = newest_state_change.is_some_and(|r| r.alert.kind != AlertKind::Recovered);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "job": name,
        "rules": rules,
        "rules_source": source,
        "state": if alerting { "alerting" } else { "ok" },
        "alerts": alerts,
    })))
}

#[utoipa::path(
    get,
    path = "/api/v1/alert-channels",
    tag = "alerts",
    operation_id = "list_alert_channels",
    responses(
        (status = 200, description = "`{channels, default_rules}`: the configured channels (no secrets) and `alerts.rules`", body = Object),
    )
)]
/// `GET /api/v1/alert-channels`: the channels and the default rules (`alerts.rules`).
pub(crate) async fn channels(state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "channels": state.alert_channels.describe(),
        "default_rules": state.config.alerts.rules,
    })))
}

#[utoipa::path(
    post,
    path = "/api/v1/alert-channels/{name}/test",
    tag = "alerts",
    operation_id = "test_alert_channel",
    params(("name" = String, Path, description = "The channel's name in `alerts.channels`")),
    responses(
        (status = 200, description = "The test alert's record, with the delivery attempt", body = AlertRecord),
        (status = 404, description = "No such channel (`alert_channel_not_found`)", body = super::error::ErrorBody),
    )
)]
/// `POST /api/v1/alert-channels/{name}/test`: sends a test alert once (no retries, so the
/// answer says at once whether the channel works), records the attempt, answers the record.
pub(crate) async fn test(state: Data<AppState>, name: Path<String>) -> Result<HttpResponse, ApiError> {
    let channel = state.alert_channels.get(&name).ok_or_else(|| {
        ApiError::with_field(ErrorCode::AlertChannelNotFound, "name", format!("no alert channel named {:?}", *name))
    })?;
    let mut record = AlertRecord::new(crate::alerting::test_alert(&channel.name), state.node_id.clone());
    let revision = state.backends.claims.claim_alert(&record).await?;
    let outcome = channel.send(&record.alert, 1).await;
    if let Some(delivery) = record.deliveries.first_mut() {
        record_attempt(delivery, &outcome, &state.node_id, 1);
    }
    record.settle_state();
    record.updated_at = chrono::Utc::now();
    if let Some(revision) = revision {
        state.backends.claims.update_alert(&record, revision).await?;
    }
    log::info!("Test alert sent. channel={} delivered={}", channel.name, outcome.ok);
    Ok(HttpResponse::Ok().json(record))
}
