//! Embedded membership: live workers in process memory.
//!
//! A worker is live while its last join or heartbeat, as seen by this process's monotonic
//! clock (not the worker's own `last_heartbeat`, which another clock wrote), is younger than
//! the TTL. Expired entries are dropped when `live()` looks, so the map stays bounded.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::backend::members::Membership;
use crate::backend::BackendError;
use crate::domain::{WorkerId, WorkerInfo};

/// How long a worker stays live without a heartbeat: three missed 5 s heartbeats.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(15);

/// In-process membership for a single node.
#[derive(Debug)]
pub struct EmbeddedMembership {
    ttl: Duration,
    workers: Mutex<BTreeMap<WorkerId, (WorkerInfo, Instant)>>,
}

impl Default for EmbeddedMembership {
    fn default() -> Self {
        Self::new(DEFAULT_TTL)
    }
}

impl EmbeddedMembership {
    /// Membership where a worker is live for `ttl` after its last join or heartbeat.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, workers: Mutex::new(BTreeMap::new()) }
    }

    fn upsert(&self, info: &WorkerInfo) {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        workers.insert(info.id.clone(), (info.clone(), Instant::now()));
    }
}

#[async_trait]
impl Membership for EmbeddedMembership {
    async fn join(&self, info: &WorkerInfo) -> Result<(), BackendError> {
        self.upsert(info);
        Ok(())
    }

    async fn heartbeat(&self, info: &WorkerInfo) -> Result<(), BackendError> {
        // A heartbeat after expiry re-registers, as a fresh etcd lease would.
        self.upsert(info);
        Ok(())
    }

    async fn leave(&self, id: &WorkerId) -> Result<(), BackendError> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
        Ok(())
    }

    async fn live(&self) -> Result<Vec<WorkerInfo>, BackendError> {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let ttl = self.ttl;
        workers.retain(|_, (_, seen)| seen.elapsed() < ttl);
        // BTreeMap iteration is sorted by id.
        Ok(workers.values().map(|(info, _)| info.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::conformance;

    #[tokio::test]
    async fn passes_membership_conformance() {
        conformance::membership_suite(Arc::new(EmbeddedMembership::default())).await;
    }

    #[tokio::test]
    async fn a_worker_without_heartbeat_expires_and_a_heartbeat_revives_it() {
        let members = EmbeddedMembership::new(Duration::from_millis(100));
        let info = conformance::sample_worker(&WorkerId("w1".into()));
        members.join(&info).await.expect("join");
        assert_eq!(members.live().await.expect("live").len(), 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(members.live().await.expect("live").is_empty(), "expired after the TTL");
        members.heartbeat(&info).await.expect("heartbeat");
        assert_eq!(members.live().await.expect("live"), vec![info]);
    }
}
