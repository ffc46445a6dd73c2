//! WatchActor: keeps the scheduler's view of the job store current.
//!
//! Loads the full job set with its revision (`Resynced`), then watches from revision + 1 and
//! forwards each change as a typed message. A broken stream resumes from the last revision
//! seen; a compacted history triggers a full resync, so no update is ever missed or applied
//! twice (ARCHITECTURE.md "Actors"). Store outages are logged once and retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::messages::{JobRemoved, JobUpserted, KillRequested, Resynced, RunRequested, WatchLost};
use crate::backend::{BackendError, Change, JobStore, Signal, WatchEvent};
use crate::domain::{Backoff, Revision};

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
    /// Exits the process if this actor panics.
    _guard: super::essential::PanicGuard,
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
            _guard: super::essential::PanicGuard::new("watch"),
        }
    }

    fn resync(&mut self, ctx: &mut Context<Self>) {
        self.epoch += 1;
        let epoch = self.epoch;
        let jobs = self.jobs.clone();
        ctx.spawn(async move { jobs.snapshot().await }.into_actor(self).map(move |res, act, ctx| {
            if epoch != act.epoch {
                return;
            }
            match res {
                Ok((jobs, revision)) => {
                    log::info!("Job store snapshot loaded. jobs={} revision={revision}", jobs.len());
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
            Change::Put(job) => self.targets.upserted.do_send(JobUpserted { job, revision }),
            Change::Delete(name) => self.targets.removed.do_send(JobRemoved { name, revision }),
            Change::Signal(Signal::Kill { job, run }) => self.targets.kill.do_send(KillRequested { job, run }),
            Change::Signal(Signal::RunNow { job, request }) => self.targets.run.do_send(RunRequested { job, request }),
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
