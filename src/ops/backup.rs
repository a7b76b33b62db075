//! Backup of file trees and streams (DESIGN.md §4).
//!
//! Three kinds of thread cooperate, joined by bounded channels:
//! - the **walker** (one blocking thread) lists directories in name order, compares each file
//!   with the parent snapshot (size, mtime, ctime, inode: unchanged files are not read), opens
//!   each file to be read and asks the kernel to start reading it, and hands it to the readers,
//!   bounded by a budget of bytes and files in flight;
//! - **readers** (a few plain threads) read and chunk a file, then hash, compress and seal its
//!   chunks (on rayon when there are several) and give new blobs to the [`BlobSink`], which
//!   packs and uploads them;
//! - the **assembler** (one blocking thread) receives the walk's events in order, waits for each
//!   file's chunk list, and writes a tree blob as each directory is left.
//!
//! The snapshot is written only after every pack and index object it needs is stored.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};

use rayon::prelude::*;
use tokio::runtime::Handle;

use super::progress::Progress;
use crate::chunker::Chunker;
use crate::compress::Compression;
use crate::error::{Error, Result};
use crate::format::Timestamp;
use crate::format::pack::BlobKind;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Extent, Node, NodeKind, Tree};
use crate::id::Id;
use crate::repo::lease::{LeaseHandle, LeaseMode};
use crate::repo::packer::{BlobSink, Uploader};
use crate::repo::{Repository, hostname, username};
use crate::source::exclude::{ExcludeOptions, Excluder};
use crate::source::fs::{
    NameCache, advise_willneed, data_regions, looks_sparse, node_from_meta, node_from_meta_with,
    open_files_limit, open_noatime,
};

/// Bytes read from one file before its chunks are processed as a parallel batch.
const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Budget of file bytes being read at once (two full batches: one per core), and of files in
/// flight (many small files keep both cores busy while their results wait to be assembled).
const INFLIGHT_BYTES: u64 = 2 * BATCH_BYTES as u64;
const INFLIGHT_FILES: u64 = 256;
/// Walk events sent to the assembler at a time.
const EVENT_BATCH: usize = 128;
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

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub exclude: ExcludeOptions,
    pub one_file_system: bool,
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot (default: this machine's).
    pub host: Option<String>,
    /// Snapshot time (default: now).
    pub time: Option<Timestamp>,
    pub dry_run: bool,
    /// Parent snapshot reference; by default the latest with the same host and paths.
    pub parent: Option<String>,
    /// Read every file even when the parent says it is unchanged.
    pub force: bool,
    pub compression: Compression,
    pub progress: Option<Arc<Progress>>,
    /// Walk the sources first to know totals (for an ETA).
    pub scan: bool,
    /// How long to wait for a conflicting lease.
    pub lease_wait: std::time::Duration,
    /// Record access times. Off by default (as in borg): reading a tree changes them (a web
    /// server reading uploads, relatime refreshing them once a day), so every night every
    /// directory's tree blob would be stored again. Without them a node's atime is its mtime.
    pub with_atime: bool,
}

#[derive(Debug)]
pub struct BackupOutcome {
    /// The committed snapshot's id; `None` for a dry run.
    pub snapshot_id: Option<Id>,
    pub snapshot: Snapshot,
    /// Source entries that could not be read; they are missing from the snapshot.
    pub errors: Vec<SourceProblem>,
}

/// A source entry that could not be backed up: it is missing from the snapshot (exit code 3).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceProblem {
    /// The entry's path (lossy UTF-8); empty for a stream.
    pub path: String,
    pub kind: SourceProblemKind,
    /// What the system said.
    pub message: String,
}

/// Why a source entry could not be backed up, at the granularity a scheduler acts on: an entry
/// that vanished or changed type during the backup is usually fine on the next run; one that
/// cannot be read needs a fix (permissions, a failing disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceProblemKind {
    /// It disappeared, or stopped being what it was, while the backup ran.
    Vanished,
    /// No permission to read it.
    PermissionDenied,
    /// Any other failure to read it.
    Unreadable,
}

