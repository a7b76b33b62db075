//! Copying snapshots from one repository to another (issue 3, item 6).
//!
//! Blob ids are keyed per repository (format-spec/ids.md), so the same bytes have different ids
//! in the source and in the target: every blob is read and opened from the source, its id
//! computed under the target's key, and it is stored through the target's own packer, which
//! deduplicates against the target's index. Trees name their children by id, so each tree is
//! rewritten with the target's ids (every other field kept) and hashed again, bottom-up. Chunk
//! boundaries are kept as they are (no re-chunking): that is what makes a second copy of the same
//! data, or a copy of a snapshot sharing data with one copied before, store nothing new.
//!
//! Each snapshot is its own session, committed as a backup is (format-spec/ordering.md): its
//! packs, then its index objects, then the snapshot object. A snapshot whose source data cannot
//! be read is not written to the target; the others still are.
//!
//! A source snapshot counts as copied when the target has a snapshot whose `meta.copied_from`
//! names it. A map of source id to target id lives for the run, so a blob or a subtree shared by
//! several snapshots is read once; the data blobs' part of it is also kept in the target's
//! catalog (a cache: an entry is trusted only while its target blob is still indexed), so a
//! nightly copy reads only the new data of the source, plus its trees.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use super::progress::Progress;
use crate::compress::Compression;
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Extent, NodeKind, Tree};
use crate::id::Id;
use crate::ops::walk::{Step, TreeWalk};
use crate::repo::Repository;
use crate::repo::lease::{LeaseHandle, LeaseMode};
use crate::repo::packer::BlobSink;

/// The snapshot meta key naming the source snapshot of a copy.
pub const COPIED_FROM: &str = "copied_from";

