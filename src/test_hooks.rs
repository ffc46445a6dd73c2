//! Fault-injection hooks for the integration tests: named points in the engine where a test can
//! make this process panic or abort, to prove what a crash at that point leaves behind.
//!
//! Owns: reading `DISTCRON_TEST_HOOKS` once (a comma-separated list of `name` or `name=value`)
//! and answering [`enabled`] / [`value`]. Leaves to others: what each hook does (the code at the
//! hook point). Hooks are off unless that variable is set; a process started with it logs a
//! warning at start, so a hook can never fire unnoticed in production.
//!
//! Hook names in use (each documented where it fires):
//! - `panic_scheduler_after_ms=N`: the SchedulerActor panics N ms after it starts (proves the
//!   essential-actor guard: the process exits with code 70; `actors::essential`).
//! - `stop_watch_after_ms=N`: the WatchActor stops N ms after it starts, without a panic (proves
//!   readiness answers 503 when an essential actor is gone).
//! - `abort_after_claim=N` ([`abort_after_claim`]): SIGKILL this process right after its N-th
//!   won tick claim that wrote a running mark, before the run is spawned.
//! - `block_after_claim_ms=MS` ([`block_after_claim`]): block the scheduling (actix System)
//!   thread for MS ms once, right after the first won tick claim, as a saturated thread would.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The environment variable holding the hooks.
pub const ENV: &str = "DISTCRON_TEST_HOOKS";

fn hooks() -> &'static HashMap<String, String> {
    static HOOKS: OnceLock<HashMap<String, String>> = OnceLock::new();
    HOOKS.get_or_init(|| std::env::var(ENV).map(|raw| parse(&raw)).unwrap_or_default())
}

fn parse(raw: &str) -> HashMap<String, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
            None => (item.to_owned(), String::new()),
        })
        .collect()
}

/// Whether hook `name` is set.
pub fn enabled(name: &str) -> bool {
    hooks().contains_key(name)
}

/// The value of hook `name` (`name=value`), if set.
pub fn value(name: &str) -> Option<&'static str> {
    hooks().get(name).map(String::as_str)
}

/// Hook `abort_after_claim`.
pub const ABORT_AFTER_CLAIM: &str = "abort_after_claim";
/// Hook `block_after_claim_ms`.
pub const BLOCK_AFTER_CLAIM_MS: &str = "block_after_claim_ms";

/// Hook point "a tick was claimed and its mark written, the run is not spawned yet" (the
/// scheduler): with `abort_after_claim=N` set, the N-th time (default 1) the process is killed
/// with SIGKILL, leaving a claimed tick whose run never started.
pub fn abort_after_claim() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let Some(raw) = value(ABORT_AFTER_CLAIM) else { return };
    let n: u64 = raw.parse().unwrap_or(1).max(1);
    if SEEN.fetch_add(1, Ordering::SeqCst) + 1 >= n {
        log::error!("Test hook: killing this process between a claim and its spawn. hook={ABORT_AFTER_CLAIM} n={n}");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}

/// The same hook point: with `block_after_claim_ms=MS` set, the calling thread (the actix
/// System thread) sleeps MS ms, once per process.
pub fn block_after_claim() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    let Some(ms) = value(BLOCK_AFTER_CLAIM_MS).and_then(|v| v.parse::<u64>().ok()) else { return };
    if !DONE.swap(true, Ordering::SeqCst) {
        log::warn!("Test hook: blocking the scheduling thread. hook={BLOCK_AFTER_CLAIM_MS} ms={ms}");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Logs a warning when any hook is set (called once at start).
pub fn warn_if_set() {
    if !hooks().is_empty() {
        let mut names: Vec<&str> = hooks().keys().map(String::as_str).collect();
        names.sort_unstable();
        log::warn!("Test hooks are set: this process will inject faults. env={ENV} hooks={}", names.join(","));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_names_and_values() {
        let h = parse(" panic_scheduler_after=3, abort_after_claim ,,");
        assert_eq!(h.get("panic_scheduler_after").map(String::as_str), Some("3"));
        assert_eq!(h.get("abort_after_claim").map(String::as_str), Some(""));
        assert_eq!(h.len(), 2);
    }
}
