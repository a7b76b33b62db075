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
use crate::format::pack::{
    BlobKind, MAX_DELTA_CHAIN, PackBuilder, PackEntry, seal_blob, seal_blob_delta,
};
use crate::id::Id;

/// When deltas are kept. A changed chunk is a delta against the chunk it replaces, which may be
/// a delta itself, so a chunk that changes every night costs about that night's changes, d.
/// Reading it opens the whole chain, so a chain ends once the chunk would be its `L`th delta,
/// `L` between `DELTA_CHAIN_MIN` and [`MAX_DELTA_CHAIN`] (what readers accept), fixed for the
/// chain by its root's id: the chains of chunks that changed together (all of a table's newest
/// rows, stored whole by the same backup) then end on different nights, about 1 in 9 each night,
/// not most of them within a few nights. A chunk that ends a chain is stored as a delta against
/// the chain's root, the chunk stored whole it started from, if that delta (all changes since
/// the root) is at most `DELTA_REROOT_PERCENT` of the chunk sealed alone, F, and becomes the first
/// delta of a new chain on the same root; otherwise it is stored whole and becomes a new root.
/// A chunk where one row changes a night then costs d a night plus a growing delta every L
/// nights, stored whole only every few chains; one where a dozen rows change a night costs
/// d + F/L or less. Any other delta is kept when it is at most `DELTA_KEEP_PERCENT` of F: one
/// that is mostly new rows, at the end of a growing table, is still worth a little, and so is
/// one that is about half the chunk because the chunk merged two old ones (a cut point
/// vanished; the next night's delta against the merged chunk is small again). Keeping those
/// instead of storing them whole (at 50%) took three runs of three uniform 1% nights from 2.41x
/// to 2.27x the changed rows on average, with less spread between nights.
pub const DELTA_CHAIN_MIN: usize = 8;
pub const DELTA_REROOT_PERCENT: usize = 50;
pub const DELTA_KEEP_PERCENT: usize = 90;

/// The longest chain of deltas the writer makes on root `root` ([`DELTA_CHAIN_MIN`]).
pub fn delta_chain_limit(root: &Id) -> usize {
    DELTA_CHAIN_MIN + root.0[0] as usize % (MAX_DELTA_CHAIN - DELTA_CHAIN_MIN + 1)
}

