//! STUB: adapter guide
