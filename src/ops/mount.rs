//! `cairn mount`: the snapshots as a read-only FUSE file system (issue 16).
//!
//! ```text
//! snapshots/<time>/...     each snapshot's tree (time in UTC, `-1`, `-2`... when two are equal)
//! snapshots/latest         a symbolic link to the latest one
//! ids/<short id>/...       the same, by id (the first 8 hex digits, all 64 if they collide)
//! hosts/<host>/<time>/...  by host, with a `latest` link
//! tags/<tag>/<time>/...    by tag, with a `latest` link
//! ```
//! A database snapshot's tree holds its tables as `mysql/<db>/<table>.sql` files, so they
//! appear as such. Which snapshots are shown is fixed when the file system is mounted.
//!
//! Inodes are given out lazily, when the kernel first looks a name up or lists a directory;
//! listings are read through the repository's tree blob cache and a few recent trees are kept
//! decoded. A read maps its offset onto the file's extents (cumulative sizes, binary search)
//! and opens only the blobs it covers, through a bounded cache of opened blobs
//! ([`BlobLru`]), so a read at any offset never decodes the file from its start. A blob that
//! cannot be read or verified fails that read with EIO (and is logged); nothing else stops.
//!
//! The file system is driven by fuser's session thread, which calls into the async repository
//! through the caller's tokio runtime ([`tokio::runtime::Handle`]; no runtime of our own).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry,
    ReplyOpen, Request,
};
use libc::{EINVAL, EIO, EISDIR, ENOENT, ENOTDIR};

use crate::error::{Error, Result};
use crate::format::Timestamp;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Extent, Node, NodeKind, Tree};
use crate::id::Id;
use crate::repo::Repository;

/// The default bound of the cache of opened data blobs.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// How many decoded trees are kept in memory (beyond the repository's blob cache).
const TREES_KEPT: usize = 256;

/// How long the kernel may keep attributes and names: the file system never changes.
const TTL: Duration = Duration::from_secs(3600);

const ROOT_INO: u64 = fuser::FUSE_ROOT_ID;

/// What to show.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Only snapshots of this host.
    pub host: Option<String>,
    /// Only snapshots with every one of these tags.
    pub tags: Vec<String>,
    /// Bound of the cache of opened data blobs, in bytes.
    pub cache_bytes: u64,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            host: None,
            tags: Vec::new(),
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// A least-recently-used cache of opened blobs, bounded by their total size.
pub struct BlobLru {
    limit: u64,
    total: u64,
    tick: u64,
    entries: HashMap<Id, (Arc<Vec<u8>>, u64)>,
    by_use: BTreeMap<u64, Id>,
}