#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Read everything and count what would be added, but write nothing to the target.
    pub dry_run: bool,
    pub compression: Compression,
    /// How long to wait for a conflicting lease (on either repository).
    pub lease_wait: Duration,
    pub progress: Option<Arc<Progress>>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            dry_run: false,
            compression: Compression::Auto,
            lease_wait: Duration::ZERO,
            progress: None,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CopiedSnapshot {
    pub source: Id,
    /// The new snapshot in the target (`None` in a dry run).
    pub target: Option<Id>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SkippedSnapshot {
    pub source: Id,
    /// The target's snapshot that is already a copy of it.
    pub target: Id,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedSnapshot {
    pub source: Id,
    /// What could not be read, naming the snapshot, the path and the blob.
    pub error: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    pub dry_run: bool,
    pub copied: Vec<CopiedSnapshot>,
    pub skipped: Vec<SkippedSnapshot>,
    /// Snapshots not copied because some of their data could not be read from the source.
    pub failed: Vec<FailedSnapshot>,
    /// Blobs read from the source, and their plaintext bytes.
    pub blobs_read: u64,
    pub bytes_read: u64,
    /// What the target gained: new blobs, their logical size (`new_data_bytes`, as in a
    /// snapshot's summary) and the bytes of the packs uploaded (`stored_bytes_added`).
    pub data_blobs_added: u64,
    pub tree_blobs_added: u64,
    pub new_data_bytes: u64,
    pub stored_bytes_added: u64,
    pub packs_added: u64,
}

/// The snapshots named by `specs` (id prefixes or `latest`, which `host` and `tags` filter), or
/// with no specs every snapshot matching `host` and `tags`; oldest first, each once.
pub fn select_snapshots(
    repo: &Repository,
    specs: &[String],
    host: Option<&str>,
    tags: &[String],
) -> Result<Vec<(Id, Snapshot)>> {
    let mut out: Vec<(Id, Snapshot)> = if specs.is_empty() {
        repo.snapshots()?
            .into_iter()
            .filter(|(_, s)| s.matches(host, tags))
            .collect()
    } else {
        specs
            .iter()
            .map(|s| repo.find_snapshot(s, host, tags))
            .collect::<Result<_>>()?
    };
    out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    out.dedup_by_key(|(id, _)| *id);
    Ok(out)
}

/// The source snapshots the target already has copies of: source id -> target id.
pub fn existing_copies(target: &Repository) -> Result<HashMap<Id, Id>> {
    let mut out = HashMap::new();
    for (id, s) in target.snapshots()? {
        // The target's own snapshot ids count too: nothing is copied onto itself.
        out.insert(id, id);
        for (k, v) in &s.meta {
            if k == COPIED_FROM
                && let Ok(src) = v.parse::<Id>()
            {
                out.insert(src, id);
            }
        }
    }
    Ok(out)
}

/// Copy `snapshots` (see [`select_snapshots`]) from `source` to `target`, oldest first.
/// Snapshots the target already has copies of are skipped. Fails as a whole only when the
/// target (or the source repository itself) fails; a snapshot whose data cannot be read is
/// reported in [`CopyReport::failed`] and the others are still copied.
pub async fn copy_snapshots(
    source: &Arc<Repository>,
    target: &Arc<Repository>,
    snapshots: Vec<(Id, Snapshot)>,
    opts: &CopyOptions,
) -> Result<CopyReport> {
    if source.config().repo_id == target.config().repo_id {
        return Err(Error::invalid(
            "the source and the target are the same repository",
        ));
    }
    let target_mode = if opts.dry_run {
        LeaseMode::Unleased
    } else {
        LeaseMode::Write
    };
    source
        .with_lease(LeaseMode::Read, "copy (source)", opts.lease_wait, |_| {
            target.with_lease(target_mode, "copy", opts.lease_wait, |dst_lease| {
                run(source, target, snapshots, opts, dst_lease)
            })
        })
        .await
}

/// Why a blob or tree could not be copied.
enum CopyError {
    /// Its source data is missing or damaged: this snapshot cannot be copied.
    Source(String),
    /// Anything else (the target, the network, ...): stop.
    Fatal(Error),
}

impl From<Error> for CopyError {
    fn from(e: Error) -> Self {
        CopyError::Fatal(e)
    }
}

/// A failure reading the source at `path`: the snapshot's fault when the data is missing or
/// damaged, the whole run's otherwise.
fn source_error(e: Error, snap: &Id, path: &str) -> CopyError {
    match e.kind() {
        ErrorKind::NotFound | ErrorKind::Corrupt | ErrorKind::UnsupportedVersion => {
            let path = if path.is_empty() { "/" } else { path };
            CopyError::Source(format!("snapshot {}: {path}: {e}", snap.short()))
        }
        _ => CopyError::Fatal(e),
    }
}

/// State of one run.
struct Ctx<'a> {
    source: &'a Arc<Repository>,
    target: &'a Arc<Repository>,
    /// Source id -> target id of blobs and trees stored (or already present) in the target by
    /// snapshots committed in this run.
    committed: HashMap<Id, Id>,
    /// The same for the snapshot being copied; merged into `committed` once it is.
    session: HashMap<Id, Id>,
    /// New data blob pairs of this session, for the catalog's persistent map.
    new_pairs: Vec<(Id, Id)>,
    progress: Arc<Progress>,
    blobs_read: u64,
    bytes_read: u64,
    /// Blobs read from the source at once.
    fetches: usize,
    dry_run: bool,
}

impl Ctx<'_> {
    fn mapped(&self, id: &Id) -> Option<Id> {
        self.session
            .get(id)
            .or_else(|| self.committed.get(id))
            .copied()
    }

    /// A data blob's target id from the catalog's persistent map, if its blob is still indexed
    /// (the map is a cache: prune may have removed the blob since).
    fn remembered(&self, id: &Id) -> Result<Option<Id>> {
        let src_repo = self.source.config().repo_id;
        let Some(t) = self.target.catalog().copied_blob(&src_repo, id)? else {
            return Ok(None);
        };
        Ok(self.target.has_blob(&t, BlobKind::Data)?.then_some(t))
    }
}

