//! Alerts (issue 11, item 3): the rules a job carries (`alerts = [{ on, after_consecutive,
//! late_after_secs, expect_success_within_secs, channels }]`), the alerts they raise, and the
//! record of each alert's claim and delivery attempts.
//!
//! Owns: the rule model and its validation, the alert payload every channel receives, the
//! stored [`AlertRecord`] (who delivers it, every attempt per channel), and the pure evaluation
//! ([`evaluate`]) of a job's recent runs into alert candidates with cluster-wide deterministic
//! ids: every node that looks at the same run history proposes the same ids, so the claims port
//! (create-if-absent on the id) lets exactly one of them deliver each alert.
//!
//! Leaves to others: reading runs and claiming (`actors/alerts.rs`), sending
//! (`alerting/`), storing records (the claims port in `backend/`).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::job::{JobName, JobValidationError};
use super::run::{RunId, RunRecord, RunStatus};
use super::worker::WorkerId;

/// Most rules per job (or in `alerts.rules`).
pub const MAX_RULES: usize = 16;
/// Most channels per rule.
pub const MAX_RULE_CHANNELS: usize = 16;
/// Largest `after_consecutive`.
pub const MAX_AFTER_CONSECUTIVE: u32 = 1000;
/// Largest `late_after_secs` / `expect_success_within_secs` (one year).
pub const MAX_ALERT_SECS: u64 = 366 * 86_400;
/// Longest channel name.
pub const MAX_CHANNEL_NAME_LEN: usize = 64;

