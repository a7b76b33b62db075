//! Storage backends: bytes under string keys (format-spec/layout.md lists the keys).
//!
//! Owns the [`Backend`] contract and its implementations: local disk, memory (tests), and the
//! wrappers. Knows nothing of cairn's objects: it never decodes what it stores.
//!
//! # Contract
//! - `put` is atomic and never overwrites: it either stores all of `data` under a new key or
//!   fails with `AlreadyExists`, and once it returns `Ok` the object is durable.
//! - `get`/`get_range` return exactly the stored bytes, or `NotFound`.
//! - `list(prefix)` returns every key starting with `prefix` that a completed `put` created and
//!   no completed `delete` removed, with sizes, in no particular order.
//! - `delete` of a missing key succeeds.
//! - `check` fails if the location cannot be used at all (S3: missing bucket, rejected
//!   credentials, unreachable endpoint), with a message that says which.

#[cfg(any(test, feature = "testing"))]
mod fault;
mod local;
#[cfg(any(test, feature = "testing"))]
mod memory;
pub mod s3;

#[cfg(any(test, feature = "testing"))]
pub use fault::{Fault, FaultBackend, FaultKind};
pub use local::LocalBackend;
#[cfg(any(test, feature = "testing"))]
pub use memory::MemoryBackend;
pub use s3::{S3Backend, S3Options};

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;

/// How a backend operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    NotFound,
    AlreadyExists,
    /// May succeed if retried.
    Transient,
    /// Will not succeed if retried (permissions, bad credentials, disk full, ...).
    Permanent,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} {key}: {message}")]
pub struct BackendError {
    pub kind: BackendErrorKind,
    pub op: &'static str,
    pub key: String,
    pub message: String,
}

impl BackendError {
    pub fn new(
        kind: BackendErrorKind,
        op: &'static str,
        key: &str,
        message: impl Into<String>,
    ) -> Self {
        BackendError {
            kind,
            op,
            key: key.to_string(),
            message: message.into(),
        }
    }

    pub fn from_io(op: &'static str, key: &str, e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::NotFound => BackendErrorKind::NotFound,
            K::AlreadyExists => BackendErrorKind::AlreadyExists,
            K::Interrupted | K::TimedOut | K::WouldBlock => BackendErrorKind::Transient,
            _ => BackendErrorKind::Permanent,
        };
        BackendError::new(kind, op, key, e.to_string())
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == BackendErrorKind::NotFound
    }
}

pub type BResult<T> = std::result::Result<T, BackendError>;

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    /// When the object was written, where the backend says (leases of unknown versions are
    /// judged by it).
    pub modified: Option<std::time::SystemTime>,
}

/// A key space of immutable objects. See the module docs for the contract.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Where this backend stores things, for messages (never includes credentials).
    fn location(&self) -> String;
    async fn put(&self, key: &str, data: Bytes) -> BResult<()>;
    /// `put` of the concatenation of `parts`, without the caller joining them in memory.
    async fn put_parts(&self, key: &str, parts: Vec<Bytes>) -> BResult<()> {
        let mut all = bytes::BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            all.extend_from_slice(&p);
        }
        self.put(key, all.freeze()).await
    }
    async fn get(&self, key: &str) -> BResult<Bytes>;
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> BResult<Bytes>;
    async fn list(&self, prefix: &str) -> BResult<Vec<Entry>>;
    async fn delete(&self, key: &str) -> BResult<()>;
    /// The size of an object, or `None` if it does not exist.
    async fn stat(&self, key: &str) -> BResult<Option<u64>>;
    /// Whether the location can be used at all; called once when a repository is opened or
    /// created, so that a missing bucket or rejected credentials get a clear message.
    async fn check(&self) -> BResult<()> {
        Ok(())
    }
    /// What [`Backend::list`] never shows, as `(key, what it is)`: on local disk the temporary
    /// files of interrupted puts, and entries it cannot show. Only `check` asks, to report
    /// them; nothing on backends whose puts leave nothing behind.
    async fn hidden(&self) -> BResult<Vec<(String, String)>> {
        Ok(Vec::new())
    }
}

/// Options for [`open_with`]; fields for one kind of backend are ignored by the others.
#[derive(Debug, Clone, Default)]
pub struct OpenBackendOptions {
    pub s3: S3Options,
}

/// Whether a repository URL names an S3 repository.
pub fn is_s3_url(url: &str) -> bool {
    url.starts_with("s3:")
}

/// Open the backend a repository URL names: a local path (absolute or relative), with the
/// default options (for S3: from the environment).
pub fn open(url: &str) -> std::result::Result<Arc<dyn Backend>, String> {
    let o = OpenBackendOptions {
        s3: S3Options::from_env(),
    };
    open_with(url, &o)
}

/// Open the backend a repository URL names: `s3://bucket/prefix` (or `s3:bucket/prefix`), or a
/// local path (absolute or relative).
pub fn open_with(
    url: &str,
    o: &OpenBackendOptions,
) -> std::result::Result<Arc<dyn Backend>, String> {
    if is_s3_url(url) {
        return Ok(Arc::new(S3Backend::new(url, &o.s3)?));
    }
    if url.contains("://") {
        return Err(format!("{url}: unknown repository URL scheme"));
    }
    let path = url.strip_prefix("local:").unwrap_or(url);
    if path.is_empty() {
        return Err("empty repository path".into());
    }
    Ok(Arc::new(LocalBackend::new(path)))
}

