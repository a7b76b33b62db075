//! `cairn find`: which snapshots hold a file (or a database table) by name or path, answered
//! from a per-snapshot file index in the catalog, so that a search reads no trees once the
//! snapshots are indexed.
//!
//! A snapshot's index is every entry of its tree (path, type, size, mtime) in depth-first
//! order, made when the snapshot is written (after a backup) or first searched. Like the
//! snapshots and the blob cache beside it, it is kept **sealed** with the repository's key, so
//! the catalog holds no plaintext names. It is only a cache: it is derived from the
//! repository's trees, dropped with its snapshot, made again when it is missing or cannot be
//! read, and a catalog rebuilt from the repository simply starts without indexes.
//!
//! The index plaintext (local to this machine, not part of the repository format):
//! `"CRNF" 0x01` then one zstd frame of `count` and, per entry, `shared` (bytes of the path in
//! common with the previous entry), `suffix_len`, the suffix bytes, the kind byte, `size`,
//! `mtime seconds` (zigzag) and `mtime nanoseconds`, every integer a LEB128 varint. Paths are
//! relative to the snapshot's root, names joined by `/`.

use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rayon::prelude::*;

use super::walk::{Step, TreeWalk};
use crate::error::{Error, Result};
use crate::format::Timestamp;
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use crate::id::Id;
use crate::repo::Repository;
use crate::source::mysql::decode_name;

const MAGIC: &[u8] = b"CRNF";
const VERSION: u8 = 1;
/// At most this many entries are accepted from an index (a tree of a hundred million entries
/// is far beyond anything cairn writes); a larger count is a damaged index.
const MAX_ENTRIES: u64 = 100_000_000;
/// Decompressed indexes larger than this are refused (damaged or not ours).
const MAX_PLAIN: usize = 16 << 30;

/// One entry of a snapshot's tree, as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Relative to the snapshot's root, names joined by `/`.
    pub path: Vec<u8>,
    pub kind: NodeKind,
    pub size: u64,
    pub mtime: Timestamp,
}

fn kind_byte(k: NodeKind) -> u8 {
    match k {
        NodeKind::File => 0,
        NodeKind::Dir => 1,
        NodeKind::Symlink => 2,
        NodeKind::Fifo => 3,
        NodeKind::CharDev => 4,
        NodeKind::BlockDev => 5,
        NodeKind::Socket => 6,
    }
}

fn kind_of(b: u8) -> Option<NodeKind> {
    Some(match b {
        0 => NodeKind::File,
        1 => NodeKind::Dir,
        2 => NodeKind::Symlink,
        3 => NodeKind::Fifo,
        4 => NodeKind::CharDev,
        5 => NodeKind::BlockDev,
        6 => NodeKind::Socket,
        _ => return None,
    })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The index plaintext of these entries (in the order given).
pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.len() * 24);
    put_varint(&mut body, entries.len() as u64);
    let mut prev: &[u8] = &[];
    for e in entries {
        let shared = prev.iter().zip(&e.path).take_while(|(a, b)| a == b).count();
        put_varint(&mut body, shared as u64);
        put_varint(&mut body, (e.path.len() - shared) as u64);
        body.extend_from_slice(&e.path[shared..]);
        body.push(kind_byte(e.kind));
        put_varint(&mut body, e.size);
        let s = e.mtime.secs;
        put_varint(&mut body, ((s << 1) ^ (s >> 63)) as u64);
        put_varint(&mut body, e.mtime.nanos as u64);
        prev = &e.path;
    }
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    out.extend(zstd::bulk::compress(&body, 3).expect("zstd compresses into a growable buffer"));
    out
}

