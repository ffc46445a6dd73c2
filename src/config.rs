//! Configuration: the CLI (clap), the config file (TOML) and `DISTCRON_*` variables, merged as
//! built-in defaults < file < environment < flags into one validated [`Config`].
//!
//! Every key lives in [`Config`] with its default; `config.toml` at the repository root documents
//! each one and parses to `Config::default()` (a test checks). Unknown keys and bad values are
//! rejected with one line naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::{Deserialize, Serialize};

/// Which parts of distcron this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Worker actors and the HTTP front end (default).
    #[default]
    All,
    /// HTTP front end (JSON API + admin page) only; needs etcd and MongoDB.
    Master,
    /// Worker actors only; needs etcd and MongoDB.
    Worker,
}

impl Role {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Master => "master",
            Self::Worker => "worker",
        }
    }
}

/// Command line. Every flag is also a `DISTCRON_*` variable (see [`ENV_KEYS`]) and a config key.
#[derive(Debug, Default, Parser)]
#[command(name = "distcron", version, about = "A distributed cron: scheduled shell jobs, run exactly once per tick.")]
pub struct Cli {
    /// Config file (default: ./config.toml when present).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Role: all (default), master or worker.
    #[arg(long, value_enum)]
    pub role: Option<Role>,
    /// HTTP listen address (default 127.0.0.1:8070).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Data directory for embedded stores and the log spool.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// etcd endpoints, comma separated.
    #[arg(long, value_name = "URLS")]
    pub etcd_endpoints: Option<String>,
    /// MongoDB URI.
    #[arg(long, value_name = "URI")]
    pub mongo_uri: Option<String>,
    /// Bearer token guarding the API.
    #[arg(long, value_name = "TOKEN")]
    pub api_token: Option<String>,
    /// Turn authentication off (loopback listen addresses only).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// File holding the admin bearer token (keeps it out of argv and the environment).
    #[arg(long, value_name = "PATH")]
    pub api_token_file: Option<PathBuf>,
    /// Default time zone for jobs without one.
    #[arg(long, value_name = "IANA")]
    pub default_tz: Option<String>,
    /// Log level (error, warn, info, debug, trace); RUST_LOG wins when set.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Executor pool size.
    #[arg(long, value_name = "N")]
    pub pool_size: Option<u32>,
    /// Log batch flush interval in ms.
    #[arg(long, value_name = "MS")]
    pub flush_ms: Option<u64>,
    /// Worker labels, comma separated (`zone=a,gpu=true`); replaces the config's `labels`.
    #[arg(long, value_name = "NAME=VALUE,...")]
    pub labels: Option<String>,
}

impl Cli {
    /// Flags that carry a secret on the command line (visible in `ps` and `/proc/<pid>/cmdline`),
    /// each with what to use instead: `--api-token`, and a `--mongo-uri` with a password.
    pub fn secrets_in_argv(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if self.api_token.as_deref().is_some_and(|t| !t.is_empty()) {
            out.push(("--api-token", "--api-token-file or api_token in the config file"));
        }
        if self.mongo_uri.as_deref().is_some_and(uri_has_password) {
            out.push(("--mongo-uri", "mongo.uri in the config file (mode 0600)"));
        }
        out
    }
}

/// Whether a URI's authority carries `user:password@`.
fn uri_has_password(uri: &str) -> bool {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Role.
    pub role: Role,
    /// HTTP listen address.
    pub listen: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// The admin bearer token; empty = read from `api_token_file`, else `data_dir/api_token`
    /// (generated at first start). Resolved at start-up by [`crate::api_token`].
    pub api_token: String,
    /// Turn authentication off; allowed on loopback listen addresses only.
    pub insecure_no_auth: bool,
    /// Let `master`/`worker` keep run records in the node's own SQLite file instead of MongoDB
    /// (each node then sees only its own runs; tests and experiments).
    pub allow_local_run_log: bool,
    /// Default IANA zone of jobs without `tz`.
    pub default_tz: String,
    /// Log level when RUST_LOG is not set.
    pub log_level: String,
    /// Worker id; empty = generated once and kept in `data_dir/node_id`.
    pub node_id: String,
    /// Scheduler settings.
    pub scheduler: SchedulerConfig,
    /// Executor settings.
    pub executor: ExecutorConfig,
    /// Log batching settings.
    pub log_batch: LogBatchConfig,
    /// HTTP settings.
    pub http: HttpConfig,
    /// etcd (cluster mode).
    pub etcd: EtcdConfig,
    /// MongoDB (run logs in cluster mode).
    pub mongo: MongoConfig,
    /// File holding the admin bearer token (first line, surrounding whitespace ignored); empty =
    /// none. Exclusive with `api_token`.
    pub api_token_file: PathBuf,
    /// Named tokens and failed-authentication limits.
    pub auth: AuthConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// Alerts: channels, default rules, evaluation (README "Alerts").
    pub alerts: crate::alerting::AlertsConfig,
    /// The Prometheus `/metrics` endpoint.
    pub metrics: MetricsConfig,
    /// This worker's labels (README "Worker labels"), published in its membership record and
    /// matched against each job's `selector`. TOML `labels = { zone = "a" }`; flag `--labels` and
    /// `DISTCRON_LABELS` take the comma form `zone=a,gpu=true`.
    pub labels: crate::domain::Labels,
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Failed authentications answered per client address per second before 429 (the burst too).
    pub failed_per_sec: u32,
    /// Named tokens (`[[auth.tokens]]`), each with a role and the SHA-256 of its value.
    pub tokens: Vec<NamedToken>,
}

/// One `[[auth.tokens]]` entry. In `DISTCRON_AUTH_TOKENS` each is written `name:role:sha256`,
/// entries separated by commas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "NamedTokenRepr")]
pub struct NamedToken {
    /// Who the token is: the actor in the audit log.
    pub name: String,
    /// What it may do.
    pub role: crate::domain::AccessRole,
    /// Hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`); the token itself is never
    /// stored in config.
    pub sha256: String,
}

/// How a [`NamedToken`] may be written: a table, or `name:role:sha256`.
#[derive(Deserialize)]
#[serde(untagged)]
enum NamedTokenRepr {
    Table { name: String, role: crate::domain::AccessRole, sha256: String },
    Compact(String),
}

impl TryFrom<NamedTokenRepr> for NamedToken {
    type Error = String;

