//! The job model: what is stored under `/cron/jobs/<name>` and what the API accepts.
//!
//! The stored JSON is a superset of the seed's `{"name","command","cron_expr"}`: a document with
//! only those three fields is a valid job (every other field takes its default) and, having no
//! `dialect`, keeps the seed's reading of its cron expression (ARCHITECTURE.md).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::catchup::CatchUp;
use super::schedule::{Dialect, Schedule};

/// Longest accepted job name.
pub const MAX_NAME_LEN: usize = 128;
/// Longest accepted command, in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Longest accepted description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4 * 1024;
/// Most extra environment variables per job.
pub const MAX_ENV_VARS: usize = 128;
/// Longest accepted timeout (30 days).
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;
/// Longest accepted per-job retention (100 years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;
/// Accepted range of `limits.max_memory_bytes` (16 MiB to 1 PiB): below 16 MiB not even a shell
/// starts reliably.
pub const MEMORY_LIMIT_RANGE: std::ops::RangeInclusive<u64> = (16 << 20)..=(1 << 50);
/// Accepted range of `limits.max_cpu_secs` (1 s to 30 days).
pub const CPU_LIMIT_RANGE: std::ops::RangeInclusive<u64> = 1..=MAX_TIMEOUT_SECS;
/// Accepted range of `limits.max_open_files`.
pub const OPEN_FILES_RANGE: std::ops::RangeInclusive<u64> = 16..=1_048_576;
/// Accepted range of `limits.nice` (negative values need a root worker).
pub const NICE_RANGE: std::ops::RangeInclusive<i32> = -20..=19;
/// Largest `jitter_secs`: one hour.
pub const MAX_JITTER_SECS: u32 = 3600;
/// Longest accepted user or group name for `run_as_user` / `run_as_group`.
pub const MAX_ACCOUNT_NAME_LEN: usize = 32;

/// A validated job name: 1–128 characters of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, pattern = "^[A-Za-z0-9._-]{1,128}$")]
pub struct JobName(String);

impl JobName {
    /// Validates `name`.
    ///
    /// # Errors
    /// A [`JobValidationError`] on field `name` saying what is wrong.
    pub fn parse(name: &str) -> Result<Self, JobValidationError> {
        let invalid = |message: String| JobValidationError { field: "name", message };
        if name.is_empty() {
            return Err(invalid("name must not be empty".into()));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid(format!("name is {} characters long; the limit is {MAX_NAME_LEN}", name.len())));
        }
        if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return Err(invalid(format!("name contains {bad:?}; allowed are letters, digits, '.', '_' and '-'")));
        }
        if name == "." || name == ".." {
            return Err(invalid("name must not be '.' or '..'".into()));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for JobName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        JobName::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for JobName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for JobName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// What to do when a tick comes while a run of the same job is still alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyPolicy {
    /// Skip the tick (recorded as `skipped` with the reason). The default.
    #[default]
    Forbid,
    /// Start another run beside the live one.
    Allow,
    /// Kill the live run, then start the new one.
    Replace,
}

/// A job as stored and served. Unknown fields are rejected: a stored document is read exactly
/// as strictly as one sent to the API (issue 9, item 8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Unique name; the store key.
    pub name: JobName,
    /// Shell command, run with `<shell> -c <command>`.
    pub command: String,
    /// Cron expression, read per `dialect`.
    pub cron_expr: String,
    /// IANA time zone; `None` means the node's `default_tz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// Disabled jobs keep their definition and never fire.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Concurrency policy.
    #[serde(default)]
    pub concurrency: ConcurrencyPolicy,
    /// Timeout in seconds; 0 = none.
    #[serde(default)]
    pub timeout_secs: u64,
    /// Free text for operators.
    #[serde(default)]
    pub description: String,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; `None` = the worker's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// When the job was first stored.
    #[serde(default = "epoch")]
    pub created_at: DateTime<Utc>,
    /// When the job was last changed.
    #[serde(default = "epoch")]
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version: 1 on create, +1 on every change (0 = written by the seed).
    #[serde(default)]
    pub version: u64,
    /// How `cron_expr` is read; a job without this field was written by the seed.
    #[serde(default = "seed_dialect")]
    pub dialect: Dialect,
    /// Keep this job's run records this many days (0 = forever); `None` = the global
    /// `log_batch.retention_days`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// Resource limits applied to the run's shell before exec; `None` = the worker's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<JobLimits>,
    /// Run the command as this user (a root worker only, and only a user listed in
    /// `executor.allowed_users`); `None` = as the worker's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<String>,
    /// Primary group for `run_as_user`; `None` = that user's own primary group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<String>,
    /// The jobs-as-code owner (`managed_by` of the file `distcron apply` read, README "Jobs as
    /// code"): `apply --prune` deletes only jobs carrying its own label; `None` = hand-made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    /// Alert rules (README "Alerts"); `None` = the defaults of `alerts.rules`, `[]` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<super::alert::AlertRule>>,
    /// Spread: each tick fires [`jitter_offset`] seconds late, a stable per-job offset in
    /// `[0, jitter_secs)`; 0 = none. Claims and `scheduled_at` stay keyed by the tick.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub jitter_secs: u32,
    /// Retries of a failed tick; `None` = a failed tick stays failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<super::retry::RetryPolicy>,
    /// What happens to ticks missed while no worker ran the job (default: recorded `missed`).
    #[serde(default, skip_serializing_if = "CatchUp::is_default")]
    pub catchup: CatchUp,
    /// Worker selector (README "Worker labels"): label -> required value; only live workers
    /// carrying every one of them run the job. Empty = every worker.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = BTreeMap<String, String>, example = json!({"zone": "b"}))]
    pub selector: super::Labels,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The stable fire offset of job `name` with `jitter_secs` of jitter, in whole seconds in
