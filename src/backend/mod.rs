//! Ports and adapters (ARCHITECTURE.md "Ports and adapters").
//!
//! The actors and the HTTP layer talk only to the four traits re-exported here, held as
//! `Arc<dyn Trait>` in [`Backends`]. This module tree is the only code that names a storage
//! crate (rusqlite, etcd-client, mongodb). See
//! [`guide`] for what each method must guarantee and how to add an adapter.

pub mod claims;
// The suite every adapter must pass: for the unit tests, and for the integration tests and benches
// through the `conformance` feature (enabled by this package's dev-dependency on itself), so a
// release build does not carry it.
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod embedded;
pub mod etcd;
// Fault injection over the real adapters, for the same builds as the conformance suite.
#[cfg(any(test, feature = "conformance"))]
pub mod faulty;
pub mod guide;
pub mod jobs;
pub mod logs;
pub mod members;
pub mod mongo;

use std::path::Path;
use std::sync::Arc;

pub use claims::{Claims, LostStream, RunningMark, StoredAlert, TickClaim, TickRequest};
pub use jobs::{Change, JobSnapshot, JobStore, Precondition, PutOutcome, Signal, WatchEvent, WatchStream};
pub use logs::{JobStats, LogStore, RetentionPolicy, RunBucket, RunCursor, RunFilter, RunPage, RunPoint, RunQuery};
pub use members::{Membership, SessionEvent};

use crate::domain::{JobName, Revision, RunId, RunStatus};

