//! `GET /api/v1/audit?job=&actor=&cursor=&limit=`: the audit log, newest first, a page at a time
//! (README "Audit log"), and [`context`], which every state-changing handler passes to the job
//! store so the change and its entry are written together.
//!
//! Owns: the query's validation and the client address recorded (the TCP peer; a forwarding
//! proxy's headers are not trusted). Leaves to others: storage, order and retention (the job
//! store adapters and the purge task in `lib.rs`).

use std::collections::HashMap;

use actix_web::web::{Data, Query};
use actix_web::{HttpRequest, HttpResponse};

use super::error::ApiError;
use super::{number_param, param, AppState};
use crate::domain::audit::{is_entry_id, MAX_AUDIT_PAGE};
use crate::domain::{AuditAction, AuditContext, AuditQuery, Caller, JobName};

/// Default page size.
const DEFAULT_LIMIT: u32 = 50;

/// What the store records about a change `req` by `caller` makes.
pub(crate) fn context(req: &HttpRequest, caller: &Caller, action: AuditAction) -> AuditContext {
    AuditContext::new(caller.name.clone(), req.peer_addr().map(|a| a.ip().to_string()), action)
}

/// `GET /api/v1/audit`: `{"entries": [...], "next_cursor": "..."|null}`.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    operation_id = "list_audit",
    params(
        ("job" = Option<String>, Query, description = "Only this job's entries"),
        ("actor" = Option<String>, Query, description = "Only this token name's entries"),
        ("cursor" = Option<String>, Query, description = "A `next_cursor` from the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Page size (default 50)"),
    ),
    responses(
        (status = 200, description = "One page of entries, newest first", body = crate::domain::AuditPage),
        (status = 400, description = "Invalid filter or cursor (`invalid_request`, `invalid_job`; `field` names it)", body = super::error::ErrorBody),
    )
)]
pub(crate) async fn list(
    state: Data<AppState>,
    query: Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let job = param(&query, "job").map(JobName::parse).transpose().map_err(|e| {
        let mut err = ApiError::from(e);
        err.field = Some("job".into());
        err
    })?;
    let actor = param(&query, "actor").map(str::to_owned);
    let before = param(&query, "cursor").map(str::to_owned);
    if before.as_deref().is_some_and(|c| !is_entry_id(c)) {
        return Err(ApiError::bad_param("cursor", "cursor must be a next_cursor from an earlier page"));
    }
    let limit = number_param(&query, "limit", 1..=MAX_AUDIT_PAGE)?.unwrap_or(DEFAULT_LIMIT);
    let page = state.backends.jobs.audit(&AuditQuery { job, actor, before, limit }).await?;
    Ok(HttpResponse::Ok().json(page))
}
