//! The local SQLite catalog (DESIGN.md §2): a cache of the repository's index and snapshots.
//!
//! Owns the schema and every query. The repository alone is the truth: the catalog is rebuilt
//! from it when missing, stale or corrupt, and nothing is ever read from it that could not be
//! read again from the repository. Snapshots are kept sealed, as in the repository, so the cache
//! holds no plaintext file names. One table is a cache of something else: `copied`, where
//! `cairn copy` remembers the id each source data blob has in this repository; it can always be
//! learned again by reading the source, and an entry is used only while its blob is indexed.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};
use crate::format::index::IndexPack;
use crate::format::pack::{BlobKind, PackEntry};
use crate::id::Id;

/// Bump when the schema changes; an older catalog is then rebuilt.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS index_objects(id BLOB PRIMARY KEY);
CREATE TABLE IF NOT EXISTS packs(id BLOB PRIMARY KEY, kind INTEGER NOT NULL, size INTEGER NOT NULL, index_id BLOB);
CREATE TABLE IF NOT EXISTS blobs(
    id BLOB NOT NULL, pack BLOB NOT NULL, kind INTEGER NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, raw_len INTEGER NOT NULL, base BLOB,
    PRIMARY KEY(id, pack)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots(id BLOB PRIMARY KEY, time INTEGER NOT NULL, sealed BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS blobs_by_pack ON blobs(pack);
CREATE TABLE IF NOT EXISTS condemned_objects(id BLOB PRIMARY KEY);
CREATE TABLE IF NOT EXISTS condemned(pack BLOB PRIMARY KEY, since INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verified(pack BLOB PRIMARY KEY, time INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS copied(src_repo BLOB NOT NULL, src BLOB NOT NULL, dst BLOB NOT NULL,
    PRIMARY KEY(src_repo, src)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS file_index(snapshot BLOB PRIMARY KEY, entries INTEGER NOT NULL, sealed BLOB NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS mark(id BLOB PRIMARY KEY) WITHOUT ROWID;
";

/// Blob locations in packs that are not condemned (the ones new backups may deduplicate against).
const LIVE_PACK: &str = "pack NOT IN (SELECT pack FROM condemned)";

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub kind: BlobKind,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
    /// The base of a delta blob ([`PackEntry::base`]).
    pub base: Option<Id>,
}

pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

/// Open (or create) an SQLite database in WAL mode whose file is 0600 from the start (SQLite
/// gives its -wal and -shm files the same permissions).
pub(super) fn open_private_sqlite(path: &Path, busy_secs: u64) -> rusqlite::Result<Connection> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path);
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(busy_secs))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    Ok(conn)
}

/// Delete an SQLite database and its companion files.
pub(super) fn remove_sqlite_files(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// A `PackEntry` from the columns `id, kind, offset, length, raw_len, base` starting at `at`.
fn entry_from(r: &rusqlite::Row, at: usize) -> rusqlite::Result<PackEntry> {
    Ok(PackEntry {
        id: id_from(r.get(at)?)?,
        kind: BlobKind::from_u8(r.get(at + 1)?).unwrap_or(BlobKind::Data),
        offset: r.get(at + 2)?,
        length: r.get(at + 3)?,
        raw_len: r.get(at + 4)?,
        base: r
            .get::<_, Option<Vec<u8>>>(at + 5)?
            .map(id_from)
            .transpose()?,
    })
}

/// A `BlobLocation` from the columns `pack, kind, offset, length, raw_len, base`.
fn location_from(r: &rusqlite::Row) -> rusqlite::Result<BlobLocation> {
    let e = entry_from(r, 0)?;
    Ok(BlobLocation {
        pack: e.id,
        kind: e.kind,
        offset: e.offset,
        length: e.length,
        raw_len: e.raw_len,
        base: e.base,
    })
}

fn id_from(v: Vec<u8>) -> rusqlite::Result<Id> {
    Id::from_slice(&v).ok_or(rusqlite::Error::InvalidColumnType(
        0,
        "id".into(),
        rusqlite::types::Type::Blob,
    ))
}

impl Catalog {
    /// Open (or create) the catalog at `path`. A file that is not a usable catalog of the
    /// current schema is deleted and recreated empty; the caller then refills it.
    pub fn open(path: &Path) -> Result<Catalog> {
        match Self::try_open(path) {
            Ok(c) => Ok(c),
            Err(e) => {
                tracing::warn!("catalog {} unusable ({e}); rebuilding it", path.display());
                remove_sqlite_files(path);
                Self::try_open(path).map_err(|e| Error::Catalog {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
            }
        }
    }

    fn try_open(path: &Path) -> rusqlite::Result<Catalog> {
        let conn = open_private_sqlite(path, 60)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // The bundled SQLite has STAT4: a cached statement whose plan could depend on a bound
        // value was re-planned (parsed and prepared again) on every step. A restore spent half
        // of its catalog time, 5% of all its CPU, doing that. The plans here never depend on
        // the values, so ask for stable plans.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        // SQLite's default page cache is 2 MB; with a million blobs nearly every lookup then
        // became a pread (prune spent most of its time in the kernel copying pages). 64 MiB
        // holds the hot part of the blob table; the temp database holds the mark set.
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.pragma_update(Some("temp"), "cache_size", -32768)?;
        let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if ok != "ok" {
            return Err(rusqlite::Error::InvalidQuery);
        }
        conn.execute_batch(SCHEMA)?;
        let v: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match v {
            Some(SCHEMA_VERSION) => {}
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('schema', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            Some(_) => return Err(rusqlite::Error::InvalidQuery),
        }
        Ok(Catalog {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        Error::Catalog {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    pub fn index_ids(&self) -> Result<Vec<Id>> {
        self.ids("SELECT id FROM index_objects")
    }

    /// Forget every index entry (before a rebuild).
    pub fn clear_index(&mut self) -> Result<()> {
        self.conn
            .execute_batch("DELETE FROM blobs; DELETE FROM packs; DELETE FROM index_objects;")
            .map_err(|e| self.err(e))
    }

    /// Record the packs of one index object (or of packs just uploaded, with the index object
    /// that names them).
    pub fn add_index(&mut self, index_id: Option<&Id>, packs: &[IndexPack]) -> Result<()> {
        let tx = self.conn.transaction().map_err(|e| Error::Catalog {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let r: rusqlite::Result<()> = (|| {
            {
                let mut ins_pack = tx.prepare_cached(
                    "INSERT OR REPLACE INTO packs(id, kind, size, index_id) VALUES(?1, ?2, ?3, ?4)",
                )?;
                let mut ins_blob = tx.prepare_cached(
                    "INSERT OR REPLACE INTO blobs(id, pack, kind, offset, length, raw_len, base) \
                     VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for p in packs {
                    let kind = p.entries.first().map(|e| e.kind.as_u8()).unwrap_or(0);
                    ins_pack.execute(params![
                        &p.id.0[..],
                        kind,
                        p.size as i64,
                        index_id.map(|i| i.0.to_vec())
                    ])?;
                    for e in &p.entries {
                        ins_blob.execute(params![
                            &e.id.0[..],
                            &p.id.0[..],
                            e.kind.as_u8(),
                            e.offset,
                            e.length,
                            e.raw_len,
                            e.base.map(|b| b.0.to_vec())
                        ])?;
                    }
                }
            }
            if let Some(id) = index_id {
                tx.execute(
                    "INSERT OR IGNORE INTO index_objects(id) VALUES(?1)",
                    [&id.0[..]],
                )?;
            }
            Ok(())
        })();
        let path = self.path.clone();
        let err = |e: rusqlite::Error| Error::Catalog {
            path: path.clone(),
            message: e.to_string(),
        };
        r.map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Where a blob is stored (any one copy), if the index knows it.
    pub fn lookup(&self, id: &Id) -> Result<Option<BlobLocation>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT pack, kind, offset, length, raw_len, base FROM blobs WHERE id = ?1 \
                 ORDER BY pack IN (SELECT pack FROM condemned) LIMIT 1",
            )
            .map_err(|e| self.err(e))?;
        st.query_row([&id.0[..]], location_from)
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Run `f` inside one read transaction: its queries then share one snapshot of the
    /// database and one lock (a statement outside a transaction takes and drops the database's
    /// shared lock, two system calls per query).
    pub fn read_transaction<R>(&self, f: impl FnOnce(&Catalog) -> R) -> Result<R> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let out = f(self);
        tx.finish().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// The first 8 bytes of every indexed blob id, sorted: a compact set for checking many ids
    /// at once (a false match needs a 64-bit collision between keyed hashes).
    pub fn blob_prefixes(&self) -> Result<Vec<u64>> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT DISTINCT substr(id, 1, 8) FROM blobs WHERE {LIVE_PACK}"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                let b: Vec<u8> = r.get(0)?;
                let mut a = [0u8; 8];
                let n = b.len().min(8);
                a[..n].copy_from_slice(&b[..n]);
                Ok(u64::from_be_bytes(a))
            })
            .map_err(|e| self.err(e))?;
        let mut v = rows
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }

    /// Whether a blob is indexed in a pack that is not condemned: whether a new backup may
    /// reuse it.
    pub fn has_blob(&self, id: &Id) -> Result<bool> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT 1 FROM blobs WHERE id = ?1 AND {LIVE_PACK} LIMIT 1"
            ))
            .map_err(|e| self.err(e))?;
        st.exists([&id.0[..]]).map_err(|e| self.err(e))
    }

    /// The id in this repository of data blob `src` of repository `src_repo`, as a copy
    /// recorded it (`ops::copy`). Only a hint: the caller checks that the blob is still indexed.
    pub fn copied_blob(&self, src_repo: &Id, src: &Id) -> Result<Option<Id>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT dst FROM copied WHERE src_repo = ?1 AND src = ?2")
            .map_err(|e| self.err(e))?;
        let v: Option<Vec<u8>> = st
            .query_row(params![&src_repo.0[..], &src.0[..]], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| Id::from_slice(&v)))
    }

    /// Remember where data blobs of repository `src_repo` went in this one (source, target).
    pub fn add_copied_blobs(&mut self, src_repo: &Id, pairs: &[(Id, Id)]) -> Result<()> {
        let r: rusqlite::Result<()> = (|| {
            let tx = self.conn.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR REPLACE INTO copied(src_repo, src, dst) VALUES(?1, ?2, ?3)",
                )?;
                for (s, d) in pairs {
                    st.execute(params![&src_repo.0[..], &s.0[..], &d.0[..]])?;
                }
            }
            tx.commit()
        })();
        r.map_err(|e| self.err(e))
    }

    /// Every pack with its size.
    pub fn packs(&self) -> Result<Vec<(Id, BlobKind, u64)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, kind, size FROM packs")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    id_from(r.get(0)?)?,
                    BlobKind::from_u8(r.get(1)?).unwrap_or(BlobKind::Data),
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Every indexed blob of a pack.
    pub fn pack_entries(&self, pack: &Id) -> Result<Vec<PackEntry>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, kind, offset, length, raw_len, base FROM blobs WHERE pack = ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([&pack.0[..]], |r| entry_from(r, 0))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Count of distinct blobs and the sum of their stored lengths, per kind.
    pub fn blob_totals(&self) -> Result<(u64, u64)> {
        self.conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(length), 0) FROM (SELECT id, MIN(length) AS length FROM blobs GROUP BY id)",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| self.err(e))
    }

    pub fn snapshot_ids(&self) -> Result<Vec<Id>> {
        self.ids("SELECT id FROM snapshots")
    }

    /// Sealed snapshot objects, oldest first.
    pub fn sealed_snapshots(&self) -> Result<Vec<(Id, Vec<u8>)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, sealed FROM snapshots ORDER BY time, id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((id_from(r.get(0)?)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    pub fn add_snapshot(&self, id: &Id, time_nanos: i64, sealed: &[u8]) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO snapshots(id, time, sealed) VALUES(?1, ?2, ?3)",
                params![&id.0[..], time_nanos, sealed],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn remove_snapshot(&self, id: &Id) -> Result<()> {
        self.conn
            .execute("DELETE FROM file_index WHERE snapshot = ?1", [&id.0[..]])
            .and_then(|_| {
                self.conn
                    .execute("DELETE FROM snapshots WHERE id = ?1", [&id.0[..]])
            })
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// A snapshot's file index (sealed, as `ops::find` made it), if it has one.
    pub fn file_index(&self, snapshot: &Id) -> Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT sealed FROM file_index WHERE snapshot = ?1")
            .and_then(|mut st| st.query_row([&snapshot.0[..]], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// Store a snapshot's file index (only while the snapshot is in the catalog).
    pub fn put_file_index(&self, snapshot: &Id, entries: u64, sealed: &[u8]) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO file_index(snapshot, entries, sealed) \
                 SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM snapshots WHERE id = ?1)",
                params![&snapshot.0[..], entries as i64, sealed],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Drop a snapshot's file index (one that could not be read is made again).
    pub fn remove_file_index(&self, snapshot: &Id) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM file_index WHERE snapshot = ?1",
                [&snapshot.0[..]],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// How many snapshots have a file index, their entries and the indexes' sealed bytes.
    pub fn file_index_totals(&self) -> Result<(u64, u64, u64)> {
        self.conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(entries), 0), COALESCE(SUM(LENGTH(sealed)), 0) FROM file_index",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                },
            )
            .map_err(|e| self.err(e))
    }

    fn ids(&self, sql: &str) -> Result<Vec<Id>> {
        let mut st = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| id_from(r.get(0)?))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Every indexed blob id, sorted (for checking many ids without a query each).
    pub fn blob_ids_sorted(&self) -> Result<Vec<Id>> {
        // `blobs` is keyed by (id, pack): this reads it in id order.
        let mut v = self.ids("SELECT DISTINCT id FROM blobs ORDER BY id")?;
        v.dedup();
        Ok(v)
    }

    /// Every location of a blob, non-condemned packs first.
    pub fn locations(&self, id: &Id) -> Result<Vec<BlobLocation>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT pack, kind, offset, length, raw_len, base FROM blobs WHERE id = ?1 \
                 ORDER BY pack IN (SELECT pack FROM condemned), pack",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([&id.0[..]], location_from)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    // ---- condemned packs (two-phase deletion) ----

    /// Names of the condemnation records the catalog has loaded.
    pub fn condemned_object_ids(&self) -> Result<Vec<Id>> {
        self.ids("SELECT id FROM condemned_objects")
    }

    /// Replace what the catalog knows of condemned packs: `records` are the names of the
    /// effective condemnation records, `packs` what they list (pack, nanoseconds since).
    pub fn set_condemned(&mut self, records: &[Id], packs: &[(Id, i64)]) -> Result<()> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| Error::Catalog {
            path: path.clone(),
            message: e.to_string(),
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute_batch("DELETE FROM condemned; DELETE FROM condemned_objects;")
            .map_err(err)?;
        {
            let mut ins = tx
                .prepare_cached("INSERT OR IGNORE INTO condemned_objects(id) VALUES(?1)")
                .map_err(err)?;
            for r in records {
                ins.execute([&r.0[..]]).map_err(err)?;
            }
            // The earliest condemnation of a pack counts.
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO condemned(pack, since) VALUES(?1, ?2) \
                     ON CONFLICT(pack) DO UPDATE SET since = MIN(since, excluded.since)",
                )
                .map_err(err)?;
            for (p, since) in packs {
                ins.execute(params![&p.0[..], since]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Condemned packs with the time (nanoseconds) they were first condemned.
    pub fn condemned_packs(&self) -> Result<Vec<(Id, i64)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT pack, since FROM condemned")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((id_from(r.get(0)?)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    // ---- verification history (check --read-data-subset) ----

    /// When each pack was last read and verified in full (unix seconds).
    pub fn verified_times(&self) -> Result<std::collections::HashMap<Id, i64>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT pack, time FROM verified")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((id_from(r.get(0)?)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    pub fn set_verified(&self, pack: &Id, time_secs: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO verified(pack, time) VALUES(?1, ?2)",
                params![&pack.0[..], time_secs],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    // ---- marking (check and prune): a set of blob ids kept on disk, not in memory ----

    /// A marked id that no index entry names, if there is one.
    pub fn first_unindexed_mark(&self) -> Result<Option<Id>> {
        self.conn
            .query_row(
                "SELECT m.id FROM temp.mark m WHERE NOT EXISTS \
                 (SELECT 1 FROM blobs b WHERE b.id = m.id) LIMIT 1",
                [],
                |r| id_from(r.get(0)?),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every index entry in (blob id, pack) order, each with whether its id is marked: one
    /// pass over the blob table merged with one over the mark set (no lookups, no sorting).
    pub fn for_each_blob_marked(
        &self,
        mut f: impl FnMut(Id, PackEntry, bool) -> Result<()>,
    ) -> Result<()> {
        let mut blobs = self
            .conn
            .prepare(
                "SELECT pack, id, kind, offset, length, raw_len, base FROM blobs ORDER BY id, pack",
            )
            .map_err(|e| self.err(e))?;
        let mut marks = self
            .conn
            .prepare("SELECT id FROM temp.mark ORDER BY id")
            .map_err(|e| self.err(e))?;
        let mut brows = blobs.query([]).map_err(|e| self.err(e))?;
        let mut mrows = marks.query([]).map_err(|e| self.err(e))?;
        let mut next_mark = |this: &Self| -> Result<Option<Id>> {
            match mrows.next().map_err(|e| this.err(e))? {
                Some(r) => Ok(Some(
                    id_from(r.get(0).map_err(|e| this.err(e))?).map_err(|e| this.err(e))?,
                )),
                None => Ok(None),
            }
        };
        let mut mark = next_mark(self)?;
        while let Some(r) = brows.next().map_err(|e| self.err(e))? {
            let (pack, entry) =
                (|| Ok::<_, rusqlite::Error>((id_from(r.get(0)?)?, entry_from(r, 1)?)))()
                    .map_err(|e| self.err(e))?;
            while mark.is_some_and(|m| m < entry.id) {
                mark = next_mark(self)?;
            }
            f(pack, entry, mark == Some(entry.id))?;
        }
        Ok(())
    }

    /// After a prune wrote its new index objects (merged through `add_index`) and deleted
    /// packs: drop the deleted packs' entries and every index object other than `current`.
    pub fn retire_index(&mut self, current: &[Id], deleted_packs: &[Id]) -> Result<()> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| Error::Catalog {
            path: path.clone(),
            message: e.to_string(),
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut del_blobs = tx
                .prepare_cached("DELETE FROM blobs WHERE pack = ?1")
                .map_err(err)?;
            let mut del_pack = tx
                .prepare_cached("DELETE FROM packs WHERE id = ?1")
                .map_err(err)?;
            for p in deleted_packs {
                del_blobs.execute([&p.0[..]]).map_err(err)?;
                del_pack.execute([&p.0[..]]).map_err(err)?;
            }
            tx.execute("DELETE FROM index_objects", []).map_err(err)?;
            let mut ins = tx
                .prepare_cached("INSERT OR IGNORE INTO index_objects(id) VALUES(?1)")
                .map_err(err)?;
            for id in current {
                ins.execute([&id.0[..]]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    pub fn mark_clear(&self) -> Result<()> {
        self.conn
            .execute_batch("DELETE FROM temp.mark")
            .map_err(|e| self.err(e))
    }

    /// Add ids to the mark set; returns how many were not marked before.
    pub fn mark(&mut self, ids: &[Id]) -> Result<usize> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| Error::Catalog {
            path: path.clone(),
            message: e.to_string(),
        };
        let tx = self.conn.transaction().map_err(err)?;
        let mut n = 0;
        {
            let mut ins = tx
                .prepare_cached("INSERT OR IGNORE INTO temp.mark(id) VALUES(?1)")
                .map_err(err)?;
            for id in ids {
                n += ins.execute([&id.0[..]]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// Every delta blob with its base (for a blob stored more than once, one of its bases).
    pub fn delta_bases(&self) -> Result<std::collections::HashMap<Id, Id>> {
        let mut st = self
            .conn
            .prepare("SELECT id, base FROM blobs WHERE base IS NOT NULL")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((id_from(r.get(0)?)?, id_from(r.get(1)?)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Mark the base of every marked delta blob, and their bases in turn, to the end of each
    /// chain; returns how many were not marked before. Each pass goes one link further, so it
    /// takes at most a chain's length of passes (a cycle adds nothing new and ends too).
    pub fn mark_bases(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self
                .conn
                .execute(
                    "INSERT OR IGNORE INTO temp.mark(id) SELECT DISTINCT b.base FROM blobs b \
                     JOIN temp.mark m ON b.id = m.id WHERE b.base IS NOT NULL",
                    [],
                )
                .map_err(|e| self.err(e))?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    pub fn is_marked(&self, id: &Id) -> Result<bool> {
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM temp.mark WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        st.exists([&id.0[..]]).map_err(|e| self.err(e))
    }

    /// Indexed blobs that are not marked: their count and stored bytes (one copy each);
    /// condemned packs are not counted (prune has dealt with them).
    pub fn unmarked_totals(&self) -> Result<(u64, u64)> {
        self.conn
            .query_row(
                &format!(
                    "SELECT COUNT(*), COALESCE(SUM(length), 0) FROM \
                 (SELECT id, MIN(length) AS length FROM blobs \
                  WHERE id NOT IN (SELECT id FROM temp.mark) AND {LIVE_PACK} GROUP BY id)"
                ),
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| self.err(e))
    }

    /// Blobs stored in more than one pack that is not condemned: their count and the stored
    /// bytes of the extra copies.
    pub fn duplicate_totals(&self) -> Result<(u64, u64)> {
        self.conn
            .query_row(
                &format!(
                    "SELECT COUNT(*), COALESCE(SUM(extra), 0) FROM \
                 (SELECT SUM(length) - MIN(length) AS extra FROM blobs WHERE {LIVE_PACK} \
                  GROUP BY id HAVING COUNT(*) > 1)"
                ),
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trip_and_corrupt_file_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let mut c = Catalog::open(&path).unwrap();
        let e = PackEntry {
            kind: BlobKind::Tree,
            id: Id([1; 32]),
            offset: 5,
            length: 100,
            raw_len: 80,
            base: None,
        };
        let d = PackEntry {
            kind: BlobKind::Data,
            id: Id([4; 32]),
            offset: 105,
            length: 50,
            raw_len: 900,
            base: Some(Id([3; 32])),
        };
        let p = IndexPack {
            id: Id([9; 32]),
            size: 200,
            entries: vec![e, d],
        };
        c.add_index(Some(&Id([7; 32])), &[p]).unwrap();
        assert_eq!(c.index_ids().unwrap(), vec![Id([7; 32])]);
        let loc = c.lookup(&Id([1; 32])).unwrap().unwrap();
        assert_eq!(loc.pack, Id([9; 32]));
        assert_eq!(loc.kind, BlobKind::Tree);
        assert!(c.has_blob(&Id([1; 32])).unwrap());
        assert_eq!(
            c.blob_prefixes().unwrap(),
            vec![u64::from_be_bytes([1; 8]), u64::from_be_bytes([4; 8])]
        );
        assert!(!c.has_blob(&Id([2; 32])).unwrap());
        let mut entries = c.pack_entries(&Id([9; 32])).unwrap();
        entries.sort_by_key(|e| e.id);
        assert_eq!(entries, vec![e, d]);
        assert_eq!(c.lookup(&d.id).unwrap().unwrap().base, d.base);
        // In one read transaction: the same answers.
        let many = c
            .read_transaction(|c| [d.id, Id([2; 32]), e.id].map(|id| c.lookup(&id).unwrap()))
            .unwrap();
        let one = |id: &Id| c.lookup(id).unwrap();
        assert_eq!(many, [one(&d.id), None, one(&e.id)]);
        assert!(many[0].is_some() && many[2].is_some());
        // Marking a delta blob and then its bases marks the base (and only it).
        c.mark(&[d.id]).unwrap();
        assert_eq!(c.mark_bases().unwrap(), 1);
        assert!(c.is_marked(&Id([3; 32])).unwrap());
        assert!(!c.is_marked(&e.id).unwrap());
        assert_eq!(c.mark_bases().unwrap(), 0);
        // A chain is marked to its end; a cycle (only a damaged index has one) ends too.
        let delta = |id: u8, base: u8, offset: u32| PackEntry {
            kind: BlobKind::Data,
            id: Id([id; 32]),
            offset,
            length: 10,
            raw_len: 100,
            base: Some(Id([base; 32])),
        };
        let p2 = IndexPack {
            id: Id([11; 32]),
            size: 40,
            entries: vec![
                delta(5, 12, 0),
                delta(12, 4, 10),
                delta(6, 8, 20),
                delta(8, 6, 30),
            ],
        };
        c.add_index(Some(&Id([10; 32])), &[p2]).unwrap();
        c.mark(&[Id([5; 32]), Id([6; 32])]).unwrap();
        assert_eq!(c.mark_bases().unwrap(), 2, "12 and 8 (4 and 3 were marked)");
        assert!(c.is_marked(&Id([12; 32])).unwrap());
        assert!(c.is_marked(&Id([8; 32])).unwrap());
        c.mark_clear().unwrap();
        c.mark(&[Id([5; 32])]).unwrap();
        assert_eq!(c.mark_bases().unwrap(), 3, "12, 4 and 3");
        drop(c);
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(m & 0o777, 0o600);
        }
        std::fs::write(
            &path,
            b"this is not a database, just garbage bytes of some length....",
        )
        .unwrap();
        let c = Catalog::open(&path).unwrap();
        assert!(c.index_ids().unwrap().is_empty());
    }
}
