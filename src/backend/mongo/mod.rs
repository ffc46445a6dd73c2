//! MongoDB adapter of the log store: the client, its settings and the indexes, created at start
//! and idempotently (ARCHITECTURE.md "Ports and adapters": database `cron`, collection `log`).
//!
//! The document shape and the [`LogStore`](super::LogStore) implementation live in [`logs`].
//! A node must start and schedule while MongoDB is unreachable (ARCHITECTURE.md "Process and
//! roles"), so [`MongoLogStore::start`] never waits for the server longer than a few seconds:
//! when the indexes cannot be created then, a background task retries until they are.
//!
//! Indexes: `{jobName: 1, startTime: -1}` (the seed's read and per-job pages),
//! `{status: 1, startTime: -1}` (status pages, the start-up look for interrupted runs),
//! `{startTime: -1, _id: -1}` (the unfiltered newest-first page) and `{expireAt: 1}` with
//! `expireAfterSeconds: 0` (a TTL index: each document carries its own expiry). Servers without
//! TTL indexes (FerretDB 1.x answers "not implemented") get a plain `{expireAt: 1}` index and
//! rely on [`LogStore::apply_retention`](super::LogStore::apply_retention), which the
//! LogBatchActor calls at start and every hour whatever the server.

pub mod logs;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, IndexModel};

pub use logs::MongoLogStore;

use super::{BackendError, RetentionPolicy};
use crate::domain::Backoff;

/// Backend name in errors and health.
pub(crate) const BACKEND: &str = "mongodb";

/// How long one server selection may take before a call fails (and records spool).
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(3);
/// TCP connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the start waits for the indexes before leaving them to a background task.
const START_WAIT: Duration = Duration::from_secs(5);
/// Longest pause between index attempts in the background.
const INDEX_RETRY_MAX: Duration = Duration::from_secs(30);

/// MongoDB server error codes (the server's `error_codes.yml`).
pub(crate) mod codes {
    /// Duplicate key.
    pub(crate) const DUPLICATE_KEY: i32 = 11000;
    /// Command or option not implemented (FerretDB's answer to a TTL index).
    pub(crate) const NOT_IMPLEMENTED: i32 = 238;
    /// An index with the same name exists with other options.
    pub(crate) const INDEX_OPTIONS_CONFLICT: i32 = 85;
    /// An index with the same name exists with other keys.
    pub(crate) const INDEX_KEY_SPECS_CONFLICT: i32 = 86;
    /// Codes a retry can cure: network, elections, shutdown, write conflicts, time limits, locks.
    pub(crate) const TRANSIENT: [i32; 20] =
        [6, 7, 24, 46, 50, 64, 89, 91, 112, 133, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 10058];
}

/// What the adapter needs from the configuration.
#[derive(Debug, Clone)]
pub struct MongoSettings {
    /// Connection string (`mongodb://` or `mongodb+srv://`); may hold credentials, never logged.
    pub uri: String,
    /// Database (default `cron`).
    pub database: String,
    /// Collection (default `log`).
    pub collection: String,
    /// Global retention in days until the first `apply_retention` call (0 = forever).
    pub retention_days: u32,
}

impl MongoSettings {
    /// The `[mongo]` section and `log_batch.retention_days` of `config`; the URI from
    /// `mongo.uri_file` (its first line) when that is set, so a password stays out of argv and
    /// the config file. TLS is the URI's (`tls=true`, `tlsCAFile`, `tlsCertificateKeyFile`; the
    /// driver is built with rustls).
    ///
    /// # Errors
    /// `Io` when `mongo.uri_file` cannot be read, `Refused` when it holds no URI.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, BackendError> {
        let uri = if config.mongo.uri_file.is_empty() {
            config.mongo.uri.clone()
        } else {
            let path = &config.mongo.uri_file;
            let text = std::fs::read_to_string(path)
                .map_err(|source| BackendError::Io { context: format!("cannot read mongo.uri_file {path}"), source })?;
            let uri = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().to_owned();
            if !uri.starts_with("mongodb://") && !uri.starts_with("mongodb+srv://") {
                // The content is a secret: never echoed.
                return Err(BackendError::Refused {
                    backend: BACKEND,
                    message: format!("mongo.uri_file {path} does not hold a mongodb:// or mongodb+srv:// URI"),
                });
            }
            uri
        };
        Ok(Self {
            uri,
            database: config.mongo.database.clone(),
            collection: config.mongo.collection.clone(),
            retention_days: config.log_batch.retention_days,
        })
    }
}

/// Whether the server took the TTL index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlSupport {
    /// Not known yet (indexes not created yet).
    Unknown,
    /// The TTL index exists: the server deletes expired documents itself.
    Supported,
    /// The server refused it; retention is the hourly purge only.
    Unsupported,
}

/// State shared between the store, its clones and the index task.
#[derive(Debug)]
pub(crate) struct Shared {
    /// [`TtlSupport`] as a number (0 unknown, 1 supported, 2 unsupported).
    ttl: AtomicU8,
    /// The policy `expireAt` is computed from.
    pub(crate) policy: RwLock<RetentionPolicy>,
}

impl Shared {
    fn ttl(&self) -> TtlSupport {
        match self.ttl.load(Ordering::Relaxed) {
            1 => TtlSupport::Supported,
            2 => TtlSupport::Unsupported,
            _ => TtlSupport::Unknown,
        }
    }
}

/// An `Unavailable` error of this backend.
pub(crate) fn unavailable(context: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable { backend: BACKEND, message: format!("{context}: {e}") }
}

/// The server's error code of a command error, if it is one.
fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

