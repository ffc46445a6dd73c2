//! Retries of a failed tick: the job's `retry` policy and the pure decisions around it.
//!
//! Owns: the policy's shape and validation, which outcomes are retried, the delay before each
//! attempt (the [`Backoff`] schedule, jitter only ever lengthening it), the run-now request id
//! that makes each attempt claimable exactly once cluster-wide, and the rule that decides when
//! the job's next tick supersedes a pending retry (policy `forbid`). Leaves to others: writing
//! the pending attempt (scheduler, lost-run recorder), claiming it (claims port), running it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::backoff::Backoff;
use super::job::{ConcurrencyPolicy, Job, JobName, JobValidationError, MAX_ENV_VARS};
use super::run::{RunStatus, Trigger};

/// Most attempts per tick (the first run included).
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest delay between two attempts (1 day).
pub const MAX_DELAY_SECS: u64 = 86_400;
/// Largest growth factor between two delays.
pub const MAX_FACTOR: u32 = 10;
/// Longest value of a run parameter, in bytes.
pub const MAX_PARAM_VALUE_BYTES: usize = 4096;

/// An outcome that can be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RetryOn {
    /// Nonzero exit.
    Failed,
    /// Killed by the job's timeout.
    Timeout,
    /// Its worker died while it ran.
    Lost,
    /// Could not be started.
    Error,
}

impl RetryOn {
    /// The retryable condition a final status is, if any.
    pub fn of(status: RunStatus) -> Option<Self> {
        match status {
            RunStatus::Failed => Some(Self::Failed),
            RunStatus::Timeout => Some(Self::Timeout),
            RunStatus::Lost => Some(Self::Lost),
            RunStatus::Error => Some(Self::Error),
            _ => None,
        }
    }
}

/// A job's retry policy: `retry = { max_attempts, initial_delay_secs, max_delay_secs, factor,
/// jitter, on }`. Attempt n+1 starts `initial_delay_secs × factor^(n-1)` (capped at
/// `max_delay_secs`) after attempt n ended; jitter adds up to half of that delay, never less.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts per tick, the first run included (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the second attempt, in seconds.
    #[serde(default = "default_initial")]
    pub initial_delay_secs: u64,
    /// Longest delay between attempts, in seconds.
    #[serde(default = "default_max_delay")]
    pub max_delay_secs: u64,
    /// Growth of the delay from one attempt to the next (integer, 1 = constant).
    #[serde(default = "default_factor")]
    pub factor: u32,
    /// Spread the delays (up to +50 %), so a fleet failing together does not retry in step.
    #[serde(default = "default_true")]
    pub jitter: bool,
    /// Outcomes that are retried.
    #[serde(default = "default_on")]
    pub on: Vec<RetryOn>,
}

fn default_initial() -> u64 {
    10
}
fn default_max_delay() -> u64 {
    3600
}
fn default_factor() -> u32 {
    2
}
fn default_true() -> bool {
    true
}
fn default_on() -> Vec<RetryOn> {
    vec![RetryOn::Failed, RetryOn::Timeout, RetryOn::Lost]
}

