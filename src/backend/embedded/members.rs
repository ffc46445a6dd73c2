//! STUB
/// In-process membership.
#[derive(Debug, Default)]
pub struct EmbeddedMembership;
