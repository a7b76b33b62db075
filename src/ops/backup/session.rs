//! A backup session: the blob sink and uploader, and the snapshot written at the end.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{BackupOptions, BackupOutcome, SourceProblem};
use crate::error::{Error, Result};
use crate::format::Timestamp;
use crate::format::snapshot::{Snapshot, Summary};
use crate::id::Id;
use crate::repo::lease::LeaseHandle;
use crate::repo::packer::{BlobSink, Uploader};
use crate::repo::{Repository, hostname, username};

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
        let up = self.uploader.finish_with(&self.sink).await?;
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
            let id = repo.save_snapshot(&snap).await?;
            crate::ops::find::index_new_snapshot(repo, &id, &snap).await;
            Some(id)
        };
        Ok(BackupOutcome {
            snapshot_id,
            snapshot: snap,
            errors,
        })
    }

    /// After `error`: store what was already handed to the uploader, so a retry reuses it,
    /// and return the error to report. When an upload failed, that failure is the cause (what
    /// failed after it only found the uploader gone, [`Error::UploadStopped`]), so it is the
    /// one returned, with its kind: a storage that stopped answering is a transient failure.
    pub(crate) async fn abandon(self, error: Error) -> Error {
        self.sink.abort();
        match self.uploader.finish().await {
            Ok(_) => error,
            Err(upload) => {
                if !matches!(error, Error::UploadStopped) {
                    tracing::warn!("{error}");
                }
                upload
            }
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
