//! etcd membership: each worker is `workers/<id>` holding its [`WorkerInfo`] JSON, on the
//! session lease (see `session`), so a dead worker disappears when its lease expires.
//!
//! The seed's workers register as `workers/<ip>` with an empty value; they are listed too (id and
//! address = the ip, capacity 0), so the seed-compatible `/worker/list` shows every worker.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::DateTime;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::session::Session;
use super::{section, Ctx};
use crate::backend::members::{Membership, SessionEvent};
use crate::backend::BackendError;
use crate::domain::{WorkerId, WorkerInfo};

/// Live workers in etcd.
pub struct EtcdMembership {
    ctx: Ctx,
    session: Arc<Session>,
}

impl EtcdMembership {
    pub(crate) fn new(ctx: Ctx, session: Arc<Session>) -> Self {
        Self { ctx, session }
    }
}

/// A worker as listed: our JSON, or a seed worker's bare key.
fn parse_worker(id: &str, value: &[u8]) -> Option<WorkerInfo> {
    if value.iter().all(u8::is_ascii_whitespace) {
        return Some(WorkerInfo {
            id: WorkerId(id.to_owned()),
            hostname: String::new(),
            address: id.to_owned(),
            version: String::new(),
            started_at: DateTime::UNIX_EPOCH,
            running: 0,
            // Not a distcron worker: it takes no part in claims and ranking.
            capacity: 0,
            last_heartbeat: DateTime::UNIX_EPOCH,
            labels: crate::domain::Labels::new(),
            api_addr: None,
        });
    }
    match serde_json::from_slice::<WorkerInfo>(value) {
        Ok(info) => Some(info),
        Err(e) => {
            log::warn!("Skipping a worker key that does not parse. id={id} error={e}");
            None
        }
    }
}

#[async_trait]
impl Membership for EtcdMembership {
    async fn join(&self, info: &WorkerInfo) -> Result<(), BackendError> {
        self.session.join(info).await
    }

    async fn heartbeat(&self, info: &WorkerInfo) -> Result<(), BackendError> {
        // The lease's keep-alive proves liveness; the heartbeat refreshes the published info.
        self.session.join(info).await
    }

    async fn leave(&self, id: &WorkerId) -> Result<(), BackendError> {
        self.session.leave(id).await
    }

    async fn live(&self) -> Result<Vec<WorkerInfo>, BackendError> {
        let dir = self.ctx.keys.dir(section::WORKERS);
        let (kvs, _) = self.ctx.range_all("cannot list the workers", &dir).await?;
        let mut workers: Vec<WorkerInfo> = kvs
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?;
                let id = self.ctx.keys.name_in(section::WORKERS, key)?;
                parse_worker(id, kv.value())
            })
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        workers.dedup_by(|a, b| a.id == b.id);
        Ok(workers)
    }

    fn session_events(&self) -> BoxStream<'static, SessionEvent> {
        let rx = self.session.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((event, rx)),
                    // Only the latest state matters; a lagging receiver reads on.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_worker_key_lists_as_its_address() {
        let w = parse_worker("10.0.0.7", b"").expect("seed worker");
        assert_eq!((w.id.0.as_str(), w.address.as_str(), w.capacity), ("10.0.0.7", "10.0.0.7", 0));
        assert!(parse_worker("x", b"{").is_none());
    }
}
