//! The membership port: which workers are alive and what they say about themselves.

use async_trait::async_trait;

use super::BackendError;
use crate::domain::{WorkerId, WorkerInfo};

/// Live workers.
#[async_trait]
pub trait Membership: Send + Sync + 'static {
    /// Registers this worker (or refreshes its registration).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn join(&self, info: &WorkerInfo) -> Result<(), BackendError>;

    /// Refreshes this worker's info and liveness.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn heartbeat(&self, info: &WorkerInfo) -> Result<(), BackendError>;

    /// Deregisters a worker (clean shutdown).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn leave(&self, id: &WorkerId) -> Result<(), BackendError>;

    /// Every live worker, sorted by id.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn live(&self) -> Result<Vec<WorkerInfo>, BackendError>;
}
