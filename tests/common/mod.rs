//! Shared harness of the command-line integration tests: run the real `cairn` binary against a
//! temporary repository, build a tree holding every kind of entry and metadata cairn promises
//! to keep, and compare two trees for contents and metadata.
//!
//! Every test gets its own temporary directory (repository, cache, sources, restore targets),
//! so tests run in parallel. Every invocation gets a cheap KDF (`CAIRN_INSECURE_TEST_KDF=1`,
//! honoured by debug builds only), its own cache directory, a password from the environment and
//! no inherited `CAIRN_REPO`. Every invocation is also checked for a panic and bounded in time.
#![allow(dead_code)]

pub mod mysql;
pub mod s3server;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const PASSWORD: &str = "correct horse battery staple";
/// The unprivileged user that tests needing "cannot read" run cairn as, when they run as root.
pub const NOBODY: u32 = 65534;

/// Whether the tests run as root (they are meant to; a few adapt when not).
pub fn is_root() -> bool {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() == 0 }
}
/// No single command of the suite should take longer than this.
const TIMEOUT: Duration = Duration::from_secs(180);

/// A test's private world: a temporary directory with the repository and the cache in it.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// The repository's directory. On S3, where the server keeps the repository's objects
    /// (s3s-fs stores key `k` as the file `<bucket dir>/k`), so tests can look at them alike.
    pub repo: PathBuf,
    pub cache: PathBuf,
    /// Set when the repository is on a (private) S3 server: commands get `-r s3://...`.
    pub s3: Option<S3Repo>,
}

/// A repository on a test S3 server.
pub struct S3Repo {
    pub server: s3server::S3Server,
    /// `s3://bucket/prefix`
    pub url: String,
}

/// Whether this test binary runs its suite with the repository on S3: the binaries named
/// `s3_*` include another suite's file (`#[path]`) and so run the same tests on S3.
pub fn suite_on_s3() -> bool {
    env!("CARGO_CRATE_NAME").starts_with("s3_")
}

impl Env {
    /// A fresh environment; the repository does not exist yet. On S3 in `s3_*` test binaries
    /// (local disk, after a SKIPPED line, when s3s-fs is not installed).
    pub fn new() -> Env {
        if suite_on_s3()
            && let Some(env) = Env::new_s3()
        {
            return env;
        }
        Env::new_local()
    }

