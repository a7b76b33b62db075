//! Capturing file metadata into tree nodes, and reading sparse files' data regions.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::RwLock;

use crate::format::Timestamp;
use crate::format::tree::{Node, NodeKind, Xattr};

/// uid/gid to name lookups, cached (they are slow and repeat constantly).
/// Read-mostly (a handful of owners, looked up for every entry by several threads): a reader-
/// writer lock keeps the lookups from contending.
#[derive(Default)]
pub struct NameCache {
    users: RwLock<HashMap<u32, String>>,
    groups: RwLock<HashMap<u32, String>>,
}

fn cached(map: &RwLock<HashMap<u32, String>>, id: u32, look: impl FnOnce() -> String) -> String {
    if let Some(v) = map.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return v.clone();
    }
    let v = look();
    map.write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, v.clone());
    v
}

impl NameCache {
    pub fn user(&self, uid: u32) -> String {
        cached(&self.users, uid, || {
            uzers::get_user_by_uid(uid)
                .map(|u| u.name().to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    }

    pub fn group(&self, gid: u32) -> String {
        cached(&self.groups, gid, || {
            uzers::get_group_by_gid(gid)
                .map(|g| g.name().to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    }
}

pub fn kind_of(meta: &Metadata) -> NodeKind {
    let ft = meta.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDev
    } else if ft.is_block_device() {
        NodeKind::BlockDev
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

/// A node describing `path` from its `lstat` metadata (contents and subtree left empty).
pub fn node_from_meta(
    path: &Path,
    name: Vec<u8>,
    meta: &Metadata,
    names: &NameCache,
) -> io::Result<Node> {
    node_from_meta_with(path, name, meta, names, None)
}

/// [`node_from_meta`], taking the link target and extended attributes from `previous` (the
/// same entry in an earlier snapshot) when its inode and change time are the same: both can
/// only change with the change time, and skipping the two system calls per entry matters when
/// an unchanged tree of a hundred thousand files is scanned.
pub fn node_from_meta_with(
    path: &Path,
    name: Vec<u8>,
    meta: &Metadata,
    names: &NameCache,
    previous: Option<&Node>,
) -> io::Result<Node> {
    let kind = kind_of(meta);
    let mut n = Node::new(name, kind);
    n.mode = meta.mode() & 0o7777;
    n.uid = meta.uid();
    n.gid = meta.gid();
    n.user = names.user(n.uid);
    n.group = names.group(n.gid);
    n.mtime = Timestamp::new(meta.mtime(), meta.mtime_nsec() as u32);
    n.atime = Timestamp::new(meta.atime(), meta.atime_nsec() as u32);
    n.ctime = Timestamp::new(meta.ctime(), meta.ctime_nsec() as u32);
    n.dev = meta.dev();
    n.inode = meta.ino();
    n.links = meta.nlink();
    let same = previous.filter(|p| {
        p.kind == kind
            && p.inode == n.inode
            && p.dev == n.dev
            && p.ctime == n.ctime
            && p.ctime.secs != 0
    });
    match kind {
        NodeKind::File => n.size = meta.len(),
        NodeKind::Symlink => {
            n.target = match same {
                Some(p) => p.target.clone(),
                None => std::fs::read_link(path)?.as_os_str().as_bytes().to_vec(),
            }
        }
        NodeKind::CharDev | NodeKind::BlockDev => n.rdev = meta.rdev(),
        _ => {}
    }
    n.xattrs = match same {
        Some(p) => p.xattrs.clone(),
        None => read_xattrs(path),
    };
    Ok(n)
}

/// Extended attributes of `path` (not following symlinks). Filesystems without xattr support
/// simply have none.
pub fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<Xattr> = names
        .filter_map(|name| {
            let value = xattr::get(path, &name).ok()??;
            Some(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Whether a regular file has fewer blocks allocated than its length implies.
pub fn looks_sparse(meta: &Metadata) -> bool {
    meta.len() > 0 && meta.blocks().saturating_mul(512) < meta.len()
}

/// The data regions `(offset, length)` of an open file of length `len`, found with
/// `SEEK_DATA`/`SEEK_HOLE`. Everything between them is a hole. Falls back to one region
/// covering the file where the filesystem does not support hole detection.
pub fn data_regions(file: &File, len: u64) -> Vec<(u64, u64)> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    let end = len as i64;
    while pos < end {
        // SAFETY: lseek on a valid fd has no memory-safety preconditions.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // no more data: the rest is a hole
            }
            return vec![(0, len)];
        }
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return vec![(0, len)];
        }
        let hole = hole.min(end);
        out.push((data as u64, (hole - data) as u64));
        pos = hole;
    }
    out
}

/// Ask the kernel to start reading `len` bytes of `file` from `offset` into the page cache now
/// (`POSIX_FADV_WILLNEED`), without waiting for them. Only a hint: errors are ignored.
pub fn advise_willneed(file: &File, offset: u64, len: u64) {
    if len == 0 {
        return;
    }
    // SAFETY: posix_fadvise only gives the kernel a hint about an fd we own.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        );
    }
}

/// The process's limits on open files (`RLIMIT_NOFILE`), if they can be read.
fn nofile_limits() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

/// The process's soft limit on open files (`RLIMIT_NOFILE`); `u64::MAX` if unlimited or unknown.
pub fn open_files_limit() -> u64 {
    nofile_limits().map_or(u64::MAX, |l| l.rlim_cur)
}

/// Raise the soft limit on open files to the hard limit, as Go programs such as restic do. A
/// backup keeps up to a few hundred files open at once (the walker opens each file before its
/// reader gets to it, so the kernel can start reading it), so a low default (often 1024) should
/// be no constraint. Best effort: failures are ignored.
pub fn raise_open_files_limit() {
    if let Some(mut lim) = nofile_limits()
        && lim.rlim_cur < lim.rlim_max
    {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the struct we pass.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

/// Open a file for reading without updating its access time where permitted.
pub fn open_noatime(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn finds_data_regions_of_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let mut f = File::create(&p).unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
        f.seek(SeekFrom::Start(10 << 20)).unwrap();
        f.write_all(&[2u8; 4096]).unwrap();
        f.set_len(20 << 20).unwrap();
        drop(f);
        let meta = std::fs::metadata(&p).unwrap();
        let f = File::open(&p).unwrap();
        let regions = data_regions(&f, meta.len());
        if looks_sparse(&meta) {
            assert_eq!(regions.first().unwrap().0, 0);
            assert!(regions.len() >= 2, "{regions:?}");
            let covered: u64 = regions.iter().map(|r| r.1).sum();
            assert!(covered < 1 << 20);
        } else {
            assert_eq!(regions, vec![(0, meta.len())]);
        }
    }
}
