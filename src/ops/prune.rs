//! Prune (DESIGN.md §5-6): reclaim the space of data no snapshot needs, without ever deleting
//! what a snapshot might need.
//!
//! Under the exclusive lease: load the index and the snapshots from the repository (refusing to
//! go on if any of them is damaged: what cannot be read cannot be marked), mark every blob the
//! snapshots reference (the mark set lives in SQLite, not in memory), then sort the packs:
//!
//! - packs whose every blob is needed stay;
//! - packs with needed blobs and more than `max_unused` of their bytes unneeded are repacked:
//!   their needed blobs are copied (still sealed, verified on the way) into new packs, and the
//!   old pack becomes obsolete;
//! - packs with no needed blob, and packs no index names, are obsolete.
//!
//! Deletion has two phases. Obsolete packs are first *condemned*: listed in a condemnation
//! record (`condemned/<id>`) with the time, while staying in the index so anything that still
//! refers to them reads fine, and new backups stop deduplicating against them. A later prune
//! deletes a condemned pack once `grace` has passed, unless a snapshot has come to need one of
//! its blobs in the meantime (a backup whose lease went stale, say), in which case the pack is
//! kept. With a grace of zero, obsolete packs are deleted in the same run.
//!
//! Write order: new packs; the new condemnation record (superseding the old ones); the new index
//! objects (the last superseding every old one); then deletion of old index objects, old
//! records, and last the packs. A crash at any point leaves a repository that `check` passes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand::seq::SliceRandom;

use crate::error::{Error, Result};
use crate::format::Timestamp;
use crate::format::condemned::{Condemned, CondemnedPack};
use crate::format::index::IndexPack;
use crate::format::pack::{BlobKind, PackBuilder, PackEntry, open_blob};
use crate::format::tree::Extent;
use crate::id::Id;
use crate::ops::repair::write_index;
use crate::ops::walk::{Step, TreeWalk};
use crate::repo::lease::{LeaseHandle, LeaseMode};
use crate::repo::{Repository, keys};

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack a pack when more than this share (0..=1) of its blob bytes is unneeded.
    pub max_unused: f64,
    /// How long a pack stays condemned before a prune may delete it.
    pub grace: Duration,
    pub dry_run: bool,
    pub lease_wait: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.05,
            grace: Duration::from_secs(3600),
            dry_run: false,
            lease_wait: Duration::ZERO,
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: u64,
    pub packs_before: u64,
    pub bytes_before: u64,
    pub blobs_used: u64,
    /// Packs deleted (or, in a dry run, that would be) and their size.
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
    /// Packs condemned by this run (deleted by a prune after the grace period).
    pub packs_condemned: u64,
    pub bytes_condemned: u64,
    /// Condemned packs still waiting for their grace period to end.
    pub packs_waiting: u64,
    pub bytes_waiting: u64,
    /// Condemned packs kept because a snapshot needs them again.
    pub packs_rescued: u64,
    pub packs_repacked: u64,
    pub bytes_repacked: u64,
    pub packs_written: u64,
    pub bytes_written: u64,
    pub index_objects_written: u64,
    pub index_objects_removed: u64,
}

pub async fn prune(repo: &Arc<Repository>, opts: &PruneOptions) -> Result<PruneReport> {
    repo.with_lease(LeaseMode::Exclusive, "prune", opts.lease_wait, |lease| {
        run(repo, opts, lease)
    })
    .await
}

