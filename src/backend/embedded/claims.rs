//! STUB
/// In-process claims.
#[derive(Debug, Default)]
pub struct EmbeddedClaims;
