//! `cairn diff`: what changed between two snapshots, and the bytes the second one added.
//!
//! The two trees are walked side by side, each directory's entries merged by name; a subtree
//! whose id is the same on both sides is identical and skipped without being read. An entry
//! only in the first snapshot is removed, only in the second added (a directory with all it
//! holds: a rename is a removal and an addition); an entry whose type differs is a type change;
//! a file whose contents, a link whose target or a device whose number differs is modified; and
//! with `metadata`, an entry whose mode, owner, mtime or extended attributes alone differ is
//! listed too. Access and change times, inode numbers and link counts are not compared: they
//! change without anyone changing the file.
//!
//! Database snapshots hold a table as `mysql/<db>/<table>.sql`, so which tables changed is
//! the same walk; those entries carry the table's name and the row counts the snapshots
//! recorded.

use std::collections::{HashMap, HashSet};

use super::read::{self, Resolved};
use super::walk::{Step, TreeWalk};
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Extent, Node, NodeKind, Tree};
use crate::id::Id;
use crate::repo::Repository;
use crate::source::mysql::decode_name;

/// How an entry changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    /// Contents (or link target, device number) differ.
    Modified,
    /// A file became a directory, a link a file, ...
    Type,
    /// Only metadata differs (listed with `metadata`).
    Metadata,
}

impl ChangeKind {
    /// The one-letter mark of the text listing (restic's).
    pub fn mark(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::Type => 'T',
            ChangeKind::Metadata => 'U',
        }
    }
}

/// One changed entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// `/`-rooted path in the snapshots.
    pub path: String,
    pub change: ChangeKind,
    pub old_type: Option<NodeKind>,
    pub new_type: Option<NodeKind>,
    pub old_size: Option<u64>,
    pub new_size: Option<u64>,
    /// What differs: `content`, `target`, `device`, `mode`, `owner`, `mtime`, `xattrs`.
    pub differs: Vec<&'static str>,
    /// For a database snapshot's table: `db.table`, and the rows each snapshot recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_rows: Option<u64>,
}

/// Counts of changed entries of one kind of node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    #[serde(rename = "type")]
    pub type_changed: u64,
    pub metadata: u64,
}

/// The whole comparison.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiffOutcome {
    /// In depth-first path order.
    pub changes: Vec<Change>,
    pub files: Counts,
    pub dirs: Counts,
    /// Links, devices, fifos and sockets.
    pub others: Counts,
    /// Data the second snapshot references and the first does not: blobs and their
    /// plaintext bytes.
    pub added_blobs: u64,
    pub added_bytes: u64,
    /// Data the first snapshot references and the second does not.
    pub removed_blobs: u64,
    pub removed_bytes: u64,
    /// Subtrees skipped because they were identical.
    pub identical_subtrees: u64,
}

#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Also list entries whose metadata alone changed.
    pub metadata: bool,
}

/// Data blobs with their lengths.
type Blobs = HashMap<Id, u32>;

fn add_blobs(n: &Node, to: &mut Blobs) {
    for e in &n.content {
        if let Extent::Data { id, len } = e {
            to.insert(*id, *len);
        }
    }
}

struct Walker<'a> {
    repo: &'a Repository,
    opts: &'a DiffOptions,
    out: DiffOutcome,
    old_blobs: Blobs,
    new_blobs: Blobs,
    /// Blobs of files that are the same on both sides.
    common: HashSet<Id>,
    /// Identical subtrees (their blobs are in both snapshots).
    shared: Vec<Id>,
    old_rows: &'a HashMap<String, u64>,
    new_rows: &'a HashMap<String, u64>,
    database: bool,
}

fn rows_of(snap: &Snapshot) -> HashMap<String, u64> {
    snap.meta
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("mysql.rows:")?.to_string(), v.parse().ok()?)))
        .collect()
}

