//! Restore (DESIGN.md §4): plan reads by pack, read ranges, verify every blob, write files.
//!
//! Steps: walk the snapshot below the chosen path and select entries (include/exclude);
//! create directories, files (at their final length, so holes stay holes), links and special
//! files; then fetch each pack's needed blobs with ranged reads (a blob read once serves every
//! file that holds it), open and verify them on rayon, and write them in place; then apply
//! metadata: files first, then hard links, then directories deepest first (so their times and
//! read-only modes are not disturbed by what is written inside them). `--verify` re-reads every
//! restored file and checks it chunk by chunk against the snapshot, before the metadata is
//! applied (so the read neither needs the final mode's permission nor changes access times).
//!
//! Nothing is ever written through a symlink inside the target (issue 18): every entry is made
//! and changed relative to a handle on its parent directory, reached from the target without
//! following links (see [`target`]). What is in the way of an entry (a link, a file, an empty
//! directory, anything of the wrong type) is replaced by the snapshot's entry; a non-empty
//! directory where the snapshot has something else is an error for that entry and is left as
//! it is; an existing directory where the snapshot has one is kept and restored into.

mod target;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rayon::prelude::*;

use super::progress::Progress;
use super::read::{Resolved, resolve};
use super::walk::{Step, TreeWalk};
use crate::error::{Error, Result};
use crate::format::pack::open_blob;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Extent, Node, NodeKind, valid_name};
use crate::id::Id;
use crate::repo::catalog::BlobLocation;
use crate::repo::lease::LeaseMode;
use crate::repo::{Repository, keys};
use target::TargetDir;

/// Blobs of one pack closer together than this are fetched in one ranged read: reading up to
/// this much that is not needed is cheaper than one more request (an S3 GET's fixed cost is
/// that of about a megabyte of transfer at local-network speed).
const MERGE_GAP: u64 = 1024 * 1024;
/// No single ranged read is longer than this: a pack of the default size (16 MiB) with its
/// header is one read, as restic reads its packs.
const MAX_READ: u64 = 32 * 1024 * 1024;
/// The bytes of ranged reads fetched and not yet written, over all reads at once; bounds the
/// memory a restore holds now that one read can be a whole pack.
const READ_BUDGET: u64 = 128 * 1024 * 1024;

/// What to do with an entry that already exists in the target where the snapshot has one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it.
    Always,
    /// Leave it when it is the snapshot's (a file of the same size and contents, a link to the
    /// same target, a special file of the same type), applying the snapshot's metadata; else
    /// replace it.
    #[default]
    IfChanged,
    /// Replace it when the snapshot's entry has a later modification time; else leave it.
    IfNewer,
    /// Leave it.
    Never,
}

impl std::str::FromStr for Overwrite {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Overwrite, String> {
        Ok(match s {
            "always" => Overwrite::Always,
            "if-changed" => Overwrite::IfChanged,
            "if-newer" => Overwrite::IfNewer,
            "never" => Overwrite::Never,
            _ => {
                return Err(format!("{s:?}: give always, if-changed, if-newer or never"));
            }
        })
    }
}

impl std::fmt::Display for Overwrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overwrite::Always => "always",
            Overwrite::IfChanged => "if-changed",
            Overwrite::IfNewer => "if-newer",
            Overwrite::Never => "never",
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore only paths matching one of these (or below a match); all when empty.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Re-read every restored file and check it against the snapshot.
    pub verify: bool,
    pub progress: Option<Arc<Progress>>,
    /// How long to wait for a prune's lease (restore reads under a shared one).
    pub lease_wait: std::time::Duration,
    /// Entries already in the target.
    pub overwrite: Overwrite,
    /// Remove what the target has below the restored path and the snapshot does not (what
    /// the include and exclude patterns leave out of the restore is kept).
    pub delete: bool,
}

#[derive(Debug, Default)]
pub struct RestoreOutcome {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    pub bytes: u64,
    pub verified_files: u64,
    /// Entries already in the target as in the snapshot: left as they were, given the
    /// snapshot's metadata (`--overwrite if-changed`).
    pub unchanged: u64,
    /// Entries already in the target that the overwrite mode kept (`never`, `if-newer`), with
    /// what lies below a kept non-directory where the snapshot has a directory.
    pub skipped: u64,
    /// Entries removed from the target (`delete`), counting what was inside directories.
    pub deleted: u64,
    /// Entries that could not be restored or failed verification.
    pub errors: Vec<String>,
}

struct Matcher {
    names: GlobSet,
    paths: GlobSet,
    empty: bool,
}

impl Matcher {
    fn new(patterns: &[String]) -> Result<Matcher> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let p = p.trim_end_matches('/');
            let glob = |s: &str| {
                GlobBuilder::new(s)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| Error::invalid(format!("pattern {p:?}: {e}")))
            };
            if p.contains('/') {
                if p.starts_with('/') {
                    paths.add(glob(p)?);
                } else {
                    paths.add(glob(&format!("/**/{p}"))?);
                }
            } else if !p.is_empty() {
                names.add(glob(p)?);
            }
        }
        Ok(Matcher {
            names: names.build().map_err(|e| Error::invalid(e.to_string()))?,
            paths: paths.build().map_err(|e| Error::invalid(e.to_string()))?,
            empty: patterns.is_empty(),
        })
    }

    /// Does the pattern set match `path` (a snapshot path starting with `/`) or an ancestor?
    fn matches(&self, path: &str) -> bool {
        let mut p = Path::new(path);
        loop {
            if let Some(name) = p.file_name()
                && self.names.is_match(Path::new(name))
            {
                return true;
            }
            if self.paths.is_match(p) {
                return true;
            }
            match p.parent() {
                Some(parent) if parent != Path::new("/") && parent != Path::new("") => p = parent,
                _ => return false,
            }
        }
    }

    /// Could a descendant of `path` match? Only patterns with a slash constrain this.
    fn may_match_below(&self) -> bool {
        !self.empty
    }
}

/// An entry to restore.
struct Item {
    /// Where it goes.
    dest: PathBuf,
    node: Node,
    depth: usize,
}

