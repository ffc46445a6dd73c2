//! etcd adapters (cluster mode): the job store, membership and claims over one etcd client.
//!
//! This module owns the connection ([`EtcdBackend::connect`]), the key layout under the
//! configurable prefix ([`Keys`], the seed's `/cron/` by default), the mapping of etcd errors to
//! [`BackendError`] and the per-request timeout. The three ports share one session (`session.rs`):
//! a lease kept alive in the background that the worker key and the running marks are bound to,
//! so a dead worker's registration and marks vanish together (one etcd revision), which is how
//! lost runs are detected. Every etcd request, the keep-alive and the watches run on the etcd
//! I/O thread (`io.rs`), never on the actix System thread. What each port guarantees is in
//! [`super::guide`].
//!
//! It also owns access to a secured etcd (issue 9, item 5): TLS with the operator's CA, a client
//! certificate for `--client-cert-auth`, and etcd's own user auth, whose token is refreshed in
//! the background and again whenever etcd calls it invalid (tokens expire; the session, the
//! watches and the claims outlive them). A refused certificate, an unknown user or a wrong
//! password at start is a start-up error ([`BackendError::Refused`]); an etcd that does not
//! answer is an outage, said once and retried, as without TLS.

mod claims;
mod io;
mod jobs;
mod members;
mod session;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

pub use claims::EtcdClaims;
pub use jobs::EtcdJobStore;
pub use members::EtcdMembership;

use super::BackendError;

const BACKEND: &str = "etcd";

/// How to reach etcd and how long the worker session lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs (`http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// Key prefix, starting and ending with `/` (default `/cron/`).
    pub prefix: String,
    /// Session lease TTL: how long after its last keep-alive a silent worker counts as dead.
    pub session_ttl: Duration,
    /// Longest wait for one etcd request before it counts as failed.
    pub request_timeout: Duration,
    /// Longest wait for a TCP connection to an endpoint.
    pub connect_timeout: Duration,
    /// TLS to etcd; `None` = plain `http://` endpoints.
    pub tls: Option<EtcdTls>,
    /// etcd user and the file holding its password; `None` = no etcd auth.
    pub auth: Option<(String, PathBuf)>,
}

/// TLS to etcd (`etcd.tls_*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM file of the CA that signed etcd's server certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate and key files, for etcd's `--client-cert-auth`.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Tries of the start-up access check, and the pause between them.
const ACCESS_CHECKS: usize = 5;
const ACCESS_CHECK_PAUSE: Duration = Duration::from_millis(300);
/// Start-up access checks when each one only saw a broken pipe (see `check_access`).
const AMBIGUOUS_ACCESS_CHECKS: usize = 30;

/// How often the etcd auth token is renewed in the background (etcd's default TTL is 5 min; a
/// token found expired sooner is renewed on the spot).
const TOKEN_REFRESH: Duration = Duration::from_secs(60);

impl EtcdSettings {
    /// Settings with the defaults for everything but the endpoints.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: "/cron/".into(),
            session_ttl: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            tls: None,
            auth: None,
        }
    }
}

/// The key layout under the prefix (ARCHITECTURE.md "Ports and adapters").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The layout under `prefix` (which ends with `/`).
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    /// `<prefix><section>/`.
    pub fn dir(&self, section: &str) -> String {
        format!("{}{section}/", self.prefix)
    }

    /// `<prefix><section>/<name>`.
    pub fn key(&self, section: &str, name: &str) -> String {
        format!("{}{section}/{name}", self.prefix)
    }

    /// The part of `key` after `<prefix><section>/`, if `key` is in that section.
    pub fn name_in<'a>(&self, section: &str, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?.strip_prefix(section)?.strip_prefix('/')
    }

    /// The first key after every key starting with `<prefix><section>`: the end of a range.
    pub fn range_end(&self, section: &str) -> String {
        // '0' is the byte after '/', so `<section>0` sorts after every `<section>/...` key.
        format!("{}{section}0", self.prefix)
    }
}

