//! Response hygiene on every listener (README "Security: responses").
//!
//! Owns: the request id (`X-Request-Id` on every response, in the body of every 5xx and in the
//! log line of its cause), the headers every response carries (`Cache-Control: no-store`,
//! `X-Content-Type-Options: nosniff`, `Referrer-Policy`, `X-Frame-Options`, a deny-all
//! Content-Security-Policy where the page's own is absent, HSTS with TLS), and replacing the body
//! of any error that became a 5xx so no backend text reaches a client.
//! Leaves to others: the error table (`error.rs`), the page's own CSP (`assets.rs`), the perimeter
//! (`guard.rs`).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{HttpMessage, ResponseError};

use super::error::{ApiError, ErrorCode};
use super::AppState;

/// The id of one request: in `X-Request-Id`, in 5xx bodies and next to the logged cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestId(pub(crate) String);

impl RequestId {
    /// A new id (UUIDv7 text: unique, time-ordered, no secret).
    pub(crate) fn new() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string())
    }

    /// The id attached to `req` by the middleware (a new one outside it, e.g. in unit tests).
    pub(crate) fn of(req: &actix_web::HttpRequest) -> Self {
        req.extensions().get::<Self>().cloned().unwrap_or_else(Self::new)
    }
}

/// `X-Request-Id`.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// HSTS when TLS is on: a year, subdomains excluded (the node's name may be shared).
const HSTS: &str = "max-age=31536000";

/// For responses without a policy of their own (JSON, errors): nothing may load or frame them.
const DENY_ALL_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The middleware: attaches the request id, answers a 5xx with the safe body, sets the headers.
pub(crate) async fn secure_responses(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = RequestId::new();
    req.extensions_mut().insert(id.clone());
    let tls = req.app_data::<Data<AppState>>().is_some_and(|s| s.config.tls_enabled());
    let method = req.method().clone();
    let path = req.path().to_owned();
    let mut res = next.call(req).await?.map_into_boxed_body();
    // An error turned into a 5xx (a handler's ApiError, an extractor's or actix's own): its
    // text stays here. A 5xx a handler built on purpose (the readiness report) is left alone.
    if res.status().is_server_error() && res.response().error().is_some() {
        let replacement = safe_server_error(res.response().error(), res.status(), &id, &method, &path);
        res = res.into_response(replacement);
    }
    set_headers(res.headers_mut(), &id, tls);
    Ok(res)
}

/// Logs the cause of a 5xx with the request id and builds the body the client gets: the API
/// error shape, `internal error` or a fixed sentence for `backend_unavailable`, and the id.
fn safe_server_error(
    error: Option<&actix_web::Error>,
    status: actix_web::http::StatusCode,
    id: &RequestId,
    method: &actix_web::http::Method,
    path: &str,
) -> actix_web::HttpResponse {
    let api = error.and_then(|e| e.as_error::<ApiError>());
    let code = match api {
        Some(api) if api.code.status().is_server_error() => api.code,
        _ if status == actix_web::http::StatusCode::SERVICE_UNAVAILABLE => ErrorCode::BackendUnavailable,
        _ => ErrorCode::Internal,
    };
    let cause = match (api, error) {
        (Some(api), _) => api.cause_chain_or_message(),
        (None, Some(e)) => e.to_string(),
        (None, None) => format!("status {status} without an error"),
    };
    let request_id = &id.0;
    if code == ErrorCode::BackendUnavailable {
        log::warn!(
            "Request failed: a store is unavailable. request_id={request_id} method={method} path={path} error={cause}"
        );
    } else {
        log::error!("Request failed. request_id={request_id} method={method} path={path} error={cause}");
    }
    ApiError::new(code, code.public_message()).with_request_id(request_id).error_response()
}

/// The headers of every response; a header a handler set itself (the page's CSP and
/// `Cache-Control: no-cache`) is kept.
fn set_headers(headers: &mut header::HeaderMap, id: &RequestId, tls: bool) {
    let mut default = |name: HeaderName, value: &'static str| {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    };
    default(header::CACHE_CONTROL, "no-store");
    default(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    default(header::REFERRER_POLICY, "no-referrer");
    default(header::X_FRAME_OPTIONS, "DENY");
    default(header::CONTENT_SECURITY_POLICY, DENY_ALL_CSP);
    if tls {
        default(header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        headers.insert(X_REQUEST_ID, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_what_a_handler_set_and_add_hsts_only_with_tls() {
        let mut h = header::HeaderMap::new();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let id = RequestId("abc".into());
        set_headers(&mut h, &id, false);
        assert_eq!(h.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()), Some("no-cache"));
        assert_eq!(h.get(header::X_CONTENT_TYPE_OPTIONS).and_then(|v| v.to_str().ok()), Some("nosniff"));
        assert_eq!(h.get(X_REQUEST_ID).and_then(|v| v.to_str().ok()), Some("abc"));
        assert!(h.get(header::STRICT_TRANSPORT_SECURITY).is_none());
        let mut h = header::HeaderMap::new();
        set_headers(&mut h, &id, true);
        assert_eq!(h.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()), Some("no-store"));
        assert_eq!(h.get(header::STRICT_TRANSPORT_SECURITY).and_then(|v| v.to_str().ok()), Some(HSTS));
    }

    #[test]
    fn request_ids_are_unique() {
        assert_ne!(RequestId::new(), RequestId::new());
    }
}
