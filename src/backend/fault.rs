//! A backend wrapper that injects faults, for crash and fault tests.
//!
//! Every operation gets a number (from 0, in the order operations start). A [`Fault`] names
//! one operation number and what happens to it; the wrapper can also count operations so a test
//! can loop over every failure point of a run.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use super::{BResult, Backend, BackendError, BackendErrorKind, Entry};

/// What happens to the chosen operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The operation fails with a permanent error, and so does every later one (the storage is
    /// gone, the process is as good as dead).
    Crash,
    /// The operation fails once with a transient error; later ones succeed.
    Transient,
    /// A write reports success but stores nothing (a lying disk or a lost upload).
    DropWrite,
    /// A write stores only the first half of the object and reports success.
    TruncateWrite,
    /// A read returns the data with one byte flipped.
    FlipRead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub at: u64,
    pub kind: FaultKind,
}

#[derive(Debug)]
pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    fault: Mutex<Option<Fault>>,
    ops: AtomicU64,
    crashed: std::sync::atomic::AtomicBool,
    /// Operations that met their fault (for tests to assert the fault fired).
    fired: AtomicU64,
}

enum Act {
    Pass,
    Fail(BackendErrorKind),
    Drop,
    Truncate,
    Flip,
}

impl FaultBackend {
    pub fn new(inner: Arc<dyn Backend>, fault: Option<Fault>) -> FaultBackend {
        FaultBackend {
            inner,
            fault: Mutex::new(fault),
            ops: AtomicU64::new(0),
            crashed: std::sync::atomic::AtomicBool::new(false),
            fired: AtomicU64::new(0),
        }
    }

    /// Operations started so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
    }

    /// Whether the fault has been injected.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst) > 0
    }

    fn act(&self, write: bool, read: bool) -> Act {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if self.crashed.load(Ordering::SeqCst) {
            return Act::Fail(BackendErrorKind::Permanent);
        }
        let Some(f) = *self.fault.lock().unwrap_or_else(|p| p.into_inner()) else {
            return Act::Pass;
        };
        if f.at != n {
            return Act::Pass;
        }
        let act = match f.kind {
            FaultKind::Crash => {
                self.crashed.store(true, Ordering::SeqCst);
                Act::Fail(BackendErrorKind::Permanent)
            }
            FaultKind::Transient => Act::Fail(BackendErrorKind::Transient),
            FaultKind::DropWrite if write => Act::Drop,
            FaultKind::TruncateWrite if write => Act::Truncate,
            FaultKind::FlipRead if read => Act::Flip,
            _ => Act::Pass,
        };
        if !matches!(act, Act::Pass) {
            self.fired.fetch_add(1, Ordering::SeqCst);
        }
        act
    }
}

fn injected(kind: BackendErrorKind, op: &'static str, key: &str) -> BackendError {
    BackendError::new(kind, op, key, "injected fault")
}

fn flip(data: Bytes) -> Bytes {
    if data.is_empty() {
        return data;
    }
    let mut v = data.to_vec();
    let i = v.len() / 2;
    v[i] ^= 0x10;
    Bytes::from(v)
}

#[async_trait]
impl Backend for FaultBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, key: &str, data: Bytes) -> BResult<()> {
        match self.act(true, false) {
            Act::Fail(k) => Err(injected(k, "put", key)),
            Act::Drop => Ok(()),
            Act::Truncate => {
                let half = data.slice(..data.len() / 2);
                self.inner.put(key, half).await
            }
            _ => self.inner.put(key, data).await,
        }
    }

    async fn put_parts(&self, key: &str, parts: Vec<Bytes>) -> BResult<()> {
        match self.act(true, false) {
            Act::Fail(k) => Err(injected(k, "put", key)),
            Act::Drop => Ok(()),
            Act::Truncate => {
                let all: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
                let half = Bytes::from(all[..all.len() / 2].to_vec());
                self.inner.put(key, half).await
            }
            _ => self.inner.put_parts(key, parts).await,
        }
    }

    async fn get(&self, key: &str) -> BResult<Bytes> {
        match self.act(false, true) {
            Act::Fail(k) => Err(injected(k, "get", key)),
            Act::Flip => self.inner.get(key).await.map(flip),
            _ => self.inner.get(key).await,
        }
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> BResult<Bytes> {
        match self.act(false, true) {
            Act::Fail(k) => Err(injected(k, "get", key)),
            Act::Flip => self.inner.get_range(key, offset, len).await.map(flip),
            _ => self.inner.get_range(key, offset, len).await,
        }
    }

    async fn hidden(&self) -> BResult<Vec<(String, String)>> {
        self.inner.hidden().await
    }

    async fn list(&self, prefix: &str) -> BResult<Vec<Entry>> {
        match self.act(false, false) {
            Act::Fail(k) => Err(injected(k, "list", prefix)),
            _ => self.inner.list(prefix).await,
        }
    }

    async fn delete(&self, key: &str) -> BResult<()> {
        match self.act(true, false) {
            Act::Fail(k) => Err(injected(k, "delete", key)),
            Act::Drop => Ok(()),
            _ => self.inner.delete(key).await,
        }
    }

    async fn stat(&self, key: &str) -> BResult<Option<u64>> {
        match self.act(false, false) {
            Act::Fail(k) => Err(injected(k, "stat", key)),
            _ => self.inner.stat(key).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    #[tokio::test]
    async fn passes_through_and_injects() {
        let b = FaultBackend::new(Arc::new(MemoryBackend::new()), None);
        super::super::conformance::run(&b).await;

        let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let b = FaultBackend::new(
            mem.clone(),
            Some(Fault {
                at: 1,
                kind: FaultKind::Transient,
            }),
        );
        b.put("a", Bytes::from_static(b"1")).await.unwrap();
        let e = b.put("b", Bytes::from_static(b"2")).await.unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::Transient);
        b.put("b", Bytes::from_static(b"2")).await.unwrap();
        assert!(b.fired());

        let b = FaultBackend::new(
            mem.clone(),
            Some(Fault {
                at: 0,
                kind: FaultKind::DropWrite,
            }),
        );
        b.put("c", Bytes::from_static(b"3")).await.unwrap();
        assert!(mem.get("c").await.unwrap_err().is_not_found());

        let b = FaultBackend::new(
            mem.clone(),
            Some(Fault {
                at: 0,
                kind: FaultKind::TruncateWrite,
            }),
        );
        b.put("d", Bytes::from_static(b"1234")).await.unwrap();
        assert_eq!(mem.get("d").await.unwrap(), Bytes::from_static(b"12"));

        let b = FaultBackend::new(
            mem.clone(),
            Some(Fault {
                at: 1,
                kind: FaultKind::FlipRead,
            }),
        );
        assert_eq!(b.get("a").await.unwrap(), Bytes::from_static(b"1"));
        assert_ne!(b.get("a").await.unwrap(), Bytes::from_static(b"1"));

        let b = FaultBackend::new(
            mem,
            Some(Fault {
                at: 0,
                kind: FaultKind::Crash,
            }),
        );
        assert!(b.get("a").await.is_err());
        assert!(b.get("a").await.is_err(), "stays down after a crash");
    }
}