    /// A fresh environment with the repository on local disk.
    pub fn new_local() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("cairn-it-")
            .tempdir()
            .expect("temporary directory");
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        Env {
            dir,
            repo,
            cache,
            s3: None,
        }
    }

    /// A fresh environment with the repository (not created yet) on a private S3 server, or
    /// `None` if s3s-fs is not installed (see [`s3server::S3Server::start`]).
    pub fn new_s3() -> Option<Env> {
        let name = std::thread::current()
            .name()
            .unwrap_or("an S3 test")
            .to_string();
        let server = s3server::S3Server::start(&name)?;
        let prefix = "backups/repo";
        let mut env = Env::new_local();
        env.repo = server.bucket_dir(s3server::BUCKET).join(prefix);
        env.s3 = Some(S3Repo {
            url: format!("s3://{}/{prefix}", s3server::BUCKET),
            server,
        });
        Some(env)
    }

    /// What `-r` says: the S3 URL or the directory.
    pub fn repo_arg(&self) -> OsString {
        match &self.s3 {
            Some(s) => s.url.clone().into(),
            None => self.repo.clone().into_os_string(),
        }
    }

    /// A fresh environment with an initialised encrypted repository.
    pub fn with_repo() -> Env {
        let env = Env::new();
        env.run(["init"]).ok();
        env
    }

    /// A path inside the test's temporary directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A command against this environment's repository.
    pub fn cmd(&self) -> Cairn {
        Cairn::new(self)
    }

    /// Run cairn with `args` against the repository.
    pub fn run<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd().args(args).run()
    }

    /// `backup --json PATHS... EXTRA...`, asserting exit code 0; returns the JSON report.
    pub fn backup(&self, paths: &[&Path], extra: &[&str]) -> Value {
        let out = self
            .cmd()
            .arg("backup")
            .arg("--json")
            .args(paths)
            .args(extra)
            .run()
            .ok();
        let v = out.json();
        assert!(v["snapshot_id"].is_string(), "no snapshot id in {v}");
        v
    }

    /// `snapshots --json`.
    pub fn snapshots(&self) -> Vec<Value> {
        match self.run(["snapshots", "--json"]).ok().json() {
            Value::Array(a) => a,
            v => panic!("snapshots --json is not an array: {v}"),
        }
    }

    /// `restore SPEC --target TARGET EXTRA...`, asserting exit code 0; returns the JSON report.
    pub fn restore(&self, spec: &str, target: &Path, extra: &[&str]) -> Value {
        self.cmd()
            .args(["restore", "--json", spec, "--target"])
            .arg(target)
            .args(extra)
            .run()
            .ok()
            .json()
    }

    /// Total size of the files in the repository, as `du --apparent-size` counts it.
    pub fn repo_bytes(&self) -> u64 {
        dir_bytes(&self.repo)
    }

    /// Hand the repository and the cache (and the way to them) to another user, for tests
    /// that must run cairn without root's power to read anything.
    pub fn give_to(&self, uid: u32, gid: u32) {
        chmod(self.dir.path(), 0o755);
        for top in [&self.repo, &self.cache] {
            if !top.exists() {
                fs::create_dir_all(top).unwrap();
            }
            let mut stack = vec![top.to_path_buf()];
            while let Some(p) = stack.pop() {
                lchown(&p, uid, gid);
                if p.is_dir() {
                    stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                }
            }
        }
    }

    /// When running as root, hand the repository to `nobody` (see [`Cairn::unprivileged`]).
    pub fn give_to_unprivileged(&self) {
        if is_root() {
            self.give_to(NOBODY, NOBODY);
        }
    }

    /// Every file of the repository, relative path -> size.
    pub fn repo_listing(&self) -> BTreeMap<PathBuf, u64> {
        let mut out = BTreeMap::new();
        for p in files_below(&self.repo) {
            let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            out.insert(p.strip_prefix(&self.repo).unwrap().to_path_buf(), len);
        }
        out
    }
}

/// One invocation of the binary being put together.
pub struct Cairn {
    prefix: Vec<OsString>,
    args: Vec<OsString>,
    envs: Vec<(String, Option<OsString>)>,
    user: Option<(u32, u32)>,
    stdin: Option<Vec<u8>>,
    cwd: Option<PathBuf>,
}

impl Cairn {
    fn new(env: &Env) -> Cairn {
        Cairn::bare(env).arg("-r").arg(env.repo_arg())
    }