/// Read the index and the snapshots from the repository, failing on any damage.
async fn load_strict(repo: &Repository) -> Result<(Vec<Id>, Vec<Id>)> {
    let mut objects = Vec::new();
    for (id, r) in repo.load_index_objects().await? {
        match r {
            Ok(o) => objects.push((id, o)),
            Err(e) => {
                return Err(Error::Other(format!(
                    "{e}; prune cannot tell what the damaged index object held \
                     (run `cairn repair index` first)"
                )));
            }
        }
    }
    let old_index: Vec<Id> = objects.iter().map(|o| o.0).collect();
    // Every object decoded, so nothing is damaged. If the catalog was built from exactly the
    // effective ones (opening the repository just refreshed it), it already holds their
    // entries; otherwise install them (a million entries take a while).
    let superseded: HashSet<Id> = objects
        .iter()
        .flat_map(|(_, o)| o.supersedes.iter().copied())
        .collect();
    let effective: HashSet<Id> = old_index
        .iter()
        .filter(|id| !superseded.contains(id))
        .copied()
        .collect();
    let cataloged: HashSet<Id> = repo.catalog().index_ids()?.into_iter().collect();
    if cataloged != effective {
        repo.install_index(&objects)?;
    }
    drop(objects);
    repo.refresh().await?;
    let listed: HashSet<Id> = repo.list_ids(keys::SNAPSHOTS).await?.into_iter().collect();
    let known: HashSet<Id> = repo.catalog().snapshot_ids()?.into_iter().collect();
    if let Some(bad) = listed.difference(&known).next() {
        return Err(Error::Other(format!(
            "snapshot {bad} is unreadable; prune would delete what it references \
             (run `cairn check`, then `cairn forget {bad}` if it is beyond repair)"
        )));
    }
    let records = repo.list_ids(keys::CONDEMNED).await?.into_iter().collect();
    Ok((old_index, records))
}

/// Ids marked at once (32 bytes each).
const MARK_BATCH: usize = 1 << 20;

/// Mark every blob the snapshots need; fails if one is missing from the index.
async fn mark(repo: &Repository) -> Result<u64> {
    repo.catalog().mark_clear()?;
    let snaps = repo.snapshots()?;
    let mut pending: Vec<Id> = Vec::new();
    let mut marked = 0u64;
    // Trees are far fewer than blobs; the walked ones are remembered in memory (a data blob
    // with a tree's id must not stop the tree from being walked).
    let mut walked: HashSet<Id> = HashSet::new();
    for (sid, snap) in &snaps {
        if walked.contains(&snap.tree) {
            continue;
        }
        let mut walk = TreeWalk::new(snap.tree);
        loop {
            let step = walk
                .step(repo, |_, n| n.subtree.is_some_and(|t| walked.contains(&t)))
                .await;
            let e = match step {
                None => break,
                Some(Step::Leave(_)) => continue,
                Some(Step::Enter(e)) => e,
            };
            let t = e.id;
            walked.insert(t);
            if repo.lookup_blob(&t)?.is_none() {
                return Err(missing(sid, &t));
            }
            let tree = e.tree?;
            pending.push(t);
            for n in &tree.nodes {
                for e in &n.content {
                    if let Extent::Data { id, .. } = e {
                        pending.push(*id);
                    }
                }
            }
            // Inserted sorted, in large batches: B-tree inserts in order are several times
            // faster than random ones. The batch bounds memory (32 MiB).
            if pending.len() >= MARK_BATCH {
                pending.sort_unstable();
                pending.dedup();
                marked += repo.catalog().mark(&pending)? as u64;
                pending.clear();
            }
        }
    }
    pending.sort_unstable();
    pending.dedup();
    marked += repo.catalog().mark(&pending)? as u64;
    // A delta blob needs its base.
    marked += repo.catalog().mark_bases()? as u64;
    // One anti-join instead of a lookup per blob; naming the snapshot is the rare slow path.
    let unindexed = repo.catalog().first_unindexed_mark()?;
    if let Some(blob) = unindexed {
        for (sid, snap) in &snaps {
            if references(repo, snap.tree, &blob).await? {
                return Err(missing(sid, &blob));
            }
        }
        return Err(missing(&snaps[0].0, &blob));
    }
    Ok(marked)
}

/// One pass over the catalog's index: `each` sees every entry; `keep` sees, for every marked
/// blob, the one entry prune keeps it by (in a pack that is not condemned if there is one,
/// else the first; among those the smallest pack id).
fn scan_index(
    repo: &Repository,
    condemned: &HashMap<Id, i64>,
    mut each: impl FnMut(Id, &PackEntry),
    mut keep: impl FnMut(Id, PackEntry),
) -> Result<()> {
    // The entries of the current marked id (rows come in (id, pack) order).
    let mut group: Vec<(Id, PackEntry)> = Vec::new();
    let mut flush = |group: &mut Vec<(Id, PackEntry)>| {
        let best = group
            .iter()
            .find(|(p, _)| !condemned.contains_key(p))
            .or(group.first());
        if let Some((pack, e)) = best {
            keep(*pack, *e);
        }
        group.clear();
    };
    repo.catalog().for_each_blob_marked(|pack, e, marked| {
        each(pack, &e);
        if marked {
            if group.first().is_some_and(|(_, g)| g.id != e.id) {
                flush(&mut group);
            }
            group.push((pack, e));
        }
        Ok(())
    })?;
    flush(&mut group);
    Ok(())
}