/// `[0, jitter_secs)`: FNV-1a (64-bit) of the name's bytes modulo `jitter_secs`. Every worker
/// and every restart computes the same value (no per-process random seed, unlike std's hasher).
pub fn jitter_offset(name: &str, jitter_secs: u32) -> u32 {
    if jitter_secs == 0 {
        return 0;
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    // The remainder is below `jitter_secs`, a u32.
    u32::try_from(hash % u64::from(jitter_secs)).unwrap_or(0)
}

/// Per-job resource limits (`limits = { max_memory_bytes, max_cpu_secs, max_open_files, nice }`),
/// applied to the run's shell before it execs and inherited by everything it starts. Every field
/// is optional; an absent one leaves the worker's own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobLimits {
    /// Address space per process (`RLIMIT_AS`), bytes: an allocation past it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
    /// CPU time per process (`RLIMIT_CPU`), seconds: SIGXCPU when reached, SIGKILL a second later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_secs: Option<u64>,
    /// Open file descriptors per process (`RLIMIT_NOFILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_files: Option<u64>,
    /// Scheduling niceness, -20 (first) to 19 (last); negative values need a root worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<i32>,
}

impl JobLimits {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn default_true() -> bool {
    true
}
fn epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}
fn seed_dialect() -> Dialect {
    Dialect::Seed
}

impl Job {
    /// Parses the job's schedule in its dialect.
    ///
    /// # Errors
    /// The expression's [`CronError`](super::CronError) (stored jobs were validated, but a job
    /// written straight into etcd by another tool may not have been).
    pub fn schedule(&self) -> Result<Schedule, super::CronError> {
        Schedule::parse(&self.cron_expr, self.dialect)
    }

    /// This job's fire offset: [`jitter_offset`] of its name and `jitter_secs`.
    pub fn jitter_offset(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::from(jitter_offset(self.name.as_str(), self.jitter_secs)))
    }

    /// The job's time zone, falling back to `default_tz`.
    pub fn zone(&self, default_tz: chrono_tz::Tz) -> chrono_tz::Tz {
        self.tz.as_deref().and_then(|z| z.parse().ok()).unwrap_or(default_tz)
    }
}

/// A field-level validation failure, reported to clients with the field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct JobValidationError {
    /// The offending field (`name`, `cron_expr`, `tz`, ...).
    pub field: &'static str,
    /// What is wrong, in words an operator understands.
    pub message: String,
}

