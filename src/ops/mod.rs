//! Operations: where the repository, the sources, tokio and rayon meet.

pub mod backup;
pub mod mysql;
pub mod progress;
pub mod read;
pub mod restore;
pub mod streams;