#[cfg(test)]
pub(crate) mod conformance {
    //! The backend contract as executable checks, run against every implementation.
    use super::*;
    use futures::{StreamExt, TryStreamExt};

    pub async fn run(b: &dyn Backend) {
        // Missing keys.
        assert!(b.get("config").await.unwrap_err().is_not_found());
        assert!(
            b.get_range("config", 0, 1)
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert_eq!(b.stat("config").await.unwrap(), None);
        assert!(b.list("snapshots/").await.unwrap().is_empty());
        b.delete("snapshots/missing").await.unwrap();

        // Put, get, ranged get, stat.
        let data = Bytes::from((0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        b.put("data/ab/abcd", data.clone()).await.unwrap();
        assert_eq!(b.get("data/ab/abcd").await.unwrap(), data);
        assert_eq!(
            b.get_range("data/ab/abcd", 10, 20).await.unwrap(),
            data.slice(10..30)
        );
        assert_eq!(
            b.get_range("data/ab/abcd", 99_990, 10).await.unwrap(),
            data.slice(99_990..)
        );
        assert_eq!(b.stat("data/ab/abcd").await.unwrap(), Some(100_000));

        // Put never overwrites.
        let e = b
            .put("data/ab/abcd", Bytes::from_static(b"other"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::AlreadyExists);
        assert_eq!(b.get("data/ab/abcd").await.unwrap(), data);

        // Objects written in parts.
        let parts = vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ];
        b.put_parts("data/cd/parts", parts).await.unwrap();
        assert_eq!(
            b.get("data/cd/parts").await.unwrap(),
            Bytes::from_static(b"abcde")
        );
        b.delete("data/cd/parts").await.unwrap();

        // Empty objects.
        b.put("locks/empty", Bytes::new()).await.unwrap();
        assert_eq!(b.get("locks/empty").await.unwrap().len(), 0);

        // List by prefix, with many keys.
        for i in 0..300 {
            b.put(&format!("index/{i:04}"), Bytes::from(vec![1u8; i % 7]))
                .await
                .unwrap();
        }
        let mut l = b.list("index/").await.unwrap();
        l.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(l.len(), 300);
        assert_eq!(
            l[5],
            Entry {
                key: "index/0005".into(),
                size: 5,
                modified: l[5].modified,
            }
        );
        let data_keys: Vec<(String, u64)> = b
            .list("data/")
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.size))
            .collect();
        assert_eq!(data_keys, vec![("data/ab/abcd".to_string(), 100_000)]);

        // Delete.
        b.delete("index/0005").await.unwrap();
        assert!(b.get("index/0005").await.unwrap_err().is_not_found());
        assert_eq!(b.list("index/").await.unwrap().len(), 299);
    }

    /// Objects of tens of MiB and listings of thousands of keys (several S3 list pages).
    pub async fn run_large(b: &dyn Backend) {
        let big = Bytes::from(
            (0..40u32 << 20)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect::<Vec<_>>(),
        );
        let parts: Vec<Bytes> = (0..40).map(|i| big.slice(i << 20..(i + 1) << 20)).collect();
        b.put_parts("data/ee/big", parts).await.unwrap();
        assert_eq!(b.stat("data/ee/big").await.unwrap(), Some(40 << 20));
        assert!(b.get("data/ee/big").await.unwrap() == big);
        let off = (33 << 20) + 12_345;
        assert_eq!(
            b.get_range("data/ee/big", off, 3 << 20).await.unwrap(),
            big.slice(off as usize..off as usize + (3 << 20))
        );
        assert!(b.get_range("data/ee/big", (40 << 20) - 1, 2).await.is_err());
        let e = b.put("data/ee/big", Bytes::new()).await.unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::AlreadyExists);
        b.delete("data/ee/big").await.unwrap();
        assert_eq!(b.stat("data/ee/big").await.unwrap(), None);

        // 2,500 keys: more than two pages of an S3 listing (1,000 keys each).
        let n = 2_500usize;
        futures::stream::iter(0..n)
            .map(|i| async move {
                b.put(&format!("snapshots/{i:05}"), Bytes::from(vec![7u8; i % 3]))
                    .await
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        let mut l = b.list("snapshots/").await.unwrap();
        l.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(l.len(), n);
        let keys: std::collections::BTreeSet<_> = l.iter().map(|e| e.key.clone()).collect();
        assert_eq!(keys.len(), n, "no key listed twice");
        assert_eq!(
            l[n - 1],
            Entry {
                key: format!("snapshots/{:05}", n - 1),
                size: ((n - 1) % 3) as u64,
                modified: l[n - 1].modified,
            }
        );
        // A prefix that is not a whole "directory" still selects by key prefix.
        assert_eq!(b.list("snapshots/0001").await.unwrap().len(), 10);
    }
}
