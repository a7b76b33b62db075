//! Operations: where the repository, the sources, tokio and rayon meet.

pub mod backup;
pub mod check;
pub mod copy;
pub mod diff;
pub mod drill;
pub mod find;
pub mod forget;
pub mod forget_run;
#[cfg(any(test, feature = "testing"))]
pub mod model_fuzz;
pub mod mount;
pub mod mysql;
pub mod progress;
pub mod prune;
pub mod read;
pub mod repair;
pub mod restore;
pub mod streams;
pub mod walk;