impl BlobLru {
    pub fn new(limit: u64) -> BlobLru {
        BlobLru {
            limit,
            total: 0,
            tick: 0,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    pub fn get(&mut self, id: &Id) -> Option<Arc<Vec<u8>>> {
        let (data, used) = self.entries.get_mut(id)?;
        self.by_use.remove(used);
        self.tick += 1;
        *used = self.tick;
        self.by_use.insert(self.tick, *id);
        Some(data.clone())
    }

    /// Keep `data` (a blob larger than the limit is not kept), evicting the least recently
    /// used entries to stay within the limit.
    pub fn put(&mut self, id: Id, data: Arc<Vec<u8>>) {
        let len = data.len() as u64;
        if len > self.limit || self.entries.contains_key(&id) {
            return;
        }
        while self.total + len > self.limit {
            let Some((_, victim)) = self.by_use.pop_first() else {
                break;
            };
            if let Some((d, _)) = self.entries.remove(&victim) {
                self.total -= d.len() as u64;
            }
        }
        self.tick += 1;
        self.total += len;
        self.entries.insert(id, (data, self.tick));
        self.by_use.insert(self.tick, id);
    }

    /// The cached bytes, and the number of entries.
    pub fn usage(&self) -> (u64, usize) {
        (self.total, self.entries.len())
    }
}

/// A directory's parent and its entries: inode, type, name.
type Listing = (u64, Vec<(u64, FileType, Vec<u8>)>);

/// One inode.
enum Inode {
    /// A directory of the file system's own (the root, `snapshots/`, `hosts/<host>/`, ...):
    /// its entries, fixed at mount time.
    Virtual {
        parent: u64,
        entries: Vec<(Vec<u8>, u64)>,
    },
    /// A symbolic link of the file system's own (`latest`).
    Link { target: Vec<u8> },
    /// The root directory of a snapshot.
    SnapRoot {
        parent: u64,
        tree: Id,
        time: Timestamp,
    },
    /// An entry of a snapshot's tree.
    Entry {
        parent: u64,
        node: Box<Node>,
        /// Where each extent starts, for a file (computed at the first read).
        starts: Option<Arc<Vec<u64>>>,
    },
}

/// The file system (see the module docs).
pub struct SnapshotFs {
    repo: Arc<Repository>,
    rt: tokio::runtime::Handle,
    /// Inode `n` is `inodes[n - 1]`.
    inodes: Vec<Inode>,
    /// The inodes given to the entries of snapshot directories: (parent, name) -> inode.
    children: HashMap<(u64, Vec<u8>), u64>,
    trees: HashMap<Id, (Arc<Tree>, u64)>,
    tree_tick: u64,
    blobs: BlobLru,
    /// Owner and time of the directories of the file system's own.
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
}

/// The snapshots' directory names: the time in UTC to the second, `-1`, `-2`... added to the
/// second and later of equal names (in the order given, oldest first).
pub fn snapshot_names(snaps: &[(Id, Snapshot)]) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    snaps
        .iter()
        .map(|(_, s)| {
            let base = time_name(s.time);
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                base
            } else {
                format!("{base}-{}", *n - 1)
            }
        })
        .collect()
}

fn time_name(t: Timestamp) -> String {
    match t.to_jiff() {
        Some(j) => j.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => format!("{}", t.secs),
    }
}

/// The `ids/` names: 8 hex digits, or the whole id where 8 digits are not unique.
fn id_names(snaps: &[(Id, Snapshot)]) -> Vec<String> {
    let mut count: HashMap<String, usize> = HashMap::new();
    for (id, _) in snaps {
        *count.entry(id.to_hex()[..8].to_string()).or_default() += 1;
    }
    snaps
        .iter()
        .map(|(id, _)| {
            let hex = id.to_hex();
            if count[&hex[..8]] == 1 {
                hex[..8].to_string()
            } else {
                hex
            }
        })
        .collect()
}

fn system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanos.min(999_999_999)));
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs()) + nanos
    }
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDev => FileType::CharDevice,
        NodeKind::BlockDev => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

