//! `cairn drill` (issue 16, item 5) against a real MariaDB: a job's files and database
//! restored into scratch space and compared; damaged data and altered tables named; the
//! throwaway server and its directory gone however the drill ends.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

struct Job {
    env: Env,
    file: PathBuf,
    local: PathBuf,
    /// cairn's TMPDIR: where its scratch space goes.
    tmp: PathBuf,
}

impl Job {
    fn new(srv: &common::mysql::Server) -> Job {
        let db = srv.database("drillshop");
        srv.sql(
            Some(&db),
            "CREATE TABLE orders (id INT PRIMARY KEY, item VARCHAR(40), price DECIMAL(8,2)); \
             CREATE TABLE notes (id INT PRIMARY KEY AUTO_INCREMENT, body TEXT); \
             INSERT INTO notes (body) VALUES ('first'), ('it''s; (second)'), (NULL);",
        );
        // Filled inside the server (the sequence engine): an argument list has a limit.
        srv.sql(
            Some(&db),
            "INSERT INTO orders SELECT seq, CONCAT('item ', seq), (seq % 97) + (seq % 100) / 100 \
             FROM seq_0_to_4999",
        );
        let env = Env::new_local();
        let src = env.path("app");
        write(&src.join("storage/app/avatar.png"), b"png");
        write(&src.join("storage/app/big.bin"), &random_bytes(7, 3 << 20));
        // An empty file is verified like any other (no false "restored but not verified").
        write(&src.join("storage/app/empty.log"), b"");
        write(&src.join("config/app.php"), b"<?php return [];\n");
        let local = env.path("local");
        let pw = env.path("password");
        write(&pw, b"job-repo-password\n");
        let tmp = env.path("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let file = env.path("cairn.toml");
        let text = format!(
            "[repositories.local]\nurl = \"{local}\"\npassword-file = \"{pw}\"\n\n\
             [sources.files]\nkind = \"files\"\npaths = [\"{src}\"]\n\n\
             [sources.db]\nkind = \"mysql\"\nsocket = \"{socket}\"\nuser = \"root\"\n\
             databases = [\"{db}\"]\n\n\
             [jobs.nightly]\nsources = [\"files\", \"db\"]\nrepository = \"local\"\n",
            local = local.display(),
            pw = pw.display(),
            src = src.display(),
            socket = srv.socket.display(),
        );
        write(&file, text.as_bytes());
        let job = Job {
            env,
            file,
            local,
            tmp,
        };
        job.cmd().args(["-r", "local", "init"]).run().ok();
        let r = job.cmd().args(["--json", "run"]).run().ok().json();
        assert_eq!(r["outcome"], "success", "{r}");
        job
    }

    fn cmd(&self) -> Cairn {
        Cairn::bare(&self.env)
            .env_remove("CAIRN_PASSWORD")
            .env("TMPDIR", &self.tmp)
            .arg("--config")
            .arg(&self.file)
    }

    fn drill(&self, extra: &[&str]) -> Cairn {
        self.cmd().args(["--json", "drill"]).args(extra)
    }

    /// Nothing of the drill is left: its scratch directories are gone and no process runs
    /// from them.
    fn assert_clean(&self) {
        let left: Vec<_> = std::fs::read_dir(&self.tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "scratch space left behind: {left:?}");
        // A client of the killed server may take a moment to notice.
        let started = Instant::now();
        loop {
            let procs = processes_mentioning(&self.tmp);
            if procs.is_empty() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "processes left behind: {procs:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The command lines of running processes that mention `path`.
fn processes_mentioning(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) {
            out.push(cmd);
        }
    }
    out
}

fn table<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["tables"].as_array().into_iter().flatten())
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name}: {r}"))
}

