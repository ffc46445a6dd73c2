//! STUB: HTTP front end
