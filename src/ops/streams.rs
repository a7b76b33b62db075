//! Backup of several named streams into one snapshot (DESIGN.md §4, §9): the entry point for
//! sources that are not file trees, such as a database dump split table by table.
//!
//! A *producer* runs on a blocking thread with a [`StreamWriter`]: it chunks and stores as many
//! streams as it likes (straight from a pipe, nothing is staged on disk), composes files from
//! their extents (a file may be the concatenation of several stored streams, so a shared
//! preamble is stored once) and returns the files with their paths and any snapshot metadata.
//! Then the directory trees are written and the snapshot is committed, exactly as for a file
//! backup: packs and index first, the snapshot object last. If the producer fails, no snapshot
//! is written.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::backup::{BackupOptions, BackupOutcome, JobError, Session, new_snapshot, save_tree};
use super::progress::Progress;
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::format::Timestamp;
use crate::format::pack::BlobKind;
use crate::format::tree::{Extent, Node, NodeKind, valid_name};
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::lease::LeaseHandle;
use crate::repo::packer::{BlobSink, DeltaBase, delta_chain_limit};
use crate::source::fs::NameCache;

/// One file of a stream snapshot: its path components and its contents.
#[derive(Debug, Clone)]
pub struct StreamFile {
    pub path: Vec<String>,
    pub content: Vec<Extent>,
    pub size: u64,
}

/// What a producer hands back: the files (any order, paths unique) and snapshot metadata.
#[derive(Debug, Default)]
pub struct Produced {
    pub files: Vec<StreamFile>,
    pub meta: Vec<(String, String)>,
}

/// Stores streams for a producer.
pub struct StreamWriter<'a> {
    sink: &'a BlobSink,
    chunker: &'a Chunker,
    progress: &'a Progress,
    /// The parent snapshot's files by path (`/a/b`): what changed chunks are compressed against.
    previous: &'a HashMap<String, Node>,
    runtime: tokio::runtime::Handle,
    bases: BaseCache,
}

impl StreamWriter<'_> {
    /// Chunk and store a stream that is the new version of the parent snapshot's file at
    /// `path`: a new chunk is stored as a delta against the chunk it replaces (the previous
    /// version's chunk at the same place), when that is much smaller (format-spec/pack.md §3).
    /// A night's few changed rows then cost about their own size, not a chunk each.
    pub fn store_like<R: Read>(&self, reader: R, path: &[String]) -> Result<(Vec<Extent>, u64)> {
        let Some(prev) = self.previous.get(&format!("/{}", path.join("/"))) else {
            return self.store(reader);
        };
        let mut reference = Reference::new(&prev.content);
        let keys = self.sink.repo().keys().clone();
        let mut offset = 0u64;
        let stored = super::backup::chunk_stream(self.chunker, reader, 0, self.progress, |batch| {
            let ids: Vec<Id> = batch.par_iter().map(|c| keys.blob_id(c)).collect();
            let mut candidates = Vec::with_capacity(batch.len());
            for (c, id) in batch.iter().zip(&ids) {
                candidates.push(reference.candidate(id, offset, c.len() as u64));
                offset += c.len() as u64;
            }
            batch
                .par_iter()
                .zip(&ids)
                .zip(&candidates)
                .map(|((chunk, id), cand)| self.save_chunk(chunk, *id, *cand))
                .collect::<Result<Vec<()>>>()?;
            Ok(ids)
        });
        stored.map_err(stream_error)
    }

    /// Store one chunk unless it is stored already, as a delta against `candidate` (itself
    /// perhaps a delta) when it can be read and that pays.
    fn save_chunk(&self, chunk: &[u8], id: Id, candidate: Option<Id>) -> Result<()> {
        let sink = self.sink;
        if !sink.claim(&id, BlobKind::Data)? {
            return Ok(());
        }
        let repo = sink.repo();
        // Only against a base in a pack that is not condemned, as for dedup: a prune may be
        // about to delete the others.
        let base = match candidate {
            Some(c) if c != id && repo.has_blob(&c, BlobKind::Data)? => c,
            _ => {
                tracing::trace!("chunk {id}: {} bytes, no base", chunk.len());
                return sink.add_claimed(BlobKind::Data, id, chunk);
            }
        };
        let read = |base: Id| -> Result<CachedBase> {
            if let Some(hit) = self.bases.get(&base) {
                return Ok(hit);
            }
            let (plain, root, depth) = self.runtime.block_on(repo.read_blob_with_root(&base))?;
            Ok(self.bases.put(CachedBase {
                id: base,
                plain: Arc::new(plain),
                depth,
                root,
            }))
        };
        let base = match read(base) {
            Ok(hit) => hit,
            Err(e) => {
                tracing::warn!("chunk {id}: base {base} unreadable ({e}); storing it whole");
                return sink.add_claimed(BlobKind::Data, id, chunk);
            }
        };
        // The root is needed only when the chunk would make the base's chain too long.
        let root = match base.depth >= delta_chain_limit(&base.root) {
            true if repo.has_blob(&base.root, BlobKind::Data)? => match read(base.root) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!("chunk {id}: root {} unreadable ({e})", base.root);
                    None
                }
            },
            _ => None,
        };
        let delta_base = DeltaBase {
            id: base.id,
            plain: &base.plain,
            depth: base.depth,
            root: base.root,
        };
        let root_plain = root.as_ref().map(|r| r.plain.as_slice());
        sink.add_claimed_delta(id, chunk, delta_base, root_plain)
            .map(|_| ())
    }

    /// Chunk and store a stream; returns its extents and length. A failure to read the stream
    /// is an error like any other: the caller decides whether the backup goes on.
    pub fn store<R: Read>(&self, reader: R) -> Result<(Vec<Extent>, u64)> {
        super::backup::store_stream(self.sink, self.chunker, reader, 0, self.progress)
            .map_err(stream_error)
    }

    /// Store bytes held in memory.
    pub fn store_bytes(&self, data: &[u8]) -> Result<(Vec<Extent>, u64)> {
        self.store(data)
    }
}

