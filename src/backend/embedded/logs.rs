//! STUB
use std::path::Path;
use crate::backend::BackendError;
/// SQLite log store.
#[derive(Debug)]
pub struct SqliteLogStore;
impl SqliteLogStore {
    /// Opens the store.
    pub fn open(_path: &Path) -> Result<Self, BackendError> { Ok(Self) }
}