struct FileTarget {
    file: usize,
    offset: u64,
}

struct PlannedBlob {
    id: Id,
    loc: BlobLocation,
    targets: Vec<FileTarget>,
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Restore `path` of `snap` into `target`. A directory's contents go into `target`; a single
/// file goes into `target/<name>`.
/// Restore `path` of `snap` into `target`, under a shared lease so that no prune deletes the
/// packs it is about to read.
pub async fn restore(
    repo: &Arc<Repository>,
    snap: &Snapshot,
    path: &str,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreOutcome> {
    repo.with_lease(LeaseMode::Read, "restore", opts.lease_wait, |_| {
        restore_leased(repo, snap, path, target, opts)
    })
    .await
}

/// [`restore`] for a caller that holds a lease, or observes the storage without one (the model
/// fuzzer's healthy views).
pub(crate) async fn restore_leased(
    repo: &Arc<Repository>,
    snap: &Snapshot,
    path: &str,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreOutcome> {
    let include = Matcher::new(&opts.include)?;
    let exclude = Matcher::new(&opts.exclude)?;
    let start = resolve(repo, snap, path).await?;
    let base = format!("/{}", super::read::components(path)?.join("/"));
    let base = if base == "/" { String::new() } else { base };

    let t0 = std::time::Instant::now();
    // 1. Plan: select the entries to restore.
    let mut items: Vec<Item> = Vec::new();
    let mut walk = None;
    match &start {
        Resolved::Root(t) => walk = Some(TreeWalk::new(*t)),
        Resolved::Node(n) if n.kind == NodeKind::Dir => walk = n.subtree.map(TreeWalk::new),
        Resolved::Node(n) => {
            items.push(Item {
                dest: target.join(os(&n.name)),
                node: (**n).clone(),
                depth: 1,
            });
        }
    }
    let snap_path = |rel: &[u8]| format!("{base}/{}", String::from_utf8_lossy(rel));
    while let Some(walk) = walk.as_mut() {
        // Descend where something may be selected below.
        let step = walk
            .step(repo, |rel, _| {
                let sp = snap_path(rel);
                (!exclude.empty && exclude.matches(&sp))
                    || !(include.empty || include.matches(&sp) || include.may_match_below())
            })
            .await;
        let e = match step {
            None => break,
            Some(Step::Leave(_)) => continue,
            Some(Step::Enter(e)) => e,
        };
        let tree = e.tree?;
        let dir = target.join(OsStr::from_bytes(e.path));
        let spath = if e.path.is_empty() {
            base.clone()
        } else {
            snap_path(e.path)
        };
        for n in &tree.nodes {
            if !valid_name(&n.name) {
                return Err(Error::corrupt(
                    format!("tree {}", e.id),
                    "invalid entry name",
                ));
            }
            let sp = format!("{spath}/{}", n.name_lossy());
            if !exclude.empty && exclude.matches(&sp) {
                continue;
            }
            if n.kind == NodeKind::Dir || include.empty || include.matches(&sp) {
                items.push(Item {
                    dest: dir.join(os(&n.name)),
                    node: n.clone(),
                    depth: e.depth + 1,
                });
            }
        }
    }
    // With includes, keep only directories that lead to (or are) selected entries.
    if !include.empty {
        let mut needed: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
        for it in &items {
            let sp = it.dest.strip_prefix(target).unwrap_or(&it.dest);
            let snap_path = format!("{base}/{}", sp.to_string_lossy());
            if it.node.kind != NodeKind::Dir || include.matches(&snap_path) {
                let mut p = it.dest.parent();
                while let Some(d) = p {
                    if d == target || !needed.insert(d.to_path_buf()) {
                        break;
                    }
                    p = d.parent();
                }
                needed.insert(it.dest.clone());
            }
        }
        items.retain(|it| it.node.kind != NodeKind::Dir || needed.contains(&it.dest));
    }
    items.sort_by(|a, b| a.dest.cmp(&b.dest));

    let mut out = RestoreOutcome::default();
    // A target that did not exist is "fresh": nothing inside it needs to be cleared first.
    let target_fresh = !target.exists();
    fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    // The target itself is followed if it is a link (the user named it); nothing below it is.
    // Handles stay within the open-files limit: some for directories, more for files being
    // written (the rest is left to the backend, the catalog and the writers' transient ones).
    let budget = (crate::source::fs::open_files_limit().min(1 << 20) as usize) / 2;
    let tdir = Arc::new(
        TargetDir::open(target, (budget / 4).clamp(4, 4096)).map_err(|e| Error::io(target, e))?,
    );
    let max_kept = (budget / 2).clamp(4, 1024);
    // For `delete`: the names the snapshot has in each restored directory (before entries are
    // dropped as errors below, which must not be deleted for it).
    let mut expected: HashMap<PathBuf, HashSet<std::ffi::OsString>> = HashMap::new();
    if opts.delete
        && !target_fresh
        && !matches!(&start, Resolved::Node(n) if n.kind != NodeKind::Dir)
    {
        expected.insert(target.to_path_buf(), HashSet::new());
        for it in &items {
            if it.node.kind == NodeKind::Dir {
                expected.entry(it.dest.clone()).or_default();
            }
            if let (Some(parent), Some(name)) = (it.dest.parent(), it.dest.file_name()) {
                expected
                    .entry(parent.to_path_buf())
                    .or_default()
                    .insert(name.to_os_string());
            }
        }
    }
    // Entries whose place below the target cannot be named in one system call (longer than
    // PATH_MAX) are errors of their own.
    items.retain(|it| match target::split(target, &it.dest) {
        Ok(_) => true,
        Err(e) => {
            out.errors.push(e);
            false
        }
    });

    tracing::debug!(
        "restore: planned {} entries in {:?}",
        items.len(),
        t0.elapsed()
    );
    // 2. Directories, in path order so parents come first. They stay writable by us until
    // their metadata is applied at the very end.
    let mut fresh_dirs: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    if target_fresh {
        fresh_dirs.insert(target.to_path_buf());
    }
    let mut created = vec![false; items.len()];
    // Entries left as they are in the target (unchanged or kept by the overwrite mode), and
    // the places of directories not made because something else was kept there.
    let mut skip = vec![false; items.len()];
    let mut kept_dirs: HashSet<PathBuf> = HashSet::new();
    for (i, it) in items.iter().enumerate() {
        if !kept_dirs.is_empty() && it.dest.ancestors().skip(1).any(|a| kept_dirs.contains(a)) {
            skip[i] = true;
            out.skipped += 1;
            continue;
        }
        if it.node.kind != NodeKind::Dir {
            continue;
        }
        let fresh_parent = it.dest.parent().is_some_and(|p| fresh_dirs.contains(p));
        if opts.overwrite == Overwrite::Never
            && !fresh_parent
            && let Ok((d, n)) = locate(&tdir, target, &it.dest)
            && let Ok(Some(st)) = target::stat_at(d.as_fd(), n)
            && rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory
        {
            skip[i] = true;
            out.skipped += 1;
            kept_dirs.insert(it.dest.clone());
            continue;
        }
        // A link or anything else in the way is replaced; a real directory is kept.
        match locate(&tdir, target, &it.dest).and_then(|(d, n)| target::make_dir(d.as_fd(), n)) {
            Ok(fresh) => {
                if fresh {
                    fresh_dirs.insert(it.dest.clone());
                }
                created[i] = true;
                out.dirs += 1;
            }
            Err(e) => out.errors.push(format!("{}: {e}", it.dest.display())),
        }
    }

    let items = Arc::new(items);
    // In a directory made by this restore there is nothing to clear first (what is in the way
    // of an entry is cleared only when making it fails), and new files belong to us already (no
    // set-group-id directory to inherit from), so an owner change to ourselves can be skipped.
    let fresh_parent: Vec<bool> = items
        .iter()
        .map(|it| it.dest.parent().is_some_and(|p| fresh_dirs.contains(p)))
        .collect();

    // 2b. What the target already has where an entry goes: left as it is, or replaced, as the
    // overwrite mode says. Files are compared by reading them (in parallel).
    let candidates: Vec<usize> = (0..items.len())
        .filter(|&i| !skip[i] && !fresh_parent[i] && items[i].node.kind != NodeKind::Dir)
        .collect();
    if !candidates.is_empty() {
        let (items2, tdir2, keys) = (items.clone(), tdir.clone(), repo.keys().clone());
        let (target2, mode) = (target.to_path_buf(), opts.overwrite);
        let found: Vec<(usize, Found)> = tokio::task::spawn_blocking(move || {
            candidates
                .par_iter()
                .map(|&i| (i, existing(&tdir2, &target2, &items2[i], mode, &keys)))
                .collect()
        })
        .await
        .map_err(|e| Error::Other(e.to_string()))?;
        for (i, f) in found {
            match f {
                Found::Replace => continue,
                Found::Same(errs) => {
                    out.unchanged += 1;
                    out.errors.extend(errs);
                }
                Found::Kept => out.skipped += 1,
            }
            skip[i] = true;
        }
    }
    // 2c. `delete`: what the restored directories hold that the snapshot does not.
    for (dir, names) in &expected {
        // A directory made now holds nothing else; one that could not be made, or was not
        // (something kept in its place), is not touched.
        if fresh_dirs.contains(dir)
            || (dir != target
                && !items
                    .binary_search_by(|it| it.dest.as_path().cmp(dir))
                    .is_ok_and(|i| created[i]))
        {
            continue;
        }
        let rel = dir.strip_prefix(target).unwrap_or(Path::new(""));
        let listed = tdir
            .dir(rel)
            .and_then(|d| target::list_dir(d.as_fd(), OsStr::new("")).map(|l| (d, l)));
        let (d, listed) = match listed {
            Ok(x) => x,
            Err(e) => {
                out.errors.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        for name in listed {
            if names.contains(&name) {
                continue;
            }
            let sp = format!("{base}/{}", rel.join(&name).to_string_lossy());
            if (!exclude.empty && exclude.matches(&sp)) || !(include.empty || include.matches(&sp))
            {
                continue;
            }
            match target::remove_tree(d.as_fd(), &name) {
                Ok(n) => out.deleted += n,
                Err(e) => out
                    .errors
                    .push(format!("{}: delete: {e}", dir.join(&name).display())),
            }
        }
    }

    // 3. Plan the contents by pack; sort out hard links. What a previous restore (or anything
    // else) left where an entry goes is removed when the entry is made.
    let mut hardlinks: Vec<(usize, usize)> = Vec::new();
    let mut primary: HashMap<(u64, u64), usize> = HashMap::new();
    let mut leaves: Vec<usize> = Vec::new(); // created and finished right away
    let remaining: Vec<AtomicU32> = (0..items.len()).map(|_| AtomicU32::new(0)).collect();
    let mut by_pack: HashMap<Id, HashMap<Id, PlannedBlob>> = HashMap::new();
    // Extents the catalog does not know, or knows with another length than the snapshot's:
    // (file, offset, blob, length, what is wrong). Planned again after a rebuild of the index.
    let mut suspects: Vec<(usize, u64, Id, u32, String)> = Vec::new();
    // Bytes of contents to write, and of files left as they are (for the progress).
    let (mut planned_bytes, mut done_bytes) = (0u64, 0u64);
    // All lookups in one read transaction.
    repo.catalog().read_transaction(|catalog| -> Result<()> {
        for (i, it) in items.iter().enumerate() {
            let node = &it.node;
            if skip[i] {
                // A file left in place is what its other links are linked to.
                if node.kind == NodeKind::File && node.links > 1 {
                    primary.entry((node.dev, node.inode)).or_insert(i);
                }
                if node.kind == NodeKind::File {
                    done_bytes += data_len(node);
                }
                continue;
            }
            match node.kind {
                NodeKind::Dir | NodeKind::Socket => continue,
                NodeKind::File if node.links > 1 => {
                    let key = (node.dev, node.inode);
                    if let Some(&p) = primary.get(&key) {
                        hardlinks.push((i, p));
                        continue;
                    }
                    primary.insert(key, i);
                }
                _ => {}
            }
            if node.kind != NodeKind::File {
                leaves.push(i);
                continue;
            }
            planned_bytes += data_len(node);
            let mut offset = 0u64;
            let mut planned = 0u32;
            for e in &node.content {
                if let Extent::Data { id, len } = e {
                    planned += 1;
                    if let Err(why) = plan_blob(catalog, &mut by_pack, i, offset, id, *len)? {
                        suspects.push((i, offset, *id, *len, why));
                    }
                }
                offset += e.len();
            }
            out.files += 1;
            if planned == 0 {
                leaves.push(i); // empty or all holes: nothing to fetch
            } else {
                remaining[i].store(planned, Ordering::Relaxed);
            }
        }
        Ok(())
    })??;
    if let Some((_, _, _, _, why)) = suspects.first() {
        // The catalog may be wrong rather than the snapshot: ask once more after a rebuild.
        repo.rebuild_index_once(why).await?;
        repo.catalog().read_transaction(|catalog| -> Result<()> {
            for (i, offset, id, len, _) in suspects {
                if let Err(why) = plan_blob(catalog, &mut by_pack, i, offset, &id, len)? {
                    out.errors
                        .push(format!("{}: {why}", items[i].dest.display()));
                }
            }
            Ok(())
        })??;
    }
    if let Some(p) = &opts.progress {
        p.total_bytes
            .store(planned_bytes + done_bytes, Ordering::Relaxed);
        p.totals_final.store(true, Ordering::Relaxed);
        p.bytes.fetch_add(done_bytes, Ordering::Relaxed);
    }
    let (euid, egid) = unsafe_ids();
    let owned: Vec<bool> = items
        .iter()
        .zip(&fresh_parent)
        .map(|(it, &fresh)| it.node.uid == euid && it.node.gid == egid && fresh)
        .collect();
    let ctx = Arc::new(WriteCtx {
        slots: (0..items.len()).map(|_| Mutex::default()).collect(),
        items: items.clone(),
        target: target.to_path_buf(),
        tdir: tdir.clone(),
        kept: AtomicUsize::new(0),
        max_kept,
        owned,
        fresh_parent,
        remaining,
        verify: opts.verify,
        keys: repo.keys().clone(),
        verified: AtomicU64::new(0),
    });

    // 4. Entries without contents to fetch (symlinks, special files, empty and all-hole files)
    // are made and finished now, in parallel: small-file restores are bound by system calls.
    tracing::debug!("restore: leaves at {:?}", t0.elapsed());
    let leaf_results: Vec<(usize, Vec<String>)> = {
        let ctx = ctx.clone();
        tokio::task::spawn_blocking(move || {
            leaves
                .par_iter()
                .map(|&i| (i, make_leaf(&ctx, i)))
                .collect()
        })
        .await
        .map_err(|e| Error::Other(e.to_string()))?
    };
    for (i, errs) in leaf_results {
        if items[i].node.kind != NodeKind::File && errs.is_empty() {
            out.others += 1;
        }
        out.errors.extend(errs);
    }

    // 5. Contents, pack by pack; each file is finished (length, verification, metadata) by
    // whichever write completes it.
    tracing::debug!("restore: contents at {:?}", t0.elapsed());
    // Work is spread by ranged read, not by pack, so a few large packs do not leave the other
    // workers idle at the end.
    let parallel = (repo.connections() * 3).max(6);
    let progress = opts.progress.clone();
    // Blobs that could not be read where the catalog said are read once more after a rebuild
    // of its index (a damaged or stale catalog); what fails again is reported.
    let mut second_pass = false;
    loop {
        let reads: Vec<(Id, Vec<PlannedBlob>)> = std::mem::take(&mut by_pack)
            .into_iter()
            .flat_map(|(pack, blobs)| {
                plan_reads(blobs.into_values().collect())
                    .into_iter()
                    .map(move |g| (pack, g))
            })
            .collect();
        let budget = Arc::new(tokio::sync::Semaphore::new(
            budget_units(READ_BUDGET) as usize
        ));
        let mut results = futures::stream::iter(reads.into_iter().map(|(pack, group)| {
            let repo = repo.clone();
            let ctx = ctx.clone();
            let progress = progress.clone();
            let budget = budget.clone();
            async move {
                // Held until the read's blobs are written (a closed semaphore cannot happen:
                // it is never closed).
                let _held = budget
                    .acquire_many_owned(budget_units(read_len(&group)))
                    .await
                    .map_err(|e| Error::Other(e.to_string()))?;
                restore_read(&repo, pack, group, &ctx, progress.as_deref()).await
            }
        }))
        .buffer_unordered(parallel);
        let mut failed: Vec<(PlannedBlob, String)> = Vec::new();
        while let Some(r) = results.next().await {
            let (bytes, errs, f) = r?;
            out.bytes += bytes;
            out.errors.extend(errs);
            failed.extend(f);
        }
        drop(results);
        let Some((_, why)) = failed.first() else {
            break;
        };
        if second_pass {
            for (b, why) in &failed {
                for t in &b.targets {
                    out.errors
                        .push(format!("{}: {why}", items[t.file].dest.display()));
                }
            }
            break;
        }
        second_pass = true;
        repo.rebuild_index_once(why).await?;
        repo.catalog().read_transaction(|catalog| -> Result<()> {
            for (b, _) in failed {
                for t in b.targets {
                    let dest = &items[t.file].dest;
                    if let Err(why) = plan_blob(
                        catalog,
                        &mut by_pack,
                        t.file,
                        t.offset,
                        &b.id,
                        b.loc.raw_len,
                    )? {
                        out.errors.push(format!("{}: {why}", dest.display()));
                    }
                }
            }
            Ok(())
        })??;
    }
    // Files some of whose contents could not be fetched (errors reported above) still get their
    // length and metadata, and `--verify` reports them too.
    for i in 0..items.len() {
        if ctx.remaining[i].load(Ordering::Acquire) > 0 {
            if let Some(f) = ctx.file(i, &mut out.errors) {
                out.errors.extend(ctx.finish_file(i, &f));
            }
            ctx.release(i);
        }
    }
    out.verified_files = ctx.verified.load(Ordering::Relaxed);

    // 6. Hard links, then directories' metadata, deepest first.
    tracing::debug!("restore: links and directories at {:?}", t0.elapsed());
    for (link, target_i) in hardlinks {
        let linked = ctx.at(target_i).and_then(|(od, on)| {
            let (nd, nn) = ctx.at(link)?;
            target::hard_link(od.as_fd(), on, nd.as_fd(), nn)
        });
        if let Err(e) = linked {
            out.errors
                .push(format!("{}: {e}", items[link].dest.display()));
        } else {
            out.files += 1;
        }
    }
    let mut dirs: Vec<usize> = (0..items.len())
        .filter(|&i| created[i] && items[i].node.kind == NodeKind::Dir)
        .collect();
    dirs.sort_by_key(|&i| std::cmp::Reverse(items[i].depth));
    for i in dirs {
        let it = &items[i];
        // Through a handle on the directory itself; one we may not read (not being root) by
        // name in its parent.
        let errs = match ctx.at(i) {
            Ok((d, name)) => match target::open_dir(d.as_fd(), name) {
                Ok(f) => apply_metadata_fd(&f, &it.dest, &it.node, false),
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                    apply_metadata_at(d.as_fd(), name, &it.dest, &it.node)
                }
                Err(e) => vec![format!("{}: {e}", it.dest.display())],
            },
            Err(e) => vec![format!("{}: {e}", it.dest.display())],
        };
        out.errors.extend(errs);
    }
    tracing::debug!("restore: done at {:?}", t0.elapsed());
    Ok(out)
}

/// What [`existing`] found where an entry goes.
enum Found {
    /// Nothing, or something to replace.
    Replace,
    /// The snapshot's entry already: left, its metadata applied (with what failed of that).
    Same(Vec<String>),
    /// Something the overwrite mode keeps.
    Kept,
}

/// The bytes of a file's data extents (what a restore writes of it).
fn data_len(node: &Node) -> u64 {
    node.content
        .iter()
        .map(|e| match e {
            Extent::Data { len, .. } => *len as u64,
            Extent::Hole(_) => 0,
        })
        .sum()
}

/// Compare what is at entry `it`'s place in the target with the snapshot's entry, as `mode`
/// says; never following a link. Anything that cannot be looked at is replaced (and the error,
/// if it persists, reported when the entry is made).
fn existing(
    tdir: &TargetDir,
    target: &Path,
    it: &Item,
    mode: Overwrite,
    keys: &crate::crypto::Keys,
) -> Found {
    use rustix::fs::FileType;
    let Ok((dir, name)) = locate(tdir, target, &it.dest) else {
        return Found::Replace;
    };
    let d = dir.as_fd();
    let st = match target::stat_at(d, name) {
        Ok(Some(st)) => st,
        Ok(None) | Err(_) => return Found::Replace,
    };
    let node = &it.node;
    match mode {
        Overwrite::Always => return Found::Replace,
        Overwrite::Never => return Found::Kept,
        Overwrite::IfNewer => {
            let theirs = (st.st_mtime as i64, st.st_mtime_nsec as u32);
            let ours = (node.mtime.secs, node.mtime.nanos);
            return if ours > theirs {
                Found::Replace
            } else {
                Found::Kept
            };
        }
        Overwrite::IfChanged => {}
    }
    let kind = FileType::from_raw_mode(st.st_mode);
    let same = match node.kind {
        NodeKind::File => {
            if kind != FileType::RegularFile || st.st_size as u64 != node.size {
                return Found::Replace;
            }
            let Ok(f) = target::open_existing(d, name) else {
                return Found::Replace;
            };
            // Still the file looked at, and the snapshot's contents.
            if target::file_id(f.as_fd()).ok() != Some((st.st_dev, st.st_ino))
                || verify_file(keys, &f, &it.dest, node).is_err()
            {
                return Found::Replace;
            }
            return Found::Same(apply_metadata_fd(&f, &it.dest, node, false));
        }
        NodeKind::Symlink => {
            kind == FileType::Symlink
                && target::read_link_at(d, name)
                    .is_ok_and(|t| t.as_bytes() == node.target.as_slice())
        }
        NodeKind::CharDev | NodeKind::BlockDev => {
            kind == file_type(node.kind) && st.st_rdev == node.rdev
        }
        NodeKind::Fifo => kind == FileType::Fifo,
        NodeKind::Dir | NodeKind::Socket => false,
    };
    if same {
        Found::Same(apply_metadata_at(d, name, &it.dest, node))
    } else {
        Found::Replace
    }
}

fn unsafe_ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// The handle on the parent directory of `dest` (below `target`) and the entry's name.
fn locate<'a>(
    tdir: &TargetDir,
    target: &Path,
    dest: &'a Path,
) -> std::io::Result<(Arc<OwnedFd>, &'a OsStr)> {
    let (parent, name) = target::split(target, dest).map_err(std::io::Error::other)?;
    Ok((tdir.dir(parent)?, name))
}

/// A file being written: kept open while it has contents outstanding (up to a bound on open
/// files), else reopened by name for each write, checking it is still the file made.
#[derive(Default)]
struct Slot {
    file: Option<Arc<File>>,
    /// Device and inode, recorded when the file was not kept open.
    id: Option<(u64, u64)>,
    /// The file could not be made (reported once).
    failed: bool,
}

/// What the writers of file contents share.
struct WriteCtx {
    items: Arc<Vec<Item>>,
    target: PathBuf,
    tdir: Arc<TargetDir>,
    slots: Vec<Mutex<Slot>>,
    /// Files kept open in `slots`, at most `max_kept`.
    kept: AtomicUsize,
    max_kept: usize,
    /// Whether a new file at this entry already has the right owner.
    owned: Vec<bool>,
    /// Whether the entry's directory was made by this restore (nothing there to clear).
    fresh_parent: Vec<bool>,
    /// Data extents of each file still to be written.
    remaining: Vec<AtomicU32>,
    verify: bool,
    keys: Arc<crate::crypto::Keys>,
    verified: AtomicU64,
}

impl WriteCtx {
    fn at(&self, i: usize) -> std::io::Result<(Arc<OwnedFd>, &OsStr)> {
        locate(&self.tdir, &self.target, &self.items[i].dest)
    }

    fn slot(&self, i: usize) -> MutexGuard<'_, Slot> {
        self.slots[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open file of entry `i`, made on first use (replacing whatever is in its place).
    /// Several writers fill parts of one file; the first one makes it. A file that cannot be
    /// made is reported in `errs` once, however many writers ask for it.
    fn file(&self, i: usize, errs: &mut Vec<String>) -> Option<Arc<File>> {
        let mut slot = self.slot(i);
        if let Some(f) = &slot.file {
            return Some(f.clone());
        }
        if slot.failed {
            return None;
        }
        match self.open_file(i, &mut slot) {
            Ok(f) => Some(f),
            Err(e) => {
                slot.failed = true;
                errs.push(format!("{}: {e}", self.items[i].dest.display()));
                None
            }
        }
    }

    fn open_file(&self, i: usize, slot: &mut Slot) -> std::io::Result<Arc<File>> {
        let (dir, name) = self.at(i)?;
        let f = Arc::new(match slot.id {
            None => target::create_file(dir.as_fd(), name, self.verify, !self.fresh_parent[i])?,
            Some(id) => target::reopen_file(dir.as_fd(), name, self.verify, id)?,
        });
        if self.kept.fetch_add(1, Ordering::AcqRel) < self.max_kept {
            slot.file = Some(f.clone());
        } else {
            self.kept.fetch_sub(1, Ordering::AcqRel);
            if slot.id.is_none() {
                slot.id = Some(target::file_id(f.as_fd())?);
            }
        }
        Ok(f)
    }

    /// Close entry `i`'s file once nothing more is to be written to it.
    fn release(&self, i: usize) {
        if self.slot(i).file.take().is_some() {
            self.kept.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Set the final length (holes stay holes), verify if asked, apply metadata.
    fn finish_file(&self, i: usize, f: &File) -> Vec<String> {
        let it = &self.items[i];
        // Writing the last extent already gave the file its length unless it ends in a hole.
        let ends_with_data = matches!(it.node.content.last(), Some(Extent::Data { .. }));
        if (!ends_with_data || it.node.size == 0)
            && let Err(e) = f.set_len(it.node.size)
        {
            return vec![format!("{}: {e}", it.dest.display())];
        }
        let mut errs = Vec::new();
        if self.verify {
            match verify_file(&self.keys, f, &it.dest, &it.node) {
                Ok(()) => {
                    self.verified.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => errs.push(e),
            }
        }
        errs.extend(apply_metadata_fd(f, &it.dest, &it.node, self.owned[i]));
        errs
    }
}

/// Create an entry that has no contents to fetch, and apply its metadata.
fn make_leaf(ctx: &WriteCtx, i: usize) -> Vec<String> {
    let it = &ctx.items[i];
    if it.node.kind == NodeKind::File {
        let mut errs = Vec::new();
        if let Some(f) = ctx.file(i, &mut errs) {
            errs.extend(ctx.finish_file(i, &f));
        }
        ctx.release(i);
        return errs;
    }
    let clear = !ctx.fresh_parent[i];
    let made = ctx.at(i).and_then(|(dir, name)| {
        let d = dir.as_fd();
        match it.node.kind {
            NodeKind::Symlink => target::make_symlink(os(&it.node.target), d, name, clear)?,
            kind => target::make_node(d, name, file_type(kind), it.node.rdev, clear)?,
        }
        Ok((dir, name))
    });
    match made {
        Ok((dir, name)) => apply_metadata_at(dir.as_fd(), name, &it.dest, &it.node),
        Err(e) => vec![format!("{}: {e}", it.dest.display())],
    }
}

fn file_type(kind: NodeKind) -> rustix::fs::FileType {
    use rustix::fs::FileType;
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::Fifo,
        NodeKind::CharDev => FileType::CharacterDevice,
        NodeKind::BlockDev => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

/// Owner, extended attributes, mode (not of a symlink) and times of `name` in `dir`, never
/// following a link; for entries that are not opened (symlinks, FIFOs, devices). Returns what
/// failed; an owner change that is not permitted (not running as root) is skipped silently,
/// as other tools do.
fn apply_metadata_at(dir: BorrowedFd<'_>, name: &OsStr, path: &Path, node: &Node) -> Vec<String> {
    let mut errs = Vec::new();
    if let Err(e) = target::chown_at(dir, name, node.uid, node.gid)
        && e.raw_os_error() != Some(libc::EPERM)
    {
        errs.push(format!("{}: chown: {e}", path.display()));
    }
    for x in &node.xattrs {
        // Attributes of privileged namespaces may not be settable here; user ones must be.
        if let Err(e) = target::xattr_at(dir, name, os(&x.name), &x.value)
            && x.name.starts_with(b"user.")
        {
            errs.push(format!(
                "{}: xattr {}: {e}",
                path.display(),
                String::from_utf8_lossy(&x.name)
            ));
        }
    }
    if node.kind != NodeKind::Symlink
        && let Err(e) = target::chmod_at(dir, name, file_type(node.kind), node.mode)
    {
        errs.push(format!("{}: chmod: {e}", path.display()));
    }
    let t = |t: crate::format::Timestamp| (t.secs, t.nanos);
    if let Err(e) = target::times_at(dir, name, t(node.atime), t(node.mtime)) {
        errs.push(format!("{}: times: {e}", path.display()));
    }
    errs
}

/// [`apply_metadata_at`] through an open file or directory: no path lookups, and the same
/// order (owner before mode, since a change of owner clears set-id bits; times last).
fn apply_metadata_fd(f: &File, path: &Path, node: &Node, owned: bool) -> Vec<String> {
    use std::os::unix::io::AsRawFd;
    let mut errs = Vec::new();
    // SAFETY: fchown on a file descriptor we own.
    let r = if owned {
        0
    } else {
        unsafe { libc::fchown(f.as_raw_fd(), node.uid, node.gid) }
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EPERM) {
            errs.push(format!("{}: chown: {e}", path.display()));
        }
    }
    for x in &node.xattrs {
        if let Err(e) = xattr::FileExt::set_xattr(f, os(&x.name), &x.value)
            && x.name.starts_with(b"user.")
        {
            errs.push(format!(
                "{}: xattr {}: {e}",
                path.display(),
                String::from_utf8_lossy(&x.name)
            ));
        }
    }
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = f.set_permissions(fs::Permissions::from_mode(node.mode)) {
            errs.push(format!("{}: chmod: {e}", path.display()));
        }
    }
    let ft = |t: crate::format::Timestamp| filetime::FileTime::from_unix_time(t.secs, t.nanos);
    if let Err(e) = filetime::set_file_handle_times(f, Some(ft(node.atime)), Some(ft(node.mtime))) {
        errs.push(format!("{}: times: {e}", path.display()));
    }
    errs
}

/// Plan one extent of file `file` at `offset` (blob `id` of `len` bytes): where the catalog
/// says the blob is, or, as `Err`, why it cannot be planned.
fn plan_blob(
    catalog: &crate::repo::catalog::Catalog,
    by_pack: &mut HashMap<Id, HashMap<Id, PlannedBlob>>,
    file: usize,
    offset: u64,
    id: &Id,
    len: u32,
) -> Result<std::result::Result<(), String>> {
    Ok(match catalog.lookup(id)? {
        Some(loc) if loc.raw_len != len => Err(format!(
            "the snapshot says blob {id} has {len} bytes, the index {}",
            loc.raw_len
        )),
        Some(loc) => {
            by_pack
                .entry(loc.pack)
                .or_default()
                .entry(*id)
                .or_insert_with(|| PlannedBlob {
                    id: *id,
                    loc,
                    targets: Vec::new(),
                })
                .targets
                .push(FileTarget { file, offset });
            Ok(())
        }
        None => Err(format!("blob {id} is missing from the index")),
    })
}

/// The bytes one ranged read of a planned group fetches.
fn read_len(group: &[PlannedBlob]) -> u64 {
    match (group.first(), group.last()) {
        (Some(first), Some(last)) => {
            last.loc.offset as u64 + last.loc.length as u64 - first.loc.offset as u64
        }
        _ => 0,
    }
}

/// Bytes in units of the read budget's semaphore (64 KiB, so a whole budget fits its permits),
/// at least one, at most the whole budget (one read larger than the budget still runs, alone).
fn budget_units(bytes: u64) -> u32 {
    (bytes.div_ceil(64 * 1024)).clamp(1, READ_BUDGET / (64 * 1024)) as u32
}

/// Group a pack's blobs into ranged reads.
fn plan_reads(mut blobs: Vec<PlannedBlob>) -> Vec<Vec<PlannedBlob>> {
    blobs.sort_by_key(|b| b.loc.offset);
    let mut groups: Vec<Vec<PlannedBlob>> = Vec::new();
    for b in blobs {
        if let Some(g) = groups.last_mut() {
            let first = g[0].loc.offset as u64;
            let last = g.last().expect("non-empty group");
            let end = last.loc.offset as u64 + last.loc.length as u64;
            let new_end = b.loc.offset as u64 + b.loc.length as u64;
            if (b.loc.offset as u64) <= end + MERGE_GAP && new_end - first <= MAX_READ {
                g.push(b);
                continue;
            }
        }
        groups.push(vec![b]);
    }
    groups
}

/// Fetch one ranged read of a pack and write its blobs wherever they belong. Returns the bytes
/// written, errors, and the blobs that failed in a way a wrong catalog can explain (with why),
/// which the caller may plan again.
async fn restore_read(
    repo: &Arc<Repository>,
    pack: Id,
    group: Vec<PlannedBlob>,
    ctx: &Arc<WriteCtx>,
    progress: Option<&Progress>,
) -> Result<(u64, Vec<String>, Vec<(PlannedBlob, String)>)> {
    let key = keys::pack(&pack);
    let start = group[0].loc.offset as u64;
    let last = group.last().expect("non-empty group");
    let end = last.loc.offset as u64 + last.loc.length as u64;
    let data = match repo.backend().get_range(&key, start, end - start).await {
        Ok(d) => d,
        Err(e) => {
            let why = format!("pack {pack}: {e}");
            if Repository::catalog_may_explain(&Error::from(e)) {
                return Ok((
                    0,
                    Vec::new(),
                    group.into_iter().map(|b| (b, why.clone())).collect(),
                ));
            }
            let mut errors = Vec::new();
            for b in &group {
                for t in &b.targets {
                    errors.push(format!("{}: {why}", ctx.items[t.file].dest.display()));
                }
            }
            return Ok((0, errors, Vec::new()));
        }
    };
    // Delta blobs are opened against their bases, read first.
    let mut bases: HashMap<Id, std::result::Result<Vec<u8>, String>> = HashMap::new();
    for b in &group {
        if let Some(base) = b.loc.base
            && !bases.contains_key(&base)
        {
            let r = repo.read_base(&base, &b.id).await;
            bases.insert(base, r.map_err(|e| e.to_string()));
        }
    }
    let ctx = ctx.clone();
    // One blocking task per read: opening blobs is CPU work, writing small files is
    // system-call latency, and several of these run at once.
    let (n, errs, group, retry) = tokio::task::spawn_blocking(move || {
        let mut n = 0u64;
        let mut errs = Vec::new();
        // Indices into `group` of blobs to plan again, and why.
        let mut retry: Vec<(usize, String)> = Vec::new();
        for (bi, b) in group.iter().enumerate() {
            let off = (b.loc.offset as u64 - start) as usize;
            // Within what was read unless the range came back short.
            let sealed = data
                .get(off..off + b.loc.length as usize)
                .ok_or_else(|| Error::corrupt(format!("pack {pack}"), "shorter than indexed"));
            let opened = match (b.loc.base.map(|base| &bases[&base]), sealed) {
                // The base was read through the repository, which already retried it.
                (Some(Err(e)), _) => Err((e.clone(), false)),
                (_, Err(e)) => Err((e.to_string(), true)),
                (base, Ok(sealed)) => open_blob(
                    &ctx.keys,
                    &b.id,
                    sealed,
                    b.loc.raw_len,
                    base.and_then(|r| r.as_ref().ok()).map(|v| v.as_slice()),
                )
                .map_err(|e| (e.to_string(), Repository::catalog_may_explain(&e))),
            };
            let plain = match opened {
                Ok(p) => p,
                Err((e, true)) => {
                    retry.push((bi, e));
                    continue;
                }
                Err((e, false)) => {
                    for t in &b.targets {
                        errs.push(format!("{}: {e}", ctx.items[t.file].dest.display()));
                    }
                    continue;
                }
            };
            for t in &b.targets {
                let dest = &ctx.items[t.file].dest;
                let Some(f) = ctx.file(t.file, &mut errs) else {
                    continue;
                };
                match f.write_all_at(&plain, t.offset) {
                    Ok(()) => {
                        n += plain.len() as u64;
                        if ctx.remaining[t.file].fetch_sub(1, Ordering::AcqRel) == 1 {
                            errs.extend(ctx.finish_file(t.file, &f));
                            ctx.release(t.file);
                        }
                    }
                    Err(e) => errs.push(format!("{}: {e}", dest.display())),
                }
            }
        }
        (n, errs, group, retry)
    })
    .await
    .map_err(|e| Error::Other(e.to_string()))?;
    if let Some(p) = progress {
        p.bytes.fetch_add(n, Ordering::Relaxed);
    }
    let mut group: Vec<Option<PlannedBlob>> = group.into_iter().map(Some).collect();
    let retry = retry
        .into_iter()
        .filter_map(|(bi, why)| Some((group[bi].take()?, why)))
        .collect();
    Ok((n, errs, retry))
}

fn verify_file(
    keys: &crate::crypto::Keys,
    f: &File,
    path: &Path,
    node: &Node,
) -> std::result::Result<(), String> {
    let len = f
        .metadata()
        .map_err(|e| format!("verify {}: {e}", path.display()))?
        .len();
    if len != node.size {
        return Err(format!(
            "verify {}: length {len}, snapshot says {}",
            path.display(),
            node.size
        ));
    }
    let mut off = 0u64;
    let mut buf = Vec::new();
    let read = |buf: &mut Vec<u8>, len: u64, at: u64| {
        buf.resize(len as usize, 0);
        f.read_exact_at(buf, at)
            .map_err(|er| format!("verify {}: {er}", path.display()))
    };
    for e in &node.content {
        let ok = match e {
            Extent::Data { id, len } => {
                read(&mut buf, *len as u64, off)?;
                keys.blob_id(&buf) == *id
            }
            // A hole may be huge: check it a piece at a time.
            Extent::Hole(n) => {
                let mut done = 0u64;
                let mut zero = true;
                while zero && done < *n {
                    let k = (*n - done).min(1 << 20);
                    read(&mut buf, k, off + done)?;
                    zero = buf.iter().all(|&b| b == 0);
                    done += k;
                }
                zero
            }
        };
        if !ok {
            return Err(format!(
                "verify {}: contents differ at offset {off}",
                path.display()
            ));
        }
        off += e.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::BlobKind;

    fn blob(n: u8, offset: u32, length: u32) -> PlannedBlob {
        PlannedBlob {
            id: Id([n; 32]),
            loc: BlobLocation {
                pack: Id([0; 32]),
                kind: BlobKind::Data,
                offset,
                length,
                raw_len: length,
                base: None,
            },
            targets: Vec::new(),
        }
    }

    fn spans(groups: &[Vec<PlannedBlob>]) -> Vec<(u32, u64)> {
        groups
            .iter()
            .map(|g| (g[0].loc.offset, read_len(g)))
            .collect()
    }

    #[test]
    fn a_whole_default_pack_is_one_read_and_far_blobs_are_not_merged() {
        // A 16 MiB pack of 1 MiB blobs, given out of order: one read of all of it.
        let mib = 1024 * 1024;
        let whole: Vec<_> = (0..16u8)
            .rev()
            .map(|i| blob(i, i as u32 * mib, mib))
            .collect();
        assert_eq!(spans(&plan_reads(whole)), vec![(0, 16 * mib as u64)]);
        // A gap of exactly MERGE_GAP is read through; one byte more starts a new read.
        let near = vec![blob(1, 0, 100), blob(2, 100 + MERGE_GAP as u32, 100)];
        assert_eq!(spans(&plan_reads(near)), vec![(0, 200 + MERGE_GAP)]);
        let far = vec![blob(1, 0, 100), blob(2, 101 + MERGE_GAP as u32, 100)];
        assert_eq!(
            spans(&plan_reads(far)),
            vec![(0, 100), (101 + MERGE_GAP as u32, 100)]
        );
        // No read is longer than MAX_READ.
        let long: Vec<_> = (0..40u8).map(|i| blob(i, i as u32 * mib, mib)).collect();
        let groups = plan_reads(long);
        assert!(groups.iter().all(|g| read_len(g) <= MAX_READ));
        assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), 40);
        assert_eq!(groups.len(), 2);
    }

    #[test]
    fn the_read_budget_counts_in_units_and_admits_any_single_read() {
        assert_eq!(budget_units(0), 1);
        assert_eq!(budget_units(1), 1);
        assert_eq!(budget_units(64 * 1024 + 1), 2);
        assert_eq!(budget_units(u64::MAX / 2), budget_units(READ_BUDGET));
        assert!(budget_units(MAX_READ) < budget_units(READ_BUDGET));
    }
}
