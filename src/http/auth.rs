//! Authentication and authorization (README "Tokens and roles"), as one middleware over every
//! route, and `GET /api/v1/whoami`.
//!
//! Owns: the token table (the single `api_token`, named "admin" with role admin, plus every
//! `[[auth.tokens]]` entry, each kept only as a SHA-256), the lookup of a presented bearer token
//! (hashed, then compared in constant time with every entry), the per-client-address limit on
//! failed authentications (a token bucket per address, bounded memory, 429 with `Retry-After`),
//! and [`required_role`]: the one table method + route → role every request is checked against
//! (403 `forbidden` naming the role). A refusal is in the API error shape, or in the seed's shape
//! on the legacy routes.
//! Leaves to others: where `api_token` comes from and whether a listener may start without one
//! (`mod.rs`, `lib.rs`), origin and host checks, what the handlers do with the [`Caller`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::domain::{AccessRole, Caller};

use super::error::{ApiError, ErrorCode};
use super::{assets, legacy, AppState};

/// Client addresses whose failures are remembered at once; past it the stalest is forgotten.
const MAX_TRACKED_CLIENTS: usize = 4096;

/// The authentication state of one HTTP front end, shared by its workers.
#[derive(Default)]
pub struct AuthState {
    /// Built from the config at the first request (the config's token is final by then).
    tokens: OnceLock<TokenTable>,
    /// Failed authentications per client address.
    failures: Mutex<FailureLimiter>,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState").finish_non_exhaustive()
    }
}

impl AuthState {
    fn tokens(&self, config: &Config) -> &TokenTable {
        self.tokens.get_or_init(|| TokenTable::from_config(config))
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, FailureLimiter> {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One known token: who it is, what it may do, the SHA-256 of its value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TokenEntry {
    name: String,
    role: AccessRole,
    hash: [u8; 32],
}

/// Every token this node accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TokenTable {
    entries: Vec<TokenEntry>,
}

impl TokenTable {
    /// `api_token` (when set) as "admin", then the named tokens (hashes validated at config load;
    /// a malformed one is skipped here rather than matched).
    fn from_config(config: &Config) -> Self {
        let mut entries = Vec::new();
        if !config.api_token.is_empty() {
            entries.push(TokenEntry {
                name: "admin".into(),
                role: AccessRole::Admin,
                hash: Sha256::digest(config.api_token.as_bytes()).into(),
            });
        }
        for t in &config.auth.tokens {
            match decode_hex32(&t.sha256) {
                Some(hash) => entries.push(TokenEntry { name: t.name.clone(), role: t.role, hash }),
                None => log::error!("Ignoring a named token whose sha256 is not 64 hex digits. name={}", t.name),
            }
        }
        Self { entries }
    }

    /// Auth is on when any token is configured.
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller a presented token authenticates, if any. Every entry is compared, in constant
    /// time, whatever matched earlier.
    fn authenticate(&self, presented: &str) -> Option<Caller> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if constant_time_eq(&hash, &entry.hash) && found.is_none() {
                found = Some(Caller { name: entry.name.clone(), role: entry.role });
            }
        }
        found
    }
}

/// 64 hex digits as 32 bytes.
fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |b: u8| char::from(b).to_digit(16);
        let (hi, lo) = (digit(pair[0])?, digit(pair[1])?);
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Token buckets of failed authentications, one per client address: `rate` failures per second
/// refill, `rate` at most in the bucket. An empty bucket means 429 until a token refills.
#[derive(Debug, Default)]
struct FailureLimiter {
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refilled(self, rate: f64, now: Instant) -> Self {
        let gained = now.saturating_duration_since(self.updated).as_secs_f64() * rate;
        Self { tokens: (self.tokens + gained).min(rate), updated: now }
    }
}