/// What a client sends to create or replace a job (`/api/v1/jobs`). Unknown fields are rejected.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Name; may be omitted when it is in the URL.
    #[serde(default)]
    pub name: Option<String>,
    /// Shell command.
    pub command: String,
    /// Cron expression.
    pub cron_expr: String,
    /// IANA zone; omitted = node default.
    #[serde(default)]
    pub tz: Option<String>,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Default `forbid`.
    #[serde(default)]
    pub concurrency: Option<ConcurrencyPolicy>,
    /// Default 0 (none).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Default empty.
    #[serde(default)]
    pub description: Option<String>,
    /// Default empty.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Default none.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Default `distcron`; `seed` reads 6 fields as 5 + year.
    #[serde(default)]
    pub dialect: Option<Dialect>,
    /// Run-record retention in days (0 = forever); omitted = the global `retention_days`.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Resource limits; omitted = none.
    #[serde(default)]
    pub limits: Option<JobLimits>,
    /// User to run as (root workers, `executor.allowed_users`); omitted = the worker's user.
    #[serde(default)]
    pub run_as_user: Option<String>,
    /// Group to run as; omitted = the user's primary group.
    #[serde(default)]
    pub run_as_group: Option<String>,
    /// Jobs-as-code owner label; omitted = none.
    #[serde(default)]
    pub managed_by: Option<String>,
    /// Fire-time spread in seconds (0..=3600, below the schedule's shortest interval); omitted = 0.
    #[serde(default)]
    pub jitter_secs: Option<u32>,
    /// Accepted and ignored (computed by the server from the name and `jitter_secs`).
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub jitter_offset_secs: Option<serde::de::IgnoredAny>,
    /// Retries of a failed tick; omitted = none.
    #[serde(default)]
    pub retry: Option<super::retry::RetryPolicy>,
    /// Catch-up after downtime; omitted = `skip`.
    #[serde(default)]
    pub catchup: Option<CatchUp>,
    /// Worker selector: label -> required value (all must match); omitted or empty = every worker.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>, example = json!({"zone": "b"}))]
    pub selector: Option<super::Labels>,
    /// Expected current version on replace; a stale one is a conflict. Ignored on create.
    #[serde(default)]
    pub version: Option<u64>,
    /// Alert rules; omitted = the defaults of `alerts.rules`, `[]` = no alerts.
    #[serde(default)]
    pub alerts: Option<Vec<super::alert::AlertRule>>,
    /// Accepted and ignored, so a job read from the API can be sent back as is.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub created_at: Option<serde::de::IgnoredAny>,
    /// Accepted and ignored, so a job read from the API can be sent back as is.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub updated_at: Option<serde::de::IgnoredAny>,
    /// Accepted and ignored (computed by the server).
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub next_run_at: Option<serde::de::IgnoredAny>,
    /// Accepted and ignored (computed by the server).
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub effective_tz: Option<serde::de::IgnoredAny>,
    /// Accepted and ignored (computed by the server).
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub schedule_description: Option<serde::de::IgnoredAny>,
}

impl JobSpec {
    /// Validates every field and builds the job to store (version and timestamps are set by the
    /// store). `path_name` is the name from the URL, if any; a body name must then match it.
    ///
    /// # Errors
    /// The first invalid field, named.
    pub fn into_job(self, path_name: Option<&str>) -> Result<Job, JobValidationError> {
        let name = match (path_name, self.name.as_deref()) {
            (Some(p), Some(b)) if p != b => {
                return Err(JobValidationError {
                    field: "name",
                    message: format!("name in body ({b:?}) differs from name in URL ({p:?})"),
                })
            }
            (Some(p), _) => JobName::parse(p)?,
            (None, Some(b)) => JobName::parse(b)?,
            (None, None) => return Err(JobValidationError { field: "name", message: "name is required".into() }),
        };
        let dialect = self.dialect.unwrap_or(Dialect::Distcron);
        let job = Job {
            name,
            command: self.command,
            cron_expr: self.cron_expr,
            tz: self.tz.filter(|t| !t.is_empty()),
            enabled: self.enabled.unwrap_or(true),
            concurrency: self.concurrency.unwrap_or_default(),
            timeout_secs: self.timeout_secs.unwrap_or(0),
            description: self.description.unwrap_or_default(),
            env: self.env.unwrap_or_default(),
            working_dir: self.working_dir.filter(|w| !w.is_empty()),
            created_at: epoch(),
            updated_at: epoch(),
            version: self.version.unwrap_or(0),
            dialect,
            retention_days: self.retention_days,
            limits: self.limits.filter(|l| !l.is_empty()),
            run_as_user: self.run_as_user.filter(|u| !u.is_empty()),
            run_as_group: self.run_as_group.filter(|g| !g.is_empty()),
            managed_by: self.managed_by.filter(|m| !m.is_empty()),
            alerts: self.alerts,
            jitter_secs: self.jitter_secs.unwrap_or(0),
            retry: self.retry,
            catchup: self.catchup.unwrap_or_default(),
            selector: self.selector.unwrap_or_default(),
        };
        validate(&job)?;
        Ok(job)
    }
}

