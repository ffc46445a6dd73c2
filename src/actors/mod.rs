//! The engine: WatchActor, SchedulerActor, the supervised ExecutorActor pool and LogBatchActor.

pub mod executor;
pub mod messages;
pub mod process;