/// What an alert is about. The run outcomes (`failed` … `killed`), `late` and `recovered` may
/// be listed in a rule's `on`; `dead_man` comes from `expect_success_within_secs`, `test` from
/// the "send test alert" button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A run exited nonzero.
    Failed,
    /// A run exceeded its timeout.
    Timeout,
    /// A run's worker vanished.
    Lost,
    /// A tick nobody could run.
    Missed,
    /// A tick not started (concurrency policy, saturated pool, no eligible worker).
    Skipped,
    /// A run could not be started.
    Error,
    /// A run was killed.
    Killed,
    /// A run not finished `late_after_secs` after its tick.
    Late,
    /// The first success after an alerted failure streak or dead-man alert.
    Recovered,
    /// No success for `expect_success_within_secs`.
    DeadMan,
    /// Sent by hand to check a channel.
    Test,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 11] = [
        Self::Failed,
        Self::Timeout,
        Self::Lost,
        Self::Missed,
        Self::Skipped,
        Self::Error,
        Self::Killed,
        Self::Late,
        Self::Recovered,
        Self::DeadMan,
        Self::Test,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Lost => "lost",
            Self::Missed => "missed",
            Self::Skipped => "skipped",
            Self::Error => "error",
            Self::Killed => "killed",
            Self::Late => "late",
            Self::Recovered => "recovered",
            Self::DeadMan => "dead_man",
            Self::Test => "test",
        }
    }

    /// The kind a final run status raises, for the statuses that can count as a failure.
    pub fn of_status(status: RunStatus) -> Option<Self> {
        match status {
            RunStatus::Failed => Some(Self::Failed),
            RunStatus::Timeout => Some(Self::Timeout),
            RunStatus::Lost => Some(Self::Lost),
            RunStatus::Missed => Some(Self::Missed),
            RunStatus::Skipped => Some(Self::Skipped),
            RunStatus::Error => Some(Self::Error),
            RunStatus::Killed => Some(Self::Killed),
            // The attempt that did not run ends its tick failed (the next tick overtook it).
            RunStatus::Superseded => Some(Self::Failed),
            RunStatus::Running | RunStatus::Succeeded => None,
        }
    }

    /// Whether a rule may list it in `on`.
    pub fn allowed_in_on(self) -> bool {
        !matches!(self, Self::DeadMan | Self::Test)
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert rule of a job (or a default rule of `alerts.rules`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// What to alert on; default `["failed", "timeout", "lost", "error", "recovered"]`. Run
    /// outcomes listed here count towards `after_consecutive`; outcomes not listed (and not
    /// `succeeded`) neither count nor break a streak.
    #[serde(default = "default_on")]
    pub on: Vec<AlertKind>,
    /// Alert once when this many listed failures happened in a row since the last success.
    #[serde(default = "one")]
    pub after_consecutive: u32,
    /// With `late` in `on`: a run not finished this long after its tick is late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_after_secs: Option<u64>,
    /// Dead man: alert when the job has not succeeded for this long (whatever the reason,
    /// including ticks that never came: a disabled job, every worker down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_success_within_secs: Option<u64>,
    /// Channel names (`[alerts.channels.<name>]`).
    pub channels: Vec<String>,
}

fn default_on() -> Vec<AlertKind> {
    vec![AlertKind::Failed, AlertKind::Timeout, AlertKind::Lost, AlertKind::Error, AlertKind::Recovered]
}

fn one() -> u32 {
    1
}

impl AlertRule {
    fn counts(&self, status: RunStatus) -> bool {
        AlertKind::of_status(status).is_some_and(|k| self.on.contains(&k))
    }
}

/// Whether `name` is a valid channel name (`[A-Za-z0-9._-]`, 1–64 characters).
pub fn valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_NAME_LEN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Checks a rule list (a job's `alerts`, or `alerts.rules`); `known_channels`, when given, must
/// hold every channel a rule names.
///
/// # Errors
/// The first problem, on field `alerts`, naming the rule (from 1).
pub fn validate_rules(
    rules: &[AlertRule],
    known_channels: Option<&BTreeSet<String>>,
) -> Result<(), JobValidationError> {
    let err = |message: String| Err(JobValidationError { field: "alerts", message });
    if rules.len() > MAX_RULES {
        return err(format!("{} rules; the limit is {MAX_RULES}", rules.len()));
    }
    for (i, rule) in rules.iter().enumerate() {
        let n = i + 1;
        if rule.channels.is_empty() {
            return err(format!("rule {n}: channels must name at least one channel"));
        }
        if rule.channels.len() > MAX_RULE_CHANNELS {
            return err(format!("rule {n}: {} channels; the limit is {MAX_RULE_CHANNELS}", rule.channels.len()));
        }
        let mut seen = BTreeSet::new();
        for channel in &rule.channels {
            if !valid_channel_name(channel) {
                return err(format!(
                    "rule {n}: channel name {channel:?} must be 1-{MAX_CHANNEL_NAME_LEN} letters, digits, '.', '_' or '-'"
                ));
            }
            if !seen.insert(channel) {
                return err(format!("rule {n}: channel {channel:?} is listed twice"));
            }
            if let Some(known) = known_channels {
                if !known.contains(channel) {
                    let names: Vec<&str> = known.iter().map(String::as_str).collect();
                    return err(format!(
                        "rule {n}: no alert channel named {channel:?} is configured (configured: {})",
                        if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                    ));
                }
            }
        }
        if let Some(bad) = rule.on.iter().find(|k| !k.allowed_in_on()) {
            return err(format!(
                "rule {n}: {bad:?} cannot be listed in on (use expect_success_within_secs for a dead-man rule)",
                bad = bad.as_str()
            ));
        }
        if rule.after_consecutive == 0 || rule.after_consecutive > MAX_AFTER_CONSECUTIVE {
            return err(format!(
                "rule {n}: after_consecutive is {}; allowed are 1..={MAX_AFTER_CONSECUTIVE}",
                rule.after_consecutive
            ));
        }
        for (key, value) in
            [("late_after_secs", rule.late_after_secs), ("expect_success_within_secs", rule.expect_success_within_secs)]
        {
            if let Some(v) = value.filter(|v| *v == 0 || *v > MAX_ALERT_SECS) {
                return err(format!("rule {n}: {key} is {v}; allowed are 1..={MAX_ALERT_SECS}"));
            }
        }
        let late = rule.on.contains(&AlertKind::Late);
        if late && rule.late_after_secs.is_none() {
            return err(format!("rule {n}: \"late\" in on needs late_after_secs"));
        }
        if !late && rule.late_after_secs.is_some() {
            return err(format!("rule {n}: late_after_secs needs \"late\" in on"));
        }
        if rule.on.is_empty() && rule.expect_success_within_secs.is_none() {
            return err(format!("rule {n}: on is empty and there is no expect_success_within_secs: it never alerts"));
        }
    }
    Ok(())
}

/// What every channel receives (the webhook body, the command's stdin): one alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alert {
    /// Cluster-wide id: the same on every node for the same alert (receivers may dedupe on it).
    pub id: String,
    /// The job; none for test alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobName>,
    /// What happened.
    pub kind: AlertKind,
    /// One line for humans.
    pub message: String,
    /// When it was raised.
    pub raised_at: DateTime<Utc>,
    /// Index of the rule (from 0) in the job's effective rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    /// The run it is about (the N-th failure, the late run, the recovering success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunId>,
    /// That run's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_status: Option<RunStatus>,
    /// That run's tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// That run's worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerId>,
    /// Failures in a row when raised (failure alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive: Option<u32>,
    /// The job's last success before the alert, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<DateTime<Utc>>,
    /// Channels it goes to.
    pub channels: Vec<String>,
}

/// Where an alert's delivery (to one channel, or overall) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not yet delivered; attempts continue.
    Pending,
    /// Accepted by the channel.
    Delivered,
    /// Every attempt failed (or the channel is not configured on the delivering node).
    Failed,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// When it started.
    pub at: DateTime<Utc>,
    /// Node that made it.
    pub worker: WorkerId,
    /// Whether the channel accepted the alert.
    pub ok: bool,
    /// How long it took, ms.
    pub duration_ms: u64,
    /// HTTP status (webhook, slack) or exit code (command), when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// What went wrong (never a secret, a URL or command output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The delivery of an alert to one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChannelDelivery {
    /// Channel name.
    pub channel: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Every attempt, oldest first.
    #[serde(default)]
    pub attempts: Vec<DeliveryAttempt>,
}

