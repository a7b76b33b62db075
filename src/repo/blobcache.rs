//! A size-bounded local cache of tree blobs and delta blobs (issue 3: metadata cache).
//!
//! `ls`, `find`, `restore` of one path and the parent walk of an incremental backup read tree
//! blobs, a few hundred bytes each, and on S3 every one would otherwise be a ranged GET. Delta
//! blobs (format-spec/pack.md §3) are as small, and each is read through by every later version
//! of its chunk until its chain ends, so they are kept too. The
//! cache keeps them beside the catalog in `<cache dir>/<repo id>/blobs.sqlite`, **sealed** as
//! they are in their pack (so the cache holds no plaintext names, as the catalog holds
//! snapshots sealed), and every hit is opened and verified against its id like a download.
//!
//! It is only a cache: an entry is consulted after the index has said the blob exists, a bad
//! entry is dropped and the blob downloaded again, and a cache that cannot be opened or written
//! is switched off with a warning instead of failing the command. When the entries' total size
//! passes the limit, the least recently used ones are evicted down to 90% of it.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::id::Id;

/// The default limit: trees of a few million files.
pub const DEFAULT_LIMIT: u64 = 1 << 30;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blobs(id BLOB PRIMARY KEY, data BLOB NOT NULL, used INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blobs_by_use ON blobs(used);
";

struct Inner {
    conn: Connection,
    /// Sum of the entries' sizes.
    total: u64,
    /// Use counter: larger is more recent.
    tick: i64,
}

/// See the module docs.
pub struct BlobCache {
    inner: Mutex<Option<Inner>>,
    limit: u64,
}

impl BlobCache {
    /// A cache that holds nothing.
    pub fn disabled() -> BlobCache {
        BlobCache {
            inner: Mutex::new(None),
            limit: 0,
        }
    }

    /// Open (or create) the cache file; a limit of 0 disables the cache and deletes the file.
    pub fn open(path: &Path, limit: u64) -> BlobCache {
        if limit == 0 {
            remove_db(path);
            return BlobCache::disabled();
        }
        let inner = match try_open(path) {
            Ok(i) => Some(i),
            Err(e) => {
                tracing::warn!(
                    "blob cache {} unusable ({e}); recreating it",
                    path.display()
                );
                remove_db(path);
                match try_open(path) {
                    Ok(i) => Some(i),
                    Err(e) => {
                        tracing::warn!("blob cache {} disabled: {e}", path.display());
                        None
                    }
                }
            }
        };
        let cache = BlobCache {
            inner: Mutex::new(inner),
            limit,
        };
        // A smaller limit than last time takes effect at once.
        cache.with(|i| evict(i, limit));
        cache
    }

    /// Run `f` on the open cache; a failure switches the cache off for this process.
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> rusqlite::Result<T>) -> Option<T> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = guard.as_mut()?;
        match f(inner) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!("blob cache disabled after an error: {e}");
                *guard = None;
                None
            }
        }
    }

    /// The sealed bytes of a cached blob.
    pub fn get(&self, id: &Id) -> Option<Vec<u8>> {
        self.with(|i| {
            let data: Option<Vec<u8>> = i
                .conn
                .query_row("SELECT data FROM blobs WHERE id=?1", [&id.0[..]], |r| {
                    r.get(0)
                })
                .optional()?;
            if data.is_some() {
                i.tick += 1;
                i.conn.execute(
                    "UPDATE blobs SET used=?2 WHERE id=?1",
                    params![&id.0[..], i.tick],
                )?;
            }
            Ok(data)
        })
        .flatten()
    }

    /// Remember a blob's sealed bytes (a blob larger than a tenth of the limit is not kept).
    pub fn put(&self, id: &Id, sealed: &[u8]) {
        let limit = self.limit;
        if sealed.len() as u64 > limit / 10 {
            return;
        }
        self.with(|i| {
            i.tick += 1;
            let n = i.conn.execute(
                "INSERT OR IGNORE INTO blobs(id, data, used) VALUES(?1, ?2, ?3)",
                params![&id.0[..], sealed, i.tick],
            )?;
            if n > 0 {
                i.total += sealed.len() as u64;
                if i.total > limit {
                    evict(i, limit)?;
                }
            }
            Ok(())
        });
    }

    /// Forget an entry that did not open.
    pub fn remove(&self, id: &Id) {
        self.with(|i| {
            let len: Option<i64> = i
                .conn
                .query_row(
                    "DELETE FROM blobs WHERE id=?1 RETURNING length(data)",
                    [&id.0[..]],
                    |r| r.get(0),
                )
                .optional()?;
            i.total = i.total.saturating_sub(len.unwrap_or(0) as u64);
            Ok(())
        });
    }

    /// Total size of the cached entries, and their number.
    pub fn usage(&self) -> (u64, u64) {
        self.with(|i| {
            let n: i64 = i
                .conn
                .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))?;
            Ok((i.total, n as u64))
        })
        .unwrap_or((0, 0))
    }
}