/// Sections of the key layout.
pub(crate) mod section {
    /// Job JSON (the seed's).
    pub(crate) const JOBS: &str = "jobs";
    /// Kill signals (the seed's, short lease).
    pub(crate) const KILLER: &str = "killer";
    /// Run-now signals (short lease).
    pub(crate) const RUN: &str = "run";
    /// Worker info on the session lease (the seed's section).
    pub(crate) const WORKERS: &str = "workers";
    /// Last claimed tick per job.
    pub(crate) const CLAIM: &str = "claim";
    /// Live runs on the session lease.
    pub(crate) const RUNNING: &str = "running";
    /// Claimed run-now requests and lost-run records (one-hour lease).
    pub(crate) const REQUESTS: &str = "requests";
    /// Audit entries, `<13-digit ms>-<uuid>` (outside the job watch's range).
    pub(crate) const AUDIT: &str = "audit";
    /// Alert claims and delivery records, `<job>/<alert id>` (outside the job watch's range).
    pub(crate) const ALERTS: &str = "alerts";
}

/// The three etcd-backed ports, sharing one client and one session.
#[derive(Clone)]
pub struct EtcdBackend {
    /// The endpoints (for the start-up access check).
    endpoints: Vec<String>,
    /// Job store.
    pub jobs: Arc<EtcdJobStore>,
    /// Membership.
    pub members: Arc<EtcdMembership>,
    /// Claims.
    pub claims: Arc<EtcdClaims>,
}

impl EtcdBackend {
    /// Connects to etcd. The connection is made lazily: an unreachable etcd is not an error here
    /// (a node starts and says once that it cannot claim); a malformed endpoint is.
    ///
    /// # Errors
    /// `Unavailable` when the endpoints are empty or malformed.
    pub async fn connect(settings: &EtcdSettings) -> Result<Self, BackendError> {
        let io = io::IoRuntime::start()?;
        // The client is made on the I/O thread: its connection tasks run where it is made.
        let owned = settings.clone();
        let client = io.run(async move { connect_client(&owned).await }).await??;
        let keys = Keys::new(&settings.prefix);
        let credentials = match &settings.auth {
            Some((user, password_file)) => {
                Some(Arc::new(Credentials { user: user.clone(), password: read_password(password_file)? }))
            }
            None => None,
        };
        let ctx = Ctx { client, keys, timeout: settings.request_timeout, credentials, io };
        if ctx.credentials.is_some() {
            // A refused user or password stops the start; an etcd that does not answer does not.
            let auth = ctx.clone();
            match ctx.io.run(async move { auth.authenticate().await }).await? {
                Err(e @ BackendError::Refused { .. }) => return Err(e),
                Err(e) => log::warn!("Cannot authenticate to etcd yet; retrying in the background. error={e}"),
                Ok(()) => {}
            }
            ctx.refresh_token_in_background();
        }
        let session = Arc::new(session::Session::new(ctx.clone(), settings.session_ttl));
        Ok(Self {
            endpoints: settings.endpoints.clone(),
            jobs: Arc::new(EtcdJobStore::new(ctx.clone())),
            members: Arc::new(EtcdMembership::new(ctx.clone(), Arc::clone(&session))),
            claims: Arc::new(EtcdClaims::new(ctx, session)),
        })
    }

    /// One cheap request, to say at start whether etcd answers.
    ///
    /// # Errors
    /// `Unavailable` when it does not.
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.jobs.ping().await
    }

    /// [`ping`](Self::ping), telling a refusal (certificate, user, password, permission:
    /// [`BackendError::Refused`], a start-up error) from an outage (`Unavailable`).
    ///
    /// # Errors
    /// `Refused` or `Unavailable`.
    pub async fn check_access(&self) -> Result<(), BackendError> {
        // A TLS 1.3 server refuses a client certificate after the handshake: the first request
        // may only see a broken pipe, a later one the alert. A few quick tries tell them apart.
        // Under load the alert can take seconds to win the race: a broken pipe (ambiguous) is
        // asked about longer than other failures (etcd down: start without waiting long).
        let mut last = None;
        let (mut tries, mut ambiguous) = (0, 0);
        while tries < ACCESS_CHECKS && ambiguous < AMBIGUOUS_ACCESS_CHECKS {
            match self.jobs.ping().await {
                Ok(()) => return Ok(()),
                Err(e @ BackendError::Refused { .. }) => return Err(e),
                Err(e) => {
                    if e.to_string().to_ascii_lowercase().contains("broken pipe") {
                        ambiguous += 1;
                    } else {
                        tries += 1;
                    }
                    last = Some(e);
                }
            }
            tokio::time::sleep(ACCESS_CHECK_PAUSE).await;
        }
        // A plain http:// endpoint that is really a TLS listener only breaks the pipe: ask it.
        for endpoint in self.endpoints.iter().filter(|e| e.starts_with("http://")) {
            if speaks_tls(endpoint).await {
                return Err(refused(format!(
                    "endpoint {endpoint} is a TLS listener: use https:// endpoints and set etcd.tls_ca_file (and a client certificate if etcd asks for one)"
                )));
            }
        }
        Err(last.unwrap_or_else(|| BackendError::Unavailable { backend: BACKEND, message: "no answer".into() }))
    }
}

