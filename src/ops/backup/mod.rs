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

mod assemble;
mod readers;
mod session;
mod stdin;
mod walker;

pub(crate) use assemble::save_tree;
pub(crate) use readers::{chunk_stream, store_stream};
pub(crate) use session::{Session, new_snapshot};
pub use stdin::{backup_reader, backup_reader_checked};

use walker::{Stop, Walker, build_targets, normalize, scan};

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use crate::compress::Compression;
use crate::error::{Error, Result};
use crate::format::Timestamp;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Extent, Node};
use crate::id::Id;
use crate::ops::progress::Progress;
use crate::repo::Repository;
use crate::repo::lease::{LeaseHandle, LeaseMode};
use crate::source::exclude::{ExcludeOptions, Excluder};

/// Bytes read from one file before its chunks are processed as a parallel batch.
const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Budget of file bytes being read at once (two full batches: one per core), and of files in
/// flight (many small files keep both cores busy while their results wait to be assembled).
const INFLIGHT_BYTES: u64 = 2 * BATCH_BYTES as u64;
const INFLIGHT_FILES: u64 = 256;
/// Walk events sent to the assembler at a time.
const EVENT_BATCH: usize = 128;
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
    let walker = Walker::new(
        session.sink.clone(),
        Arc::new(repo.file_chunker()),
        excluder,
        opts,
        tx,
        errors.clone(),
        progress.clone(),
    )?;
    let t2 = target.clone();
    let walk = tokio::task::spawn_blocking(move || walker.run_with_parent(&t2, parent_tree));
    let sink = session.sink.clone();
    let errs = errors.clone();
    let asm = tokio::task::spawn_blocking(move || assemble::assemble(&sink, rx, &errs));
    let assembled = asm
        .await
        .map_err(|e| Error::Other(format!("tree assembler: {e}")));
    let counters = walk.await.map_err(|e| Error::Other(format!("walker: {e}")));
    let assembled = match (assembled, counters) {
        (Ok(Ok(a)), Ok(Ok(c))) => (a, c),
        (Ok(Err(e)), _) | (Err(e), _) | (_, Err(e)) => return Err(session.abandon(e).await),
        (Ok(Ok(_)), Ok(Err(Stop))) => {
            let e = Error::Other("the directory walk stopped unexpectedly".into());
            return Err(session.abandon(e).await);
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
