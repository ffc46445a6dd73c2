//! HTTP front end (actix-web): the JSON API under `/api/v1`, the seed's legacy routes and the
//! embedded admin page (README "API" is the contract).
//!
//! This module owns the application state, the route table, the extractor configuration (body
//! limit, error shapes), request logging and the listener. Handlers are thin: extract, validate,
//! one port call, respond. They write to the backends only; the actors learn every change through
//! the job store's watch. The only actor traffic is reading status for the readiness probe.

mod alerts;
mod assets;
mod audit;
mod auth;
mod charts;
mod cron;
mod error;
mod guard;
mod headers;
mod health;
mod jobs;
mod legacy;
mod metrics;
mod openapi;
mod output;
mod routes;
mod runs;
#[cfg(test)]
mod tests;
pub mod tls;
mod workers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::web::{self, Data};
use actix_web::{App, HttpResponse, HttpServer, ResponseError};
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::error::StartupError;
pub use auth::AuthState;
use error::{ApiError, ErrorCode};
pub use output::Followers;

/// Everything a handler may use. Built once by `lib.rs` and shared by every HTTP worker.
pub struct AppState {
    /// The four ports.
    pub backends: crate::backend::Backends,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Status queries to this node's actors; `None` on role master (no actors run there).
    pub node: Option<NodeHandles>,
    /// This node's id (health, logs).
    pub node_id: crate::domain::WorkerId,
    /// When the process started (health uptime).
    pub started_at: DateTime<Utc>,
    /// Token table and failed-authentication limits (`AuthState::default()`).
    pub auth: AuthState,
    /// The essential actors of this process (readiness is 503 when one is not running).
    pub essentials: crate::actors::essential::Essentials,
    /// The configured alert channels (test sends, the channel list).
    pub alert_channels: Arc<crate::alerting::Channels>,
    /// This process's Prometheus metrics (`GET /metrics`, request counts).
    pub metrics: crate::metrics::Metrics,
    /// Live output of this node's runs (empty on role master).
    pub live: crate::actors::live::LiveOutputs,
    /// Clients following run output on this node, and their bound.
    pub output_followers: Followers,
}

/// Read-only status queries to the local actors, for the readiness probe.
pub struct NodeHandles {
    /// SchedulerActor.
    pub scheduler: actix::Recipient<crate::actors::messages::GetSchedulerStatus>,
    /// ExecutorPool.
    pub pool: actix::Recipient<crate::actors::messages::GetPoolStatus>,
    /// LogBatchActor.
    pub log: actix::Recipient<crate::actors::messages::GetLogStatus>,
    /// WatchActor: stored documents that are not valid jobs.
    pub watch: actix::Recipient<crate::actors::messages::GetInvalidJobs>,
}

/// Registers every route, the extractor configuration and the middleware on `cfg`.
pub fn configure(cfg: &mut web::ServiceConfig, state: Data<AppState>) {
    let limit = usize::try_from(state.config.http.max_body_bytes).unwrap_or(usize::MAX);
    cfg.app_data(state)
        .app_data(web::JsonConfig::default().limit(limit).error_handler(error::json_error))
        .app_data(web::QueryConfig::default().error_handler(error::query_error))
        .app_data(web::FormConfig::default().limit(limit).error_handler(error::form_error))
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        .app_data(web::PayloadConfig::new(limit))
        .service(
            // One scope over everything so the middleware also sees unknown routes. Outermost
            // first: logging, response headers and request id, the perimeter, then auth.
            web::scope("")
                .wrap(from_fn(auth::require_token))
                .wrap(from_fn(guard::perimeter))
                .wrap(from_fn(headers::secure_responses))
                .wrap(from_fn(log_request))
                .wrap(from_fn(metrics::count_request))
                .configure(|cfg| routes::register(cfg, &[routes::Family::Metrics], ""))
                .service(api_scope())
                .configure(|cfg| routes::register(cfg, &[routes::Family::Legacy], ""))
                .configure(assets::routes)
                .default_service(web::to(|| async {
                    HttpResponse::NotFound().content_type("text/plain").body("not found\n")
                })),
        );
}

/// Registers only the health routes (role worker: its listener serves probes, nothing else).
pub fn configure_health(cfg: &mut web::ServiceConfig, state: Data<AppState>) {
    cfg.app_data(state).service(
        web::scope("")
            .wrap(from_fn(auth::require_token))
            .wrap(from_fn(guard::perimeter))
            .wrap(from_fn(headers::secure_responses))
            .wrap(from_fn(log_request))
            .wrap(from_fn(metrics::count_request))
            .configure(|cfg| {
                routes::register(cfg, &[routes::Family::Metrics, routes::Family::Health, routes::Family::Output], "")
            })
            .default_service(web::to(|| async {
                ApiError::new(
                    ErrorCode::NotFound,
                    "this node is a worker: its listener serves /api/v1/health, /api/v1/runs/{id}/output and /metrics only",
                )
                .error_response()
            })),
    );
}

/// The `/api/v1` routes (the route table's API and health families, `routes.rs`).
fn api_scope() -> actix_web::Scope {
    web::scope(routes::API_PREFIX)
        .configure(|cfg| {
            routes::register(
                cfg,
                &[routes::Family::Api, routes::Family::Health, routes::Family::Output],
                routes::API_PREFIX,
            )
        })
        .default_service(web::to(|| async {
            ApiError::new(ErrorCode::NotFound, "no such route under /api/v1").error_response()
        }))
}