/// Checks every field of a job; used for API input and for jobs found in the store.
///
/// # Errors
/// The first invalid field, named.
pub fn validate(job: &Job) -> Result<(), JobValidationError> {
    let err = |field: &'static str, message: String| Err(JobValidationError { field, message });
    if job.command.trim().is_empty() {
        return err("command", "command must not be empty".into());
    }
    if job.command.len() > MAX_COMMAND_BYTES {
        return err("command", format!("command is {} bytes; the limit is {MAX_COMMAND_BYTES}", job.command.len()));
    }
    if job.command.contains('\0') {
        return err("command", "command must not contain NUL bytes".into());
    }
    let schedule = match Schedule::parse(&job.cron_expr, job.dialect) {
        Ok(schedule) => schedule,
        Err(e) => return err("cron_expr", e.to_string()),
    };
    if job.jitter_secs > MAX_JITTER_SECS {
        return err("jitter_secs", format!("jitter_secs is {}; the limit is {MAX_JITTER_SECS}", job.jitter_secs));
    }
    if job.jitter_secs > 0 {
        if let Some(shortest) = schedule.shortest_interval_secs().filter(|s| u64::from(job.jitter_secs) >= *s) {
            return err(
                "jitter_secs",
                format!(
                    "jitter_secs is {}; it must be below the schedule's shortest interval, {shortest} s, so a \
                     tick always fires before the next one",
                    job.jitter_secs
                ),
            );
        }
    }
    if let Some(tz) = &job.tz {
        if tz.parse::<chrono_tz::Tz>().is_err() {
            return err(
                "tz",
                format!("unknown time zone {tz:?}; use an IANA name such as \"Europe/Berlin\" or \"UTC\""),
            );
        }
    }
    if job.timeout_secs > MAX_TIMEOUT_SECS {
        return err(
            "timeout_secs",
            format!("timeout_secs is {}; the limit is {MAX_TIMEOUT_SECS} (30 days)", job.timeout_secs),
        );
    }
    if job.description.len() > MAX_DESCRIPTION_BYTES {
        return err(
            "description",
            format!("description is {} bytes; the limit is {MAX_DESCRIPTION_BYTES}", job.description.len()),
        );
    }
    if job.env.len() > MAX_ENV_VARS {
        return err("env", format!("{} variables; the limit is {MAX_ENV_VARS}", job.env.len()));
    }
    for (k, v) in &job.env {
        validate_env_entry(k, v, MAX_COMMAND_BYTES)?;
    }
    if let Some(dir) = &job.working_dir {
        if !dir.starts_with('/') || dir.contains('\0') {
            return err("working_dir", format!("working_dir {dir:?} must be an absolute path"));
        }
    }
    if let Some(days) = job.retention_days.filter(|d| *d > MAX_RETENTION_DAYS) {
        return err(
            "retention_days",
            format!("retention_days is {days}; the limit is {MAX_RETENTION_DAYS} (0 = keep forever)"),
        );
    }
    if let Some(limits) = &job.limits {
        validate_limits(limits)?;
    }
    for (field, name) in [("run_as_user", &job.run_as_user), ("run_as_group", &job.run_as_group)] {
        if let Some(name) = name {
            validate_account_name(field, name)?;
        }
    }
    if job.run_as_group.is_some() && job.run_as_user.is_none() {
        return err("run_as_group", "run_as_group needs run_as_user".into());
    }
    if let Some(label) = &job.managed_by {
        validate_managed_by(label).map_err(|message| JobValidationError { field: "managed_by", message })?;
    }
    if let Some(rules) = &job.alerts {
        super::alert::validate_rules(rules, None)?;
    }
    if let Some(retry) = &job.retry {
        retry.validate()?;
    }
    if let Err(message) = job.catchup.check() {
        return err("catchup", message);
    }
    if let Err(e) = super::labels::validate_labels(&job.selector) {
        return err("selector", e.message);
    }
    Ok(())
}

/// Checks one environment variable (a job's `env`, or a run parameter): a valid, unreserved
/// name; a value without NUL of at most `max_value_bytes`.
///
/// # Errors
/// What is wrong, in field `env`.
pub(crate) fn validate_env_entry(k: &str, v: &str, max_value_bytes: usize) -> Result<(), JobValidationError> {
    let err = |message: String| Err(JobValidationError { field: "env", message });
    let valid = !k.is_empty()
        && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return err(format!("variable name {k:?} is not a valid environment variable name"));
    }
    if k.starts_with("DISTCRON_") {
        return err(format!("variable {k:?} is reserved: DISTCRON_* are set by distcron for every run"));
    }
    if v.contains('\0') || v.len() > max_value_bytes {
        return err(format!("value of {k:?} contains NUL or is longer than {max_value_bytes} bytes"));
    }
    Ok(())
}

/// Longest accepted `managed_by` label.
pub const MAX_MANAGED_BY_LEN: usize = 128;

/// A `managed_by` label: 1–128 characters of letters, digits and `. _ - : / @`.
///
/// # Errors
/// What is wrong, in one line.
pub fn validate_managed_by(label: &str) -> Result<(), String> {
    let ok = !label.is_empty()
        && label.len() <= MAX_MANAGED_BY_LEN
        && label.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "managed_by {label:?} is not a label (1-{MAX_MANAGED_BY_LEN} letters, digits, '.', '_', '-', ':', '/', '@')"
        ))
    }
}

