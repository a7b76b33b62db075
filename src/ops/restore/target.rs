//! The restore target, handled without ever following a symlink inside it (issue 18).
//!
//! The target directory itself is opened once (following links: the user named it). Every
//! entry below it is then reached through a handle on its parent directory, opened relative to
//! the target with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` or, from a cached parent,
//! with `openat(O_NOFOLLOW | O_DIRECTORY)` one component at a time (also the fallback where
//! `openat2` is missing), and the entry is made and changed with the `*at` calls on that handle
//! and its name (`mkdirat`, `openat(O_CREAT | O_EXCL | O_NOFOLLOW)`, `symlinkat`, `mknodat`,
//! `linkat`, `unlinkat`, `fchownat`/`utimensat` with `AT_SYMLINK_NOFOLLOW`), or through a
//! handle on the entry itself (files and directories). Whatever is in the way of a new entry (a
//! symlink, a file, an empty directory) is removed itself, never what it points to; a non-empty
//! directory in the way is an error for that entry.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The longest path below the target (in bytes) an entry may have: what one system call takes
/// (`PATH_MAX` counts the terminating NUL).
pub const MAX_REL_PATH: usize = libc::PATH_MAX as usize - 1;

/// An open restore target and a bounded cache of handles on the directories below it.
pub struct TargetDir {
    root: Arc<OwnedFd>,
    /// Directory handles (`O_PATH`) by path relative to the target.
    dirs: RwLock<HashMap<PathBuf, Arc<OwnedFd>>>,
    max_cached: usize,
    /// Set once `openat2` turned out not to exist (Linux < 5.6).
    no_openat2: AtomicBool,
}

/// Where an entry goes: its parent's path relative to the target, and its name.
pub fn split<'a>(target: &Path, dest: &'a Path) -> Result<(&'a Path, &'a OsStr), String> {
    let rel = dest
        .strip_prefix(target)
        .map_err(|_| format!("{}: not below the target", dest.display()))?;
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!(
            "{}: not a plain path below the target",
            dest.display()
        ));
    }
    let len = rel.as_os_str().len();
    if len > MAX_REL_PATH {
        return Err(format!(
            "{}: {} ({len} bytes below the target; at most {MAX_REL_PATH})",
            dest.display(),
            io::Error::from_raw_os_error(libc::ENAMETOOLONG)
        ));
    }
    match (rel.parent(), rel.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(format!("{}: not below the target", dest.display())),
    }
}

impl TargetDir {
    /// Open the target directory (which must exist). `max_cached` bounds the directory handles
    /// kept open.
    pub fn open(path: &Path, max_cached: usize) -> io::Result<TargetDir> {
        let root = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(TargetDir {
            root: Arc::new(root),
            dirs: RwLock::new(HashMap::new()),
            max_cached: max_cached.max(1),
            no_openat2: AtomicBool::new(false),
        })
    }

    fn cached(&self, rel: &Path) -> Option<Arc<OwnedFd>> {
        if rel.as_os_str().is_empty() {
            return Some(self.root.clone());
        }
        let dirs = self.dirs.read().unwrap_or_else(|e| e.into_inner());
        dirs.get(rel).cloned()
    }

    /// A handle on the directory `rel` below the target (`""` is the target), reached without
    /// following any symlink.
    pub fn dir(&self, rel: &Path) -> io::Result<Arc<OwnedFd>> {
        if let Some(d) = self.cached(rel) {
            return Ok(d);
        }
        let fd = match (rel.parent(), rel.file_name()) {
            (Some(parent), Some(name)) => match self.cached(parent) {
                Some(p) => open_subdir(p.as_fd(), name)?,
                None => self.resolve(rel)?,
            },
            _ => self.resolve(rel)?,
        };
        let fd = Arc::new(fd);
        let mut dirs = self.dirs.write().unwrap_or_else(|e| e.into_inner());
        if dirs.len() >= self.max_cached
            && let Some(k) = dirs.keys().next().cloned()
        {
            dirs.remove(&k);
        }
        dirs.insert(rel.to_path_buf(), fd.clone());
        Ok(fd)
    }

