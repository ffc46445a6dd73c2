//! `GET /api/v1/workers`: the live workers, as membership reports them.

use actix_web::web::Data;
use actix_web::HttpResponse;

use serde::Serialize;

use super::error::ApiError;
use super::AppState;
use crate::domain::WorkerInfo;

/// A live worker as served.
#[derive(Serialize, utoipa::ToSchema)]
struct WorkerView {
    /// What the worker publishes through membership.
    #[serde(flatten)]
    info: WorkerInfo,
    /// Always `alive`: only live workers are listed.
    #[schema(value_type = String, example = "alive")]
    state: &'static str,
}

/// `GET /api/v1/workers`.
#[derive(Serialize, utoipa::ToSchema)]
struct WorkerList {
    /// Every live worker.
    workers: Vec<WorkerView>,
}

/// `GET /api/v1/workers`: every live worker with `"state":"alive"`.
#[utoipa::path(
    get,
    path = "/api/v1/workers",
    tag = "workers",
    operation_id = "list_workers",
    responses((status = 200, description = "Every live worker", body = WorkerList))
)]
pub(crate) async fn list(state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    let live = state.backends.members.live().await?;
    let workers = live.into_iter().map(|info| WorkerView { info, state: "alive" }).collect();
    Ok(HttpResponse::Ok().json(WorkerList { workers }))
}
