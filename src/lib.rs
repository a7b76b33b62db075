//! # cairn
//!
//! A content-addressed, deduplicating, encrypted snapshot store for file trees and database
//! dumps. This crate is the library; the `cairn` binary is a thin command line over it.
//!
//! ## Architecture (DESIGN.md, format-spec/)
//! Data flows one way through the modules, and dependencies point the same way:
//!
//! ```text
//! ops (backup, restore, copy, ls, stats)  ->  repo (repository handle, catalog, packer)
//!     -> format (pure encode/decode of stored objects)
//!         -> crypto, compress, chunker (pure leaves)
//! backend (bytes and keys only; knows no cairn types)
//! source (what is backed up: file trees, stdin, database dumps)
//! ```
//!
//! Long operations are `async` and run on the caller's tokio runtime; CPU stages (chunk, hash,
//! compress, seal) run on rayon. Nothing in the library starts its own runtime.

pub mod backend;
pub mod chunker;
pub mod clock;
pub mod compress;
pub mod config;
pub mod crypto;
pub mod error;
pub mod format;
pub mod id;
pub mod job;
pub mod ops;
pub mod repo;
pub mod source;

pub use error::{DbErrorKind, Error, ErrorKind, Result};
pub use id::Id;