/// A producer's stream that could not be read is an error like any other.
fn stream_error(e: JobError) -> Error {
    match e {
        JobError::Source(p) => p.into_error("the stream"),
        JobError::Fatal(e) => e,
    }
}

/// The previous version of a stream, for choosing delta bases: the chunk a new chunk most
/// likely replaces is the one that overlaps most with the same place, where places are lined
/// up again at every chunk the two versions share. (Overlap, not the chunk at the new chunk's
/// start: with no shared chunk for a while, places drift by the bytes changed rows gained or
/// lost, and the previous file may start with a short preamble the new stream lacks.)
struct Reference {
    /// Start, end and id of each data chunk of the previous version, by offset.
    chunks: Vec<(u64, u64, Id)>,
    /// Where each previous chunk starts.
    at: HashMap<Id, u64>,
    /// Previous offset minus new offset, as of the last shared chunk.
    shift: i128,
}

impl Reference {
    fn new(content: &[Extent]) -> Reference {
        let (mut chunks, mut at, mut off) = (Vec::new(), HashMap::new(), 0u64);
        for e in content {
            if let Extent::Data { id, .. } = e {
                chunks.push((off, off + e.len(), *id));
                at.entry(*id).or_insert(off);
            }
            off += e.len();
        }
        Reference {
            chunks,
            at,
            shift: 0,
        }
    }

    /// The previous chunk to compress the new chunk `id` (`len` bytes at `offset`) against.
    fn candidate(&mut self, id: &Id, offset: u64, len: u64) -> Option<Id> {
        if let Some(&prev) = self.at.get(id) {
            self.shift = prev as i128 - offset as i128;
            return None;
        }
        let start = u64::try_from(offset as i128 + self.shift).ok()?;
        let end = start + len;
        let overlap = |c: &(u64, u64, Id)| c.1.min(end).saturating_sub(c.0.max(start));
        let first = self.chunks.partition_point(|c| c.1 <= start);
        self.chunks[first..]
            .iter()
            .take_while(|c| c.0 < end)
            .max_by_key(|c| overlap(c))
            .map(|c| c.2)
    }
}

/// The last few bases read, shared by the threads storing one stream (neighbouring new chunks
/// often replace the same old one).
#[derive(Default)]
struct BaseCache(std::sync::Mutex<Vec<CachedBase>>);

/// A base read: its id, plaintext, how many deltas reading it opens, and its chain's root.
#[derive(Clone)]
struct CachedBase {
    id: Id,
    plain: Arc<Vec<u8>>,
    depth: usize,
    root: Id,
}

impl BaseCache {
    const KEEP: usize = 8;

