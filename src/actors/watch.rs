//! WatchActor: keeps the scheduler's view of the job store current.
//!
//! Loads the full job set with its revision (`Resynced`), then watches from revision + 1 and
//! forwards each change as a typed message. A broken stream resumes from the last revision
//! seen; a compacted history triggers a full resync, so no update is ever missed or applied
//! twice (ARCHITECTURE.md "Actors"). Store outages are logged once and retried with backoff.
//!
//! It also owns the set of stored documents that are not valid jobs (issue 9, item 8): such a
//! document reaches the scheduler as a removal (its previous definition stops), is logged once
//! per reason ([`InvalidJobs`]) and is answered to [`GetInvalidJobs`] for readiness. Validation
//! itself is [`Job::from_stored`](crate::domain::Job::from_stored), in the adapters.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::messages::{GetInvalidJobs, JobRemoved, JobUpserted, KillRequested, Resynced, RunRequested, WatchLost};
use crate::backend::{BackendError, Change, JobStore, Signal, WatchEvent};
use crate::domain::{Backoff, InvalidJob, JobName, Revision};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where the job updates go.
#[derive(Clone)]
pub struct WatchTargets {
    /// Full job sets.
    pub resynced: Recipient<Resynced>,
    /// Job created/changed.
    pub upserted: Recipient<JobUpserted>,
    /// Job deleted.
    pub removed: Recipient<JobRemoved>,
    /// Kill signals.
    pub kill: Recipient<KillRequested>,
    /// Run-now signals.
    pub run: Recipient<RunRequested>,
    /// Watch broken.
    pub lost: Recipient<WatchLost>,
}

/// Snapshot + watch of the job store.
pub struct WatchActor {
    jobs: Arc<dyn JobStore>,
    targets: WatchTargets,
    last_revision: Revision,
    /// Bumped on every (re)subscription; items of older streams are ignored.
    epoch: u64,
    backoff: Backoff,
    failing: bool,
    invalid: InvalidJobs,
    /// Exits the process if this actor panics.
    _guard: super::essential::PanicGuard,
}

/// The stored documents that are not valid jobs, each logged once per distinct reason (not on
/// every watch event or resync). Pure: unit tested alone.
#[derive(Debug, Default)]
pub struct InvalidJobs {
    by_name: std::collections::BTreeMap<JobName, String>,
}

impl InvalidJobs {
    /// Records `job` as invalid; true when it is new or its reason changed (and so was logged).
    pub fn mark(&mut self, job: InvalidJob) -> bool {
        if self.by_name.get(&job.name) == Some(&job.reason) {
            return false;
        }
        log::error!(
            "A stored job is invalid; it is not planned until it is fixed in the job store. job={} reason={}",
            job.name,
            job.reason
        );
        self.by_name.insert(job.name, job.reason);
        true
    }

    /// The job is valid again or gone; true when it was invalid.
    pub fn clear(&mut self, name: &JobName, valid_again: bool) -> bool {
        let was = self.by_name.remove(name).is_some();
        if was && valid_again {
            log::info!("A stored job is valid again; planning it. job={name}");
        }
        was
    }

    /// Replaces the whole set after a full snapshot (logging only what is new).
    pub fn replace_all(&mut self, invalid: Vec<InvalidJob>, valid: impl Iterator<Item = JobName>) {
        for name in valid {
            self.clear(&name, true);
        }
        let keep: std::collections::BTreeSet<JobName> = invalid.iter().map(|j| j.name.clone()).collect();
        self.by_name.retain(|name, _| keep.contains(name));
        for job in invalid {
            self.mark(job);
        }
    }

    /// Every invalid job, by name.
    pub fn list(&self) -> Vec<InvalidJob> {
        self.by_name.iter().map(|(name, reason)| InvalidJob { name: name.clone(), reason: reason.clone() }).collect()
    }
}

impl WatchActor {
    /// A watcher of `jobs` feeding `targets`.
    pub fn new(jobs: Arc<dyn JobStore>, targets: WatchTargets) -> Self {
        Self {
            jobs,
            targets,
            last_revision: Revision(0),
            epoch: 0,
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
            failing: false,
            invalid: InvalidJobs::default(),
            _guard: super::essential::PanicGuard::new("watch"),
        }
    }

    fn resync(&mut self, ctx: &mut Context<Self>) {
        self.epoch += 1;
        let epoch = self.epoch;
        let jobs = self.jobs.clone();
        ctx.spawn(async move { jobs.snapshot_checked().await }.into_actor(self).map(move |res, act, ctx| {
            if epoch != act.epoch {
                return;
            }
            match res {
                Ok(snapshot) => {
                    let (jobs, revision) = (snapshot.jobs, snapshot.revision);
                    log::info!(
                        "Job store snapshot loaded. jobs={} invalid={} revision={revision}",
                        jobs.len(),
                        snapshot.invalid.len()
                    );
                    // Invalid documents are left out of the job set: the scheduler drops them.
                    act.invalid.replace_all(snapshot.invalid, jobs.iter().map(|j| j.name.clone()));
                    act.recovered();
                    act.last_revision = revision;
                    act.targets.resynced.do_send(Resynced { jobs, revision });
                    act.subscribe(ctx, Revision(revision.0 + 1));
                }
                Err(e) => act.retry_later(ctx, e, true),
            }
        }));
    }

