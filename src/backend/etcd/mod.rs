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

mod claims;
mod io;
mod jobs;
mod members;
mod session;

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

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
}

impl EtcdSettings {
    /// Settings with the defaults for everything but the endpoints.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: "/cron/".into(),
            session_ttl: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
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
}

/// The three etcd-backed ports, sharing one client and one session.
#[derive(Clone)]
pub struct EtcdBackend {
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
        let ctx = Ctx { client, keys, timeout: settings.request_timeout, io };
        let session = Arc::new(session::Session::new(ctx.clone(), settings.session_ttl));
        Ok(Self {
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
}

async fn connect_client(settings: &EtcdSettings) -> Result<Client, BackendError> {
    if settings.endpoints.is_empty() {
        return Err(BackendError::Unavailable { backend: BACKEND, message: "no etcd endpoints configured".into() });
    }
    let options = ConnectOptions::new()
        .with_connect_timeout(settings.connect_timeout)
        // A member without a leader cancels our watches instead of leaving them silent.
        .with_require_leader(true)
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    Client::connect(&settings.endpoints, Some(options))
        .await
        .map_err(|e| unavailable(format!("cannot set up the etcd client for {:?}", settings.endpoints), &e))
}

/// What every adapter needs: the client, the key layout, the request timeout and the I/O
/// thread.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) client: Client,
    pub(crate) keys: Keys,
    pub(crate) timeout: Duration,
    pub(crate) io: io::IoRuntime,
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
            Ok(Err(e)) => Err(unavailable(what.to_owned(), &e)),
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
