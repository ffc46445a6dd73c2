//! Rendezvous (highest random weight) ranking of live workers per job (ARCHITECTURE.md "Claims,
//! spread and failover"): every worker computes the same order from the job name and the worker
//! ids alone, so the owner (rank 0) claims at the tick, rank k only after k failover graces,
//! and when a worker joins or leaves only the jobs it owns (or comes to own) move.
//!
//! A job with a `selector` (README "Worker labels") is ranked by [`placement`]: the live workers
//! whose labels match come first, in rendezvous order among themselves (so spread and failover
//! stay within that set); the others follow, in rendezvous order among themselves, and take a
//! tick only when no matching worker claimed it within the failover graces, to record it
//! `skipped` (`no_eligible_worker`) once.
//!
//! Pure functions, no clock and no I/O.

/// The weight of `worker` for `job`: a 64-bit hash of both (FNV-1a, then the splitmix64
/// finalizer so close inputs spread over the whole range). Stable across processes, builds and
/// platforms.
pub fn score(job: &str, worker: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in job.bytes().chain(std::iter::once(0xff)).chain(worker.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The rank of `me` for `job` among `me` and `others` (0 = owner): how many of the others
/// weigh more (ties broken by id, so every worker agrees). `others` may contain `me`.
pub fn rank<'a>(job: &str, me: &str, others: impl IntoIterator<Item = &'a str>) -> usize {
    let mine = (score(job, me), me);
    others.into_iter().filter(|w| *w != me).filter(|w| (score(job, w), *w) > mine).count()
}

/// Where a worker stands for one job when eligibility counts (a job with a selector).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Claim order: eligible workers take 0..n (rendezvous among them), the others n.. after.
    pub rank: usize,
    /// Whether this worker's labels match the job's selector (it may run the tick).
    pub eligible: bool,
    /// How many live workers match, this one included when it does.
    pub eligible_live: usize,
}

