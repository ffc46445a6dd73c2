//! AlertActor: raises and delivers alerts (issue 11, item 3), beside the scheduling path.
//!
//! Owns: the evaluation loop and delivery tasks. Every `alerts.poll_ms` it reads the newest runs
//! of each job it evaluates (the first `alerts.evaluators_per_job` live workers in the job's
//! rendezvous ranking), asks the pure core ([`crate::domain::alert::evaluate`]) for candidates,
//! and claims each through the claims port; the node whose claim creates the record delivers
//! it, recording every attempt with a compare-and-set. A pending record whose owner left the
//! cluster (or this node's own, from before a restart) is taken over by the job's owner.
//!
//! The consecutive-failure state is derived from the run log (the runs after the last success)
//! and the alert records, not kept in memory: it survives restarts and is the same on every
//! worker. Nothing here touches scheduling: the actor only reads the log and job stores, and
//! sends run on their own tasks (HTTP on the blocking pool), so a slow receiver never delays
//! a tick.
//!
//! Leaves to others: the rules' meaning (`domain::alert`), the wire formats (`alerting`), the
//! records' storage (the claims port).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::rank;
use crate::alerting::{Channels, Outcome};
use crate::backend::{Claims, JobStore, LogStore, Membership, RunFilter, RunQuery, StoredAlert};
use crate::domain::alert::{
    evaluate, AlertRule, ChannelDelivery, DeliveryAttempt, DeliveryState, EvalWindow, JobHistory, TEST_SEGMENT,
};
use crate::domain::{AlertRecord, Job, JobName, RunStatus, WorkerId};

/// How often the job list is re-read.
const JOBS_REFRESH: Duration = Duration::from_secs(5);
/// Every this many passes, pending records are checked for an owner that left.
const TAKEOVER_EVERY: u64 = 15;
/// How often old alert records are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Pause before a failed write of a delivery record is retried.
const RECORD_RETRY: Duration = Duration::from_secs(2);

/// What the actor needs from config.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Evaluation period.
    pub poll: Duration,
    /// Evaluators per job.
    pub evaluators_per_job: usize,
    /// How far back events are still alerted.
    pub lookback: chrono::Duration,
    /// Runs read per job and pass.
    pub history_runs: u32,
    /// Alert records kept this many days after their last change.
    pub retention_days: u32,
    /// Rules of jobs without their own.
    pub default_rules: Vec<AlertRule>,
}

impl AlertSettings {
    /// From `[alerts]`.
    pub fn from_config(config: &crate::alerting::AlertsConfig) -> Self {
        Self {
            poll: Duration::from_millis(config.poll_ms),
            evaluators_per_job: config.evaluators_per_job as usize,
            lookback: chrono::Duration::seconds(i64::try_from(config.lookback_secs).unwrap_or(i64::MAX / 1000)),
            history_runs: config.history_runs,
            retention_days: config.retention_days,
            default_rules: config.rules.clone(),
        }
    }
}

/// The ports the actor reads and claims through.
#[derive(Clone)]
pub struct AlertPeers {
    /// Alert claims and records.
    pub claims: Arc<dyn Claims>,
    /// Run history.
    pub logs: Arc<dyn LogStore>,
    /// Jobs and their rules.
    pub jobs: Arc<dyn JobStore>,
    /// Live workers, for the ranking.
    pub members: Arc<dyn Membership>,
}

/// (job segment, alert id).
type AlertKey = (String, String);

/// State carried from pass to pass (moved into the pass's future and back).
#[derive(Default)]
struct PassState {
    jobs: Vec<Job>,
    jobs_read_at: Option<Instant>,
    first_seen: HashMap<JobName, DateTime<Utc>>,
    /// Alerts known to be claimed (by anyone) or never to be raised: not asked again.
    settled: HashSet<AlertKey>,
    passes: u64,
    purged_at: Option<Instant>,
    /// Whether the last pass failed (to log a failure once, and the recovery).
    failing: bool,
}

/// The alert evaluator and deliverer of one node.
pub struct AlertActor {
    settings: Arc<AlertSettings>,
    peers: AlertPeers,
    channels: Arc<Channels>,
    me: WorkerId,
    state: Option<PassState>,
    delivering: Arc<Mutex<HashSet<AlertKey>>>,
}