/// Call `f` with each entry of an index plaintext, the path borrowed; returns the count.
pub fn decode_index(
    plain: &[u8],
    mut f: impl FnMut(&[u8], NodeKind, u64, Timestamp),
) -> Result<u64> {
    let bad = |why: &str| Error::corrupt("file index", why.to_string());
    if plain.len() < 5 || &plain[..4] != MAGIC {
        return Err(bad("no index header"));
    }
    if plain[4] != VERSION {
        return Err(Error::UnsupportedVersion {
            object: "file index".into(),
            version: plain[4],
        });
    }
    let mut body = Vec::new();
    let mut dec = zstd::stream::read::Decoder::new(&plain[5..]).map_err(|e| bad(&e.to_string()))?;
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&mut dec, MAX_PLAIN as u64 + 1),
        &mut body,
    )
    .map_err(|e| bad(&e.to_string()))?;
    if body.len() > MAX_PLAIN {
        return Err(bad("too large"));
    }
    let mut at = 0;
    let count = get_varint(&body, &mut at).ok_or_else(|| bad("truncated"))?;
    if count > MAX_ENTRIES {
        return Err(bad("too many entries"));
    }
    let mut path: Vec<u8> = Vec::new();
    for _ in 0..count {
        let shared = get_varint(&body, &mut at).ok_or_else(|| bad("truncated"))? as usize;
        let len = get_varint(&body, &mut at).ok_or_else(|| bad("truncated"))? as usize;
        if shared > path.len() || len > body.len().saturating_sub(at) {
            return Err(bad("entry out of bounds"));
        }
        path.truncate(shared);
        path.extend_from_slice(&body[at..at + len]);
        at += len;
        let kind = body
            .get(at)
            .copied()
            .and_then(kind_of)
            .ok_or_else(|| bad("unknown entry type"))?;
        at += 1;
        let size = get_varint(&body, &mut at).ok_or_else(|| bad("truncated"))?;
        let zz = get_varint(&body, &mut at).ok_or_else(|| bad("truncated"))?;
        let secs = ((zz >> 1) as i64) ^ -((zz & 1) as i64);
        let nanos = get_varint(&body, &mut at).ok_or_else(|| bad("truncated"))?;
        if nanos >= 1_000_000_000 {
            return Err(bad("mtime out of range"));
        }
        f(&path, kind, size, Timestamp::new(secs, nanos as u32));
    }
    if at != body.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(count)
}

fn seal_ad(snapshot: &Id) -> Vec<u8> {
    let mut ad = b"cairn file index ".to_vec();
    ad.extend_from_slice(&snapshot.0);
    ad
}

/// Every entry of a snapshot's tree in depth-first name order (a directory before what it
/// holds), read through the repository (and so its tree cache).
pub async fn snapshot_entries(repo: &Repository, snap: &Snapshot) -> Result<Vec<IndexEntry>> {
    let mut out = Vec::new();
    let mut walk = TreeWalk::new(snap.tree);
    while let Some(step) = walk.step(repo, |_, _| false).await {
        let Step::Enter(e) = step else { continue };
        let tree = e.tree?;
        for n in &tree.nodes {
            let mut path = Vec::with_capacity(e.path.len() + 1 + n.name.len());
            if !e.path.is_empty() {
                path.extend_from_slice(e.path);
                path.push(b'/');
            }
            path.extend_from_slice(&n.name);
            out.push(IndexEntry {
                path,
                kind: n.kind,
                size: n.size,
                mtime: n.mtime,
            });
        }
    }
    out.sort_by(|a, b| {
        a.path
            .split(|&c| c == b'/')
            .cmp(b.path.split(|&c| c == b'/'))
    });
    Ok(out)
}

/// Make and store a snapshot's index; returns its entry count.
pub async fn index_snapshot(repo: &Repository, id: &Id, snap: &Snapshot) -> Result<u64> {
    let entries = snapshot_entries(repo, snap).await?;
    let sealed = repo
        .keys()
        .sealer()
        .seal(&seal_ad(id), &encode_index(&entries));
    repo.catalog()
        .put_file_index(id, entries.len() as u64, &sealed)?;
    Ok(entries.len() as u64)
}

/// Index a snapshot just written; a failure is only a warning (the next search indexes it).
pub async fn index_new_snapshot(repo: &Repository, id: &Id, snap: &Snapshot) {
    if let Err(e) = index_snapshot(repo, id, snap).await {
        tracing::warn!(
            "could not index snapshot {} for `cairn find` ({e}); the next search will",
            id.short()
        );
    }
}

/// What to look for.
#[derive(Debug, Clone, Default)]
pub struct FindOptions {
    /// Globs: on the entry's name, or on its path when the pattern holds a `/` (then `*` does
    /// not cross a `/`, `**` does; a leading `/` anchors it at the snapshot's root, else it
    /// may match the path's end at any depth). A database table also matches by its name.
    pub patterns: Vec<String>,
    pub ignore_case: bool,
}

/// One entry that matched.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Match {
    pub snapshot: Id,
    /// `/`-rooted path in the snapshot.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    pub size: u64,
    pub mtime: Timestamp,
    /// For a database snapshot's table file: `db.table`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

/// The result of a search.
#[derive(Debug, Default)]
pub struct FindOutcome {
    /// In the order of the snapshots given, each snapshot's matches in path order.
    pub matches: Vec<Match>,
    pub searched: usize,
    /// Snapshots that had no index yet and were indexed by this search.
    pub indexed: usize,
    /// Snapshots that could not be searched, with why.
    pub errors: Vec<(Id, Error)>,
}

struct Matcher {
    names: GlobSet,
    paths: GlobSet,
}