    fn get(&self, id: &Id) -> Option<CachedBase> {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.iter().find(|b| b.id == *id).cloned()
    }

    fn put(&self, base: CachedBase) -> CachedBase {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() >= Self::KEEP {
            v.remove(0);
        }
        v.push(base.clone());
        base
    }
}

/// Back up the streams a producer stores as one snapshot with the given source kind and paths.
/// `chunker` cuts every stream (for dumps: a line-aligned one).
pub async fn backup_streams<F>(
    repo: &Arc<Repository>,
    opts: &BackupOptions,
    source: &str,
    paths: Vec<String>,
    chunker: Chunker,
    produce: F,
) -> Result<BackupOutcome>
where
    F: FnOnce(&StreamWriter) -> Result<Produced> + Send + 'static,
{
    repo.with_lease(
        super::backup::lease_mode(opts),
        "backup",
        opts.lease_wait,
        |lease| backup_streams_leased(repo, opts, source, paths, chunker, produce, lease),
    )
    .await
}

async fn backup_streams_leased<F>(
    repo: &Arc<Repository>,
    opts: &BackupOptions,
    source: &str,
    paths: Vec<String>,
    chunker: Chunker,
    produce: F,
    lease: LeaseHandle,
) -> Result<BackupOutcome>
where
    F: FnOnce(&StreamWriter) -> Result<Produced> + Send + 'static,
{
    let mut snap = new_snapshot(repo, opts, paths.clone(), source);
    let parent = repo
        .snapshots()?
        .into_iter()
        .rfind(|(_, s)| s.host == snap.host && s.paths == paths && s.source == source);
    snap.parent = parent.as_ref().map(|(id, _)| *id);
    // The parent's files, so an unchanged stream keeps the time it last changed (and an
    // unchanged directory its tree blob).
    let mut previous = HashMap::new();
    if let Some((id, p)) = &parent {
        match super::read::walk(repo, &super::read::Resolved::Root(p.tree), "").await {
            Ok(nodes) => {
                previous = nodes
                    .into_iter()
                    .filter(|(_, n)| n.kind == NodeKind::File)
                    .collect();
            }
            Err(e) => tracing::warn!("parent snapshot {id}: {e}; every stream is new"),
        }
    }
    let session = Session::start(repo, opts)?;
    let sink = session.sink.clone();
    let progress = opts.progress.clone().unwrap_or_default();
    let time = snap.time;
    let job = tokio::task::spawn_blocking(move || -> Result<(Id, Produced, u64, u64)> {
        let writer = StreamWriter {
            sink: &sink,
            chunker: &chunker,
            progress: &progress,
            previous: &previous,
            runtime: tokio::runtime::Handle::current(),
            bases: BaseCache::default(),
        };
        let mut produced = produce(&writer)?;
        let deltas = sink.stats.delta_blobs.load(Ordering::Relaxed);
        if deltas > 0 {
            produced
                .meta
                .push(("delta_blobs".into(), deltas.to_string()));
        }
        let (root, dirs) = build_tree(&sink, &mut produced.files, time, &previous)?;
        let bytes = produced.files.iter().map(|f| f.size).sum();
        Ok((root, produced, dirs, bytes))
    });
    let result = match job.await {
        Ok(r) => r,
        Err(e) => Err(Error::Other(format!("stream backup task: {e}"))),
    };
    let (root, produced, dirs, bytes) = match result {
        Ok(r) => r,
        Err(e) => return Err(session.abandon(e).await),
    };
    snap.tree = root;
    snap.meta = produced.meta;
    snap.summary.total_files = produced.files.len() as u64;
    snap.summary.files_new = produced.files.len() as u64;
    snap.summary.total_bytes = bytes;
    snap.summary.bytes_read = bytes;
    snap.summary.dirs = dirs;
    session
        .commit(repo, snap, opts.dry_run, Vec::new(), &lease)
        .await
}

/// A directory being assembled: files and subdirectories by name.
#[derive(Default)]
struct Dir {
    files: BTreeMap<Vec<u8>, Node>,
    dirs: BTreeMap<Vec<u8>, Dir>,
}