/// A blob a new chunk may be stored as a delta against: its id, its plaintext, how many delta
/// blobs reading it opens, and the root of its chain (its own id if it is stored whole).
#[derive(Debug, Clone, Copy)]
pub struct DeltaBase<'a> {
    pub id: Id,
    pub plain: &'a [u8],
    pub depth: usize,
    pub root: Id,
}

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
            self.repo.cache_written_blob(&id, &sealed);
        }
        self.pack(kind, id, sealed, plaintext.len() as u32, None)
    }

    /// Seal and pack a data blob already claimed, as a delta against `base` (the chunk it
    /// replaces), or, when that would make `base`'s chain too long, against the chain's root,
    /// whose plaintext is `root_plain`, when that pays (see [`DELTA_CHAIN_MIN`]); otherwise as
    /// [`BlobSink::add_claimed`] does. Returns whether it was stored as a delta.
    pub fn add_claimed_delta(
        &self,
        id: Id,
        plaintext: &[u8],
        base: DeltaBase,
        root_plain: Option<&[u8]>,
    ) -> Result<bool> {
        self.count(BlobKind::Data, plaintext);
        if self.dry_run {
            return Ok(false);
        }
        let alone = seal_blob(self.repo.keys(), &id, plaintext, self.compression);
        let keys = self.repo.keys();
        let raw_len = plaintext.len() as u32;
        let (against, percent) = match base.depth < delta_chain_limit(&base.root) {
            true => (Some((base.id, base.plain)), DELTA_KEEP_PERCENT),
            false => (root_plain.map(|r| (base.root, r)), DELTA_REROOT_PERCENT),
        };
        let delta = against.and_then(|(b, b_plain)| {
            let limit = alone.len() * percent / 100;
            seal_blob_delta(keys, &id, plaintext, b_plain, self.compression, limit).map(|d| (d, b))
        });
        tracing::trace!(
            "chunk {id}: {} bytes, {} sealed alone, delta {:?}, base depth {}",
            plaintext.len(),
            alone.len(),
            delta.as_ref().map(|d| (d.0.len(), d.1 != base.id)),
            base.depth
        );
        match delta {
            Some((delta, base)) => {
                self.stats.delta_blobs.fetch_add(1, Ordering::Relaxed);
                // The next version of this chunk reads it (as for trees above, safe to cache
                // before its pack is stored).
                self.repo.cache_written_blob(&id, &delta);
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
            tx.blocking_send(pack).map_err(|_| Error::UploadStopped)?;
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
            tx.send(pack).await.map_err(|_| Error::UploadStopped)?;
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

    /// Send `sink`'s partly filled packs and wait for every upload. If the uploader had
    /// stopped, its own error is returned (the cause), not [`Error::UploadStopped`].
    pub async fn finish_with(self, sink: &BlobSink) -> Result<UploadSummary> {
        let flushed = sink.flush().await;
        let finished = self.finish().await;
        match (flushed, finished) {
            (Ok(()), r) => r,
            (Err(_), Err(upload)) => Err(upload),
            (Err(e), Ok(_)) => Err(e),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::backend::MemoryBackend;
    use crate::crypto::KdfParams;
    use crate::error::ErrorKind;
    use crate::repo::{InitOptions, OpenOptions, keys};

    /// A chunk of SQL-like lines; each version after the first changes `per` more rows.
    fn version(v: usize, per: usize) -> Vec<u8> {
        let mut edits = [0usize; 700];
        for e in 1..=v {
            for j in 0..per {
                edits[(e * 37 + j * 101 + 11) % 700] += 1;
            }
        }
        let mut out = Vec::new();
        for (row, n) in edits.iter().enumerate() {
            // Like hash columns: a changed row hardly compresses against its old version.
            let h = |k: u64| {
                (row as u64 * 1000 + *n as u64 * 7 + k).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            };
            let line = format!("({row},'{:016x}','{:016x}'),\n", h(1), h(2));
            out.extend_from_slice(line.as_bytes());
        }
        out
    }

    async fn repo() -> (tempfile::TempDir, Arc<MemoryBackend>, Arc<Repository>) {
        let cache = tempfile::tempdir().unwrap();
        let init = InitOptions {
            kdf: KdfParams::INSECURE_FOR_TESTS,
            ..Default::default()
        };
        let backend = Arc::new(MemoryBackend::new());
        let open = OpenOptions::new(cache.path());
        let repo = Repository::init(backend.clone(), b"pw", &init, &open)
            .await
            .unwrap();
        (cache, backend, Arc::new(repo))
    }

    /// Store `plain` in a session of its own, as a delta against `base` if given; `depth`
    /// stands for the base's depth (a test may lie, as a damaged writer could); `root` is the
    /// plaintext of the end of the base's chain.
    async fn store(
        repo: &Arc<Repository>,
        plain: &[u8],
        base: Option<(&[u8], usize)>,
        root: Option<&[u8]>,
    ) -> Id {
        let id = repo.keys().blob_id(plain);
        let (sink, uploader) = BlobSink::start(repo.clone(), Compression::Auto, false).unwrap();
        assert!(sink.claim(&id, BlobKind::Data).unwrap());
        match base {
            Some((b, depth)) => {
                let b_id = repo.keys().blob_id(b);
                let base = DeltaBase {
                    id: b_id,
                    plain: b,
                    depth,
                    root: root.map_or(b_id, |r| repo.keys().blob_id(r)),
                };
                sink.add_claimed_delta(id, plain, base, root).unwrap();
            }
            None => sink.add_claimed(BlobKind::Data, id, plain).unwrap(),
        }
        sink.flush().await.unwrap();
        drop(sink);
        uploader.finish().await.unwrap();
        id
    }

    /// Stores 30 nightly versions of a chunk as the backup does; returns how many versions
    /// started a new chain against the old root, how many were stored whole, and the bytes
    /// stored against those of the first version.
    async fn nights(per: usize) -> (usize, usize, u64, u64) {
        let (_cache, _, repo) = repo().await;
        let mut prev = version(0, per);
        let first = store(&repo, &prev, None, None).await;
        assert_eq!(repo.delta_root(&first).unwrap(), (first, 0));
        let (mut rerooted, mut whole) = (0, 0);
        for v in 1..=30 {
            let plain = version(v, per);
            let (root, base_depth) = repo.delta_root(&repo.keys().blob_id(&prev)).unwrap();
            let root_plain = repo.read_blob(&root).await.unwrap();
            let id = store(&repo, &plain, Some((&prev, base_depth)), Some(&root_plain)).await;
            let (new_root, depth) = repo.delta_root(&id).unwrap();
            if base_depth < delta_chain_limit(&root) {
                assert_eq!((new_root, depth), (root, base_depth + 1), "version {v}");
            } else if depth == 1 {
                assert_eq!(new_root, root, "version {v} starts a chain on the old root");
                rerooted += 1;
            } else {
                assert_eq!((new_root, depth), (id, 0), "version {v} is stored whole");
                whole += 1;
            }
            assert!(depth <= MAX_DELTA_CHAIN);
            assert_eq!(repo.read_blob(&id).await.unwrap(), plain, "version {v}");
            prev = plain;
        }
        assert_eq!(repo.read_blob(&first).await.unwrap(), version(0, per));
        let first_len = repo.catalog().lookup(&first).unwrap().unwrap().length as u64;
        let (_, stored) = repo.catalog().blob_totals().unwrap();
        (rerooted, whole, stored, first_len)
    }

    #[tokio::test]
    async fn a_chunk_changing_a_little_every_night_starts_new_chains_on_its_root() {
        let (rerooted, whole, stored, first) = nights(1).await;
        assert!(
            rerooted >= 1 && whole == 0,
            "{rerooted} new chains, {whole} whole"
        );
        // 31 versions cost about one chunk and the changes, not 31 chunks.
        assert!(
            stored < 2 * first,
            "{stored} bytes for 31 versions of {first}"
        );
    }

    #[tokio::test]
    async fn a_chunk_changing_much_every_night_is_stored_whole_when_its_chain_ends() {
        let (rerooted, whole, stored, first) = nights(80).await;
        // A chain's end may still start a new chain on the root (chains are 8-16 long, by the
        // root's id, which the random key decides), but by 16 versions after the root the
        // delta against it has grown past half the chunk.
        assert!(whole >= 1, "{rerooted} new chains, {whole} whole");
        // Whole chunks where chains end or start anew on their root, and each night's changes
        // (here about a tenth of the chunk): far below 31 whole chunks.
        let bound = (1 + whole + rerooted) as u64 * first + 30 * first / 5;
        assert!(stored < bound, "{stored} bytes for 31 versions of {first}");
    }

    #[tokio::test]
    async fn a_chain_longer_than_readers_accept_is_corrupt() {
        let (_cache, _, repo) = repo().await;
        let mut prev = version(0, 1);
        store(&repo, &prev, None, None).await;
        let mut ids = Vec::new();
        for v in 1..=MAX_DELTA_CHAIN + 1 {
            let plain = version(v, 1);
            // Lying about the base's depth makes the writer extend the chain past the limit.
            ids.push(store(&repo, &plain, Some((&prev, 0)), None).await);
            prev = plain;
        }
        let last_good = ids[MAX_DELTA_CHAIN - 1];
        assert_eq!(repo.delta_root(&last_good).unwrap().1, MAX_DELTA_CHAIN);
        assert_eq!(
            repo.read_blob(&last_good).await.unwrap(),
            version(MAX_DELTA_CHAIN, 1)
        );
        let too_long = ids[MAX_DELTA_CHAIN];
        let e = repo.read_blob(&too_long).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains(&too_long.to_string()), "{e}");
        assert!(repo.delta_root(&too_long).is_err());
    }

    /// Delta blobs this process wrote are cached (sealed), so reading the next version's base
    /// downloads only the chain's root: here their packs are gone and the chain still reads,
    /// while a process with an empty cache must download them (and cannot).
    #[tokio::test]
    async fn a_chain_of_deltas_reads_from_the_cache_but_its_root() {
        let (_cache, backend, repo) = repo().await;
        let mut prev = version(0, 1);
        let root = store(&repo, &prev, None, None).await;
        let mut last = root;
        for v in 1..=3 {
            let plain = version(v, 1);
            last = store(&repo, &plain, Some((&prev, v - 1)), None).await;
            prev = plain;
        }
        assert_eq!(repo.delta_root(&last).unwrap(), (root, 3));
        let root_pack = repo.lookup_blob(&root).unwrap().unwrap().pack;
        let packs = repo.catalog().packs().unwrap();
        for (p, _, _) in packs {
            if p != root_pack {
                backend.delete(&keys::pack(&p)).await.unwrap();
            }
        }
        assert_eq!(repo.read_blob(&last).await.unwrap(), version(3, 1));

        let other_cache = tempfile::tempdir().unwrap();
        let cold = Repository::open(
            backend.clone(),
            || Ok(zeroize::Zeroizing::new(b"pw".to_vec())),
            &OpenOptions::new(other_cache.path()),
        )
        .await
        .unwrap();
        let e = cold.read_blob(&last).await.unwrap_err();
        assert!(e.to_string().contains("pack"), "{e}");
    }
}
