//! Packing and uploading new blobs (DESIGN.md §4-5).
//!
//! [`BlobSink`] is shared by the threads of a backup: each new blob is sealed by the caller,
//! appended to the open pack of its kind, and a full pack is laid out (blob order shuffled)
//! and handed to the uploader over a bounded channel, which is what bounds memory when the
//! storage is slower than the CPU. The uploader stores packs with bounded concurrency and writes
//! an index object after every few packs and at the end, never naming a pack before it is
//! stored. Dedup: a blob already in the catalog or already claimed in this session is skipped.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rand::seq::SliceRandom;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Repository, keys};
use crate::backend::BackendErrorKind;
use crate::compress::Compression;
use crate::error::{Error, Result};
use crate::format::index::{IndexObject, IndexPack};
use crate::format::pack::{BlobKind, PackBuilder, PackEntry, seal_blob, seal_blob_delta};
use crate::id::Id;

/// When deltas are kept. Bases are never deltas themselves, so a chunk that changes every night
/// is a delta that carries every night's changes since its base. If a chunk of sealed size F
/// gains d bytes of delta a night, storing it whole every K nights costs F/K + dK/2 a night on
/// average, least at K = sqrt(2F/d), where the carried delta is sqrt(2d/F) of F: about a fifth
/// for a 64 KiB chunk of SQL in which a dozen rows change a night. So a chunk replacing a delta
/// that had grown past 1/`DELTA_REBASE` of the new chunk sealed alone is stored whole (and
/// becomes the next base); otherwise the delta is kept when it is at most `DELTA_KEEP_PERCENT`
/// of the chunk sealed alone. A delta that is mostly new rows, at the end of a growing table,
/// is still worth it; one that is half the chunk usually means the chunk merged two old ones
/// (a cut point vanished), and as a delta it would be stored whole again the next night.
pub const DELTA_REBASE: usize = 5;
pub const DELTA_KEEP_PERCENT: usize = 50;

/// Index objects are written after this many packs, so a crashed backup repeats little.
pub const INDEX_EVERY_PACKS: usize = 8;

struct FinishedPack {
    id: Id,
    parts: Vec<Bytes>,
    size: u64,
    entries: Vec<PackEntry>,
}

/// Counters of what a session added.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub data_blobs: AtomicU64,
    pub tree_blobs: AtomicU64,
    pub raw_bytes: AtomicU64,
    pub stored_bytes: AtomicU64,
    /// Data blobs stored as deltas against a base.
    pub delta_blobs: AtomicU64,
}

/// Accepts blobs from many threads; see the module docs.
pub struct BlobSink {
    repo: Arc<Repository>,
    compression: Compression,
    dry_run: bool,
    builders: Mutex<(PackBuilder, PackBuilder)>,
    tx: Mutex<Option<mpsc::Sender<FinishedPack>>>,
    claimed: Mutex<HashSet<Id>>,
    /// Prefixes of every blob id the catalog held when the session started (see
    /// `Catalog::blob_prefixes`): a blob whose prefix is absent is certainly new, which saves a
    /// catalog query for nearly every chunk of new data.
    known: Vec<u64>,
    pub stats: SinkStats,
}

fn prefix(id: &Id) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.0[..8]);
    u64::from_be_bytes(b)
}

/// The running upload task; [`Uploader::finish`] waits for it.
pub struct Uploader {
    task: tokio::task::JoinHandle<Result<UploadSummary>>,
}

#[derive(Debug, Default, Clone)]
pub struct UploadSummary {
    pub packs: u64,
    pub bytes: u64,
    pub index_objects: Vec<Id>,
}

impl BlobSink {
    /// Start a session: returns the sink and the uploader task (spawned on the current runtime).
    pub fn start(
        repo: Arc<Repository>,
        compression: Compression,
        dry_run: bool,
    ) -> Result<(Arc<BlobSink>, Uploader)> {
        let known = repo.catalog().blob_prefixes()?;
        let conns = repo.connections();
        // One finished pack waits while `conns` are stored: this bounds the packs held in memory.
        let (tx, rx) = mpsc::channel(1);
        let sink = Arc::new(BlobSink {
            repo: repo.clone(),
            compression,
            dry_run,
            builders: Mutex::new((PackBuilder::new(), PackBuilder::new())),
            tx: Mutex::new(Some(tx)),
            claimed: Mutex::new(HashSet::new()),
            known,
            stats: SinkStats::default(),
        });
        let task = tokio::spawn(upload_loop(repo, rx, conns));
        Ok((sink, Uploader { task }))
    }

