//! The route table: every route the HTTP front end registers, with its handler, in one list that
//! both registers the routes and generates their OpenAPI paths (README "API: the OpenAPI
//! document").
//!
//! Owns: [`ROUTES`] (method, path, family, handler), their registration as actix resources (one
//! resource per path; other methods answer 405 with an `Allow` header, in the API's error shape
//! or, on the seed's routes, in the seed's), and [`RouteDocs`], the OpenAPI paths of the same
//! list, taken from each handler's `#[utoipa::path]`.
//! Leaves to others: the handlers, the middleware and the fallback routes (`mod.rs`), the static
//! files of the admin page (`assets.rs`, not part of the API), the assembly and serving of the
//! document (`openapi.rs`).
//!
//! Adding a route is one line in the `route_table!` below and a `#[utoipa::path]` on its
//! handler (a handler without one does not compile); `openapi::tests` fail naming any route
//! whose documented method or path is not the registered one.

use actix_web::http::{header, Method};
use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpResponse, ResponseError};

use super::error::{ApiError, ErrorCode};
use super::{alerts, audit, auth, charts, cron, health, jobs, legacy, metrics, openapi, output, runs, workers};

/// Which listener serves a route and in which shape its 405 is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `/api/v1`, on the API listener (role all and master).
    Api,
    /// The health probes: on the API listener and on a worker's health listener.
    Health,
    /// The seed's routes (`{"errno","msg","data"}`), on the API listener.
    Legacy,
    /// Prometheus `/metrics`: on the API listener and on a worker's health listener.
    Metrics,
    /// A run's live output under `/api/v1`: on the API listener and on a worker's listener
    /// (the master proxies to it).
    Output,
}

/// The method a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteMethod {
    /// GET (and HEAD, as actix answers it).
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
    /// Any method (the seed's read routes, as its Go handlers); documented as GET and POST.
    Any,
}

impl RouteMethod {
    /// The actix route guard for this method.
    fn route(self) -> actix_web::Route {
        match self {
            Self::Get => web::get(),
            Self::Post => web::post(),
            Self::Put => web::put(),
            Self::Delete => web::delete(),
            Self::Any => web::route(),
        }
    }

    /// The HTTP methods the route is documented (and must be found) under in the document.
    pub(crate) fn http_methods(self) -> &'static [Method] {
        match self {
            Self::Get => &[Method::GET],
            Self::Post => &[Method::POST],
            Self::Put => &[Method::PUT],
            Self::Delete => &[Method::DELETE],
            Self::Any => &[Method::GET, Method::POST],
        }
    }
}

/// One registered route.
pub(crate) struct Route {
    /// Which listener, which 405 shape.
    pub(crate) family: Family,
    /// The method it answers.
    pub(crate) method: RouteMethod,
    /// The full path pattern, in OpenAPI's `{param}` form (also actix's).
    pub(crate) path: &'static str,
    /// Builds the actix route (method guard + handler).
    handler: fn() -> actix_web::Route,
}

/// Declares [`ROUTES`] and [`RouteDocs`] from one list, so a route cannot be registered without
/// its handler's OpenAPI operation being in the document.
macro_rules! route_table {
    ($( $family:ident $method:ident $path:literal => $($handler:ident)::+ ; )*) => {
        /// Every route of the API listener and the health listener, in registration order.
        pub(crate) const ROUTES: &[Route] = &[$(
            Route {
                family: Family::$family,
                method: RouteMethod::$method,
                path: $path,
                handler: || RouteMethod::$method.route().to($($handler)::+),
            },
        )*];

        /// The OpenAPI paths of [`ROUTES`], generated from each handler's `#[utoipa::path]`.
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($($handler)::+),*))]
        pub(crate) struct RouteDocs;
    };
}