fn remove_db(path: &Path) {
    super::catalog::remove_sqlite_files(path);
}

fn try_open(path: &Path) -> rusqlite::Result<Inner> {
    let conn = super::catalog::open_private_sqlite(path, 10)?;
    // A lost write costs a download, never correctness: no fsync per insert.
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.execute_batch(SCHEMA)?;
    let (total, tick): (i64, i64) = conn.query_row(
        "SELECT coalesce(sum(length(data)), 0), coalesce(max(used), 0) FROM blobs",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(Inner {
        conn,
        total: total as u64,
        tick,
    })
}

/// Drop the least recently used entries until the total is at most 90% of the limit.
fn evict(i: &mut Inner, limit: u64) -> rusqlite::Result<()> {
    if i.total <= limit {
        return Ok(());
    }
    let target = limit / 10 * 9;
    let mut victims: Vec<(Vec<u8>, i64)> = Vec::new();
    {
        let mut stmt = i
            .conn
            .prepare("SELECT id, length(data) FROM blobs ORDER BY used")?;
        let mut rows = stmt.query([])?;
        let mut total = i.total;
        while total > target {
            let Some(row) = rows.next()? else { break };
            let len: i64 = row.get(1)?;
            victims.push((row.get(0)?, len));
            total = total.saturating_sub(len as u64);
        }
    }
    let tx = i.conn.transaction()?;
    for (id, len) in &victims {
        tx.execute("DELETE FROM blobs WHERE id=?1", [id])?;
        i.total = i.total.saturating_sub(*len as u64);
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    #[test]
    fn keeps_and_returns_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blobs.sqlite");
        let c = BlobCache::open(&path, 1 << 20);
        assert_eq!(c.get(&id(1)), None);
        c.put(&id(1), b"sealed one");
        assert_eq!(c.get(&id(1)).as_deref(), Some(&b"sealed one"[..]));
        drop(c);
        // Persistent across opens, with its size.
        let c = BlobCache::open(&path, 1 << 20);
        assert_eq!(c.usage(), (10, 1));
        c.remove(&id(1));
        assert_eq!(c.get(&id(1)), None);
        assert_eq!(c.usage(), (0, 0));
    }

    #[test]
    fn evicts_least_recently_used_to_stay_under_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blobs.sqlite");
        let c = BlobCache::open(&path, 10_000);
        for n in 0..9 {
            c.put(&id(n), &[n; 1000]);
        }
        // Blob 0 is used again, so blob 1 is now the least recent.
        assert!(c.get(&id(0)).is_some());
        c.put(&id(9), &[9; 1000]);
        assert_eq!(c.usage().0, 10_000);
        c.put(&id(10), &[10; 1000]);
        let (total, n) = c.usage();
        assert!(total <= 9_000, "{total}");
        assert_eq!(n, total / 1000);
        assert!(c.get(&id(0)).is_some(), "recently used entry evicted");
        assert!(c.get(&id(1)).is_none(), "least recently used entry kept");
        assert!(c.get(&id(10)).is_some());
        // Too large for the cache: not kept.
        c.put(&id(11), &[11; 1001]);
        assert!(c.get(&id(11)).is_none());
        drop(c);
        // A smaller limit on the next open evicts at once.
        let c = BlobCache::open(&path, 3_000);
        assert!(c.usage().0 <= 2_700, "{:?}", c.usage());
        drop(c);
        // A limit of 0 switches it off and removes the file.
        let c = BlobCache::open(&path, 0);
        c.put(&id(1), b"x");
        assert_eq!(c.get(&id(1)), None);
        assert!(!path.exists());
    }

    #[test]
    fn a_corrupt_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blobs.sqlite");
        std::fs::write(&path, b"not a database at all, just bytes").unwrap();
        let c = BlobCache::open(&path, 1 << 20);
        c.put(&id(3), b"abc");
        assert_eq!(c.get(&id(3)).as_deref(), Some(&b"abc"[..]));
    }
}
