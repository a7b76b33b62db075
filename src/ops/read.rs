//! Reading snapshots: resolving paths, listing, dumping one file, and statistics.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;

use super::walk::{Step, TreeWalk};
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Extent, Node, NodeKind};
use crate::id::Id;
use crate::repo::Repository;

/// Split a snapshot path into components, ignoring empty ones and `.`.
pub fn components(path: &str) -> Result<Vec<&str>> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::invalid(format!(
                    "{path:?}: `..` is not allowed in snapshot paths"
                )));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// What a path inside a snapshot names.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// The root of the snapshot.
    Root(Id),
    Node(Box<Node>),
}

impl Resolved {
    /// The tree to list below this point, if it is a directory.
    pub fn subtree(&self) -> Option<Id> {
        match self {
            Resolved::Root(id) => Some(*id),
            Resolved::Node(n) => n.subtree,
        }
    }
}

pub async fn resolve(repo: &Repository, snap: &Snapshot, path: &str) -> Result<Resolved> {
    let comps = components(path)?;
    let mut cur = Resolved::Root(snap.tree);
    for (i, c) in comps.iter().enumerate() {
        let Some(tree_id) = cur.subtree() else {
            return Err(Error::not_found(format!(
                "{} in the snapshot ({} is not a directory)",
                path,
                comps[..i].join("/")
            )));
        };
        let tree = repo.load_tree(&tree_id).await?;
        match tree.find(c.as_bytes()) {
            Some(n) => cur = Resolved::Node(Box::new(n.clone())),
            None => return Err(Error::not_found(format!("{path} in the snapshot"))),
        }
    }
    Ok(cur)
}

/// Every node at or below `start`, depth first in name order, with its path. The path of a
/// node is `prefix/name...`.
pub async fn walk(
    repo: &Repository,
    start: &Resolved,
    prefix: &str,
) -> Result<Vec<(String, Node)>> {
    let mut out = Vec::new();
    let prefix = prefix.trim_end_matches('/').to_string();
    match start {
        Resolved::Node(n) => {
            out.push((prefix.clone(), (**n).clone()));
            if let Some(t) = n.subtree {
                walk_tree(repo, t, &prefix, &mut out).await?;
            }
        }
        Resolved::Root(t) => walk_tree(repo, *t, &prefix, &mut out).await?,
    }
    Ok(out)
}

async fn walk_tree(
    repo: &Repository,
    tree: Id,
    prefix: &str,
    out: &mut Vec<(String, Node)>,
) -> Result<()> {
    let mut walk = TreeWalk::new(tree);
    while let Some(step) = walk.step(repo, |_, _| false).await {
        let Step::Enter(e) = step else { continue };
        let t = e.tree?;
        let dir = if e.path.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}/{}", String::from_utf8_lossy(e.path))
        };
        for n in &t.nodes {
            out.push((format!("{dir}/{}", n.name_lossy()), n.clone()));
        }
    }
    // Sort into a true depth-first order (paths compare component-wise).
    out.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
    Ok(())
}

/// Write a regular file's contents to `out`.
pub async fn dump(repo: &Repository, node: &Node, out: &mut (dyn Write + Send)) -> Result<u64> {
    if node.kind != NodeKind::File {
        return Err(Error::invalid(format!(
            "{} is a {}, not a file",
            node.name_lossy(),
            node.kind.as_str()
        )));
    }
    let mut written = 0u64;
    let zeros = vec![0u8; 1 << 20];
    for e in &node.content {
        match e {
            Extent::Data { id, len } => {
                let data = repo.read_blob(id).await?;
                if data.len() != *len as usize {
                    return Err(Error::corrupt(
                        format!("tree entry {}", node.name_lossy()),
                        format!(
                            "extent of {len} bytes names blob {id} of {} bytes",
                            data.len()
                        ),
                    ));
                }
                write_out(out, &data)?;
                written += data.len() as u64;
            }
            Extent::Hole(n) => {
                let mut left = *n;
                while left > 0 {
                    let k = left.min(zeros.len() as u64) as usize;
                    write_out(out, &zeros[..k])?;
                    left -= k as u64;
                }
                written += n;
            }
        }
    }
    out.flush().map_err(|e| Error::io("<output>", e))?;
    Ok(written)
}

