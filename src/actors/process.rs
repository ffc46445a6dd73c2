//! STUB: process execution