fn validate_limits(limits: &JobLimits) -> Result<(), JobValidationError> {
    let out_of = |what: &str, value: String, range: String| JobValidationError {
        field: "limits",
        message: format!("limits.{what} is {value}; allowed are {range}"),
    };
    if let Some(v) = limits.max_memory_bytes.filter(|v| !MEMORY_LIMIT_RANGE.contains(v)) {
        let range = format!("{}..={} bytes", MEMORY_LIMIT_RANGE.start(), MEMORY_LIMIT_RANGE.end());
        return Err(out_of("max_memory_bytes", v.to_string(), range));
    }
    if let Some(v) = limits.max_cpu_secs.filter(|v| !CPU_LIMIT_RANGE.contains(v)) {
        let range = format!("{}..={} seconds", CPU_LIMIT_RANGE.start(), CPU_LIMIT_RANGE.end());
        return Err(out_of("max_cpu_secs", v.to_string(), range));
    }
    if let Some(v) = limits.max_open_files.filter(|v| !OPEN_FILES_RANGE.contains(v)) {
        let range = format!("{}..={}", OPEN_FILES_RANGE.start(), OPEN_FILES_RANGE.end());
        return Err(out_of("max_open_files", v.to_string(), range));
    }
    if let Some(v) = limits.nice.filter(|v| !NICE_RANGE.contains(v)) {
        return Err(out_of("nice", v.to_string(), format!("{}..={}", NICE_RANGE.start(), NICE_RANGE.end())));
    }
    Ok(())
}

/// A POSIX-portable account name: letters, digits, `.`, `_`, `-`, not starting with `-`.
fn validate_account_name(field: &'static str, name: &str) -> Result<(), JobValidationError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_ACCOUNT_NAME_LEN
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(JobValidationError {
            field,
            message: format!(
                "{field} {name:?} is not an account name (1-{MAX_ACCOUNT_NAME_LEN} letters, digits, '.', '_', '-')"
            ),
        })
    }
}

/// Whether this node may save (or run) a job with `run_as_user`: only a root node, and only
/// for a user in `allowed_users` (empty = nobody: running jobs as other users is opt-in).
///
/// # Errors
/// On field `run_as_user`, saying what the operator must change.
pub fn check_run_as(job: &Job, allowed_users: &[String], node_is_root: bool) -> Result<(), JobValidationError> {
    let Some(user) = &job.run_as_user else { return Ok(()) };
    if !node_is_root {
        return Err(JobValidationError {
            field: "run_as_user",
            message: format!(
                "run_as_user {user:?} needs distcron to run as root (it switches user before exec); this node does not run as root"
            ),
        });
    }
    if !allowed_users.iter().any(|a| a == user) {
        let allowed = if allowed_users.is_empty() { "none is allowed".to_owned() } else { allowed_users.join(", ") };
        return Err(JobValidationError {
            field: "run_as_user",
            message: format!("run_as_user {user:?} is not in executor.allowed_users ({allowed})"),
        });
    }
    Ok(())
}

/// Longest reason kept for an invalid stored job (a reason may quote part of the document).
pub const MAX_INVALID_REASON_BYTES: usize = 512;

/// A document in the job store that is not a valid job: not planned, reported with its reason
/// (readiness, the job list) until it is fixed or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InvalidJob {
    /// The job's name, from its store key.
    pub name: JobName,
    /// Why it is not a valid job, in one line of at most [`MAX_INVALID_REASON_BYTES`].
    pub reason: String,
}

impl Job {
    /// Reads a job document found in the store under `name`, validated exactly as a job sent to
    /// the API: unknown fields, values of the wrong type or out of range (`timeout_secs` =
    /// 1e19), a broken cron expression or an oversized field make it invalid. The key names
    /// the job (a seed document's `name` is the same).
    ///
    /// # Errors
    /// An [`InvalidJob`] with the reason; never panics, whatever the bytes.
    pub fn from_stored(name: &JobName, value: &[u8]) -> Result<Job, InvalidJob> {
        let invalid = |reason: String| InvalidJob { name: name.clone(), reason: bounded_reason(&reason) };
        let de = &mut serde_json::Deserializer::from_slice(value);
        let mut job: Job = serde_path_to_error::deserialize(de).map_err(|e| {
            // Name the field ("timeout_secs: invalid type: floating point `1e19`, expected u64").
            let path = e.path().to_string();
            let inner = e.into_inner();
            match path.as_str() {
                "" | "." => invalid(format!("does not parse: {inner}")),
                field => invalid(format!("{field}: does not parse: {inner}")),
            }
        })?;
        job.name = name.clone();
        validate(&job).map_err(|e| invalid(e.to_string()))?;
        Ok(job)
    }
}

