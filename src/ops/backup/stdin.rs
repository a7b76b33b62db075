//! Backup of one stream (standard input, a command's output) as a single file.

use std::io::Read;
use std::sync::Arc;

use super::{
    BackupOptions, BackupOutcome, JobError, Session, lease_mode, new_snapshot, save_tree,
    store_stream,
};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::lease::LeaseHandle;
use crate::source::fs::NameCache;

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
        Ok(Err(JobError::Source(p))) => return Err(session.abandon(p.into_error(name)).await),
        Ok(Err(JobError::Fatal(e))) => return Err(session.abandon(e).await),
        Err(e) => return Err(session.abandon(Error::Other(e.to_string())).await),
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
