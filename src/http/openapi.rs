//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of every route this node registers
//! (README "API: the OpenAPI document").
//!
//! Owns: the document's assembly from the route table's generated paths (`routes::RouteDocs`,
//! each handler's `#[utoipa::path]` over the handlers' own request and response types) plus what
//! is common to every operation: the bearer security scheme (and the public liveness probe's
//! exception), the refusals any route can answer (401, 403, 421, 429, 500, 503; 400, 413, 415
//! where a request carries parameters or a body) with the one error body of `error.rs`, whose
//! `code` lists every [`ErrorCode`]; and serving it, built once, to any authenticated caller.
//! Leaves to others: which routes exist (`routes.rs`), what each answers (the handlers' own
//! annotations), who may read it (`auth.rs`: a GET, so any role).

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder};
use utoipa::OpenApi;

use super::error::{ErrorBody, ErrorCode};
use super::legacy::SeedFailure;
use super::routes::{RouteDocs, API_PREFIX};

/// The name of the security scheme every operation requires.
const BEARER: &str = "bearer";

/// The document's parts that are not paths: info, tags, the error schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "distcron",
        description = "A distributed cron: scheduled shell jobs, run exactly once per tick, every run logged, \
                       searchable and killable. Every route needs `Authorization: Bearer <token>` (any role may \
                       read; the role each write needs is in the README's \"Tokens and roles\"), except \
                       `GET /api/v1/health/live`. Errors of `/api/v1` are `{\"error\":{\"code\",\"message\",\"field\"}}`; \
                       the seed's routes (`/job/*`, `/worker/list`) answer `{\"errno\",\"msg\",\"data\"}`."
    ),
    components(schemas(ErrorBody, SeedFailure)),
    tags(
        (name = "jobs", description = "Job definitions, run now, kill"),
        (name = "runs", description = "Run records: filters, pagination, output, kill"),
        (name = "workers", description = "Live workers"),
        (name = "cron", description = "Cron expression preview"),
        (name = "health", description = "Liveness and readiness probes (also on a worker's health listener)"),
        (name = "auth", description = "The caller's identity"),
        (name = "audit", description = "Who changed which job when"),
        (name = "metrics", description = "Prometheus metrics (also on a worker's health listener)"),
        (name = "alerts", description = "Alert records, per-job alert state, channels and test alerts"),
        (name = "charts", description = "Aggregates behind the admin page's pictures: tick timeline, durations, sparklines, fleet forecast and load"),
        (name = "meta", description = "This document"),
        (name = "legacy", description = "The seed's (cloud-org/crontab) routes, same shapes"),
    )
)]
struct Base;

/// The document, built once.
pub(crate) fn spec() -> &'static Document {
    static SPEC: OnceLock<Document> = OnceLock::new();
    SPEC.get_or_init(build)
}

/// The document as served (JSON), built once.
fn spec_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| serde_json::to_string(spec()).unwrap_or_else(|_| "{}".to_owned()))
}

/// Assembles the document: base, paths, then what every operation shares.
fn build() -> Document {
    let mut doc = Base::openapi();
    doc.paths = RouteDocs::openapi().paths;
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let served = RouteDocs::openapi().components.map(|c| c.schemas).unwrap_or_default();
        components.schemas.extend(served);
    }
    doc.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    list_error_codes(&mut doc);
    // A stored job is read strictly (unknown fields refused), but a served job carries computed
    // fields beside it (`JobView` = allOf Job + next_run_at, ...): the strictness belongs to
    // requests (`JobSpec`), not to the served shape.
    if let Some(RefOr::T(utoipa::openapi::Schema::Object(job))) =
        doc.components.as_mut().and_then(|c| c.schemas.get_mut("Job"))
    {
        job.additional_properties = None;
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let legacy = !path.starts_with(API_PREFIX);
        let public = path == "/api/v1/health/live";
        for (_, op) in operations(item) {
            add_common_responses(op, legacy, public);
            if public {
                op.security = Some(Vec::new());
            }
        }
    }
    unique_operation_ids(&mut doc);
    doc
}

/// Every operation of a path item, with its method's lowercase name.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    let methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
    let ops = [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ];
    methods.into_iter().zip(ops).filter_map(|(method, op)| Some((method, op?)))
}

/// A response with a JSON body of component `schema`.
fn json_response(description: &str, schema: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build())
            .build(),
    )
}

/// Adds, where the handler's own annotation does not say otherwise, the refusals the middleware
/// and the extractors can answer on this operation.
fn add_common_responses(op: &mut Operation, legacy: bool, public: bool) {
    let has_input = op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = op.request_body.is_some();
    let (shape, what) = if legacy { ("SeedFailure", "seed shape, errno -1") } else { ("ErrorBody", "code") };
    let forbidden = "The token's role is too low (`forbidden`; seed shape on the seed's routes), or a state \
                     change from another browser origin (`cross_origin_refused`: the perimeter answers every \
                     route with the code shape)";
    if legacy {
        // The role check answers in the seed's shape, the perimeter (before routing) in ours.
        op.responses.responses.entry("403".to_owned()).or_insert_with(|| {
            let either = utoipa::openapi::schema::OneOfBuilder::new()
                .item(Ref::from_schema_name("SeedFailure"))
                .item(Ref::from_schema_name("ErrorBody"));
            RefOr::T(
                ResponseBuilder::new()
                    .description(forbidden)
                    .content("application/json", ContentBuilder::new().schema(Some(either)).build())
                    .build(),
            )
        });
    }
    let mut add = |status: &str, description: String, schema: &str| {
        op.responses.responses.entry(status.to_owned()).or_insert_with(|| json_response(&description, schema));
    };
    if !public {
        add("401", format!("Token missing or wrong ({what} `unauthorized`); `WWW-Authenticate: Bearer`"), shape);
        add("429", format!("Too many failed authentications from this address ({what}); see `Retry-After`"), shape);
    }
    if !legacy {
        add("403", forbidden.to_owned(), "ErrorBody");
    }
    add("421", "The request's Host is not this node's (`host_not_allowed`)".to_owned(), "ErrorBody");
    if !legacy {
        if has_input {
            add(
                "400",
                "Malformed request: a parameter or the body is invalid (`invalid_request`, with `field`)".to_owned(),
                "ErrorBody",
            );
        }
        if has_body {
            add("413", "Body larger than `http.max_body_bytes` (`payload_too_large`)".to_owned(), "ErrorBody");
            add("415", "Body is not JSON (`unsupported_media_type`)".to_owned(), "ErrorBody");
        }
        add("500", "Internal error (`internal`); the cause is logged under the `request_id`".to_owned(), "ErrorBody");
        add("503", "A store cannot be reached (`backend_unavailable`)".to_owned(), "ErrorBody");
    }
}