    fn try_from(repr: NamedTokenRepr) -> Result<Self, String> {
        match repr {
            NamedTokenRepr::Table { name, role, sha256 } => Ok(Self { name, role, sha256 }),
            NamedTokenRepr::Compact(raw) => {
                let mut parts = raw.splitn(3, ':');
                let (Some(name), Some(role), Some(sha256)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(format!("token {raw:?} is not name:role:sha256"));
                };
                let role = match role.trim() {
                    "viewer" => crate::domain::AccessRole::Viewer,
                    "operator" => crate::domain::AccessRole::Operator,
                    "admin" => crate::domain::AccessRole::Admin,
                    other => return Err(format!("role {other:?} is not viewer, operator or admin")),
                };
                Ok(Self { name: name.trim().to_owned(), role, sha256: sha256.trim().to_owned() })
            }
        }
    }
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Audit entries older than this are purged (hourly), days.
    pub retention_days: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { failed_per_sec: 10, tokens: Vec::new() }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` without a token (default: the API's auth, role viewer).
    pub public: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { retention_days: 90 }
    }
}

/// `[scheduler]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How long running jobs may finish at shutdown before they are killed, seconds.
    pub shutdown_grace_secs: u64,
    /// A tick later than this when it is due is not run but recorded as `missed`, ms.
    pub misfire_grace_ms: u64,
    /// Membership heartbeat interval, seconds.
    pub heartbeat_secs: u64,
    /// Cluster: how long the next-ranked worker waits before claiming a tick, ms.
    pub failover_grace_ms: u64,
    /// Cluster: what happens to this worker's runs when its etcd session is lost.
    pub on_session_loss: SessionLossPolicy,
}

/// What a worker does with its runs when it loses its etcd session (`scheduler.on_session_loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionLossPolicy {
    /// Let them run to the end and record their real outcome (default).
    #[default]
    Finish,
    /// Kill them at once (recorded `killed`), so nothing runs unseen by the cluster.
    Kill,
}

/// `[executor]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorConfig {
    /// Concurrent runs on this node.
    pub pool_size: u32,
    /// Runs waiting for a free executor; beyond this a tick is recorded `skipped` (saturated).
    pub queue_capacity: u32,
    /// Shell used as `<shell> -c <command>`.
    pub shell: String,
    /// Output kept per run (head + tail), bytes.
    pub max_output_bytes: u64,
    /// SIGTERM -> SIGKILL grace on timeout, kill and end of run, ms.
    pub kill_grace_ms: u64,
    /// What a restarted node does with the processes of runs its previous life left running.
    pub on_restart: RestartPolicy,
    /// Users a job may name in `run_as_user` (a root node only); empty = none.
    pub allowed_users: Vec<String>,
    /// SIGTERM to a run's shell when distcron dies (`PR_SET_PDEATHSIG`; ignored with
    /// `on_restart = "adopt"`). Costs a `fork` instead of `posix_spawn` per run.
    pub death_signal: bool,
}

/// What a restarted node does with processes its previous life left running
/// (`executor.on_restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartPolicy {
    /// SIGTERM to each such run's processes, SIGKILL after `kill_grace_ms`; the run is
    /// recorded `lost` (default). Their shells also get SIGTERM the moment distcron dies.
    #[default]
    Terminate,
    /// Leave them running, keep each run live (for `forbid`) until its processes are gone, then
    /// record it `lost` with its real end time. Shells get no death signal in this mode.
    Adopt,
}

impl RestartPolicy {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Terminate => "terminate",
            Self::Adopt => "adopt",
        }
    }
}

/// `[log_batch]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogBatchConfig {
    /// Flush when this many records are buffered.
    pub max_records: u32,
    /// Flush at least this often, ms.
    pub flush_ms: u64,
    /// First retry delay after a failed write, ms (doubles up to `retry_max_ms`).
    pub retry_initial_ms: u64,
    /// Longest retry delay, ms.
    pub retry_max_ms: u64,
    /// Spool file bound, bytes (older outputs are trimmed beyond it; no record is dropped).
    pub spool_max_bytes: u64,
    /// Delete runs older than this many days; 0 = keep forever.
    pub retention_days: u32,
    /// Most bytes of run records held in memory waiting for the store; past it they go to the
    /// spool, so memory stays bounded whatever the store does.
    pub max_buffered_bytes: u64,
    /// Most bytes of run records per log-store call (and per spool chunk a replay reads): what
    /// one stuck write can hold in memory, with its encodings.
    pub max_batch_bytes: u64,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body, bytes.
    pub max_body_bytes: u64,
    /// HTTP worker threads; 0 = one per core.
    pub workers: u32,
    /// Host names (besides loopback names and addresses and the listen address) the `Host`
    /// header may carry; anything else is refused 421 (defeats DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// PEM certificate chain; with `tls_key_file`, every listener serves HTTPS only.
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: PathBuf,
    /// Most clients following run output (`GET /api/v1/runs/{id}/output?follow=1`) at once on
    /// this node, proxied streams included; beyond it 429.
    pub max_output_followers: u32,
    /// Base URL this node's listener is reached at by the master (`http://10.0.0.5:8070`),
    /// published in its membership record; empty = derived from `listen` (and TLS).
    pub advertise_addr: String,
    /// PEM CA the master trusts when it proxies to a worker's HTTPS listener; empty =
    /// `tls_cert_file` (one chain for the cluster), else the built-in web roots.
    pub peer_ca_file: PathBuf,
}

/// `[etcd]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// Endpoints; empty = embedded job store, claims and membership.
    pub endpoints: Vec<String>,
    /// Key prefix.
    pub prefix: String,
    /// Session lease TTL: a worker silent this long counts as dead (its runs become `lost`), seconds.
    pub session_ttl_secs: u64,
    /// Longest wait for one etcd request, ms.
    pub request_timeout_ms: u64,
    /// Longest wait for a connection to an endpoint, ms.
    pub connect_timeout_ms: u64,
    /// PEM file of the CA that signed etcd's server certificate; set = TLS (`https://` endpoints).
    pub tls_ca_file: String,
    /// PEM client certificate for etcd's `--client-cert-auth` (with `tls_key_file`).
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
    /// etcd user (etcd's own auth, `auth enable`); empty = none.
    pub user: String,
    /// File holding the etcd user's password (first line); never on the command line.
    pub password_file: String,
}

