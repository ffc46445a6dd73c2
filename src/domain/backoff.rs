//! Exponential backoff with jitter: the delay schedule of every retry loop in distcron.
//!
//! Owns: the delay sequence (initial, doubled — or times `factor` — up to `max`) and its jitter
//! ("equal jitter": each delay is drawn from [d/2, d], so many nodes retrying after one outage
//! do not hit the store in step). Leaves to others: what is retried and when to give up.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A retry delay schedule. `next()` gives the delay before the next attempt; `reset()` after a
/// success starts over.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: u32,
    jitter: bool,
    current: Duration,
}

impl Backoff {
    /// Doubling from `initial` up to `max`, with jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Self { initial, max, factor: 2, jitter: true, current: initial }
    }

    /// The same schedule without jitter (exact delays; for tests and for loops whose callers
    /// already spread out).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The same schedule growing by `factor` (at least 1) instead of doubling.
    pub fn with_factor(mut self, factor: u32) -> Self {
        self.factor = factor.max(1);
        self
    }

    /// The delay before the next attempt; grows the following one.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = base.saturating_mul(self.factor).min(self.max);
        if self.jitter {
            jittered(base)
        } else {
            base
        }
    }

    /// Starts over at the initial delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// Whether no delay has been taken since the start or the last reset.
    pub fn is_reset(&self) -> bool {
        self.current == self.initial
    }
}

/// A delay drawn uniformly from [d, 1.5 d]: jitter that never shortens a promised delay (job
/// retries: "at least 1 s apart" stays true).
pub fn spread_above(d: Duration) -> Duration {
    uniform(d, d / 2)
}

/// A delay drawn uniformly from [d/2, d].
fn jittered(d: Duration) -> Duration {
    let half = d / 2;
    uniform(half, d - half)
}

/// A delay drawn uniformly from [low, low + span].
fn uniform(low: Duration, span: Duration) -> Duration {
    let span = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX);
    if span == 0 {
        return low;
    }
    // A fresh RandomState is randomly keyed: enough randomness for spreading retries.
    let r = RandomState::new().build_hasher().finish();
    low + Duration::from_nanos(r % span.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500)).without_jitter();
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 500, 500]);
        assert!(!b.is_reset());
        b.reset();
        assert!(b.is_reset());
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_half_to_whole() {
        let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_millis(1000));
        for _ in 0..200 {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000), "{d:?}");
        }
    }

    #[test]
    fn initial_above_max_is_capped() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(1)).without_jitter();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }
}
