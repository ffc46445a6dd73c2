//! The etcd I/O thread: a tokio runtime of its own, on its own OS thread, where every etcd
//! request, the session keep-alive, the watches and the gRPC connection itself run.
//!
//! Owns: starting that thread, running futures on it ([`IoRuntime::run`]), moving a stream's
//! polling onto it ([`IoRuntime::forward`]), and stopping it when the last handle goes.
//! Leaves to others: what the futures do (the adapters in this directory).
//!
//! Why (issue 10): the actors share the actix System thread with spawning processes and log
//! work. A keep-alive that waits behind a saturated scheduling thread lets the session lease
//! expire, and etcd then deletes the worker's running marks as if it had died: its successful
//! runs would be recorded `lost`. On this thread a worker that is merely busy keeps its session;
//! the ports stay `async` for the actors, which await the answer from wherever they run.

use std::future::Future;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::backend::BackendError;

/// Items a forwarded stream may run ahead of its consumer.
const FORWARD_BUFFER: usize = 256;
/// Name of the OS thread (visible in `top -H`, `/proc/<pid>/task/*/comm`).
const THREAD_NAME: &str = "distcron-etcd";

/// A handle on the etcd I/O thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct IoRuntime {
    handle: Handle,
    _stop: Arc<Stop>,
}

/// Dropping the last one lets the I/O thread's `block_on` return and the runtime shut down
/// on its own thread (never inside an async context, where dropping a runtime panics).
struct Stop {
    _tx: oneshot::Sender<()>,
}

impl IoRuntime {
    /// Starts the I/O thread.
    ///
    /// # Errors
    /// `Unavailable` when the thread or its runtime cannot be created.
    pub(crate) fn start() -> Result<Self, BackendError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| BackendError::Unavailable {
            backend: super::BACKEND,
            message: format!("cannot start the etcd I/O thread: {what}: {e}"),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(THREAD_NAME)
            .build()
            .map_err(|e| failed("runtime", &e))?;
        let handle = runtime.handle().clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                // Spawned tasks run while this blocks; it returns when every handle is gone.
                let _ = runtime.block_on(stop_rx);
                runtime.shutdown_background();
            })
            .map_err(|e| failed("thread", &e))?;
        Ok(Self { handle, _stop: Arc::new(Stop { _tx: stop_tx }) })
    }

    /// Spawns `fut` on the I/O thread (detached; abort through the returned handle).
    pub(crate) fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(fut)
    }

    /// Runs `fut` on the I/O thread and awaits its output from the caller's thread.
    ///
    /// # Errors
    /// `Unavailable` when the I/O thread dropped the task (it is shutting down).
    pub(crate) async fn run<T>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T, BackendError>
    where
        T: Send + 'static,
    {
        self.handle.spawn(fut).await.map_err(|e| BackendError::Unavailable {
            backend: super::BACKEND,
            message: format!("the etcd I/O thread dropped a request: {e}"),
        })
    }

    /// A stream polled on the I/O thread: its items are handed over through a bounded channel,
    /// and the pump stops when the returned stream is dropped.
    pub(crate) fn forward<T: Send + 'static>(&self, mut stream: BoxStream<'static, T>) -> BoxStream<'static, T> {
        let (tx, rx) = mpsc::channel(FORWARD_BUFFER);
        self.handle.spawn(async move {
            loop {
                tokio::select! {
                    item = stream.next() => match item {
                        Some(item) => {
                            if tx.send(item).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                    () = tx.closed() => return,
                }
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn futures_run_on_the_io_thread_and_streams_are_forwarded() {
        let io = IoRuntime::start().expect("io thread");
        let name = io.run(async { std::thread::current().name().map(str::to_owned) }).await.expect("ran");
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        let polled_on =
            futures::stream::iter(0..3).map(|i| (i, std::thread::current().name().map(str::to_owned))).boxed();
        let got: Vec<_> = io.forward(polled_on).collect().await;
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|(_, thread)| thread.as_deref() == Some(THREAD_NAME)), "{got:?}");
    }

    #[test]
    fn the_io_thread_ends_with_its_last_handle() {
        let io = IoRuntime::start().expect("io thread");
        let probe = io.clone();
        drop(io);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        assert!(rt.block_on(probe.run(async { 1 })).is_ok(), "a live handle keeps the thread");
        drop(probe);
    }
}
