//! The engine: WatchActor, SchedulerActor, the supervised ExecutorActor pool and LogBatchActor.
//!
//! ```text
//!  store watch ──> WatchActor ──Resynced/JobUpserted/JobRemoved/KillRequested/RunRequested──> SchedulerActor
//!                                                                    │ due (job, tick): claim, policy
//!                                                                    ▼ StartRun / KillRun
//!      LogBatchActor <──RecordRun── ExecutorPool ──Execute──> ExecutorActor (supervised) ──RunFinished──> SchedulerActor
//!           │ batch by size/time, spool while the store fails
//!           ▼
//!       log store
//! ```
//! [`start`] wires them all, in one place, passing addresses explicitly.

pub mod log_batch;
pub mod messages;
pub(crate) mod plan;
pub mod process;
pub mod scheduler;
pub(crate) mod spool;
pub mod watch;
