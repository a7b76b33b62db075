//! The walker: lists directories in name order, compares entries with the parent snapshot,
//! and hands files to the readers.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use tokio::runtime::Handle;

use super::readers::{Budget, Opened, Readers, read_file};
use super::{
    BATCH_BYTES, BackupOptions, Counters, EVENT_BATCH, Event, INFLIGHT_FILES, Pending,
    SourceProblem,
};
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::format::tree::{Extent, Node, NodeKind, Tree};
use crate::ops::progress::Progress;
use crate::repo::packer::BlobSink;
use crate::source::exclude::Excluder;
use crate::source::fs::{NameCache, node_from_meta, node_from_meta_with, open_files_limit};

/// Threads reading metadata (see `Walker::io`), and files when the walker cannot open them
/// ahead (see [`reader_threads`]).
const IO_THREADS: usize = 8;

/// How many reader threads: when the walker opens files ahead, the kernel is already reading
/// them, so a reader seldom waits and one per core plus a spare keeps the cores busy; more only
/// compete for them and each holds buffers and compression state (8 readers instead of 3 on 2
/// cores: no faster, 10 MiB more peak RSS). Otherwise every small file is a synchronous read,
/// and more threads keep more reads in flight.
fn reader_threads(open_ahead: bool) -> usize {
    if open_ahead {
        std::thread::available_parallelism().map_or(2, |n| n.get()) + 1
    } else {
        IO_THREADS
    }
}

/// The paths to back up arranged as a tree of path components: inner components are
/// directories on the way, leaves are walked in full.
pub(super) enum Target {
    Leaf(PathBuf),
    Inner(PathBuf, BTreeMap<Vec<u8>, Target>),
}

