//! A throwaway MariaDB server for `cairn drill`: `mariadb-install-db` into a private directory
//! under the temporary directory, then `mariadbd` on a socket in it (no networking, no grant
//! tables: only this process's clients reach it). Dropping the [`ScratchServer`] kills the
//! server, waits for it and removes the directory, so every exit path (an error, a dropped
//! future on Ctrl-C or SIGTERM) leaves nothing behind.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Connection, config_error, failed, query, spawn_error};
use crate::error::Result;

/// How long the server may take to answer after it starts.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// A running throwaway server and its directory.
pub struct ScratchServer {
    dir: PathBuf,
    child: Option<Child>,
    conn: Connection,
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

impl ScratchServer {
    /// Create the directory and start the server; returns once it answers. Dropping the
    /// future on the way (Ctrl-C) kills what it started and removes the directory.
    pub async fn start(client: &Path) -> Result<ScratchServer> {
        let install = find("mariadb-install-db").ok_or_else(|| {
            config_error(
                "the drill needs mariadb-install-db and mariadbd to start a throwaway server \
                 (install the MariaDB server package, or give --server)",
            )
        })?;
        let mariadbd = find("mariadbd").ok_or_else(|| {
            config_error(
                "the drill needs mariadbd to start a throwaway server (install the MariaDB \
                 server package, or give --server)",
            )
        })?;
        // Only to make the name unlikely to be taken; the directory is created exclusively.
        let mut r = [0u8; 4];
        if getrandom::fill(&mut r).is_err() {
            r = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
                .to_le_bytes();
        }
        let dir = std::env::temp_dir().join(format!(
            "cairn-drill-{}-{}",
            std::process::id(),
            hex::encode(r)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| crate::error::Error::io(&dir, e))?;
        // From here on, dropping `server` removes the directory.
        let mut server = ScratchServer {
            dir: dir.clone(),
            child: None,
            conn: Connection::default(),
        };
        let options = dir.join("client.cnf");
        std::fs::write(&options, b"[client]\n")
            .map_err(|e| crate::error::Error::io(&options, e))?;
        let data = dir.join("data");
        let socket = dir.join("s.sock");
        let user = is_root().then_some("--user=root");
        let out = tokio::process::Command::new(&install)
            .kill_on_drop(true)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", dir.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(user)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| spawn_error(&install, e))?;
        if !out.status.success() {
            return Err(failed(
                format!("mariadb-install-db failed ({})", out.status),
                super::tool_message(&out.stderr),
            ));
        }
        let child = Command::new(&mariadbd)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", dir.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .args([
                "--skip-networking",
                "--skip-grant-tables",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=256M",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--max-allowed-packet=1G",
            ])
            .args(user)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| spawn_error(&mariadbd, e))?;
        server.child = Some(child);
        server.conn = Connection {
            socket: Some(socket),
            user: Some("root".into()),
            defaults_file: Some(options),
            ..Default::default()
        };
        let started = Instant::now();
        loop {
            let (c, conn) = (client.to_path_buf(), server.conn.clone());
            let answered = tokio::task::spawn_blocking(move || query(&c, &conn, "SELECT 1"))
                .await
                .is_ok_and(|r| r.is_ok());
            if answered {
                return Ok(server);
            }
            if let Some(c) = server.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(failed(
                    format!("the throwaway mariadbd exited ({status})"),
                    server.log_tail(),
                ));
            }
            if started.elapsed() > READY_WITHIN {
                return Err(failed(
                    "the throwaway mariadbd did not answer within 2 minutes",
                    server.log_tail(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How to reach it.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Its directory (removed when it is dropped).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("; ")
    }
}

impl Drop for ScratchServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Its data is thrown away: no clean shutdown needed.
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