/// Whether the tree `root` needs `blob` (itself, a subtree or a data blob below it).
async fn references(repo: &Repository, root: Id, blob: &Id) -> Result<bool> {
    if root == *blob {
        return Ok(true);
    }
    let mut seen: HashSet<Id> = HashSet::new();
    let mut walk = TreeWalk::new(root);
    loop {
        let step = walk
            .step(repo, |_, n| {
                n.subtree.is_some_and(|t| {
                    seen.contains(&t) || repo.lookup_blob(&t).ok().flatten().is_none()
                }) && n.subtree != Some(*blob)
            })
            .await;
        let e = match step {
            None => return Ok(false),
            Some(Step::Leave(_)) => continue,
            Some(Step::Enter(e)) => e,
        };
        if e.id == *blob {
            return Ok(true);
        }
        seen.insert(e.id);
        for n in &e.tree?.nodes {
            let data = n.content.iter().filter_map(|e| match e {
                Extent::Data { id, .. } => Some(id),
                _ => None,
            });
            if data.into_iter().any(|id| id == blob) {
                return Ok(true);
            }
        }
    }
}

fn missing(snap: &Id, blob: &Id) -> Error {
    Error::Other(format!(
        "snapshot {snap} needs blob {blob}, which is not in the index; prune stops so as not to \
         make things worse (run `cairn check`)"
    ))
}

struct PackPlan {
    kind: BlobKind,
    size: u64,
    live: u64,
    live_bytes: u64,
    total_bytes: u64,
}