impl Matcher {
    fn new(o: &FindOptions) -> Result<Matcher> {
        if o.patterns.is_empty() {
            return Err(Error::invalid("find: give at least one pattern"));
        }
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in &o.patterns {
            let is_path = p.contains('/');
            // `/a/*/b` is anchored at the snapshot's root; `a/*/b` may start at any depth.
            let pat = match p.strip_prefix('/') {
                Some(rooted) => rooted.trim_start_matches('/').to_string(),
                None if is_path => format!("{{{p},**/{p}}}"),
                None => p.clone(),
            };
            let glob = GlobBuilder::new(&pat)
                .case_insensitive(o.ignore_case)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::invalid(format!("pattern {p:?}: {e}")))?;
            if is_path {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let built = |b: GlobSetBuilder| b.build().map_err(|e| Error::invalid(e.to_string()));
        Ok(Matcher {
            names: built(names)?,
            paths: built(paths)?,
        })
    }

    fn matches(&self, path: &[u8], table: Option<&str>) -> bool {
        let name = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
        (!self.names.is_empty()
            && (self.names.is_match(bytes_path(name))
                || table.is_some_and(|t| self.names.is_match(t))))
            || (!self.paths.is_empty() && self.paths.is_match(bytes_path(path)))
    }
}

fn bytes_path(b: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(b))
}

/// For `mysql/<db>/<table>.sql` in a database snapshot: the table's name and `db.table`.
fn table_of(path: &[u8]) -> Option<(String, String)> {
    let s = std::str::from_utf8(path).ok()?;
    let mut parts = s.split('/');
    let (top, db, file) = (parts.next()?, parts.next()?, parts.next()?);
    if top != "mysql" || parts.next().is_some() || file == "_schema.sql" {
        return None;
    }
    let table = decode_name(file.strip_suffix(".sql")?);
    Some((table.clone(), format!("{}.{table}", decode_name(db))))
}

/// Search `snaps` (indexing those that have no index yet).
pub async fn find(
    repo: &Arc<Repository>,
    snaps: &[(Id, Snapshot)],
    opts: &FindOptions,
) -> Result<FindOutcome> {
    let matcher = Matcher::new(opts)?;
    let mut out = FindOutcome::default();
    let mut sealed: Vec<(usize, Vec<u8>)> = Vec::with_capacity(snaps.len());
    for (i, (id, snap)) in snaps.iter().enumerate() {
        let have = repo.catalog().file_index(id)?;
        let data = match have {
            Some(d) => d,
            None => match index_snapshot(repo, id, snap).await {
                Ok(_) => {
                    out.indexed += 1;
                    match repo.catalog().file_index(id)? {
                        Some(d) => d,
                        None => continue,
                    }
                }
                Err(e) => {
                    out.errors.push((*id, e));
                    continue;
                }
            },
        };
        sealed.push((i, data));
    }
    let sealer = repo.keys().sealer();
    let results: Vec<(usize, Result<Vec<Match>>)> = sealed
        .par_iter()
        .map(|(i, data)| {
            let (id, snap) = &snaps[*i];
            let r = sealer
                .open(&seal_ad(id), data)
                .map_err(|_| {
                    Error::corrupt(
                        format!("file index of snapshot {}", id.short()),
                        "does not open with the repository's key",
                    )
                })
                .and_then(|plain| search_one(&plain, id, snap, &matcher));
            (*i, r)
        })
        .collect();
    for (i, r) in results {
        let (id, snap) = &snaps[i];
        match r {
            Ok(m) => {
                out.searched += 1;
                out.matches.extend(m);
            }
            Err(e) => {
                // A damaged cache entry: drop it and search the trees instead.
                tracing::warn!("{e}; indexing snapshot {} again", id.short());
                repo.catalog().remove_file_index(id)?;
                let redone = async {
                    index_snapshot(repo, id, snap).await?;
                    let data = repo.catalog().file_index(id)?.unwrap_or_default();
                    let plain = sealer
                        .open(&seal_ad(id), &data)
                        .map_err(|_| Error::corrupt("file index", "just written, unreadable"))?;
                    search_one(&plain, id, snap, &matcher)
                };
                match redone.await {
                    Ok(m) => {
                        out.searched += 1;
                        out.indexed += 1;
                        out.matches.extend(m);
                    }
                    Err(e) => out.errors.push((*id, e)),
                }
            }
        }
    }
    // Keep the snapshots' order (the parallel search may finish them in any order).
    let order: std::collections::HashMap<Id, usize> = snaps
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    out.matches.sort_by_key(|m| order.get(&m.snapshot).copied());
    Ok(out)
}

