//! Prometheus metrics of this process (README "Metrics"): one registry and its typed handles.
//!
//! Owns: every metric's name, help text, labels and buckets; what one run record adds (runs by
//! status, the last success and duration, start lag, lost runs), counted once per run id even
//! when a record is handed over twice; removing a job's series (deleted jobs, so the job label
//! stays bounded by the number of jobs); the text encodings (Prometheus 0.0.4 and OpenMetrics).
//! Pure: no actors, no I/O, no clock besides the [`Instant`] a caller passes in.
//! Leaves to others: where each event happens. The log pipeline reports every run record this
//! process produces (`actors/log_batch.rs`), the scheduler missed ticks and claims, the lost-run
//! recorder its claims, the HTTP middleware requests (`http/metrics.rs`), and the scrape handler
//! reads the actors' gauges and the job store's names just before it encodes.
//!
//! In a cluster each process reports what it did, so sums across the fleet count each thing
//! once: a run is counted by the process that recorded it (a worker for the runs it executed,
//! skipped or missed; whoever won the right to record a lost run for that one), HTTP by the
//! process that served it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::domain::{JobName, RunRecord, RunStatus, Trigger};

/// `Content-Type` of the Prometheus text format (0.0.4), the default answer.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// `Content-Type` of the OpenMetrics text format, answered when the scraper asks for it.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Final run ids remembered to count a run once when its final record is handed over again.
const RECENT_FINAL_RUNS: usize = 8192;

/// Label set `{job}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

/// Label set `{job,status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStatusLabels {
    job: String,
    status: String,
}

/// Label set `{route,method,status}` of HTTP requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: String,
}

/// Label set `{store}` of claim metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabel {
    store: String,
}

/// What the metrics of one process cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsScope {
    /// A node that schedules and runs jobs (roles `all` and `worker`): everything.
    Worker,
    /// A master: HTTP, the log pipeline, lost runs and claims; no scheduler, executors or session.
    Master,
}

/// The spool's counters, read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolLevels {
    /// Bytes in the spool file.
    pub bytes: u64,
    /// Records in the spool file.
    pub records: u64,
    /// Records in the dead-letter file.
    pub dead_lettered: u64,
}

/// Status of the local actors, read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineLevels {
    /// Jobs in the scheduler's plan.
    pub planned_jobs: u64,
    /// Ticks due and waiting for their claim or their run.
    pub due_ticks: u64,
    /// Executors running a run.
    pub executors_busy: u64,
    /// Runs waiting for an executor.
    pub executors_queued: u64,
    /// Executors in the pool.
    pub executors_size: u64,
}

type SpoolSource = Arc<dyn Fn() -> SpoolLevels + Send + Sync>;

/// Per-job memory besides the series: what orders "last" and when the job was first seen.
#[derive(Debug, Clone, Copy)]
struct JobMemory {
    first_seen: Instant,
    last_end: Option<DateTime<Utc>>,
    last_success: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct State {
    jobs: HashMap<JobName, JobMemory>,
    recent: HashSet<String>,
    order: VecDeque<String>,
}

impl State {
    /// True the first time `run` is seen final (within the last [`RECENT_FINAL_RUNS`]).
    fn first_final(&mut self, run: &str) -> bool {
        if self.recent.contains(run) {
            return false;
        }
        if self.order.len() >= RECENT_FINAL_RUNS {
            if let Some(old) = self.order.pop_front() {
                self.recent.remove(&old);
            }
        }
        self.recent.insert(run.to_owned());
        self.order.push_back(run.to_owned());
        true
    }
}

struct Inner {
    registry: Registry,
    scope: MetricsScope,
    runs: Family<JobStatusLabels, Counter>,
    last_success: Family<JobLabel, Gauge<f64, AtomicU64>>,
    last_duration: Family<JobLabel, Gauge<f64, AtomicU64>>,
    start_lag: Histogram,
    missed_ticks: Family<JobLabel, Counter>,
    lost_runs: Family<JobLabel, Counter>,
    planned_jobs: Gauge,
    due_ticks: Gauge,
    executors_busy: Gauge,
    executors_queued: Gauge,
    executors_size: Gauge,
    spool_bytes: Gauge,
    spool_records: Gauge,
    dead_letter_records: Gauge,
    log_write_errors: Counter,
    claim_duration: Family<StoreLabel, Histogram>,
    claim_errors: Family<StoreLabel, Counter>,
    session_up: Gauge,
    http_requests: Family<HttpLabels, Counter>,
    spool_source: OnceLock<SpoolSource>,
    state: Mutex<State>,
}

/// The metrics of one process: cheap to clone (one shared registry), safe to use from any
/// thread. [`Metrics::default`] covers a worker (every metric); a master uses
/// [`Metrics::new`]`(MetricsScope::Master)`.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("scope", &self.inner.scope).finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(MetricsScope::Worker)
    }
}