pub(super) fn normalize(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

pub(super) fn build_targets(paths: &[PathBuf]) -> Target {
    let mut root = Target::Inner(PathBuf::from("/"), BTreeMap::new());
    for p in paths {
        if p == Path::new("/") {
            return Target::Leaf(p.clone());
        }
        let mut cur = &mut root;
        let comps: Vec<_> = p
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let mut sofar = PathBuf::from("/");
        for (i, c) in comps.iter().enumerate() {
            sofar.push(c);
            let Target::Inner(_, children) = cur else {
                break;
            };
            let name = c.as_os_str().as_bytes().to_vec();
            let last = i + 1 == comps.len();
            let entry = children.entry(name).or_insert_with(|| {
                if last {
                    Target::Leaf(sofar.clone())
                } else {
                    Target::Inner(sofar.clone(), BTreeMap::new())
                }
            });
            if last {
                *entry = Target::Leaf(sofar.clone());
            }
            cur = entry;
        }
    }
    root
}

pub(super) struct Walker {
    sink: Arc<BlobSink>,
    /// Threads for reading the metadata of large directories: latency-bound on a cold cache,
    /// so more threads than cores.
    io: Arc<rayon::ThreadPool>,
    /// Threads reading files.
    readers: Readers,
    /// Whether to open files for the readers ahead of time ([`Opened::ahead`]): only if the
    /// limit on open files leaves room for all the files in flight several times over.
    open_ahead: bool,
    chunker: Arc<Chunker>,
    handle: Handle,
    excluder: Excluder,
    one_file_system: bool,
    force: bool,
    with_atime: bool,
    names: NameCache,
    events: SyncSender<Vec<Event>>,
    /// Events not yet sent: they go to the assembler in batches (one channel operation, and at
    /// most one wake-up, per batch rather than per entry).
    batch: Vec<Event>,
    budget: Arc<Budget>,
    errors: Arc<Mutex<Vec<SourceProblem>>>,
    counters: Counters,
    progress: Arc<Progress>,
}

/// The walker lost its consumer (the assembler failed); stop quietly.
pub(super) struct Stop;

impl Walker {
    pub(super) fn new(
        sink: Arc<BlobSink>,
        chunker: Arc<Chunker>,
        excluder: Excluder,
        opts: &BackupOptions,
        events: SyncSender<Vec<Event>>,
        errors: Arc<Mutex<Vec<SourceProblem>>>,
        progress: Arc<Progress>,
    ) -> Result<Walker> {
        let io = rayon::ThreadPoolBuilder::new()
            .num_threads(IO_THREADS)
            .thread_name(|i| format!("cairn-io-{i}"))
            .build()
            .map_err(|e| Error::Other(format!("starting I/O threads: {e}")))?;
        let open_ahead = open_files_limit() >= 4 * INFLIGHT_FILES;
        Ok(Walker {
            sink,
            io: Arc::new(io),
            readers: Readers::start(reader_threads(open_ahead))?,
            open_ahead,
            chunker,
            handle: Handle::current(),
            excluder,
            one_file_system: opts.one_file_system,
            force: opts.force,
            with_atime: opts.with_atime,
            names: NameCache::default(),
            events,
            batch: Vec::with_capacity(EVENT_BATCH),
            budget: Budget::new(),
            errors,
            counters: Counters::default(),
            progress,
        })
    }

    fn problem(&self, p: SourceProblem) {
        tracing::warn!("{p}");
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(p);
    }

    fn error(&self, path: &Path, e: &std::io::Error) {
        self.problem(SourceProblem::io(path, e));
    }

    fn send(&mut self, e: Event) -> std::result::Result<(), Stop> {
        self.batch.push(e);
        if self.batch.len() >= EVENT_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::result::Result<(), Stop> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(EVENT_BATCH));
        self.events.send(batch).map_err(|_| Stop)
    }

    fn load_parent(&self, node: Option<&Node>) -> Option<Tree> {
        let id = node.filter(|n| n.kind == NodeKind::Dir)?.subtree?;
        match self.handle.block_on(self.sink.repo().load_tree(&id)) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("parent tree {id}: {e}; reading this directory in full");
                None
            }
        }
    }

    pub(super) fn run_with_parent(
        mut self,
        target: &Target,
        parent: Option<Tree>,
    ) -> std::result::Result<Counters, Stop> {
        match target {
            Target::Leaf(path) => {
                let dev = std::fs::symlink_metadata(path).map(|m| m.dev()).ok();
                let top = self.read_dir(path, parent, dev, false);
                self.walk_dirs(top)?
            }
            Target::Inner(_, children) => self.walk_inner(children, parent.as_ref())?,
        }
        self.flush()?;
        Ok(self.counters)
    }

    fn walk_inner(
        &mut self,
        children: &BTreeMap<Vec<u8>, Target>,
        parent: Option<&Tree>,
    ) -> std::result::Result<(), Stop> {
        for (name, child) in children {
            let pnode = parent.and_then(|t| t.find(name));
            match child {
                Target::Leaf(path) => match std::fs::symlink_metadata(path) {
                    Ok(meta) => {
                        let dev = meta.dev();
                        if let Some(dir) = self.entry(path, name.clone(), meta, pnode, dev)? {
                            self.walk_dirs(dir)?;
                        }
                    }
                    Err(e) => self.error(path, &e),
                },
                Target::Inner(path, grand) => {
                    // Directories on the way to a source path: their own metadata, and only the
                    // children that lead to sources.
                    let meta = match std::fs::metadata(path) {
                        Ok(m) if m.is_dir() => m,
                        Ok(_) => {
                            self.problem(SourceProblem::vanished(path, "not a directory"));
                            continue;
                        }
                        Err(e) => {
                            self.error(path, &e);
                            continue;
                        }
                    };
                    let node = match node_from_meta(path, name.clone(), &meta, &self.names) {
                        Ok(n) => self.stamp_atime(n),
                        Err(e) => {
                            self.error(path, &e);
                            continue;
                        }
                    };
                    self.counters.dirs += 1;
                    self.send(Event::Enter(node))?;
                    let ptree = self.load_parent(pnode);
                    self.walk_inner(grand, ptree.as_ref())?;
                    self.send(Event::Leave)?;
                }
            }
        }
        Ok(())
    }

    /// One directory entry with its `lstat` metadata; a directory to walk comes back.
    fn entry(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        meta: std::fs::Metadata,
        pnode: Option<&Node>,
        root_dev: u64,
    ) -> std::result::Result<Option<DirFrame>, Stop> {
        let node = node_from_meta(path, name, &meta, &self.names);
        self.entry_node(path, node, meta, pnode, root_dev)
    }

    /// The node as recorded: without its access time unless asked (see
    /// [`BackupOptions::with_atime`]).
    fn stamp_atime(&self, mut n: Node) -> Node {
        if !self.with_atime {
            n.atime = n.mtime;
        }
        n
    }

    /// One directory entry, its node already built from `lstat` metadata. A directory is
    /// entered (its `Enter` sent) and comes back to be walked; everything else is done here.
    fn entry_node(
        &mut self,
        path: &Path,
        node: std::io::Result<Node>,
        meta: std::fs::Metadata,
        pnode: Option<&Node>,
        root_dev: u64,
    ) -> std::result::Result<Option<DirFrame>, Stop> {
        let mut node = match node {
            Ok(n) => self.stamp_atime(n),
            Err(e) => {
                self.error(path, &e);
                return Ok(None);
            }
        };
        match node.kind {
            NodeKind::Dir => {
                if self.excluder.dir_excluded(path) {
                    return Ok(None);
                }
                self.counters.dirs += 1;
                self.send(Event::Enter(node))?;
                if self.one_file_system && meta.dev() != root_dev {
                    self.send(Event::Leave)?;
                    return Ok(None);
                }
                let ptree = self.load_parent(pnode);
                return Ok(Some(self.read_dir(path, ptree, Some(root_dev), true)));
            }
            NodeKind::File => {
                self.progress.files.fetch_add(1, Ordering::Relaxed);
                if let Some(content) = self.unchanged(&node, pnode) {
                    node.content = content;
                    self.counters.files_unmodified += 1;
                    self.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
                    self.send(Event::Leaf(Pending::Ready(node)))?;
                    return Ok(None);
                }
                if pnode.is_some() {
                    self.counters.files_changed += 1;
                } else {
                    self.counters.files_new += 1;
                }
                let cost = node.size.min(BATCH_BYTES as u64) + 4096;
                self.budget.acquire(cost);
                let opened = if self.open_ahead {
                    Opened::ahead(path, &meta)
                } else {
                    None
                };
                let (tx, rx) = sync_channel(1);
                let sink = self.sink.clone();
                let chunker = self.chunker.clone();
                let budget = self.budget.clone();
                let progress = self.progress.clone();
                let path = path.to_path_buf();
                self.readers.submit(Box::new(move || {
                    let r = read_file(&sink, &chunker, &path, opened, &progress);
                    budget.release(cost);
                    let _ = tx.send(r);
                }));
                self.send(Event::Leaf(Pending::Reading(node, rx)))?;
            }
            _ => {
                self.counters.other += 1;
                self.send(Event::Leaf(Pending::Ready(node)))?;
            }
        }
        Ok(None)
    }

    /// The parent's content list if the file is unchanged and all its blobs are still indexed.
    fn unchanged(&self, node: &Node, pnode: Option<&Node>) -> Option<Vec<Extent>> {
        if self.force {
            return None;
        }
        let p = pnode?;
        let same = p.kind == NodeKind::File
            && p.size == node.size
            && p.mtime == node.mtime
            && p.ctime == node.ctime
            && p.inode == node.inode;
        if !same {
            return None;
        }
        // Reuse only what the index still has (a damaged or pruned repository may not).
        for e in &p.content {
            if let Extent::Data { id, .. } = e
                && !self.sink.maybe_indexed(id)
            {
                return None;
            }
        }
        Some(p.content.clone())
    }

    /// Walk `top` and every directory below it, depth first, with an explicit stack (a tree
    /// thousands of levels deep costs heap, not the thread's stack).
    fn walk_dirs(&mut self, top: DirFrame) -> std::result::Result<(), Stop> {
        let mut stack = vec![top];
        while let Some(dir) = stack.last_mut() {
            let Some((path, nb, r)) = dir.entries.next() else {
                if stack.pop().is_some_and(|d| d.leave) {
                    self.send(Event::Leave)?;
                }
                continue;
            };
            match r {
                Ok((meta, node)) => {
                    let root_dev = dir.root_dev;
                    let pnode = dir.parent.as_ref().and_then(|t| t.find(&nb));
                    if let Some(sub) = self.entry_node(&path, node, meta, pnode, root_dev)? {
                        stack.push(sub);
                    }
                }
                Err(e) => self.error(&path, &e),
            }
        }
        Ok(())
    }

    /// Read directory `dir` (without updating its access time where permitted) and the
    /// metadata of its entries. `leave`: whether finishing it sends `Leave` (every directory
    /// entered; not a source directory itself, whose frame is the caller's).
    fn read_dir(
        &self,
        dir: &Path,
        parent: Option<Tree>,
        root_dev: Option<u64>,
        leave: bool,
    ) -> DirFrame {
        let root_dev = match root_dev {
            Some(d) => d,
            None => std::fs::symlink_metadata(dir).map(|m| m.dev()).unwrap_or(0),
        };
        let names = match read_dir_names(dir) {
            Ok((names, errors)) => {
                for e in errors {
                    self.error(dir, &e);
                }
                names
            }
            Err(e) => {
                self.error(dir, &e);
                Vec::new()
            }
        };
        // Metadata (lstat, xattrs, link targets) of all entries at once on the I/O pool: with a
        // cold cache every inode is a disk read, and one thread at a time leaves the disk idle.
        let excluder = &self.excluder;
        let names_cache = &self.names;
        let look = |name: &Vec<u8>| -> Option<Looked> {
            let path = dir.join(OsStr::from_bytes(name));
            if excluder.excluded(&path, name) {
                return None;
            }
            let previous = parent.as_ref().and_then(|t| t.find(name));
            let r = std::fs::symlink_metadata(&path).map(|meta| {
                let node = node_from_meta_with(&path, name.clone(), &meta, names_cache, previous);
                (meta, node)
            });
            Some((path, name.clone(), r))
        };
        // Spreading a directory over the pool costs wake-ups; only worth it for larger ones
        // (most directories hold a handful of entries, a few hold most of the files).
        let looked: Vec<Looked> = if names.len() >= 16 {
            self.io
                .install(|| names.par_iter().filter_map(look).collect())
        } else {
            names.iter().filter_map(look).collect()
        };
        DirFrame {
            entries: looked.into_iter(),
            parent,
            root_dev,
            leave,
        }
    }
}