/// Logs one debug line per request (method, path, status, time; never bodies, query strings or
/// headers). The causes of 5xx errors are logged with the request id by `headers.rs`.
async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let res = next.call(req).await;
    match &res {
        Ok(res) => {
            log::debug!(
                "HTTP request served. method={method} path={path} status={} elapsed_ms={}",
                res.status().as_u16(),
                started.elapsed().as_millis()
            );
        }
        Err(e) => log::debug!("HTTP request failed. method={method} path={path} error={e}"),
    }
    res
}

/// Binds `config.listen` and returns the running server; the caller awaits it and stops it
/// through its handle (actix's own signal handling is off: `lib.rs` handles SIGINT/SIGTERM).
///
/// # Errors
/// [`StartupError::Role`] when the address is not loopback and no token is set (see
/// [`check_listen_auth`]); [`StartupError::Bind`] when the address cannot be bound.
pub fn serve(state: AppState) -> Result<Server, StartupError> {
    let listener = bind(&state.config)?;
    serve_on(state, listener)
}

/// Binds `config.listen` (done before the engine starts, so a taken port stops the start cleanly).
///
/// # Errors
/// [`StartupError::Bind`] naming the address.
pub fn bind(config: &Config) -> Result<std::net::TcpListener, StartupError> {
    std::net::TcpListener::bind(&config.listen)
        .map_err(|source| StartupError::Bind { addr: config.listen.clone(), source })
}

/// Serves the API on an already bound `listener`.
///
/// # Errors
/// [`StartupError::Role`] for an open listener without a token; [`StartupError::Bind`] when the
/// listener cannot be used.
pub fn serve_on(state: AppState, listener: std::net::TcpListener) -> Result<Server, StartupError> {
    serve_routes(state, listener, None, configure)
}

/// [`serve_on`], over HTTPS when `tls` is given ([`tls::load`]).
///
/// # Errors
/// As [`serve_on`].
pub fn serve_tls_on(
    state: AppState,
    listener: std::net::TcpListener,
    tls: Option<tls::TlsConfig>,
) -> Result<Server, StartupError> {
    serve_routes(state, listener, tls, configure)
}

/// Serves only the health routes on an already bound `listener` (role worker).
///
/// # Errors
/// As [`serve_on`].
pub fn serve_health_on(state: AppState, listener: std::net::TcpListener) -> Result<Server, StartupError> {
    serve_routes(state, listener, None, configure_health)
}

/// [`serve_health_on`], over HTTPS when `tls` is given (the worker's health listener).
///
/// # Errors
/// As [`serve_on`].
pub fn serve_health_tls_on(
    state: AppState,
    listener: std::net::TcpListener,
    tls: Option<tls::TlsConfig>,
) -> Result<Server, StartupError> {
    serve_routes(state, listener, tls, configure_health)
}

fn serve_routes(
    state: AppState,
    listener: std::net::TcpListener,
    tls: Option<tls::TlsConfig>,
    routes: fn(&mut web::ServiceConfig, Data<AppState>),
) -> Result<Server, StartupError> {
    // `lib.rs` checks (and warns) before starting the actors; this guards every other caller.
    if let Some(refusal) = open_listen_refusal(&state.config) {
        return Err(StartupError::Role(refusal));
    }
    let addr = state.config.listen.clone();
    let workers = state.config.http.workers;
    let data = Data::new(state);
    let server = HttpServer::new(move || {
        let data = data.clone();
        App::new().configure(move |cfg| routes(cfg, data))
    })
    .disable_signals();
    let server = if workers > 0 { server.workers(workers as usize) } else { server };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls.0),
        None => server.listen(listener),
    }
    .map_err(|source| StartupError::Bind { addr: addr.clone(), source })?;
    log::info!("HTTP front end listening. addr={addr} scheme={scheme}");
    Ok(server.run())
}

/// Refuses `insecure_no_auth` on a non-loopback listen address, before anything is created
/// (ARCHITECTURE.md "HTTP": auth off on loopback only). The token itself is resolved later
/// ([`crate::api_token::resolve`]).
///
/// # Errors
/// [`StartupError::Auth`] saying what to change.
pub fn check_listen_auth(config: &Config) -> Result<(), StartupError> {
    if config.insecure_no_auth && !config.listens_on_loopback() {
        return Err(crate::api_token::insecure_beyond_loopback(&config.listen));
    }
    Ok(())
}

/// Why `config` may not be served: no token while auth is not turned off (on loopback).
fn open_listen_refusal(config: &Config) -> Option<String> {
    let auth_off = config.insecure_no_auth && config.listens_on_loopback();
    (config.api_token.is_empty() && !auth_off).then(|| {
        format!(
            "refusing to serve {} without an API token; resolve one first (api_token, api_token_file or data_dir/api_token)",
            config.listen
        )
    })
}

/// A query parameter, with empty values treated as absent (HTML forms send `job=`).
pub(crate) fn param<'a>(query: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    query.get(key).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// An RFC 3339 time parameter, as UTC.
pub(crate) fn time_param(query: &HashMap<String, String>, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    param(query, key)
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc)).map_err(|e| {
                ApiError::bad_param(key, format!("{key} must be an RFC 3339 time like 2026-11-28T07:00:00Z ({e})"))
            })
        })
        .transpose()
}

/// A whole-number parameter within `range`.
pub(crate) fn number_param<T>(
    query: &HashMap<String, String>,
    key: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<Option<T>, ApiError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = param(query, key) else { return Ok(None) };
    let bad =
        || ApiError::bad_param(key, format!("{key} must be a whole number in {}..={}", range.start(), range.end()));
    let n: T = raw.parse().map_err(|_| bad())?;
    if !range.contains(&n) {
        return Err(bad());
    }
    Ok(Some(n))
}