/// Whether `endpoint` (`http://host:port`) treats a plain HTTP request like a TLS listener does
/// (drops it unanswered, or answers with a TLS alert or Go's "HTTP request to an HTTPS server").
/// Asked only when gRPC to it already failed; one second at most; false when nothing listens.
async fn speaks_tls(endpoint: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(authority) = endpoint.strip_prefix("http://").map(|rest| rest.split('/').next().unwrap_or(rest)) else {
        return false;
    };
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await.ok()?;
        stream.write_all(b"GET /health HTTP/1.0\r\n\r\n").await.ok()?;
        let mut buf = vec![0u8; 512];
        // etcd's TLS listener drops a connection whose first bytes are no TLS handshake, without
        // a word; a plain etcd answers the request.
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => return Some(e.kind() == std::io::ErrorKind::ConnectionReset),
        };
        let answer = &buf[..n];
        Some(n == 0 || answer.first() == Some(&0x15) || String::from_utf8_lossy(answer).contains("HTTPS server"))
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), probe).await, Ok(Some(true)))
}

/// etcd user credentials, the password read from `etcd.password_file`.
pub(crate) struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, BackendError> {
    std::fs::read(path)
        .map_err(|source| BackendError::Io { context: format!("cannot read {key} {}", path.display()), source })
}

/// The first line of the password file, without its line end.
fn read_password(path: &Path) -> Result<String, BackendError> {
    let bytes = read_file("etcd.password_file", path)?;
    let text =
        String::from_utf8(bytes).map_err(|_| refused(format!("etcd.password_file {} is not UTF-8", path.display())))?;
    let password = text.lines().next().unwrap_or_default().to_owned();
    if password.is_empty() {
        return Err(refused(format!("etcd.password_file {} is empty", path.display())));
    }
    Ok(password)
}

/// The client TLS settings: the CA, and the client identity when configured.
fn tls_options(tls: &EtcdTls) -> Result<TlsOptions, BackendError> {
    let pem = |key: &str, path: &Path, marker: &str| -> Result<Vec<u8>, BackendError> {
        let bytes = read_file(key, path)?;
        if !String::from_utf8_lossy(&bytes).contains(marker) {
            return Err(refused(format!("{key} {} holds no PEM {marker}", path.display())));
        }
        Ok(bytes)
    };
    let ca = pem("etcd.tls_ca_file", &tls.ca_file, "CERTIFICATE")?;
    let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = &tls.client {
        let cert = pem("etcd.tls_cert_file", cert, "CERTIFICATE")?;
        let key = pem("etcd.tls_key_file", key, "PRIVATE KEY")?;
        options = options.identity(Identity::from_pem(cert, key));
    }
    Ok(options)
}

fn refused(message: String) -> BackendError {
    BackendError::Refused { backend: BACKEND, message }
}

/// The error and its sources, in one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An etcd client error with the causes etcd_client's `Display` leaves out (its error type
/// has no `source`; the TLS or connection detail is in the wrapped tonic error's chain).
fn describe(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::TransportError(e) => format!("transport error: {}", chain(e)),
        etcd_client::Error::GRpcStatus(status) => {
            let mut text = format!("{:?}: {}", status.code(), status.message());
            if let Some(source) = std::error::Error::source(status) {
                text.push_str(": ");
                text.push_str(&chain(source));
            }
            text
        }
        other => chain(other),
    }
}

/// gRPC status codes etcd answers with (the numbers of `tonic::Code`).
mod grpc {
    pub(super) const INVALID_ARGUMENT: i32 = 3;
    pub(super) const PERMISSION_DENIED: i32 = 7;
    pub(super) const FAILED_PRECONDITION: i32 = 9;
    pub(super) const UNAUTHENTICATED: i32 = 16;
}