/// An entry of a directory being walked, with its `lstat` metadata and node.
type Looked = (
    PathBuf,
    Vec<u8>,
    std::io::Result<(std::fs::Metadata, std::io::Result<Node>)>,
);

/// A directory being walked: its entries not done yet.
struct DirFrame {
    entries: std::vec::IntoIter<Looked>,
    /// The same directory in the parent snapshot.
    parent: Option<Tree>,
    root_dev: u64,
    leave: bool,
}

/// The names in directory `dir`, sorted, read through a descriptor opened with `O_NOATIME`
/// where permitted (reading a directory updates its access time just as reading a file does),
/// and the errors met on the way.
fn read_dir_names(dir: &Path) -> std::io::Result<(Vec<Vec<u8>>, Vec<std::io::Error>)> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let fd = match rustix::fs::open(dir, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rustix::fs::open(dir, flags, Mode::empty()),
        r => r,
    }?;
    let mut names = Vec::new();
    let mut errors = Vec::new();
    for ent in rustix::fs::Dir::read_from(&fd)? {
        match ent {
            Ok(ent) => {
                let name = ent.file_name().to_bytes();
                if name != b"." && name != b".." {
                    names.push(name.to_vec());
                }
            }
            Err(e) => {
                errors.push(e.into());
                break;
            }
        }
    }
    names.sort();
    Ok((names, errors))
}