    /// A command with no repository argument (but the same clean environment).
    pub fn bare(env: &Env) -> Cairn {
        let mut c = Cairn {
            prefix: Vec::new(),
            args: Vec::new(),
            envs: Vec::new(),
            user: None,
            stdin: None,
            cwd: None,
        };
        c = c
            .env_remove("CAIRN_REPO")
            .env_remove("CAIRN_PASSWORD_FILE")
            .env_remove("CAIRN_LOG")
            // No configuration file of the machine's: a test that wants one says so.
            .env_remove("CAIRN_CONFIG")
            .env("XDG_CONFIG_HOME", env.dir.path().join("xdg-config"))
            .env("CAIRN_STATE_DIR", env.dir.path().join("state"))
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("CAIRN_INSECURE_TEST_KDF", "1")
            .env("CAIRN_CACHE_DIR", &env.cache);
        // Nothing of the caller's AWS setup; the test server's when the repository is on S3.
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
        ] {
            c = c.env_remove(k);
        }
        if let Some(s3) = &env.s3 {
            for (k, v) in s3.server.env() {
                c = c.env(k, v);
            }
            c = c.env("AWS_EC2_METADATA_DISABLED", "true");
        }
        c
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cairn {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cairn
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Cairn {
        self.envs.push((k.into(), Some(v.as_ref().to_os_string())));
        self
    }

    pub fn env_remove(mut self, k: &str) -> Cairn {
        self.envs.push((k.into(), None));
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Cairn {
        self.stdin = Some(data.into());
        self
    }

    /// Run as another user, without supplementary groups (std drops them when root sets a
    /// uid), and so without root's capabilities.
    pub fn run_as(mut self, uid: u32, gid: u32) -> Cairn {
        self.user = Some((uid, gid));
        self
    }

    /// Run in this working directory.
    pub fn current_dir(mut self, dir: &Path) -> Cairn {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Run without the power to read everything: as `nobody` when the tests run as root.
    pub fn unprivileged(self) -> Cairn {
        if is_root() {
            self.run_as(NOBODY, NOBODY)
        } else {
            self
        }
    }

    /// Run the binary through another program: `prefix... cairn args...`.
    pub fn wrapped<I, S>(mut self, prefix: I) -> Cairn
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.prefix = prefix
            .into_iter()
            .map(|s| s.as_ref().to_os_string())
            .collect();
        self
    }

    fn describe(&self) -> String {
        let mut s = String::from("cairn");
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// The command as it will run (stdin null unless data was given, output captured).
    pub fn command(&self) -> Command {
        let bin = OsStr::new(env!("CARGO_BIN_EXE_cairn"));
        let mut cmd = match self.prefix.split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(&self.args);
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        if let Some(d) = &self.cwd {
            cmd.current_dir(d);
        }
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        cmd
    }

    /// Run to completion (killed after a timeout), capturing everything. Fails the test if
    /// the binary panicked.
    pub fn run(mut self) -> Out {
        let what = self.describe();
        let mut cmd = self.command();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let writer = self.stdin.take().map(|data| {
            let mut w = child.stdin.take().expect("stdin pipe");
            std::thread::spawn(move || {
                let _ = w.write_all(&data);
            })
        });
        let mut so = child.stdout.take().expect("stdout pipe");
        let mut se = child.stderr.take().expect("stderr pipe");
        let t_out = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = so.read_to_end(&mut v);
            v
        });
        let t_err = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = se.read_to_end(&mut v);
            v
        });
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if started.elapsed() > TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        let stdout = t_out.join().expect("stdout reader");
        let stderr = String::from_utf8_lossy(&t_err.join().expect("stderr reader")).into_owned();
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        let out = Out {
            what,
            code,
            stdout,
            stderr,
        };
        assert!(
            code != 101 && !out.stderr.contains("panicked"),
            "{} panicked:\n{}",
            out.what,
            out.stderr
        );
        assert!(code < 128, "{} died of a signal: {out}", out.what);
        out
    }
}

/// What an invocation did.
pub struct Out {
    pub what: String,
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.code,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }
}

impl Out {
    /// Assert success.
    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "expected success: {self}");
        self
    }

    /// Assert a specific exit code.
    pub fn code(self, code: i32) -> Out {
        assert_eq!(self.code, code, "expected exit code {code}: {self}");
        self
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard output as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self}"))
    }

    /// Standard output as JSON lines.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {self}"))
            })
            .collect()
    }

    /// Assert that stderr mentions `needle` (case-insensitive).
    pub fn stderr_has(self, needle: &str) -> Out {
        assert!(
            self.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "expected {needle:?} in stderr: {self}"
        );
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Files

/// Deterministic incompressible bytes (xorshift64*), different for every seed.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A path from raw bytes (names need not be UTF-8).
pub fn bpath(base: &Path, name: &[u8]) -> PathBuf {
    base.join(OsStr::from_bytes(name))
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// Set atime and mtime (seconds, nanoseconds) without following a symlink.
pub fn set_times(path: &Path, atime: (i64, u32), mtime: (i64, u32)) {
    filetime::set_symlink_file_times(
        path,
        filetime::FileTime::from_unix_time(atime.0, atime.1),
        filetime::FileTime::from_unix_time(mtime.0, mtime.1),
    )
    .unwrap_or_else(|e| panic!("set times of {}: {e}", path.display()));
}

pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o640) },
        0,
        "mkfifo {}",
        path.display()
    );
}