    /// Open `rel` from the target in one call where the kernel has `openat2`, else one
    /// component at a time.
    fn resolve(&self, rel: &Path) -> io::Result<OwnedFd> {
        if !self.no_openat2.load(Ordering::Relaxed) {
            match rustix::fs::openat2(
                self.root.as_fd(),
                rel,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            ) {
                Ok(fd) => return Ok(fd),
                Err(Errno::NOSYS) => self.no_openat2.store(true, Ordering::Relaxed),
                // A rename or mount somewhere during the lookup: walk instead.
                Err(Errno::AGAIN) => {}
                Err(e) => return Err(not_followed(e)),
            }
        }
        let mut cur: Option<OwnedFd> = None;
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            };
            let next = open_subdir(cur.as_ref().map_or(self.root.as_fd(), |f| f.as_fd()), name)?;
            cur = Some(next);
        }
        cur.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }
}

/// A symlink met where a directory was expected is reported as such.
fn not_followed(e: Errno) -> io::Error {
    if e == Errno::LOOP {
        io::Error::other("a symbolic link is in the way (links in the target are never followed)")
    } else {
        e.into()
    }
}

fn open_subdir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        // O_PATH | O_NOFOLLOW | O_DIRECTORY on a symlink fails with ENOTDIR.
        Errno::NOTDIR | Errno::LOOP => not_followed(Errno::LOOP),
        e => e.into(),
    })
}

/// Remove whatever is at `name` in `dir`: a symlink itself, a file, a special file, an empty
/// directory. A non-empty directory is an error (trees are never deleted).
pub fn clear(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                "a non-empty directory is in the way (not removed)",
            )),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Run `make`; if something is already at `name`, remove it (see [`clear`]) and run it again.
/// With `clear_first`, what is there is removed beforehand (where something is likely to be:
/// one system call less than failing first).
fn replacing<T>(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    clear_first: bool,
    make: impl Fn() -> rustix::io::Result<T>,
) -> io::Result<T> {
    if clear_first {
        clear(dir, name)?;
    }
    match make() {
        Err(Errno::EXIST) => {
            clear(dir, name)?;
            Ok(make()?)
        }
        r => Ok(r?),
    }
}

/// What is at `name` in `dir` (a link itself, not what it points to); `None` if nothing.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The target of symlink `name` in `dir`.
pub fn read_link_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::ffi::OsString> {
    use std::os::unix::ffi::OsStringExt;
    Ok(std::ffi::OsString::from_vec(
        rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes(),
    ))
}

/// Open the regular file `name` in `dir` for reading, never through a link.
pub fn open_existing(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// The names in directory `name` of `dir` (without `.` and `..`), never through a link.
pub fn list_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<std::ffi::OsString>> {
    let fd = if name.is_empty() {
        rustix::fs::openat(
            dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?
    } else {
        open_dir(dir, name)?.into()
    };
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(&fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(n).to_os_string());
        }
    }
    Ok(names)
}

/// Remove `name` in `dir` and, if it is a directory, everything in it; links are removed
/// themselves, never followed. Returns the number of entries removed.
pub fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<u64> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(1),
        Err(Errno::NOENT) => return Ok(0),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = open_dir(dir, name)?;
    let mut n = 0;
    for child in list_dir(sub.as_fd(), OsStr::new(""))? {
        n += remove_tree(sub.as_fd(), &child)?;
    }
    drop(sub);
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) => Ok(n + 1),
        Err(Errno::NOENT) => Ok(n),
        Err(e) => Err(e.into()),
    }
}

/// Make directory `name` in `dir`, or keep the real directory already there (anything else is
/// replaced). Returns whether it was made now.
pub fn make_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    let mk = || rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o777));
    match mk() {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => {
            let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                return Ok(false);
            }
            clear(dir, name)?;
            mk()?;
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

fn file_flags(read: bool) -> OFlags {
    (if read { OFlags::RDWR } else { OFlags::WRONLY }) | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Create regular file `name` in `dir` (mode 0600), replacing what is there.
pub fn create_file(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    read: bool,
    clear_first: bool,
) -> io::Result<File> {
    let fd = replacing(dir, name, clear_first, || {
        rustix::fs::openat(
            dir,
            name,
            file_flags(read) | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(0o600),
        )
    })?;
    Ok(File::from(fd))
}

/// Open again a file made by [`create_file`], which must still be the same file (`id`: device
/// and inode).
pub fn reopen_file(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    read: bool,
    id: (u64, u64),
) -> io::Result<File> {
    let fd = rustix::fs::openat(dir, name, file_flags(read), Mode::empty())?;
    if file_id(fd.as_fd())? != id {
        return Err(io::Error::other(
            "replaced by another file during the restore",
        ));
    }
    Ok(File::from(fd))
}

/// Device and inode of an open file.
pub fn file_id(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// Open directory `name` in `dir` for reading (to apply its metadata), not following a link.
pub fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NOTDIR | Errno::LOOP => not_followed(Errno::LOOP),
        e => e.into(),
    })?;
    Ok(File::from(fd))
}