/// An alert as stored under `<prefix>alerts/<job>/<id>` (the claim) and served by
/// `GET /api/v1/alerts`: the alert, the node delivering it, and every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertRecord {
    /// The alert.
    pub alert: Alert,
    /// Node that claimed (or took over) its delivery.
    pub owner: WorkerId,
    /// Overall state: pending while a channel is pending, delivered when every channel is,
    /// failed otherwise.
    pub state: DeliveryState,
    /// One entry per channel.
    pub deliveries: Vec<ChannelDelivery>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl AlertRecord {
    /// A new record of `alert`, pending on each of its channels, owned by `owner`.
    pub fn new(alert: Alert, owner: WorkerId) -> Self {
        let deliveries = alert
            .channels
            .iter()
            .map(|c| ChannelDelivery { channel: c.clone(), state: DeliveryState::Pending, attempts: Vec::new() })
            .collect();
        let updated_at = alert.raised_at;
        Self { alert, owner, state: DeliveryState::Pending, deliveries, updated_at }
    }

    /// Recomputes [`AlertRecord::state`] from the deliveries.
    pub fn settle_state(&mut self) {
        self.state = if self.deliveries.iter().any(|d| d.state == DeliveryState::Pending) {
            DeliveryState::Pending
        } else if self.deliveries.iter().all(|d| d.state == DeliveryState::Delivered) {
            DeliveryState::Delivered
        } else {
            DeliveryState::Failed
        };
    }

    /// Store key segment of the job (`~test` for test alerts, which no job name can be).
    pub fn job_segment(&self) -> &str {
        self.alert.job.as_ref().map_or(TEST_SEGMENT, JobName::as_str)
    }
}

/// Key segment of test alerts (`~` is not allowed in job names).
pub const TEST_SEGMENT: &str = "~test";

/// Whether `id` is a well-formed alert id (ids are built here; this guards store keys).
pub fn valid_alert_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 200 && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The id of a test alert to `channel`.
pub fn test_alert_id(channel: &str) -> String {
    format!("t-{channel}-{}", RunId::generate())
}

/// A job's recent run history, as read from the log store for [`evaluate`].
#[derive(Debug, Clone)]
pub struct JobHistory<'a> {
    /// The job.
    pub job: &'a JobName,
    /// Its newest runs (running ones included), any order.
    pub recent: &'a [RunRecord],
    /// True when `recent` is a full page: older runs exist.
    pub truncated: bool,
    /// Asked only when `recent` is truncated and holds fewer than two successes: the newest
    /// success older than every run in `recent` (`None`: there is none).
    pub older_success: Option<&'a RunRecord>,
    /// When the job's no-success clock starts if it never succeeded (when it was created, or
    /// first seen by this node).
    pub watched_since: DateTime<Utc>,
    /// The job's retry policy: a failed attempt whose next attempt is still to come is not
    /// (yet) a failure of its tick.
    pub retry: Option<&'a super::retry::RetryPolicy>,
}

/// An alert to claim, possibly only when another alert exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The alert.
    pub alert: Alert,
    /// Claim it only when one of these alert ids of the same job is stored (a `recovered`
    /// follows only an alert that was raised); empty: unconditionally.
    pub requires_any: Vec<String>,
}