async fn run(
    repo: &Arc<Repository>,
    opts: &PruneOptions,
    lease: LeaseHandle,
) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let phase = |what: &str| tracing::debug!("prune: {what} done after {:.2?}", started.elapsed());
    let (old_index, old_records) = load_strict(repo).await?;
    phase("loading the index");
    report.snapshots = repo.snapshots()?.len() as u64;
    report.blobs_used = mark(repo).await?;
    phase("marking");
    let now = repo.now();

    // What each pack holds and how much of it is needed.
    let mut plan: HashMap<Id, PackPlan> = HashMap::new();
    for (id, kind, size) in repo.catalog().packs()? {
        plan.insert(
            id,
            PackPlan {
                kind,
                size,
                live: 0,
                live_bytes: 0,
                total_bytes: 0,
            },
        );
    }
    let condemned: HashMap<Id, i64> = repo.catalog().condemned_packs()?.into_iter().collect();
    let mut totals: HashMap<Id, u64> = HashMap::new();
    scan_index(
        repo,
        &condemned,
        |pack, e| *totals.entry(pack).or_default() += e.length as u64,
        |pack, e| {
            if let Some(p) = plan.get_mut(&pack) {
                p.live += 1;
                p.live_bytes += e.length as u64;
            }
        },
    )?;
    for (pack, bytes) in totals {
        if let Some(p) = plan.get_mut(&pack) {
            p.total_bytes = bytes;
        }
    }
    phase("planning");
    report.packs_before = plan.len() as u64;
    report.bytes_before = plan.values().map(|p| p.size).sum();
    let unindexed: Vec<(Id, u64)> = repo
        .backend()
        .list(keys::DATA)
        .await?
        .into_iter()
        .filter_map(|e| keys::id_of(&e.key).map(|id| (id, e.size)))
        .filter(|(id, _)| !plan.contains_key(id))
        .collect();

    let grace_ns = i64::try_from(opts.grace.as_nanos()).unwrap_or(i64::MAX);
    let expired = |since: i64| since.saturating_add(grace_ns) <= now.as_nanos();
    let mut repack: Vec<Id> = Vec::new();
    let mut delete: Vec<(Id, u64)> = Vec::new();
    let mut still_condemned: Vec<CondemnedPack> = Vec::new();
    let mut deleted_from_index: HashSet<Id> = HashSet::new();
    let mut obsolete =
        |id: Id, size: u64, indexed: bool, report: &mut PruneReport| match condemned.get(&id) {
            Some(&since) if expired(since) => {
                delete.push((id, size));
                if indexed {
                    deleted_from_index.insert(id);
                }
            }
            Some(&since) => {
                report.packs_waiting += 1;
                report.bytes_waiting += size;
                still_condemned.push(CondemnedPack {
                    id,
                    since: Timestamp::new(
                        since.div_euclid(1_000_000_000),
                        since.rem_euclid(1_000_000_000) as u32,
                    ),
                });
            }
            None if opts.grace.is_zero() => {
                delete.push((id, size));
                if indexed {
                    deleted_from_index.insert(id);
                }
            }
            None => {
                report.packs_condemned += 1;
                report.bytes_condemned += size;
                still_condemned.push(CondemnedPack { id, since: now });
            }
        };
    let mut ids: Vec<&Id> = plan.keys().collect();
    ids.sort();
    for id in ids {
        let p = &plan[id];
        if p.live == 0 {
            obsolete(*id, p.size, true, &mut report);
            continue;
        }
        if condemned.contains_key(id) {
            // A snapshot needs a blob that only this condemned pack holds: keep the pack.
            report.packs_rescued += 1;
        }
        let unused = p.total_bytes - p.live_bytes;
        if unused as f64 > opts.max_unused * p.total_bytes as f64 {
            repack.push(*id);
        }
    }
    for (id, size) in &unindexed {
        obsolete(*id, *size, false, &mut report);
    }

    // Repack: copy the needed blobs of `repack` into new packs.
    let repack_set: HashSet<Id> = repack.iter().copied().collect();
    let mut entries_of: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    if !repack_set.is_empty() {
        scan_index(
            repo,
            &condemned,
            |_, _| {},
            |pack, e| {
                if repack_set.contains(&pack) {
                    entries_of.entry(pack).or_default().push(e);
                }
            },
        )?;
    }
    report.packs_repacked = repack.len() as u64;
    report.bytes_repacked = repack.iter().map(|id| plan[id].live_bytes).sum::<u64>();
    if opts.dry_run {
        for id in &repack {
            obsolete(*id, plan[id].size, true, &mut report);
        }
        report.packs_deleted = delete.len() as u64;
        report.bytes_deleted = delete.iter().map(|d| d.1).sum();
        return Ok(report);
    }
    let new_packs = repack_blobs(repo, &repack, &entries_of, &plan, &mut report).await?;
    phase("repacking");
    for id in &repack {
        obsolete(*id, plan[id].size, true, &mut report);
    }
    report.packs_deleted = delete.len() as u64;
    report.bytes_deleted = delete.iter().map(|d| d.1).sum();
    drop(entries_of);

    let nothing_to_do = new_packs.is_empty()
        && delete.is_empty()
        && report.packs_condemned == 0
        && report.packs_rescued == 0
        && old_records.len() <= 1;
    if nothing_to_do {
        return Ok(report);
    }

    // The new condemnation record, then the new index, then deletions.
    lease.verify().await?;
    let mut new_record = None;
    if !still_condemned.is_empty() {
        still_condemned.sort_by_key(|c| c.id);
        let rec = Condemned {
            supersedes: old_records.clone(),
            packs: still_condemned,
        };
        let data = rec.encode(repo.keys().sealer());
        let id = Id::of_bytes(&data);
        put_new(repo, &keys::condemned(&id), Bytes::from(data)).await?;
        new_record = Some(id);
    }
    let mut index_packs: Vec<IndexPack> = Vec::new();
    let mut ids: Vec<Id> = plan
        .keys()
        .filter(|id| !deleted_from_index.contains(id))
        .copied()
        .collect();
    ids.sort();
    for id in ids {
        index_packs.push(IndexPack {
            id,
            size: plan[&id].size,
            entries: repo.catalog().pack_entries(&id)?,
        });
    }
    let repacked_into = new_packs.clone();
    index_packs.extend(new_packs);
    phase("collecting the new index");
    let written = write_index(repo, index_packs, old_index.clone()).await?;
    phase("writing the new index");
    report.index_objects_written = written.len() as u64;
    for id in old_index.iter().filter(|id| !written.contains(id)) {
        repo.backend().delete(&keys::index(id)).await?;
        report.index_objects_removed += 1;
    }
    for id in old_records.iter().filter(|id| Some(**id) != new_record) {
        repo.backend().delete(&keys::condemned(id)).await?;
    }
    lease.verify().await?;
    // Owned ids: a closure over borrowed items makes the future not `Send` for every
    // lifetime, which a spawned task (the daemon) needs.
    let doomed: Vec<Id> = delete.iter().map(|(id, _)| *id).collect();
    futures::stream::iter(doomed)
        .map(|id| async move { repo.backend().delete(&keys::pack(&id)).await })
        .buffer_unordered(repo.connections().max(2) * 2)
        .try_collect::<Vec<()>>()
        .await?;
    phase("deleting");
    // The new objects are merged into the catalog already (`save_index`); drop what is gone
    // instead of downloading the whole index again.
    let gone: Vec<Id> = deleted_from_index.iter().copied().collect();
    {
        let mut cat = repo.catalog();
        cat.add_index(None, &repacked_into)?;
        cat.retire_index(&written, &gone)?;
    }
    repo.refresh().await?;
    phase("refreshing the catalog");
    Ok(report)
}