impl SnapshotFs {
    /// The file system of `repo`'s snapshots that `opts` selects. Reads the snapshot list
    /// from the catalog (the caller has refreshed it, e.g. under a read lease).
    pub fn new(
        repo: Arc<Repository>,
        opts: &MountOptions,
        rt: tokio::runtime::Handle,
    ) -> Result<SnapshotFs> {
        let snaps: Vec<(Id, Snapshot)> = repo
            .snapshots()?
            .into_iter()
            .filter(|(_, s)| s.matches(opts.host.as_deref(), &opts.tags))
            .collect();
        let mut fs = SnapshotFs {
            repo,
            rt,
            inodes: Vec::new(),
            children: HashMap::new(),
            trees: HashMap::new(),
            tree_tick: 0,
            blobs: BlobLru::new(opts.cache_bytes),
            uid: uzers::get_current_uid(),
            gid: uzers::get_current_gid(),
            mounted_at: SystemTime::now(),
        };
        let root = fs.add_virtual(ROOT_INO);
        debug_assert_eq!(root, ROOT_INO);
        let names = snapshot_names(&snaps);
        let ids = id_names(&snaps);

        // snapshots/
        let snapshots_dir = fs.add_virtual(root);
        fs.link_into(root, "snapshots", snapshots_dir);
        fs.fill_by_time(snapshots_dir, &snaps, &names, |_| true);
        // ids/
        let ids_dir = fs.add_virtual(root);
        fs.link_into(root, "ids", ids_dir);
        for (i, (_, s)) in snaps.iter().enumerate() {
            let ino = fs.add(Inode::SnapRoot {
                parent: ids_dir,
                tree: s.tree,
                time: s.time,
            });
            fs.link_into(ids_dir, &ids[i], ino);
        }
        // hosts/<host>/
        let hosts_dir = fs.add_virtual(root);
        fs.link_into(root, "hosts", hosts_dir);
        let mut hosts: Vec<&str> = snaps.iter().map(|(_, s)| s.host.as_str()).collect();
        hosts.sort();
        hosts.dedup();
        for h in hosts.into_iter().filter(|h| usable_name(h)) {
            let d = fs.add_virtual(hosts_dir);
            fs.link_into(hosts_dir, h, d);
            fs.fill_by_time(d, &snaps, &names, |s| s.host == h);
        }
        // tags/<tag>/
        let tags_dir = fs.add_virtual(root);
        fs.link_into(root, "tags", tags_dir);
        let mut tags: Vec<&str> = snaps
            .iter()
            .flat_map(|(_, s)| s.tags.iter().map(String::as_str))
            .collect();
        tags.sort();
        tags.dedup();
        for t in tags.into_iter().filter(|t| usable_name(t)) {
            let d = fs.add_virtual(tags_dir);
            fs.link_into(tags_dir, t, d);
            fs.fill_by_time(d, &snaps, &names, |s| s.tags.iter().any(|x| x == t));
        }
        Ok(fs)
    }

    /// Snapshot directories named by time in `dir`, for the snapshots `pick` keeps, and a
    /// `latest` link to the last.
    fn fill_by_time(
        &mut self,
        dir: u64,
        snaps: &[(Id, Snapshot)],
        names: &[String],
        pick: impl Fn(&Snapshot) -> bool,
    ) {
        let mut last = None;
        for (i, (_, s)) in snaps.iter().enumerate().filter(|(_, (_, s))| pick(s)) {
            let ino = self.add(Inode::SnapRoot {
                parent: dir,
                tree: s.tree,
                time: s.time,
            });
            self.link_into(dir, &names[i], ino);
            last = Some(i);
        }
        if let Some(i) = last {
            let link = self.add(Inode::Link {
                target: names[i].clone().into_bytes(),
            });
            self.link_into(dir, "latest", link);
        }
    }

    fn add(&mut self, inode: Inode) -> u64 {
        self.inodes.push(inode);
        self.inodes.len() as u64
    }

    fn add_virtual(&mut self, parent: u64) -> u64 {
        self.add(Inode::Virtual {
            parent,
            entries: Vec::new(),
        })
    }

    fn link_into(&mut self, dir: u64, name: &str, ino: u64) {
        if let Some(Inode::Virtual { entries, .. }) = self.inode_mut(dir) {
            entries.push((name.as_bytes().to_vec(), ino));
        }
    }

    fn inode(&self, ino: u64) -> Option<&Inode> {
        self.inodes.get(usize::try_from(ino).ok()?.checked_sub(1)?)
    }

    fn inode_mut(&mut self, ino: u64) -> Option<&mut Inode> {
        self.inodes
            .get_mut(usize::try_from(ino).ok()?.checked_sub(1)?)
    }

    /// The tree listed by directory `ino`, if it is a snapshot directory.
    fn subtree_of(&self, ino: u64) -> Option<Id> {
        match self.inode(ino)? {
            Inode::SnapRoot { tree, .. } => Some(*tree),
            Inode::Entry { node, .. } => node.subtree,
            _ => None,
        }
    }

