//! Counters a long operation updates and a front end may poll to draw progress.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Progress {
    /// Totals, as far as known (a scanner fills them in while the operation runs).
    pub total_files: AtomicU64,
    pub total_bytes: AtomicU64,
    pub totals_final: AtomicBool,
    /// Done so far.
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    /// Bytes actually read from sources (unchanged files count in `bytes`, not here).
    pub read_bytes: AtomicU64,
}

impl Progress {
    pub fn add(&self, files: u64, bytes: u64) {
        self.files.fetch_add(files, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_total(&self, files: u64, bytes: u64) {
        self.total_files.fetch_add(files, Ordering::Relaxed);
        self.total_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