impl RetryPolicy {
    /// Checks the ranges.
    ///
    /// # Errors
    /// The first value out of range, in field `retry`.
    pub fn validate(&self) -> Result<(), JobValidationError> {
        let err = |message: String| Err(JobValidationError { field: "retry", message });
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return err(format!("retry.max_attempts is {}; allowed are 1 to {MAX_ATTEMPTS}", self.max_attempts));
        }
        if self.initial_delay_secs > MAX_DELAY_SECS {
            return err(format!(
                "retry.initial_delay_secs is {}; allowed are 0 to {MAX_DELAY_SECS}",
                self.initial_delay_secs
            ));
        }
        if self.max_delay_secs > MAX_DELAY_SECS || self.max_delay_secs < self.initial_delay_secs {
            return err(format!(
                "retry.max_delay_secs is {}; allowed are initial_delay_secs ({}) to {MAX_DELAY_SECS}",
                self.max_delay_secs, self.initial_delay_secs
            ));
        }
        if !(1..=MAX_FACTOR).contains(&self.factor) {
            return err(format!("retry.factor is {}; allowed are 1 to {MAX_FACTOR}", self.factor));
        }
        if self.on.is_empty() {
            return err("retry.on is empty; name at least one of failed, timeout, lost, error".into());
        }
        Ok(())
    }

    /// Whether a run of attempt `attempt` that ended `status` gets another attempt.
    pub fn retries(&self, status: RunStatus, attempt: u32) -> bool {
        attempt < self.max_attempts && RetryOn::of(status).is_some_and(|on| self.on.contains(&on))
    }

    /// The nominal delay between the end of attempt `attempt` (from 1) and the start of the
    /// next one, without jitter.
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        let mut backoff =
            Backoff::new(Duration::from_secs(self.initial_delay_secs), Duration::from_secs(self.max_delay_secs))
                .with_factor(self.factor)
                .without_jitter();
        let mut delay = Duration::ZERO;
        for _ in 0..attempt.max(1) {
            delay = backoff.next_delay();
        }
        delay
    }

    /// The delay before the attempt after `attempt`: the nominal one, lengthened by jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let nominal = self.nominal_delay(attempt);
        if self.jitter {
            super::backoff::spread_above(nominal)
        } else {
            nominal
        }
    }
}

/// A pending attempt of a tick: what the run-now request of a retry carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryOf {
    /// The tick (or manual request time) all attempts share.
    pub scheduled_at: DateTime<Utc>,
    /// The attempt to run (from 2).
    pub attempt: u32,
    /// Not before this instant.
    pub due_at: DateTime<Utc>,
    /// An attempt of a backfill run: its own chain (trigger `backfill`, its own claims), apart
    /// from the attempts of the scheduled run of the same tick.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
}

impl RetryOf {
    /// The request id of this attempt: the same on every node, so each (job, tick, attempt) is
    /// claimed once however many nodes asked for it.
    pub fn request_id(&self, job: &JobName) -> String {
        let chain = if self.backfill { "backfill-" } else { "" };
        format!("retry-{chain}{job}-{}-{}", self.scheduled_at.timestamp_millis(), self.attempt)
    }

    /// The trigger of this attempt's run: `backfill` in a backfill chain, else `retry`.
    pub fn trigger(&self) -> Trigger {
        if self.backfill {
            Trigger::Backfill
        } else {
            Trigger::Retry
        }
    }
}

/// Under `forbid`, whether the job's next tick supersedes a pending attempt: the attempt would
/// start at or after the next tick (`next_tick` = the first fire time after the attempt's
/// `scheduled_at`), so the new tick wins and the attempt is recorded `superseded`.
pub fn superseded_by_next_tick(due_at: DateTime<Utc>, next_tick: Option<DateTime<Utc>>) -> bool {
    next_tick.is_some_and(|next| due_at >= next)
}

/// What follows an attempt that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextAttempt {
    /// No retry: succeeded, not a retried outcome, attempts used up, or no policy.
    None,
    /// Another attempt, due at `due_at`.
    Pending(RetryOf),
    /// Another attempt was due, but at or after the job's next tick (policy `forbid`): the tick
    /// wins and the attempt is recorded `superseded`.
    Superseded {
        /// The attempt that will not run.
        retry: RetryOf,
        /// The tick that overtook it.
        next_tick: DateTime<Utc>,
    },
}

impl NextAttempt {
    /// Puts the next attempt in the chain of the run that ended with `trigger` (a backfill run's
    /// attempts stay backfill attempts; every other chain is the tick's).
    #[must_use]
    pub fn in_chain(mut self, trigger: Trigger) -> Self {
        let backfill = trigger == Trigger::Backfill;
        match &mut self {
            Self::Pending(retry) | Self::Superseded { retry, .. } => retry.backfill = backfill,
            Self::None => {}
        }
        self
    }
}

