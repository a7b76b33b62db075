//! A private MariaDB server for the tests: `mariadb-install-db` into a temporary data directory,
//! `mariadbd` on a socket in it (no networking, no systemd, running as root), one per test
//! binary, shared by its tests (each test makes its own databases).
//!
//! If the server binaries are missing, [`server`] prints a loud `SKIPPED` line and returns
//! `None`, so `cargo test` works on a machine without MariaDB; with `CAIRN_REQUIRE_SERVERS=1`
//! (as `.ci/run` sets) a missing server fails the test instead.
//!
//! The server outlives no test run: a watchdog shell, its parent, stops it (and removes the
//! data directory) once the test process is gone, since a static is never dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct Server {
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The shell that runs the server and stops it when this process is gone.
    _watchdog: std::process::Child,
}

static SERVER: OnceLock<Option<Server>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The shared server, started on first use; `None` (after a loud message) when MariaDB is not
/// installed and servers are not required.
pub fn server() -> Option<&'static Server> {
    let server = SERVER
        .get_or_init(|| {
            let bins = (
                find("mariadbd"),
                find("mariadb-install-db"),
                find("mariadb"),
                find("mariadb-dump"),
            );
            let (Some(mariadbd), Some(install), Some(_), Some(_)) = bins else {
                if std::env::var("CAIRN_REQUIRE_SERVERS").as_deref() == Ok("1") {
                    panic!(
                        "CAIRN_REQUIRE_SERVERS=1 but MariaDB (mariadbd, mariadb-install-db, \
                         mariadb, mariadb-dump) is not installed: run .ci/install-mariadb.sh"
                    );
                }
                return None;
            };
            Some(Server::start(&mariadbd, &install))
        })
        .as_ref();
    if server.is_none() {
        let test = std::thread::current()
            .name()
            .unwrap_or("a MySQL test")
            .to_string();
        super::s3server::skipped(&test, "MariaDB not installed: did not run");
    }
    server
}

/// `server()`, or return from the test (it printed why).
#[macro_export]
macro_rules! mysql_server_or_skip {
    () => {
        match common::mysql::server() {
            Some(s) => s,
            None => return,
        }
    };
}

impl Server {
    fn start(mariadbd: &Path, install: &Path) -> Server {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("cairn-mariadb-")
            .tempdir()
            .expect("temporary directory")
            .keep();
        let data = dir.join("data");
        let socket = dir.join("mysqld.sock");
        let out = Command::new(install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("running mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let args = [
            "--no-defaults".to_string(),
            format!("--datadir={}", data.display()),
            format!("--socket={}", socket.display()),
            format!("--pid-file={}", dir.join("mysqld.pid").display()),
            format!("--log-error={}", dir.join("error.log").display()),
            format!("--log-bin={}", dir.join("binlog").display()),
            "--server-id=1".into(),
            "--skip-networking".into(),
            "--user=root".into(),
            "--skip-name-resolve".into(),
            "--innodb-buffer-pool-size=256M".into(),
            "--innodb-flush-log-at-trx-commit=0".into(),
            "--innodb-doublewrite=0".into(),
            "--sync-binlog=0".into(),
            "--max-allowed-packet=64M".into(),
        ];
        let quoted: Vec<String> = std::iter::once(mariadbd.display().to_string())
            .chain(args)
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        // The watchdog: the server's parent; it stops the server and removes the directory
        // when this test process has exited.
        let script = format!(
            "{} & srv=$!\n\
             while kill -0 {pid} 2>/dev/null && kill -0 $srv 2>/dev/null; do sleep 0.2; done\n\
             kill $srv 2>/dev/null; wait $srv; rm -rf '{dir}'",
            quoted.join(" "),
            pid = std::process::id(),
            dir = dir.display()
        );
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mariadbd");
        let server = Server {
            dir: dir.clone(),
            socket,
            _watchdog: watchdog,
        };
        while started.elapsed() < Duration::from_secs(60) {
            if server.try_sql(None, "SELECT 1").is_ok() {
                eprintln!(
                    "mariadb test server ready on {} after {:?}",
                    server.socket.display(),
                    started.elapsed()
                );
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        panic!("mariadbd did not become ready within 60 s:\n{log}");
    }

    /// The client with this server's connection options.
    pub fn client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .arg("--user=root")
            .arg("--default-character-set=utf8mb4")
            .env_remove("MYSQL_PWD");
        c
    }

    /// Run SQL as `user`@`localhost` with its password (given to the client through
    /// `MYSQL_PWD` in its environment, never its arguments); the batch output, or the
    /// client's error.
    pub fn sql_as(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--user={user}"))
            .args(["--batch", "--skip-column-names", "-e", sql])
            .env("MYSQL_PWD", password)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Run SQL (in database `db` if given); the batch output, or the client's error.
    pub fn try_sql(&self, db: Option<&str>, sql: &str) -> Result<String, String> {
        let mut c = self.client();
        c.args(["--batch", "--skip-column-names"]);
        if let Some(db) = db {
            c.arg(format!("--database={db}"));
        }
        let out = c
            .arg("-e")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Run SQL, panicking on failure.
    pub fn sql(&self, db: Option<&str>, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"))
    }

    /// A new, empty database with a unique name starting with `prefix`.
    pub fn database(&self, prefix: &str) -> String {
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        self.sql(
            None,
            &format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"),
        );
        name
    }

    /// `CHECKSUM TABLE db.table` (None for a missing table).
    pub fn checksum(&self, db: &str, table: &str) -> Option<String> {
        let out = self.sql(
            None,
            &format!(
                "CHECKSUM TABLE `{}`.`{}`",
                db.replace('`', "``"),
                table.replace('`', "``")
            ),
        );
        let v = out.trim().rsplit('\t').next()?.to_string();
        (v != "NULL").then_some(v)
    }

    /// The tables of a database, sorted by bytes.
    pub fn tables(&self, db: &str) -> Vec<String> {
        let out = self.sql(
            None,
            &format!(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = '{db}' "
            ),
        );
        let mut v: Vec<String> = out.lines().map(String::from).collect();
        v.sort();
        v
    }

    /// The connection arguments for `cairn mysql ...`.
    pub fn cairn_args(&self) -> Vec<String> {
        vec![
            format!("--socket={}", self.socket.display()),
            "--user=root".into(),
        ]
    }
}