    fn subscribe(&mut self, ctx: &mut Context<Self>, from: Revision) {
        self.epoch += 1;
        let epoch = self.epoch;
        let jobs = self.jobs.clone();
        ctx.spawn(async move { jobs.watch(from).await }.into_actor(self).map(move |res, act, ctx| {
            if epoch != act.epoch {
                return;
            }
            match res {
                Ok(stream) => {
                    act.recovered();
                    ctx.add_stream(stream.map(move |item| (epoch, item)));
                }
                Err(BackendError::Compacted { .. }) => {
                    log::warn!(
                        "Job store history compacted past our revision; resyncing. revision={}",
                        act.last_revision
                    );
                    act.resync(ctx);
                }
                Err(e) => act.retry_later(ctx, e, false),
            }
        }));
    }

    fn retry_later(&mut self, ctx: &mut Context<Self>, error: BackendError, resync: bool) {
        if !self.failing {
            log::warn!("Job store unreachable; keeping the current plan and retrying. error={error}");
            self.targets.lost.do_send(WatchLost);
        }
        self.failing = true;
        let delay = self.backoff.next_delay();
        ctx.run_later(delay, move |act, ctx| {
            if resync {
                act.resync(ctx);
            } else {
                let from = Revision(act.last_revision.0 + 1);
                act.subscribe(ctx, from);
            }
        });
    }

    fn recovered(&mut self) {
        if self.failing {
            log::info!("Job store reachable again.");
        }
        self.failing = false;
        self.backoff.reset();
    }

    fn apply(&mut self, event: WatchEvent) {
        // Several changes may share a revision (one etcd txn, a lease expiring): only older
        // revisions were applied already (a resumed stream starts after the last one seen).
        if event.revision < self.last_revision {
            return;
        }
        self.last_revision = event.revision;
        let revision = event.revision;
        // do_send: the scheduler's mailbox is unbounded by design; an update is never dropped.
        match event.change {
            Change::Put(job) => {
                self.invalid.clear(&job.name, true);
                self.targets.upserted.do_send(JobUpserted { job, revision })
            }
            Change::Delete(name) => {
                self.invalid.clear(&name, false);
                self.targets.removed.do_send(JobRemoved { name, revision })
            }
            // Issue 9, item 8: the previous definition stops too.
            Change::Invalid(invalid) => {
                let name = invalid.name.clone();
                self.invalid.mark(invalid);
                self.targets.removed.do_send(JobRemoved { name, revision })
            }
            Change::Signal(Signal::Kill { job, run }) => self.targets.kill.do_send(KillRequested { job, run }),
            Change::Signal(Signal::RunNow { job, request, env, retry }) => {
                self.targets.run.do_send(RunRequested { job, request, env, retry })
            }
        }
    }
}

use futures::StreamExt as _;

impl Actor for WatchActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.resync(ctx);
        if let Some(ms) = crate::test_hooks::value("stop_watch_after_ms").and_then(|v| v.parse().ok()) {
            ctx.run_later(Duration::from_millis(ms), |_, ctx| ctx.stop());
        }
    }
}

impl Handler<GetInvalidJobs> for WatchActor {
    type Result = MessageResult<GetInvalidJobs>;

    fn handle(&mut self, _: GetInvalidJobs, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.invalid.list())
    }
}

impl StreamHandler<(u64, Result<WatchEvent, BackendError>)> for WatchActor {
    fn handle(&mut self, (epoch, item): (u64, Result<WatchEvent, BackendError>), ctx: &mut Self::Context) {
        if epoch != self.epoch {
            return;
        }
        match item {
            Ok(event) => self.apply(event),
            Err(BackendError::Compacted { .. }) => {
                log::warn!("Job watch fell behind the store's history; resyncing. revision={}", self.last_revision);
                self.resync(ctx);
            }
            Err(e) => {
                log::warn!(
                    "Job watch broke; resuming from the last revision. revision={} error={e}",
                    self.last_revision
                );
                self.epoch += 1;
                let from = Revision(self.last_revision.0 + 1);
                ctx.run_later(BACKOFF_MIN, move |act, ctx| act.subscribe(ctx, from));
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // A stream ending on its own (store closed it): resume unless a newer one replaced it.
        // The default would stop the actor.
        let from = Revision(self.last_revision.0 + 1);
        let epoch = self.epoch;
        ctx.run_later(BACKOFF_MIN, move |act, ctx| {
            if act.epoch == epoch {
                act.subscribe(ctx, from);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(name: &str, reason: &str) -> InvalidJob {
        InvalidJob { name: JobName::parse(name).expect("name"), reason: reason.into() }
    }

    #[test]
    fn an_invalid_job_is_reported_once_per_reason_until_fixed() {
        let mut set = InvalidJobs::default();
        assert!(set.mark(invalid("a", "cron_expr: bad")));
        assert!(!set.mark(invalid("a", "cron_expr: bad")), "same reason: not logged again");
        assert!(set.mark(invalid("a", "timeout_secs: too big")), "new reason: logged");
        set.replace_all(vec![invalid("a", "timeout_secs: too big"), invalid("b", "x")], std::iter::empty());
        assert_eq!(set.list().len(), 2);
        assert!(set.clear(&JobName::parse("a").expect("name"), true));
        assert!(!set.clear(&JobName::parse("a").expect("name"), true));
        set.replace_all(Vec::new(), std::iter::once(JobName::parse("b").expect("name")));
        assert!(set.list().is_empty());
    }
}
