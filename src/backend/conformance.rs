//! STUB: conformance suite
