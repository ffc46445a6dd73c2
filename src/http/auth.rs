//! Bearer-token authentication (README "API"), as a middleware over every route.
//!
//! When `api_token` is set, everything except the admin page, its static assets and
//! `/api/v1/health/live` needs `Authorization: Bearer <token>`, compared in constant time.
//! A refusal is a 401 in the API error shape, or in the seed's shape on the legacy routes.
//! Whether a non-loopback listener may start without a token is decided in `mod.rs`.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{FromRequest, HttpMessage, HttpRequest, ResponseError};

use crate::domain::{AccessRole, Caller};

use super::error::{ApiError, ErrorCode};
use super::{assets, legacy, AppState};

/// The middleware: passes public paths and requests with the right token, answers 401 otherwise.
pub(crate) async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let config = req.app_data::<Data<AppState>>().map(|s| std::sync::Arc::clone(&s.config));
    let token = config.as_ref().map(|c| c.api_token.as_str()).unwrap_or_default();
    if token.is_empty() || is_public(req.path()) {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    }
    let presented = bearer(req.headers());
    if presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
        req.extensions_mut().insert(Caller { name: "admin".to_owned(), role: AccessRole::Admin });
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    }
    let res = if legacy::is_legacy_path(req.path()) {
        legacy::unauthorized()
    } else {
        let message = match presented {
            None => "missing bearer token: send Authorization: Bearer <api_token>",
            Some(_) => "invalid bearer token",
        };
        ApiError::new(ErrorCode::Unauthorized, message).error_response()
    };
    Ok(req.into_response(res).map_into_boxed_body())
}

/// Handlers take the request's [`Caller`] as an extractor: the identity the middleware attached,
/// or [`Caller::anonymous`] when auth is off.
impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(Ok(req.extensions().get::<Caller>().cloned().unwrap_or_else(Caller::anonymous)))
    }
}

/// Paths served without a token: the page and its assets (the page asks for the token itself)
/// and the liveness probe.
fn is_public(path: &str) -> bool {
    path == "/api/v1/health/live" || assets::is_asset_path(path)
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &header::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without an early exit, so the time taken does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_reads_the_token_case_insensitively() {
        let mut h = header::HeaderMap::new();
        h.insert(header::AUTHORIZATION, header::HeaderValue::from_static("bearer  abc "));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, header::HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