/// The error body's `code` lists every code of the table in `error.rs`.
fn list_error_codes(doc: &mut Document) {
    let codes: Vec<serde_json::Value> = ErrorCode::ALL.iter().map(|c| serde_json::Value::from(c.as_str())).collect();
    let Some(RefOr::T(utoipa::openapi::Schema::Object(detail))) =
        doc.components.as_mut().and_then(|c| c.schemas.get_mut("ErrorDetail"))
    else {
        return;
    };
    if let Some(RefOr::T(utoipa::openapi::Schema::Object(code))) = detail.properties.get_mut("code") {
        code.enum_values = Some(codes);
    }
}

/// One handler documented under several methods (the seed's any-method routes) shares its
/// operation id; OpenAPI wants them unique, so the method is appended to the repeats.
fn unique_operation_ids(doc: &mut Document) {
    let mut seen = std::collections::HashSet::new();
    for item in doc.paths.paths.values_mut() {
        for (method, op) in operations(item) {
            let Some(id) = op.operation_id.clone() else { continue };
            if !seen.insert(id.clone()) {
                let renamed = format!("{id}_{method}");
                seen.insert(renamed.clone());
                op.operation_id = Some(renamed);
            }
        }
    }
}

/// `GET /api/v1/openapi.json`: this document. Not secret, but served like the API it describes:
/// any valid token (any role) may read it.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    operation_id = "openapi_document",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object, content_type = "application/json"))
)]
pub(crate) async fn document() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(spec_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::routes::ROUTES;

    /// The operation of `method` on `item`, if documented.
    fn operation<'a>(item: &'a PathItem, method: &actix_web::http::Method) -> Option<&'a Operation> {
        match method.as_str() {
            "GET" => item.get.as_ref(),
            "POST" => item.post.as_ref(),
            "PUT" => item.put.as_ref(),
            "DELETE" => item.delete.as_ref(),
            _ => None,
        }
    }

    #[test]
    fn every_registered_route_is_in_the_document() {
        let doc = spec();
        let mut missing = Vec::new();
        for route in ROUTES {
            for method in route.method.http_methods() {
                let found = doc.paths.paths.get(route.path).and_then(|item| operation(item, method));
                if found.is_none() {
                    missing.push(format!("{method} {}", route.path));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "routes registered in src/http/routes.rs but missing from /api/v1/openapi.json: {}\n\
             (their handler's #[utoipa::path] must name the same method and path)",
            missing.join(", ")
        );
    }

    #[test]
    fn every_documented_operation_is_a_registered_route() {
        let doc = spec();
        let mut extra = Vec::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [("GET", &item.get), ("POST", &item.post), ("PUT", &item.put), ("DELETE", &item.delete)]
            {
                if op.is_none() {
                    continue;
                }
                let registered = ROUTES
                    .iter()
                    .any(|r| r.path == path && r.method.http_methods().iter().any(|m| m.as_str() == method));
                if !registered {
                    extra.push(format!("{method} {path}"));
                }
            }
            for (name, op) in [("PATCH", &item.patch), ("HEAD", &item.head), ("OPTIONS", &item.options)] {
                assert!(op.is_none(), "{name} {path} is documented but never registered");
            }
        }
        assert!(extra.is_empty(), "documented but not registered (wrong path or method?): {}", extra.join(", "));
    }

    #[test]
    fn every_operation_requires_the_bearer_token_but_liveness() {
        let doc = serde_json::to_value(spec()).expect("serializes");
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["components"]["securitySchemes"][BEARER]["scheme"], "bearer");
        assert_eq!(doc["security"][0][BEARER], serde_json::json!([]));
        assert_eq!(doc["paths"]["/api/v1/health/live"]["get"]["security"], serde_json::json!([]));
        assert!(doc["paths"]["/api/v1/jobs"]["get"].get("security").is_none(), "the global requirement applies");
        assert_eq!(
            doc["paths"]["/api/v1/jobs"]["post"]["responses"]["401"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }

    #[test]
    fn the_error_code_enum_is_the_error_table() {
        let doc = serde_json::to_value(spec()).expect("serializes");
        let codes = &doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"];
        let listed: Vec<&str> = codes.as_array().expect("an enum").iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(listed.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert!(listed.contains(&code.as_str()), "{code}");
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = serde_json::to_value(spec()).expect("serializes");
        let mut ids = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                let id = op["operationId"].as_str().unwrap_or_default().to_owned();
                assert!(!id.is_empty() && ids.insert(id.clone()), "{method} {path}: operationId {id:?}");
            }
        }
    }
}