impl AlertActor {
    /// An actor for worker `me`.
    pub fn new(settings: AlertSettings, peers: AlertPeers, channels: Arc<Channels>, me: WorkerId) -> Self {
        Self {
            settings: Arc::new(settings),
            peers,
            channels,
            me,
            state: Some(PassState::default()),
            delivering: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        // One pass at a time: a slow store makes passes rarer, never concurrent.
        let Some(state) = self.state.take() else { return };
        let pass = run_pass(
            self.peers.clone(),
            Arc::clone(&self.settings),
            self.me.clone(),
            state,
            Arc::clone(&self.delivering),
        );
        ctx.spawn(pass.into_actor(self).map(|(state, claimed), act, _| {
            act.state = Some(state);
            for stored in claimed {
                actix::spawn(deliver(
                    Arc::clone(&act.peers.claims),
                    Arc::clone(&act.channels),
                    act.me.clone(),
                    stored,
                    Arc::clone(&act.delivering),
                ));
            }
        }));
    }
}

impl Actor for AlertActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        log::info!(
            "Alert evaluation started. poll_ms={} channels={}",
            self.settings.poll.as_millis(),
            self.channels.describe().len()
        );
        ctx.run_interval(self.settings.poll, |act, ctx| act.tick(ctx));
    }
}

/// One evaluation pass; returns the state and the alerts this node claimed (or took over).
async fn run_pass(
    peers: AlertPeers,
    settings: Arc<AlertSettings>,
    me: WorkerId,
    mut state: PassState,
    delivering: Arc<Mutex<HashSet<AlertKey>>>,
) -> (PassState, Vec<StoredAlert>) {
    state.passes += 1;
    let mut claimed = Vec::new();
    let result = pass_body(&peers, &settings, &me, &mut state, &delivering, &mut claimed).await;
    match (result, state.failing) {
        (Err(e), false) => {
            log::warn!("Alert evaluation failed; retrying every poll. error={e}");
            state.failing = true;
        }
        (Ok(()), true) => {
            log::info!("Alert evaluation works again.");
            state.failing = false;
        }
        _ => {}
    }
    (state, claimed)
}

