//! Repair (DESIGN.md §5): rebuild the index from the packs alone.
//!
//! `repair index` reads every pack's header (two ranged reads each), writes index objects that
//! describe every pack whose header opens, the last of them superseding every index object
//! that existed before, then deletes those. It needs neither the catalog nor any old index
//! object, so it recovers from lost or damaged index objects and adopts the packs an
//! interrupted backup left unindexed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::error::{Error, Result};
use crate::format::index::{IndexObject, IndexPack};
use crate::id::Id;
use crate::ops::walk::{Step, TreeWalk};
use crate::repo::lease::{LeaseHandle, LeaseMode};
use crate::repo::{Repository, keys};

/// Index objects are cut at about this many entries, to bound their size.
pub const ENTRIES_PER_INDEX_OBJECT: usize = 200_000;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RepairIndexReport {
    pub packs: u64,
    pub blobs: u64,
    /// Packs whose header could not be read and that no old index object describes: their
    /// blobs are lost to the index.
    pub unreadable_packs: Vec<String>,
    /// Packs whose header could not be read, indexed from an old index object instead.
    pub headers_unreadable: Vec<String>,
    pub index_objects_written: u64,
    pub index_objects_removed: u64,
}

/// Write `packs` as new index objects, the last one superseding `old`; returns the new names.
/// Nothing superseded disappears before every new object is stored.
pub async fn write_index(
    repo: &Repository,
    packs: Vec<IndexPack>,
    old: Vec<Id>,
) -> Result<Vec<Id>> {
    let mut chunks: Vec<Vec<IndexPack>> = vec![Vec::new()];
    let mut entries = 0;
    for p in packs {
        if entries + p.entries.len() > ENTRIES_PER_INDEX_OBJECT
            && !chunks.last().is_some_and(|c| c.is_empty())
        {
            chunks.push(Vec::new());
            entries = 0;
        }
        entries += p.entries.len();
        chunks.last_mut().expect("one chunk").push(p);
    }
    let last = chunks.pop().expect("one chunk");
    let mut written = Vec::new();
    for c in chunks {
        written.push(
            repo.put_index(&IndexObject {
                supersedes: vec![],
                packs: c,
            })
            .await?,
        );
    }
    // An earlier chunk may be byte-identical to an old object (same packs): keep it.
    let old: Vec<Id> = old.into_iter().filter(|id| !written.contains(id)).collect();
    written.push(
        repo.put_index(&IndexObject {
            supersedes: old,
            packs: last,
        })
        .await?,
    );
    Ok(written)
}

pub async fn repair_index(
    repo: &Arc<Repository>,
    lease_wait: Duration,
) -> Result<RepairIndexReport> {
    repo.with_lease(LeaseMode::Exclusive, "repair index", lease_wait, |lease| {
        rebuild(repo, lease)
    })
    .await
}