async fn put_new(repo: &Repository, key: &str, data: Bytes) -> Result<()> {
    match repo.backend().put(key, data).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind == crate::backend::BackendErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Copy the needed blobs of `packs` into new packs (sealed bytes as they are, each verified
/// first), uploaded before this returns.
async fn repack_blobs(
    repo: &Arc<Repository>,
    packs: &[Id],
    entries_of: &HashMap<Id, Vec<PackEntry>>,
    plan: &HashMap<Id, PackPlan>,
    report: &mut PruneReport,
) -> Result<Vec<IndexPack>> {
    let mut out = Vec::new();
    let mut builders: HashMap<BlobKind, PackBuilder> = HashMap::new();
    let target = repo.config().pack_size as usize;
    for id in packs {
        let key = keys::pack(id);
        let data = repo.backend().get(&key).await?;
        let entries = entries_of.get(id).cloned().unwrap_or_default();
        // Delta blobs are opened against their bases, so damage is never copied.
        let mut bases: HashMap<Id, Vec<u8>> = HashMap::new();
        for e in &entries {
            if let Some(b) = e.base
                && !bases.contains_key(&b)
            {
                bases.insert(b, repo.read_base(&b, &e.id).await?);
            }
        }
        let keys_ = repo.keys().clone();
        let data2 = data.clone();
        let key2 = key.clone();
        let sealed: Vec<(PackEntry, Vec<u8>)> = tokio::task::spawn_blocking(move || {
            use rayon::prelude::*;
            entries
                .par_iter()
                .map(|e| {
                    let s = e.offset as usize;
                    let sealed = data2
                        .get(s..s + e.length as usize)
                        .ok_or_else(|| Error::corrupt(&key2, "blob beyond the end of the pack"))?;
                    let base = e.base.and_then(|b| bases.get(&b)).map(|b| b.as_slice());
                    open_blob(&keys_, &e.id, sealed, e.raw_len, base).map_err(|err| {
                        Error::Other(format!(
                            "{err} (in {key2}); prune stops rather than copy damage \
                             (run `cairn check --read-data`)"
                        ))
                    })?;
                    Ok((*e, sealed.to_vec()))
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::Other(e.to_string()))??;
        let kind = plan[id].kind;
        for (e, s) in sealed {
            let b = builders.entry(kind).or_default();
            b.add_entry(e.kind, e.id, s, e.raw_len, e.base);
            if b.size() >= target {
                let full = std::mem::take(b);
                out.push(upload(repo, full, report).await?);
            }
        }
    }
    for (_, b) in builders {
        if !b.is_empty() {
            out.push(upload(repo, b, report).await?);
        }
    }
    Ok(out)
}

async fn upload(
    repo: &Repository,
    builder: PackBuilder,
    report: &mut PruneReport,
) -> Result<IndexPack> {
    let mut order: Vec<usize> = (0..builder.count()).collect();
    order.shuffle(&mut rand::rng());
    let (parts, entries) = builder.finish_parts(repo.keys().sealer(), &order);
    let mut h = blake3::Hasher::new();
    for p in &parts {
        h.update(p);
    }
    let id = Id(*h.finalize().as_bytes());
    let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
    match repo.backend().put_parts(&keys::pack(&id), parts).await {
        Ok(()) => {}
        Err(e) if e.kind == crate::backend::BackendErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    report.packs_written += 1;
    report.bytes_written += size;
    Ok(IndexPack { id, size, entries })
}
