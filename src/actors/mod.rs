//! The engine: WatchActor, SchedulerActor, the supervised ExecutorActor pool and LogBatchActor.

pub mod messages;
pub mod process;
