//! API errors: the one place an error becomes an HTTP response (README "API").
//!
//! [`ErrorCode`] is the table code -> status; [`ApiError`] carries a code, a message for the
//! client and optionally the offending field and (for 5xx) the cause, which is logged with the
//! request path by the request-logging middleware and never sent to the client. The extractor
//! error handlers (JSON, query, form, path) also live here so malformed requests get the same
//! `{"error":{"code","message","field"}}` body as everything else.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError, UrlencodedError};
use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

use crate::backend::BackendError;
use crate::domain::JobValidationError;

/// Every error code of `/api/v1` and its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    /// 400: malformed JSON, wrong types, unknown fields, bad query parameters.
    InvalidRequest,
    /// 400: a job field fails validation.
    InvalidJob,
    /// 400: cron expression invalid.
    InvalidCronExpr,
    /// 401: token missing or wrong.
    Unauthorized,
    /// 403: a state change from another browser origin.
    CrossOriginRefused,
    /// 421: the `Host` header is not a name of this server (DNS rebinding).
    HostNotAllowed,
    /// 403: the token's role may not do this.
    Forbidden,
    /// 429: too many failed authentications from this address.
    TooManyRequests,
    /// 404: no such job.
    JobNotFound,
    /// 404: no such run.
    RunNotFound,
    /// 404: unknown route.
    NotFound,
    /// 404: no alert channel of that name is configured.
    AlertChannelNotFound,
    /// 405: route exists, method does not.
    MethodNotAllowed,
    /// 409: create of an existing job.
    JobExists,
    /// 409: stale version.
    VersionConflict,
    /// 409: kill of a run that already ended.
    RunNotRunning,
    /// 409: the stored document of this job is not a valid job.
    StoredJobInvalid,
    /// 413: body too large.
    PayloadTooLarge,
    /// 415: body not JSON.
    UnsupportedMediaType,
    /// 503: a store cannot be reached.
    BackendUnavailable,
    /// 500: anything else; the cause is logged, not sent.
    Internal,
    /// 502: the worker running a followed run cannot be reached (live output through the master).
    WorkerUnreachable,
}

impl ErrorCode {
    /// Every code (the OpenAPI document lists them).
    pub(crate) const ALL: [ErrorCode; 22] = [
        Self::InvalidRequest,
        Self::InvalidJob,
        Self::InvalidCronExpr,
        Self::Unauthorized,
        Self::CrossOriginRefused,
        Self::HostNotAllowed,
        Self::Forbidden,
        Self::TooManyRequests,
        Self::JobNotFound,
        Self::RunNotFound,
        Self::NotFound,
        Self::AlertChannelNotFound,
        Self::MethodNotAllowed,
        Self::JobExists,
        Self::VersionConflict,
        Self::RunNotRunning,
        Self::StoredJobInvalid,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::BackendUnavailable,
        Self::Internal,
        Self::WorkerUnreachable,
    ];

    /// The code's wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidJob => "invalid_job",
            Self::InvalidCronExpr => "invalid_cron_expr",
            Self::Unauthorized => "unauthorized",
            Self::CrossOriginRefused => "cross_origin_refused",
            Self::HostNotAllowed => "host_not_allowed",
            Self::Forbidden => "forbidden",
            Self::TooManyRequests => "too_many_requests",
            Self::JobNotFound => "job_not_found",
            Self::RunNotFound => "run_not_found",
            Self::NotFound => "not_found",
            Self::AlertChannelNotFound => "alert_channel_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::JobExists => "job_exists",
            Self::StoredJobInvalid => "stored_job_invalid",
            Self::VersionConflict => "version_conflict",
            Self::RunNotRunning => "run_not_running",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BackendUnavailable => "backend_unavailable",
            Self::Internal => "internal",
            Self::WorkerUnreachable => "worker_unreachable",
        }
    }

    /// The HTTP status the code is answered with.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest | Self::InvalidJob | Self::InvalidCronExpr => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::CrossOriginRefused => StatusCode::FORBIDDEN,
            Self::HostNotAllowed => StatusCode::MISDIRECTED_REQUEST,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::JobNotFound | Self::RunNotFound | Self::NotFound | Self::AlertChannelNotFound => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::JobExists | Self::VersionConflict | Self::RunNotRunning | Self::StoredJobInvalid => {
                StatusCode::CONFLICT
            }
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BackendUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::WorkerUnreachable => StatusCode::BAD_GATEWAY,
        }
    }

    /// What a client reads for a 5xx code: a fixed sentence, never backend text.
    pub(crate) fn public_message(self) -> &'static str {
        match self {
            Self::BackendUnavailable => "a store cannot be reached; try again later (the cause is logged)",
            Self::WorkerUnreachable => {
                "the worker running this run cannot be reached for its live output; try again, or read the run once it ends (the cause is logged)"
            }
            _ => "internal error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered to an `/api/v1` client.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub(crate) struct ApiError {
    /// Code (and so status).
    pub(crate) code: ErrorCode,
    /// Text for the client.
    pub(crate) message: String,
    /// Offending field or parameter, when known.
    pub(crate) field: Option<String>,
    /// Cause of an internal error: logged with the request path, never sent.
    #[source]
    pub(crate) cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// The request's id, sent with 5xx errors (its cause is logged under it).
    pub(crate) request_id: Option<String>,
}