impl SourceProblem {
    pub fn io(path: &Path, e: &std::io::Error) -> SourceProblem {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::NotFound => SourceProblemKind::Vanished,
            K::PermissionDenied => SourceProblemKind::PermissionDenied,
            _ => SourceProblemKind::Unreadable,
        };
        SourceProblem {
            path: path.to_string_lossy().into_owned(),
            kind,
            message: e.to_string(),
        }
    }

    fn vanished(path: &Path, why: &str) -> SourceProblem {
        SourceProblem {
            path: path.to_string_lossy().into_owned(),
            kind: SourceProblemKind::Vanished,
            message: why.to_string(),
        }
    }

    /// The problem as an error of the whole operation (a stream that could not be read).
    pub(crate) fn into_error(self, name: &str) -> Error {
        let kind = match self.kind {
            SourceProblemKind::Vanished => std::io::ErrorKind::NotFound,
            SourceProblemKind::PermissionDenied => std::io::ErrorKind::PermissionDenied,
            SourceProblemKind::Unreadable => std::io::ErrorKind::Other,
        };
        let path = if self.path.is_empty() {
            name
        } else {
            &self.path
        };
        Error::io(path, std::io::Error::new(kind, self.message))
    }
}

impl std::fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Errors of a file job: the source failing is reported and skipped; the repository failing
/// aborts the backup.
pub(crate) enum JobError {
    Source(SourceProblem),
    Fatal(Error),
}

impl JobError {
    /// A stream's problem as the problem of the file at `path`.
    fn at(self, path: &Path) -> JobError {
        match self {
            JobError::Source(mut p) if p.path.is_empty() => {
                p.path = path.to_string_lossy().into_owned();
                JobError::Source(p)
            }
            e => e,
        }
    }
}

struct FileResult {
    extents: Vec<Extent>,
    size: u64,
}

type FileOutcome = std::result::Result<FileResult, JobError>;

enum Pending {
    Ready(Node),
    Reading(Node, Receiver<FileOutcome>),
}

enum Event {
    Enter(Node),
    Leaf(Pending),
    Leave,
}

#[derive(Default)]
struct Counters {
    files_new: u64,
    files_changed: u64,
    files_unmodified: u64,
    dirs: u64,
    other: u64,
}

/// A budget of bytes and files in flight: the walker waits when it is spent.
struct Budget {
    used: Mutex<Used>,
    cv: Condvar,
}

#[derive(Default)]
struct Used {
    bytes: u64,
    files: u64,
    /// The cost the walker is waiting to acquire, if it is waiting.
    waiting: Option<u64>,
}

/// Files that must finish before a waiting walker is woken: one wake-up per run of files
/// rather than per file (each is a context switch, and small files finish by the thousand).
const REFILL_FILES: u64 = INFLIGHT_FILES / 4;

impl Budget {
    fn new() -> Arc<Budget> {
        Arc::new(Budget {
            used: Mutex::new(Used::default()),
            cv: Condvar::new(),
        })
    }
    fn acquire(&self, bytes: u64) {
        let mut u = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while u.files > 0 && (u.bytes + bytes > INFLIGHT_BYTES || u.files + 1 > INFLIGHT_FILES) {
            u.waiting = Some(bytes);
            u = self.cv.wait(u).unwrap_or_else(|p| p.into_inner());
        }
        u.waiting = None;
        u.bytes += bytes;
        u.files += 1;
    }
    fn release(&self, bytes: u64) {
        let mut u = self.used.lock().unwrap_or_else(|p| p.into_inner());
        u.bytes -= bytes;
        u.files -= 1;
        // Only the walker ever waits.
        if let Some(want) = u.waiting
            && (u.files == 0
                || (u.bytes + want <= INFLIGHT_BYTES && u.files + REFILL_FILES <= INFLIGHT_FILES))
        {
            u.waiting = None;
            self.cv.notify_one();
        }
    }
}

