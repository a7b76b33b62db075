//! A real S3 server for tests: s3s-fs (https://crates.io/crates/s3s-fs, 0.14.1, installed by
//! `.ci/install-s3s.sh`) on a free 127.0.0.1 port, storing into a temporary directory, with
//! fixed test credentials (it verifies request signatures). Killed when dropped.
//!
//! Used by the integration tests (`mod common`) and, through `#[path]`, by the library's unit
//! tests, so there is one copy. If `s3s-fs` is not installed, [`S3Server::start`] returns `None`
//! after printing a loud SKIPPED line, unless `CAIRN_REQUIRE_SERVERS=1`, when it panics: CI must
//! not pass by skipping.
//!
//! s3s-fs creates a missing bucket when an object is written to it (where S3 would fail), and
//! answers a GET in a missing bucket with NoSuchKey; its HEAD and LIST report NoSuchBucket.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "cairn-test-access-key";
pub const SECRET_KEY: &str = "cairn-test-secret-key-0123456789";
pub const REGION: &str = "us-east-1";
/// The bucket every server starts with.
pub const BUCKET: &str = "cairn-test";

pub struct S3Server {
    /// Holds the server's data directory (`<dir>/<bucket>/<key>`).
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

/// The s3s-fs program, if installed: `$S3S_FS`, `PATH`, or `~/.cargo/bin`.
pub fn s3s_fs_program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("S3S_FS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(h) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(h).join("bin"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
}

/// Tests that did not run against the server they are about, for the summary at exit.
static SKIPPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
static SUMMARY: std::sync::Once = std::sync::Once::new();

/// Say loudly that `test` did not run as meant (`why`), and once the test binary exits, how many
/// did not: a line after the harness's own summary, so a skipped suite is not mistaken for a
/// passing one. Straight to the process's stderr: the harness captures `eprintln!` of passing
/// tests.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: {test}: {why} (scripts/test installs the servers; \
         CAIRN_REQUIRE_SERVERS=1 makes this a failure) ***"
    );
    SKIPPED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{test} ({why})"));
    SUMMARY.call_once(|| {
        // SAFETY: registers a function without arguments that only writes to stderr.
        unsafe { libc::atexit(skip_summary) };
    });
}

extern "C" fn skip_summary() {
    use std::io::Write;
    let list = SKIPPED.lock().unwrap_or_else(|p| p.into_inner());
    let mut names: Vec<&str> = list.iter().map(|s| s.as_str()).collect();
    names.sort();
    names.dedup();
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED SUMMARY: {} tests of {} did not run against a real server: {} ***",
        names.len(),
        std::env::args().next().unwrap_or_default(),
        names.join(", ")
    );
}

/// Whether servers are required (CI): then a missing server is a failure, not a skip.
pub fn servers_required() -> bool {
    std::env::var("CAIRN_REQUIRE_SERVERS").as_deref() == Ok("1")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl S3Server {
    /// Start a server with the bucket [`BUCKET`], or `None` (after a SKIPPED line) when s3s-fs
    /// is not installed and servers are not required.
    pub fn start(test: &str) -> Option<S3Server> {
        let Some(_) = s3s_fs_program() else {
            if servers_required() {
                panic!(
                    "{test}: s3s-fs is not installed and CAIRN_REQUIRE_SERVERS=1 (run .ci/install-s3s.sh)"
                );
            }
            skipped(
                test,
                "s3s-fs not installed: ran on local disk instead of S3",
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("cairn-s3-")
            .tempdir()
            .expect("temporary directory");
        std::fs::create_dir(dir.path().join(BUCKET)).expect("bucket directory");
        let mut s = S3Server {
            dir,
            port: 0,
            child: None,
        };
        // Another process may take the port between our probe and the server's bind: try again.
        for _ in 0..5 {
            s.port = free_port();
            if s.spawn() {
                return Some(s);
            }
        }
        panic!("{test}: s3s-fs did not start");
    }

    /// Start s3s-fs on `self.port` over `self.dir`; true once it accepts connections.
    fn spawn(&mut self) -> bool {
        let prog = s3s_fs_program().expect("s3s-fs");
        let mut child = Command::new(prog)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.dir.path())
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn s3s-fs");
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where the server keeps `bucket`'s objects.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.dir.path().join(bucket)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kill the server (SIGKILL) and wait for it: requests fail from now on.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the server again on the same port and directory, after [`S3Server::kill`].
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "s3s-fs did not restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Environment variables that point an AWS client (cairn) at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