/// Connects a client (lazily: no round trip here) with short timeouts unless the URI sets them.
async fn client(settings: &MongoSettings) -> Result<Client, BackendError> {
    // The parse error may quote the URI; keep credentials out of logs by not echoing it.
    let mut options = ClientOptions::parse(&settings.uri)
        .await
        .map_err(|e| unavailable("invalid mongo.uri (or its DNS records)", e.kind))?;
    options.app_name.get_or_insert_with(|| "distcron".to_owned());
    options.server_selection_timeout.get_or_insert(SERVER_SELECTION_TIMEOUT);
    options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
    Client::with_options(options).map_err(|e| unavailable("cannot create the MongoDB client", e))
}

impl MongoLogStore {
    /// Creates the client and the indexes; when the server does not answer within a few
    /// seconds, the indexes are left to a background task (which needs a tokio runtime) and the
    /// store is returned anyway: writes fail (and spool) until the server answers.
    ///
    /// # Errors
    /// `Unavailable` when the URI is invalid (or a `mongodb+srv` name does not resolve).
    pub async fn start(settings: &MongoSettings) -> Result<Self, BackendError> {
        let store = Self::connect(settings).await?;
        match tokio::time::timeout(START_WAIT, store.ensure_indexes()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => store.retry_indexes_in_background(e.to_string()),
            Err(_) => store.retry_indexes_in_background(format!("no answer within {}s", START_WAIT.as_secs())),
        }
        log::info!(
            "MongoDB log store configured. database={} collection={} ttl_index={:?}",
            settings.database,
            settings.collection,
            store.ttl_support()
        );
        Ok(store)
    }

    /// The client and collection, without any round trip (for tests and benchmarks).
    ///
    /// # Errors
    /// `Unavailable` when the URI is invalid.
    pub async fn connect(settings: &MongoSettings) -> Result<Self, BackendError> {
        let client = client(settings).await?;
        let db = client.database(&settings.database);
        let coll = db.collection::<Document>(&settings.collection);
        let shared = Arc::new(Shared {
            ttl: AtomicU8::new(0),
            policy: RwLock::new(RetentionPolicy { default_days: settings.retention_days, per_job: Default::default() }),
        });
        Ok(Self::new(db, coll, shared))
    }

    /// Whether the server took the TTL index.
    pub fn ttl_support(&self) -> TtlSupport {
        self.shared().ttl()
    }

    fn retry_indexes_in_background(&self, first_error: String) {
        log::warn!(
            "MongoDB did not answer at start; distcron runs anyway, spooling run records until it does, and creates the indexes then. error={first_error}"
        );
        let store = self.clone();
        tokio::spawn(async move {
            let mut pause = Backoff::new(Duration::from_secs(1), INDEX_RETRY_MAX);
            loop {
                tokio::time::sleep(pause.next_delay()).await;
                match store.ensure_indexes().await {
                    Ok(()) => {
                        log::info!("MongoDB indexes created. ttl_index={:?}", store.ttl_support());
                        return;
                    }
                    Err(e) => log::debug!("MongoDB indexes still not created; will retry. error={e}"),
                }
            }
        });
    }

    /// Creates the indexes (idempotent: an existing identical index is a no-op, an existing
    /// index of another shape under the same name is left alone with a warning).
    ///
    /// # Errors
    /// `Unavailable` when the server cannot be reached or refuses for another reason.
    pub async fn ensure_indexes(&self) -> Result<(), BackendError> {
        let coll = self.collection();
        for keys in [
            doc! { "jobName": 1, "startTime": -1 },
            doc! { "status": 1, "startTime": -1 },
            doc! { "startTime": -1, "_id": -1 },
        ] {
            create_index(coll, IndexModel::builder().keys(keys).build()).await?;
        }
        let ttl = IndexModel::builder()
            .keys(doc! { "expireAt": 1 })
            .options(IndexOptions::builder().expire_after(Duration::ZERO).name("expireAt_ttl".to_owned()).build())
            .build();
        let support = match coll.create_index(ttl).await {
            Ok(_) => TtlSupport::Supported,
            Err(e) if command_code(&e) == Some(codes::NOT_IMPLEMENTED) || e.to_string().contains("not implemented") => {
                log::info!(
                    "This MongoDB-wire server has no TTL indexes; run retention is the hourly purge only. error={e}"
                );
                create_index(coll, IndexModel::builder().keys(doc! { "expireAt": 1 }).build()).await?;
                TtlSupport::Unsupported
            }
            Err(e) if is_index_conflict(&e) => {
                log::warn!("An index named expireAt_ttl of another shape exists; left alone, retention is the hourly purge. error={e}");
                TtlSupport::Unsupported
            }
            Err(e) => return Err(unavailable("cannot create the TTL index", e)),
        };
        let n = match support {
            TtlSupport::Supported => 1,
            TtlSupport::Unsupported => 2,
            TtlSupport::Unknown => 0,
        };
        self.shared().ttl.store(n, Ordering::Relaxed);
        Ok(())
    }
}

fn is_index_conflict(e: &mongodb::error::Error) -> bool {
    matches!(command_code(e), Some(codes::INDEX_OPTIONS_CONFLICT | codes::INDEX_KEY_SPECS_CONFLICT))
}

async fn create_index(coll: &Collection<Document>, index: IndexModel) -> Result<(), BackendError> {
    let keys = index.keys.clone();
    match coll.create_index(index).await {
        Ok(_) => Ok(()),
        Err(e) if is_index_conflict(&e) => {
            log::warn!("An index of another shape exists under the same name; left alone. keys={keys} error={e}");
            Ok(())
        }
        Err(e) => Err(unavailable(&format!("cannot create index {keys}"), e)),
    }
}