async fn run(
    source: &Arc<Repository>,
    target: &Arc<Repository>,
    snapshots: Vec<(Id, Snapshot)>,
    opts: &CopyOptions,
    dst_lease: LeaseHandle,
) -> Result<CopyReport> {
    let mut report = CopyReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut copies = existing_copies(target)?;
    let mut ctx = Ctx {
        source,
        target,
        committed: HashMap::new(),
        session: HashMap::new(),
        new_pairs: Vec::new(),
        progress: opts.progress.clone().unwrap_or_default(),
        blobs_read: 0,
        bytes_read: 0,
        fetches: (source.connections() * 2).clamp(4, 32),
        dry_run: opts.dry_run,
    };
    for (sid, snap) in snapshots {
        if let Some(&tid) = copies.get(&sid) {
            report.skipped.push(SkippedSnapshot {
                source: sid,
                target: tid,
            });
            continue;
        }
        let (sink, uploader) = BlobSink::start(target.clone(), opts.compression, opts.dry_run)?;
        ctx.session.clear();
        ctx.new_pairs.clear();
        let root = copy_tree(&mut ctx, &sink, &sid, snap.tree).await;
        let root = match root {
            Ok(r) => r,
            Err(e) => {
                // Store what was handed to the uploader already, so a retry reuses it.
                sink.abort();
                if let Err(upload) = uploader.finish().await {
                    // The target stopped taking packs: that is the cause, and the end.
                    match e {
                        CopyError::Fatal(Error::UploadStopped) => {}
                        CopyError::Fatal(e) => tracing::warn!("{e}"),
                        CopyError::Source(msg) => tracing::warn!("{msg}"),
                    }
                    return Err(upload);
                }
                match e {
                    CopyError::Source(msg) => {
                        tracing::error!("{msg}; snapshot not copied");
                        ctx.progress.errors.fetch_add(1, Ordering::Relaxed);
                        report.failed.push(FailedSnapshot {
                            source: sid,
                            error: msg,
                        });
                        continue;
                    }
                    CopyError::Fatal(e) => return Err(e),
                }
            }
        };
        let up = uploader.finish_with(&sink).await?;
        let st = &sink.stats;
        report.data_blobs_added += st.data_blobs.load(Ordering::Relaxed);
        report.tree_blobs_added += st.tree_blobs.load(Ordering::Relaxed);
        report.new_data_bytes += st.raw_bytes.load(Ordering::Relaxed);
        report.stored_bytes_added += up.bytes;
        report.packs_added += up.packs;

        let mut new = snap.clone();
        new.tree = root;
        new.parent = snap.parent.and_then(|p| copies.get(&p).copied());
        new.program = format!("cairn {}", env!("CARGO_PKG_VERSION"));
        new.meta.retain(|(k, _)| k != COPIED_FROM);
        new.meta.push((COPIED_FROM.into(), sid.to_hex()));
        let tid = if opts.dry_run {
            None
        } else {
            // The target's lease must still hold, so no prune can have removed what this
            // snapshot deduplicated against. (What was read from the source is verified.)
            dst_lease.verify().await?;
            let tid = target.save_snapshot(&new).await?;
            target
                .catalog()
                .add_copied_blobs(&source.config().repo_id, &ctx.new_pairs)?;
            Some(tid)
        };
        let session = std::mem::take(&mut ctx.session);
        ctx.committed.extend(session);
        if let Some(t) = tid {
            copies.insert(sid, t);
        }
        report.copied.push(CopiedSnapshot {
            source: sid,
            target: tid,
        });
    }
    report.blobs_read = ctx.blobs_read;
    report.bytes_read = ctx.bytes_read;
    Ok(report)
}

