//! `cairn health` (issue 15): every check made to fail against real parts (a MariaDB server
//! gone, the S3 server stopped, a full file system, old snapshots, a low max-size), each named
//! with exit 1; all healthy gives exit 0.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A tmpfs mounted for the test (unmounted when dropped), if this machine lets us mount.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

struct World {
    env: Env,
    file: PathBuf,
    local: PathBuf,
    socket: PathBuf,
    live_socket: PathBuf,
    s3: common::s3server::S3Server,
    _tmpfs: Option<Tmpfs>,
}

impl World {
    fn write_config(&self, extra_local: &str) {
        let pw = self.env.path("pw");
        let text = format!(
            "[health]\nmax-age = \"26h\"\nmin-free = \"5%\"\n\n\
             [repositories.local]\nurl = \"{local}\"\npassword-file = \"{pw}\"\n{extra_local}\n\n\
             [repositories.offsite]\nurl = \"s3://cairn-test/health\"\npassword-file = \"{pw}\"\n\
             s3.endpoint = \"{endpoint}\"\ns3.region = \"us-east-1\"\n\
             s3.access-key-id = \"{key}\"\ns3.secret-access-key = \"${{HEALTH_S3_SECRET}}\"\n\n\
             [sources.files]\nkind = \"files\"\npaths = [\"{src}\"]\n\n\
             [sources.db]\nkind = \"mysql\"\nsocket = \"{socket}\"\nuser = \"root\"\n\
             databases = [\"{db}\"]\n\n\
             [jobs.nightly]\nsources = [\"files\", \"db\"]\nrepository = \"local\"\n\
             copy-to = [\"offsite\"]\ncheck = \"structure\"\n",
            local = self.local.display(),
            pw = pw.display(),
            endpoint = self.s3.endpoint(),
            key = common::s3server::ACCESS_KEY,
            src = self.env.path("src").display(),
            socket = self.socket.display(),
            db = "healthshop",
        );
        write(&self.file, text.as_bytes());
    }

    fn cmd(&self) -> Cairn {
        Cairn::bare(&self.env)
            .env_remove("CAIRN_PASSWORD")
            .env("HEALTH_S3_SECRET", common::s3server::SECRET_KEY)
            .arg("--config")
            .arg(&self.file)
    }

    /// `cairn health --json`: its exit code and the names of the failed checks.
    fn health(&self) -> (i32, Vec<String>, serde_json::Value) {
        let out = self
            .cmd()
            .args([
                "--json",
                "--s3-timeout",
                "3s",
                "--s3-retries",
                "0",
                "health",
            ])
            .run();
        let code = out.code;
        let v = out.json();
        let failed = v["checks"]
            .as_array()
            .unwrap_or_else(|| panic!("{out}"))
            .iter()
            .filter(|c| c["ok"] == false)
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        (code, failed, v)
    }
}