route_table! {
    Metrics Get   "/metrics"                    => metrics::scrape;
    Api    Get    "/api/v1/jobs"                => jobs::list;
    Api    Post   "/api/v1/jobs"                => jobs::create;
    Api    Post   "/api/v1/jobs:plan"           => jobs::plan;
    Api    Get    "/api/v1/jobs/{name}"         => jobs::get;
    Api    Put    "/api/v1/jobs/{name}"         => jobs::replace;
    Api    Delete "/api/v1/jobs/{name}"         => jobs::remove;
    Api    Post   "/api/v1/jobs/{name}/enable"  => jobs::enable;
    Api    Post   "/api/v1/jobs/{name}/disable" => jobs::disable;
    Api    Post   "/api/v1/jobs/{name}/run"     => jobs::run_now;
    Api    Post   "/api/v1/jobs/{name}/backfill" => jobs::backfill;
    Api    Post   "/api/v1/jobs/{name}/kill"    => jobs::kill;
    Api    Get    "/api/v1/jobs/{name}/stats"   => runs::stats;
    Api    Get    "/api/v1/runs"                => runs::list;
    Api    Get    "/api/v1/runs/{id}"           => runs::get;
    Api    Post   "/api/v1/runs/{id}/kill"      => runs::kill;
    Output Get    "/api/v1/runs/{id}/output"    => output::output;
    Api    Get    "/api/v1/workers"             => workers::list;
    Api    Get    "/api/v1/cron/preview"        => cron::preview;
    Health Get    "/api/v1/health"              => health::summary;
    Health Get    "/api/v1/health/ready"        => health::ready;
    Health Get    "/api/v1/health/live"         => health::live;
    Api    Get    "/api/v1/whoami"              => auth::whoami;
    Api    Get    "/api/v1/audit"               => audit::list;
    Api    Get    "/api/v1/alerts"              => alerts::list;
    Api    Get    "/api/v1/alert-channels"      => alerts::channels;
    Api    Post   "/api/v1/alert-channels/{name}/test" => alerts::test;
    Api    Get    "/api/v1/jobs/{name}/alerts"  => alerts::job_alerts;
    Api    Get    "/api/v1/openapi.json"        => openapi::document;
    Api    Get    "/api/v1/jobs/{name}/timeline" => charts::timeline;
    Api    Get    "/api/v1/jobs/{name}/durations" => charts::durations;
    Api    Get    "/api/v1/sparklines"          => charts::sparklines;
    Api    Get    "/api/v1/fleet/forecast"      => charts::fleet_forecast;
    Api    Get    "/api/v1/fleet/load"          => charts::fleet_load;
    Legacy Post   "/job/save"                   => legacy::save;
    Legacy Post   "/job/delete"                 => legacy::delete;
    Legacy Post   "/job/kill"                   => legacy::kill;
    Legacy Any    "/job/list"                   => legacy::list;
    Legacy Any    "/job/log"                    => legacy::log;
    Legacy Any    "/worker/list"                => legacy::workers;
}

/// The prefix of the JSON API (its routes are registered in one scope with its own 404).
pub(crate) const API_PREFIX: &str = "/api/v1";

/// Registers the routes of `families` on `cfg`, one resource per path, at `path` minus `strip`
/// (the scope's prefix they are registered under).
pub(crate) fn register(cfg: &mut ServiceConfig, families: &[Family], strip: &str) {
    let mut seen: Vec<&str> = Vec::new();
    for route in ROUTES.iter().filter(|r| families.contains(&r.family)) {
        if seen.contains(&route.path) {
            continue;
        }
        seen.push(route.path);
        let same_path: Vec<&Route> =
            ROUTES.iter().filter(|r| r.path == route.path && families.contains(&r.family)).collect();
        let local = route.path.strip_prefix(strip).unwrap_or(route.path);
        let mut resource = if same_path.iter().any(|r| r.method == RouteMethod::Any) {
            web::resource(local)
        } else {
            let allow = allow_header(&same_path);
            match route.family {
                Family::Legacy => web::resource(local).default_service(web::to(legacy::method_not_allowed)),
                Family::Api | Family::Health | Family::Metrics | Family::Output => web::resource(local)
                    .default_service(web::to(move || {
                        let allow = allow.clone();
                        async move { method_not_allowed(&allow) }
                    })),
            }
        };
        for r in same_path {
            resource = resource.route((r.handler)());
        }
        cfg.service(resource);
    }
}

/// The `Allow` header of a path: its routes' methods.
fn allow_header(routes: &[&Route]) -> String {
    let methods: Vec<&str> = routes.iter().flat_map(|r| r.method.http_methods()).map(Method::as_str).collect();
    methods.join(", ")
}

/// 405 in the API error shape with an `Allow` header.
fn method_not_allowed(allow: &str) -> HttpResponse {
    let mut res =
        ApiError::new(ErrorCode::MethodNotAllowed, format!("method not allowed; allowed: {allow}")).error_response();
    if let Ok(value) = header::HeaderValue::from_str(allow) {
        res.headers_mut().insert(header::ALLOW, value);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_unique_per_method_and_api_routes_are_under_the_prefix() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(!(a.path == b.path && a.method == b.method), "{:?} {} is registered twice", a.method, a.path);
                if a.path == b.path {
                    assert_eq!(a.family, b.family, "one path, one family: {}", a.path);
                }
            }
            match a.family {
                Family::Api | Family::Health | Family::Output => {
                    assert!(a.path.starts_with(API_PREFIX), "{}", a.path)
                }
                Family::Legacy => assert!(legacy::is_legacy_path(a.path), "{}", a.path),
                Family::Metrics => assert_eq!(a.path, "/metrics"),
            }
        }
    }

    #[test]
    fn the_allow_header_lists_every_method_of_a_path() {
        let jobs: Vec<&Route> = ROUTES.iter().filter(|r| r.path == "/api/v1/jobs/{name}").collect();
        assert_eq!(allow_header(&jobs), "GET, PUT, DELETE");
    }
}