/// What the evaluation needs besides the history.
#[derive(Debug, Clone, Copy)]
pub struct EvalWindow {
    /// Now.
    pub now: DateTime<Utc>,
    /// Events (a streak's N-th failure, a recovering success, a run turning late) older than
    /// this are not alerted any more: a node that starts does not page for last week.
    pub lookback: chrono::Duration,
}

/// Where a run sits in time for ordering: start (or dispatch) time, then id.
fn order_key(run: &RunRecord) -> (DateTime<Utc>, &RunId) {
    (run.start_time(), &run.id)
}

fn end_time(run: &RunRecord) -> DateTime<Utc> {
    run.ended_at.unwrap_or_else(|| run.start_time())
}

/// One stretch of runs after a success (the anchor) up to the next success.
struct Segment<'a> {
    /// Id of the success that opened it (`none`: the job never succeeded before it).
    anchor: String,
    /// When the anchor ended.
    anchor_end: Option<DateTime<Utc>>,
    /// Its runs, oldest first.
    runs: Vec<&'a RunRecord>,
    /// The success that closed it, if it is closed.
    closed_by: Option<&'a RunRecord>,
}

/// The alert candidates of one job under `rules` (its effective rules), in an order where an
/// alert comes before a `recovered` that requires it. Pure: the same history gives the same
/// ids on every node.
///
/// Semantics (README "Alerts"): a *streak* is the runs after a success; its listed failures
/// are counted, and when the count reaches `after_consecutive` one alert is raised (kind: the
/// status of that N-th failure; id `f<rule>-<anchor>`), never more for the same streak. The
/// success that ends a streak whose alert (or dead-man alert) was raised raises `recovered`
/// (`r<rule>-<anchor>`). The dead man raises `d<rule>-<anchor>` once when the last success (or,
/// without one, `watched_since`) is older than `expect_success_within_secs`. A run not finished
/// `late_after_secs` after its tick raises `l<rule>-<run id>`.
pub fn evaluate(rules: &[AlertRule], history: &JobHistory<'_>, window: EvalWindow) -> Vec<Candidate> {
    let mut runs: Vec<&RunRecord> = history.recent.iter().collect();
    runs.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
    let outcomes = tick_outcomes(&runs, history.retry, window.now);
    let segments = segments(&outcomes, history);
    let horizon = window.now - window.lookback;
    let mut out = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let r = u32::try_from(index).unwrap_or(u32::MAX);
        let last = segments.len().saturating_sub(1);
        for (i, seg) in segments.iter().enumerate() {
            let current = i == last;
            let fail_id = format!("f{r}-{}", seg.anchor);
            let dead_id = format!("d{r}-{}", seg.anchor);
            // The failure streak.
            let failures: Vec<&&RunRecord> = seg.runs.iter().filter(|run| rule.counts(run.status)).collect();
            let threshold = usize::try_from(rule.after_consecutive).unwrap_or(usize::MAX);
            if let Some(nth) = failures.get(threshold.saturating_sub(1)) {
                if current || end_time(nth) >= horizon {
                    let kind = AlertKind::of_status(nth.status).unwrap_or(AlertKind::Failed);
                    let message = failure_message(history.job, nth, rule.after_consecutive);
                    let mut alert = base_alert(history.job, fail_id.clone(), kind, message, r, rule, window.now);
                    alert.consecutive = Some(rule.after_consecutive);
                    about_run(&mut alert, nth);
                    alert.last_success_at = seg.anchor_end;
                    out.push(Candidate { alert, requires_any: Vec::new() });
                }
            }
            // The dead man: the last success (or the watch start) too long ago.
            let mut dead_man_due = false;
            if let Some(secs) = rule.expect_success_within_secs {
                let limit = chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000));
                let since = seg.anchor_end.unwrap_or(history.watched_since);
                let until = seg.closed_by.map_or(window.now, end_time);
                let due = since + limit;
                dead_man_due = until >= due;
                if dead_man_due && (current || due >= horizon) {
                    let message = match seg.anchor_end {
                        Some(t) => format!(
                            "Job {} has not succeeded for {secs} s (last success {}).",
                            history.job,
                            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        ),
                        None => format!("Job {} has not succeeded within {secs} s (no success recorded).", history.job),
                    };
                    let mut alert =
                        base_alert(history.job, dead_id.clone(), AlertKind::DeadMan, message, r, rule, window.now);
                    alert.last_success_at = seg.anchor_end;
                    out.push(Candidate { alert, requires_any: Vec::new() });
                }
            }
            // Recovery: the success closing a stretch that could have been alerted (a streak as
            // long as the rule's, or a dead man); the alert itself must exist (`requires_any`).
            let alertable = failures.len() >= threshold || dead_man_due;
            if let (Some(success), true) = (seg.closed_by, alertable) {
                if rule.on.contains(&AlertKind::Recovered) && end_time(success) >= horizon {
                    let message = format!("Job {} recovered: it succeeded again.", history.job);
                    let id = format!("r{r}-{}", seg.anchor);
                    let mut alert = base_alert(history.job, id, AlertKind::Recovered, message, r, rule, window.now);
                    about_run(&mut alert, success);
                    alert.last_success_at = Some(end_time(success));
                    alert.consecutive = Some(u32::try_from(failures.len()).unwrap_or(u32::MAX));
                    out.push(Candidate { alert, requires_any: vec![fail_id, dead_id] });
                }
            }
        }
        // Late runs.
        if let (true, Some(secs)) = (rule.on.contains(&AlertKind::Late), rule.late_after_secs) {
            let after = chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000));
            for run in &runs {
                let late_at = run.scheduled_at + after;
                let late = match (run.status, run.ended_at) {
                    (RunStatus::Running, _) => window.now >= late_at,
                    (_, Some(end)) => end > late_at && run.started_at.is_some(),
                    _ => false,
                };
                if late && late_at >= horizon {
                    let message = format!(
                        "Job {}: the run for {} was not finished {secs} s after its tick.",
                        history.job,
                        run.scheduled_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    );
                    let id = format!("l{r}-{}", run.id);
                    let mut alert = base_alert(history.job, id, AlertKind::Late, message, r, rule, window.now);
                    about_run(&mut alert, run);
                    out.push(Candidate { alert, requires_any: Vec::new() });
                }
            }
        }
    }
    out
}