#[test]
fn each_health_check_fails_by_name_and_all_healthy_is_exit_0() {
    let Some(srv) = common::mysql::server() else {
        return; // SKIPPED (said by common::mysql)
    };
    let Some(s3) = common::s3server::S3Server::start("health") else {
        return; // SKIPPED (said by S3Server::start)
    };
    // A fixed name: the configuration names it; the suite's other tests use unique ones.
    srv.sql(None, "CREATE DATABASE IF NOT EXISTS healthshop");
    srv.sql(
        Some("healthshop"),
        "CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY); INSERT IGNORE INTO t VALUES (1);",
    );
    let env = Env::new_local();
    write(&env.path("src/a.txt"), b"alpha\n");
    write(&env.path("pw"), b"health-password\n");
    // The local repository on a small file system of its own, when mounting is allowed.
    let mnt = env.path("small-fs");
    let tmpfs = Tmpfs::mount(&mnt, "16m");
    if tmpfs.is_none() {
        eprintln!("SKIPPED (part): cannot mount a tmpfs here; the disk check fails by threshold");
    }
    let socket = env.path("db.sock");
    std::os::unix::fs::symlink(&srv.socket, &socket).unwrap();
    let w = World {
        file: env.path("cairn.toml"),
        local: mnt.join("local"),
        socket,
        live_socket: srv.socket.clone(),
        env,
        s3,
        _tmpfs: tmpfs,
    };
    w.write_config("");
    w.cmd().args(["-r", "local", "init"]).run().ok();
    w.cmd().args(["-r", "offsite", "init"]).run().ok();

    // Before any backup: every source is missing, the repositories were never checked.
    let (code, failed, _) = w.health();
    assert_eq!(code, 1);
    assert!(
        failed.contains(&"freshness files@local".to_string()),
        "{failed:?}"
    );
    assert!(
        failed.contains(&"last check offsite".to_string()),
        "{failed:?}"
    );
    // A check by hand counts.
    w.cmd()
        .args(["check", "--repository", "offsite"])
        .run()
        .ok();
    let (_, failed, _) = w.health();
    assert!(
        failed.contains(&"last check local".to_string()),
        "{failed:?}"
    );
    assert!(
        !failed.contains(&"last check offsite".to_string()),
        "{failed:?}"
    );

    // A night three days ago: everything is there but old.
    let old = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(72))
        .to_zoned_datetime(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string();
    let r = w
        .cmd()
        .args(["--json", "run", "--time", &old])
        .run()
        .ok()
        .json();
    assert_eq!(r["outcome"], "success", "{r}");
    let (code, failed, v) = w.health();
    assert_eq!(code, 1, "{v}");
    assert_eq!(
        failed,
        [
            "freshness files@local",
            "freshness db@local",
            "freshness files@offsite",
            "freshness db@offsite"
        ],
        "{v}"
    );
    let text = w.cmd().arg("health").run().code(1).stdout_str();
    assert!(
        text.contains("FAIL freshness files@local") && text.contains("cairn run nightly"),
        "{text}"
    );

    // Tonight's run: healthy.
    w.cmd().args(["run"]).run().ok();
    let (code, failed, v) = w.health();
    assert_eq!((code, failed.len()), (0, 0), "{v}");
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in [
        "database db",
        "repository local",
        "repository offsite",
        "disk local",
        "disk cache",
        "freshness db@offsite",
        "last check local",
        "last check offsite",
    ] {
        assert!(names.contains(&n), "no check {n}: {names:?}");
    }
    let text = w.cmd().arg("health").run().ok().stdout_str();
    assert!(
        text.contains("\nhealthy (") && !text.contains("FAIL"),
        "{text}"
    );

    // A repository over its max-size.
    w.write_config("max-size = \"1K\"");
    let (code, failed, v) = w.health();
    assert_eq!((code, failed), (1, vec!["size local".to_string()]), "{v}");
    w.write_config("max-size = \"1G\"");
    assert_eq!(w.health().0, 0);

    // A full file system under the local repository.
    let filler = mnt.join("filler");
    if w._tmpfs.is_some() {
        let free = {
            let st = rustix::fs::statvfs(&mnt).unwrap();
            st.f_bavail * st.f_frsize
        };
        write(&filler, &vec![0u8; (free - 200 * 1024) as usize]);
    } else {
        w.write_config("");
        let text = std::fs::read_to_string(&w.file)
            .unwrap()
            .replace("min-free = \"5%\"", "min-free = \"100%\"");
        write(&w.file, text.as_bytes());
    }
    let (code, failed, v) = w.health();
    if w._tmpfs.is_some() {
        assert_eq!((code, failed), (1, vec!["disk local".to_string()]), "{v}");
        std::fs::remove_file(&filler).unwrap();
    } else {
        assert_eq!(code, 1);
        assert!(failed.contains(&"disk local".to_string()), "{v}");
        w.write_config("");
    }
    assert_eq!(w.health().0, 0);

    // The database server gone.
    std::fs::remove_file(&w.socket).unwrap();
    std::os::unix::fs::symlink(w.env.path("no-such-socket"), &w.socket).unwrap();
    let (code, failed, v) = w.health();
    assert_eq!((code, failed), (1, vec!["database db".to_string()]), "{v}");
    std::fs::remove_file(&w.socket).unwrap();
    std::os::unix::fs::symlink(&w.live_socket, &w.socket).unwrap();
    assert_eq!(w.health().0, 0);

    // The S3 server stopped: the repository is named (what depends on it is not checked).
    let mut w = w;
    w.s3.kill();
    let (code, failed, v) = w.health();
    assert_eq!(
        (code, failed),
        (1, vec!["repository offsite".to_string()]),
        "{v}"
    );
    let detail = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "repository offsite")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains(&w.s3.endpoint()), "{detail}");
    w.s3.restart();
    assert_eq!(w.health().0, 0);
}
