//! The worker session: one etcd lease, granted on first use, kept alive in the background, and
//! granted again (with every registration published again) after it is lost.
//!
//! Worker keys (`workers/<id>`) and running marks (`running/<job>/<run>`) are put on this lease,
//! so when the process dies or is cut off for longer than the TTL, etcd deletes them all in one
//! revision: that is how the other nodes tell a lost worker from a run that ended (see
//! `claims::lost_marks`). The session counts as lost once no keep-alive succeeded for a whole
//! TTL, or when etcd answers that the lease is gone; from then on claims are refused until a new
//! lease is granted, and subscribers get [`SessionEvent::Lost`] then [`SessionEvent::Renewed`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use etcd_client::PutOptions;
use tokio::sync::broadcast;

use super::{section, Ctx};
use crate::backend::members::SessionEvent;
use crate::backend::BackendError;
use crate::domain::{Backoff, WorkerId, WorkerInfo};

/// Shortest pause between attempts to get a new lease after one was lost.
const RENEW_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest such pause.
const RENEW_BACKOFF_MAX: Duration = Duration::from_secs(2);

pub(crate) struct Session {
    ctx: Ctx,
    ttl: Duration,
    state: Mutex<State>,
    /// Serializes lease grants, so concurrent first users share one lease.
    grant: tokio::sync::Mutex<()>,
    events: broadcast::Sender<SessionEvent>,
}

#[derive(Default)]
struct State {
    lease: Option<i64>,
    /// A lease was lost and no new one is in place yet.
    lost: bool,
    /// Workers registered through this session, re-published on a new lease.
    joined: BTreeMap<WorkerId, WorkerInfo>,
    keeper: Option<tokio::task::AbortHandle>,
    renewing: bool,
}

