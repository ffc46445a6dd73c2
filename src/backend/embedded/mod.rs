//! Embedded single-node adapters: everything under `data_dir`, nothing external.
//!
//! STUB: being implemented.

mod claims;
mod jobs;
mod logs;
mod members;

pub use claims::EmbeddedClaims;
pub use jobs::EmbeddedJobStore;
pub use logs::SqliteLogStore;
pub use members::EmbeddedMembership;
