//! `GET /api/v1/runs/{id}/output`: a run's output as server-sent events, live while it runs
//! (README "Live output").
//!
//! Owns: the event format (`output` with byte offsets, `truncated` for the middle the head+tail
//! capture dropped, `end` with the final state), resuming (`?offset=` / `Last-Event-ID`), the
//! per-node limit on followers ([`Followers`], `http.max_output_followers`), and the master's
//! proxying of the stream to the worker running the run (found through the run's record and the
//! worker's membership record, `api_addr`), passing the caller's `Authorization` header.
//! Leaves to others: capturing output (`actors/live.rs`), who may read runs (`auth.rs`: viewer),
//! the run records (the log store).
//!
//! Where a run is served from: this node's live registry when it runs (or ran) here; otherwise
//! its stored record: a final run streams its stored head+tail and `end` at once; a running run
//! on another node is proxied to that node's listener; a running run of this node that is not in
//! the registry (adopted after a restart) streams its stored state and polls the store until it
//! ends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::{Bytes, Data, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use tokio::sync::watch;

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::{param, AppState};
use crate::actors::live::{Capture, LiveRun, Piece, RunEnd};
use crate::domain::{RunId, RunRecord};

/// Largest `output` event, bytes of output.
const CHUNK_BYTES: usize = 16 * 1024;
/// A comment line this often keeps idle streams (and proxies in between) open.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How often a run of this node that is not in the live registry is looked up in the store.
const STORE_POLL: Duration = Duration::from_secs(1);
/// How long the master waits for a worker's listener to accept the proxied request.
const PROXY_CONNECT: Duration = Duration::from_secs(5);
/// Longest silence on a proxied stream (the worker sends a keep-alive every 15 s).
const PROXY_READ: Duration = Duration::from_secs(60);

/// The follower count of this node and its bound (`http.max_output_followers`), and the signal
/// that ends every stream when the node shuts down (a follower would otherwise hold the HTTP
/// server's graceful stop for its whole timeout).
#[derive(Debug, Clone)]
pub struct Followers {
    count: Arc<AtomicUsize>,
    max: usize,
    closing: Arc<watch::Sender<bool>>,
}

impl Followers {
    /// A counter allowing `max` followers at once.
    pub fn new(max: u32) -> Self {
        Self { count: Arc::new(AtomicUsize::new(0)), max: max as usize, closing: Arc::new(watch::Sender::new(false)) }
    }

    /// Ends every open stream (without `end`: clients resume elsewhere or later) and every
    /// later one at once; called when the node shuts down.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// A slot, held as long as the stream lives; `None` when `max` are taken.
    fn acquire(&self) -> Option<FollowerSlot> {
        let taken = self.count.fetch_add(1, Ordering::SeqCst);
        if taken >= self.max {
            self.count.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(FollowerSlot(Arc::clone(&self.count)))
    }

    /// Followers now.
    pub fn current(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// One taken follower slot; released when dropped (the client went away or the stream ended).
struct FollowerSlot(Arc<AtomicUsize>);

impl Drop for FollowerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Data of an `output` event.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct OutputEvent<'a> {
    /// Byte offset of the first byte of this chunk in the run's output.
    offset: u64,
    /// Bytes of output in this chunk (the `id:` of the event is `offset + bytes`).
    bytes: usize,
    /// The chunk as UTF-8 (invalid bytes as U+FFFD; chunks never split a character).
    text: &'a str,
}

/// Data of a `truncated` event: the middle the head+tail capture dropped.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct GapEvent {
    /// First dropped offset.
    from: u64,
    /// First offset after the gap (the `id:` of the event).
    to: u64,
    /// Bytes dropped.
    bytes: u64,
}

/// The event for `piece`, and the offset after it.
fn event_for(piece: &Piece) -> (String, u64) {
    match piece {
        Piece::Bytes { offset, bytes } => {
            let text = String::from_utf8_lossy(bytes);
            let next = offset + bytes.len() as u64;
            let data = serde_json::to_string(&OutputEvent { offset: *offset, bytes: bytes.len(), text: &text })
                .unwrap_or_default();
            (format!("event: output\nid: {next}\ndata: {data}\n\n"), next)
        }
        Piece::Gap { from, to } => {
            let data = serde_json::to_string(&GapEvent { from: *from, to: *to, bytes: to - from }).unwrap_or_default();
            (format!("event: truncated\nid: {to}\ndata: {data}\n\n"), *to)
        }
    }
}

fn end_event(end: &RunEnd) -> String {
    format!("event: end\ndata: {}\n\n", serde_json::to_string(end).unwrap_or_default())
}

/// Where a stream reads from.
enum Source {
    /// This node's capture of a running (or just ended) run.
    Live { run: Arc<LiveRun>, changes: watch::Receiver<u64> },
    /// A stored record; `poll` = keep reading the store until the run ends.
    Stored { capture: Capture, end: Option<RunEnd>, poll: Option<(Data<AppState>, RunId)> },
}

/// One client's stream: its source, its offset, whether it follows.
struct Stream {
    source: Source,
    offset: u64,
    follow: bool,
    done: bool,
    closing: watch::Receiver<bool>,
    _slot: Option<FollowerSlot>,
}

impl Stream {
    fn read(&self) -> (Option<Piece>, Option<RunEnd>) {
        match &self.source {
            Source::Live { run, .. } => run.read(self.offset, CHUNK_BYTES),
            Source::Stored { capture, end, .. } => (capture.read_chunk(self.offset, CHUNK_BYTES, true), end.clone()),
        }
    }