/// Make a character device; false where that is not permitted.
pub fn mknod_char(path: &Path, major: u32, minor: u32) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let dev = libc::makedev(major, minor);
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o620, dev) == 0 }
}

/// Every regular file below `dir` (not following symlinks).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Sum of the lengths of the regular files below `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    files_below(dir)
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// The files below `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_below(dir)
        .into_iter()
        .filter(|p| {
            let data = fs::read(p).unwrap_or_default();
            memchr::memmem::find(&data, needle).is_some()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The rich tree

/// Names of interesting entries of the rich tree, relative to its root.
pub struct Rich {
    pub root: PathBuf,
    /// A regular file's distinctive content and its name (for plaintext checks).
    pub canary_content: &'static [u8],
    pub canary_name: &'static str,
    /// The length of the two identical large files.
    pub big_len: usize,
    /// Regular files in the tree, counting every hard link.
    pub files: u64,
    pub has_device: bool,
}

pub const SPARSE_LEN: u64 = 256 << 20;
pub const BIG_LEN: usize = 3 << 20;

/// Build, below `root` (created), a tree with every kind of entry and metadata cairn keeps:
/// unicode, non-UTF-8 and newline names; 40 nested directories; empty files and directories;
/// modes 0600/0755/0444 (and setuid, sticky, read-only directories); foreign owners; old,
/// pre-epoch and future times with nanoseconds; user xattrs; hard links; relative, absolute and
/// dangling symlinks; a FIFO; a character device (where permitted); a sparse file; a file that is
/// only a hole; and two identical large files. Times are set last, deepest first, so nothing
/// disturbs them afterwards.
pub fn build_rich_tree(root: &Path) -> Rich {
    fs::create_dir_all(root).unwrap();
    let canary_content: &'static [u8] = b"CANARY-CONTENT-b7e0c3f1-the-quick-brown-fox";
    let canary_name = "canary-name-5d2a94e8.txt";
    let f = |rel: &[u8], data: &[u8]| write(&bpath(root, rel), data);
    f(b"plain.txt", b"hello, world\n");
    f(canary_name.as_bytes(), &canary_content.repeat(50));
    f(
        "unicode/日本語-ñandú-Ελληνικά-🦀.txt".as_bytes(),
        "ünïcödé\n".as_bytes(),
    );
    f(b"latin1-\xe9t\xe9-\xff\xfe.bin", b"not utf-8 name\n");
    f(b"dir-\xc3\x28-bad/inner", b"inside a non-UTF-8 directory\n");
    f(b"new\nline", b"a newline in the name\n");
    f(
        b"-leading dash & spaces, 'quotes' \"*?[]\\",
        b"awkward characters\n",
    );
    f(b"empty", b"");
    fs::create_dir_all(root.join("emptydir")).unwrap();
    fs::create_dir_all(root.join("emptydir-0700")).unwrap();

    let mut deep = root.join("deep");
    for i in 1..=40 {
        deep.push(format!("d{i:02}"));
    }
    f(
        deep.strip_prefix(root)
            .unwrap()
            .join("leaf.txt")
            .as_os_str()
            .as_bytes(),
        b"forty levels down\n",
    );

    // Modes and owners.
    f(b"modes/p0600", b"0600\n");
    f(b"modes/p0755", b"#!/bin/sh\necho 0755\n");
    f(b"modes/p0444", b"0444\n");
    f(b"modes/p4755-setuid", b"setuid\n");
    f(b"modes/ro-dir/inside", b"in a 0555 directory\n");
    fs::create_dir_all(root.join("modes/sticky")).unwrap();
    f(b"owners/foreign", b"owned by 1234:5678\n");

    // Times.
    f(b"times/old-1975", b"old\n");
    f(b"times/pre-epoch", b"before 1970\n");
    f(b"times/future-2100", b"future\n");

    // Extended attributes.
    f(b"xattr/file", b"has xattrs\n");
    fs::create_dir_all(root.join("xattr/dir")).unwrap();

    // Hard links: a group of three across directories, and a pair.
    f(b"hardlinks/a", b"one inode, three names\n");
    fs::create_dir_all(root.join("hardlinks/sub")).unwrap();
    fs::hard_link(root.join("hardlinks/a"), root.join("hardlinks/b")).unwrap();
    fs::hard_link(root.join("hardlinks/a"), root.join("hardlinks/sub/c")).unwrap();
    f(b"hardlinks/pair-1", &random_bytes(7, 100_000));
    fs::hard_link(root.join("hardlinks/pair-1"), root.join("unicode/pair-2-ü")).unwrap();

    // Symlinks.
    let links = root.join("links");
    fs::create_dir_all(&links).unwrap();
    std::os::unix::fs::symlink("../plain.txt", links.join("relative")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", links.join("absolute")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", links.join("dangling")).unwrap();
    std::os::unix::fs::symlink("../unicode", links.join("to-dir")).unwrap();
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"\xff-target\nx"),
        links.join("odd-target"),
    )
    .unwrap();

    // Special files.
    mkfifo(&root.join("special-fifo"));
    let has_device = mknod_char(&root.join("special-null"), 1, 3);

    // Sparse: data at the start, in the middle and at the end; and a file that is all hole.
    {
        use std::os::unix::fs::FileExt;
        let s = File::create(root.join("sparse.img")).unwrap();
        s.set_len(SPARSE_LEN).unwrap();
        s.write_all_at(&random_bytes(11, 64 << 10), 0).unwrap();
        s.write_all_at(&random_bytes(12, 64 << 10), 100 << 20)
            .unwrap();
        s.write_all_at(&random_bytes(13, 4096), SPARSE_LEN - 4096)
            .unwrap();
        let h = File::create(root.join("all-hole.img")).unwrap();
        h.set_len(10 << 20).unwrap();
    }

    // Two identical large files.
    let big = random_bytes(42, BIG_LEN);
    f(b"big/one.bin", &big);
    f(b"big/copy/two.bin", &big);

    // Metadata last. xattrs (before times: setting them changes ctime only).
    xattr::set(root.join("xattr/file"), "user.comment", b"a comment").unwrap();
    xattr::set(
        root.join("xattr/file"),
        "user.binary",
        &[0u8, 1, 2, 0xff, b'\n'],
    )
    .unwrap();
    xattr::set(root.join("xattr/file"), "user.empty", b"").unwrap();
    xattr::set(root.join("xattr/dir"), "user.on-a-dir", b"dir value").unwrap();
    xattr::set(
        root.join("hardlinks/a"),
        "user.linked",
        b"shared by three names",
    )
    .unwrap();

    if is_root() {
        lchown(&root.join("owners/foreign"), 1234, 5678);
        lchown(&root.join("links/dangling"), 4321, 8765);
        lchown(&root.join("special-fifo"), 1000, 1000);
        lchown(&root.join("emptydir-0700"), 2000, 3000);
    }

    chmod(&root.join("modes/p0600"), 0o600);
    chmod(&root.join("modes/p0755"), 0o755);
    chmod(&root.join("modes/p0444"), 0o444);
    chmod(&root.join("modes/p4755-setuid"), 0o4755);
    chmod(&root.join("modes/sticky"), 0o1777);
    chmod(&root.join("emptydir-0700"), 0o700);
    chmod(&root.join("xattr/file"), 0o640);

    // Every entry gets distinct atime and mtime with nanoseconds; a few get special ones.
    type Times = ((i64, u32), (i64, u32));
    let special: BTreeMap<&[u8], Times> = [
        (
            &b"times/old-1975"[..],
            ((170_000_000, 5), (157_766_400, 123_456_789)),
        ),
        (
            &b"times/pre-epoch"[..],
            ((-1_000_000_000, 999_999_999), (-1_234_567_890, 987_654_321)),
        ),
        (
            &b"times/future-2100"[..],
            ((4_102_444_800, 1), (4_133_980_799, 999_999_999)),
        ),
    ]
    .into_iter()
    .collect();
    let mut all = Vec::new();
    collect_paths(root, &mut all);
    // Deepest first, so setting a directory's times comes after everything inside it.
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes();
        let (a, m) = special.get(rel).copied().unwrap_or_else(|| {
            let i = i as i64;
            (
                (900_000_000 + i * 3_600, (i as u32 * 7_919) % 1_000_000_000),
                (
                    1_500_000_000 + i * 86_400,
                    (i as u32 * 104_729 + 1) % 1_000_000_000,
                ),
            )
        });
        set_times(p, a, m);
    }
    // The read-only directory last of all (its times stay: chmod changes ctime only).
    chmod(&root.join("modes/ro-dir"), 0o555);
    let files = all
        .iter()
        .filter(|p| fs::symlink_metadata(p).unwrap().is_file())
        .count() as u64;
    Rich {
        root: root.to_path_buf(),
        canary_content,
        canary_name,
        big_len: BIG_LEN,
        files,
        has_device,
    }
}