/// `[mongo]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MongoConfig {
    /// URI; empty = embedded SQLite log store.
    pub uri: String,
    /// Database.
    pub database: String,
    /// Collection.
    pub collection: String,
    /// File holding the URI (first line), so a password stays out of argv and the config file;
    /// set instead of `uri`.
    pub uri_file: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            role: Role::All,
            listen: "127.0.0.1:8070".into(),
            data_dir: PathBuf::from("./data"),
            api_token: String::new(),
            insecure_no_auth: false,
            allow_local_run_log: false,
            default_tz: "UTC".into(),
            log_level: "info".into(),
            node_id: String::new(),
            scheduler: SchedulerConfig::default(),
            executor: ExecutorConfig::default(),
            log_batch: LogBatchConfig::default(),
            http: HttpConfig::default(),
            etcd: EtcdConfig::default(),
            mongo: MongoConfig::default(),
            api_token_file: PathBuf::new(),
            auth: AuthConfig::default(),
            audit: AuditConfig::default(),
            alerts: crate::alerting::AlertsConfig::default(),
            metrics: MetricsConfig::default(),
            labels: crate::domain::Labels::new(),
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            shutdown_grace_secs: 30,
            misfire_grace_ms: 60_000,
            heartbeat_secs: 5,
            failover_grace_ms: 1_500,
            on_session_loss: SessionLossPolicy::Finish,
        }
    }
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            pool_size: 64,
            queue_capacity: 10_000,
            shell: "/bin/bash".into(),
            max_output_bytes: 256 * 1024,
            kill_grace_ms: 5_000,
            on_restart: RestartPolicy::Terminate,
            allowed_users: Vec::new(),
            death_signal: true,
        }
    }
}

impl Default for LogBatchConfig {
    fn default() -> Self {
        Self {
            max_records: 500,
            flush_ms: 200,
            retry_initial_ms: 200,
            retry_max_ms: 30_000,
            spool_max_bytes: 1024 * 1024 * 1024,
            retention_days: 0,
            max_buffered_bytes: 16 * 1024 * 1024,
            max_batch_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            workers: 2,
            allowed_hosts: Vec::new(),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            max_output_followers: 64,
            advertise_addr: String::new(),
            peer_ca_file: PathBuf::new(),
        }
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            prefix: "/cron/".into(),
            session_ttl_secs: 10,
            request_timeout_ms: 5_000,
            connect_timeout_ms: 3_000,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            user: String::new(),
            password_file: String::new(),
        }
    }
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self { uri: String::new(), database: "cron".into(), collection: "log".into(), uri_file: String::new() }
    }
}