    /// Whether the catalog had a blob with this id's prefix when the session started: `false`
    /// means the blob was certainly not indexed then.
    pub fn maybe_indexed(&self, id: &Id) -> bool {
        self.known.binary_search(&prefix(id)).is_ok()
    }

    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// Whether the blob is new to the repository, claiming it for this session if so. Exactly
    /// one caller gets `true` for each new id.
    pub fn claim(&self, id: &Id, kind: BlobKind) -> Result<bool> {
        if self
            .claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
        {
            return Ok(false);
        }
        if self.maybe_indexed(id) && self.repo.has_blob(id, kind)? {
            return Ok(false);
        }
        Ok(self
            .claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*id))
    }

    /// Store a blob whose id the caller computed, unless it is already stored. Blocking: call
    /// from a worker thread, not from async code. Returns whether it was new.
    pub fn save(&self, kind: BlobKind, id: Id, plaintext: &[u8]) -> Result<bool> {
        if !self.claim(&id, kind)? {
            return Ok(false);
        }
        self.add_claimed(kind, id, plaintext)?;
        Ok(true)
    }

    /// Seal and pack a blob already claimed with [`BlobSink::claim`].
    pub fn add_claimed(&self, kind: BlobKind, id: Id, plaintext: &[u8]) -> Result<()> {
        self.count(kind, plaintext);
        if self.dry_run {
            return Ok(());
        }
        let sealed = seal_blob(self.repo.keys(), &id, plaintext, self.compression);
        if kind == BlobKind::Tree {
            // Only ever read after the index names the blob, and verified when read: caching
            // it before its pack is stored is safe.
            self.repo.cache_written_tree(&id, &sealed);
        }
        self.pack(kind, id, sealed, plaintext.len() as u32, None)
    }

    /// Seal and pack a data blob already claimed, as a delta against `base` (an indexed data
    /// blob with no base of its own, whose plaintext is `base_plain`) when that pays (see
    /// [`DELTA_REBASE`]); otherwise as [`BlobSink::add_claimed`] does. `carried` is the sealed
    /// length of the delta blob this chunk replaces, if it replaces one against the same base.
    /// Returns whether it was stored as a delta.
    pub fn add_claimed_delta(
        &self,
        id: Id,
        plaintext: &[u8],
        base: Id,
        base_plain: &[u8],
        carried: Option<usize>,
    ) -> Result<bool> {
        self.count(BlobKind::Data, plaintext);
        if self.dry_run {
            return Ok(false);
        }
        let alone = seal_blob(self.repo.keys(), &id, plaintext, self.compression);
        let keys = self.repo.keys();
        let raw_len = plaintext.len() as u32;
        // The limit varies from 0.6 to 1.4 times 1/DELTA_REBASE with the chunk's id: chunks
        // that change at the same pace (all of a table's newest rows) then are not all stored
        // whole on the same night.
        let jitter = 60 + 80 * id.0[0] as usize / 255;
        let rebase = carried.is_some_and(|c| c * DELTA_REBASE * 100 > alone.len() * jitter);
        let limit = alone.len() * DELTA_KEEP_PERCENT / 100;
        let delta = match rebase {
            true => None,
            false => seal_blob_delta(keys, &id, plaintext, base_plain, self.compression, limit),
        };
        tracing::trace!(
            "chunk {id}: {} bytes, {} sealed alone, delta {:?}, carried {carried:?}",
            plaintext.len(),
            alone.len(),
            delta.as_ref().map(|d| d.len())
        );
        match delta {
            Some(delta) => {
                self.stats.delta_blobs.fetch_add(1, Ordering::Relaxed);
                self.pack(BlobKind::Data, id, delta, raw_len, Some(base))?;
                Ok(true)
            }
            None => {
                self.pack(BlobKind::Data, id, alone, raw_len, None)?;
                Ok(false)
            }
        }
    }

    fn count(&self, kind: BlobKind, plaintext: &[u8]) {
        match kind {
            BlobKind::Data => self.stats.data_blobs.fetch_add(1, Ordering::Relaxed),
            BlobKind::Tree => self.stats.tree_blobs.fetch_add(1, Ordering::Relaxed),
        };
        self.stats
            .raw_bytes
            .fetch_add(plaintext.len() as u64, Ordering::Relaxed);
    }

    /// Add a sealed blob to the open pack of its kind, handing the pack to the uploader when
    /// it is full.
    fn pack(
        &self,
        kind: BlobKind,
        id: Id,
        sealed: Vec<u8>,
        raw_len: u32,
        base: Option<Id>,
    ) -> Result<()> {
        self.stats
            .stored_bytes
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        let full = {
            let mut b = self.builders.lock().unwrap_or_else(|p| p.into_inner());
            let builder = match kind {
                BlobKind::Data => &mut b.0,
                BlobKind::Tree => &mut b.1,
            };
            builder.add_entry(kind, id, sealed, raw_len, base);
            if builder.size() >= self.repo.config().pack_size as usize {
                Some(std::mem::take(builder))
            } else {
                None
            }
        };
        if let Some(builder) = full {
            let pack = self.layout(builder);
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let tx = tx.ok_or_else(|| Error::Other("blob sink already flushed".into()))?;
            tx.blocking_send(pack)
                .map_err(|_| Error::Other("upload stopped (see the error above)".into()))?;
        }
        Ok(())
    }

    fn layout(&self, builder: PackBuilder) -> FinishedPack {
        let mut order: Vec<usize> = (0..builder.count()).collect();
        order.shuffle(&mut rand::rng());
        let (parts, entries) = builder.finish_parts(self.repo.keys().sealer(), &order);
        let mut h = blake3::Hasher::new();
        for p in &parts {
            h.update(p);
        }
        FinishedPack {
            id: Id(*h.finalize().as_bytes()),
            size: parts.iter().map(|p| p.len() as u64).sum(),
            parts,
            entries,
        }
    }

    /// Send the partly filled packs and close the channel; the uploader then finishes.
    pub async fn flush(&self) -> Result<()> {
        let (data, tree) = {
            let mut b = self.builders.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut b.0), std::mem::take(&mut b.1))
        };
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(tx) = tx else { return Ok(()) };
        for builder in [data, tree] {
            if builder.is_empty() {
                continue;
            }
            let pack = self.layout(builder);
            tx.send(pack)
                .await
                .map_err(|_| Error::Other("upload stopped (see the error above)".into()))?;
        }
        Ok(())
    }

    /// Close the channel without sending what is buffered (on failure or interruption).
    pub fn abort(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl Uploader {
    /// Wait until every pack is stored and indexed.
    pub async fn finish(self) -> Result<UploadSummary> {
        self.task
            .await
            .map_err(|e| Error::Other(format!("upload task failed: {e}")))?
    }
}

async fn store_pack(repo: Arc<Repository>, pack: FinishedPack) -> Result<IndexPack> {
    let key = keys::pack(&pack.id);
    let size = pack.size;
    match repo.backend().put_parts(&key, pack.parts).await {
        Ok(()) => {}
        Err(e) if e.kind == BackendErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    Ok(IndexPack {
        id: pack.id,
        size,
        entries: pack.entries,
    })
}

async fn upload_loop(
    repo: Arc<Repository>,
    mut rx: mpsc::Receiver<FinishedPack>,
    conns: usize,
) -> Result<UploadSummary> {
    let mut running: JoinSet<Result<IndexPack>> = JoinSet::new();
    let mut pending: Vec<IndexPack> = Vec::new();
    let mut summary = UploadSummary::default();
    let mut closed = false;
    loop {
        // Accept packs while there is room; otherwise wait for an upload to finish.
        tokio::select! {
            p = rx.recv(), if !closed && running.len() < conns => match p {
                Some(p) => {
                    running.spawn(store_pack(repo.clone(), p));
                }
                None => closed = true,
            },
            done = running.join_next(), if !running.is_empty() => {
                let done = done.expect("join set not empty");
                let ip = match done {
                    Ok(Ok(ip)) => ip,
                    Ok(Err(e)) => { rx.close(); return Err(e) }
                    Err(e) => { rx.close(); return Err(Error::Other(format!("upload task: {e}"))) }
                };
                summary.packs += 1;
                summary.bytes += ip.size;
                pending.push(ip);
                if pending.len() >= INDEX_EVERY_PACKS {
                    let idx = IndexObject { supersedes: vec![], packs: std::mem::take(&mut pending) };
                    summary.index_objects.push(repo.save_index(&idx).await?);
                }
            },
            else => break,
        }
        if closed && running.is_empty() {
            break;
        }
    }
    if !pending.is_empty() {
        let idx = IndexObject {
            supersedes: vec![],
            packs: pending,
        };
        summary.index_objects.push(repo.save_index(&idx).await?);
    }
    Ok(summary)
}