fn write_out(out: &mut (dyn Write + Send), data: &[u8]) -> Result<()> {
    out.write_all(data).map_err(|e| Error::io("<output>", e))
}

/// Sizes of a set of snapshots.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub snapshots: u64,
    pub files: u64,
    /// Sum of the sizes of all files in all the snapshots (what a full restore of each writes).
    pub logical_bytes: u64,
    /// Distinct data and tree blobs referenced, their plaintext size and their stored size.
    pub blobs: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// logical / raw: what deduplication saves.
    pub dedup_ratio: f64,
    /// raw / stored: what compression saves (after encryption overhead).
    pub compression_ratio: f64,
    /// Size of all packs in the repository.
    pub repository_bytes: u64,
}

pub async fn stats(repo: &Arc<Repository>, snaps: &[(Id, Snapshot)]) -> Result<Stats> {
    let mut s = Stats {
        snapshots: snaps.len() as u64,
        ..Default::default()
    };
    let mut seen_blobs: HashSet<Id> = HashSet::new();
    // Files and bytes below each tree, computed once per distinct tree.
    let mut memo: HashMap<Id, (u64, u64)> = HashMap::new();
    for (_, snap) in snaps {
        if !memo.contains_key(&snap.tree) {
            let mut walk = TreeWalk::new(snap.tree);
            loop {
                let step = walk
                    .step(repo, |_, n| {
                        n.subtree.is_some_and(|t| memo.contains_key(&t))
                    })
                    .await;
                match step {
                    None => break,
                    Some(Step::Enter(e)) => {
                        count_blob(repo, &e.id, &mut seen_blobs, &mut s)?;
                        for n in e.tree?.nodes.iter().filter(|n| n.kind == NodeKind::File) {
                            for ext in &n.content {
                                if let Extent::Data { id, .. } = ext {
                                    count_blob(repo, id, &mut seen_blobs, &mut s)?;
                                }
                            }
                        }
                    }
                    Some(Step::Leave(l)) => {
                        let (mut files, mut bytes) = (0u64, 0u64);
                        for n in l.tree.iter().flat_map(|t| &t.nodes) {
                            if n.kind == NodeKind::File {
                                files += 1;
                                bytes += n.size;
                            }
                            if let Some((f, b)) = n.subtree.and_then(|t| memo.get(&t)) {
                                files += f;
                                bytes += b;
                            }
                        }
                        memo.insert(l.id, (files, bytes));
                    }
                }
            }
        }
        let (f, b) = memo.get(&snap.tree).copied().unwrap_or_default();
        s.files += f;
        s.logical_bytes += b;
    }
    s.repository_bytes = repo.catalog().packs()?.iter().map(|p| p.2).sum();
    s.dedup_ratio = if s.raw_bytes > 0 {
        s.logical_bytes as f64 / s.raw_bytes as f64
    } else {
        0.0
    };
    s.compression_ratio = if s.stored_bytes > 0 {
        s.raw_bytes as f64 / s.stored_bytes as f64
    } else {
        0.0
    };
    Ok(s)
}

fn count_blob(repo: &Repository, id: &Id, seen: &mut HashSet<Id>, s: &mut Stats) -> Result<()> {
    if seen.insert(*id) {
        let loc = repo
            .lookup_blob(id)?
            .ok_or_else(|| Error::not_found(format!("blob {id} (not in the index)")))?;
        s.blobs += 1;
        s.raw_bytes += loc.raw_len as u64;
        s.stored_bytes += loc.length as u64;
    }
    Ok(())
}
