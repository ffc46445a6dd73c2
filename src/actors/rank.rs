//! Rendezvous (highest random weight) ranking of live workers per job (ARCHITECTURE.md "Claims,
//! spread and failover"): every worker computes the same order from the job name and the worker
//! ids alone, so the owner (rank 0) claims at the tick, rank k only after k failover graces,
//! and when a worker joins or leaves only the jobs it owns (or comes to own) move.
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
}