fn claim_histogram() -> Histogram {
    // 1 ms .. ~8 s: an etcd txn on a healthy cluster takes a few ms, the request timeout caps it.
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Metrics {
    /// A registry with every metric of `scope`, all at zero.
    pub fn new(scope: MetricsScope) -> Self {
        let mut registry = Registry::with_prefix("distcron");
        let runs = Family::<JobStatusLabels, Counter>::default();
        let last_success = Family::<JobLabel, Gauge<f64, AtomicU64>>::default();
        let last_duration = Family::<JobLabel, Gauge<f64, AtomicU64>>::default();
        // 5 ms .. ~82 s: a healthy start is well under a second; a saturated pool queues longer.
        let start_lag = Histogram::new(exponential_buckets(0.005, 2.0, 15));
        let missed_ticks = Family::<JobLabel, Counter>::default();
        let lost_runs = Family::<JobLabel, Counter>::default();
        let claim_duration =
            Family::<StoreLabel, Histogram>::new_with_constructor(claim_histogram as fn() -> Histogram);
        let claim_errors = Family::<StoreLabel, Counter>::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let inner = Inner {
            registry: Registry::default(),
            scope,
            runs: runs.clone(),
            last_success: last_success.clone(),
            last_duration: last_duration.clone(),
            start_lag: start_lag.clone(),
            missed_ticks: missed_ticks.clone(),
            lost_runs: lost_runs.clone(),
            planned_jobs: Gauge::default(),
            due_ticks: Gauge::default(),
            executors_busy: Gauge::default(),
            executors_queued: Gauge::default(),
            executors_size: Gauge::default(),
            spool_bytes: Gauge::default(),
            spool_records: Gauge::default(),
            dead_letter_records: Gauge::default(),
            log_write_errors: Counter::default(),
            claim_duration: claim_duration.clone(),
            claim_errors: claim_errors.clone(),
            session_up: Gauge::default(),
            http_requests: http_requests.clone(),
            spool_source: OnceLock::new(),
            state: Mutex::new(State::default()),
        };
        registry.register(
            "runs",
            "Run records with a final status recorded by this process, by job and status (missed: one record per burst of missed ticks)",
            runs,
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When the last succeeded run of the job recorded by this process ended, Unix seconds",
            last_success,
        );
        registry.register(
            "last_run_duration_seconds",
            "Duration of the job's last run that ended (any final status with a process), seconds",
            last_duration,
        );
        registry.register("start_lag_seconds", "Start of a scheduled run minus its tick, seconds", start_lag);
        registry.register(
            "missed_ticks",
            "Ticks that passed without a run (later than misfire_grace_ms), by job",
            missed_ticks,
        );
        registry.register(
            "lost_runs",
            "Runs recorded lost by this process (their worker vanished or restarted while they ran), by job",
            lost_runs,
        );
        registry.register(
            "log_spool_bytes",
            "Bytes in the log spool file (run records waiting for the log store)",
            inner.spool_bytes.clone(),
        );
        registry.register("log_spool_records", "Run records in the log spool file", inner.spool_records.clone());
        registry.register(
            "log_dead_letter_records",
            "Run records the log store refused for good, kept in the dead-letter file",
            inner.dead_letter_records.clone(),
        );
        registry.register(
            "log_write_errors",
            "Failed writes of a batch of run records to the log store (the batch was spooled)",
            inner.log_write_errors.clone(),
        );
        registry.register(
            "claim_duration_seconds",
            "Round trip of one claim request to the claims store (a batch of tick claims counts once)",
            claim_duration,
        );
        registry.register(
            "claim_errors",
            "Claims that failed because the claims store did not answer (nothing was claimed)",
            claim_errors,
        );
        registry.register("http_requests", "HTTP requests served, by route pattern, method and status", http_requests);
        if scope == MetricsScope::Worker {
            registry.register(
                "scheduler_planned_jobs",
                "Jobs in this node's plan (enabled, with a future fire time)",
                inner.planned_jobs.clone(),
            );
            registry.register(
                "scheduler_due_ticks",
                "Ticks that are due and wait for their claim or their run (the due queue)",
                inner.due_ticks.clone(),
            );
            registry.register("executors_busy", "Executors running a run", inner.executors_busy.clone());
            registry.register("executors_queued", "Runs waiting for a free executor", inner.executors_queued.clone());
            registry.register("executors", "Executors in the pool", inner.executors_size.clone());
            registry.register(
                "session_up",
                "1 while this worker holds its membership session (etcd lease), 0 while it is lost",
                inner.session_up.clone(),
            );
            inner.session_up.set(1);
        }
        let inner = Inner { registry, ..inner };
        Self { inner: Arc::new(inner) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one run record this process produced. A `running` record adds nothing; a final
    /// one adds to `runs_total{job,status}` (once per run id), `lost_runs_total` when lost, the
    /// start lag of a scheduled run that started, and moves the job's last success and last
    /// duration forward (never back, whatever order records arrive in).
    pub fn record_run(&self, record: &RunRecord) {
        if !record.status.is_final() {
            return;
        }
        let mut state = self.state();
        if !state.first_final(&record.id.0) {
            return;
        }
        let memory = state.jobs.entry(record.job.clone()).or_insert(JobMemory {
            first_seen: Instant::now(),
            last_end: None,
            last_success: None,
        });
        let job = record.job.as_str().to_owned();
        self.inner
            .runs
            .get_or_create(&JobStatusLabels { job: job.clone(), status: record.status.as_str().to_owned() })
            .inc();
        if record.status == RunStatus::Lost {
            self.inner.lost_runs.get_or_create(&JobLabel { job: job.clone() }).inc();
        }
        if let (Trigger::Schedule, Some(started)) = (record.trigger, record.started_at) {
            let lag = (started - record.scheduled_at).num_milliseconds().max(0);
            self.inner.start_lag.observe(lag as f64 / 1000.0);
        }
        let Some(ended) = record.ended_at else { return };
        if let Some(ms) = record.duration_ms.filter(|_| record.started_at.is_some()) {
            if memory.last_end.is_none_or(|t| ended >= t) {
                memory.last_end = Some(ended);
                self.inner.last_duration.get_or_create(&JobLabel { job: job.clone() }).set(ms as f64 / 1000.0);
            }
        }
        if record.status == RunStatus::Succeeded && memory.last_success.is_none_or(|t| ended >= t) {
            memory.last_success = Some(ended);
            self.inner.last_success.get_or_create(&JobLabel { job }).set(unix_seconds(ended));
        }
    }

    /// Counts `count` ticks of `job` that passed without a run.
    pub fn missed_ticks(&self, job: &JobName, count: u32) {
        self.remember(job);
        self.inner.missed_ticks.get_or_create(&JobLabel { job: job.as_str().to_owned() }).inc_by(u64::from(count));
    }

    fn remember(&self, job: &JobName) {
        self.state().jobs.entry(job.clone()).or_insert(JobMemory {
            first_seen: Instant::now(),
            last_end: None,
            last_success: None,
        });
    }

    /// Removes every series of `job` (the job was deleted).
    pub fn forget_job(&self, job: &JobName) {
        self.state().jobs.remove(job);
        let name = job.as_str().to_owned();
        for status in RunStatus::ALL {
            self.inner.runs.remove(&JobStatusLabels { job: name.clone(), status: status.as_str().to_owned() });
        }
        let label = JobLabel { job: name };
        self.inner.last_success.remove(&label);
        self.inner.last_duration.remove(&label);
        self.inner.missed_ticks.remove(&label);
        self.inner.lost_runs.remove(&label);
    }

    /// Removes the series of jobs not in `existing`, except those first seen at or after
    /// `read_at` (when the list was read: a job created since is not in it yet).
    pub fn retain_jobs(&self, existing: &HashSet<JobName>, read_at: Instant) {
        let gone: Vec<JobName> = self
            .state()
            .jobs
            .iter()
            .filter(|(job, memory)| memory.first_seen < read_at && !existing.contains(*job))
            .map(|(job, _)| job.clone())
            .collect();
        for job in gone {
            self.forget_job(&job);
        }
    }

    /// True when some job has series (the scrape then reads the job names to drop deleted ones).
    pub fn has_job_series(&self) -> bool {
        !self.state().jobs.is_empty()
    }

    /// Counts one HTTP request: `route` is the matched pattern (`/api/v1/jobs/{name}`), never a
    /// raw path; `None` (nothing matched) is counted as `unmatched`. Methods outside the
    /// standard ones are counted as `other`.
    pub fn http_request(&self, route: Option<&str>, method: &str, status: u16) {
        let route = route.filter(|r| !r.is_empty()).unwrap_or("unmatched");
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" => method,
            _ => "other",
        };
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    /// One claim round trip to `store` that took `elapsed`, with `errors` of its requests failed.
    pub fn claim(&self, store: &str, elapsed: Duration, errors: usize) {
        let label = StoreLabel { store: store.to_owned() };
        self.inner.claim_duration.get_or_create(&label).observe(elapsed.as_secs_f64());
        let failed = self.inner.claim_errors.get_or_create(&label);
        failed.inc_by(errors as u64);
    }

    /// One failed write of a batch to the log store.
    pub fn log_write_failed(&self) {
        self.inner.log_write_errors.inc();
    }

    /// Where the spool levels are read at scrape time (the log pipeline sets it at start).
    pub fn set_spool_source(&self, source: impl Fn() -> SpoolLevels + Send + Sync + 'static) {
        let _ = self.inner.spool_source.set(Arc::new(source));
    }

    /// Whether this worker holds its membership session.
    pub fn set_session_up(&self, up: bool) {
        self.inner.session_up.set(i64::from(up));
    }

    /// The local actors' status, read just before a scrape.
    pub fn set_engine(&self, levels: EngineLevels) {
        let set = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.inner.planned_jobs, levels.planned_jobs);
        set(&self.inner.due_ticks, levels.due_ticks);
        set(&self.inner.executors_busy, levels.executors_busy);
        set(&self.inner.executors_queued, levels.executors_queued);
        set(&self.inner.executors_size, levels.executors_size);
    }

    /// What this process covers.
    pub fn scope(&self) -> MetricsScope {
        self.inner.scope
    }

    fn refresh(&self) {
        if let Some(source) = self.inner.spool_source.get() {
            let levels = source();
            let set = |g: &Gauge, v: u64| {
                g.set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            set(&self.inner.spool_bytes, levels.bytes);
            set(&self.inner.spool_records, levels.records);
            set(&self.inner.dead_letter_records, levels.dead_lettered);
        }
    }

    /// The exposition in the Prometheus text format (0.0.4), or OpenMetrics when `openmetrics`.
    pub fn encode(&self, openmetrics: bool) -> String {
        self.refresh();
        let mut out = String::new();
        let res = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)
        };
        // Writing to a String only fails when a label value cannot be encoded, which ours can.
        if let Err(e) = res {
            log::error!("Cannot encode the metrics. error={e}");
        }
        out
    }
}

fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Fence, RunId, WorkerId};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).expect("test time")
    }

    fn job(name: &str) -> JobName {
        JobName::parse(name).expect("test job name")
    }

    fn record(id: &str, name: &str, status: RunStatus, tick: &str, start_ms: i64, dur_ms: u64) -> RunRecord {
        let scheduled = at(tick);
        let mut r = RunRecord::not_run(
            job(name),
            "true".into(),
            status,
            Trigger::Schedule,
            scheduled,
            WorkerId("w1".into()),
            Fence(1),
            String::new(),
        );
        r.id = RunId(id.into());
        r.started_at = Some(scheduled + chrono::Duration::milliseconds(start_ms));
        r.ended_at = Some(scheduled + chrono::Duration::milliseconds(start_ms + dur_ms as i64));
        r.duration_ms = Some(dur_ms);
        r
    }

    /// The value of the sample `name{labels}` (labels as written in the exposition).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    #[test]
    fn final_records_count_once_per_run_and_running_ones_not_at_all() {
        let m = Metrics::default();
        m.record_run(&record("r1", "backup", RunStatus::Running, "2026-11-28T07:00:00Z", 100, 0));
        let ok = record("r1", "backup", RunStatus::Succeeded, "2026-11-28T07:00:00Z", 100, 2500);
        m.record_run(&ok);
        m.record_run(&ok);
        m.record_run(&record("r2", "backup", RunStatus::Failed, "2026-11-28T07:01:00Z", 50, 500));
        m.record_run(&record("r3", "backup", RunStatus::Lost, "2026-11-28T07:02:00Z", 50, 0));
        let text = m.encode(false);
        assert_eq!(sample(&text, r#"distcron_runs_total{job="backup",status="succeeded"}"#), Some(1.0), "{text}");
        assert_eq!(sample(&text, r#"distcron_runs_total{job="backup",status="failed"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"distcron_runs_total{job="backup",status="lost"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"distcron_runs_total{job="backup",status="running"}"#), None);
        assert_eq!(sample(&text, r#"distcron_lost_runs_total{job="backup"}"#), Some(1.0));
        assert_eq!(sample(&text, "distcron_start_lag_seconds_count"), Some(3.0));
    }

    #[test]
    fn last_success_and_duration_only_move_forward() {
        let m = Metrics::default();
        let later = record("r2", "j", RunStatus::Succeeded, "2026-11-28T07:01:00Z", 0, 1500);
        let earlier = record("r1", "j", RunStatus::Succeeded, "2026-11-28T07:00:00Z", 0, 4000);
        m.record_run(&later);
        m.record_run(&earlier);
        let text = m.encode(false);
        let end = later.ended_at.expect("ended");
        assert_eq!(sample(&text, r#"distcron_last_success_timestamp_seconds{job="j"}"#), Some(unix_seconds(end)));
        assert_eq!(sample(&text, r#"distcron_last_run_duration_seconds{job="j"}"#), Some(1.5));
        // A later failure moves the duration, not the success.
        m.record_run(&record("r3", "j", RunStatus::Failed, "2026-11-28T07:02:00Z", 0, 250));
        let text = m.encode(false);
        assert_eq!(sample(&text, r#"distcron_last_success_timestamp_seconds{job="j"}"#), Some(unix_seconds(end)));
        assert_eq!(sample(&text, r#"distcron_last_run_duration_seconds{job="j"}"#), Some(0.25));
    }

    #[test]
    fn start_lag_is_start_minus_tick_for_scheduled_runs_only() {
        let m = Metrics::default();
        m.record_run(&record("r1", "j", RunStatus::Succeeded, "2026-11-28T07:00:00Z", 30, 10));
        let mut manual = record("r2", "j", RunStatus::Succeeded, "2026-11-28T07:00:00Z", 9000, 10);
        manual.trigger = Trigger::Manual;
        m.record_run(&manual);
        let text = m.encode(false);
        assert_eq!(sample(&text, "distcron_start_lag_seconds_count"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "distcron_start_lag_seconds_sum"), Some(0.03));
        assert_eq!(sample(&text, r#"distcron_start_lag_seconds_bucket{le="0.04"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"distcron_start_lag_seconds_bucket{le="0.02"}"#), Some(0.0));
    }

    #[test]
    fn a_deleted_job_loses_every_series_and_others_keep_theirs() {
        let m = Metrics::default();
        m.record_run(&record("r1", "gone", RunStatus::Succeeded, "2026-11-28T07:00:00Z", 0, 10));
        m.missed_ticks(&job("gone"), 3);
        m.record_run(&record("r2", "kept", RunStatus::Failed, "2026-11-28T07:00:00Z", 0, 10));
        let read_at = Instant::now();
        let existing: HashSet<JobName> = [job("kept")].into_iter().collect();
        m.retain_jobs(&existing, read_at);
        let text = m.encode(false);
        assert!(!text.contains(r#"job="gone""#), "{text}");
        assert_eq!(sample(&text, r#"distcron_runs_total{job="kept",status="failed"}"#), Some(1.0));
        // A job first seen after the list was read is kept until the next scrape sees it.
        m.record_run(&record("r3", "new", RunStatus::Succeeded, "2026-11-28T07:00:00Z", 0, 10));
        m.retain_jobs(&existing, read_at);
        assert!(m.encode(false).contains(r#"job="new""#));
        m.forget_job(&job("new"));
        assert!(!m.encode(false).contains(r#"job="new""#));
    }

    #[test]
    fn missed_ticks_add_their_count() {
        let m = Metrics::default();
        m.missed_ticks(&job("j"), 2);
        m.missed_ticks(&job("j"), 5);
        assert_eq!(sample(&m.encode(false), r#"distcron_missed_ticks_total{job="j"}"#), Some(7.0));
    }

    #[test]
    fn http_requests_use_the_pattern_and_a_bounded_method() {
        let m = Metrics::default();
        m.http_request(Some("/api/v1/jobs/{name}"), "GET", 200);
        m.http_request(Some("/api/v1/jobs/{name}"), "GET", 200);
        m.http_request(None, "BREW", 404);
        let text = m.encode(false);
        assert_eq!(
            sample(&text, r#"distcron_http_requests_total{route="/api/v1/jobs/{name}",method="GET",status="200"}"#),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, r#"distcron_http_requests_total{route="unmatched",method="other",status="404"}"#),
            Some(1.0)
        );
    }

    #[test]
    fn gauges_come_from_their_sources_and_a_master_has_no_engine_metrics() {
        let m = Metrics::default();
        m.set_spool_source(|| SpoolLevels { bytes: 123, records: 4, dead_lettered: 1 });
        m.set_engine(EngineLevels {
            planned_jobs: 7,
            due_ticks: 2,
            executors_busy: 1,
            executors_queued: 3,
            executors_size: 4,
        });
        m.claim("etcd", Duration::from_millis(3), 2);
        m.log_write_failed();
        m.set_session_up(false);
        let text = m.encode(false);
        for (series, v) in [
            ("distcron_log_spool_bytes", 123.0),
            ("distcron_log_spool_records", 4.0),
            ("distcron_log_dead_letter_records", 1.0),
            ("distcron_scheduler_planned_jobs", 7.0),
            ("distcron_scheduler_due_ticks", 2.0),
            ("distcron_executors_busy", 1.0),
            ("distcron_executors_queued", 3.0),
            ("distcron_executors", 4.0),
            ("distcron_log_write_errors_total", 1.0),
            (r#"distcron_claim_errors_total{store="etcd"}"#, 2.0),
            (r#"distcron_claim_duration_seconds_count{store="etcd"}"#, 1.0),
            ("distcron_session_up", 0.0),
        ] {
            assert_eq!(sample(&text, series), Some(v), "{series} in {text}");
        }
        let master = Metrics::new(MetricsScope::Master).encode(false);
        assert!(!master.contains("distcron_executors") && !master.contains("session_up"), "{master}");
        assert!(master.contains("distcron_log_spool_bytes"));
    }

    #[test]
    fn openmetrics_ends_with_eof_and_prometheus_text_types_every_family() {
        let m = Metrics::default();
        m.record_run(&record("r1", "j", RunStatus::Succeeded, "2026-11-28T07:00:00Z", 0, 10));
        assert!(m.encode(true).ends_with("# EOF\n"));
        let text = m.encode(false);
        assert!(text.contains("# TYPE distcron_runs_total counter"), "{text}");
        assert!(text.contains("# TYPE distcron_start_lag_seconds histogram"), "{text}");
    }
}