    /// A tree, from memory or through the repository.
    fn tree(&mut self, id: &Id) -> std::result::Result<Arc<Tree>, i32> {
        self.tree_tick += 1;
        if let Some((t, used)) = self.trees.get_mut(id) {
            *used = self.tree_tick;
            return Ok(t.clone());
        }
        let repo = self.repo.clone();
        let tree = match self.rt.block_on(repo.load_tree(id)) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                tracing::error!("mount: tree {id}: {e}");
                return Err(EIO);
            }
        };
        if self.trees.len() >= TREES_KEPT
            && let Some(oldest) = self.trees.iter().min_by_key(|(_, (_, u))| *u).map(|e| *e.0)
        {
            self.trees.remove(&oldest);
        }
        self.trees.insert(*id, (tree.clone(), self.tree_tick));
        Ok(tree)
    }

    /// The inode of entry `node` of directory `parent`, given out at the first call.
    fn child(&mut self, parent: u64, node: &Node) -> u64 {
        let key = (parent, node.name.clone());
        if let Some(ino) = self.children.get(&key) {
            return *ino;
        }
        let ino = self.add(Inode::Entry {
            parent,
            node: Box::new(node.clone()),
            starts: None,
        });
        self.children.insert(key, ino);
        ino
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let dir = |mtime: SystemTime, perm: u16, uid: u32, gid: u32| FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind: FileType::Directory,
            perm,
            nlink: 2,
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        Some(match self.inode(ino)? {
            Inode::Virtual { .. } => dir(self.mounted_at, 0o555, self.uid, self.gid),
            Inode::SnapRoot { time, .. } => dir(system_time(*time), 0o555, self.uid, self.gid),
            Inode::Link { target } => FileAttr {
                size: target.len() as u64,
                kind: FileType::Symlink,
                perm: 0o777,
                nlink: 1,
                ..dir(self.mounted_at, 0o777, self.uid, self.gid)
            },
            Inode::Entry { node, .. } => {
                let size = match node.kind {
                    NodeKind::File => node.size,
                    NodeKind::Symlink => node.target.len() as u64,
                    _ => 0,
                };
                FileAttr {
                    ino,
                    size,
                    blocks: size.div_ceil(512),
                    atime: system_time(node.atime),
                    mtime: system_time(node.mtime),
                    ctime: system_time(node.ctime),
                    crtime: system_time(node.mtime),
                    kind: file_type(node.kind),
                    perm: (node.mode & 0o7777) as u16,
                    nlink: if node.kind == NodeKind::Dir { 2 } else { 1 },
                    uid: node.uid,
                    gid: node.gid,
                    rdev: node.rdev as u32,
                    blksize: 1 << 20,
                    flags: 0,
                }
            }
        })
    }

    /// The entries of directory `ino` (without `.` and `..`), and its parent.
    fn list(&mut self, ino: u64) -> std::result::Result<Listing, i32> {
        match self.inode(ino) {
            None => return Err(ENOENT),
            Some(Inode::Virtual { parent, entries }) => {
                let parent = *parent;
                let entries = entries.clone();
                let out = entries
                    .into_iter()
                    .map(|(name, child)| {
                        let kind = match self.inode(child) {
                            Some(Inode::Link { .. }) => FileType::Symlink,
                            _ => FileType::Directory,
                        };
                        (child, kind, name)
                    })
                    .collect();
                return Ok((parent, out));
            }
            Some(Inode::Link { .. }) => return Err(ENOTDIR),
            Some(Inode::SnapRoot { .. } | Inode::Entry { .. }) => {}
        }
        let parent = match self.inode(ino) {
            Some(Inode::SnapRoot { parent, .. } | Inode::Entry { parent, .. }) => *parent,
            _ => ROOT_INO,
        };
        let Some(tree_id) = self.subtree_of(ino) else {
            return Err(ENOTDIR);
        };
        let tree = self.tree(&tree_id)?;
        let out = tree
            .nodes
            .iter()
            .map(|n| (self.child(ino, n), file_type(n.kind), n.name.clone()))
            .collect();
        Ok((parent, out))
    }

    fn lookup_name(&mut self, parent: u64, name: &[u8]) -> std::result::Result<u64, i32> {
        match self.inode(parent) {
            None => Err(ENOENT),
            Some(Inode::Virtual { entries, .. }) => entries
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, ino)| *ino)
                .ok_or(ENOENT),
            Some(Inode::Link { .. }) => Err(ENOTDIR),
            Some(_) => {
                if let Some(ino) = self.children.get(&(parent, name.to_vec())) {
                    return Ok(*ino);
                }
                let Some(tree_id) = self.subtree_of(parent) else {
                    return Err(ENOTDIR);
                };
                let tree = self.tree(&tree_id)?;
                let node = tree.find(name).ok_or(ENOENT)?;
                Ok(self.child(parent, node))
            }
        }
    }

    /// Where each extent of file `ino` starts.
    fn starts(&mut self, ino: u64) -> std::result::Result<(Arc<Vec<u64>>, u64), i32> {
        match self.inode_mut(ino) {
            Some(Inode::Entry { node, starts, .. }) if node.kind == NodeKind::File => {
                let s = starts.get_or_insert_with(|| {
                    let mut at = 0u64;
                    Arc::new(
                        node.content
                            .iter()
                            .map(|e| {
                                let s = at;
                                at += e.len();
                                s
                            })
                            .collect(),
                    )
                });
                Ok((s.clone(), node.size))
            }
            Some(Inode::Entry { .. } | Inode::Link { .. }) => Err(EINVAL),
            Some(_) => Err(EISDIR),
            None => Err(ENOENT),
        }
    }

    /// An opened data blob of `len` bytes, through the cache.
    fn blob(&mut self, id: &Id, len: u32) -> std::result::Result<Arc<Vec<u8>>, i32> {
        if let Some(b) = self.blobs.get(id) {
            return Ok(b);
        }
        let repo = self.repo.clone();
        let data = match self.rt.block_on(repo.read_blob(id)) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("mount: blob {id}: {e}");
                return Err(EIO);
            }
        };
        if data.len() != len as usize {
            tracing::error!(
                "mount: an extent of {len} bytes names blob {id} of {} bytes",
                data.len()
            );
            return Err(EIO);
        }
        let data = Arc::new(data);
        self.blobs.put(*id, data.clone());
        Ok(data)
    }

    /// Up to `size` bytes of file `ino` from `offset`.
    pub fn read_at(
        &mut self,
        ino: u64,
        offset: u64,
        size: u32,
    ) -> std::result::Result<Vec<u8>, i32> {
        let (starts, file_size) = self.starts(ino)?;
        let content = match self.inode(ino) {
            Some(Inode::Entry { node, .. }) => node.content.clone(),
            _ => return Err(ENOENT),
        };
        let end = file_size.min(offset.saturating_add(u64::from(size)));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        // The extent holding `pos`: the last that starts at or before it.
        let mut i = starts.partition_point(|&s| s <= pos).saturating_sub(1);
        while pos < end && i < content.len() {
            let ext = content[i];
            let within = pos - starts[i];
            let take = (ext.len() - within).min(end - pos);
            match ext {
                Extent::Data { id, len } => {
                    let data = self.blob(&id, len)?;
                    out.extend_from_slice(&data[within as usize..(within + take) as usize]);
                }
                Extent::Hole(_) => out.resize(out.len() + take as usize, 0),
            }
            pos += take;
            i += 1;
        }
        Ok(out)
    }

    /// The number of opened blobs cached and their bytes.
    pub fn cache_usage(&self) -> (u64, usize) {
        self.blobs.usage()
    }
}