async fn pass_body(
    peers: &AlertPeers,
    settings: &AlertSettings,
    me: &WorkerId,
    state: &mut PassState,
    delivering: &Mutex<HashSet<AlertKey>>,
    claimed: &mut Vec<StoredAlert>,
) -> Result<(), crate::backend::BackendError> {
    if state.jobs_read_at.is_none_or(|at| at.elapsed() >= JOBS_REFRESH) {
        state.jobs = peers.jobs.snapshot().await?.0;
        state.jobs_read_at = Some(Instant::now());
    }
    let mut live: Vec<String> = peers.members.live().await?.into_iter().map(|w| w.id.0).collect();
    if !live.contains(&me.0) {
        live.push(me.0.clone());
    }
    let now = Utc::now();
    let window = EvalWindow { now, lookback: settings.lookback };
    let jobs = std::mem::take(&mut state.jobs);
    let outcome = evaluate_jobs(peers, settings, me, state, &jobs, &live, window, claimed).await;
    state.jobs = jobs;
    outcome?;
    if state.passes % TAKEOVER_EVERY == 1 {
        take_over(peers, settings, me, &live, delivering, claimed).await?;
    }
    if state.purged_at.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
        state.purged_at = Some(Instant::now());
        let cutoff = now - chrono::Duration::days(i64::from(settings.retention_days));
        match peers.claims.purge_alerts_before(cutoff).await {
            Ok(0) => {}
            Ok(n) => log::info!("Old alert records purged. deleted={n} retention_days={}", settings.retention_days),
            Err(e) => log::warn!("Alert record purge failed; retrying in an hour. error={e}"),
        }
    }
    if state.settled.len() > 100_000 {
        state.settled.clear();
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn evaluate_jobs(
    peers: &AlertPeers,
    settings: &AlertSettings,
    me: &WorkerId,
    state: &mut PassState,
    jobs: &[Job],
    live: &[String],
    window: EvalWindow,
    claimed: &mut Vec<StoredAlert>,
) -> Result<(), crate::backend::BackendError> {
    for job in jobs {
        let rules = job.alerts.as_deref().unwrap_or(settings.default_rules.as_slice());
        if rules.is_empty() {
            continue;
        }
        if rank::rank(job.name.as_str(), &me.0, live.iter().map(String::as_str)) >= settings.evaluators_per_job {
            continue;
        }
        let first_seen = *state.first_seen.entry(job.name.clone()).or_insert(window.now);
        let watched_since = if job.created_at > DateTime::<Utc>::UNIX_EPOCH { job.created_at } else { first_seen };
        let limit = settings.history_runs;
        let query = RunQuery {
            filter: RunFilter { job: Some(job.name.clone()), ..RunFilter::default() },
            after: None,
            skip: 0,
            limit,
        };
        let recent = peers.logs.query(&query).await?.runs;
        let truncated = recent.len() >= limit as usize;
        let successes = recent.iter().filter(|r| r.status == RunStatus::Succeeded).count();
        let older = match recent.iter().map(crate::domain::RunRecord::start_time).min() {
            Some(oldest) if truncated && successes < 2 => {
                let query = RunQuery {
                    filter: RunFilter {
                        job: Some(job.name.clone()),
                        status: Some(RunStatus::Succeeded),
                        to: Some(oldest),
                        ..RunFilter::default()
                    },
                    after: None,
                    skip: 0,
                    limit: 1,
                };
                peers.logs.query(&query).await?.runs.into_iter().next()
            }
            _ => None,
        };
        let history = JobHistory {
            job: &job.name,
            recent: &recent,
            truncated,
            older_success: older.as_ref(),
            watched_since,
            retry: job.retry.as_ref(),
        };
        for candidate in evaluate(rules, &history, window) {
            let key = (job.name.as_str().to_owned(), candidate.alert.id.clone());
            if state.settled.contains(&key) {
                continue;
            }
            if !candidate.requires_any.is_empty() {
                let mut raised = false;
                for id in &candidate.requires_any {
                    let required = (key.0.clone(), id.clone());
                    if state.settled.contains(&required) || peers.claims.get_alert(&key.0, id).await?.is_some() {
                        raised = true;
                        break;
                    }
                }
                if !raised {
                    // Nothing was raised for that stretch: once its success is past a few
                    // polls, no node will raise it any more.
                    let old = window.now - candidate.alert.last_success_at.unwrap_or(window.now);
                    if old > chrono::Duration::seconds(60) {
                        state.settled.insert(key);
                    }
                    continue;
                }
            }
            let record = AlertRecord::new(candidate.alert, me.clone());
            match peers.claims.claim_alert(&record).await? {
                Some(revision) => {
                    log::info!(
                        "Alert raised. job={} alert={} kind={} channels={}",
                        job.name,
                        record.alert.id,
                        record.alert.kind,
                        record.alert.channels.join(",")
                    );
                    claimed.push(StoredAlert { record, revision });
                }
                None => log::debug!("Alert already claimed elsewhere. job={} alert={}", job.name, key.1),
            }
            state.settled.insert(key);
        }
    }
    Ok(())
}

/// Takes over pending records whose owner is no longer live (or is this node, from before a
/// restart), for the jobs this node owns.
async fn take_over(
    peers: &AlertPeers,
    settings: &AlertSettings,
    me: &WorkerId,
    live: &[String],
    delivering: &Mutex<HashSet<AlertKey>>,
    claimed: &mut Vec<StoredAlert>,
) -> Result<(), crate::backend::BackendError> {
    let quiet = chrono::Duration::from_std(settings.poll * 3).unwrap_or_else(|_| chrono::Duration::seconds(10));
    let now = Utc::now();
    for stored in peers.claims.alerts(None).await? {
        let record = &stored.record;
        let segment = record.job_segment().to_owned();
        if record.state != DeliveryState::Pending || segment == TEST_SEGMENT {
            continue;
        }
        let abandoned = (record.owner == *me || !live.contains(&record.owner.0)) && now - record.updated_at > quiet;
        let busy = delivering
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&(segment.clone(), record.alert.id.clone()));
        if !abandoned || busy || rank::rank(&segment, &me.0, live.iter().map(String::as_str)) != 0 {
            continue;
        }
        let mut mine = record.clone();
        let previous = std::mem::replace(&mut mine.owner, me.clone());
        mine.updated_at = now;
        if let Some(revision) = peers.claims.update_alert(&mine, stored.revision).await? {
            log::warn!(
                "Alert delivery taken over from a node that left. job={segment} alert={} previous_owner={previous}",
                mine.alert.id
            );
            claimed.push(StoredAlert { record: mine, revision });
        }
    }
    Ok(())
}