pub fn make_symlink(
    target: &OsStr,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    clear_first: bool,
) -> io::Result<()> {
    replacing(dir, name, clear_first, || {
        rustix::fs::symlinkat(target, dir, name)
    })
}

/// Make a FIFO or device node (mode 0600), replacing what is there.
pub fn make_node(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    kind: FileType,
    dev: u64,
    clear_first: bool,
) -> io::Result<()> {
    replacing(dir, name, clear_first, || {
        rustix::fs::mknodat(dir, name, kind, Mode::from_raw_mode(0o600), dev)
    })
}

/// Make `new_name` in `new_dir` another name of `old_name` in `old_dir` (which is not followed
/// if it is a link), replacing what is there.
pub fn hard_link(
    old_dir: BorrowedFd<'_>,
    old_name: &OsStr,
    new_dir: BorrowedFd<'_>,
    new_name: &OsStr,
) -> io::Result<()> {
    replacing(new_dir, new_name, false, || {
        rustix::fs::linkat(old_dir, old_name, new_dir, new_name, AtFlags::empty())
    })
}

/// Owner of `name` in `dir` (a link itself, not what it points to).
pub fn chown_at(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw_unchecked(uid)),
        Some(rustix::fs::Gid::from_raw_unchecked(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Access and modification times of `name` in `dir` (a link itself).
pub fn times_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    atime: (i64, u32),
    mtime: (i64, u32),
) -> io::Result<()> {
    let ts = |t: (i64, u32)| rustix::fs::Timespec {
        tv_sec: t.0,
        tv_nsec: t.1.into(),
    };
    let times = rustix::fs::Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    };
    rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// The path that names `fd` (and `name` in it, when given) through `/proc/self/fd`: the
/// kernel resolves it to exactly that open file, whatever has been renamed since.
fn proc_path(fd: BorrowedFd<'_>, name: Option<&OsStr>) -> PathBuf {
    let p = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    match name {
        Some(n) => p.join(n),
        None => p,
    }
}

/// Set an extended attribute of `name` in `dir` (a link itself): there is no `*at` call for
/// attributes before Linux 6.13, so through `/proc/self/fd/<dir>/<name>` with `lsetxattr`.
pub fn xattr_at(dir: BorrowedFd<'_>, name: &OsStr, key: &OsStr, value: &[u8]) -> io::Result<()> {
    rustix::fs::lsetxattr(
        proc_path(dir, Some(name)),
        key,
        value,
        rustix::fs::XattrFlags::empty(),
    )?;
    Ok(())
}

/// Mode of `name` in `dir`, which must be of type `kind` (never a link: Linux has no
/// `fchmodat(AT_SYMLINK_NOFOLLOW)` before 6.6). Through an `O_PATH` handle on the entry and
/// `/proc/self/fd` (as the C library does); where `/proc` is missing, by name after checking
/// the type.
pub fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, kind: FileType, mode: u32) -> io::Result<()> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != kind {
        return Err(io::Error::other(
            "replaced by another entry during the restore",
        ));
    }
    let mode = Mode::from_raw_mode(mode);
    match rustix::fs::chmodat(CWD, proc_path(fd.as_fd(), None), mode, AtFlags::empty()) {
        Err(Errno::NOENT) => {
            let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) != kind {
                return Err(io::Error::other(
                    "replaced by another entry during the restore",
                ));
            }
            Ok(rustix::fs::chmodat(dir, name, mode, AtFlags::empty())?)
        }
        r => Ok(r?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn target() -> (tempfile::TempDir, TargetDir) {
        let t = tempfile::tempdir().expect("tempdir");
        let d = TargetDir::open(t.path(), 4).expect("open target");
        (t, d)
    }

    #[test]
    fn split_checks_the_path() {
        let t = Path::new("/t");
        assert_eq!(
            split(t, Path::new("/t/a/b")).ok(),
            Some((Path::new("a"), OsStr::new("b")))
        );
        assert_eq!(
            split(t, Path::new("/t/b")).ok(),
            Some((Path::new(""), OsStr::new("b")))
        );
        assert!(split(t, Path::new("/etc/passwd")).is_err());
        assert!(split(t, Path::new("/t/a/../b")).is_err());
        assert!(split(t, Path::new("/t")).is_err());
        let long = Path::new("/t").join("x/".repeat(MAX_REL_PATH / 2 + 2));
        let e = split(t, &long).expect_err("too long");
        assert!(e.contains("File name too long"), "{e}");
        assert!(e.contains("/t/x/x/"), "{e}");
        let just = Path::new("/t").join("y".repeat(200) + &"/y".repeat((MAX_REL_PATH - 200) / 2));
        assert!(split(t, &just).is_ok());
    }

    #[test]
    fn dirs_are_reached_without_following_links() {
        let (t, d) = target();
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(t.path().join("a/b/c")).expect("mkdir");
        symlink(outside.path(), t.path().join("a/link")).expect("symlink");
        symlink(outside.path(), t.path().join("top")).expect("symlink");
        std::fs::create_dir(outside.path().join("c")).expect("mkdir");
        assert!(d.dir(Path::new("a/b/c")).is_ok());
        // Through openat2 (nothing cached), and from a cached parent.
        let d2 = TargetDir::open(t.path(), 4).expect("open");
        for d in [&d2, &d] {
            for p in ["top", "top/c", "a/link", "a/link/c"] {
                let e = d.dir(Path::new(p)).expect_err(p);
                assert!(e.to_string().contains("symbolic link"), "{p}: {e}");
            }
        }
        assert!(d.dir(Path::new("../")).is_err());
        // The cache stays bounded and keeps working after evictions.
        for p in ["a", "a/b", "a/b/c", "a", "a/b/c", "a/b"] {
            assert!(d.dir(Path::new(p)).is_ok(), "{p}");
        }
        assert!(d.dirs.read().map(|m| m.len()).unwrap_or(0) <= 4);
    }

    #[test]
    fn walk_fallback_refuses_links_too() {
        let (t, d) = target();
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(t.path().join("a/b")).expect("mkdir");
        symlink(outside.path(), t.path().join("a/l")).expect("symlink");
        d.no_openat2.store(true, Ordering::Relaxed);
        assert!(d.resolve(Path::new("a/b")).is_ok());
        assert!(d.resolve(Path::new("a/l")).is_err());
    }

    #[test]
    fn entries_replace_links_and_files_but_not_trees() {
        let (t, d) = target();
        let outside = tempfile::tempdir().expect("tempdir");
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"victim").expect("write");
        let root = d.dir(Path::new("")).expect("root");
        let root = root.as_fd();
        for name in ["f", "l", "n", "h", "dirlink"] {
            symlink(&victim, t.path().join(name)).expect("symlink");
        }
        std::fs::write(t.path().join("file"), b"x").expect("write");
        std::fs::create_dir(t.path().join("empty")).expect("mkdir");
        std::fs::create_dir(t.path().join("full")).expect("mkdir");
        std::fs::write(t.path().join("full/inner"), b"keep").expect("write");

        use std::io::Write;
        create_file(root, OsStr::new("f"), false, false)
            .and_then(|mut f| f.write_all(b"new"))
            .expect("file over a link");
        make_symlink(OsStr::new("target"), root, OsStr::new("l"), false).expect("link over a link");
        make_node(root, OsStr::new("n"), FileType::Fifo, 0, true).expect("fifo over a link");
        hard_link(root, OsStr::new("f"), root, OsStr::new("h")).expect("link over a link");
        assert!(make_dir(root, OsStr::new("dirlink")).expect("dir over a link"));
        assert!(make_dir(root, OsStr::new("file")).expect("dir over a file"));
        assert!(!make_dir(root, OsStr::new("full")).expect("existing dir kept"));
        create_file(root, OsStr::new("empty"), false, true).expect("file over an empty dir");
        for clear_first in [false, true] {
            let e = create_file(root, OsStr::new("full"), false, clear_first)
                .expect_err("tree in the way");
            assert!(e.to_string().contains("non-empty directory"), "{e}");
        }
        assert_eq!(
            std::fs::read(t.path().join("full/inner")).expect("read"),
            b"keep"
        );
        assert_eq!(std::fs::read(&victim).expect("read"), b"victim");
        assert_eq!(std::fs::read(t.path().join("h")).expect("read"), b"new");
        assert!(
            t.path()
                .join("dirlink")
                .symlink_metadata()
                .expect("lstat")
                .is_dir()
        );
    }
}