/// Copy source tree `root` of snapshot `snap` and everything below it; returns the id of the
/// rewritten tree in the target. Subtrees first (a tree's new id depends on theirs).
async fn copy_tree(
    ctx: &mut Ctx<'_>,
    sink: &Arc<BlobSink>,
    snap: &Id,
    root: Id,
) -> std::result::Result<Id, CopyError> {
    // A tree copied before in this run: everything below it was copied with it.
    if let Some(t) = ctx.mapped(&root) {
        return Ok(t);
    }
    let mut walk = TreeWalk::new(root);
    loop {
        let step = {
            let done = &*ctx;
            walk.step(ctx.source, |_, n| {
                n.subtree.is_some_and(|t| done.mapped(&t).is_some())
            })
            .await
        };
        match step {
            None => break,
            Some(Step::Enter(e)) => {
                if let Err(err) = e.tree {
                    return Err(source_error(err, snap, &snapshot_path(e.path)));
                }
            }
            Some(Step::Leave(l)) => {
                let id = l.id;
                let path = snapshot_path(l.path);
                let Some(tree) = l.tree else { continue };
                let mut nodes = tree.nodes;
                for n in &mut nodes {
                    if let Some(sub) = n.subtree {
                        n.subtree = Some(ctx.mapped(&sub).ok_or_else(|| {
                            Error::Other(format!("tree {sub} was not copied (internal error)"))
                        })?);
                    }
                }

                // The data blobs of this directory's files not mapped yet, each once, with the first
                // path that needs it (for error messages).
                let mut wanted: Vec<(Id, String)> = Vec::new();
                let mut seen = HashSet::new();
                for n in &nodes {
                    for e in &n.content {
                        if let Extent::Data { id, .. } = e
                            && ctx.mapped(id).is_none()
                            && seen.insert(*id)
                        {
                            if let Some(t) = ctx.remembered(id)? {
                                ctx.session.insert(*id, t);
                                continue;
                            }
                            wanted.push((*id, format!("{path}/{}", n.name_lossy())));
                        }
                    }
                    if n.kind == NodeKind::File {
                        ctx.progress.add(1, n.size);
                    }
                }
                let source = ctx.source;
                let target = ctx.target;
                let fetched: Vec<(Id, Id, u64)> = futures::stream::iter(wanted)
                    .map(|(sid, p)| {
                        let sink = sink.clone();
                        async move {
                            let plain = source
                                .read_blob(&sid)
                                .await
                                .map_err(|e| source_error(e, snap, &p))?;
                            let len = plain.len() as u64;
                            let keys = target.keys().clone();
                            let tid = tokio::task::spawn_blocking(move || {
                                let tid = keys.blob_id(&plain);
                                sink.save(BlobKind::Data, tid, &plain).map(|_| tid)
                            })
                            .await
                            .map_err(|e| Error::Other(e.to_string()))??;
                            Ok::<_, CopyError>((sid, tid, len))
                        }
                    })
                    .buffer_unordered(ctx.fetches)
                    .try_collect()
                    .await?;
                for (sid, tid, len) in fetched {
                    ctx.blobs_read += 1;
                    ctx.bytes_read += len;
                    ctx.progress.read_bytes.fetch_add(len, Ordering::Relaxed);
                    ctx.session.insert(sid, tid);
                    if !ctx.dry_run {
                        ctx.new_pairs.push((sid, tid));
                    }
                }

                for n in &mut nodes {
                    for e in &mut n.content {
                        if let Extent::Data { id, .. } = e {
                            *id = ctx.mapped(id).ok_or_else(|| {
                                Error::Other(format!("blob {id} was not copied (internal error)"))
                            })?;
                        }
                    }
                }
                let data = Tree { nodes }.encode();
                let tid = target.keys().blob_id(&data);
                let sink = sink.clone();
                tokio::task::spawn_blocking(move || sink.save(BlobKind::Tree, tid, &data))
                    .await
                    .map_err(|e| Error::Other(e.to_string()))??;
                ctx.session.insert(id, tid);
            }
        }
    }
    Ok(ctx
        .mapped(&root)
        .ok_or_else(|| Error::Other(format!("tree {root} was not copied (internal error)")))?)
}

/// A walk's relative path as a snapshot path: `/a/b`, or empty for the start.
fn snapshot_path(rel: &[u8]) -> String {
    if rel.is_empty() {
        String::new()
    } else {
        format!("/{}", String::from_utf8_lossy(rel))
    }
}
