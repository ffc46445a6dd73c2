//! STUB
use std::path::Path;
use crate::backend::BackendError;
/// SQLite job store.
#[derive(Debug)]
pub struct EmbeddedJobStore;
impl EmbeddedJobStore {
    /// Opens the store.
    pub fn open(_path: &Path) -> Result<Self, BackendError> { Ok(Self) }
}