/// One line, cut at [`MAX_INVALID_REASON_BYTES`] on a character boundary.
fn bounded_reason(reason: &str) -> String {
    let line = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() <= MAX_INVALID_REASON_BYTES {
        return line;
    }
    let mut end = MAX_INVALID_REASON_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selector_is_validated_and_defaults_to_every_worker() {
        let spec = |selector: serde_json::Value| -> JobSpec {
            serde_json::from_value(serde_json::json!({"name": "s", "command": "true", "cron_expr": "* * * * *",
                "selector": selector}))
            .expect("spec")
        };
        let job = spec(serde_json::json!({"zone": "b"})).into_job(None).expect("valid");
        assert_eq!(super::super::labels::format_labels(&job.selector), "zone=b");
        let stored = serde_json::to_value(&job).expect("ser");
        assert_eq!(stored["selector"], serde_json::json!({"zone": "b"}));
        let plain = spec(serde_json::Value::Null).into_job(None).expect("no selector");
        assert!(plain.selector.is_empty());
        assert!(serde_json::to_value(&plain).expect("ser").get("selector").is_none(), "omitted when empty");
        let e = spec(serde_json::json!({"zone": "a b"})).into_job(None).expect_err("bad value");
        assert_eq!(e.field, "selector");
        assert!(e.message.contains("\"a b\""), "{}", e.message);
        let e = spec(serde_json::json!({"": "a"})).into_job(None).expect_err("empty name");
        assert_eq!(e.field, "selector");
        let old: Job =
            serde_json::from_value(serde_json::json!({"name": "old", "command": "true", "cron_expr": "* * * * *"}))
                .expect("a stored job without selector loads");
        assert!(old.selector.is_empty());
    }

    #[test]
    fn seed_job_json_is_a_valid_job_in_the_seed_dialect() {
        let job: Job = serde_json::from_str(r#"{"name":"job1","command":"echo hello","cron_expr":"*/5 * * * * *"}"#)
            .expect("seed JSON parses");
        assert_eq!(job.name.as_str(), "job1");
        assert_eq!(job.dialect, Dialect::Seed);
        assert!(job.enabled);
        assert_eq!(job.concurrency, ConcurrencyPolicy::Forbid);
        assert_eq!(job.version, 0);
        validate(&job).expect("seed job validates");
    }

    #[test]
    fn stored_job_round_trips_and_keeps_seed_fields() {
        let spec: JobSpec =
            serde_json::from_str(r#"{"name":"a.b-c_d","command":"true","cron_expr":"* * * * *"}"#).expect("spec");
        let job = spec.into_job(None).expect("valid");
        let v = serde_json::to_value(&job).expect("ser");
        for k in ["name", "command", "cron_expr", "enabled", "concurrency", "dialect", "version"] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["dialect"], "distcron");
        assert!(v.get("retention_days").is_none(), "no override, no field");
        let back: Job = serde_json::from_value(v).expect("de");
        assert_eq!(back, job);
    }

    #[test]
    fn names_are_validated() {
        assert!(JobName::parse("ok-Name_1.2").is_ok());
        assert!(JobName::parse(&"x".repeat(128)).is_ok());
        for bad in ["", "a b", "a/b", "ä", "..", &"x".repeat(129), "<script>"] {
            let e = JobName::parse(bad).expect_err(bad);
            assert_eq!(e.field, "name");
        }
    }

    #[test]
    fn spec_rejects_unknown_fields_and_bad_values() {
        assert!(
            serde_json::from_str::<JobSpec>(r#"{"name":"a","command":"x","cron_expr":"* * * * *","bogus":1}"#).is_err()
        );
        let bad = |json: &str, field: &str| {
            let spec: JobSpec = serde_json::from_str(json).expect("parses");
            assert_eq!(spec.into_job(None).expect_err(json).field, field, "{json}");
        };
        bad(r#"{"name":"a","command":"","cron_expr":"* * * * *"}"#, "command");
        bad(r#"{"name":"a","command":"x","cron_expr":"61 * * * *"}"#, "cron_expr");
        bad(r#"{"name":"a","command":"x","cron_expr":"* * * * *","tz":"Mars/Olympus"}"#, "tz");
        bad(r#"{"name":"a","command":"x","cron_expr":"* * * * *","env":{"DISTCRON_JOB":"x"}}"#, "env");
        bad(r#"{"name":"a","command":"x","cron_expr":"* * * * *","env":{"1A":"x"}}"#, "env");
        bad(r#"{"name":"a","command":"x","cron_expr":"* * * * *","working_dir":"rel"}"#, "working_dir");
        bad(r#"{"command":"x","cron_expr":"* * * * *"}"#, "name");
        bad(r#"{"name":"a","command":"x","cron_expr":"* * * * *","retention_days":36501}"#, "retention_days");
        bad(r#"{"name":"a","command":"x","cron_expr":"* * * * *","limits":{"max_memory_bytes":1000}}"#, "limits");
        bad(r#"{"name":"a","command":"x","cron_expr":"* * * * *","limits":{"max_cpu_secs":0}}"#, "limits");
        bad(r#"{"name":"a","command":"x","cron_expr":"* * * * *","limits":{"max_open_files":3}}"#, "limits");
        bad(r#"{"name":"a","command":"x","cron_expr":"* * * * *","limits":{"nice":20}}"#, "limits");
        bad(r#"{"name":"a","command":"x","cron_expr":"* * * * *","run_as_user":"a b"}"#, "run_as_user");
        bad(r#"{"name":"a","command":"x","cron_expr":"* * * * *","run_as_user":"-rf"}"#, "run_as_user");
        bad(r#"{"name":"a","command":"x","cron_expr":"* * * * *","run_as_group":"staff"}"#, "run_as_group");
        assert!(serde_json::from_str::<JobSpec>(
            r#"{"name":"a","command":"x","cron_expr":"* * * * *","limits":{"max_rss":1}}"#
        )
        .is_err());
    }

    #[test]
    fn limits_and_run_as_round_trip_and_empty_limits_vanish() {
        let spec: JobSpec = serde_json::from_str(
            r#"{"name":"a","command":"x","cron_expr":"* * * * *","run_as_user":"nobody","run_as_group":"nogroup",
                "limits":{"max_memory_bytes":100000000,"max_cpu_secs":1,"max_open_files":64,"nice":10}}"#,
        )
        .expect("spec");
        let job = spec.into_job(None).expect("valid");
        let limits = job.limits.expect("limits kept");
        assert_eq!(
            (limits.max_memory_bytes, limits.max_cpu_secs, limits.max_open_files, limits.nice),
            (Some(100_000_000), Some(1), Some(64), Some(10))
        );
        let back: Job = serde_json::from_value(serde_json::to_value(&job).expect("ser")).expect("de");
        assert_eq!(back, job);
        let spec: JobSpec =
            serde_json::from_str(r#"{"name":"a","command":"x","cron_expr":"* * * * *","limits":{}}"#).expect("spec");
        let job = spec.into_job(None).expect("valid");
        assert_eq!(job.limits, None);
        assert!(serde_json::to_value(&job).expect("ser").get("limits").is_none(), "seed-shaped JSON stays lean");
    }

    #[test]
    fn jitter_offset_is_stable_in_range_and_spread() {
        // Pinned values: the same on every worker, build and restart (FNV-1a, not std's hasher).
        assert_eq!(jitter_offset("nightly-backup", 3600), jitter_offset("nightly-backup", 3600));
        assert_eq!(jitter_offset("a", 0), 0);
        assert_eq!(jitter_offset("a", 1), 0);
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(jitter_offset("a", 3600), (0xaf63_dc4c_8601_ec8c_u64 % 3600) as u32);
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            let offset = jitter_offset(&format!("job-{i}"), 600);
            assert!(offset < 600);
            buckets[(offset / 60) as usize] += 1;
        }
        // 10,000 names over ten 60-second buckets: each gets roughly a tenth.
        assert!(buckets.iter().all(|&n| (800..=1200).contains(&n)), "{buckets:?}");
        let job: Job = serde_json::from_str(r#"{"name":"a","command":"x","cron_expr":"0 * * * *","jitter_secs":3600}"#)
            .expect("job");
        assert_eq!(job.jitter_offset(), chrono::Duration::seconds(i64::from(jitter_offset("a", 3600))));
    }

    #[test]
    fn jitter_secs_is_validated_against_its_limit_and_the_schedule() {
        let spec = |body: &str| serde_json::from_str::<JobSpec>(body).expect("spec").into_job(None);
        let ok = spec(r#"{"name":"a","command":"x","cron_expr":"0 * * * *","jitter_secs":600}"#).expect("valid");
        assert_eq!(ok.jitter_secs, 600);
        assert_eq!(serde_json::to_value(&ok).expect("ser")["jitter_secs"], 600);
        let none = spec(r#"{"name":"a","command":"x","cron_expr":"0 * * * *"}"#).expect("valid");
        assert!(serde_json::to_value(&none).expect("ser").get("jitter_secs").is_none(), "seed-shaped JSON stays lean");
        for (body, needle) in [
            (r#"{"name":"a","command":"x","cron_expr":"0 0 * * *","jitter_secs":3601}"#, "the limit is 3600"),
            (r#"{"name":"a","command":"x","cron_expr":"* * * * *","jitter_secs":60}"#, "shortest interval, 60 s"),
            (r#"{"name":"a","command":"x","cron_expr":"@every 30s","jitter_secs":30}"#, "shortest interval, 30 s"),
            (
                r#"{"name":"a","command":"x","cron_expr":"0 9,10 * * *","jitter_secs":3600}"#,
                "shortest interval, 3600 s",
            ),
        ] {
            let e = spec(body).expect_err(body);
            assert_eq!(e.field, "jitter_secs", "{body}");
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
        spec(r#"{"name":"a","command":"x","cron_expr":"* * * * *","jitter_secs":59}"#).expect("below the interval");
        assert!(serde_json::from_str::<JobSpec>(
            r#"{"name":"a","command":"x","cron_expr":"* * * * *","jitter_secs":-1}"#
        )
        .is_err());
    }

    #[test]
    fn run_as_user_needs_a_root_node_and_an_allowed_user() {
        let job = |user: Option<&str>| Job {
            run_as_user: user.map(str::to_owned),
            ..serde_json::from_str(r#"{"name":"a","command":"x","cron_expr":"* * * * *"}"#).expect("job")
        };
        let allowed = vec!["nobody".to_owned()];
        assert!(check_run_as(&job(None), &[], false).is_ok(), "no run_as_user, nothing to check");
        assert!(check_run_as(&job(Some("nobody")), &allowed, true).is_ok());
        let e = check_run_as(&job(Some("nobody")), &allowed, false).expect_err("not root");
        assert_eq!(e.field, "run_as_user");
        assert!(e.message.contains("root"), "{}", e.message);
        let e = check_run_as(&job(Some("daemon")), &allowed, true).expect_err("not allowed");
        assert!(e.message.contains("executor.allowed_users (nobody)"), "{}", e.message);
        let e = check_run_as(&job(Some("nobody")), &[], true).expect_err("empty list allows none");
        assert!(e.message.contains("none is allowed"), "{}", e.message);
    }

    #[test]
    fn a_stored_job_is_validated_like_an_api_one() {
        let name = JobName::parse("j").expect("name");
        let ok = Job::from_stored(&name, br#"{"name":"other","command":"true","cron_expr":"* * * * *"}"#)
            .expect("seed-shaped job is valid");
        assert_eq!(ok.name, name, "the key names the job");
        let reason = |doc: &[u8]| Job::from_stored(&name, doc).expect_err("invalid").reason;
        assert!(reason(br#"{"name":"j","command":"x","cron_expr":"* * * * *","timeout_secs":1e19}"#)
            .contains("timeout_secs"));
        assert!(reason(br#"{"name":"j","command":"x","cron_expr":"* * * * *","timeout_secs":10000000000000000000}"#)
            .contains("timeout_secs"));
        assert!(reason(br#"{"name":"j","command":"x","cron_expr":"* * * * *","timeout_secs":-1}"#).contains("-1"));
        assert!(reason(br#"{"name":"j","command":"x","cron_expr":"* * * * *","bogus":1}"#).contains("bogus"));
        assert!(reason(br#"{"name":"j","command":"x","cron_expr":"99 * * *"}"#).starts_with("cron_expr"));
        assert!(reason(b"\xff\x00 not json").contains("does not parse"));
        assert!(reason(b"").contains("does not parse"));
        let huge = format!(r#"{{"name":"j","command":"x","cron_expr":{}}}"#, "1".repeat(1_000_000));
        let r = reason(huge.as_bytes());
        assert!(r.len() <= MAX_INVALID_REASON_BYTES + 4, "reason is bounded: {} bytes", r.len());
        let big_command = format!(r#"{{"name":"j","command":"{}","cron_expr":"* * * * *"}}"#, "x".repeat(100_000));
        assert!(reason(big_command.as_bytes()).starts_with("command"));
        let bad_string = format!(r#"{{"name":"j","command":1,"cron_expr":"{}"}}"#, "é".repeat(2000));
        assert!(!reason(bad_string.as_bytes()).contains('\n'));
    }

    #[test]
    fn body_name_must_match_url_name() {
        let spec: JobSpec =
            serde_json::from_str(r#"{"name":"a","command":"x","cron_expr":"* * * * *"}"#).expect("spec");
        assert_eq!(spec.clone().into_job(Some("b")).expect_err("mismatch").field, "name");
        assert_eq!(spec.into_job(Some("a")).expect("match").name.as_str(), "a");
    }
}