/// Longest a retry may take to show up after the delay its policy gives, before the failed
/// attempt counts anyway (its pending attempt was lost, e.g. every node restarted meanwhile).
const RETRY_GRACE_SECS: i64 = 120;

/// The runs that decide streaks: the last attempt of each tick (attempts of one tick share its
/// `scheduled_at`), without a failed attempt whose retry is still to come (`retry` says it
/// gets one, and the delay before it, with jitter and a grace, has not passed).
fn tick_outcomes<'a>(
    runs: &[&'a RunRecord],
    retry: Option<&super::retry::RetryPolicy>,
    now: DateTime<Utc>,
) -> Vec<&'a RunRecord> {
    let mut last_attempt: HashMap<DateTime<Utc>, u32> = HashMap::new();
    for run in runs {
        let best = last_attempt.entry(run.scheduled_at).or_insert(run.attempt);
        *best = (*best).max(run.attempt);
    }
    runs.iter()
        .copied()
        .filter(|run| last_attempt.get(&run.scheduled_at).is_none_or(|&a| run.attempt >= a))
        .filter(|run| {
            let Some(policy) = retry.filter(|p| p.retries(run.status, run.attempt)) else { return true };
            let wait = policy.nominal_delay(run.attempt).saturating_mul(3) / 2;
            let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
            let due = end_time(run).checked_add_signed(wait + chrono::Duration::seconds(RETRY_GRACE_SECS));
            due.is_some_and(|due| due <= now)
        })
        .collect()
}

/// Splits ordered runs at each success. A leading stretch whose anchor is unknown (older runs
/// exist and no older success was looked up) is dropped.
fn segments<'a>(runs: &[&'a RunRecord], history: &JobHistory<'a>) -> Vec<Segment<'a>> {
    let successes = runs.iter().filter(|r| r.status == RunStatus::Succeeded).count();
    let first_known = !history.truncated || history.older_success.is_some() || successes < 2;
    let (anchor, anchor_end) = match history.older_success {
        Some(s) => (s.id.0.clone(), Some(end_time(s))),
        None => ("none".to_owned(), None),
    };
    let mut out = Vec::new();
    let mut seg = Segment { anchor, anchor_end, runs: Vec::new(), closed_by: None };
    let mut keep = first_known;
    for &run in runs {
        if run.status == RunStatus::Succeeded {
            seg.closed_by = Some(run);
            let next = Segment {
                anchor: run.id.0.clone(),
                anchor_end: Some(end_time(run)),
                runs: Vec::new(),
                closed_by: None,
            };
            let done = std::mem::replace(&mut seg, next);
            if keep {
                out.push(done);
            }
            keep = true;
        } else {
            seg.runs.push(run);
        }
    }
    if keep {
        out.push(seg);
    }
    out
}

