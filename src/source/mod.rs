//! What is backed up: file trees (metadata capture, exclusion, sparse regions). Database dumps
//! will live beside it. Reads the local system; knows nothing of the repository.

pub mod exclude;
pub mod fs;
pub mod mysql;