/// A configuration problem, reported as one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has an unknown key or a bad value.
    #[error("config file {path}: {message}")]
    File {
        /// File.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A `DISTCRON_*` variable has a bad value.
    #[error("environment variable {var}: {message}")]
    Env {
        /// Variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A key has a value that parses but makes no sense.
    #[error("config key {key}: {message}")]
    Invalid {
        /// Dotted key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Every configurable key as (dotted key, environment variable).
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("role", "DISTCRON_ROLE"),
    ("listen", "DISTCRON_LISTEN"),
    ("data_dir", "DISTCRON_DATA_DIR"),
    ("api_token", "DISTCRON_API_TOKEN"),
    ("insecure_no_auth", "DISTCRON_INSECURE_NO_AUTH"),
    ("allow_local_run_log", "DISTCRON_ALLOW_LOCAL_RUN_LOG"),
    ("default_tz", "DISTCRON_DEFAULT_TZ"),
    ("log_level", "DISTCRON_LOG_LEVEL"),
    ("node_id", "DISTCRON_NODE_ID"),
    ("scheduler.shutdown_grace_secs", "DISTCRON_SCHEDULER_SHUTDOWN_GRACE_SECS"),
    ("scheduler.misfire_grace_ms", "DISTCRON_SCHEDULER_MISFIRE_GRACE_MS"),
    ("scheduler.heartbeat_secs", "DISTCRON_SCHEDULER_HEARTBEAT_SECS"),
    ("scheduler.failover_grace_ms", "DISTCRON_SCHEDULER_FAILOVER_GRACE_MS"),
    ("scheduler.on_session_loss", "DISTCRON_SCHEDULER_ON_SESSION_LOSS"),
    ("executor.pool_size", "DISTCRON_EXECUTOR_POOL_SIZE"),
    ("executor.queue_capacity", "DISTCRON_EXECUTOR_QUEUE_CAPACITY"),
    ("executor.shell", "DISTCRON_EXECUTOR_SHELL"),
    ("executor.max_output_bytes", "DISTCRON_EXECUTOR_MAX_OUTPUT_BYTES"),
    ("executor.kill_grace_ms", "DISTCRON_EXECUTOR_KILL_GRACE_MS"),
    ("executor.on_restart", "DISTCRON_EXECUTOR_ON_RESTART"),
    ("executor.death_signal", "DISTCRON_EXECUTOR_DEATH_SIGNAL"),
    ("executor.allowed_users", "DISTCRON_EXECUTOR_ALLOWED_USERS"),
    ("log_batch.max_records", "DISTCRON_LOG_BATCH_MAX_RECORDS"),
    ("log_batch.flush_ms", "DISTCRON_LOG_BATCH_FLUSH_MS"),
    ("log_batch.retry_initial_ms", "DISTCRON_LOG_BATCH_RETRY_INITIAL_MS"),
    ("log_batch.retry_max_ms", "DISTCRON_LOG_BATCH_RETRY_MAX_MS"),
    ("log_batch.spool_max_bytes", "DISTCRON_LOG_BATCH_SPOOL_MAX_BYTES"),
    ("log_batch.retention_days", "DISTCRON_LOG_BATCH_RETENTION_DAYS"),
    ("log_batch.max_buffered_bytes", "DISTCRON_LOG_BATCH_MAX_BUFFERED_BYTES"),
    ("log_batch.max_batch_bytes", "DISTCRON_LOG_BATCH_MAX_BATCH_BYTES"),
    ("http.max_body_bytes", "DISTCRON_HTTP_MAX_BODY_BYTES"),
    ("http.workers", "DISTCRON_HTTP_WORKERS"),
    ("etcd.endpoints", "DISTCRON_ETCD_ENDPOINTS"),
    ("etcd.prefix", "DISTCRON_ETCD_PREFIX"),
    ("etcd.session_ttl_secs", "DISTCRON_ETCD_SESSION_TTL_SECS"),
    ("etcd.request_timeout_ms", "DISTCRON_ETCD_REQUEST_TIMEOUT_MS"),
    ("etcd.connect_timeout_ms", "DISTCRON_ETCD_CONNECT_TIMEOUT_MS"),
    ("mongo.uri", "DISTCRON_MONGO_URI"),
    ("mongo.database", "DISTCRON_MONGO_DATABASE"),
    ("mongo.collection", "DISTCRON_MONGO_COLLECTION"),
    ("api_token_file", "DISTCRON_API_TOKEN_FILE"),
    ("http.allowed_hosts", "DISTCRON_HTTP_ALLOWED_HOSTS"),
    ("http.tls_cert_file", "DISTCRON_HTTP_TLS_CERT_FILE"),
    ("http.tls_key_file", "DISTCRON_HTTP_TLS_KEY_FILE"),
    ("auth.failed_per_sec", "DISTCRON_AUTH_FAILED_PER_SEC"),
    ("auth.tokens", "DISTCRON_AUTH_TOKENS"),
    ("audit.retention_days", "DISTCRON_AUDIT_RETENTION_DAYS"),
    ("etcd.tls_ca_file", "DISTCRON_ETCD_TLS_CA_FILE"),
    ("etcd.tls_cert_file", "DISTCRON_ETCD_TLS_CERT_FILE"),
    ("etcd.tls_key_file", "DISTCRON_ETCD_TLS_KEY_FILE"),
    ("etcd.user", "DISTCRON_ETCD_USER"),
    ("etcd.password_file", "DISTCRON_ETCD_PASSWORD_FILE"),
    ("mongo.uri_file", "DISTCRON_MONGO_URI_FILE"),
    ("alerts.poll_ms", "DISTCRON_ALERTS_POLL_MS"),
    ("alerts.evaluators_per_job", "DISTCRON_ALERTS_EVALUATORS_PER_JOB"),
    ("alerts.lookback_secs", "DISTCRON_ALERTS_LOOKBACK_SECS"),
    ("alerts.history_runs", "DISTCRON_ALERTS_HISTORY_RUNS"),
    ("alerts.retention_days", "DISTCRON_ALERTS_RETENTION_DAYS"),
    ("metrics.public", "DISTCRON_METRICS_PUBLIC"),
    ("labels", "DISTCRON_LABELS"),
    ("http.max_output_followers", "DISTCRON_HTTP_MAX_OUTPUT_FOLLOWERS"),
    ("http.advertise_addr", "DISTCRON_HTTP_ADVERTISE_ADDR"),
    ("http.peer_ca_file", "DISTCRON_HTTP_PEER_CA_FILE"),
];

impl Config {
    /// Loads the configuration from the process: `cli`, the real environment and the file.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, variable or key.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        Self::load_from(cli, |k| std::env::var(k).ok())
    }

    /// [`Config::load`] with an injected environment (for tests).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, variable or key.
    pub fn load_from(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid { key: "(defaults)", message: e.to_string() })?;
        // 1. the file
        let file = match &cli.config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from("config.toml")).filter(|p| p.exists()),
        };
        let mut table = match &file {
            Some(path) => read_file(path)?,
            None => toml::Table::new(),
        };
        if let Some(path) = &file {
            // reject unknown keys and wrong types from the file alone, so the message names the file
            toml::Value::Table(table.clone())
                .try_into::<Config>()
                .map_err(|e| ConfigError::File { path: path.clone(), message: one_line(&e.to_string()) })?;
        }
        // 2. the environment
        for (key, var) in ENV_KEYS {
            if let Some(raw) = env(var) {
                let value = typed_like(&defaults, key, &raw)
                    .map_err(|message| ConfigError::Env { var: (*var).to_owned(), message })?;
                set(&mut table, key, value);
            }
        }
        // 3. the flags
        let flags: [(&str, Option<String>); 13] = [
            ("role", cli.role.map(|r| r.as_str().to_owned())),
            ("listen", cli.listen.clone()),
            ("data_dir", cli.data_dir.as_ref().map(|p| p.display().to_string())),
            ("etcd.endpoints", cli.etcd_endpoints.clone()),
            ("mongo.uri", cli.mongo_uri.clone()),
            ("api_token", cli.api_token.clone()),
            ("insecure_no_auth", cli.insecure_no_auth.then(|| "true".to_owned())),
            ("default_tz", cli.default_tz.clone()),
            ("log_level", cli.log_level.clone()),
            ("executor.pool_size", cli.pool_size.map(|n| n.to_string())),
            ("log_batch.flush_ms", cli.flush_ms.map(|n| n.to_string())),
            ("api_token_file", cli.api_token_file.as_ref().map(|p| p.display().to_string())),
            ("labels", cli.labels.clone()),
        ];
        for (key, raw) in flags {
            if let Some(raw) = raw {
                let value = typed_like(&defaults, key, &raw)
                    .map_err(|message| ConfigError::Invalid { key: static_key(key), message })?;
                set(&mut table, key, value);
            }
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e| ConfigError::Invalid { key: "(merged)", message: one_line(&e.to_string()) })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, message: String| Err(ConfigError::Invalid { key, message });
        self.check_ranges()?;
        self.check_store_credentials()?;
        if self.listen_addr().is_none() {
            return bad("listen", format!("{:?} is not an address like 127.0.0.1:8070", self.listen));
        }
        if self.default_tz.parse::<chrono_tz::Tz>().is_err() {
            return bad(
                "default_tz",
                format!("unknown time zone {:?}; use an IANA name such as \"UTC\"", self.default_tz),
            );
        }
        if self.log_level.parse::<log::LevelFilter>().is_err() {
            return bad(
                "log_level",
                format!("{:?} is not one of off, error, warn, info, debug, trace", self.log_level),
            );
        }
        if self.executor.pool_size == 0 || self.executor.pool_size > 4096 {
            return bad("executor.pool_size", format!("{} is outside 1..=4096", self.executor.pool_size));
        }
        if self.executor.max_output_bytes < 1024 || self.executor.max_output_bytes > 64 * 1024 * 1024 {
            return bad(
                "executor.max_output_bytes",
                format!("{} is outside 1024..=67108864", self.executor.max_output_bytes),
            );
        }
        if self.executor.shell.is_empty() {
            return bad("executor.shell", "must not be empty".into());
        }
        if self.executor.allowed_users.len() > 1024 {
            return bad("executor.allowed_users", format!("{} users; at most 1024", self.executor.allowed_users.len()));
        }
        if let Some(user) = self.executor.allowed_users.iter().find(|u| {
            u.is_empty()
                || u.len() > 32
                || !u.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        }) {
            return bad("executor.allowed_users", format!("{user:?} is not an account name"));
        }
        if self.log_batch.max_records == 0 {
            return bad("log_batch.max_records", "must be at least 1".into());
        }
        if self.log_batch.flush_ms == 0 {
            return bad("log_batch.flush_ms", "must be at least 1".into());
        }
        if self.log_batch.retry_initial_ms == 0 || self.log_batch.retry_max_ms < self.log_batch.retry_initial_ms {
            return bad("log_batch.retry_max_ms", "retry_initial_ms must be >= 1 and <= retry_max_ms".into());
        }
        if !(1024 * 1024..=4 * 1024 * 1024 * 1024).contains(&self.log_batch.max_buffered_bytes) {
            return bad(
                "log_batch.max_buffered_bytes",
                format!("{} is outside 1048576..=4294967296", self.log_batch.max_buffered_bytes),
            );
        }
        if self.scheduler.heartbeat_secs == 0 {
            return bad("scheduler.heartbeat_secs", "must be at least 1".into());
        }
        if self.http.max_body_bytes < 1024 {
            return bad("http.max_body_bytes", "must be at least 1024".into());
        }
        if !self.node_id.is_empty()
            && !self.node_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return bad("node_id", format!("{:?} may hold only letters, digits, '.', '_' and '-'", self.node_id));
        }
        if self.etcd.session_ttl_secs < 2 || self.etcd.session_ttl_secs > 3600 {
            return bad("etcd.session_ttl_secs", format!("{} is outside 2..=3600", self.etcd.session_ttl_secs));
        }
        if self.etcd.request_timeout_ms < 100 {
            return bad("etcd.request_timeout_ms", "must be at least 100".into());
        }
        if self.etcd.connect_timeout_ms < 100 {
            return bad("etcd.connect_timeout_ms", "must be at least 100".into());
        }
        if !self.etcd.prefix.starts_with('/') || !self.etcd.prefix.ends_with('/') {
            return bad("etcd.prefix", format!("{:?} must start and end with '/'", self.etcd.prefix));
        }
        if self.auth.failed_per_sec == 0 || self.auth.failed_per_sec > 10_000 {
            return bad("auth.failed_per_sec", format!("{} is outside 1..=10000", self.auth.failed_per_sec));
        }
        if let Err(message) = check_named_tokens(&self.auth.tokens) {
            return bad("auth.tokens", message);
        }
        if self.audit.retention_days == 0 || self.audit.retention_days > 36_500 {
            return bad("audit.retention_days", format!("{} is outside 1..=36500", self.audit.retention_days));
        }
        if let Err((key, message)) = self.alerts.validate() {
            return bad(key, message);
        }
        if let Err(e) = crate::domain::labels::validate_labels(&self.labels) {
            return bad("labels", e.message);
        }
        self.validate_perimeter()
    }

    /// Range and shape checks of the perimeter keys (token sources, allowed hosts, TLS files).
    fn validate_perimeter(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, message: String| Err(ConfigError::Invalid { key, message });
        if !self.api_token.is_empty() && !self.api_token_file.as_os_str().is_empty() {
            return bad("api_token_file", "set either api_token or api_token_file, not both".into());
        }
        if self.api_token.chars().any(|c| c.is_whitespace() || c.is_control()) || self.api_token.len() > 4096 {
            return bad("api_token", "must be at most 4096 characters without spaces or control characters".into());
        }
        if self.http.allowed_hosts.len() > 256 {
            return bad("http.allowed_hosts", format!("{} entries; at most 256", self.http.allowed_hosts.len()));
        }
        for host in &self.http.allowed_hosts {
            let ok = !host.is_empty()
                && host.len() <= 253
                && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'));
            if !ok {
                return bad(
                    "http.allowed_hosts",
                    format!("{host:?} is not a host name or address (like \"cron.example.com\" or \"10.0.0.5\")"),
                );
            }
        }
        let (cert, key) =
            (self.http.tls_cert_file.as_os_str().is_empty(), self.http.tls_key_file.as_os_str().is_empty());
        if cert != key {
            return bad("http.tls_key_file", "set both http.tls_cert_file and http.tls_key_file, or neither".into());
        }
        let advertise = self.http.advertise_addr.trim();
        if !advertise.is_empty() {
            let rest = advertise.strip_prefix("http://").or_else(|| advertise.strip_prefix("https://"));
            let ok = rest.is_some_and(|r| {
                !r.is_empty() && r.len() <= 300 && !r.contains(['/', '?', '#', '@', ' ']) && r.contains(':')
            });
            if !ok {
                return bad(
                    "http.advertise_addr",
                    format!("{advertise:?} must be a base URL with a port, like \"http://10.0.0.5:8070\""),
                );
            }
        }
        Ok(())
    }

    /// The base URL a worker advertises for its listener: `http.advertise_addr`, else the
    /// scheme (https with TLS) and `listen`, an unspecified host (`0.0.0.0`, `::`) replaced by
    /// `host` (the node's first non-loopback address).
    pub fn advertised_api_addr(&self, host: Option<&str>) -> String {
        let configured = self.http.advertise_addr.trim().trim_end_matches('/');
        if !configured.is_empty() {
            return configured.to_owned();
        }
        let scheme = if self.tls_enabled() { "https" } else { "http" };
        match self.listen_addr() {
            Some(addr) if addr.ip().is_unspecified() => {
                let host = host.unwrap_or("127.0.0.1");
                let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
                format!("{scheme}://{host}:{}", addr.port())
            }
            Some(addr) => format!("{scheme}://{addr}"),
            None => format!("{scheme}://{}", self.listen),
        }
    }

    /// Whether the HTTP listeners serve HTTPS (`http.tls_cert_file` and `http.tls_key_file` set).
    pub fn tls_enabled(&self) -> bool {
        !self.http.tls_cert_file.as_os_str().is_empty() && !self.http.tls_key_file.as_os_str().is_empty()
    }

    /// Whether the listen address is a loopback address.
    pub fn listens_on_loopback(&self) -> bool {
        self.listen_addr().is_some_and(|a| a.ip().is_loopback())
    }

    /// Every numeric key with its accepted range (issue 9, item 8): (key, value, min, max).
    /// Durations, sizes and pool sizes outside these stop the start with one line naming the
    /// key and the range, before any arithmetic on them could overflow.
    pub fn ranges(&self) -> Vec<(&'static str, u64, u64, u64)> {
        const DAY_MS: u64 = 86_400_000;
        const GIB: u64 = 1024 * 1024 * 1024;
        let (s, e, l, h, d) = (&self.scheduler, &self.executor, &self.log_batch, &self.http, &self.etcd);
        vec![
            ("scheduler.shutdown_grace_secs", s.shutdown_grace_secs, 0, 86_400),
            ("scheduler.misfire_grace_ms", s.misfire_grace_ms, 0, 7 * DAY_MS),
            ("scheduler.heartbeat_secs", s.heartbeat_secs, 1, 3_600),
            ("scheduler.failover_grace_ms", s.failover_grace_ms, 0, 3_600_000),
            ("executor.pool_size", u64::from(e.pool_size), 1, 4_096),
            ("executor.queue_capacity", u64::from(e.queue_capacity), 1, 10_000_000),
            ("executor.max_output_bytes", e.max_output_bytes, 1_024, 64 * 1024 * 1024),
            ("executor.kill_grace_ms", e.kill_grace_ms, 0, 3_600_000),
            ("log_batch.max_records", u64::from(l.max_records), 1, 100_000),
            ("log_batch.flush_ms", l.flush_ms, 1, 3_600_000),
            ("log_batch.retry_initial_ms", l.retry_initial_ms, 1, DAY_MS),
            ("log_batch.retry_max_ms", l.retry_max_ms, 1, DAY_MS),
            ("log_batch.spool_max_bytes", l.spool_max_bytes, 1024 * 1024, 1024 * GIB),
            ("log_batch.retention_days", u64::from(l.retention_days), 0, 36_500),
            ("log_batch.max_batch_bytes", l.max_batch_bytes, 64 * 1024, 256 * 1024 * 1024),
            ("http.max_body_bytes", h.max_body_bytes, 1_024, GIB),
            ("http.workers", u64::from(h.workers), 0, 1_024),
            ("http.max_output_followers", u64::from(h.max_output_followers), 1, 10_000),
            ("etcd.session_ttl_secs", d.session_ttl_secs, 2, 3_600),
            ("etcd.request_timeout_ms", d.request_timeout_ms, 100, 600_000),
            ("etcd.connect_timeout_ms", d.connect_timeout_ms, 100, 600_000),
        ]
        .into_iter()
        .chain(self.alerts.ranges())
        .collect()
    }

    fn check_ranges(&self) -> Result<(), ConfigError> {
        for (key, value, min, max) in self.ranges() {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::Invalid { key, message: format!("{value} is outside {min}..={max}") });
            }
        }
        Ok(())
    }

    /// TLS and credential keys that only make sense together (issue 9, item 5).
    fn check_store_credentials(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, message: &str| Err(ConfigError::Invalid { key, message: message.to_owned() });
        let etcd = &self.etcd;
        if etcd.tls_cert_file.is_empty() != etcd.tls_key_file.is_empty() {
            return bad("etcd.tls_cert_file", "set both etcd.tls_cert_file and etcd.tls_key_file, or neither");
        }
        if !etcd.tls_cert_file.is_empty() && etcd.tls_ca_file.is_empty() {
            return bad("etcd.tls_ca_file", "a client certificate needs TLS: set etcd.tls_ca_file too");
        }
        if etcd.user.is_empty() != etcd.password_file.is_empty() {
            return bad("etcd.password_file", "set both etcd.user and etcd.password_file, or neither");
        }
        if !etcd.user.is_empty() && etcd.user.contains(char::is_whitespace) {
            return bad("etcd.user", "must not contain white space");
        }
        let tls = !etcd.tls_ca_file.is_empty();
        for ep in &etcd.endpoints {
            if tls && ep.starts_with("http://") {
                let message = format!("{ep:?}: with etcd.tls_ca_file set, endpoints must be https://");
                return Err(ConfigError::Invalid { key: "etcd.endpoints", message });
            }
            if !tls && ep.starts_with("https://") {
                let message =
                    format!("{ep:?}: an https:// endpoint needs etcd.tls_ca_file (the CA of etcd's certificate)");
                return Err(ConfigError::Invalid { key: "etcd.endpoints", message });
            }
        }
        if !self.mongo.uri.is_empty() && !self.mongo.uri_file.is_empty() {
            return bad("mongo.uri_file", "set mongo.uri or mongo.uri_file, not both");
        }
        Ok(())
    }

    /// The parsed listen address.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }

    /// The parsed default zone (validated at load).
    pub fn default_zone(&self) -> chrono_tz::Tz {
        self.default_tz.parse().unwrap_or(chrono_tz::UTC)
    }

    /// Whether cluster (etcd) coordination is configured.
    pub fn uses_etcd(&self) -> bool {
        !self.etcd.endpoints.is_empty()
    }

    /// The etcd adapter's settings.
    pub fn etcd_settings(&self) -> crate::backend::etcd::EtcdSettings {
        crate::backend::etcd::EtcdSettings {
            endpoints: self.etcd.endpoints.clone(),
            prefix: self.etcd.prefix.clone(),
            session_ttl: std::time::Duration::from_secs(self.etcd.session_ttl_secs),
            request_timeout: std::time::Duration::from_millis(self.etcd.request_timeout_ms),
            connect_timeout: std::time::Duration::from_millis(self.etcd.connect_timeout_ms),
            tls: (!self.etcd.tls_ca_file.is_empty()).then(|| crate::backend::etcd::EtcdTls {
                ca_file: PathBuf::from(&self.etcd.tls_ca_file),
                client: (!self.etcd.tls_cert_file.is_empty())
                    .then(|| (PathBuf::from(&self.etcd.tls_cert_file), PathBuf::from(&self.etcd.tls_key_file))),
            }),
            auth: (!self.etcd.user.is_empty())
                .then(|| (self.etcd.user.clone(), PathBuf::from(&self.etcd.password_file))),
        }
    }

    /// Whether MongoDB run logs are configured (`mongo.uri` or `mongo.uri_file`).
    pub fn uses_mongo(&self) -> bool {
        !self.mongo.uri.is_empty() || !self.mongo.uri_file.is_empty()
    }
}

fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::File { path: path.to_owned(), message: one_line(&e.to_string()) })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn static_key(key: &str) -> &'static str {
    ENV_KEYS.iter().find(|(k, _)| *k == key).map_or("(flag)", |(k, _)| k)
}

/// Parses `raw` into the TOML type the default value of `key` has.
/// Names unique, printable and not `anonymous` (the audit log's actor without auth) or `admin`
/// (the `api_token`'s name); hashes 64 hex digits, each used once.
fn check_named_tokens(tokens: &[NamedToken]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    let mut hashes = std::collections::HashSet::new();
    for t in tokens {
        if t.name.is_empty()
            || t.name.len() > 64
            || !t.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        {
            return Err(format!("name {:?} must be 1-64 letters, digits, '.', '_', '-' or '@'", t.name));
        }
        if t.name == "anonymous" || t.name == "admin" {
            return Err(format!("name {:?} is reserved", t.name));
        }
        if !names.insert(t.name.as_str()) {
            return Err(format!("name {:?} is used twice", t.name));
        }
        if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "sha256 of {:?} must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum), not the token itself",
                t.name
            ));
        }
        if !hashes.insert(t.sha256.to_ascii_lowercase()) {
            return Err(format!("token {:?} has the same sha256 as another token", t.name));
        }
    }
    Ok(())
}