fn collect_paths(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            collect_paths(&p, out);
        }
        out.push(p);
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing trees

/// One entry's metadata, as `lstat`, `readlink` and `listxattr` give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub mtime: (i64, i64),
    pub atime: (i64, i64),
    pub ino: u64,
    pub nlink: u64,
    pub rdev: u64,
    pub target: Option<Vec<u8>>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn kind_of(m: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "chardev"
    } else if t.is_block_device() {
        "blockdev"
    } else if t.is_socket() {
        "socket"
    } else {
        "file"
    }
}

pub fn meta_of(p: &Path) -> Meta {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let kind = kind_of(&m);
    let target = (kind == "symlink").then(|| fs::read_link(p).unwrap().into_os_string().into_vec());
    let mut xattrs = BTreeMap::new();
    if kind != "symlink" {
        for name in xattr::list(p).unwrap() {
            if name.as_bytes().starts_with(b"user.") {
                let v = xattr::get(p, &name).unwrap().unwrap_or_default();
                xattrs.insert(name.as_bytes().to_vec(), v);
            }
        }
    }
    Meta {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: m.len(),
        blocks: m.blocks(),
        mtime: (m.mtime(), m.mtime_nsec()),
        atime: (m.atime(), m.atime_nsec()),
        ino: m.ino(),
        nlink: m.nlink(),
        rdev: m.rdev(),
        target,
        xattrs,
    }
}