/// The [`Placement`] of `me` (eligible or not, per `me_eligible`) for `job` among the live
/// workers `live`, each with whether it matches the selector. `live` may contain `me`.
pub fn placement<'a>(
    job: &str,
    me: &str,
    me_eligible: bool,
    live: impl IntoIterator<Item = (&'a str, bool)>,
) -> Placement {
    let others: Vec<(&str, bool)> = live.into_iter().filter(|(w, _)| *w != me).collect();
    let eligible_others = others.iter().filter(|(_, e)| *e).count();
    let among = |eligible: bool| others.iter().filter(move |(_, e)| *e == eligible).map(|(w, _)| *w);
    if me_eligible {
        Placement { rank: rank(job, me, among(true)), eligible: true, eligible_live: eligible_others + 1 }
    } else {
        Placement {
            rank: eligible_others + rank(job, me, among(false)),
            eligible: false,
            eligible_live: eligible_others,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner<'a>(job: &str, workers: &[&'a str]) -> &'a str {
        workers.iter().copied().find(|w| rank(job, w, workers.iter().copied()) == 0).expect("one owner")
    }

    #[test]
    fn a_single_worker_owns_every_job() {
        for job in ["a", "b", "nightly-backup"] {
            assert_eq!(rank(job, "only", ["only"]), 0);
            assert_eq!(rank(job, "only", []), 0);
        }
    }

    #[test]
    fn ranks_are_a_permutation_every_worker_agrees_on() {
        let workers = ["w1", "w2", "w3", "w4"];
        for i in 0..100 {
            let job = format!("job-{i}");
            let mut ranks: Vec<usize> = workers.iter().map(|w| rank(&job, w, workers.iter().copied())).collect();
            ranks.sort_unstable();
            assert_eq!(ranks, vec![0, 1, 2, 3], "job {job}");
        }
    }

    #[test]
    fn fifty_jobs_spread_over_three_workers() {
        let workers = ["node-a-1b2c3d4e", "node-b-5f6a7b8c", "node-c-9d0e1f2a"];
        let mut owned = [0usize; 3];
        for i in 0..50 {
            let o = owner(&format!("job-{i:03}"), &workers);
            owned[workers.iter().position(|w| *w == o).expect("known")] += 1;
        }
        assert!(owned.iter().all(|&n| (5..=30).contains(&n)), "{owned:?}");
        let mut many = [0usize; 3];
        for i in 0..3000 {
            let o = owner(&format!("j{i}"), &workers);
            many[workers.iter().position(|w| *w == o).expect("known")] += 1;
        }
        assert!(many.iter().all(|&n| (850..=1150).contains(&n)), "even within 15 %: {many:?}");
    }

    #[test]
    fn a_leaving_worker_moves_only_its_own_jobs() {
        let all = ["w1", "w2", "w3"];
        let rest = ["w1", "w3"];
        for i in 0..200 {
            let job = format!("job-{i}");
            let before = owner(&job, &all);
            if before != "w2" {
                assert_eq!(owner(&job, &rest), before, "job {job} moved although its owner stayed");
            }
        }
    }

    /// Every worker's placement for `job`; `zone_b` marks the eligible ones.
    fn placements(job: &str, workers: &[(&'static str, bool)]) -> Vec<(&'static str, Placement)> {
        workers.iter().map(|(w, e)| (*w, placement(job, w, *e, workers.iter().copied()))).collect()
    }

    #[test]
    fn eligible_workers_rank_first_and_spread_among_themselves() {
        let workers = [("a1", false), ("a2", false), ("b1", true), ("b2", true)];
        let mut owned = [0usize; 2];
        for i in 0..400 {
            let job = format!("job-{i}");
            let p = placements(&job, &workers);
            let mut ranks: Vec<usize> = p.iter().map(|(_, p)| p.rank).collect();
            ranks.sort_unstable();
            assert_eq!(ranks, vec![0, 1, 2, 3], "job {job}: a permutation every worker agrees on");
            for (w, p) in &p {
                assert_eq!(p.eligible, w.starts_with('b'));
                assert_eq!(p.eligible_live, 2);
                assert_eq!(p.rank < 2, p.eligible, "job {job}: {w} eligible iff it ranks before the others");
            }
            // The eligible order is the plain rendezvous order among the eligible workers.
            for (w, p) in p.iter().filter(|(_, p)| p.eligible) {
                assert_eq!(p.rank, rank(&job, w, ["b1", "b2"]));
            }
            let owner = p.iter().find(|(_, p)| p.rank == 0).map(|(w, _)| *w).expect("owner");
            owned[usize::from(owner == "b2")] += 1;
        }
        assert!(owned.iter().all(|&n| (150..=250).contains(&n)), "spread within the set: {owned:?}");
    }

    #[test]
    fn failover_stays_within_the_eligible_set() {
        // b1 died: b2 owns every job; the zone-a workers still come after it.
        let workers = [("a1", false), ("a2", false), ("b2", true)];
        for i in 0..100 {
            let job = format!("job-{i}");
            for (w, p) in placements(&job, &workers) {
                assert_eq!(p.rank == 0, w == "b2", "job {job}");
                assert_eq!(p.eligible_live, 1);
            }
        }
    }

    #[test]
    fn without_eligible_workers_the_others_rank_among_themselves() {
        let workers = [("a1", false), ("a2", false), ("a3", false)];
        for i in 0..100 {
            let job = format!("job-{i}");
            for (w, p) in placements(&job, &workers) {
                assert_eq!(p.rank, rank(&job, w, ["a1", "a2", "a3"]));
                assert!(!p.eligible);
                assert_eq!(p.eligible_live, 0);
            }
        }
        // A worker not yet in the live list still places itself.
        let p = placement("j", "me", true, [("a1", false)]);
        assert_eq!(p, Placement { rank: 0, eligible: true, eligible_live: 1 });
        let p = placement("j", "me", false, [("b1", true)]);
        assert_eq!(p, Placement { rank: 1, eligible: false, eligible_live: 1 });
    }
}