/// Delivers a claimed alert to each of its pending channels in turn, with retries and
/// backoff, recording every attempt. Stops when another node took the record over.
async fn deliver(
    claims: Arc<dyn Claims>,
    channels: Arc<Channels>,
    me: WorkerId,
    mut stored: StoredAlert,
    delivering: Arc<Mutex<HashSet<AlertKey>>>,
) {
    let key = (stored.record.job_segment().to_owned(), stored.record.alert.id.clone());
    if !delivering.lock().unwrap_or_else(PoisonError::into_inner).insert(key.clone()) {
        return;
    }
    for index in 0..stored.record.deliveries.len() {
        if stored.record.deliveries[index].state != DeliveryState::Pending {
            continue;
        }
        let name = stored.record.deliveries[index].channel.clone();
        let Some(channel) = channels.get(&name) else {
            let outcome = Outcome {
                ok: false,
                code: None,
                error: Some(format!("channel {name:?} is not configured on node {me}")),
                duration: Duration::ZERO,
            };
            record_attempt(&mut stored.record.deliveries[index], &outcome, &me, 1);
            if !save(&*claims, &mut stored).await {
                break;
            }
            continue;
        };
        let mut backoff = channel.backoff();
        loop {
            let done = stored.record.deliveries[index].attempts.len();
            let attempt = u32::try_from(done).unwrap_or(u32::MAX).saturating_add(1);
            if done > 0 {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            let outcome = channel.send(&stored.record.alert, attempt).await;
            if !outcome.ok {
                log::warn!(
                    "Alert delivery attempt failed. alert={} channel={name} attempt={attempt} max_attempts={} error={}",
                    stored.record.alert.id,
                    channel.max_attempts,
                    outcome.error.as_deref().unwrap_or("")
                );
            }
            record_attempt(&mut stored.record.deliveries[index], &outcome, &me, channel.max_attempts);
            if !save(&*claims, &mut stored).await {
                delivering.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
                return;
            }
            match stored.record.deliveries[index].state {
                DeliveryState::Pending => continue,
                DeliveryState::Delivered => {
                    log::info!("Alert delivered. alert={} channel={name} attempt={attempt}", stored.record.alert.id);
                }
                DeliveryState::Failed => log::error!(
                    "Alert delivery given up after every attempt failed. alert={} channel={name} attempts={attempt}",
                    stored.record.alert.id
                ),
            }
            break;
        }
    }
    delivering.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
}

/// Appends `outcome` to `delivery` and settles its state (`max_attempts` reached: failed).
pub fn record_attempt(delivery: &mut ChannelDelivery, outcome: &Outcome, worker: &WorkerId, max_attempts: u32) {
    let attempt = u32::try_from(delivery.attempts.len()).unwrap_or(u32::MAX).saturating_add(1);
    let duration = chrono::Duration::from_std(outcome.duration).unwrap_or_default();
    delivery.attempts.push(DeliveryAttempt {
        attempt,
        at: Utc::now() - duration,
        worker: worker.clone(),
        ok: outcome.ok,
        duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
        code: outcome.code,
        error: outcome.error.clone(),
    });
    delivery.state = if outcome.ok {
        DeliveryState::Delivered
    } else if attempt >= max_attempts {
        DeliveryState::Failed
    } else {
        DeliveryState::Pending
    };
}

/// Writes the record (compare-and-set), retrying while the store is unavailable; false when
/// another node owns it now.
async fn save(claims: &dyn Claims, stored: &mut StoredAlert) -> bool {
    stored.record.settle_state();
    stored.record.updated_at = Utc::now();
    let mut warned = false;
    loop {
        match claims.update_alert(&stored.record, stored.revision).await {
            Ok(Some(revision)) => {
                stored.revision = revision;
                return true;
            }
            Ok(None) => {
                log::warn!(
                    "Alert record changed elsewhere (taken over); this node stops delivering it. alert={}",
                    stored.record.alert.id
                );
                return false;
            }
            Err(e) => {
                if !warned {
                    log::warn!(
                        "Cannot record an alert delivery attempt; retrying. alert={} error={e}",
                        stored.record.alert.id
                    );
                    warned = true;
                }
                tokio::time::sleep(RECORD_RETRY).await;
            }
        }
    }
}