/// Decides what follows attempt `attempt` of `job`'s tick `scheduled_at` that ended `status`
/// at `ended_at`. Only the node that records the attempt's final status asks (its executor, or
/// the lost-run recorder for a `lost` run), so the decision is taken once.
pub fn next_attempt(
    job: &Job,
    status: RunStatus,
    attempt: u32,
    scheduled_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
    default_tz: chrono_tz::Tz,
) -> NextAttempt {
    let Some(policy) = job.retry.as_ref().filter(|p| p.retries(status, attempt)) else {
        return NextAttempt::None;
    };
    let delay = chrono::Duration::from_std(policy.delay(attempt)).unwrap_or(chrono::Duration::MAX);
    let retry = RetryOf { scheduled_at, attempt: attempt + 1, due_at: ended_at + delay, backfill: false };
    if job.concurrency == ConcurrencyPolicy::Forbid && job.enabled {
        // The job's next tick after the attempt ended: for a tick run on time that is the tick
        // after it; for a past tick (catch-up, backfill) or a run longer than the period, the
        // next one still to come (the ones in between already ran or were skipped).
        let after = scheduled_at.max(ended_at);
        let next_tick = job.schedule().ok().and_then(|s| s.next_after(after, job.zone(default_tz)));
        if let Some(next_tick) = next_tick.filter(|n| superseded_by_next_tick(retry.due_at, Some(*n))) {
            return NextAttempt::Superseded { retry, next_tick };
        }
    }
    NextAttempt::Pending(retry)
}

