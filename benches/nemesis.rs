//! The nemesis suite's long profile (issue 14): `cargo bench --bench nemesis`, as root.
//!
//! The same harness as the quick profile of `tests/it/nemesis.rs` (`tests/it/support/nemesis`),
//! run for `NEMESIS_SECS` (default 1800) with each seed of `NEMESIS_SEEDS` (comma separated,
//! default `1,2,3`); prints each run's checker report and a README table row, and exits
//! non-zero when any run found an anomaly the README does not list as a documented limit.

#[allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::nemesis::harness::{self, Profile};

fn main() -> std::process::ExitCode {
    let secs = std::env::var("NEMESIS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(1800);
    let workers = std::env::var("NEMESIS_WORKERS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let seeds: Vec<u64> = std::env::var("NEMESIS_SEEDS")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut rows = Vec::new();
    let mut failed = false;
    for seed in seeds {
        let outcome = harness::run(&Profile { secs, seed, workers });
        failed |= !outcome.report.undocumented().is_empty();
        rows.push(outcome.row());
        println!("seed {seed}: delay by {}\n{}", outcome.delay_mode, outcome.report.render(10));
    }
    println!("| seed | length | cluster | ticks checked | faults injected | kills + run-nows | anomalies (undocumented + documented) |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for r in rows {
        println!("{r}");
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