/// The metadata of every entry below a root, keyed by the relative path's bytes (the root
/// itself under the empty key), captured with `lstat` before anything is read, so reading does
/// not disturb the access times recorded.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub root: PathBuf,
    pub entries: BTreeMap<Vec<u8>, Meta>,
}

impl Manifest {
    pub fn capture(root: &Path) -> Manifest {
        let mut entries = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(p) = stack.pop() {
            // lstat before listing: listing a directory (or reading a link) may update its
            // access time (relatime), which is then put back, so that capturing the manifest
            // does not change what a backup taken afterwards records.
            let m = meta_of(&p);
            if m.kind == "dir" {
                let mut names: Vec<OsString> = fs::read_dir(&p)
                    .unwrap_or_else(|e| panic!("list {}: {e}", p.display()))
                    .map(|e| e.unwrap().file_name())
                    .collect();
                names.sort();
                stack.extend(names.iter().map(|n| p.join(n)));
            }
            if m.kind == "dir" || m.kind == "symlink" {
                set_times(
                    &p,
                    (m.atime.0, m.atime.1 as u32),
                    (m.mtime.0, m.mtime.1 as u32),
                );
            }
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            entries.insert(rel, m);
        }
        Manifest {
            root: root.to_path_buf(),
            entries,
        }
    }