/// What differs between two nodes of the same kind and name.
fn differences(a: &Node, b: &Node) -> (bool, Vec<&'static str>) {
    let mut d = Vec::new();
    let content = match a.kind {
        NodeKind::File => a.size != b.size || a.content != b.content,
        NodeKind::Symlink => a.target != b.target,
        NodeKind::CharDev | NodeKind::BlockDev => a.rdev != b.rdev,
        _ => false,
    };
    if content {
        d.push(match a.kind {
            NodeKind::Symlink => "target",
            NodeKind::CharDev | NodeKind::BlockDev => "device",
            _ => "content",
        });
    }
    if a.mode != b.mode {
        d.push("mode");
    }
    if a.uid != b.uid || a.gid != b.gid || a.user != b.user || a.group != b.group {
        d.push("owner");
    }
    if a.mtime != b.mtime {
        d.push("mtime");
    }
    if a.xattrs != b.xattrs {
        d.push("xattrs");
    }
    (content, d)
}

impl Walker<'_> {
    fn counts(&mut self, kind: NodeKind) -> &mut Counts {
        match kind {
            NodeKind::File => &mut self.out.files,
            NodeKind::Dir => &mut self.out.dirs,
            _ => &mut self.out.others,
        }
    }

    fn record(
        &mut self,
        path: &str,
        change: ChangeKind,
        old: Option<&Node>,
        new: Option<&Node>,
        differs: Vec<&'static str>,
    ) {
        let kind = new.or(old).map(|n| n.kind).unwrap_or(NodeKind::File);
        let c = self.counts(kind);
        match change {
            ChangeKind::Added => c.added += 1,
            ChangeKind::Removed => c.removed += 1,
            ChangeKind::Modified => c.modified += 1,
            ChangeKind::Type => c.type_changed += 1,
            ChangeKind::Metadata => c.metadata += 1,
        }
        let key = (self.database && kind == NodeKind::File)
            .then(|| table_key(path))
            .flatten();
        let table = key.as_ref().map(|k| {
            let (db, t) = k.split_once('/').unwrap_or((k, ""));
            format!("{}.{}", decode_name(db), decode_name(t))
        });
        self.out.changes.push(Change {
            path: path.to_string(),
            change,
            old_type: old.map(|n| n.kind),
            new_type: new.map(|n| n.kind),
            old_size: old.map(|n| n.size),
            new_size: new.map(|n| n.size),
            differs,
            table,
            old_rows: key
                .as_ref()
                .and_then(|k| old.and(self.old_rows.get(k).copied())),
            new_rows: key
                .as_ref()
                .and_then(|k| new.and(self.new_rows.get(k).copied())),
        });
    }

    /// One side's entry and everything below it, all added (`new`) or all removed.
    async fn one_side(&mut self, path: &str, n: &Node, new: bool) -> Result<()> {
        let change = if new {
            ChangeKind::Added
        } else {
            ChangeKind::Removed
        };
        self.side(n, new);
        if new {
            self.record(path, change, None, Some(n), Vec::new());
        } else {
            self.record(path, change, Some(n), None, Vec::new());
        }
        if let Some(t) = n.subtree {
            self.below(path, t, new).await?;
        }
        Ok(())
    }

    fn side(&mut self, n: &Node, new: bool) {
        add_blobs(
            n,
            if new {
                &mut self.new_blobs
            } else {
                &mut self.old_blobs
            },
        );
    }

    /// Everything below tree `t` at `path`, all added or all removed.
    async fn below(&mut self, path: &str, t: Id, new: bool) -> Result<()> {
        let change = if new {
            ChangeKind::Added
        } else {
            ChangeKind::Removed
        };
        let mut walk = TreeWalk::new(t);
        while let Some(step) = walk.step(self.repo, |_, _| false).await {
            let Step::Enter(e) = step else { continue };
            let tree = e.tree?;
            let dir = join(path, e.path);
            for n in &tree.nodes {
                let p = format!("{dir}/{}", n.name_lossy());
                add_blobs(
                    n,
                    if new {
                        &mut self.new_blobs
                    } else {
                        &mut self.old_blobs
                    },
                );
                if new {
                    self.record(&p, change, None, Some(n), Vec::new());
                } else {
                    self.record(&p, change, Some(n), None, Vec::new());
                }
            }
        }
        Ok(())
    }

    /// Compare two nodes found at the same path.
    async fn pair(&mut self, path: &str, a: &Node, b: &Node, work: &mut Vec<Work>) -> Result<()> {
        if a.kind != b.kind {
            self.side(a, false);
            self.side(b, true);
            self.record(path, ChangeKind::Type, Some(a), Some(b), vec!["type"]);
            if let Some(t) = a.subtree {
                self.below(path, t, false).await?;
            }
            if let Some(t) = b.subtree {
                self.below(path, t, true).await?;
            }
            return Ok(());
        }
        let (content, differs) = differences(a, b);
        if content {
            self.side(a, false);
            self.side(b, true);
            self.record(path, ChangeKind::Modified, Some(a), Some(b), differs);
        } else {
            for e in &a.content {
                if let Extent::Data { id, .. } = e {
                    self.common.insert(*id);
                }
            }
            if !differs.is_empty() && self.opts.metadata {
                self.record(path, ChangeKind::Metadata, Some(a), Some(b), differs);
            }
        }
        if let (Some(ta), Some(tb)) = (a.subtree, b.subtree) {
            if ta == tb {
                self.out.identical_subtrees += 1;
                self.shared.push(ta);
            } else {
                work.push(Work {
                    path: path.to_string(),
                    old: ta,
                    new: tb,
                });
            }
        }
        Ok(())
    }

    async fn trees(&mut self, w: Work, work: &mut Vec<Work>) -> Result<()> {
        let ta: Tree = self.repo.load_tree(&w.old).await?;
        let tb: Tree = self.repo.load_tree(&w.new).await?;
        let (mut i, mut j) = (0, 0);
        while i < ta.nodes.len() || j < tb.nodes.len() {
            let order = match (ta.nodes.get(i), tb.nodes.get(j)) {
                (Some(a), Some(b)) => a.name.cmp(&b.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let a = &ta.nodes[i];
                    self.one_side(&format!("{}/{}", w.path, a.name_lossy()), a, false)
                        .await?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let b = &tb.nodes[j];
                    self.one_side(&format!("{}/{}", w.path, b.name_lossy()), b, true)
                        .await?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (a, b) = (&ta.nodes[i], &tb.nodes[j]);
                    self.pair(&format!("{}/{}", w.path, a.name_lossy()), a, b, work)
                        .await?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    /// Blobs that only one side has: first without reading more trees; only when some are
    /// left, the identical subtrees are read to see whether they hold them.
    async fn settle_bytes(&mut self) -> Result<()> {
        let mut added: Blobs = self
            .new_blobs
            .iter()
            .filter(|(id, _)| !self.old_blobs.contains_key(*id) && !self.common.contains(*id))
            .map(|(id, l)| (*id, *l))
            .collect();
        let mut removed: Blobs = self
            .old_blobs
            .iter()
            .filter(|(id, _)| !self.new_blobs.contains_key(*id) && !self.common.contains(*id))
            .map(|(id, l)| (*id, *l))
            .collect();
        if !(added.is_empty() && removed.is_empty()) {
            let mut seen = HashSet::new();
            for t in std::mem::take(&mut self.shared) {
                let mut walk = TreeWalk::new(t);
                while let Some(step) = walk
                    .step(self.repo, |_, n| {
                        n.subtree.is_some_and(|s| seen.contains(&s))
                    })
                    .await
                {
                    let Step::Enter(e) = step else { continue };
                    seen.insert(e.id);
                    for n in &e.tree?.nodes {
                        for x in &n.content {
                            if let Extent::Data { id, .. } = x {
                                added.remove(id);
                                removed.remove(id);
                            }
                        }
                    }
                }
            }
        }
        self.out.added_blobs = added.len() as u64;
        self.out.added_bytes = added.values().map(|&l| l as u64).sum();
        self.out.removed_blobs = removed.len() as u64;
        self.out.removed_bytes = removed.values().map(|&l| l as u64).sum();
        Ok(())
    }
}

struct Work {
    path: String,
    old: Id,
    new: Id,
}

fn join(prefix: &str, rel: &[u8]) -> String {
    if rel.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}/{}", String::from_utf8_lossy(rel))
    }
}

/// `db/table` (encoded names, as in the `mysql.rows:` keys) for `/mysql/<db>/<table>.sql`.
fn table_key(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/mysql/")?;
    let (db, file) = rest.split_once('/')?;
    if file.contains('/') || file == "_schema.sql" {
        return None;
    }
    Some(format!("{db}/{}", file.strip_suffix(".sql")?))
}

/// Compare `old` with `new`, below `path` (the whole snapshots when `None`).
pub async fn diff(
    repo: &Repository,
    old: &Snapshot,
    new: &Snapshot,
    path: Option<&str>,
    opts: &DiffOptions,
) -> Result<DiffOutcome> {
    let old_rows = rows_of(old);
    let new_rows = rows_of(new);
    let mut w = Walker {
        repo,
        opts,
        out: DiffOutcome::default(),
        old_blobs: Blobs::new(),
        new_blobs: Blobs::new(),
        common: HashSet::new(),
        shared: Vec::new(),
        old_rows: &old_rows,
        new_rows: &new_rows,
        database: old.source == super::mysql::SOURCE || new.source == super::mysql::SOURCE,
    };
    let mut work = Vec::new();
    let prefix = match path {
        None => String::new(),
        Some(p) => {
            let c = read::components(p)?;
            if c.is_empty() {
                String::new()
            } else {
                format!("/{}", c.join("/"))
            }
        }
    };
    if prefix.is_empty() {
        if old.tree == new.tree {
            w.out.identical_subtrees += 1;
        } else {
            work.push(Work {
                path: String::new(),
                old: old.tree,
                new: new.tree,
            });
        }
    } else {
        let p = path.unwrap_or("/");
        let a = resolve_opt(repo, old, p).await?;
        let b = resolve_opt(repo, new, p).await?;
        match (a, b) {
            (None, None) => {
                return Err(Error::not_found(format!("{prefix} in either snapshot")));
            }
            (Some(a), None) => w.one_side(&prefix, &a, false).await?,
            (None, Some(b)) => w.one_side(&prefix, &b, true).await?,
            (Some(a), Some(b)) => w.pair(&prefix, &a, &b, &mut work).await?,
        }
    }
    while let Some(item) = work.pop() {
        w.trees(item, &mut work).await?;
    }
    w.settle_bytes().await?;
    w.out
        .changes
        .sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    Ok(w.out)
}

/// The node at `path`, or `None` when the snapshot has nothing there.
async fn resolve_opt(repo: &Repository, snap: &Snapshot, path: &str) -> Result<Option<Node>> {
    match read::resolve(repo, snap, path).await {
        Ok(Resolved::Node(n)) => Ok(Some(*n)),
        Ok(Resolved::Root(_)) => Ok(None),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_keys_come_from_table_files_only() {
        assert_eq!(
            table_key("/mysql/shop/orders.sql").as_deref(),
            Some("shop/orders")
        );
        assert_eq!(table_key("/mysql/shop/_schema.sql"), None);
        assert_eq!(table_key("/mysql/shop"), None);
        assert_eq!(table_key("/home/mysql/shop/orders.sql"), None);
    }

    #[test]
    fn differences_name_what_changed() {
        let mut a = Node::new(b"f".to_vec(), NodeKind::File);
        a.size = 3;
        a.content = vec![Extent::Hole(3)];
        let mut b = a.clone();
        assert_eq!(differences(&a, &b), (false, vec![]));
        b.atime = crate::format::Timestamp::new(9, 0);
        b.inode = 7;
        assert_eq!(
            differences(&a, &b),
            (false, vec![]),
            "atime and inode are not compared"
        );
        b.mode = 0o600;
        b.mtime = crate::format::Timestamp::new(1, 0);
        assert_eq!(differences(&a, &b), (false, vec!["mode", "mtime"]));
        b.content = vec![Extent::Hole(2), Extent::Hole(1)];
        assert!(differences(&a, &b).0);
        let mut l = Node::new(b"l".to_vec(), NodeKind::Symlink);
        l.target = b"x".to_vec();
        let mut m = l.clone();
        m.target = b"y".to_vec();
        m.uid = 5;
        assert_eq!(differences(&l, &m), (true, vec!["target", "owner"]));
    }
}