fn search_one(plain: &[u8], id: &Id, snap: &Snapshot, matcher: &Matcher) -> Result<Vec<Match>> {
    let database = snap.source == super::mysql::SOURCE;
    let mut found = Vec::new();
    decode_index(plain, |path, kind, size, mtime| {
        let table = if database && kind == NodeKind::File {
            table_of(path)
        } else {
            None
        };
        if matcher.matches(path, table.as_ref().map(|t| t.0.as_str())) {
            found.push(Match {
                snapshot: *id,
                path: format!("/{}", String::from_utf8_lossy(path)),
                kind,
                size,
                mtime,
                table: table.map(|t| t.1),
            });
        }
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: NodeKind, size: u64, secs: i64, nanos: u32) -> IndexEntry {
        IndexEntry {
            path: path.as_bytes().to_vec(),
            kind,
            size,
            mtime: Timestamp::new(secs, nanos),
        }
    }

    fn sample() -> Vec<IndexEntry> {
        vec![
            entry("etc", NodeKind::Dir, 0, 1_700_000_000, 5),
            entry("etc/hosts", NodeKind::File, 120, 1_700_000_001, 999_999_999),
            entry("etc/hosts.d", NodeKind::Symlink, 7, -86_400, 0),
            entry("var/log/syslog", NodeKind::File, u64::MAX, i64::MIN, 1),
            entry("\u{e9}t\u{e9}", NodeKind::Fifo, 0, i64::MAX, 0),
        ]
    }

    fn decoded(plain: &[u8]) -> Result<Vec<IndexEntry>> {
        let mut v = Vec::new();
        decode_index(plain, |p, kind, size, mtime| {
            v.push(IndexEntry {
                path: p.to_vec(),
                kind,
                size,
                mtime,
            })
        })?;
        Ok(v)
    }

    #[test]
    fn an_index_decodes_to_what_was_encoded() {
        let e = sample();
        assert_eq!(decoded(&encode_index(&e)).unwrap(), e);
        assert_eq!(decoded(&encode_index(&[])).unwrap(), vec![]);
    }

    #[test]
    fn a_damaged_index_is_an_error_never_a_panic() {
        let plain = encode_index(&sample());
        for cut in 0..plain.len() {
            assert!(decoded(&plain[..cut]).is_err(), "cut at {cut}");
        }
        let mut v = plain.clone();
        v[4] = 9;
        assert!(matches!(decoded(&v), Err(Error::UnsupportedVersion { .. })));
        // A body whose entry reaches past its end, or shares more than the previous path.
        for body in [vec![1u8, 0, 200, b'a'], vec![1u8, 3, 1, b'a', 0, 0, 0, 0]] {
            let mut p = MAGIC.to_vec();
            p.push(VERSION);
            p.extend(zstd::bulk::compress(&body, 1).unwrap());
            assert!(decoded(&p).is_err());
        }
    }

    #[test]
    fn patterns_match_names_paths_and_tables() {
        let m = |pats: &[&str], ci: bool| {
            Matcher::new(&FindOptions {
                patterns: pats.iter().map(|s| s.to_string()).collect(),
                ignore_case: ci,
            })
            .unwrap()
        };
        let names = m(&["*.pdf"], false);
        assert!(names.matches(b"home/a/invoice-2291.pdf", None));
        assert!(!names.matches(b"home/a/invoice.PDF", None));
        assert!(m(&["*.pdf"], true).matches(b"home/a/invoice.PDF", None));
        let path = m(&["/home/*/invoice*"], false);
        assert!(path.matches(b"home/a/invoice-1.pdf", None));
        assert!(!path.matches(b"home/a/b/invoice-1.pdf", None));
        assert!(!path.matches(b"invoice-1.pdf", None));
        assert!(
            !path.matches(b"srv/home/a/invoice-1.pdf", None),
            "a leading / anchors"
        );
        let tail = m(&["a/invoice*"], false);
        assert!(tail.matches(b"srv/home/a/invoice-1.pdf", None));
        assert!(tail.matches(b"a/invoice-1.pdf", None));
        assert!(!tail.matches(b"srv/home/ba/invoice-1.pdf", None));
        assert!(m(&["home/**/x"], false).matches(b"home/a/b/x", None));
        assert!(m(&["orders"], false).matches(b"mysql/shop/orders.sql", Some("orders")));
        assert!(!m(&["orders"], false).matches(b"mysql/shop/orders.sql", None));
        assert_eq!(
            table_of(b"mysql/shop/ord%2Fers.sql"),
            Some(("ord/ers".into(), "shop.ord/ers".into()))
        );
        assert_eq!(table_of(b"mysql/shop/_schema.sql"), None);
        assert!(Matcher::new(&FindOptions::default()).is_err());
        assert!(
            Matcher::new(&FindOptions {
                patterns: vec!["a[".into()],
                ignore_case: false
            })
            .is_err()
        );
    }
}