/// Errors at the storage boundary, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The job does not exist.
    #[error("job {name} not found")]
    JobNotFound {
        /// Job name.
        name: JobName,
    },
    /// Create of a job that exists.
    #[error("job {name} already exists")]
    JobExists {
        /// Job name.
        name: JobName,
    },
    /// Optimistic concurrency: the stored version is not the expected one.
    #[error("version conflict on job {name}: expected {expected}, found {found}")]
    VersionConflict {
        /// Job name.
        name: JobName,
        /// Version the client sent.
        expected: u64,
        /// Version in the store.
        found: u64,
    },
    /// A watch asked for history the store no longer has; the watcher must resync.
    #[error("watch from revision {requested} impossible: history compacted up to {compacted}")]
    Compacted {
        /// Requested start revision.
        requested: Revision,
        /// Oldest revision still available minus one.
        compacted: Revision,
    },
    /// The store cannot be reached or refused the request; retrying later may work.
    #[error("{backend} unavailable: {message}")]
    Unavailable {
        /// Which backend (`embedded job store`, `etcd`, `mongodb`, ...).
        backend: &'static str,
        /// What failed.
        message: String,
    },
    /// The store refused distcron's credentials or certificate (or a credential file is
    /// unusable): the operator must act; retrying does not help.
    #[error("{backend} refused access: {message}")]
    Refused {
        /// Which backend.
        backend: &'static str,
        /// What was refused and which keys to check.
        message: String,
    },
    /// A document under a job key is not a valid job (issue 9, item 8): it is not planned and is
    /// reported until fixed, replaced without a version check, or deleted.
    #[error("stored job {name} is not a valid job: {reason}")]
    InvalidStoredJob {
        /// The job key's name.
        name: JobName,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// Data in the store cannot be read back.
    #[error("corrupt data in {backend}: {message}")]
    Corrupt {
        /// Which backend.
        backend: &'static str,
        /// What is wrong.
        message: String,
    },
    /// SQLite failed.
    #[error("sqlite: {context}")]
    Sqlite {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The store refused some records of a batch for reasons of their own (validation, size,
    /// ...); every other record of the batch was written.
    #[error("{backend} refused {} record(s) of the batch, first: {}", rejected.len(), rejected.first().map_or("", |r| r.reason.as_str()))]
    Rejected {
        /// Which backend.
        backend: &'static str,
        /// The refused records.
        rejected: Vec<RejectedRun>,
    },
    /// A file operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// One record a store refused (see [`BackendError::Rejected`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRun {
    /// The run.
    pub id: RunId,
    /// The status of the refused record (a run's `running` and final records differ).
    pub status: RunStatus,
    /// The store's reason, with its error code.
    pub reason: String,
}

impl BackendError {
    /// True for errors a retry may cure (outage), false for answers (not found, conflict).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Sqlite { .. } | Self::Io { .. })
    }
}

/// The coordination ports of one configuration and the names of their adapters.
type CoordinationPorts =
    (Arc<dyn JobStore>, Arc<dyn Membership>, Arc<dyn Claims>, (&'static str, &'static str, &'static str));

/// The four ports, as used by the actors and the HTTP layer.
#[derive(Clone)]
pub struct Backends {
    /// Jobs, kill and run-now signals, watch.
    pub jobs: Arc<dyn JobStore>,
    /// Live workers.
    pub members: Arc<dyn Membership>,
    /// Tick claims and running marks.
    pub claims: Arc<dyn Claims>,
    /// Run records.
    pub logs: Arc<dyn LogStore>,
    /// Human-readable names of the adapters in use, for health and logs.
    pub kinds: BackendKinds,
}

/// Which adapter serves each port.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendKinds {
    /// Job store adapter.
    pub jobs: &'static str,
    /// Membership adapter.
    pub members: &'static str,
    /// Claims adapter.
    pub claims: &'static str,
    /// Log store adapter.
    pub logs: &'static str,
}

impl Backends {
    /// The embedded single-node backends under `data_dir`.
    ///
    /// # Errors
    /// When `data_dir` cannot be created or a store file cannot be opened.
    pub fn embedded(data_dir: &Path) -> Result<Self, BackendError> {
        std::fs::create_dir_all(data_dir).map_err(|source| BackendError::Io {
            context: format!("cannot create data_dir {}", data_dir.display()),
            source,
        })?;
        Ok(Self {
            jobs: Arc::new(embedded::EmbeddedJobStore::open(&data_dir.join("jobs.sqlite3"))?),
            members: Arc::new(embedded::EmbeddedMembership::default()),
            claims: Arc::new(
                embedded::EmbeddedClaims::open(&data_dir.join("claims.sqlite3"))?
                    .with_alert_file(&data_dir.join("alerts.sqlite3"))?,
            ),
            logs: Arc::new(embedded::SqliteLogStore::open(&data_dir.join("runs.sqlite3"))?),
            kinds: BackendKinds {
                jobs: "embedded (SQLite)",
                members: "embedded (in-process)",
                claims: "embedded (in-process, last ticks in SQLite)",
                logs: "embedded (SQLite)",
            },
        })
    }

    /// The backends `config` asks for: etcd or embedded for jobs, membership and claims;
    /// MongoDB or embedded SQLite for run logs (any mix is a config choice).
    ///
    /// # Errors
    /// When a store cannot be opened or reached, or an adapter is not part of this build.
    pub async fn from_config(config: &crate::config::Config) -> Result<Self, BackendError> {
        let data_dir = config.data_dir.as_path();
        std::fs::create_dir_all(data_dir).map_err(|source| BackendError::Io {
            context: format!("cannot create data_dir {}", data_dir.display()),
            source,
        })?;
        // Coordination: jobs, membership, claims.
        let (jobs, members, claims, coordination): CoordinationPorts = if config.uses_etcd() {
            let etcd = etcd::EtcdBackend::connect(&config.etcd_settings()).await?;
            if let Err(e) = etcd.check_access().await {
                // A refused certificate or password is a start-up error; an outage is not.
                if matches!(e, BackendError::Refused { .. }) {
                    return Err(e);
                }
                log::warn!(
                    "etcd does not answer yet; this node claims nothing until it does. endpoints={:?} error={e}",
                    config.etcd.endpoints
                );
            }
            (etcd.jobs, etcd.members, etcd.claims, ("etcd", "etcd", "etcd"))
        } else {
            (
                Arc::new(embedded::EmbeddedJobStore::open(&data_dir.join("jobs.sqlite3"))?),
                Arc::new(embedded::EmbeddedMembership::default()),
                Arc::new(
                    embedded::EmbeddedClaims::open(&data_dir.join("claims.sqlite3"))?
                        .with_alert_file(&data_dir.join("alerts.sqlite3"))?,
                ),
                ("embedded (SQLite)", "embedded (in-process)", "embedded (in-process, last ticks in SQLite)"),
            )
        };
        // Run logs.
        let (logs, logs_kind): (Arc<dyn LogStore>, &'static str) = if config.uses_mongo() {
            let settings = mongo::MongoSettings::from_config(config)?;
            (Arc::new(mongo::MongoLogStore::start(&settings).await?), "MongoDB")
        } else {
            (Arc::new(embedded::SqliteLogStore::open(&data_dir.join("runs.sqlite3"))?), "embedded (SQLite)")
        };
        Ok(Self {
            jobs,
            members,
            claims,
            logs,
            kinds: BackendKinds {
                jobs: coordination.0,
                members: coordination.1,
                claims: coordination.2,
                logs: logs_kind,
            },
        })
    }
}