impl ApiError {
    /// An error without field.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), field: None, cause: None, request_id: None }
    }

    /// An error naming the offending field.
    pub(crate) fn with_field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), field: Some(field.into()), cause: None, request_id: None }
    }

    /// 400 invalid_request naming a parameter.
    pub(crate) fn bad_param(field: &str, message: impl Into<String>) -> Self {
        Self::with_field(ErrorCode::InvalidRequest, field, message)
    }

    /// 500 internal: `cause` is logged, the client reads "internal error".
    pub(crate) fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            code: ErrorCode::Internal,
            message: ErrorCode::Internal.public_message().into(),
            field: None,
            cause: Some(cause.into()),
            request_id: None,
        }
    }

    /// This error answered with the request's id (5xx bodies).
    pub(crate) fn with_request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_owned());
        self
    }

    /// The cause chain for the log, or the message when there is no cause.
    pub(crate) fn cause_chain_or_message(&self) -> String {
        match self.cause {
            Some(_) => self.cause_chain(),
            None => self.message.clone(),
        }
    }

    /// 404 job_not_found.
    pub(crate) fn job_not_found(name: &str) -> Self {
        Self::new(ErrorCode::JobNotFound, format!("job {name} not found"))
    }

    /// The cause chain of an internal error, for the log (never for the client).
    pub(crate) fn cause_chain(&self) -> String {
        let mut out = String::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> =
            self.cause.as_deref().map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(e) = next {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&e.to_string());
            next = e.source();
        }
        out
    }
}

/// The body of every `/api/v1` error: `{"error":{"code","message","field"?,"request_id"?}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody<'a> {
    /// The error.
    error: ErrorDetail<'a>,
}

/// What went wrong.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail<'a> {
    /// Machine-readable code; it fixes the HTTP status.
    code: &'static str,
    /// What is wrong, for a person.
    message: &'a str,
    /// The offending field or parameter, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    /// The request's id (5xx): its cause is logged under it.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if self.code == ErrorCode::Unauthorized {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        res.json(ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str(),
                message: &self.message,
                field: self.field.as_deref(),
                request_id: self.request_id.as_deref(),
            },
        })
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match &e {
            BackendError::JobNotFound { name } => Self::job_not_found(name.as_str()),
            BackendError::JobExists { name } => Self::new(ErrorCode::JobExists, format!("job {name} already exists")),
            BackendError::VersionConflict { name, expected, found } => Self::with_field(
                ErrorCode::VersionConflict,
                "version",
                format!("job {name} is at version {found}, not {expected}; read it again and retry"),
            ),
            // Our own validation of the stored document, not a backend's text.
            BackendError::InvalidStoredJob { name, reason } => Self::new(
                ErrorCode::StoredJobInvalid,
                format!(
                    "the stored document of job {name} is not a valid job ({reason}); it is not planned: replace it with PUT without a version, or DELETE it"
                ),
            ),
            // README "Security: responses": the backend's own text is logged, never sent.
            _ if e.is_transient() => Self {
                code: ErrorCode::BackendUnavailable,
                message: ErrorCode::BackendUnavailable.public_message().into(),
                field: None,
                cause: Some(Box::new(e)),
                request_id: None,
            },
            _ => Self::internal(e),
        }
    }
}

impl From<JobValidationError> for ApiError {
    fn from(e: JobValidationError) -> Self {
        let code = if e.field == "cron_expr" { ErrorCode::InvalidCronExpr } else { ErrorCode::InvalidJob };
        Self::with_field(code, e.field, e.message)
    }
}

/// serde's "unknown field `x`" / "missing field `x`" / "duplicate field `x`" name the field.
pub(crate) fn field_from_serde_message(msg: &str) -> Option<String> {
    for prefix in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(rest) = msg.find(prefix).map(|i| &msg[i + prefix.len()..]) {
            if let Some(end) = rest.find('`') {
                return Some(rest[..end].to_owned());
            }
        }
    }
    None
}

/// `JsonConfig` error handler: 413 / 415 / 400 in the API shape.
pub(crate) fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::Overflow { limit } | JsonPayloadError::OverflowKnownLength { limit, .. } => {
            ApiError::new(ErrorCode::PayloadTooLarge, format!("request body is larger than the limit of {limit} bytes"))
        }
        JsonPayloadError::ContentType => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "request body must be JSON with Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(e) => {
            let msg = e.to_string();
            let message = format!("invalid JSON body: {msg}");
            match field_from_serde_message(&msg) {
                Some(field) => ApiError::with_field(ErrorCode::InvalidRequest, field, message),
                None => ApiError::new(ErrorCode::InvalidRequest, message),
            }
        }
        JsonPayloadError::Payload(actix_web::error::PayloadError::Overflow) => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body is larger than the limit")
        }
        other => ApiError::new(ErrorCode::InvalidRequest, format!("cannot read request body: {other}")),
    };
    api.into()
}

