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

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rayon::prelude::*;

use super::progress::Progress;
use super::read::{Resolved, resolve};
use crate::error::{Error, Result};
use crate::format::pack::open_blob;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Extent, Node, NodeKind, valid_name};
use crate::id::Id;
use crate::repo::catalog::BlobLocation;
use crate::repo::{Repository, keys};

/// Blobs of one pack closer together than this are fetched in one ranged read.
const MERGE_GAP: u64 = 256 * 1024;
/// No single ranged read is longer than this.
const MAX_READ: u64 = 32 * 1024 * 1024;

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore only paths matching one of these (or below a match); all when empty.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Re-read every restored file and check it against the snapshot.
    pub verify: bool,
    pub progress: Option<Arc<Progress>>,
}

#[derive(Debug, Default)]
pub struct RestoreOutcome {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    pub bytes: u64,
    pub verified_files: u64,
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
pub async fn restore(
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

    // 1. Plan: select the entries to restore.
    let mut items: Vec<Item> = Vec::new();
    let mut stack: Vec<(Id, PathBuf, String, usize)> = Vec::new();
    match &start {
        Resolved::Root(t) => stack.push((*t, target.to_path_buf(), base.clone(), 0)),
        Resolved::Node(n) if n.kind == NodeKind::Dir => {
            if let Some(t) = n.subtree {
                stack.push((t, target.to_path_buf(), base.clone(), 0));
            }
        }
        Resolved::Node(n) => {
            items.push(Item {
                dest: target.join(os(&n.name)),
                node: (**n).clone(),
                depth: 1,
            });
        }
    }
    while let Some((tid, dir, spath, depth)) = stack.pop() {
        let tree = repo.load_tree(&tid).await?;
        for n in tree.nodes {
            if !valid_name(&n.name) {
                return Err(Error::corrupt(format!("tree {tid}"), "invalid entry name"));
            }
            let sp = format!("{spath}/{}", n.name_lossy());
            if !exclude.empty && exclude.matches(&sp) {
                continue;
            }
            let selected = include.empty || include.matches(&sp);
            let dest = dir.join(os(&n.name));
            if n.kind == NodeKind::Dir {
                if let Some(sub) = n.subtree
                    && (selected || include.may_match_below())
                {
                    stack.push((sub, dest.clone(), sp.clone(), depth + 1));
                }
                items.push(Item {
                    dest,
                    node: n,
                    depth: depth + 1,
                });
            } else if selected {
                items.push(Item {
                    dest,
                    node: n,
                    depth: depth + 1,
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
    fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;

    // 2. Create the entries. Directories are writable by us until their metadata is set last.
    let mut files: Vec<usize> = Vec::new();
    let mut hardlinks: Vec<(usize, usize)> = Vec::new();
    let mut primary: HashMap<(u64, u64), usize> = HashMap::new();
    let mut created = vec![false; items.len()];
    for (i, it) in items.iter().enumerate() {
        let r = match it.node.kind {
            NodeKind::Dir => match fs::create_dir(&it.dest) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && it.dest.is_dir() => {
                    Ok(())
                }
                Err(e) => Err(e),
            }
            .map(|_| out.dirs += 1),
            NodeKind::File => {
                if it.node.links > 1 {
                    let key = (it.node.dev, it.node.inode);
                    if let Some(&p) = primary.get(&key) {
                        hardlinks.push((i, p));
                        continue;
                    }
                    primary.insert(key, i);
                }
                create_file(&it.dest, it.node.size).map(|_| {
                    files.push(i);
                    out.files += 1;
                })
            }
            NodeKind::Symlink => {
                let _ = fs::remove_file(&it.dest);
                std::os::unix::fs::symlink(os(&it.node.target), &it.dest).map(|_| out.others += 1)
            }
            NodeKind::Fifo | NodeKind::CharDev | NodeKind::BlockDev => {
                make_special(&it.dest, &it.node).map(|_| out.others += 1)
            }
            // A socket belongs to the process that made it; there is nothing to restore.
            NodeKind::Socket => continue,
        };
        match r {
            Ok(()) => created[i] = true,
            Err(e) => out.errors.push(format!("{}: {e}", it.dest.display())),
        }
    }

    // 3. Contents, pack by pack.
    let mut by_pack: HashMap<Id, HashMap<Id, PlannedBlob>> = HashMap::new();
    for &fi in &files {
        let node = &items[fi].node;
        let mut offset = 0u64;
        for e in &node.content {
            if let Extent::Data { id, len } = e {
                match repo.lookup_blob(id)? {
                    Some(loc) if loc.raw_len != *len => out.errors.push(format!(
                        "{}: the snapshot says blob {id} has {len} bytes, the index {}",
                        items[fi].dest.display(),
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
                            .push(FileTarget { file: fi, offset });
                    }
                    None => out.errors.push(format!(
                        "{}: blob {id} is missing from the index",
                        items[fi].dest.display()
                    )),
                }
            }
            offset += e.len();
        }
    }
    let items = Arc::new(items);
    let conns = repo.connections().max(2);
    let progress = opts.progress.clone();
    let mut results = futures::stream::iter(by_pack.into_iter().map(|(pack, blobs)| {
        let repo = repo.clone();
        let items = items.clone();
        let progress = progress.clone();
        async move {
            restore_pack(
                &repo,
                pack,
                blobs.into_values().collect(),
                &items,
                progress.as_deref(),
            )
            .await
        }
    }))
    .buffer_unordered(conns);
    while let Some(r) = results.next().await {
        match r {
            Ok((bytes, errs)) => {
                out.bytes += bytes;
                out.errors.extend(errs);
            }
            Err(e) => return Err(e),
        }
    }

    // 4. Verify, before metadata: the files are still ours to read (whatever their final mode),
    // and reading them now does not disturb the access times set below.
    if opts.verify {
        let keys = repo.keys().clone();
        let checked: Vec<std::result::Result<(), String>> = files
            .par_iter()
            .map(|&fi| verify_file(&keys, &items[fi].dest, &items[fi].node))
            .collect();
        for r in checked {
            match r {
                Ok(()) => out.verified_files += 1,
                Err(e) => out.errors.push(e),
            }
        }
    }

    // 5. Metadata: files and other leaves, hard links, then directories deepest first.
    let mut failures: Vec<String> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        if created[i] && it.node.kind != NodeKind::Dir {
            failures.extend(apply_metadata(&it.dest, &it.node));
        }
    }
    for (link, target_i) in hardlinks {
        let (l, t) = (&items[link], &items[target_i]);
        let _ = fs::remove_file(&l.dest);
        if let Err(e) = fs::hard_link(&t.dest, &l.dest) {
            failures.push(format!("{}: {e}", l.dest.display()));
        } else {
            out.files += 1;
        }
    }
    let mut dirs: Vec<usize> = (0..items.len())
        .filter(|&i| created[i] && items[i].node.kind == NodeKind::Dir)
        .collect();
    dirs.sort_by_key(|&i| std::cmp::Reverse(items[i].depth));
    for i in dirs {
        failures.extend(apply_metadata(&items[i].dest, &items[i].node));
    }
    out.errors.extend(failures);

    Ok(out)
}

fn create_file(path: &Path, size: u64) -> std::io::Result<()> {
    let _ = fs::remove_file(path);
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // Set the final length first: regions never written (holes) stay unallocated.
    f.set_len(size)
}

fn make_special(path: &Path, node: &Node) -> std::io::Result<()> {
    let _ = fs::remove_file(path);
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let kind = match node.kind {
        NodeKind::Fifo => libc::S_IFIFO,
        NodeKind::CharDev => libc::S_IFCHR,
        _ => libc::S_IFBLK,
    };
    // SAFETY: c is a valid NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), kind | 0o600, node.rdev as libc::dev_t) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Owner, mode, extended attributes and times. Returns what failed; an owner change that is not
/// permitted (not running as root) is skipped silently, as other tools do.
fn apply_metadata(path: &Path, node: &Node) -> Vec<String> {
    let mut errs = Vec::new();
    let c = match std::ffi::CString::new(path.as_os_str().as_bytes()) {
        Ok(c) => c,
        Err(e) => return vec![format!("{}: {e}", path.display())],
    };
    // SAFETY: c is a valid NUL-terminated path; lchown does not follow symlinks.
    let r = unsafe { libc::lchown(c.as_ptr(), node.uid, node.gid) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EPERM) {
            errs.push(format!("{}: chown: {e}", path.display()));
        }
    }
    for x in &node.xattrs {
        if let Err(e) = xattr::set(path, os(&x.name), &x.value) {
            // Attributes of privileged namespaces may not be settable here; user ones must be.
            if x.name.starts_with(b"user.") {
                errs.push(format!(
                    "{}: xattr {}: {e}",
                    path.display(),
                    String::from_utf8_lossy(&x.name)
                ));
            }
        }
    }
    if node.kind != NodeKind::Symlink {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(node.mode)) {
            errs.push(format!("{}: chmod: {e}", path.display()));
        }
    }
    let ft = |t: crate::format::Timestamp| filetime::FileTime::from_unix_time(t.secs, t.nanos);
    if let Err(e) = filetime::set_symlink_file_times(path, ft(node.atime), ft(node.mtime)) {
        errs.push(format!("{}: times: {e}", path.display()));
    }
    errs
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

async fn restore_pack(
    repo: &Arc<Repository>,
    pack: Id,
    blobs: Vec<PlannedBlob>,
    items: &Arc<Vec<Item>>,
    progress: Option<&Progress>,
) -> Result<(u64, Vec<String>)> {
    let key = keys::pack(&pack);
    let mut bytes = 0u64;
    let mut errors = Vec::new();
    for group in plan_reads(blobs) {
        let start = group[0].loc.offset as u64;
        let last = group.last().expect("non-empty group");
        let end = last.loc.offset as u64 + last.loc.length as u64;
        let data = match repo.backend().get_range(&key, start, end - start).await {
            Ok(d) => d,
            Err(e) => {
                for b in &group {
                    for t in &b.targets {
                        errors.push(format!(
                            "{}: pack {pack}: {e}",
                            items[t.file].dest.display()
                        ));
                    }
                }
                continue;
            }
        };
        let keys = repo.keys().clone();
        let items = items.clone();
        let (n, errs) = tokio::task::spawn_blocking(move || {
            let results: Vec<(u64, Vec<String>)> = group
                .par_iter()
                .map(|b| {
                    let off = (b.loc.offset as u64 - start) as usize;
                    let sealed = &data[off..off + b.loc.length as usize];
                    match open_blob(&keys, &b.id, sealed, b.loc.raw_len) {
                        Ok(plain) => {
                            let mut errs = Vec::new();
                            let mut n = 0;
                            for t in &b.targets {
                                let dest = &items[t.file].dest;
                                match OpenOptions::new()
                                    .write(true)
                                    .open(dest)
                                    .and_then(|f: File| f.write_all_at(&plain, t.offset))
                                {
                                    Ok(()) => n += plain.len() as u64,
                                    Err(e) => errs.push(format!("{}: {e}", dest.display())),
                                }
                            }
                            (n, errs)
                        }
                        Err(e) => (
                            0,
                            b.targets
                                .iter()
                                .map(|t| format!("{}: {e}", items[t.file].dest.display()))
                                .collect(),
                        ),
                    }
                })
                .collect();
            let n: u64 = results.iter().map(|r| r.0).sum();
            let errs: Vec<String> = results.into_iter().flat_map(|r| r.1).collect();
            (n, errs)
        })
        .await
        .map_err(|e| Error::Other(e.to_string()))?;
        if let Some(p) = progress {
            p.bytes.fetch_add(n, Ordering::Relaxed);
        }
        bytes += n;
        errors.extend(errs);
    }
    Ok((bytes, errors))
}

fn verify_file(
    keys: &crate::crypto::Keys,
    path: &Path,
    node: &Node,
) -> std::result::Result<(), String> {
    let f = File::open(path).map_err(|e| format!("verify {}: {e}", path.display()))?;
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