/// What an etcd error means for access: a refusal the operator must fix (with the message to
/// show), or `None` for an outage a retry may cure.
fn refusal(error: &etcd_client::Error) -> Option<String> {
    if let etcd_client::Error::GRpcStatus(status) = error {
        let message = status.message();
        match status.code() as i32 {
            grpc::INVALID_ARGUMENT if message.contains("authentication failed") => {
                return Some("etcd refused the user name or password (etcd.user, etcd.password_file)".into())
            }
            grpc::INVALID_ARGUMENT if message.contains("user name is empty") => {
                return Some(
                    "etcd requires authentication: set etcd.user and etcd.password_file (etcd's own auth is enabled)"
                        .into(),
                )
            }
            grpc::PERMISSION_DENIED => {
                return Some(format!("etcd denied access to the key prefix: {message} (grant the user a role on it)"))
            }
            _ => {}
        }
    }
    let detail = describe(error);
    let text = detail.to_lowercase();
    // TLS failures surface as transport errors; a connection refused or a timeout does not
    // mention certificates or handshakes.
    let tls_words = ["certificate", "handshake", "tls", "alert", "unknownissuer", "invalid peer"];
    if tls_words.iter().any(|w| text.contains(w)) {
        return Some(format!(
            "the TLS connection to etcd failed (check etcd.tls_ca_file, etcd.tls_cert_file, etcd.tls_key_file and https:// endpoints): {detail}"
        ));
    }
    if text.contains("frame with invalid size") || text.contains("http2 error") || text.contains("protocol error") {
        return Some(format!(
            "etcd does not speak plain HTTP/2 here; is it a TLS endpoint (https://, etcd.tls_ca_file)? {detail}"
        ));
    }
    None
}

async fn connect_client(settings: &EtcdSettings) -> Result<Client, BackendError> {
    if settings.endpoints.is_empty() {
        return Err(BackendError::Unavailable { backend: BACKEND, message: "no etcd endpoints configured".into() });
    }
    let mut options = ConnectOptions::new()
        .with_connect_timeout(settings.connect_timeout)
        // A member without a leader cancels our watches instead of leaving them silent.
        .with_require_leader(true)
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    if let Some(tls) = &settings.tls {
        options = options.with_tls(tls_options(tls)?);
    }
    // No `with_user` here: it would authenticate inside `connect`, so an etcd that is down at
    // start would stop the start. The token is fetched by `Ctx::authenticate` instead.
    Client::connect(&settings.endpoints, Some(options)).await.map_err(|e| match refusal(&e) {
        Some(message) => refused(message),
        None => unavailable(format!("cannot set up the etcd client for {:?}", settings.endpoints), &e),
    })
}

/// What every adapter needs: the client, the key layout, the request timeout and the I/O
/// thread.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) client: Client,
    pub(crate) keys: Keys,
    pub(crate) timeout: Duration,
    /// etcd user credentials, when etcd's auth is in use.
    pub(crate) credentials: Option<Arc<Credentials>>,
    /// The etcd I/O thread every request runs on.
    pub(crate) io: io::IoRuntime,
}

impl Ctx {
    /// Fetches a fresh auth token (shared by every clone of the client).
    ///
    /// # Errors
    /// `Refused` for a wrong user or password, `Unavailable` when etcd does not answer.
    pub(crate) async fn authenticate(&self) -> Result<(), BackendError> {
        let Some(credentials) = &self.credentials else { return Ok(()) };
        let mut client = self.client.clone();
        let user = Some((credentials.user.clone(), credentials.password.clone()));
        match tokio::time::timeout(self.timeout, client.update_user(user)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(etcd_client::Error::GRpcStatus(status)))
                if status.code() as i32 == grpc::FAILED_PRECONDITION && status.message().contains("not enabled") =>
            {
                log::warn!("etcd.user is set but etcd has authentication disabled; talking to it without a token.");
                Ok(())
            }
            Ok(Err(e)) => Err(match refusal(&e) {
                Some(message) => refused(message),
                None => unavailable("cannot authenticate to etcd".into(), &e),
            }),
            Err(_) => Err(BackendError::Unavailable {
                backend: BACKEND,
                message: format!("cannot authenticate to etcd: no answer within {} ms", self.timeout.as_millis()),
            }),
        }
    }

    /// Renews the auth token every [`TOKEN_REFRESH`], so the session, watches and claims never
    /// run on an expired one; failures are retried at the next round (and on the spot by
    /// [`Ctx::call`] when etcd calls a token invalid).
    fn refresh_token_in_background(&self) {
        let ctx = self.clone();
        self.io.spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(TOKEN_REFRESH).await;
                match ctx.authenticate().await {
                    Ok(()) if failing => {
                        log::info!("etcd authentication works again.");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        log::warn!("Cannot renew the etcd auth token; retrying. error={e}");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        });
    }
}