/// Plain threads that read files ([`reader_threads`] of them). They block on a channel when
/// idle rather than spinning as pool workers do, and the CPU-heavy part of a large file goes to
/// the rayon pool (one thread per core).
struct Readers {
    tx: Option<SyncSender<Box<dyn FnOnce() + Send>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    fn start(n: usize) -> Result<Readers> {
        let (tx, rx) = sync_channel::<Box<dyn FnOnce() + Send>>(INFLIGHT_FILES as usize);
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..n {
            let rx = rx.clone();
            let t = std::thread::Builder::new()
                .name(format!("cairn-read-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| Error::Other(format!("starting reader threads: {e}")))?;
            threads.push(t);
        }
        Ok(Readers {
            tx: Some(tx),
            threads,
        })
    }

    fn submit(&self, job: Box<dyn FnOnce() + Send>) {
        if let Some(tx) = &self.tx {
            // The readers only stop when this handle is dropped, so the send cannot fail.
            let _ = tx.send(job);
        }
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Chunk and store a stream: every new chunk is stored, every known one deduplicated.
pub(crate) fn store_stream<R: Read>(
    sink: &BlobSink,
    chunker: &Chunker,
    reader: R,
    size_hint: u64,
    progress: &Progress,
) -> std::result::Result<(Vec<Extent>, u64), JobError> {
    let keys = sink.repo().keys().clone();
    chunk_stream(chunker, reader, size_hint, progress, |batch| {
        let one = |chunk: &bytes::Bytes| -> Result<Id> {
            let id = keys.blob_id(chunk);
            sink.save(BlobKind::Data, id, chunk)?;
            Ok(id)
        };
        // Several chunks: spread them over the CPU pool. One chunk (every small file): do it
        // here, since handing it to another thread costs more than it saves.
        if batch.len() > 1 {
            batch.par_iter().map(one).collect()
        } else {
            batch.iter().map(one).collect()
        }
    })
}

/// Cut a stream into chunks and hand them to `store` a batch at a time (up to 16 MiB, so
/// memory stays bounded on any input); `store` stores them and returns their ids in order.
/// Returns the stream's extents and length.
pub(crate) fn chunk_stream<R: Read>(
    chunker: &Chunker,
    reader: R,
    size_hint: u64,
    progress: &Progress,
    mut store: impl FnMut(&[bytes::Bytes]) -> Result<Vec<Id>>,
) -> std::result::Result<(Vec<Extent>, u64), JobError> {
    let mut stream = chunker.stream(reader, BATCH_BYTES, size_hint);
    let mut extents = Vec::new();
    let mut total = 0u64;
    loop {
        let batch = match stream.next_batch() {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => return Err(JobError::Source(SourceProblem::io(Path::new(""), &e))),
        };
        let ids = store(&batch).map_err(JobError::Fatal)?;
        let n: u64 = batch.iter().map(|c| c.len() as u64).sum();
        total += n;
        progress.bytes.fetch_add(n, Ordering::Relaxed);
        progress.read_bytes.fetch_add(n, Ordering::Relaxed);
        for (c, id) in batch.iter().zip(ids) {
            extents.push(Extent::Data {
                id,
                len: c.len() as u32,
            });
        }
    }
    Ok((extents, total))
}

/// A regular file opened by the walker, which has already asked the kernel for its first
/// `advised` bytes.
struct Opened {
    file: std::fs::File,
    advised: u64,
}

impl Opened {
    /// Open a file the walker is about to hand to the readers and ask the kernel to start
    /// reading its first batch now. The readers are up to a budget of files behind the walker,
    /// so the disk gets that many requests at once rather than one per reader thread, and
    /// without a thread blocked on each: on a cold cache this cut a first backup's wall time
    /// by about 10% and its CPU time by as much (fewer sleeps and wake-ups per small file).
    /// `None` if the file cannot be opened here: its reader then opens it and reports why.
    fn ahead(path: &Path, meta: &std::fs::Metadata) -> Option<Opened> {
        let file = open_noatime(path).ok()?;
        let advised = if looks_sparse(meta) {
            0 // holes are not read; the reader finds the data regions
        } else {
            meta.len().min(BATCH_BYTES as u64)
        };
        advise_willneed(&file, 0, advised);
        Some(Opened { file, advised })
    }
}

/// Read one regular file into extents, keeping holes of sparse files as holes.
fn read_file(
    sink: &BlobSink,
    chunker: &Chunker,
    path: &Path,
    opened: Option<Opened>,
    progress: &Progress,
) -> std::result::Result<FileResult, JobError> {
    read_file_at(sink, chunker, path, opened, progress).map_err(|e| e.at(path))
}

fn read_file_at(
    sink: &BlobSink,
    chunker: &Chunker,
    path: &Path,
    opened: Option<Opened>,
    progress: &Progress,
) -> std::result::Result<FileResult, JobError> {
    let src = |e: std::io::Error| JobError::Source(SourceProblem::io(path, &e));
    let (file, advised) = match opened {
        Some(o) => (o.file, o.advised),
        None => (open_noatime(path).map_err(src)?, 0),
    };
    let meta = file.metadata().map_err(src)?;
    if !meta.is_file() {
        return Err(JobError::Source(SourceProblem::vanished(
            path,
            "no longer a regular file",
        )));
    }
    if !looks_sparse(&meta) {
        let reader = ReadAhead::new(&file, meta.len(), advised);
        let (extents, size) = store_stream(sink, chunker, reader, meta.len(), progress)?;
        return Ok(FileResult { extents, size });
    }
    let mut extents = Vec::new();
    let mut pos = 0u64;
    let mut f = &file;
    for (off, len) in data_regions(&file, meta.len()) {
        if off > pos {
            extents.push(Extent::Hole(off - pos));
        }
        f.seek(SeekFrom::Start(off)).map_err(src)?;
        let (ex, n) = store_stream(sink, chunker, f.take(len), len, progress)?;
        extents.extend(ex);
        pos = off + n;
        if n < len {
            break; // the file shrank while we read it
        }
    }
    if meta.len() > pos {
        extents.push(Extent::Hole(meta.len() - pos));
        pos = meta.len();
    }
    Ok(FileResult { extents, size: pos })
}

/// Asks the kernel to read a large file ahead of us (`POSIX_FADV_WILLNEED` on the next two
/// batches), so the disk works while the cores chunk, hash and compress the current batch:
/// otherwise each batch's read is a pause in which the job has nothing to compute.
struct ReadAhead<'a> {
    file: &'a std::fs::File,
    len: u64,
    pos: u64,
    advised_to: u64,
}

impl<'a> ReadAhead<'a> {
    /// `advised`: bytes from the start already asked for.
    fn new(file: &'a std::fs::File, len: u64, advised: u64) -> Self {
        ReadAhead {
            file,
            len,
            pos: 0,
            advised_to: advised,
        }
    }
}

impl Read for ReadAhead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let window = 2 * BATCH_BYTES as u64;
        if self.len > BATCH_BYTES as u64 && self.pos + window / 2 >= self.advised_to {
            let start = self.advised_to.max(self.pos);
            let end = (self.pos + window).min(self.len);
            if end > start {
                advise_willneed(self.file, start, end - start);
                self.advised_to = end;
            }
        }
        let n = (&*self.file).read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The paths to back up arranged as a tree of path components: inner components are
/// directories on the way, leaves are walked in full.
enum Target {
    Leaf(PathBuf),
    Inner(PathBuf, BTreeMap<Vec<u8>, Target>),
}

fn normalize(p: &Path) -> Result<PathBuf> {
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

fn build_targets(paths: &[PathBuf]) -> Target {
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

struct Walker {
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
struct Stop;

impl Walker {
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

    fn run_with_parent(
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

/// Serialise, id and store a tree blob.
pub(crate) fn save_tree(sink: &BlobSink, mut nodes: Vec<Node>) -> Result<Id> {
    let mut tree = Tree {
        nodes: std::mem::take(&mut nodes),
    };
    tree.sort();
    tree.nodes.dedup_by(|a, b| a.name == b.name);
    let data = tree.encode();
    if data.len() > crate::format::tree::MAX_TREE_BLOB as usize {
        return Err(Error::invalid(format!(
            "a directory with {} entries is too large for one tree ({} bytes; the format allows {})",
            tree.nodes.len(),
            data.len(),
            crate::format::tree::MAX_TREE_BLOB
        )));
    }
    let id = sink.repo().keys().blob_id(&data);
    sink.save(BlobKind::Tree, id, &data)?;
    Ok(id)
}

struct Assembled {
    root: Id,
    total_files: u64,
    total_bytes: u64,
}

fn assemble(
    sink: &BlobSink,
    events: Receiver<Vec<Event>>,
    errors: &Mutex<Vec<SourceProblem>>,
) -> Result<Assembled> {
    let mut stack: Vec<(Option<Node>, Vec<Node>)> = vec![(None, Vec::new())];
    let mut total_files = 0u64;
    let mut total_bytes = 0u64;
    for batch in events {
        // Readers finish files roughly in the order they were handed out, so once the batch's
        // last file is read most of the others are too: waiting for it first makes about one
        // wake-up per batch instead of one per file.
        let mut early = batch.iter().enumerate().rev().find_map(|(i, ev)| match ev {
            Event::Leaf(Pending::Reading(_, rx)) => Some((i, rx.recv())),
            _ => None,
        });
        for (i, ev) in batch.into_iter().enumerate() {
            let (mut node, outcome) = match ev {
                Event::Enter(node) => {
                    stack.push((Some(node), Vec::new()));
                    continue;
                }
                Event::Leave => {
                    let (node, children) = stack.pop().expect("balanced walk");
                    let mut node = node.expect("non-root frame");
                    node.subtree = Some(save_tree(sink, children)?);
                    stack.last_mut().expect("root frame").1.push(node);
                    continue;
                }
                Event::Leaf(Pending::Ready(node)) => {
                    if node.kind == NodeKind::File {
                        total_files += 1;
                        total_bytes += node.size;
                    }
                    stack.last_mut().expect("root frame").1.push(node);
                    continue;
                }
                Event::Leaf(Pending::Reading(node, rx)) => match early.take_if(|(j, _)| *j == i) {
                    Some((_, outcome)) => (node, outcome),
                    None => (node, rx.recv()),
                },
            };
            match outcome {
                Ok(Ok(r)) => {
                    node.content = r.extents;
                    node.size = r.size;
                    total_files += 1;
                    total_bytes += node.size;
                    stack.last_mut().expect("root frame").1.push(node);
                }
                Ok(Err(JobError::Source(p))) => {
                    tracing::warn!("{p}");
                    errors.lock().unwrap_or_else(|e| e.into_inner()).push(p);
                }
                Ok(Err(JobError::Fatal(e))) => return Err(e),
                Err(_) => return Err(Error::Other("a file reader stopped unexpectedly".into())),
            }
        }
    }
    let (_, children) = stack.pop().expect("root frame");
    Ok(Assembled {
        root: save_tree(sink, children)?,
        total_files,
        total_bytes,
    })
}

/// Count files and bytes under the targets, for progress totals.
fn scan(target: &Target, excluder: &Excluder, progress: &Progress) {
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

pub(crate) struct Session {
    pub(crate) sink: Arc<BlobSink>,
    uploader: Uploader,
    started: Timestamp,
}

impl Session {
    pub(crate) fn start(repo: &Arc<Repository>, opts: &BackupOptions) -> Result<Session> {
        let (sink, uploader) = BlobSink::start(repo.clone(), opts.compression, opts.dry_run)?;
        Ok(Session {
            sink,
            uploader,
            started: repo.now(),
        })
    }

    /// Wait for uploads and write the snapshot (unless a dry run).
    pub(crate) async fn commit(
        self,
        repo: &Repository,
        mut snap: Snapshot,
        dry_run: bool,
        errors: Vec<SourceProblem>,
        lease: &LeaseHandle,
    ) -> Result<BackupOutcome> {
        self.sink.flush().await?;
        let up = self.uploader.finish().await?;
        lease.verify().await?;
        let st = &self.sink.stats;
        snap.summary.backup_start = self.started;
        snap.summary.backup_end = repo.now();
        snap.summary.data_blobs_added = st.data_blobs.load(Ordering::Relaxed);
        snap.summary.tree_blobs_added = st.tree_blobs.load(Ordering::Relaxed);
        snap.summary.new_data_bytes = st.raw_bytes.load(Ordering::Relaxed);
        snap.summary.stored_bytes_added = up.bytes;
        snap.summary.packs_added = up.packs;
        snap.summary.errors = errors.len() as u64;
        let snapshot_id = if dry_run {
            None
        } else {
            Some(repo.save_snapshot(&snap).await?)
        };
        Ok(BackupOutcome {
            snapshot_id,
            snapshot: snap,
            errors,
        })
    }

    /// After a failure: store what was already handed to the uploader, so a retry reuses it.
    pub(crate) async fn abandon(self) {
        self.sink.abort();
        if let Err(e) = self.uploader.finish().await {
            // When the upload itself failed, this is the cause the caller's "upload stopped
            // (see the error above)" refers to: it must be shown.
            tracing::error!("upload failed: {e}");
        }
    }
}

pub(crate) fn new_snapshot(
    repo: &Repository,
    opts: &BackupOptions,
    paths: Vec<String>,
    source: &str,
) -> Snapshot {
    Snapshot {
        time: opts.time.unwrap_or_else(|| repo.now()),
        tree: Id::default(),
        paths,
        host: opts.host.clone().unwrap_or_else(hostname),
        username: username(),
        // SAFETY: getuid/getgid cannot fail.
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
        tags: opts.tags.clone(),
        parent: None,
        source: source.to_string(),
        program: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        summary: Summary::default(),
        meta: Vec::new(),
    }
}

/// Back up file trees.
pub async fn backup_paths(
    repo: &Arc<Repository>,
    paths: &[PathBuf],
    opts: &BackupOptions,
) -> Result<BackupOutcome> {
    if paths.is_empty() {
        return Err(Error::invalid("nothing to back up: give at least one path"));
    }
    let mut abs = Vec::new();
    for p in paths {
        let n = normalize(p)?;
        if let Err(e) = std::fs::symlink_metadata(&n) {
            return Err(Error::io(n, e));
        }
        abs.push(n);
    }
    abs.sort();
    abs.dedup();
    let path_strings: Vec<String> = abs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let excluder = Excluder::new(&opts.exclude)?;
    repo.with_lease(lease_mode(opts), "backup", opts.lease_wait, |lease| {
        backup_paths_leased(repo, abs, path_strings, excluder, opts, lease)
    })
    .await
}

/// A backup writes under a shared lease; a dry run writes nothing and takes none.
pub(crate) fn lease_mode(opts: &BackupOptions) -> LeaseMode {
    if opts.dry_run {
        LeaseMode::Unleased
    } else {
        LeaseMode::Write
    }
}

async fn backup_paths_leased(
    repo: &Arc<Repository>,
    abs: Vec<PathBuf>,
    path_strings: Vec<String>,
    excluder: Excluder,
    opts: &BackupOptions,
    lease: LeaseHandle,
) -> Result<BackupOutcome> {
    let mut snap = new_snapshot(repo, opts, path_strings.clone(), "files");

    // The parent: named, or the latest snapshot of the same host and paths.
    let parent = match &opts.parent {
        Some(p) => Some(repo.find_snapshot(p, None, &[])?),
        None => repo
            .snapshots()?
            .into_iter()
            .rfind(|(_, s)| s.host == snap.host && s.paths == path_strings && s.source == "files"),
    };
    let parent_tree = match &parent {
        Some((id, s)) if !opts.force => match repo.load_tree(&s.tree).await {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("parent snapshot {id}: {e}; reading everything");
                None
            }
        },
        _ => None,
    };
    snap.parent = parent.as_ref().map(|(id, _)| *id);

    let target = Arc::new(build_targets(&abs));
    let progress = opts.progress.clone().unwrap_or_default();
    if opts.scan {
        let p = progress.clone();
        let t = target.clone();
        let ex = Excluder::new(&opts.exclude)?;
        std::thread::spawn(move || {
            scan(&t, &ex, &p);
            p.totals_final.store(true, Ordering::Relaxed);
        });
    }

    let session = Session::start(repo, opts)?;
    let (tx, rx) = sync_channel::<Vec<Event>>(32);
    let errors = Arc::new(Mutex::new(Vec::new()));
    let io = rayon::ThreadPoolBuilder::new()
        .num_threads(IO_THREADS)
        .thread_name(|i| format!("cairn-io-{i}"))
        .build()
        .map_err(|e| Error::Other(format!("starting I/O threads: {e}")))?;
    let io = Arc::new(io);
    let open_ahead = open_files_limit() >= 4 * INFLIGHT_FILES;
    let walker = Walker {
        sink: session.sink.clone(),
        io: io.clone(),
        readers: Readers::start(reader_threads(open_ahead))?,
        open_ahead,
        chunker: Arc::new(repo.file_chunker()),
        handle: Handle::current(),
        excluder,
        one_file_system: opts.one_file_system,
        force: opts.force,
        with_atime: opts.with_atime,
        names: NameCache::default(),
        events: tx,
        batch: Vec::with_capacity(EVENT_BATCH),
        budget: Budget::new(),
        errors: errors.clone(),
        counters: Counters::default(),
        progress: progress.clone(),
    };
    let t2 = target.clone();
    let walk = tokio::task::spawn_blocking(move || walker.run_with_parent(&t2, parent_tree));
    let sink = session.sink.clone();
    let errs = errors.clone();
    let asm = tokio::task::spawn_blocking(move || assemble(&sink, rx, &errs));
    let assembled = asm
        .await
        .map_err(|e| Error::Other(format!("tree assembler: {e}")));
    let counters = walk.await.map_err(|e| Error::Other(format!("walker: {e}")));
    let assembled = match (assembled, counters) {
        (Ok(Ok(a)), Ok(Ok(c))) => (a, c),
        (Ok(Err(e)), _) | (Err(e), _) | (_, Err(e)) => {
            session.abandon().await;
            return Err(e);
        }
        (Ok(Ok(_)), Ok(Err(Stop))) => {
            session.abandon().await;
            return Err(Error::Other(
                "the directory walk stopped unexpectedly".into(),
            ));
        }
    };
    let (a, c) = assembled;
    snap.tree = a.root;
    snap.summary.files_new = c.files_new;
    snap.summary.files_changed = c.files_changed;
    snap.summary.files_unmodified = c.files_unmodified;
    snap.summary.dirs = c.dirs;
    snap.summary.other_nodes = c.other;
    snap.summary.total_files = a.total_files;
    snap.summary.total_bytes = a.total_bytes;
    snap.summary.bytes_read = Progress::get(&progress.read_bytes);
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|p| p.into_inner()));
    session
        .commit(repo, snap, opts.dry_run, errors, &lease)
        .await
}

/// Back up one stream as a single file named `name` (which may contain `/`).
pub async fn backup_reader<R: Read + Send + 'static>(
    repo: &Arc<Repository>,
    reader: R,
    name: &str,
    opts: &BackupOptions,
) -> Result<BackupOutcome> {
    backup_reader_checked(repo, reader, name, opts, || Ok(())).await
}

/// Like [`backup_reader`], but `check` runs after the stream ends and before the snapshot is
/// written; if it fails, no snapshot is written (a failed dump command, for instance).
pub async fn backup_reader_checked<R, F>(
    repo: &Arc<Repository>,
    reader: R,
    name: &str,
    opts: &BackupOptions,
    check: F,
) -> Result<BackupOutcome>
where
    R: Read + Send + 'static,
    F: FnOnce() -> Result<()> + Send + 'static,
{
    let comps: Vec<&str> = name.split('/').filter(|c| !c.is_empty()).collect();
    if comps.is_empty()
        || comps
            .iter()
            .any(|c| !crate::format::tree::valid_name(c.as_bytes()))
    {
        return Err(Error::invalid(format!(
            "{name:?} is not a valid file name for the stream"
        )));
    }
    let comps: Vec<String> = comps.into_iter().map(str::to_string).collect();
    repo.with_lease(lease_mode(opts), "backup", opts.lease_wait, |lease| {
        backup_reader_leased(repo, reader, name, comps, opts, check, lease)
    })
    .await
}

async fn backup_reader_leased<R, F>(
    repo: &Arc<Repository>,
    reader: R,
    name: &str,
    comps: Vec<String>,
    opts: &BackupOptions,
    check: F,
    lease: LeaseHandle,
) -> Result<BackupOutcome>
where
    R: Read + Send + 'static,
    F: FnOnce() -> Result<()> + Send + 'static,
{
    let snap = new_snapshot(repo, opts, vec![comps.join("/")], "stdin");
    let session = Session::start(repo, opts)?;
    let sink = session.sink.clone();
    let chunker = repo.file_chunker();
    let progress = opts.progress.clone().unwrap_or_default();
    let names: Vec<Vec<u8>> = comps.iter().map(|c| c.as_bytes().to_vec()).collect();
    let time = snap.time;
    let job = tokio::task::spawn_blocking(move || -> std::result::Result<(Id, u64), JobError> {
        let (extents, size) = store_stream(&sink, &chunker, reader, 0, &progress)?;
        check().map_err(JobError::Fatal)?;
        let cache = NameCache::default();
        // SAFETY: getuid/getgid/umask-free calls that cannot fail.
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
        let mut file = Node::new(names[names.len() - 1].clone(), NodeKind::File);
        stamp(&mut file, 0o600);
        file.size = size;
        file.links = 1;
        file.content = extents;
        let mut node = file;
        for dir in names[..names.len() - 1].iter().rev() {
            let id = save_tree(&sink, vec![node]).map_err(JobError::Fatal)?;
            let mut d = Node::new(dir.clone(), NodeKind::Dir);
            stamp(&mut d, 0o700);
            d.subtree = Some(id);
            node = d;
        }
        Ok((save_tree(&sink, vec![node]).map_err(JobError::Fatal)?, size))
    });
    let (root, size) = match job.await {
        Ok(Ok(r)) => r,
        Ok(Err(JobError::Source(p))) => {
            session.abandon().await;
            return Err(p.into_error(name));
        }
        Ok(Err(JobError::Fatal(e))) => {
            session.abandon().await;
            return Err(e);
        }
        Err(e) => {
            session.abandon().await;
            return Err(Error::Other(e.to_string()));
        }
    };
    let mut snap = snap;
    snap.tree = root;
    snap.summary.total_files = 1;
    snap.summary.total_bytes = size;
    snap.summary.files_new = 1;
    snap.summary.bytes_read = size;
    session
        .commit(repo, snap, opts.dry_run, Vec::new(), &lease)
        .await
}

/// Back up the standard output of a command; no snapshot if it exits unsuccessfully.
pub async fn backup_command(
    repo: &Arc<Repository>,
    argv: &[OsString],
    name: &str,
    opts: &BackupOptions,
) -> Result<BackupOutcome> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| Error::invalid("--stdin-from-command needs a command"))?;
    // The repository's password is not the command's business.
    let mut child = std::process::Command::new(prog)
        .args(args)
        .env_remove("CAIRN_PASSWORD")
        .env_remove("CAIRN_PASSWORD_FILE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Other(format!("could not run {}: {e}", prog.to_string_lossy())))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Other("no stdout pipe".into()))?;
    let prog_name = prog.to_string_lossy().into_owned();
    backup_reader_checked(repo, stdout, name, opts, move || {
        let status = child
            .wait()
            .map_err(|e| Error::Other(format!("waiting for {prog_name}: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::Other(format!(
                "command {prog_name} failed ({status}); no snapshot written"
            )))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Acquire `cost` on another thread; the flag says when it got through.
    fn waiter(
        budget: &Arc<Budget>,
        cost: u64,
    ) -> (
        Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    ) {
        let through = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (b, t) = (budget.clone(), through.clone());
        let h = std::thread::spawn(move || {
            b.acquire(cost);
            t.store(true, Ordering::SeqCst);
        });
        // Releases before it waits would let it straight through, not wake it.
        while budget.used.lock().unwrap().waiting.is_none() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        (through, h)
    }

    fn wait_for(flag: &std::sync::atomic::AtomicBool) -> bool {
        for _ in 0..500 {
            if flag.load(Ordering::SeqCst) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn budget_wakes_the_walker_once_a_run_of_files_is_done() {
        let budget = Budget::new();
        for _ in 0..INFLIGHT_FILES {
            budget.acquire(1);
        }
        let (through, h) = waiter(&budget, 1);
        for _ in 1..REFILL_FILES {
            budget.release(1);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            !through.load(Ordering::SeqCst),
            "woken before a run of files finished"
        );
        budget.release(1);
        assert!(wait_for(&through), "walker never woken");
        h.join().unwrap();

        // Bytes: a large file waits until its cost fits, then goes.
        let budget = Budget::new();
        budget.acquire(BATCH_BYTES as u64);
        budget.acquire(BATCH_BYTES as u64);
        let (through, h) = waiter(&budget, BATCH_BYTES as u64);
        budget.release(BATCH_BYTES as u64);
        assert!(wait_for(&through), "walker never woken for bytes");
        h.join().unwrap();
    }

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