#[test]
fn a_drill_passes_is_timed_and_recorded_and_fails_on_a_slow_or_altered_restore() {
    let Some(srv) = common::mysql::server() else {
        return; // SKIPPED (said by common::mysql)
    };
    let job = Job::new(srv);
    let out = job.drill(&[]).run();
    let r = out.json();
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["files_seconds"].as_f64().is_some(), "{r}");
    assert!(r["database_seconds"].as_f64().is_some(), "{r}");
    assert_eq!(r["within_rto"], true, "{r}");
    let orders = table(&r, "orders");
    assert_eq!(orders["rows"], 5000, "{r}");
    assert_eq!(orders["rows_expected"], 5000, "{r}");
    assert_eq!(orders["checksum"], orders["checksum_expected"], "{r}");
    assert!(
        orders["checksum"].as_str().is_some_and(|c| c.len() == 64),
        "{r}"
    );
    assert_eq!(orders["check_ok"], true, "{r}");
    assert_eq!(table(&r, "notes")["rows"], 3, "{r}");
    let files = r["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "files")
        .unwrap();
    assert_eq!(files["verified_files"], 4, "{r}");
    eprintln!(
        "drill: files {}s, database {}s",
        r["files_seconds"], r["database_seconds"]
    );
    job.assert_clean();
    // The text report says the times.
    let text = job.cmd().arg("drill").run().ok().stdout_str();
    assert!(text.contains("time to a usable database"), "{text}");
    assert!(text.contains("time to a complete file tree"), "{text}");
    job.assert_clean();
    // The history has the drills, as job nightly:drill.
    let runs = job
        .cmd()
        .args(["--json", "runs", "--job", "nightly:drill"])
        .run()
        .ok()
        .json();
    assert_eq!(runs.as_array().map(Vec::len), Some(2), "{runs}");
    assert_eq!(runs[0]["outcome"], "success", "{runs}");

    // A target no restore meets.
    let out = job.drill(&["--rto", "1ms"]).run().code(1);
    assert!(out.stderr.contains("more than the target"), "{out}");
    assert_eq!(out.json()["within_rto"], false);
    job.assert_clean();

    // The restored data differs from what was dumped: the table is named, the other is fine.
    let out = job
        .drill(&[])
        .env(
            "CAIRN_TEST_DRILL_AFTER_LOAD",
            "UPDATE orders SET item = 'changed' WHERE id = 4321",
        )
        .run()
        .code(1);
    let r = out.json();
    assert_eq!(table(&r, "orders")["ok"], false, "{r}");
    assert_eq!(table(&r, "orders")["rows"], 5000, "{r}");
    assert_eq!(table(&r, "notes")["ok"], true, "{r}");
    assert!(out.stderr.contains("`orders`"), "{out}");
    assert!(out.stderr.contains("checksum"), "{out}");
    assert!(!out.stderr.contains("`notes`"), "{out}");
    job.assert_clean();
    // A lost row too.
    let out = job
        .drill(&[])
        .env(
            "CAIRN_TEST_DRILL_AFTER_LOAD",
            "DELETE FROM notes WHERE id = 2",
        )
        .run()
        .code(1);
    assert!(out.stderr.contains("`notes`: 2 rows"), "{out}");
    job.assert_clean();
    let runs = job
        .cmd()
        .args(["--json", "runs", "--job", "nightly:drill", "--last", "1"])
        .run()
        .ok()
        .json();
    assert_eq!(runs[0]["outcome"], "failure", "{runs}");
}

#[test]
fn a_damaged_pack_fails_the_drill_naming_the_file() {
    let Some(srv) = common::mysql::server() else {
        return; // SKIPPED (said by common::mysql)
    };
    let job = Job::new(srv);
    // The big random file fills most of its pack: bytes in the middle are its data.
    let mut damaged = 0;
    for p in files_below(&job.local.join("data")) {
        let mut data = std::fs::read(&p).unwrap();
        if data.len() > 1 << 20 {
            let mid = data.len() / 2;
            for b in &mut data[mid..mid + 16] {
                *b ^= 0x5a;
            }
            std::fs::write(&p, &data).unwrap();
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1, "one pack holds the big file");
    let out = job.drill(&[]).run().code(1);
    assert!(out.stderr.contains("big.bin"), "{out}");
    assert_eq!(out.json()["ok"], false);
    job.assert_clean();
}

#[test]
fn ctrl_c_mid_drill_stops_the_server_and_removes_its_directory() {
    let Some(srv) = common::mysql::server() else {
        return; // SKIPPED (said by common::mysql)
    };
    let job = Job::new(srv);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let mut child = job.drill(&[]).command().spawn().unwrap();
        // Wait for the throwaway server to be up (its socket), then interrupt.
        let started = Instant::now();
        let socket = loop {
            let found = std::fs::read_dir(&job.tmp)
                .unwrap()
                .flatten()
                .map(|e| e.path().join("s.sock"))
                .find(|s| s.exists());
            if let Some(s) = found {
                break s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the throwaway server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!processes_mentioning(&job.tmp).is_empty());
        // SAFETY: kill with a pid of our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "signal {signal}");
        assert!(!socket.exists());
        job.assert_clean();
    }
}

/// `--server`: the databases go into scratch databases of an existing server, compared the
/// same way, and dropped afterwards; no throwaway server is started.
#[test]
fn a_drill_on_an_existing_server_uses_scratch_databases_and_drops_them() {
    let Some(srv) = common::mysql::server() else {
        return; // SKIPPED (said by common::mysql)
    };
    let job = Job::new(srv);
    let scratch = |srv: &common::mysql::Server| -> Vec<String> {
        srv.sql(None, "SHOW DATABASES LIKE 'cairn\\_drill\\_%'")
            .lines()
            .map(str::to_string)
            .filter(|l| !l.trim().is_empty())
            .collect()
    };
    let before = scratch(srv);
    let socket = srv.socket.display().to_string();
    let out = job
        .drill(&["--server", &socket, "--server-user", "root"])
        .run();
    let r = out.json();
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(r["ok"], true, "{r}");
    let orders = table(&r, "orders");
    assert_eq!(orders["rows"], 5000, "{r}");
    assert_eq!(orders["checksum"], orders["checksum_expected"], "{r}");
    assert_eq!(orders["check_ok"], true, "{r}");
    // Loaded into a scratch database of that server, which is gone again.
    let db = orders["database"].as_str().unwrap_or_default().to_string();
    assert!(db.starts_with("drillshop"), "{r}");
    assert_eq!(scratch(srv), before, "scratch databases left on the server");
    // No mariadbd of its own was started: nothing ran from cairn's scratch space.
    job.assert_clean();
    // An altered table is named on an existing server too, and its database still dropped.
    let out = job
        .drill(&["--server", &socket, "--server-user", "root"])
        .env(
            "CAIRN_TEST_DRILL_AFTER_LOAD",
            "DELETE FROM orders WHERE id < 10",
        )
        .run()
        .code(1);
    assert!(out.stderr.contains("`orders`"), "{out}");
    assert_eq!(scratch(srv), before, "scratch databases left on the server");
}