/// A name usable as one path component of the file system.
fn usable_name(s: &str) -> bool {
    crate::format::tree::valid_name(s.as_bytes())
}

impl Filesystem for SnapshotFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_name(parent, name.as_bytes()) {
            Ok(ino) => match self.attr(ino) {
                Some(a) => reply.entry(&TTL, &a, 0),
                None => reply.error(ENOENT),
            },
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(ENOENT),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        match self.inode(ino) {
            Some(Inode::Link { target }) => reply.data(target),
            Some(Inode::Entry { node, .. }) if node.kind == NodeKind::Symlink => {
                reply.data(&node.target)
            }
            Some(_) => reply.error(EINVAL),
            None => reply.error(ENOENT),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(libc::EROFS);
        }
        match self.inode(ino) {
            Some(Inode::Entry { node, .. }) if node.kind == NodeKind::File => {
                // The contents never change: the kernel may keep its page cache.
                reply.opened(0, fuser::consts::FOPEN_KEEP_CACHE)
            }
            Some(Inode::Entry { .. }) => reply.opened(0, 0),
            Some(_) => reply.error(EISDIR),
            None => reply.error(ENOENT),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(EINVAL);
        };
        match self.read_at(ino, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let (parent, entries) = match self.list(ino) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        let all = [
            (ino, FileType::Directory, b".".to_vec()),
            (parent, FileType::Directory, b"..".to_vec()),
        ]
        .into_iter()
        .chain(entries);
        for (i, (child, kind, name)) in all.enumerate().skip(offset.max(0) as usize) {
            // The offset of an entry is that of the next one.
            if reply.add(child, (i + 1) as i64, kind, OsStr::from_bytes(&name)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: fuser::ReplyStatfs) {
        reply.statfs(0, 0, 0, self.inodes.len() as u64, 0, 4096, 255, 4096);
    }
}

/// A mounted file system; [`Mounted::unmount`] (or dropping it) unmounts it.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    dir: PathBuf,
}

/// Mount `fs` on directory `dir` (read-only). Fails with [`Error::InvalidInput`] if `dir` is
/// not an existing directory.
pub fn mount(fs: SnapshotFs, dir: &Path) -> Result<Mounted> {
    check_mount_point(dir)?;
    let options = [
        MountOption::RO,
        MountOption::FSName("cairn".into()),
        MountOption::Subtype("cairn".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
    ];
    let session = fuser::spawn_mount2(fs, dir, &options).map_err(|e| Error::io(dir, e))?;
    Ok(Mounted {
        session: Some(session),
        dir: dir.to_path_buf(),
    })
}

/// `dir` must be an existing directory.
pub fn check_mount_point(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::invalid(format!(
            "mount point {} is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::invalid(format!(
            "mount point {} does not exist (create the directory first)",
            dir.display()
        ))),
        Err(e) => Err(Error::io(dir, e)),
    }
}