impl Ctx {
    /// Runs one etcd request on the I/O thread with the timeout, mapping failures to
    /// `Unavailable` with `what`.
    pub(crate) async fn call<T, F>(&self, what: &str, fut: F) -> Result<T, BackendError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let timeout = self.timeout;
        match self.io.run(async move { tokio::time::timeout(timeout, fut).await }).await? {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if is_expired_token(&e) && self.credentials.is_some() {
                    // The token expired: renew it now; the caller's retry succeeds.
                    if let Err(auth) = self.authenticate().await {
                        log::warn!("Cannot renew the expired etcd auth token. error={auth}");
                    }
                }
                Err(match refusal(&e) {
                    Some(message) => refused(message),
                    None => unavailable(what.to_owned(), &e),
                })
            }
            Err(_) => Err(BackendError::Unavailable {
                backend: BACKEND,
                message: format!("{what}: no answer within {} ms", self.timeout.as_millis()),
            }),
        }
    }
}

/// Keys per page of a prefix read: pages stay far below gRPC's 4 MB message limit.
const PAGE_KEYS: i64 = 500;

impl Ctx {
    /// Every key under `prefix`, read in pages at one revision (a consistent snapshot however
    /// many keys there are), and that revision.
    pub(crate) async fn range_all(
        &self,
        what: &str,
        prefix: &str,
    ) -> Result<(Vec<etcd_client::KeyValue>, i64), BackendError> {
        let end = prefix_end(prefix);
        let mut kvs = Vec::new();
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let mut options = etcd_client::GetOptions::new().with_range(end.clone()).with_limit(PAGE_KEYS);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut client = self.client.clone();
            let key = from.clone();
            let mut resp = self.call(what, async move { client.get(key, Some(options)).await }).await?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            let page = resp.take_kvs();
            let Some(last) = page.last() else { break };
            // The next page starts just after the last key read.
            from = last.key().to_vec();
            from.push(0);
            kvs.extend(page);
            if !more {
                break;
            }
        }
        Ok((kvs, revision))
    }
}

/// The end of the key range of every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn unavailable(what: String, error: &etcd_client::Error) -> BackendError {
    // etcd_client's Display of a gRPC status is long; keep its first line.
    let text = error.to_string();
    let text = text.lines().next().unwrap_or_default();
    BackendError::Unavailable { backend: BACKEND, message: format!("{what}: {text}") }
}

/// etcd's answer to a request with an expired (or unknown) auth token.
fn is_expired_token(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.code() as i32 == grpc::UNAUTHENTICATED || status.message().contains("invalid auth token"))
}

fn corrupt(message: String) -> BackendError {
    BackendError::Corrupt { backend: BACKEND, message }
}

/// A claimed tick as stored under `claim/<name>`: zero-padded ms since the epoch, so etcd's
/// byte-wise value comparison orders ticks (ARCHITECTURE.md "Claims, spread and failover").
pub(crate) fn tick_value(ms: i64) -> String {
    format!("{:015}", ms.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_seed_layout_under_the_prefix() {
        let keys = Keys::new("/cron/");
        assert_eq!(keys.key(section::JOBS, "job1"), "/cron/jobs/job1");
        assert_eq!(keys.key(section::KILLER, "job1"), "/cron/killer/job1");
        assert_eq!(keys.dir(section::WORKERS), "/cron/workers/");
        assert_eq!(keys.name_in(section::JOBS, "/cron/jobs/a.b"), Some("a.b"));
        assert_eq!(keys.name_in(section::JOBS, "/cron/jobsx/a"), None);
        assert_eq!(keys.name_in(section::RUN, "/cron/running/a/b"), None);
        assert!(keys.range_end(section::RUN).as_str() > "/cron/run/zzz");
        assert!(keys.range_end(section::RUN).as_str() < "/cron/running/");
        assert_eq!(Keys::new("/x").key("jobs", "a"), "/x/jobs/a");
    }

    #[test]
    fn a_prefix_range_ends_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end("/cron/jobs/"), b"/cron/jobs0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn tick_values_sort_like_the_ticks_they_hold() {
        let (a, b) = (tick_value(999), tick_value(1_700_000_000_000));
        assert_eq!(a.len(), b.len());
        assert!(a < b);
        assert_eq!(tick_value(-5), tick_value(0));
    }
}
