//! The nemesis suite (issue 14): a real cluster in network namespaces, faults injected on a
//! seeded schedule, a workload whose commands append to a shared history, and a checker.
//!
//! Owns: the shared harness of `tests/it/nemesis.rs` (quick profile) and `benches/nemesis.rs`
//! (long profile). Leaves to others: the product under test, the guards of `support`.

pub mod checker;
pub mod harness;
pub mod netns;
