//! distcron: a distributed cron. Scheduled shell jobs, run exactly once per tick, every run
//! logged, searchable and killable.
//!
//! Map: [`domain`] holds plain data and the cron dialect; [`backend`] the four ports and their
//! adapters; [`actors`] the engine (watch, scheduler, executors, log batching); [`http`] the
//! JSON API, the seed's legacy routes and the admin page; [`run`] wires them per role.

pub mod actors;
pub mod backend;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;

pub use error::StartupError;

/// Runs distcron with `config` until SIGINT/SIGTERM.
///
/// # Errors
/// A [`StartupError`] when the role, the backends or the listener cannot be set up.
pub fn run(config: config::Config) -> Result<(), StartupError> {
    let _ = config;
    Err(StartupError::Role("not wired yet".into()))
}