fn typed_like(defaults: &toml::Value, key: &str, raw: &str) -> Result<toml::Value, String> {
    let mut cur = defaults;
    for part in key.split('.') {
        cur = cur.get(part).ok_or_else(|| format!("unknown key {key}"))?;
    }
    Ok(match cur {
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.trim().parse::<i64>().map_err(|_| format!("{raw:?} is not a whole number (key {key})"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" | "" => false,
            _ => return Err(format!("{raw:?} is not true or false (key {key})")),
        }),
        // A map of strings (`labels`): the comma form `name=value,...`.
        toml::Value::Table(_) => toml::Value::Table(
            crate::domain::labels::parse_labels(raw)
                .map_err(|e| format!("{} (key {key})", e.message))?
                .into_iter()
                .map(|(k, v)| (k, toml::Value::String(v)))
                .collect(),
        ),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_owned()),
    })
}

fn set(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut cur = table;
    for p in parts {
        let entry = cur.entry(p.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        match entry {
            toml::Value::Table(t) => cur = t,
            _ => return,
        }
    }
    cur.insert(last.to_owned(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli_with(path: &Path) -> Cli {
        Cli { config: Some(path.to_owned()), ..Cli::default() }
    }

    #[test]
    fn shipped_config_toml_parses_to_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let cfg = Config::load_from(&cli_with(&path), |_| None).expect("config.toml loads");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn every_key_has_an_env_variable() {
        let v = toml::Value::try_from(Config::default()).expect("ser");
        let mut keys = Vec::new();
        for (k, val) in v.as_table().expect("table") {
            match val.as_table() {
                Some(t) => keys.extend(t.keys().map(|s| format!("{k}.{s}"))),
                None => keys.push(k.clone()),
            }
        }
        // Structured keys (tables of rules and channels) are set in the file only.
        const FILE_ONLY: &[&str] = &["alerts.rules", "alerts.channels"];
        for k in keys.into_iter().filter(|k| !FILE_ONLY.contains(&k.as_str())) {
            let (_, var) = ENV_KEYS.iter().find(|(ek, _)| *ek == k).unwrap_or_else(|| panic!("no env var for {k}"));
            assert_eq!(*var, format!("DISTCRON_{}", k.replace('.', "_").to_uppercase()));
        }
    }

    #[test]
    fn labels_come_from_the_file_the_environment_or_the_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "labels = { zone = \"a\", gpu = \"true\" }\n").expect("write");
        let pairs = |l: &crate::domain::Labels| crate::domain::labels::format_labels(l);
        let cfg = Config::load_from(&cli_with(&path), |_| None).expect("file");
        assert_eq!(pairs(&cfg.labels), "gpu=true,zone=a");
        let env = |k: &str| (k == "DISTCRON_LABELS").then(|| "zone=b, rack=r1".to_owned());
        let cfg = Config::load_from(&cli_with(&path), env).expect("env");
        assert_eq!(pairs(&cfg.labels), "rack=r1,zone=b", "the variable replaces the file's map");
        let cli = Cli { labels: Some("zone=c".into()), ..cli_with(&path) };
        assert_eq!(pairs(&Config::load_from(&cli, env).expect("flag").labels), "zone=c");
        // A bad label is a one-line error naming it, whatever its source.
        let cli = Cli { labels: Some("zone=a b".into()), ..cli_with(&path) };
        let msg = Config::load_from(&cli, |_| None).expect_err("bad flag").to_string();
        assert!(msg.contains("labels") && msg.contains("\"a b\"") && !msg.contains('\n'), "{msg}");
        let env = |k: &str| (k == "DISTCRON_LABELS").then(|| "zone".to_owned());
        let msg = Config::load_from(&cli_with(&path), env).expect_err("bad env").to_string();
        assert!(msg.contains("DISTCRON_LABELS") && msg.contains("\"zone\" is not name=value"), "{msg}");
        std::fs::write(&path, "labels = { \"bad name\" = \"a\" }\n").expect("write");
        let msg = Config::load_from(&cli_with(&path), |_| None).expect_err("bad file").to_string();
        assert!(msg.contains("config key labels") && msg.contains("\"bad name\""), "{msg}");
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[log_batch]\nflush_ms = 111\nmax_records = 7\n").expect("write");
        let cfg = Config::load_from(&cli_with(&path), |_| None).expect("file");
        assert_eq!((cfg.log_batch.flush_ms, cfg.log_batch.max_records), (111, 7));
        let env = |k: &str| (k == "DISTCRON_LOG_BATCH_FLUSH_MS").then(|| "222".to_owned());
        let cfg = Config::load_from(&cli_with(&path), env).expect("env");
        assert_eq!((cfg.log_batch.flush_ms, cfg.log_batch.max_records), (222, 7));
        let cli = Cli { flush_ms: Some(333), ..cli_with(&path) };
        let cfg = Config::load_from(&cli, env).expect("flag");
        assert_eq!((cfg.log_batch.flush_ms, cfg.log_batch.max_records), (333, 7));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        let check = |text: &str, needle: &str| {
            std::fs::write(&path, text).expect("write");
            let msg = Config::load_from(&cli_with(&path), |_| None).expect_err(text).to_string();
            assert!(msg.contains(needle), "{msg:?} should name {needle:?}");
            assert!(!msg.contains('\n'), "one line: {msg:?}");
        };
        check("bogus = 1\n", "bogus");
        check("[executor]\npool_sise = 3\n", "pool_sise");
        check("[executor]\npool_size = \"many\"\n", "pool_size");
        check("[executor]\npool_size = 0\n", "executor.pool_size");
        check("default_tz = \"Mars/Base\"\n", "default_tz");
        check("listen = \"nowhere\"\n", "listen");
        check("role = \"boss\"\n", "role");
        let env = |k: &str| (k == "DISTCRON_EXECUTOR_POOL_SIZE").then(|| "lots".to_owned());
        std::fs::write(&path, "").expect("write");
        let msg = Config::load_from(&cli_with(&path), env).expect_err("env").to_string();
        assert!(msg.contains("DISTCRON_EXECUTOR_POOL_SIZE"), "{msg}");
    }

    #[test]
    fn secrets_on_the_command_line_are_named() {
        let cli = Cli {
            api_token: Some("t".into()),
            mongo_uri: Some("mongodb://u:p@h:27017/?tls=true".into()),
            ..Cli::default()
        };
        let flags: Vec<&str> = cli.secrets_in_argv().into_iter().map(|(f, _)| f).collect();
        assert_eq!(flags, ["--api-token", "--mongo-uri"]);
        let cli = Cli { mongo_uri: Some("mongodb://user@h/db?authSource=a@b".into()), ..Cli::default() };
        assert!(cli.secrets_in_argv().is_empty());
        assert!(Cli::default().secrets_in_argv().is_empty());
    }

    #[test]
    fn perimeter_keys_are_checked() {
        let check = |cfg: Config, needle: &str| {
            let msg = cfg.validate().expect_err(needle).to_string();
            assert!(msg.contains(needle), "{msg}");
        };
        let http = |allowed_hosts: Vec<String>, cert: &str, key: &str| HttpConfig {
            allowed_hosts,
            tls_cert_file: cert.into(),
            tls_key_file: key.into(),
            ..HttpConfig::default()
        };
        check(Config { http: http(vec!["evil example".into()], "", ""), ..Config::default() }, "http.allowed_hosts");
        check(Config { http: http(vec![String::new()], "", ""), ..Config::default() }, "http.allowed_hosts");
        check(Config { http: http(vec![], "c.pem", ""), ..Config::default() }, "http.tls_key_file");
        check(Config { api_token: "a".into(), api_token_file: "f".into(), ..Config::default() }, "api_token_file");
        check(Config { api_token: "a b".into(), ..Config::default() }, "api_token");
        let ok =
            Config { http: http(vec!["cron.example.com".into(), "10.0.0.5".into()], "c", "k"), ..Config::default() };
        assert!(ok.validate().is_ok() && ok.tls_enabled());
    }

    #[test]
    fn api_token_file_comes_from_flag_and_env() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").expect("write");
        let env = |k: &str| (k == "DISTCRON_API_TOKEN_FILE").then(|| "/env/tok".to_owned());
        assert_eq!(Config::load_from(&cli_with(&path), env).expect("env").api_token_file, PathBuf::from("/env/tok"));
        let cli = Cli { api_token_file: Some("/flag/tok".into()), ..cli_with(&path) };
        assert_eq!(Config::load_from(&cli, env).expect("flag").api_token_file, PathBuf::from("/flag/tok"));
    }

    #[test]
    fn every_numeric_key_has_a_range_and_out_of_range_stops_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        let defaults = Config::default();
        for (key, value, min, max) in defaults.ranges() {
            assert!((min..=max).contains(&value), "default of {key} ({value}) is in its range");
            let (section, field) = key.split_once('.').expect("dotted");
            let mut cases = vec![max.saturating_add(1)];
            if min > 0 {
                cases.push(min - 1);
            }
            for v in cases {
                // Values beyond the key's integer type fail to parse, also naming the key.
                let text = format!("[{section}]\n{field} = {}\n", v.min(i64::MAX as u64));
                std::fs::write(&path, &text).expect("write");
                let msg = Config::load_from(&cli_with(&path), |_| None).expect_err(&text).to_string();
                assert!(msg.contains(field), "{msg:?} names {key}");
                assert!(!msg.contains('\n'), "one line: {msg:?}");
                assert!(msg.contains(&format!("{min}..={max}")), "{msg:?} gives the range of {key}");
            }
        }
        std::fs::write(&path, "[scheduler]\nmisfire_grace_ms = -5\n").expect("write");
        let msg = Config::load_from(&cli_with(&path), |_| None).expect_err("negative").to_string();
        assert!(msg.contains("misfire_grace_ms"), "{msg}");
        std::fs::write(&path, "[etcd]\nconnect_timeout_ms = 18446744073709551615\n").expect("write");
        let msg = Config::load_from(&cli_with(&path), |_| None).expect_err("huge").to_string();
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn store_credentials_must_come_in_pairs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        let check = |text: &str, needle: &str| {
            std::fs::write(&path, text).expect("write");
            let msg = Config::load_from(&cli_with(&path), |_| None).expect_err(text).to_string();
            assert!(msg.contains(needle), "{msg:?} should name {needle:?}");
        };
        check("[etcd]\ntls_cert_file = \"c.pem\"\n", "etcd.tls_cert_file");
        check("[etcd]\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n", "etcd.tls_ca_file");
        check("[etcd]\nuser = \"distcron\"\n", "etcd.password_file");
        check("[etcd]\nendpoints = [\"https://127.0.0.1:2379\"]\n", "etcd.endpoints");
        check("[etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\ntls_ca_file = \"ca.pem\"\n", "etcd.endpoints");
        check("[mongo]\nuri = \"mongodb://x\"\nuri_file = \"u\"\n", "mongo.uri_file");
        std::fs::write(&path, "[etcd]\nendpoints = [\"https://127.0.0.1:2379\"]\ntls_ca_file = \"ca.pem\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\nuser = \"u\"\npassword_file = \"p\"\n").expect("write");
        let cfg = Config::load_from(&cli_with(&path), |_| None).expect("complete TLS + auth config");
        let settings = cfg.etcd_settings();
        assert!(settings.tls.is_some_and(|t| t.client.is_some()));
        assert!(settings.auth.is_some());
    }

    #[test]
    fn etcd_endpoints_from_env_are_split_on_commas() {
        let env =
            |k: &str| (k == "DISTCRON_ETCD_ENDPOINTS").then(|| "http://127.0.0.1:1, http://127.0.0.1:2".to_owned());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").expect("write");
        let cfg = Config::load_from(&cli_with(&path), env).expect("load");
        assert_eq!(cfg.etcd.endpoints, vec!["http://127.0.0.1:1", "http://127.0.0.1:2"]);
    }
}