/// Write the trees holding `files`; returns the root tree and the number of directories.
/// A file whose contents equal its `previous` node (by path) keeps that node's times; a
/// directory takes the latest time of its entries. So nothing changes in an unchanged tree.
fn build_tree(
    sink: &BlobSink,
    files: &mut [StreamFile],
    time: Timestamp,
    previous: &HashMap<String, Node>,
) -> Result<(Id, u64)> {
    let cache = NameCache::default();
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let stamp = |n: &mut Node, mode: u32| {
        n.mode = mode;
        n.uid = uid;
        n.gid = gid;
        n.user = cache.user(uid);
        n.group = cache.group(gid);
        n.mtime = time;
        n.atime = time;
        n.ctime = time;
    };
    let mut root = Dir::default();
    for f in files.iter_mut() {
        let shown = f.path.join("/");
        let Some((name, dirs)) = f.path.split_last() else {
            return Err(Error::invalid("a stream file with an empty path"));
        };
        if f.path.iter().any(|c| !valid_name(c.as_bytes())) {
            return Err(Error::invalid(format!(
                "{shown:?} is not a valid path for a stream"
            )));
        }
        let mut d = &mut root;
        for c in dirs {
            if d.files.contains_key(c.as_bytes()) {
                return Err(Error::invalid(format!("{shown:?}: {c} is a file")));
            }
            d = d.dirs.entry(c.as_bytes().to_vec()).or_default();
        }
        if d.dirs.contains_key(name.as_bytes()) || d.files.contains_key(name.as_bytes()) {
            return Err(Error::invalid(format!("{shown:?} appears twice")));
        }
        let mut node = Node::new(name.as_bytes().to_vec(), NodeKind::File);
        stamp(&mut node, 0o600);
        node.links = 1;
        node.size = f.size;
        node.content = std::mem::take(&mut f.content);
        if let Some(p) = previous.get(&format!("/{shown}"))
            && p.content == node.content
            && p.size == node.size
        {
            node.mtime = p.mtime;
            node.atime = p.atime;
            node.ctime = p.ctime;
        }
        d.files.insert(name.as_bytes().to_vec(), node);
    }
    fn save(
        sink: &BlobSink,
        dir: Dir,
        stamp: &dyn Fn(&mut Node, u32),
        count: &mut u64,
    ) -> Result<(Id, Option<Timestamp>)> {
        let mut nodes: Vec<Node> = dir.files.into_values().collect();
        for (name, sub) in dir.dirs {
            let (id, latest) = save(sink, sub, stamp, count)?;
            let mut n = Node::new(name, NodeKind::Dir);
            stamp(&mut n, 0o700);
            if let Some(t) = latest {
                (n.mtime, n.atime, n.ctime) = (t, t, t);
            }
            n.subtree = Some(id);
            nodes.push(n);
            *count += 1;
        }
        let latest = nodes.iter().map(|n| n.mtime).max();
        Ok((save_tree(sink, nodes)?, latest))
    }
    let mut count = 0;
    let (id, _) = save(sink, root, &stamp, &mut count)?;
    Ok((id, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(b: u8, len: u32) -> Extent {
        Extent::Data {
            id: Id([b; 32]),
            len,
        }
    }

    #[test]
    fn candidates_overlap_most_and_realign_at_shared_chunks() {
        // The previous file: a 600-byte preamble, then chunks 1..=4 of 10,000 bytes each.
        let prev = [
            data(9, 600),
            data(1, 10_000),
            data(2, 10_000),
            data(3, 10_000),
            data(4, 10_000),
        ];
        let mut r = Reference::new(&prev);
        // The new stream lacks the preamble and each changed chunk grew by 5 bytes: with no
        // shared chunk yet, a new chunk still maps to the old chunk it overlaps most.
        let c = |b: u8| Some(Id([b; 32]));
        assert_eq!(r.candidate(&Id([11; 32]), 0, 10_005), c(1));
        assert_eq!(r.candidate(&Id([12; 32]), 10_005, 10_005), c(2));
        // A shared chunk (3, unchanged) lines places up again.
        assert_eq!(r.candidate(&Id([3; 32]), 20_010, 10_000), None);
        assert_eq!(r.shift, 20_600 - 20_010);
        assert_eq!(r.candidate(&Id([14; 32]), 30_010, 12_000), c(4));
        // Past the end of the previous version (rows appended): nothing to compare with.
        assert_eq!(r.candidate(&Id([15; 32]), 42_010, 5_000), None);
        // A previous version with no data has no candidates.
        let mut empty = Reference::new(&[]);
        assert_eq!(empty.candidate(&Id([1; 32]), 0, 100), None);
    }
}