    pub fn get(&self, rel: &str) -> &Meta {
        self.entries
            .get(rel.as_bytes())
            .unwrap_or_else(|| panic!("{rel} not in the manifest of {}", self.root.display()))
    }

    pub fn paths(&self) -> BTreeSet<String> {
        self.entries
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }
}

/// What a restored entry's access time must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Atime {
    /// The source's (backed up with `--with-atime`).
    Same,
    /// The source's mtime: cairn records no access times by default, and restores the mtime.
    Mtime,
    /// Anything.
    Ignore,
}

/// How strictly to compare.
#[derive(Debug, Clone, Copy)]
pub struct Compare {
    /// Compare the roots' own metadata too.
    pub root_meta: bool,
    /// Access times (of everything but the root; symlinks' are whatever the restore made).
    pub atime: Atime,
    /// Compare owners (not when restoring as a user who cannot give files away).
    pub owner: bool,
}

impl Default for Compare {
    fn default() -> Self {
        Compare {
            root_meta: false,
            atime: Atime::Mtime,
            owner: true,
        }
    }
}

fn show(rel: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(rel))
}

/// Assert that the tree at `restored` is identical to the source tree captured in `src`, in
/// contents and metadata: the same entries, each of the same type, mode, owner, times (ns),
/// size, symlink target, user xattrs and device number; hard links grouped the same way (the
/// same sets of names share an inode); sparse files no more allocated than the source (holes
/// restored as holes); regular files with the same bytes.
pub fn assert_same_tree(src: &Manifest, restored: &Path, how: Compare) {
    let dst = Manifest::capture(restored);
    let mut problems: Vec<String> = Vec::new();
    let src_keys: BTreeSet<&Vec<u8>> = src.entries.keys().collect();
    let dst_keys: BTreeSet<&Vec<u8>> = dst.entries.keys().collect();
    for k in src_keys.difference(&dst_keys) {
        problems.push(format!("{} missing from the restored tree", show(k)));
    }
    for k in dst_keys.difference(&src_keys) {
        problems.push(format!("{} restored but not in the source", show(k)));
    }
    for (k, a) in &src.entries {
        let Some(b) = dst.entries.get(k) else {
            continue;
        };
        if k.is_empty() && !how.root_meta {
            continue;
        }
        let name = show(k);
        let mut diff = |what: &str, x: String, y: String| {
            if x != y {
                problems.push(format!("{name}: {what}: source {x}, restored {y}"));
            }
        };
        diff("type", a.kind.into(), b.kind.into());
        if a.kind != b.kind {
            continue;
        }
        if a.kind != "symlink" {
            diff("mode", format!("{:o}", a.mode), format!("{:o}", b.mode));
        }
        if how.owner {
            diff("uid", a.uid.to_string(), b.uid.to_string());
            diff("gid", a.gid.to_string(), b.gid.to_string());
        }
        diff("mtime", format!("{:?}", a.mtime), format!("{:?}", b.mtime));
        match how.atime {
            _ if k.is_empty() => {}
            Atime::Same => diff("atime", format!("{:?}", a.atime), format!("{:?}", b.atime)),
            Atime::Mtime => diff("atime", format!("{:?}", a.mtime), format!("{:?}", b.atime)),
            Atime::Ignore => {}
        }
        diff(
            "xattrs",
            format!("{:?}", a.xattrs),
            format!("{:?}", b.xattrs),
        );
        match a.kind {
            "file" => {
                diff("size", a.size.to_string(), b.size.to_string());
                diff("links", a.nlink.to_string(), b.nlink.to_string());
                // A sparse source must come back sparse: no more blocks than the source (plus
                // a little slack for the filesystem's allocation granularity).
                if a.blocks * 512 < a.size && b.blocks > a.blocks + 64 {
                    problems.push(format!(
                        "{name}: holes not restored as holes: {} blocks allocated, source {}",
                        b.blocks, a.blocks
                    ));
                }
            }
            "symlink" => diff(
                "target",
                format!("{:?}", a.target),
                format!("{:?}", b.target),
            ),
            "chardev" | "blockdev" => diff("rdev", a.rdev.to_string(), b.rdev.to_string()),
            _ => {}
        }
    }
    // Hard links: the same groups of names share an inode.
    let groups = |m: &Manifest| -> BTreeSet<Vec<Vec<u8>>> {
        let mut by_ino: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
        for (k, e) in &m.entries {
            if e.kind == "file" {
                by_ino.entry(e.ino).or_default().push(k.clone());
            }
        }
        by_ino.into_values().filter(|g| g.len() > 1).collect()
    };
    let (ga, gb) = (groups(src), groups(&dst));
    if ga != gb {
        problems.push(format!(
            "hard link groups differ: source {:?}, restored {:?}",
            ga.iter()
                .map(|g| g.iter().map(|n| show(n)).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            gb.iter()
                .map(|g| g.iter().map(|n| show(n)).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        ));
    }
    // Contents, after every lstat.
    for (k, a) in &src.entries {
        if a.kind != "file" || !dst.entries.contains_key(k) {
            continue;
        }
        let pa = src.root.join(OsStr::from_bytes(k));
        let pb = dst.root.join(OsStr::from_bytes(k));
        if let Some(off) = first_difference(&pa, &pb) {
            problems.push(format!("{}: contents differ at byte {off}", show(k)));
        }
    }
    assert!(
        problems.is_empty(),
        "restored tree {} differs from {}:\n  {}",
        restored.display(),
        src.root.display(),
        problems.join("\n  ")
    );
}

/// The offset of the first differing byte of two files, or `None` if they are equal.
/// Both are opened without updating their access times.
pub fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    let mut fa = open_noatime(a);
    let mut fb = open_noatime(b);
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if ba[..na.min(nb)] != bb[..na.min(nb)] {
            let i = ba.iter().zip(bb.iter()).position(|(x, y)| x != y).unwrap();
            return Some(off + i as u64);
        }
        if na != nb {
            return Some(off + na.min(nb) as u64);
        }
        if na == 0 {
            return None;
        }
        off += na as u64;
    }
}