impl FailureLimiter {
    /// How long `ip` must wait before it may try again; `None` when it may try now.
    fn blocked_for(&mut self, ip: IpAddr, rate: u32, now: Instant) -> Option<Duration> {
        let rate = f64::from(rate.max(1));
        let bucket = self.buckets.get_mut(&ip)?;
        *bucket = bucket.refilled(rate, now);
        (bucket.tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
    }

    /// Counts one failure of `ip`.
    fn record_failure(&mut self, ip: IpAddr, rate: u32, now: Instant) {
        let rate_f = f64::from(rate.max(1));
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_TRACKED_CLIENTS {
            self.evict(rate_f, now);
        }
        let bucket = self.buckets.entry(ip).or_insert(Bucket { tokens: rate_f, updated: now });
        *bucket = bucket.refilled(rate_f, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    /// Forgets full buckets (the same as none); if none is full, the stalest one.
    fn evict(&mut self, rate: f64, now: Instant) {
        self.buckets.retain(|_, b| b.refilled(rate, now).tokens < rate);
        if self.buckets.len() >= MAX_TRACKED_CLIENTS {
            if let Some(stalest) = self.buckets.iter().min_by_key(|(_, b)| b.updated).map(|(ip, _)| *ip) {
                self.buckets.remove(&stalest);
            }
        }
    }
}

/// A rule of the access table: method (`None` = any) and path pattern (`{}` = one segment).
struct Rule {
    method: Option<Method>,
    pattern: &'static str,
    role: AccessRole,
}

const fn rule(method: Option<Method>, pattern: &'static str, role: AccessRole) -> Rule {
    Rule { method, pattern, role }
}

/// Method + route → the role it needs. Routes not listed: reads (GET, HEAD, OPTIONS) need
/// viewer, anything else admin (a new write route is admin-only until listed).
const RULES: &[Rule] = &[
    rule(Some(Method::POST), "/api/v1/jobs", AccessRole::Admin),
    rule(Some(Method::PUT), "/api/v1/jobs/{}", AccessRole::Admin),
    rule(Some(Method::DELETE), "/api/v1/jobs/{}", AccessRole::Admin),
    rule(Some(Method::POST), "/api/v1/jobs/{}/enable", AccessRole::Operator),
    rule(Some(Method::POST), "/api/v1/jobs/{}/disable", AccessRole::Operator),
    rule(Some(Method::POST), "/api/v1/jobs/{}/run", AccessRole::Operator),
    rule(Some(Method::POST), "/api/v1/jobs/{}/backfill", AccessRole::Operator),
    rule(Some(Method::POST), "/api/v1/jobs/{}/kill", AccessRole::Operator),
    rule(Some(Method::POST), "/api/v1/runs/{}/kill", AccessRole::Operator),
    // Jobs as code: a plan reads and changes nothing, but shows every job definition.
    rule(Some(Method::POST), "/api/v1/jobs:plan", AccessRole::Operator),
    rule(Some(Method::POST), "/api/v1/alert-channels/{}/test", AccessRole::Operator),
    // The seed's write routes, whatever the method.
    rule(None, "/job/save", AccessRole::Admin),
    rule(None, "/job/delete", AccessRole::Admin),
    rule(None, "/job/kill", AccessRole::Operator),
];

/// The role `method path` needs.
pub(crate) fn required_role(method: &Method, path: &str) -> AccessRole {
    let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    let listed =
        RULES.iter().find(|r| r.method.as_ref().is_none_or(|m| m == method) && pattern_matches(r.pattern, path));
    match listed {
        Some(r) => r.role,
        None if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) => AccessRole::Viewer,
        None => AccessRole::Admin,
    }
}

/// Whether `path` matches `pattern` segment by segment (`{}` matches any one non-empty segment).
fn pattern_matches(pattern: &str, path: &str) -> bool {
    let mut pat = pattern.split('/');
    let mut segs = path.split('/');
    loop {
        match (pat.next(), segs.next()) {
            (None, None) => return true,
            (Some("{}"), Some(seg)) if !seg.is_empty() => {}
            (Some(p), Some(seg)) if p == seg => {}
            _ => return false,
        }
    }
}

/// The middleware: passes public paths; authenticates the bearer token (401 when missing or
/// wrong, 429 after too many failures from one address) and checks its role (403).
pub(crate) async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<Data<AppState>>().cloned() else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    let tokens = state.auth.tokens(&state.config);
    // README "Metrics": /metrics takes the API's auth unless metrics.public.
    let public_metrics = state.config.metrics.public && req.path() == "/metrics";
    if tokens.is_empty() || is_public(req.path()) || public_metrics {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    }
    let rate = state.config.auth.failed_per_sec;
    let ip = req.peer_addr().map(|a| a.ip());
    if let Some(ip) = ip {
        if let Some(wait) = state.auth.limiter().blocked_for(ip, rate, Instant::now()) {
            log::debug!("Authentication refused: too many failures. client={ip} path={}", req.path());
            let res = too_many(req.path(), wait);
            return Ok(req.into_response(res).map_into_boxed_body());
        }
    }
    let presented = bearer(req.headers());
    let caller = presented.and_then(|p| tokens.authenticate(p));
    let Some(caller) = caller else {
        let reason = if presented.is_some() { "invalid token" } else { "missing token" };
        let client = ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        // The presented value is never logged.
        log::warn!("Authentication failed. client={client} path={} reason={reason}", req.path());
        if let Some(ip) = ip {
            state.auth.limiter().record_failure(ip, rate, Instant::now());
        }
        let res = unauthorized(req.path(), presented.is_some());
        return Ok(req.into_response(res).map_into_boxed_body());
    };
    let needed = required_role(req.method(), req.path());
    if !caller.may(needed) {
        log::info!(
            "Request refused: role too low. actor={} role={} needed={} method={} path={}",
            caller.name,
            caller.role.as_str(),
            needed.as_str(),
            req.method(),
            req.path()
        );
        let res = forbidden(req.path(), &caller, needed);
        return Ok(req.into_response(res).map_into_boxed_body());
    }
    req.extensions_mut().insert(caller);
    next.call(req).await.map(ServiceResponse::map_into_boxed_body)
}

fn unauthorized(path: &str, presented: bool) -> HttpResponse {
    if legacy::is_legacy_path(path) {
        return legacy::unauthorized();
    }
    let message =
        if presented { "invalid bearer token" } else { "missing bearer token: send Authorization: Bearer <token>" };
    ApiError::new(ErrorCode::Unauthorized, message).error_response()
}

fn forbidden(path: &str, caller: &Caller, needed: AccessRole) -> HttpResponse {
    let message =
        format!("this needs role {}; token {} has role {}", needed.as_str(), caller.name, caller.role.as_str());
    if legacy::is_legacy_path(path) {
        return legacy::refused(actix_web::http::StatusCode::FORBIDDEN, &message);
    }
    ApiError::new(ErrorCode::Forbidden, message).error_response()
}

fn too_many(path: &str, wait: Duration) -> HttpResponse {
    let secs = wait.as_secs_f64().ceil().max(1.0);
    let message = format!("too many failed authentications from this address; retry in {secs} s");
    let mut res = if legacy::is_legacy_path(path) {
        legacy::refused(actix_web::http::StatusCode::TOO_MANY_REQUESTS, &message)
    } else {
        ApiError::new(ErrorCode::TooManyRequests, message).error_response()
    };
    if let Ok(value) = header::HeaderValue::from_str(&format!("{secs}")) {
        res.headers_mut().insert(header::RETRY_AFTER, value);
    }
    res
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

/// `GET /api/v1/whoami` → `{"name","role"}`: who the presented token is (`anonymous`/admin
/// when auth is off).
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    tag = "auth",
    operation_id = "whoami",
    responses((status = 200, description = "The presented token's name and role", body = Caller))
)]
pub(crate) async fn whoami(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(caller)
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
    use crate::config::NamedToken;

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

    fn sha(token: &str) -> String {
        Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn tokens_authenticate_by_hash_with_their_name_and_role() {
        let mut config = Config { api_token: "root-token".into(), ..Config::default() };
        config.auth.tokens = vec![
            NamedToken { name: "vera".into(), role: AccessRole::Viewer, sha256: sha("v-token") },
            NamedToken { name: "otto".into(), role: AccessRole::Operator, sha256: sha("o-token").to_uppercase() },
        ];
        let table = TokenTable::from_config(&config);
        assert_eq!(table.authenticate("root-token"), Some(Caller { name: "admin".into(), role: AccessRole::Admin }));
        assert_eq!(table.authenticate("v-token"), Some(Caller { name: "vera".into(), role: AccessRole::Viewer }));
        assert_eq!(table.authenticate("o-token").map(|c| c.role), Some(AccessRole::Operator));
        assert_eq!(table.authenticate(&sha("v-token")), None, "the hash itself is not a token");
        assert_eq!(table.authenticate(""), None);
        assert!(TokenTable::from_config(&Config::default()).is_empty());
    }

    #[test]
    fn the_access_table_maps_every_write_route_to_its_role() {
        use AccessRole::{Admin, Operator, Viewer};
        let cases = [
            (Method::GET, "/api/v1/jobs", Viewer),
            (Method::POST, "/api/v1/jobs", Admin),
            (Method::POST, "/api/v1/jobs/", Admin),
            (Method::GET, "/api/v1/jobs/a", Viewer),
            (Method::PUT, "/api/v1/jobs/a", Admin),
            (Method::DELETE, "/api/v1/jobs/a", Admin),
            (Method::POST, "/api/v1/jobs/a/enable", Operator),
            (Method::POST, "/api/v1/jobs/a/disable", Operator),
            (Method::POST, "/api/v1/jobs/a/run", Operator),
            (Method::POST, "/api/v1/jobs/a/backfill", Operator),
            (Method::POST, "/api/v1/jobs/a/kill", Operator),
            (Method::POST, "/api/v1/runs/r1/kill", Operator),
            (Method::GET, "/api/v1/runs/r1", Viewer),
            (Method::GET, "/api/v1/audit", Viewer),
            (Method::GET, "/api/v1/whoami", Viewer),
            (Method::GET, "/job/save", Admin),
            (Method::POST, "/job/save", Admin),
            (Method::POST, "/job/delete", Admin),
            (Method::POST, "/job/kill", Operator),
            (Method::GET, "/job/list", Viewer),
            (Method::POST, "/job/log", Admin),
            (Method::PATCH, "/api/v1/jobs/a", Admin),
            (Method::POST, "/api/v1/something-new", Admin),
            (Method::POST, "/api/v1/jobs/a/b/run", Admin),
        ];
        for (method, path, role) in cases {
            assert_eq!(required_role(&method, path), role, "{method} {path}");
        }
    }

    #[test]
    fn failures_past_the_rate_are_blocked_until_the_bucket_refills() {
        let mut limiter = FailureLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(limiter.blocked_for(a, 10, t0), None);
            limiter.record_failure(a, 10, t0);
        }
        let wait = limiter.blocked_for(a, 10, t0).expect("blocked after 10 failures");
        assert!(wait <= Duration::from_millis(100));
        assert_eq!(limiter.blocked_for(b, 10, t0), None, "another address is not blocked");
        assert_eq!(limiter.blocked_for(a, 10, t0 + Duration::from_millis(150)), None, "refilled");
    }

    #[test]
    fn the_limiter_remembers_a_bounded_number_of_addresses() {
        let mut limiter = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_CLIENTS as u32 + 100) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            for _ in 0..10 {
                limiter.record_failure(ip, 10, t0);
            }
        }
        assert!(limiter.buckets.len() <= MAX_TRACKED_CLIENTS);
    }

    #[test]
    fn hex_decodes_only_64_digits() {
        assert_eq!(decode_hex32(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(decode_hex32("ab"), None);
        assert_eq!(decode_hex32(&"zz".repeat(32)), None);
    }
}