    /// Waits for a change; false when the wait timed out (send a keep-alive) or the node is
    /// shutting down.
    async fn wait(&mut self) -> bool {
        let mut closing = self.closing.clone();
        tokio::select! {
            changed = self.wait_source() => changed,
            _ = closing.wait_for(|c| *c) => false,
        }
    }

    async fn wait_source(&mut self) -> bool {
        match &mut self.source {
            Source::Live { changes, .. } => {
                matches!(tokio::time::timeout(KEEPALIVE, changes.changed()).await, Ok(Ok(())))
            }
            Source::Stored { capture, end, poll } => {
                let Some((state, id)) = poll else {
                    tokio::time::sleep(KEEPALIVE).await;
                    return false;
                };
                tokio::time::sleep(STORE_POLL).await;
                match state.backends.logs.get(id).await {
                    Ok(Some(record)) if record.status.is_final() => {
                        *capture = stored_capture(&record);
                        *end = Some(RunEnd::of(&record));
                        *poll = None;
                        true
                    }
                    Ok(_) => false,
                    Err(e) => {
                        log::debug!("Reading a followed run from the log store failed; retrying. run={id} error={e}");
                        false
                    }
                }
            }
        }
    }

    /// The next piece of the response body; `None` ends it.
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            let (piece, end) = self.read();
            if let Some(piece) = piece {
                let (event, next) = event_for(&piece);
                self.offset = next;
                return Some(Bytes::from(event));
            }
            if let Some(end) = end {
                self.done = true;
                return Some(Bytes::from(end_event(&end)));
            }
            if !self.follow || *self.closing.borrow() {
                return None;
            }
            if !self.wait().await {
                if *self.closing.borrow() {
                    return None;
                }
                return Some(Bytes::from_static(b": keep-alive\n\n"));
            }
        }
    }
}

fn stored_capture(record: &RunRecord) -> Capture {
    Capture::from_stored(&record.output, record.output_bytes, record.output_truncated)
}

/// `follow` and the resume offset of a request.
fn parse_request(req: &HttpRequest, query: &HashMap<String, String>) -> Result<(bool, u64), ApiError> {
    let follow = match param(query, "follow") {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(_) => return Err(ApiError::bad_param("follow", "follow must be 1 or 0")),
    };
    let offset = match param(query, "offset") {
        Some(raw) => raw
            .parse::<u64>()
            .map_err(|_| ApiError::bad_param("offset", "offset must be a byte offset (a whole number >= 0)"))?,
        None => match req.headers().get("last-event-id").and_then(|v| v.to_str().ok()).map(str::trim) {
            Some(raw) if !raw.is_empty() => raw.parse::<u64>().map_err(|_| {
                ApiError::bad_param("Last-Event-ID", "Last-Event-ID must be a byte offset (a whole number >= 0)")
            })?,
            _ => 0,
        },
    };
    Ok((follow, offset))
}

