//! The membership port: which workers are alive and what they say about themselves.

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::BackendError;
use crate::domain::{WorkerId, WorkerInfo};

/// A change of this process's membership session (cluster adapters; the embedded one has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// The session expired or could not be kept alive: this worker's registration and its
    /// running marks are gone cluster-wide (others record those runs `lost`), and claims are
    /// refused until a new session is in place.
    Lost,
    /// A new session is in place and this process's workers are registered again.
    Renewed,
}

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

    /// This process's session changes, as they happen. The embedded adapter has no session
    /// to lose: its stream never yields.
    fn session_events(&self) -> BoxStream<'static, SessionEvent> {
        futures::stream::pending().boxed()
    }
}