impl Session {
    pub(crate) fn new(ctx: Ctx, ttl: Duration) -> Self {
        let (events, _) = broadcast::channel(16);
        Self {
            ctx,
            ttl: ttl.max(Duration::from_secs(1)),
            state: Mutex::new(State::default()),
            grant: tokio::sync::Mutex::new(()),
            events,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True while a lost session has not been replaced.
    pub(crate) fn is_lost(&self) -> bool {
        self.state().lost
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// The current lease, granting one (and starting its keep-alive) when there is none.
    ///
    /// # Errors
    /// `Unavailable` when etcd does not grant a lease.
    pub(crate) async fn lease(self: &Arc<Self>) -> Result<i64, BackendError> {
        if let Some(id) = self.state().lease {
            return Ok(id);
        }
        let _grant = self.grant.lock().await;
        if let Some(id) = self.state().lease {
            return Ok(id);
        }
        let ttl_secs = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let mut client = self.ctx.client.clone();
        let granted = self
            .ctx
            .call("cannot grant the session lease", async move { client.lease_grant(ttl_secs, None).await })
            .await?;
        let id = granted.id();
        // On the etcd I/O thread: a busy actix thread never delays a keep-alive.
        let keeper = self.ctx.io.spawn(keep_alive(Arc::downgrade(self), self.ctx.clone(), id, self.ttl)).abort_handle();
        let (renewed, joined) = {
            let mut state = self.state();
            state.lease = Some(id);
            if let Some(old) = state.keeper.replace(keeper) {
                old.abort();
            }
            let renewed = std::mem::replace(&mut state.lost, false);
            (renewed, state.joined.values().cloned().collect::<Vec<_>>())
        };
        log::debug!("etcd session lease granted. lease={id:x} ttl_secs={ttl_secs}");
        if renewed {
            for info in &joined {
                if let Err(e) = self.put_worker(id, info).await {
                    log::warn!("Cannot publish this worker on the new etcd session; the next heartbeat retries. worker={} error={e}", info.id);
                }
            }
            log::info!("etcd session renewed; claiming resumes. lease={id:x} workers={}", joined.len());
            let _ = self.events.send(SessionEvent::Renewed);
        }
        Ok(id)
    }

    async fn put_worker(self: &Arc<Self>, lease: i64, info: &WorkerInfo) -> Result<(), BackendError> {
        let key = self.ctx.keys.key(section::WORKERS, &info.id.0);
        let json = serde_json::to_string(info).map_err(|e| super::corrupt(format!("worker info: {e}")))?;
        let mut client = self.ctx.client.clone();
        let res = self
            .ctx
            .call("cannot publish the worker", async move {
                client.put(key, json, Some(PutOptions::new().with_lease(lease))).await
            })
            .await;
        if let Err(e) = &res {
            self.check_lease_gone(lease, e);
        }
        res.map(|_| ())
    }

    /// A put on a lease etcd no longer has means the session is lost, whatever the keep-alive says.
    pub(crate) fn check_lease_gone(self: &Arc<Self>, lease: i64, error: &BackendError) {
        if error.to_string().contains("lease not found") {
            self.lost(lease, "etcd no longer knows the lease");
        }
    }

    /// Registers (or refreshes) a worker on the session. The first time, a key of the same
    /// worker left on another lease (a previous incarnation killed less than a TTL ago) has its
    /// lease revoked: its running marks go with its worker key in one revision, so the runs it
    /// claimed are recorded `lost` now, rather than vanish unnoticed when that lease expires
    /// under a worker key this session has taken over.
    pub(crate) async fn join(self: &Arc<Self>, info: &WorkerInfo) -> Result<(), BackendError> {
        let first = self.state().joined.insert(info.id.clone(), info.clone()).is_none();
        let lease = self.lease().await?;
        if first {
            self.revoke_previous(lease, info).await;
        }
        self.put_worker(lease, info).await
    }

    async fn revoke_previous(self: &Arc<Self>, lease: i64, info: &WorkerInfo) {
        let key = self.ctx.keys.key(section::WORKERS, &info.id.0);
        let mut client = self.ctx.client.clone();
        let old = match self.ctx.call("cannot read the worker key", async move { client.get(key, None).await }).await {
            Ok(resp) => resp.kvs().first().map(|kv| kv.lease()).filter(|old| *old != 0 && *old != lease),
            Err(e) => {
                log::debug!("Cannot look for a previous session of this worker. worker={} error={e}", info.id);
                None
            }
        };
        let Some(old) = old else { return };
        let mut client = self.ctx.client.clone();
        match self.ctx.call("cannot revoke the previous session", async move { client.lease_revoke(old).await }).await {
            Ok(_) => log::warn!(
                "A previous process of this worker left its etcd session behind; revoked it, its runs are recorded lost. worker={} lease={old:x}",
                info.id
            ),
            Err(e) => log::debug!("Cannot revoke a previous session of this worker. worker={} error={e}", info.id),
        }
    }

    /// Deregisters a worker; the last one to leave revokes the lease, which also removes every
    /// running mark still on it.
    pub(crate) async fn leave(self: &Arc<Self>, id: &WorkerId) -> Result<(), BackendError> {
        let (last, lease) = {
            let mut state = self.state();
            let was_joined = state.joined.remove(id).is_some();
            (was_joined && state.joined.is_empty(), state.lease)
        };
        let mut client = self.ctx.client.clone();
        match (last, lease) {
            (true, Some(lease)) => {
                {
                    let mut state = self.state();
                    if state.lease == Some(lease) {
                        state.lease = None;
                        state.lost = false;
                        if let Some(keeper) = state.keeper.take() {
                            keeper.abort();
                        }
                    }
                }
                self.ctx
                    .call("cannot revoke the session lease", async move { client.lease_revoke(lease).await })
                    .await
                    .map(|_| ())
            }
            _ => {
                let key = self.ctx.keys.key(section::WORKERS, &id.0);
                self.ctx
                    .call("cannot remove the worker", async move { client.delete(key, None).await })
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Marks lease `id` lost (once), tells subscribers, and starts getting a new one when
    /// workers are registered.
    fn lost(self: &Arc<Self>, id: i64, why: &str) {
        let renew = {
            let mut state = self.state();
            if state.lease != Some(id) {
                return;
            }
            state.lease = None;
            state.lost = true;
            if let Some(keeper) = state.keeper.take() {
                keeper.abort();
            }
            let renew = !state.joined.is_empty() && !state.renewing;
            if renew {
                state.renewing = true;
            }
            renew
        };
        log::warn!("etcd session lost; this worker claims nothing until it has a new one. lease={id:x} reason={why}");
        let _ = self.events.send(SessionEvent::Lost);
        if renew {
            self.spawn_renewal();
        }
    }

    fn spawn_renewal(self: &Arc<Self>) {
        // The renewal holds only a weak reference: a dropped backend stops renewing.
        let weak = Arc::downgrade(self);
        self.ctx.io.spawn(async move {
            let mut backoff = Backoff::new(RENEW_BACKOFF_MIN, RENEW_BACKOFF_MAX);
            loop {
                tokio::time::sleep(backoff.next_delay()).await;
                let Some(session) = weak.upgrade() else { return };
                match session.lease().await {
                    Ok(_) => {
                        session.state().renewing = false;
                        return;
                    }
                    Err(e) => log::debug!("Cannot get a new etcd session yet; retrying. error={e}"),
                }
            }
        });
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(keeper) = self.state().keeper.take() {
            keeper.abort();
        }
    }
}

/// Keeps lease `id` alive every third of the TTL; declares it lost when etcd says it expired or
/// when no keep-alive succeeded for a whole TTL (etcd has expired it by then).
async fn keep_alive(session: Weak<Session>, ctx: Ctx, id: i64, ttl: Duration) {
    let interval = (ttl / 3).max(Duration::from_millis(300));
    let mut last_ok = Instant::now();
    loop {
        let remaining = |last_ok: Instant| ttl.saturating_sub(last_ok.elapsed());
        let mut client = ctx.client.clone();
        let wait = remaining(last_ok).min(ctx.timeout).max(Duration::from_millis(100));
        if let Ok(Ok((mut keeper, mut stream))) = tokio::time::timeout(wait, client.lease_keep_alive(id)).await {
            loop {
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                let wait = remaining(last_ok).min(ctx.timeout).max(Duration::from_millis(100));
                match tokio::time::timeout(wait, stream.message()).await {
                    Ok(Ok(Some(resp))) if resp.ttl() > 0 => last_ok = Instant::now(),
                    Ok(Ok(Some(_))) => {
                        if let Some(s) = session.upgrade() {
                            s.lost(id, "etcd says the lease expired");
                        }
                        return;
                    }
                    _ => break,
                }
                tokio::time::sleep(interval).await;
                if session.strong_count() == 0 {
                    return;
                }
            }
        }
        if remaining(last_ok).is_zero() {
            if let Some(s) = session.upgrade() {
                s.lost(id, "no keep-alive succeeded for a whole TTL");
            }
            return;
        }
        if session.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
