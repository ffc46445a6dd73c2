//! The nemesis suite's quick profile (issue 14): a 3-member etcd, FerretDB, a master and four
//! workers, each in its own network namespace, under about 110 s of seeded faults (every kind once) (partitions,
//! SIGSTOP past the session TTL, clock jumps, delay and loss, SIGKILLs of workers and etcd
//! members, kills and run-nows through the master), then the checker over the history and the
//! ledger. Needs root (CAP_NET_ADMIN); `NEMESIS_SEED` replays a seed, `NEMESIS_KEEP=1` keeps the
//! files of a failed run. The long profile is `cargo bench --bench nemesis`.

use crate::support::nemesis::harness::{self, Profile};

/// The quick profile's seed when `NEMESIS_SEED` is unset.
const QUICK_SEED: u64 = 14;

#[test]
fn nemesis_quick_profile_finds_no_undocumented_anomaly() {
    // `NEMESIS_SECS` lengthens the run (the long profile in a debug build; the bench runs it in
    // release).
    let secs = std::env::var("NEMESIS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    let profile = Profile { secs, seed: harness::seed_from_env(QUICK_SEED), workers: 4 };
    let outcome = harness::run(&profile);
    eprintln!("nemesis: delay by {}; table row:\n{}", outcome.delay_mode, outcome.row());
    assert!(outcome.report.ticks_checked > 500, "too few ticks checked: {}", outcome.report.render(5));
    assert!(outcome.faults.len() >= 8, "too few faults injected: {:?}", outcome.faults);
    let bad = outcome.report.undocumented();
    assert!(
        bad.is_empty(),
        "seed {}: {} anomalies outside the README's documented limits (replay with NEMESIS_SEED={}):\n{}",
        profile.seed,
        bad.len(),
        profile.seed,
        outcome.report.render(10)
    );
}