fn base_alert(
    job: &JobName,
    id: String,
    kind: AlertKind,
    message: String,
    rule: u32,
    r: &AlertRule,
    now: DateTime<Utc>,
) -> Alert {
    Alert {
        id,
        job: Some(job.clone()),
        kind,
        message,
        raised_at: now,
        rule: Some(rule),
        run: None,
        run_status: None,
        scheduled_at: None,
        worker: None,
        consecutive: None,
        last_success_at: None,
        channels: r.channels.clone(),
    }
}

fn about_run(alert: &mut Alert, run: &RunRecord) {
    alert.run = Some(run.id.clone());
    alert.run_status = Some(run.status);
    alert.scheduled_at = Some(run.scheduled_at);
    alert.worker = Some(run.worker.clone());
}

fn failure_message(job: &JobName, run: &RunRecord, n: u32) -> String {
    let what = match (run.status, run.exit_code) {
        (RunStatus::Failed, Some(code)) => format!("failed with exit code {code}"),
        (RunStatus::Skipped | RunStatus::Missed | RunStatus::Error, _) if !run.err.is_empty() => {
            let reason: String = run.err.chars().take(200).collect();
            format!("{} ({reason})", run.status)
        }
        (status, _) => status.to_string(),
    };
    if n > 1 {
        format!("Job {job} {what}: {n} failures in a row.")
    } else {
        format!("Job {job} {what}.")
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::{Fence, Trigger};

    fn job() -> JobName {
        JobName::parse("j").expect("name")
    }

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).single().expect("time")
    }

    fn run(n: i64, status: RunStatus) -> RunRecord {
        let mut r = RunRecord::not_run(
            job(),
            "x".into(),
            status,
            Trigger::Schedule,
            t(n * 10),
            WorkerId("w1".into()),
            Fence(0),
            String::new(),
        );
        r.id = RunId(format!("run-{n:03}"));
        r.dispatched_at = t(n * 10);
        r.started_at = Some(t(n * 10));
        r.ended_at = (status != RunStatus::Running).then(|| t(n * 10 + 1));
        r
    }

    fn rule(n: u32) -> AlertRule {
        AlertRule {
            on: default_on(),
            after_consecutive: n,
            late_after_secs: None,
            expect_success_within_secs: None,
            channels: vec!["ops".into()],
        }
    }

    fn window(now: i64) -> EvalWindow {
        EvalWindow { now: t(now), lookback: chrono::Duration::hours(1) }
    }

    fn ids(rules: &[AlertRule], runs: &[RunRecord], now: i64) -> Vec<String> {
        let j = job();
        let h = JobHistory {
            job: &j,
            recent: runs,
            truncated: false,
            older_success: None,
            watched_since: t(0),
            retry: None,
        };
        evaluate(rules, &h, window(now)).into_iter().map(|c| c.alert.id).collect()
    }

    #[test]
    fn one_alert_at_the_nth_failure_with_the_same_id_afterwards() {
        use RunStatus::{Failed, Succeeded};
        let rules = [rule(2)];
        assert!(ids(&rules, &[run(1, Succeeded), run(2, Failed)], 30).is_empty());
        let at_two = ids(&rules, &[run(1, Succeeded), run(2, Failed), run(3, Failed)], 40);
        assert_eq!(at_two, ["f0-run-001"]);
        let later = ids(&rules, &[run(1, Succeeded), run(2, Failed), run(3, Failed), run(4, Failed)], 50);
        assert_eq!(later, at_two, "the same streak proposes the same id");
    }

    #[test]
    fn the_nth_failure_sets_the_kind_and_the_message() {
        let j = job();
        let runs = [run(1, RunStatus::Failed), run(2, RunStatus::Timeout)];
        let h = JobHistory {
            job: &j,
            recent: &runs,
            truncated: false,
            older_success: None,
            watched_since: t(0),
            retry: None,
        };
        let c = evaluate(&[rule(2)], &h, window(30));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].alert.kind, AlertKind::Timeout);
        assert_eq!(c[0].alert.id, "f0-none");
        assert_eq!(c[0].alert.run, Some(RunId("run-002".into())));
        assert!(c[0].alert.message.contains("2 failures in a row"), "{}", c[0].alert.message);
    }

    #[test]
    fn recovery_requires_the_streak_alert_and_neutral_statuses_neither_count_nor_break() {
        use RunStatus::{Failed, Killed, Succeeded};
        let j = job();
        let mut r = rule(2);
        r.on = vec![AlertKind::Failed, AlertKind::Recovered];
        let runs = [run(1, Succeeded), run(2, Failed), run(3, Killed), run(4, Failed), run(5, Succeeded)];
        let h = JobHistory {
            job: &j,
            recent: &runs,
            truncated: false,
            older_success: None,
            watched_since: t(0),
            retry: None,
        };
        let c = evaluate(&[r], &h, window(60));
        let got: Vec<(&str, &[String])> = c.iter().map(|c| (c.alert.id.as_str(), c.requires_any.as_slice())).collect();
        assert_eq!(
            got,
            [("f0-run-001", &[][..]), ("r0-run-001", &["f0-run-001".to_owned(), "d0-run-001".to_owned()][..]),]
        );
        assert_eq!(c[1].alert.kind, AlertKind::Recovered);
    }

    #[test]
    fn a_tick_counts_once_by_its_last_attempt_and_not_while_its_retry_is_due() {
        use RunStatus::{Failed, Succeeded, Superseded};
        let j = job();
        let policy: crate::domain::RetryPolicy =
            serde_json::from_value(serde_json::json!({"max_attempts": 2, "initial_delay_secs": 10, "jitter": false}))
                .expect("policy");
        let attempt = |n: i64, of: i64, a: u32, status| {
            let mut r = run(n, status);
            r.scheduled_at = t(of * 10);
            r.attempt = a;
            r
        };
        let eval = |runs: &[RunRecord], now: i64| -> Vec<String> {
            let h = JobHistory {
                job: &j,
                recent: runs,
                truncated: false,
                older_success: None,
                watched_since: t(0),
                retry: Some(&policy),
            };
            evaluate(&[rule(1)], &h, window(now)).into_iter().map(|c| c.alert.id).collect()
        };
        // Attempt 1 failed, its retry is due 10 s later (+ grace): nothing yet.
        let failed_once = [attempt(1, 1, 1, Failed)];
        assert!(eval(&failed_once, 20).is_empty());
        // The retry succeeded: the tick succeeded, no alert ever.
        assert!(eval(&[attempt(1, 1, 1, Failed), attempt(2, 1, 2, Succeeded)], 40).is_empty());
        // The retry failed too (the last attempt): one alert, on that attempt.
        let c = eval(&[attempt(1, 1, 1, Failed), attempt(2, 1, 2, Failed)], 40);
        assert_eq!(c, ["f0-none"]);
        // Overtaken by the next tick: the superseded attempt ends the tick failed.
        assert_eq!(eval(&[attempt(1, 1, 1, Failed), attempt(2, 1, 2, Superseded)], 40), ["f0-none"]);
        // The retry never showed up (its pending attempt was lost): the failure counts after
        // its delay and the grace.
        assert_eq!(eval(&failed_once, 10 + 15 + RETRY_GRACE_SECS + 1), ["f0-none"]);
    }

    #[test]
    fn a_short_streak_raises_nothing() {
        use RunStatus::{Failed, Succeeded};
        assert!(ids(&[rule(3)], &[run(1, Failed), run(2, Failed), run(3, Succeeded), run(4, Failed)], 50).is_empty());
    }

    #[test]
    fn old_streaks_are_not_alerted_past_the_lookback() {
        use RunStatus::{Failed, Succeeded};
        let runs = [run(1, Failed), run(2, Succeeded)];
        assert_eq!(ids(&[rule(1)], &runs, 100), ["f0-none", "r0-none"]);
        assert!(ids(&[rule(1)], &runs, 10_000).is_empty());
    }

    #[test]
    fn dead_man_fires_once_per_last_success() {
        let j = job();
        let mut r = rule(1);
        r.on = vec![AlertKind::Recovered];
        r.expect_success_within_secs = Some(5);
        let none: [RunRecord; 0] = [];
        let h = JobHistory {
            job: &j,
            recent: &none,
            truncated: false,
            older_success: None,
            watched_since: t(0),
            retry: None,
        };
        assert!(evaluate(std::slice::from_ref(&r), &h, window(4)).is_empty());
        let c = evaluate(std::slice::from_ref(&r), &h, window(6));
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].alert.id.as_str(), c[0].alert.kind), ("d0-none", AlertKind::DeadMan));
        // A success long after: the dead man is recorded for the stretch and recovery follows.
        let runs = [run(3, RunStatus::Succeeded)];
        let h = JobHistory {
            job: &j,
            recent: &runs,
            truncated: false,
            older_success: None,
            watched_since: t(0),
            retry: None,
        };
        let got: Vec<String> = evaluate(&[r], &h, window(32)).into_iter().map(|c| c.alert.id).collect();
        assert_eq!(got, ["d0-none", "r0-none"]);
    }

    #[test]
    fn late_runs_running_or_finished_late() {
        let mut r = rule(1);
        r.on = vec![AlertKind::Late];
        r.late_after_secs = Some(5);
        let running = run(1, RunStatus::Running);
        assert!(ids(std::slice::from_ref(&r), std::slice::from_ref(&running), 14).is_empty());
        assert_eq!(ids(std::slice::from_ref(&r), std::slice::from_ref(&running), 16), ["l0-run-001"]);
        let mut slow = run(2, RunStatus::Succeeded);
        slow.ended_at = Some(t(27));
        assert_eq!(ids(&[r], &[slow], 30), ["l0-run-002"]);
    }

    #[test]
    fn a_truncated_window_drops_the_stretch_of_unknown_anchor() {
        use RunStatus::{Failed, Succeeded};
        let j = job();
        let runs = [run(1, Failed), run(2, Succeeded), run(3, Failed), run(4, Succeeded), run(5, Failed)];
        let h = JobHistory {
            job: &j,
            recent: &runs,
            truncated: true,
            older_success: None,
            watched_since: t(0),
            retry: None,
        };
        let got: Vec<String> = evaluate(&[rule(1)], &h, window(60)).into_iter().map(|c| c.alert.id).collect();
        assert_eq!(got, ["f0-run-002", "r0-run-002", "f0-run-004"]);
    }

    #[test]
    fn rules_are_validated_with_clear_messages() {
        let known: BTreeSet<String> = ["ops".to_owned()].into();
        assert!(validate_rules(&[rule(1)], Some(&known)).is_ok());
        let bad = |f: fn(&mut AlertRule)| {
            let mut r = rule(1);
            f(&mut r);
            validate_rules(&[r], Some(&known)).expect_err("invalid").message
        };
        assert!(bad(|r| r.channels.clear()).contains("at least one channel"));
        assert!(bad(|r| r.channels = vec!["pager".into()]).contains("no alert channel named \"pager\""));
        assert!(bad(|r| r.after_consecutive = 0).contains("after_consecutive"));
        assert!(bad(|r| r.on.push(AlertKind::Late)).contains("needs late_after_secs"));
        assert!(bad(|r| r.late_after_secs = Some(3)).contains("needs \"late\""));
        assert!(bad(|r| r.on.push(AlertKind::DeadMan)).contains("expect_success_within_secs"));
        assert!(bad(|r| r.expect_success_within_secs = Some(0)).contains("expect_success_within_secs is 0"));
        assert!(bad(|r| r.on.clear()).contains("never alerts"));
        let parsed: Result<AlertRule, _> = serde_json::from_str(r#"{"on":["failed","bogus"],"channels":["ops"]}"#);
        assert!(parsed.is_err());
        let parsed: AlertRule = serde_json::from_str(r#"{"channels":["ops"]}"#).expect("defaults");
        assert_eq!(parsed, rule(1));
    }

    #[test]
    fn record_state_follows_its_deliveries() {
        let alert = Alert {
            id: "x".into(),
            job: None,
            kind: AlertKind::Test,
            message: String::new(),
            raised_at: t(0),
            rule: None,
            run: None,
            run_status: None,
            scheduled_at: None,
            worker: None,
            consecutive: None,
            last_success_at: None,
            channels: vec!["a".into(), "b".into()],
        };
        let mut rec = AlertRecord::new(alert, WorkerId("w".into()));
        assert_eq!(rec.state, DeliveryState::Pending);
        assert_eq!(rec.job_segment(), TEST_SEGMENT);
        rec.deliveries[0].state = DeliveryState::Delivered;
        rec.deliveries[1].state = DeliveryState::Failed;
        rec.settle_state();
        assert_eq!(rec.state, DeliveryState::Failed);
        rec.deliveries[1].state = DeliveryState::Delivered;
        rec.settle_state();
        assert_eq!(rec.state, DeliveryState::Delivered);
    }
}