fn event_stream(stream: Stream) -> HttpResponse {
    let body = futures::stream::unfold(stream, |mut s| async move {
        let chunk = s.next().await?;
        Some((Ok::<_, Infallible>(chunk), s))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

fn too_many(state: &AppState) -> ApiError {
    ApiError::new(
        ErrorCode::TooManyRequests,
        format!(
            "this node already serves {} output followers (http.max_output_followers); try again later",
            state.output_followers.current()
        ),
    )
}

#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/output",
    tag = "runs",
    operation_id = "run_output",
    params(
        ("id" = String, Path, description = "The run's id"),
        ("follow" = Option<String>, Query, description = "`1`: keep the stream open until the run ends (`end` event); `0` (default): send what there is now and close"),
        ("offset" = Option<u64>, Query, description = "Resume at this byte offset (default: `Last-Event-ID`, else 0)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after the event with this id (a byte offset)"),
    ),
    responses(
        (status = 200, description = "Server-sent events: `output` (`id:` = offset after the chunk; data `{\"offset\",\"bytes\",\"text\"}`), `truncated` (data `{\"from\",\"to\",\"bytes\"}`: the middle the head+tail capture dropped), `end` (data: the final status, `exit_code`, `output_bytes`, `output_truncated`, `err`) once the run has ended", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad `follow`, `offset` or `Last-Event-ID` (`invalid_request`)", body = ErrorBody),
        (status = 404, description = "No such run (`run_not_found`)", body = ErrorBody),
        (status = 429, description = "`http.max_output_followers` followers already (`too_many_requests`)", body = ErrorBody),
        (status = 502, description = "The worker running the run cannot be reached (`worker_unreachable`)", body = ErrorBody),
    )
)]
/// `GET /api/v1/runs/{id}/output?follow=1`: the run's output as server-sent events, live while
/// it runs (README "Live output").
pub(crate) async fn output(
    state: Data<AppState>,
    req: HttpRequest,
    id: Path<String>,
    query: Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let (follow, offset) = parse_request(&req, &query)?;
    let run_id = RunId(id.into_inner());
    let slot =
        || if follow { state.output_followers.acquire().ok_or_else(|| too_many(&state)).map(Some) } else { Ok(None) };
    if let Some(run) = state.live.get(&run_id) {
        let changes = run.subscribe();
        let source = Source::Live { run, changes };
        return Ok(event_stream(Stream {
            source,
            offset,
            follow,
            done: false,
            closing: state.output_followers.closing(),
            _slot: slot()?,
        }));
    }
    let record = state
        .backends
        .logs
        .get(&run_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::RunNotFound, format!("run {run_id} not found")))?;
    if record.status.is_final() || !follow {
        let end = record.status.is_final().then(|| RunEnd::of(&record));
        let source = Source::Stored { capture: stored_capture(&record), end, poll: None };
        return Ok(event_stream(Stream {
            source,
            offset,
            follow,
            done: false,
            closing: state.output_followers.closing(),
            _slot: None,
        }));
    }
    let slot = slot()?;
    if state.node.is_some() && record.worker == state.node_id {
        // Ours but not captured here (adopted after a restart): what is stored, until it ends.
        let source =
            Source::Stored { capture: stored_capture(&record), end: None, poll: Some((state.clone(), run_id)) };
        return Ok(event_stream(Stream {
            source,
            offset,
            follow,
            done: false,
            closing: state.output_followers.closing(),
            _slot: slot,
        }));
    }
    proxy(&state, &req, &record, offset, slot).await
}

/// Why the master could not reach a worker (logged; the client reads `worker_unreachable`).
#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("worker {worker} is not live in membership")]
    NotLive { worker: String },
    #[error("worker {worker} publishes no api_addr (an older version)")]
    NoAddress { worker: String },
    #[error("peer CA file {path}: {reason}")]
    Trust { path: String, reason: String },
    #[error("request to {url} failed: {reason}")]
    Transport { url: String, reason: String },
    #[error("membership lookup failed")]
    Members(#[from] crate::backend::BackendError),
}

fn unreachable(record: &RunRecord, cause: ProxyError) -> ApiError {
    log::warn!(
        "Cannot proxy live output to the worker running the run. run={} worker={} error={cause}",
        record.id,
        record.worker
    );
    ApiError {
        code: ErrorCode::WorkerUnreachable,
        message: format!(
            "worker {} running run {} cannot be reached for its live output ({}); try again, or read the run once it ends",
            record.worker,
            record.id,
            match &cause {
                ProxyError::NotLive { .. } => "it is not live: its runs are recorded lost when its session expires",
                ProxyError::NoAddress { .. } => "it publishes no API address: upgrade it",
                _ => "its listener does not answer",
            }
        ),
        field: None,
        cause: Some(Box::new(cause)),
        request_id: None,
    }
}

/// The TLS trust for the workers' listeners: `http.peer_ca_file`, else `http.tls_cert_file`.
fn peer_agent(state: &AppState) -> Result<ureq::Agent, ProxyError> {
    let mut builder = ureq::AgentBuilder::new().timeout_connect(PROXY_CONNECT).timeout_read(PROXY_READ);
    let http = &state.config.http;
    let ca = if http.peer_ca_file.as_os_str().is_empty() { &http.tls_cert_file } else { &http.peer_ca_file };
    if !ca.as_os_str().is_empty() {
        use rustls_pki_types::pem::PemObject;
        let failed = |reason: String| ProxyError::Trust { path: ca.display().to_string(), reason };
        let pem = std::fs::read(ca).map_err(|e| failed(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| failed(format!("not PEM: {e}")))?;
            roots.add(cert).map_err(|e| failed(format!("not a usable certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| failed(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        builder = builder.tls_config(Arc::new(tls));
    }
    Ok(builder.build())
}

/// What the worker answered first.
enum Head {
    /// 200: the body follows on the channel.
    Streaming,
    /// An error status and its body (passed on as is).
    Status(u16, String),
}

/// Proxies the stream of `record` (running on another worker) to that worker's listener.
async fn proxy(
    state: &Data<AppState>,
    req: &HttpRequest,
    record: &RunRecord,
    offset: u64,
    slot: Option<FollowerSlot>,
) -> Result<HttpResponse, ApiError> {
    let worker = state
        .backends
        .members
        .live()
        .await
        .map_err(|e| unreachable(record, e.into()))?
        .into_iter()
        .find(|w| w.id == record.worker)
        .ok_or_else(|| unreachable(record, ProxyError::NotLive { worker: record.worker.to_string() }))?;
    let base = worker
        .api_addr
        .filter(|a| !a.is_empty())
        .ok_or_else(|| unreachable(record, ProxyError::NoAddress { worker: record.worker.to_string() }))?;
    let agent = peer_agent(state).map_err(|e| unreachable(record, e))?;
    let url = format!("{}/api/v1/runs/{}/output", base.trim_end_matches('/'), record.id);
    let auth = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (head_tx, head_rx) = tokio::sync::oneshot::channel::<Result<Head, ProxyError>>();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let worker_url = url.clone();
    tokio::task::spawn_blocking(move || {
        let mut request = agent.get(&url).query("follow", "1").query("offset", &offset.to_string());
        if let Some(auth) = &auth {
            request = request.set("Authorization", auth);
        }
        let response = match request.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                let _ = head_tx.send(Ok(Head::Status(code, r.into_string().unwrap_or_default())));
                return;
            }
            Err(e) => {
                let _ = head_tx.send(Err(ProxyError::Transport { url, reason: e.to_string() }));
                return;
            }
        };
        if head_tx.send(Ok(Head::Streaming)).is_err() {
            return;
        }
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    // The client went away: stop reading from the worker.
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let head = head_rx.await.map_err(|_| {
        unreachable(record, ProxyError::Transport { url: worker_url.clone(), reason: "proxy task ended".into() })
    })?;
    match head.map_err(|e| unreachable(record, e))? {
        Head::Status(code, body) => {
            let status =
                actix_web::http::StatusCode::from_u16(code).unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
            if status.is_server_error() {
                let reason = format!("worker answered {code}");
                return Err(unreachable(record, ProxyError::Transport { url: worker_url, reason }));
            }
            Ok(HttpResponse::build(status).content_type("application/json").body(body))
        }
        Head::Streaming => {
            log::debug!("Proxying live output from a worker. run={} worker={}", record.id, record.worker);
            let closing = state.output_followers.closing();
            let body = futures::stream::unfold((rx, slot, closing), |(mut rx, slot, mut closing)| async move {
                let chunk = tokio::select! {
                    chunk = rx.recv() => chunk?,
                    _ = closing.wait_for(|c| *c) => return None,
                };
                Some((Ok::<_, Infallible>(chunk), (rx, slot, closing)))
            });
            Ok(HttpResponse::Ok()
                .content_type("text/event-stream")
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                .insert_header(("X-Accel-Buffering", "no"))
                .streaming(body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_offsets_and_the_gap() {
        let (event, next) = event_for(&Piece::Bytes { offset: 5, bytes: b"hi\n".to_vec() });
        assert_eq!(next, 8);
        assert_eq!(event, "event: output\nid: 8\ndata: {\"offset\":5,\"bytes\":3,\"text\":\"hi\\n\"}\n\n");
        let (event, next) = event_for(&Piece::Gap { from: 10, to: 30 });
        assert_eq!(next, 30);
        assert_eq!(event, "event: truncated\nid: 30\ndata: {\"from\":10,\"to\":30,\"bytes\":20}\n\n");
    }

    #[test]
    fn followers_are_bounded_and_released() {
        let followers = Followers::new(2);
        let a = followers.acquire().expect("first");
        let _b = followers.acquire().expect("second");
        assert!(followers.acquire().is_none());
        drop(a);
        assert!(followers.acquire().is_some());
    }
}