async fn rebuild(repo: &Arc<Repository>, lease: LeaseHandle) -> Result<RepairIndexReport> {
    let mut report = RepairIndexReport::default();
    let old: Vec<Id> = repo.list_ids(keys::INDEX).await?.into_iter().collect();
    let stored: Vec<(Id, u64)> = repo
        .backend()
        .list(keys::DATA)
        .await?
        .into_iter()
        .filter_map(|e| keys::id_of(&e.key).map(|id| (id, e.size)))
        .collect();
    let conns = repo.connections().max(2) * 4;
    let headers: Vec<(Id, u64, Result<Vec<crate::format::pack::PackEntry>>)> =
        futures::stream::iter(stored)
            .map(|(id, size)| async move {
                let r = repo.read_pack_header(&id, size).await.map(|h| h.entries);
                (id, size, r)
            })
            .buffer_unordered(conns)
            .collect()
            .await;
    let mut packs = Vec::new();
    let mut old_entries: Option<std::collections::HashMap<Id, IndexPack>> = None;
    for (id, size, r) in headers {
        match r {
            Ok(entries) => {
                report.packs += 1;
                report.blobs += entries.len() as u64;
                packs.push(IndexPack { id, size, entries });
            }
            Err(e) if e.kind() == crate::error::ErrorKind::Corrupt => {
                // Keep what a readable old index object says of the pack, if one does: the
                // blobs may well be intact (`check --read-data` tells).
                if old_entries.is_none() {
                    let mut m = std::collections::HashMap::new();
                    for (_, o) in repo.load_index_objects().await? {
                        for p in o.map(|o| o.packs).unwrap_or_default() {
                            m.insert(p.id, p);
                        }
                    }
                    old_entries = Some(m);
                }
                match old_entries.as_ref().and_then(|m| m.get(&id)) {
                    Some(p) if p.size == size => {
                        tracing::warn!("{e}; keeping the old index's entries for it");
                        report.packs += 1;
                        report.blobs += p.entries.len() as u64;
                        report.headers_unreadable.push(keys::pack(&id));
                        packs.push(p.clone());
                    }
                    _ => {
                        tracing::warn!("{e}; its blobs cannot be indexed");
                        report.unreadable_packs.push(keys::pack(&id));
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    packs.sort_by_key(|p| p.id);
    lease.verify().await?;
    let written = write_index(repo, packs, old.clone()).await?;
    report.index_objects_written = written.len() as u64;
    for id in old.iter().filter(|id| !written.contains(id)) {
        repo.backend()
            .delete(&keys::index(id))
            .await
            .map_err(Error::from)?;
        report.index_objects_removed += 1;
    }
    repo.rebuild_index().await?;
    Ok(report)
}

/// What `repair snapshots` did to one damaged snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepairedSnapshot {
    pub original: String,
    /// The snapshot written without the damaged paths (`None` in a dry run or when the
    /// snapshot cannot be repaired).
    pub repaired: Option<String>,
    /// Paths left out of the repaired snapshot, with why.
    pub removed: Vec<super::check::DamagedPath>,
    /// Why the snapshot could not be repaired at all (its object or root is unreadable).
    pub unrepairable: Option<String>,
    pub forgotten: bool,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RepairSnapshotsReport {
    pub dry_run: bool,
    pub snapshots: Vec<RepairedSnapshot>,
}

#[derive(Debug, Clone)]
pub struct RepairSnapshotsOptions {
    /// How much data `check` reads to find damage (structure only finds missing data).
    pub read_data: super::check::ReadData,
    /// Delete the damaged originals once their repaired versions are stored.
    pub forget: bool,
    pub dry_run: bool,
    pub lease_wait: Duration,
}

/// Rewrite every snapshot that needs missing or corrupt data into a new snapshot without the
/// damaged files and directories (tagged `repaired`, `meta.repaired_from` naming the original).
/// The originals stay unless `forget` is set.
pub async fn repair_snapshots(
    repo: &Arc<Repository>,
    opts: &RepairSnapshotsOptions,
) -> Result<RepairSnapshotsReport> {
    repo.with_lease(
        LeaseMode::Exclusive,
        "repair snapshots",
        opts.lease_wait,
        |lease| rewrite_damaged(repo, opts, lease),
    )
    .await
}

async fn rewrite_damaged(
    repo: &Arc<Repository>,
    opts: &RepairSnapshotsOptions,
    lease: LeaseHandle,
) -> Result<RepairSnapshotsReport> {
    use crate::ops::check::{CheckOptions, check_leased};
    let report = check_leased(
        repo,
        &CheckOptions {
            read_data: opts.read_data,
            progress: None,
            lease_wait: Duration::ZERO,
        },
    )
    .await?;
    let mut out = RepairSnapshotsReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if report.damaged_snapshots.is_empty() {
        return Ok(out);
    }
    let snaps: std::collections::HashMap<String, crate::format::snapshot::Snapshot> = repo
        .snapshots()?
        .into_iter()
        .map(|(id, s)| (id.to_hex(), s))
        .collect();
    let (sink, uploader) = crate::repo::packer::BlobSink::start(
        repo.clone(),
        crate::compress::Compression::Auto,
        opts.dry_run,
    )?;
    // Repaired versions already stored (by an earlier run), by original.
    let earlier: std::collections::HashMap<String, String> = snaps
        .iter()
        .filter_map(|(id, s)| {
            s.meta
                .iter()
                .find(|(k, _)| k == "repaired_from")
                .map(|(_, orig)| (orig.clone(), id.clone()))
        })
        .collect();
    let mut pending = Vec::new();
    for d in &report.damaged_snapshots {
        let mut r = RepairedSnapshot {
            original: d.id.clone(),
            repaired: None,
            removed: d.paths.clone(),
            unrepairable: None,
            forgotten: false,
        };
        let snap = match snaps.get(&d.id) {
            Some(s) if !d.paths.iter().any(|p| p.path == "/") => s,
            _ => {
                r.unrepairable = Some(
                    d.paths
                        .first()
                        .map(|p| p.reason.clone())
                        .unwrap_or_else(|| "the snapshot object is unreadable".into()),
                );
                out.snapshots.push(r);
                continue;
            }
        };
        if let Some(done) = earlier.get(&d.id) {
            r.repaired = Some(done.clone());
            out.snapshots.push(r);
            continue;
        }
        let remove: std::collections::BTreeSet<String> =
            d.paths.iter().map(|p| p.path.clone()).collect();
        let root = rewrite_tree(repo, &sink, snap.tree, &remove).await?;
        let mut new = snap.clone();
        new.tree = root;
        if !new.tags.iter().any(|t| t == "repaired") {
            new.tags.push("repaired".into());
        }
        new.meta.push(("repaired_from".into(), d.id.clone()));
        new.program = format!("cairn {}", env!("CARGO_PKG_VERSION"));
        pending.push((out.snapshots.len(), new));
        out.snapshots.push(r);
    }
    uploader.finish_with(&sink).await?;
    if opts.dry_run {
        return Ok(out);
    }
    lease.verify().await?;
    for (i, snap) in pending {
        let id = repo.save_snapshot(&snap).await?;
        out.snapshots[i].repaired = Some(id.to_hex());
    }
    if opts.forget {
        lease.check()?;
        for r in &mut out.snapshots {
            if r.repaired.is_some()
                && let Ok(id) = r.original.parse::<Id>()
            {
                repo.backend().delete(&keys::snapshot(&id)).await?;
                repo.catalog().remove_snapshot(&id)?;
                r.forgotten = true;
            }
        }
    }
    Ok(out)
}

/// A copy of tree `root` without the nodes whose snapshot paths (`/a/b`) are in `remove`;
/// subtrees with nothing to remove below them are kept as they are.
async fn rewrite_tree(
    repo: &Arc<Repository>,
    sink: &Arc<crate::repo::packer::BlobSink>,
    root: Id,
    remove: &std::collections::BTreeSet<String>,
) -> Result<Id> {
    let path_of = |rel: &[u8]| -> String {
        if rel.is_empty() {
            String::new()
        } else {
            format!("/{}", String::from_utf8_lossy(rel))
        }
    };
    let removes_below = |p: &str| {
        let below = format!("{p}/");
        remove
            .range(below.clone()..)
            .next()
            .is_some_and(|r| r.starts_with(&below))
    };
    // The rewritten trees by the path of their directory.
    let mut rewritten: std::collections::HashMap<String, Id> = std::collections::HashMap::new();
    let mut walk = TreeWalk::new(root);
    loop {
        let step = walk
            .step(repo, |rel, _| {
                let p = path_of(rel);
                remove.contains(&p) || !removes_below(&p)
            })
            .await;
        let l = match step {
            None => break,
            Some(Step::Enter(e)) => {
                e.tree?;
                continue;
            }
            Some(Step::Leave(l)) => l,
        };
        let dir = path_of(l.path);
        let Some(tree) = l.tree else { continue };
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        for mut n in tree.nodes {
            let p = format!("{dir}/{}", n.name_lossy());
            if remove.contains(&p) {
                continue;
            }
            if n.subtree.is_some()
                && let Some(new) = rewritten.remove(&p)
            {
                n.subtree = Some(new);
            }
            nodes.push(n);
        }
        let data = crate::format::tree::Tree { nodes }.encode();
        let id = repo.keys().blob_id(&data);
        let sink = sink.clone();
        tokio::task::spawn_blocking(move || {
            sink.save(crate::format::pack::BlobKind::Tree, id, &data)
        })
        .await
        .map_err(|e| Error::Other(e.to_string()))??;
        rewritten.insert(dir, id);
    }
    rewritten
        .remove("")
        .ok_or_else(|| Error::Other(format!("tree {root} was not rewritten (internal error)")))
}
