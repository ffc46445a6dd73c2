//! FerretDb test guard (filled by the MongoDB work).