/// Count files and bytes under the targets, for progress totals.
pub(super) fn scan(target: &Target, excluder: &Excluder, progress: &Progress) {
    // Iterative, like the walk itself; directories read without touching their access times.
    fn walk(dir: &Path, ex: &Excluder, p: &Progress) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok((names, _)) = read_dir_names(&dir) else {
                continue;
            };
            for name in names {
                let path = dir.join(OsStr::from_bytes(&name));
                if ex.excluded(&path, &name) {
                    continue;
                }
                let Ok(m) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if m.is_dir() {
                    if !ex.dir_excluded(&path) {
                        stack.push(path);
                    }
                } else if m.is_file() {
                    p.add_total(1, m.len());
                }
            }
        }
    }
    match target {
        Target::Leaf(p) => match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => walk(p, excluder, progress),
            Ok(m) if m.is_file() => progress.add_total(1, m.len()),
            _ => {}
        },
        Target::Inner(_, children) => {
            for c in children.values() {
                scan(c, excluder, progress);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn targets_merge_paths() {
        let t = build_targets(&[
            PathBuf::from("/a/b"),
            PathBuf::from("/a/c"),
            PathBuf::from("/d"),
        ]);
        let Target::Inner(_, root) = t else { panic!() };
        assert_eq!(root.len(), 2);
        let Target::Inner(_, a) = &root[&b"a".to_vec()] else {
            panic!()
        };
        assert!(matches!(a[&b"b".to_vec()], Target::Leaf(_)));
        assert!(matches!(root[&b"d".to_vec()], Target::Leaf(_)));
        // A path and its ancestor: the ancestor wins.
        let t = build_targets(&[PathBuf::from("/a"), PathBuf::from("/a/b")]);
        let Target::Inner(_, root) = t else { panic!() };
        assert!(matches!(root[&b"a".to_vec()], Target::Leaf(_)));
        assert!(matches!(
            build_targets(&[PathBuf::from("/")]),
            Target::Leaf(_)
        ));
        assert_eq!(
            normalize(Path::new("/x/../y/./z")).unwrap(),
            PathBuf::from("/y/z")
        );
    }
}