impl Mounted {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unmount, lazily if the file system is busy (the kernel detaches it at once and lets
    /// open files finish), and wait up to `patience` for the session thread to end.
    pub fn unmount(mut self, patience: Duration) {
        self.unmount_now(patience);
    }

    fn unmount_now(&mut self, patience: Duration) {
        let Some(session) = self.session.take() else {
            return;
        };
        unmount_dir(&self.dir);
        // The session's own unmount finds the file system gone and does nothing.
        let guard = session.guard;
        let started = std::time::Instant::now();
        while !guard.is_finished() && started.elapsed() < patience {
            std::thread::sleep(Duration::from_millis(20));
        }
        if guard.is_finished() {
            match guard.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("mount: the session ended with {e}"),
                Err(_) => tracing::warn!("mount: the session thread panicked"),
            }
        } else {
            tracing::warn!("mount: the session did not end within {patience:?}; leaving it");
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount_now(Duration::from_secs(2));
    }
}

/// Unmount `dir`: with umount2(2) as root, else through `fusermount3 -u` (lazily if busy).
fn unmount_dir(dir: &Path) {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the calls.
    let r = unsafe { libc::umount2(c.as_ptr(), 0) };
    if r == 0 {
        return;
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EBUSY) => {
            tracing::warn!("mount: {} is busy; detaching it", dir.display());
            // SAFETY: as above.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
                return;
            }
            fusermount_unmount(dir, true);
        }
        Some(libc::EPERM) => fusermount_unmount(dir, false),
        _ => tracing::warn!("mount: unmounting {}: {err}", dir.display()),
    }
}

