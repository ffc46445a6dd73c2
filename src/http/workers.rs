//! `GET /api/v1/workers`: the live workers, as membership reports them.

use actix_web::web::Data;
use actix_web::HttpResponse;

use super::error::ApiError;
use super::AppState;

/// `GET /api/v1/workers`: every live worker with `"state":"alive"`.
pub(crate) async fn list(state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    let live = state.backends.members.live().await?;
    let workers = live
        .iter()
        .map(|w| {
            let mut v = serde_json::to_value(w).map_err(ApiError::internal)?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("state".into(), "alive".into());
            }
            Ok(v)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "workers": workers })))
}