/// Open for reading without touching the access time (as the owner or root).
pub fn open_noatime(p: &Path) -> File {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(p)
        .or_else(|_| File::open(p))
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    n
}

/// The packs of a local repository, largest first.
pub fn packs(env: &Env) -> Vec<PathBuf> {
    let mut p = files_below(&env.repo.join("data"));
    p.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    assert!(!p.is_empty(), "no packs");
    p
}

/// Invert `n` bytes of a file at offset `at`.
pub fn flip_bytes(path: &Path, at: u64, n: usize) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut buf = vec![0u8; n];
    f.read_exact_at(&mut buf, at).unwrap();
    for b in &mut buf {
        *b ^= 0x5a;
    }
    f.write_all_at(&buf, at).unwrap();
}

/// A port on 127.0.0.1 that nothing listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The program `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `promtool check metrics` on `text` must pass; without promtool the check is skipped (a failure
/// under CAIRN_REQUIRE_SERVERS=1).
pub fn promtool_check(text: &str) {
    let Some(promtool) = which("promtool") else {
        if std::env::var_os("CAIRN_REQUIRE_SERVERS").is_some() {
            panic!("promtool is not installed and CAIRN_REQUIRE_SERVERS=1");
        }
        eprintln!("SKIPPED (part): promtool not installed; the format is not checked");
        return;
    };
    let mut c = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The samples of a Prometheus text file: `name{labels}` to value.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}