/// `QueryConfig` error handler: 400 invalid_request.
pub(crate) fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let msg = match &err {
        QueryPayloadError::Deserialize(e) => e.to_string(),
        other => other.to_string(),
    };
    let message = format!("invalid query string: {msg}");
    match field_from_serde_message(&msg) {
        Some(field) => ApiError::bad_param(&field, message),
        None => ApiError::new(ErrorCode::InvalidRequest, message),
    }
    .into()
}

/// `FormConfig` error handler: 413 / 415 / 400 in the API shape.
pub(crate) fn form_error(err: UrlencodedError, _req: &HttpRequest) -> actix_web::Error {
    match &err {
        UrlencodedError::Overflow { limit, .. } => {
            ApiError::new(ErrorCode::PayloadTooLarge, format!("request body is larger than the limit of {limit} bytes"))
        }
        UrlencodedError::ContentType => {
            ApiError::new(ErrorCode::UnsupportedMediaType, "request body must be application/x-www-form-urlencoded")
        }
        other => ApiError::new(ErrorCode::InvalidRequest, format!("invalid form body: {other}")),
    }
    .into()
}

/// `PathConfig` error handler: 400 invalid_request.
pub(crate) fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::new(ErrorCode::InvalidRequest, format!("invalid path: {err}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_the_documented_status() {
        let table = [
            (ErrorCode::InvalidRequest, 400, "invalid_request"),
            (ErrorCode::InvalidJob, 400, "invalid_job"),
            (ErrorCode::InvalidCronExpr, 400, "invalid_cron_expr"),
            (ErrorCode::Unauthorized, 401, "unauthorized"),
            (ErrorCode::CrossOriginRefused, 403, "cross_origin_refused"),
            (ErrorCode::HostNotAllowed, 421, "host_not_allowed"),
            (ErrorCode::JobNotFound, 404, "job_not_found"),
            (ErrorCode::RunNotFound, 404, "run_not_found"),
            (ErrorCode::NotFound, 404, "not_found"),
            (ErrorCode::AlertChannelNotFound, 404, "alert_channel_not_found"),
            (ErrorCode::MethodNotAllowed, 405, "method_not_allowed"),
            (ErrorCode::JobExists, 409, "job_exists"),
            (ErrorCode::VersionConflict, 409, "version_conflict"),
            (ErrorCode::RunNotRunning, 409, "run_not_running"),
            (ErrorCode::PayloadTooLarge, 413, "payload_too_large"),
            (ErrorCode::UnsupportedMediaType, 415, "unsupported_media_type"),
            (ErrorCode::BackendUnavailable, 503, "backend_unavailable"),
            (ErrorCode::Internal, 500, "internal"),
        ];
        for (code, status, name) in table {
            assert_eq!(code.status().as_u16(), status, "{name}");
            assert_eq!(code.as_str(), name);
            assert!(ErrorCode::ALL.contains(&code), "{name} is listed in ALL (the OpenAPI enum)");
        }
    }

    #[test]
    fn serde_messages_name_their_field() {
        assert_eq!(
            field_from_serde_message("unknown field `bogus`, expected one of `name`, `command` at line 1 column 9"),
            Some("bogus".into())
        );
        assert_eq!(field_from_serde_message("missing field `command` at line 1 column 2"), Some("command".into()));
        assert_eq!(field_from_serde_message("invalid type: string \"x\", expected u64"), None);
    }

    #[test]
    fn backend_errors_map_to_codes_and_internal_hides_the_cause() {
        let name = crate::domain::JobName::parse("a").expect("name");
        let e: ApiError = BackendError::VersionConflict { name: name.clone(), expected: 1, found: 3 }.into();
        assert_eq!(e.code, ErrorCode::VersionConflict);
        assert!(e.message.contains('1') && e.message.contains('3'), "{}", e.message);
        let e: ApiError = BackendError::Unavailable { backend: "etcd", message: "connection refused".into() }.into();
        assert_eq!(e.code, ErrorCode::BackendUnavailable);
        assert!(!e.message.contains("connection refused"), "backend text is not sent: {}", e.message);
        assert!(e.cause_chain().contains("connection refused"), "but logged");
        let e: ApiError = BackendError::Corrupt { backend: "etcd", message: "secret detail".into() }.into();
        assert_eq!(e.code, ErrorCode::Internal);
        assert_eq!(e.message, "internal error");
        assert!(e.cause_chain().contains("secret detail"));
    }
}