fn fusermount_unmount(dir: &Path, lazy: bool) {
    for bin in ["fusermount3", "fusermount"] {
        let mut c = std::process::Command::new(bin);
        c.arg("-u");
        if lazy {
            c.arg("-z");
        }
        match c.arg(dir).status() {
            Ok(s) if s.success() => return,
            Ok(s) if !lazy => {
                tracing::warn!("mount: {bin} -u {} failed ({s}); detaching", dir.display());
                return fusermount_unmount(dir, true);
            }
            Ok(s) => {
                tracing::warn!("mount: {bin} -u -z {} failed ({s})", dir.display());
                return;
            }
            Err(_) => continue,
        }
    }
    tracing::warn!("mount: no fusermount3 to unmount {}", dir.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    #[test]
    fn lru_keeps_recent_blobs_within_its_bound() {
        let mut c = BlobLru::new(3000);
        for n in 0..3 {
            c.put(id(n), Arc::new(vec![n; 1000]));
        }
        assert_eq!(c.usage(), (3000, 3));
        assert!(c.get(&id(0)).is_some());
        c.put(id(3), Arc::new(vec![3; 1000]));
        assert_eq!(c.usage(), (3000, 3));
        assert!(c.get(&id(1)).is_none(), "least recently used kept");
        assert!(c.get(&id(0)).is_some());
        assert!(c.get(&id(3)).is_some());
        // Larger than the bound: not kept, nothing evicted.
        c.put(id(4), Arc::new(vec![4; 3001]));
        assert!(c.get(&id(4)).is_none());
        assert_eq!(c.usage().1, 3);
        // Two entries make room for one large one.
        c.put(id(5), Arc::new(vec![5; 2000]));
        assert_eq!(c.usage(), (3000, 2));
        assert!(c.get(&id(5)).is_some());
    }

    fn snap(secs: i64) -> Snapshot {
        Snapshot {
            time: Timestamp::new(secs, 5),
            tree: Id::default(),
            paths: vec![],
            host: "h".into(),
            username: String::new(),
            uid: 0,
            gid: 0,
            tags: vec![],
            parent: None,
            source: "files".into(),
            program: String::new(),
            summary: Default::default(),
            meta: vec![],
        }
    }

    #[test]
    fn snapshot_names_are_times_made_unique() {
        let snaps = vec![
            (id(1), snap(1_796_589_459)),
            (id(2), snap(1_796_589_459)),
            (id(3), snap(1_796_589_460)),
            (id(4), snap(1_796_589_459)),
        ];
        assert_eq!(
            snapshot_names(&snaps),
            [
                "2026-12-06T20:37:39Z",
                "2026-12-06T20:37:39Z-1",
                "2026-12-06T20:37:40Z",
                "2026-12-06T20:37:39Z-2"
            ]
        );
        let mut ids = vec![(id(1), snap(0)), (id(2), snap(0))];
        assert_eq!(id_names(&ids), ["01010101", "02020202"]);
        let mut same = id(1);
        same.0[31] = 9;
        ids.push((same, snap(0)));
        assert_eq!(id_names(&ids)[1], "02020202");
        assert_eq!(id_names(&ids)[0].len(), 64);
    }

    #[test]
    fn times_before_1970_convert() {
        let t = system_time(Timestamp::new(-2, 500_000_000));
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::from_millis(1500)
        );
    }
}