/// Checks run parameters (`POST /jobs/{name}/run {"env": {...}}`) like a job's env: valid,
/// unreserved names; values without NUL and at most [`MAX_PARAM_VALUE_BYTES`].
///
/// # Errors
/// The first bad entry, in field `env`.
pub fn validate_params(env: &BTreeMap<String, String>) -> Result<(), JobValidationError> {
    if env.len() > MAX_ENV_VARS {
        return Err(JobValidationError {
            field: "env",
            message: format!("{} variables; the limit is {MAX_ENV_VARS}", env.len()),
        });
    }
    for (k, v) in env {
        super::job::validate_env_entry(k, v, MAX_PARAM_VALUE_BYTES)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: u32, initial: u64, cap: u64, factor: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: max,
            initial_delay_secs: initial,
            max_delay_secs: cap,
            factor,
            jitter: false,
            on: default_on(),
        }
    }

    #[test]
    fn delays_grow_by_factor_up_to_the_cap() {
        let p = policy(10, 1, 10, 2);
        let got: Vec<u64> = (1..=6).map(|a| p.delay(a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 10, 10]);
        let constant = policy(10, 30, 30, 1);
        assert_eq!(constant.delay(5), Duration::from_secs(30));
    }

    #[test]
    fn jitter_only_lengthens_the_delay() {
        let p = RetryPolicy { jitter: true, ..policy(10, 2, 100, 2) };
        for _ in 0..100 {
            let d = p.delay(2);
            assert!(d >= Duration::from_secs(4) && d <= Duration::from_secs(6), "{d:?}");
        }
    }

    #[test]
    fn retries_only_listed_outcomes_below_max_attempts() {
        let p = RetryPolicy { on: vec![RetryOn::Failed, RetryOn::Lost], ..policy(3, 1, 1, 1) };
        assert!(p.retries(RunStatus::Failed, 1));
        assert!(p.retries(RunStatus::Lost, 2));
        assert!(!p.retries(RunStatus::Failed, 3), "third attempt is the last");
        assert!(!p.retries(RunStatus::Timeout, 1), "timeout not listed");
        assert!(!p.retries(RunStatus::Succeeded, 1));
        assert!(!p.retries(RunStatus::Killed, 1), "a kill on request is never retried");
        assert!(!p.retries(RunStatus::Skipped, 1));
    }

    #[test]
    fn validation_names_the_bad_value() {
        assert!(policy(3, 1, 10, 2).validate().is_ok());
        for bad in [policy(0, 1, 10, 2), policy(101, 1, 10, 2), policy(3, 10, 5, 2), policy(3, 1, 10, 0)] {
            let e = bad.validate().expect_err("invalid");
            assert_eq!(e.field, "retry");
        }
        let e = RetryPolicy { on: vec![], ..policy(3, 1, 10, 2) }.validate().expect_err("empty on");
        assert!(e.message.contains("retry.on"));
    }

    #[test]
    fn policy_defaults_from_minimal_json() {
        let p: RetryPolicy = serde_json::from_str(r#"{"max_attempts": 3}"#).expect("parse");
        assert_eq!((p.initial_delay_secs, p.max_delay_secs, p.factor, p.jitter), (10, 3600, 2, true));
        assert_eq!(p.on, default_on());
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"max_attempts": 3, "on": ["nope"]}"#).is_err());
    }

    #[test]
    fn request_id_is_per_job_tick_and_attempt() {
        let job = JobName::parse("j").expect("name");
        let at = DateTime::from_timestamp_millis(1_700_000_000_000).expect("time");
        let a = RetryOf { scheduled_at: at, attempt: 2, due_at: at, backfill: false };
        let b = RetryOf { attempt: 3, ..a.clone() };
        assert_eq!(a.request_id(&job), "retry-j-1700000000000-2");
        assert_ne!(a.request_id(&job), b.request_id(&job));
        assert_eq!(
            a.request_id(&job),
            RetryOf { due_at: at + chrono::Duration::seconds(5), ..a.clone() }.request_id(&job)
        );
    }

    #[test]
    fn next_tick_supersedes_an_attempt_due_at_or_after_it() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let s = chrono::Duration::seconds;
        assert!(superseded_by_next_tick(t + s(10), Some(t + s(10))));
        assert!(superseded_by_next_tick(t + s(11), Some(t + s(10))));
        assert!(!superseded_by_next_tick(t + s(9), Some(t + s(10))));
        assert!(!superseded_by_next_tick(t + s(9), None));
    }

    fn job(cron: &str, concurrency: ConcurrencyPolicy, retry: RetryPolicy) -> Job {
        let spec = crate::domain::JobSpec {
            name: Some("j".into()),
            command: "false".into(),
            cron_expr: cron.into(),
            concurrency: Some(concurrency),
            retry: Some(retry),
            ..Default::default()
        };
        spec.into_job(None).expect("valid job")
    }

    #[test]
    fn next_attempt_keeps_the_tick_and_counts_up() {
        let j = job("*/10 * * * * *", ConcurrencyPolicy::Allow, policy(3, 1, 60, 2));
        let t = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let end = t + chrono::Duration::milliseconds(300);
        let got = next_attempt(&j, RunStatus::Failed, 1, t, end, chrono_tz::UTC);
        assert_eq!(
            got,
            NextAttempt::Pending(RetryOf {
                scheduled_at: t,
                attempt: 2,
                due_at: end + chrono::Duration::seconds(1),
                backfill: false
            })
        );
        let got = next_attempt(&j, RunStatus::Failed, 2, t, end, chrono_tz::UTC);
        assert_eq!(
            got,
            NextAttempt::Pending(RetryOf {
                scheduled_at: t,
                attempt: 3,
                due_at: end + chrono::Duration::seconds(2),
                backfill: false
            })
        );
        assert_eq!(next_attempt(&j, RunStatus::Failed, 3, t, end, chrono_tz::UTC), NextAttempt::None);
        assert_eq!(next_attempt(&j, RunStatus::Succeeded, 1, t, end, chrono_tz::UTC), NextAttempt::None);
    }

    #[test]
    fn under_forbid_the_next_tick_supersedes_a_late_attempt() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let end = t + chrono::Duration::seconds(5);
        // Every 10 s; attempt 2 due 8 s after an attempt that ended at +5 s: at +13 s, after +10 s.
        let forbid = job("*/10 * * * * *", ConcurrencyPolicy::Forbid, policy(3, 8, 60, 2));
        match next_attempt(&forbid, RunStatus::Failed, 1, t, end, chrono_tz::UTC) {
            NextAttempt::Superseded { retry, next_tick } => {
                assert_eq!((retry.attempt, next_tick), (2, t + chrono::Duration::seconds(10)));
            }
            other => panic!("expected superseded, got {other:?}"),
        }
        // Under allow the attempt still runs; under forbid an attempt due before the tick too.
        let allow = job("*/10 * * * * *", ConcurrencyPolicy::Allow, policy(3, 8, 60, 2));
        assert!(matches!(next_attempt(&allow, RunStatus::Failed, 1, t, end, chrono_tz::UTC), NextAttempt::Pending(_)));
        let soon = job("*/10 * * * * *", ConcurrencyPolicy::Forbid, policy(3, 1, 60, 2));
        assert!(matches!(next_attempt(&soon, RunStatus::Failed, 1, t, end, chrono_tz::UTC), NextAttempt::Pending(_)));
        // A past tick (catch-up, backfill) failing now competes with the next tick still to
        // come, not with the ticks after it that are past too.
        let now = t + chrono::Duration::hours(1) + chrono::Duration::seconds(2);
        assert!(matches!(next_attempt(&soon, RunStatus::Failed, 1, t, now, chrono_tz::UTC), NextAttempt::Pending(_)));
        match next_attempt(&forbid, RunStatus::Failed, 1, t, now, chrono_tz::UTC) {
            NextAttempt::Superseded { next_tick, .. } => {
                assert_eq!(next_tick, t + chrono::Duration::hours(1) + chrono::Duration::seconds(10));
            }
            other => panic!("expected superseded by the next tick to come, got {other:?}"),
        }
    }

    #[test]
    fn a_backfill_run_s_attempts_are_their_own_chain() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let j = job("*/10 * * * * *", ConcurrencyPolicy::Allow, policy(3, 1, 60, 2));
        let job_name = j.name.clone();
        let end = t + chrono::Duration::seconds(1);
        let scheduled = next_attempt(&j, RunStatus::Failed, 1, t, end, chrono_tz::UTC).in_chain(Trigger::Schedule);
        let backfill = next_attempt(&j, RunStatus::Failed, 1, t, end, chrono_tz::UTC).in_chain(Trigger::Backfill);
        let (NextAttempt::Pending(a), NextAttempt::Pending(b)) = (scheduled, backfill) else { panic!("both retried") };
        assert_eq!((a.trigger(), b.trigger()), (Trigger::Retry, Trigger::Backfill));
        assert_ne!(a.request_id(&job_name), b.request_id(&job_name), "claimed apart: one tick, two chains");
        // Attempt 2 of a backfill run is again a backfill run; its attempt 3 stays in the chain.
        let third = next_attempt(&j, RunStatus::Failed, 2, t, end, chrono_tz::UTC).in_chain(b.trigger());
        assert!(matches!(third, NextAttempt::Pending(RetryOf { backfill: true, attempt: 3, .. })));
        let json = serde_json::to_value(&a).expect("json");
        assert!(json.get("backfill").is_none(), "the tick's chain is encoded as before: {json}");
    }

    #[test]
    fn params_are_validated_like_job_env() {
        let ok: BTreeMap<String, String> = [("TARGET".into(), "eu".into())].into();
        assert!(validate_params(&ok).is_ok());
        for bad in ["1X", "A-B", "", "DISTCRON_ATTEMPT"] {
            let env: BTreeMap<String, String> = [(bad.to_owned(), "v".to_owned())].into();
            assert_eq!(validate_params(&env).expect_err(bad).field, "env");
        }
        let long: BTreeMap<String, String> = [("X".into(), "v".repeat(MAX_PARAM_VALUE_BYTES + 1))].into();
        assert!(validate_params(&long).is_err());
    }
}
