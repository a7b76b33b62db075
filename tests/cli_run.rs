//! `cairn run` (issue 14): a job's hooks, tiers with their own retention, and a failed copy
//! caught up the next night.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// A job over one files source (a Laravel-like tree) into `local`, copied to `offsite`
/// (a directory, or the S3 URL when given).
struct Job {
    env: Env,
    file: PathBuf,
    src: PathBuf,
    local: PathBuf,
}

impl Job {
    fn new(env: Env, offsite: Option<String>, job_extra: &str) -> Job {
        Job::with_sources(env, offsite, "", "\"files\"", job_extra)
    }

    /// With more sources (`sources`, TOML tables) and the job's list of them.
    fn with_sources(
        env: Env,
        offsite: Option<String>,
        sources: &str,
        job_sources: &str,
        job_extra: &str,
    ) -> Job {
        let src = env.path("app");
        write(&src.join("storage/app/avatar.png"), b"png");
        write(&src.join("node_modules/left/index.js"), b"left out");
        write(&src.join("storage/framework/sessions/s1"), b"session");
        let local = env.path("local");
        let offsite = offsite.unwrap_or_else(|| env.path("offsite").display().to_string());
        let pw = env.path("password");
        write(&pw, b"job-repo-password\n");
        let file = env.path("cairn.toml");
        let text = format!(
            "[repositories.local]\nurl = \"{local}\"\npassword-file = \"{pw}\"\nkeep-daily = 7\n\n\
             [repositories.offsite]\nurl = \"{offsite}\"\npassword-file = \"{pw}\"\nkeep-daily = 30\n\n\
             [sources.files]\nkind = \"files\"\npaths = [\"{src}\"]\nexclude-presets = [\"laravel\"]\n\n\
             {sources}\n[jobs.nightly]\nsources = [{job_sources}]\nrepository = \"local\"\ncopy-to = [\"offsite\"]\n\
             {job_extra}\n",
            local = local.display(),
            pw = pw.display(),
            src = src.display(),
        );
        write(&file, text.as_bytes());
        let job = Job {
            env,
            file,
            src,
            local,
        };
        job.cmd().args(["-r", "local", "init"]).run().ok();
        job.cmd().args(["-r", "offsite", "init"]).run().ok();
        job
    }

    fn cmd(&self) -> Cairn {
        Cairn::bare(&self.env)
            .env_remove("CAIRN_PASSWORD")
            .arg("--config")
            .arg(&self.file)
    }

    fn run(&self, extra: &[&str]) -> Out {
        self.cmd().args(["--json", "run"]).args(extra).run()
    }

    fn snapshots(&self, repo: &str) -> Vec<serde_json::Value> {
        let out = self
            .cmd()
            .args(["--json", "-r", repo, "snapshots"])
            .run()
            .ok();
        out.json().as_array().cloned().unwrap_or_default()
    }
}

fn step<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name:?}: {report}"))
}

fn marker(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[test]
fn hooks_run_in_their_order_and_can_stop_or_fail_the_run() {
    let env = Env::new_local();
    let m = env.path("marks");
    std::fs::create_dir_all(&m).unwrap();
    let hooks = format!(
        "hooks.before = [\"echo checking-before; test ! -e {fail}\"]\n\
         hooks.after = [\"echo $CAIRN_OUTCOME $CAIRN_JOB > {after}\"]\n\
         hooks.on-error = [\"echo $CAIRN_OUTCOME > {onerr}\"]\n\
         hooks.validate = [\"cat > {json}; test ! -e {novalid}\"]\n",
        fail = marker(&m, "fail-before"),
        after = marker(&m, "after"),
        onerr = marker(&m, "on-error"),
        json = marker(&m, "validate.json"),
        novalid = marker(&m, "fail-validate"),
    );
    let job = Job::new(env, None, &hooks);
    // Success: after runs, on-error does not, validate got the run's JSON.
    let r = job.run(&[]).ok().json();
    assert_eq!(r["outcome"], "success", "{r}");
    assert_eq!(
        std::fs::read_to_string(m.join("after")).unwrap(),
        "success nightly\n"
    );
    assert!(!m.join("on-error").exists());
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.join("validate.json")).unwrap()).unwrap();
    assert_eq!(v["run_id"], r["run_id"], "{v}");
    assert_eq!(v["snapshots"][0][0], "files", "{v}");
    // The preset's excludes are missing from the snapshot, the rest is there.
    let ls = job
        .cmd()
        .args(["-r", "local", "ls", "latest"])
        .run()
        .ok()
        .stdout_str();
    assert!(ls.contains("avatar.png"), "{ls}");
    assert!(
        !ls.contains("node_modules") && !ls.contains("sessions"),
        "{ls}"
    );
    assert_eq!(job.snapshots("offsite").len(), 1);
    // The hook's output is in the run's log, which ends with the outcome.
    let log = job.cmd().args(["logs"]).run().ok().stdout_str();
    let id = r["run_id"].as_str().unwrap();
    assert!(
        log.contains("hook before[0] stdout: checking-before"),
        "{log}"
    );
    assert!(
        log.lines()
            .last()
            .unwrap()
            .ends_with(&format!("run {id} ended: success")),
        "{log}"
    );
    assert!(log.contains("step backup files ended: success"), "{log}");

    // A failing before hook: no snapshot, on-error runs, after does not.
    std::fs::remove_file(m.join("after")).unwrap();
    write(&m.join("fail-before"), b"");
    let out = job.run(&[]).code(1);
    let r = out.json();
    assert_eq!(r["outcome"], "failure", "{r}");
    assert_eq!(step(&r, "hook before")["outcome"], "failure");
    assert!(out.stderr.contains("hook before"), "{out}");
    assert_eq!(
        job.snapshots("local").len(),
        1,
        "a snapshot despite the before hook"
    );
    assert_eq!(
        std::fs::read_to_string(m.join("on-error")).unwrap(),
        "failure\n"
    );
    assert!(!m.join("after").exists());

    // A failing validate hook fails the run (the snapshot stays: steps are not undone).
    std::fs::remove_file(m.join("fail-before")).unwrap();
    std::fs::remove_file(m.join("on-error")).unwrap();
    write(&m.join("fail-validate"), b"");
    let r = job.run(&[]).code(1).json();
    assert_eq!(r["outcome"], "failure", "{r}");
    assert_eq!(step(&r, "hook validate")["outcome"], "failure");
    assert!(m.join("on-error").exists());
    assert!(!m.join("after").exists());
}

#[test]
fn a_hung_hook_is_killed_at_its_timeout_and_holds_off_a_second_run() {
    let env = Env::new_local();
    let mark = env.path("hook-started");
    let job = Job::new(
        env,
        None,
        &format!(
            "hooks.before = [\"touch {}; sleep 60 & sleep 60\"]\nhooks.timeout = \"3s\"\n",
            mark.display()
        ),
    );
    let started = Instant::now();
    let first = job
        .cmd()
        .args(["--json", "run"])
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !mark.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the hook never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // One run of a job at a time.
    job.cmd()
        .arg("run")
        .run()
        .code(11)
        .stderr_has("another run of job nightly is in progress");
    // `logs --follow` shows the run as it goes and ends when it does.
    let follow = job
        .cmd()
        .args(["logs", "--follow"])
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = first.wait_with_output().unwrap();
    let followed = follow.wait_with_output().unwrap();
    let followed_text = String::from_utf8_lossy(&followed.stdout).to_string();
    assert_eq!(followed.status.code(), Some(0), "{followed:?}");
    assert!(
        followed_text.contains("did not finish within 3s")
            && followed_text.contains("ended: failure"),
        "{followed_text}"
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the hook was not killed"
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = step(&r, "hook before")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.contains("did not finish within 3s"), "{e}");
    assert!(job.snapshots("local").is_empty());
}

/// 40 nights: the local tier keeps 7 daily snapshots, the offsite one 30.
#[test]
fn forty_nights_leave_seven_local_and_thirty_offsite() {
    let env = Env::new_local();
    let job = Job::new(env, None, "prune = true\ncheck = \"structure\"\n");
    // One MiB every snapshot holds and the repository stores once.
    write(
        &job.src.join("storage/app/photo.jpg"),
        &random_bytes(7, 1 << 20),
    );
    for night in 0..40 {
        write(
            &job.src.join("storage/app/night.txt"),
            format!("night {night}\n").as_bytes(),
        );
        // From 2026-01-01, one night a day at 02:00.
        let day = jiff::civil::date(2026, 1, 1) + jiff::Span::new().days(night);
        let time = format!("{day} 02:00:00");
        let r = job.run(&["--time", &time]).ok().json();
        assert_eq!(r["outcome"], "success", "night {night}: {r}");
    }
    assert_eq!(job.snapshots("local").len(), 7);
    assert_eq!(job.snapshots("offsite").len(), 30);
    // The history has every night, newest first, and the log a line per run.
    let runs = job
        .cmd()
        .args(["--json", "runs", "--last", "100"])
        .run()
        .ok()
        .json();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 40);
    assert!(
        runs.iter()
            .all(|r| r["outcome"] == "success" && r["job"] == "nightly")
    );
    assert!(runs[0]["added"][0][0] == "files", "{}", runs[0]);
    let state = job.env.dir.path().join("state");
    let log = std::fs::read_to_string(state.join("runs.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 40);
    use std::os::unix::fs::PermissionsExt;
    for f in ["runs.jsonl", "history.db"] {
        let mode = std::fs::metadata(state.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} is readable by others: {mode:o}");
    }
    let table = job
        .cmd()
        .args(["runs", "--last", "3"])
        .run()
        .ok()
        .stdout_str();
    assert_eq!(table.lines().count(), 4, "{table}");
    for repo in ["local", "offsite"] {
        job.cmd().args(["-r", repo, "check"]).run().ok();
    }
    assert!(job.local.join("config").exists());
    // Per night: size, added, and each tier's size and snapshot count after it.
    let nights = job
        .cmd()
        .args(["--json", "stats", "--history", "--last", "100"])
        .run()
        .ok()
        .json();
    let nights = nights.as_array().unwrap();
    assert_eq!(nights.len(), 40);
    let last = &nights[39];
    assert!(last["logical_bytes"].as_u64().unwrap() > 0, "{last}");
    assert!(
        nights[0]["added_bytes"].as_u64().unwrap() > 0,
        "{}",
        nights[0]
    );
    let tier = |n: &serde_json::Value, name: &str| {
        n["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {n}"))
            .clone()
    };
    assert_eq!(tier(last, "local")["snapshots"], 7, "{last}");
    assert_eq!(tier(last, "offsite")["snapshots"], 30, "{last}");
    assert_eq!(tier(&nights[2], "local")["snapshots"], 3);
    // 7 snapshots of the MiB in the local tier, 30 offsite.
    let ratio = |n: &str| tier(last, n)["dedup_ratio"].as_f64().unwrap();
    assert!(ratio("local") > 5.0 && ratio("local") < 7.5, "{last}");
    assert!(ratio("offsite") > 25.0 && ratio("offsite") < 31.0, "{last}");
    let table = job
        .cmd()
        .args(["stats", "--history", "--last", "5"])
        .run()
        .ok()
        .stdout_str();
    assert_eq!(table.lines().count(), 6, "{table}");
    assert!(
        table.contains("local ") && table.contains("offsite "),
        "{table}"
    );
}

/// The offsite tier on S3 is down for a night: the local snapshot is kept, the run is
/// partial (exit 3), and the next night copies both.
#[test]
fn a_night_without_s3_is_caught_up_the_next() {
    let Some(mut s3env) = Env::new_s3() else {
        return; // SKIPPED (said by common::Env)
    };
    let url = s3env.s3.as_ref().unwrap().url.clone();
    let repo_dir = s3env.repo.clone();
    // The job's files live in the same environment (its S3 server variables are set).
    let env = std::mem::replace(&mut s3env, Env::new_local());
    let job = Job::new(env, Some(url), "");
    assert!(repo_dir.join("config").exists(), "offsite not on S3");
    // Three nights (a day apart, or keep-daily would keep one).
    job.run(&["--time", "2026-03-01 02:00:00"]).ok();
    write(&job.src.join("storage/app/new.txt"), b"second night");
    // Stop the server.
    let mut env = job;
    env.env.s3.as_mut().unwrap().server.kill();
    let out = env
        .cmd()
        .args(["--json", "--s3-retries", "1", "--s3-timeout", "2s", "run"])
        .args(["--time", "2026-03-02 02:00:00"])
        .run()
        .code(3);
    let r = out.json();
    assert_eq!(r["outcome"], "partial", "{r}");
    assert_eq!(step(&r, "backup files")["outcome"], "success");
    let copy = step(&r, "copy offsite");
    assert_eq!(copy["outcome"], "failure", "{r}");
    let endpoint = env.env.s3.as_ref().unwrap().server.endpoint();
    assert!(
        copy["error"].as_str().unwrap().contains(&endpoint),
        "the cause is not named: {copy}"
    );
    assert_eq!(env.snapshots("local").len(), 2);
    env.env.s3.as_mut().unwrap().server.restart();
    write(&env.src.join("storage/app/third.txt"), b"third night");
    let r = env.run(&["--time", "2026-03-03 02:00:00"]).ok().json();
    assert_eq!(r["outcome"], "success", "{r}");
    assert_eq!(
        env.snapshots("offsite").len(),
        3,
        "the missed night was not copied"
    );
    for repo in ["local", "offsite"] {
        env.cmd().args(["-r", repo, "check"]).run().ok();
    }
}

/// Files and a database in one run, at the same time; then the database server is gone: the
/// files snapshot is still made, the run is partial, and the failed step names its cause.
#[test]
fn a_dead_database_server_still_gives_the_files_snapshot() {
    let Some(srv) = common::mysql::server() else {
        return; // SKIPPED (said by common::mysql)
    };
    let db = srv.database("runshop");
    srv.sql(
        Some(&db),
        "CREATE TABLE orders (id INT PRIMARY KEY, item VARCHAR(40)); \
         INSERT INTO orders VALUES (1, 'tea'), (2, 'cake');",
    );
    let env = Env::new_local();
    let socket = env.path("db-socket");
    write(&socket, b"");
    let sources = format!(
        "[sources.db]\nkind = \"mysql\"\nsocket = \"{}\"\nuser = \"root\"\ndatabases = [\"{db}\"]\n",
        socket.display()
    );
    let job = Job::with_sources(env, None, &sources, "\"files\", \"db\"", "");
    // The live server first: the socket path is a link to its socket.
    std::fs::remove_file(&socket).unwrap();
    std::os::unix::fs::symlink(&srv.socket, &socket).unwrap();
    let r = job.run(&["--time", "2026-02-01 02:00:00"]).ok().json();
    assert_eq!(r["outcome"], "success", "{r}");
    assert_eq!(r["snapshots"].as_array().map(Vec::len), Some(2), "{r}");
    // Both tiers give the same table back.
    let table = |repo: &str| {
        job.cmd()
            .args(["-r", repo, "mysql", "restore", "latest", "--database", &db])
            .args(["--table", "orders", "--to-stdout"])
            .run()
            .ok()
            .stdout_str()
    };
    let local = table("local");
    assert!(local.contains("'cake'"), "{local}");
    assert_eq!(local, table("offsite"));

    // Now nothing answers there.
    std::fs::remove_file(&socket).unwrap();
    write(&socket.with_extension("gone"), b"");
    std::fs::rename(socket.with_extension("gone"), &socket).unwrap();
    write(&job.src.join("storage/app/new.txt"), b"second night");
    let out = job.run(&["--time", "2026-02-02 02:00:00"]).code(3);
    let r = out.json();
    assert_eq!(r["outcome"], "partial", "{r}");
    assert_eq!(step(&r, "backup files")["outcome"], "success", "{r}");
    let failed = step(&r, "backup db");
    assert_eq!(failed["outcome"], "failure", "{r}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains(&socket.display().to_string())
            || failed["error"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("connect"),
        "the cause is not named: {failed}"
    );
    assert!(out.stderr.contains("backup db"), "{out}");
    eprintln!("the failed step: {failed}");
    // The log names the failed step and its cause; so does the history.
    let log = job.cmd().args(["logs"]).run().ok().stdout_str();
    let line = log
        .lines()
        .find(|l| l.contains("step backup db ended: failure"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains(failed["error"].as_str().unwrap()), "{line}");
    let runs = job
        .cmd()
        .args(["--json", "runs", "--last", "1"])
        .run()
        .ok()
        .json();
    assert_eq!(runs[0]["outcome"], "partial", "{runs}");
    let files: Vec<_> = job
        .snapshots("local")
        .into_iter()
        .filter(|s| {
            s["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "source=files"))
        })
        .collect();
    assert_eq!(
        files.len(),
        2,
        "no files snapshot on the night the database was down"
    );
    for repo in ["local", "offsite"] {
        job.cmd().args(["-r", repo, "check"]).run().ok();
    }
}

/// No secret (the repositories' password, the database password) appears in `config show`,
/// the run's log and history, the dump tool's or the client's argv, or any output of a run
/// that fails.
#[test]
fn secrets_stay_out_of_output_history_and_argv() {
    let Some(srv) = common::mysql::server() else {
        return; // SKIPPED (said by common::mysql)
    };
    let db = srv.database("secretshop");
    let user = format!("u{}", std::process::id());
    let db_password = "Db-Secret-7781";
    srv.sql(
        Some(&db),
        &format!(
            "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1); \
             CREATE USER '{user}'@'localhost' IDENTIFIED BY '{db_password}'; \
             GRANT ALL ON `{db}`.* TO '{user}'@'localhost'; \
             GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO '{user}'@'localhost';"
        ),
    );
    let env = Env::new_local();
    // Tools that record their arguments, then run the real ones.
    let argv_log = env.path("argv.log");
    let wrap = |name: &str| {
        let real = ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(name));
        let w = env.path(&format!("bin/{name}"));
        write(
            &w,
            format!(
                "#!/bin/sh\necho \"$0 $*\" >> {}\nexec {} \"$@\"\n",
                argv_log.display(),
                real.display()
            )
            .as_bytes(),
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
        w
    };
    let dump = wrap("mariadb-dump");
    let client = wrap("mariadb");
    let sources = format!(
        "[sources.db]\nkind = \"mysql\"\nsocket = \"{}\"\nuser = \"{user}\"\n\
         password = \"${{SHOP_DB_PASSWORD}}\"\ndatabases = [\"{db}\"]\n\
         dump-binary = \"{}\"\nclient-binary = \"{}\"\n",
        srv.socket.display(),
        dump.display(),
        client.display()
    );
    let job = Job::with_sources(
        env,
        None,
        &sources,
        "\"files\", \"db\"",
        "hooks.after = [\"env > /dev/null\"]\n",
    );
    let repo_password = "job-repo-password";
    let run = |extra: &[&str]| {
        job.cmd()
            .env("SHOP_DB_PASSWORD", db_password)
            .args(["--json", "-v", "run"])
            .args(extra)
            .run()
    };
    let ok = run(&["--time", "2026-04-01 02:00:00"]).ok();
    assert_eq!(ok.json()["outcome"], "success", "{ok}");
    // A failing night: the database user's password is wrong.
    let bad = job
        .cmd()
        .env("SHOP_DB_PASSWORD", "Wrong-Secret-0042")
        .args(["--json", "-v", "run", "--time", "2026-04-02 02:00:00"])
        .run()
        .code(3);
    let shown = job.cmd().args(["config", "show"]).run().ok();
    let state = job.env.dir.path().join("state");
    let mut haystacks = vec![
        ("run output", format!("{}{}", ok.stdout_str(), ok.stderr)),
        (
            "failed run output",
            format!("{}{}", bad.stdout_str(), bad.stderr),
        ),
        ("config show", shown.stdout_str()),
        (
            "runs.jsonl",
            std::fs::read_to_string(state.join("runs.jsonl")).unwrap(),
        ),
        (
            "history.db",
            String::from_utf8_lossy(&std::fs::read(state.join("history.db")).unwrap()).into(),
        ),
        ("argv", std::fs::read_to_string(&argv_log).unwrap()),
    ];
    haystacks.push((
        "runs",
        job.cmd().args(["--json", "runs"]).run().ok().stdout_str(),
    ));
    haystacks.push(("logs", job.cmd().args(["logs"]).run().ok().stdout_str()));
    assert!(
        haystacks
            .last()
            .unwrap()
            .1
            .contains("step backup db ended: failure")
    );
    assert!(
        haystacks[5].1.contains("mariadb-dump"),
        "the wrapper never ran"
    );
    for (what, text) in &haystacks {
        for secret in [db_password, "Wrong-Secret-0042", repo_password] {
            assert!(!text.contains(secret), "{secret:?} in {what}:\n{text}");
        }
    }
}

/// The Laravel tree of [`a_laravel_shop_night_on_both_tiers`]: every kind the preset leaves
/// out, and kept files beside them (some with names close to an excluded one).
const LARAVEL_TREE: &[(&str, bool)] = &[
    ("storage/app/public/avatars/a.png", true),
    ("storage/app/invoices/invoice-2291.pdf", true),
    ("storage/app/environment.php", true),
    ("storage/app/node_modules.txt", true),
    ("storage/app/git/notes.txt", true),
    ("storage/app/node_modules/left-pad/index.js", false),
    ("storage/app/.git/HEAD", false),
    ("storage/app/.env", false),
    ("storage/app/public/upload.tmp", false),
    ("storage/app/public/.draft.swp", false),
    ("storage/logs/laravel.log", true),
    ("storage/logs/laravel.log~", false),
    ("config/app.php", true),
    ("config/database.php", true),
    ("config/.env.production", false),
    ("config/app.php.swp", false),
    ("storage/framework/testing/disks/keep.txt", true),
    ("storage/framework/cache/data/ab/cd", false),
    ("storage/framework/sessions/s1", false),
    ("storage/framework/views/compiled.php", false),
];

/// Every regular file below `dir`, by its path relative to `dir`, with its contents.
fn tree_of(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    files_below(dir)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// The issue's whole story: `config init --preset laravel` on an app with a MariaDB shop,
/// `cairn run`, and both tiers (local disk, S3 on s3s-fs) give back the same files (exactly
/// the preset's excludes missing) and the same tables, found by source name. No secret (the
/// repository password, the database password, the S3 secret key) shows anywhere.
#[test]
fn a_laravel_shop_night_on_both_tiers() {
    let Some(srv) = common::mysql::server() else {
        return; // SKIPPED (said by common::mysql)
    };
    let Some(s3) = common::s3server::S3Server::start("a_laravel_shop_night_on_both_tiers") else {
        return; // SKIPPED (said by S3Server::start)
    };
    let db = srv.database("laravelshop");
    let user = format!("shop{}", std::process::id());
    let db_password = "Shop-Db-Secret-5521";
    srv.sql(
        Some(&db),
        &format!(
            "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(40));
             CREATE TABLE orders (id INT PRIMARY KEY, customer INT, total DECIMAL(10,2),
                                  note TEXT);
             INSERT INTO customers SELECT seq, CONCAT('customer ', seq) FROM seq_1_to_200;
             INSERT INTO orders SELECT seq, seq % 200 + 1, seq * 1.25, REPEAT('x', seq % 50)
                 FROM seq_1_to_3000;
             CREATE USER '{user}'@'localhost' IDENTIFIED BY '{db_password}';
             GRANT ALL ON *.* TO '{user}'@'localhost';"
        ),
    );
    let env = Env::new_local();
    let app = env.path("shop-app");
    for (i, (rel, _)) in LARAVEL_TREE.iter().enumerate() {
        write(&app.join(rel), &random_bytes(i as u64, 100 + 997 * i));
    }
    // Outside every source: the app's own .env and its code.
    write(
        &app.join(".env"),
        format!(
            "APP_NAME=\"Shop\"\nDB_CONNECTION=mariadb\nDB_SOCKET={}\nDB_DATABASE={db}\n\
             DB_USERNAME={user}\nDB_PASSWORD={db_password}\n",
            srv.socket.display()
        )
        .as_bytes(),
    );
    write(
        &app.join("app/Models/User.php"),
        b"<?php // code lives in git",
    );

    let file = env.path("cairn.toml");
    let pw = env.path("shop.password");
    let repo_password = "Shop-Repo-Secret-0917";
    write(&pw, format!("{repo_password}\n").as_bytes());
    Cairn::bare(&env)
        .args(["config", "init", "--preset", "laravel", "--app"])
        .arg(&app)
        .arg("-o")
        .arg(&file)
        .run()
        .ok();
    let generated = std::fs::read_to_string(&file).unwrap();
    assert!(!generated.contains(db_password), "{generated}");
    // Point the generated file at this test's places; the offsite tier's credentials come
    // from the file (the secret as a ${VAR}), not the AWS environment.
    let local = env.path("local");
    let text = generated
        .replace("/var/backups/cairn/shop", &local.display().to_string())
        .replace("/etc/cairn/shop.password", &pw.display().to_string())
        .replace(
            "s3://CHANGE-ME-bucket/cairn/shop",
            "s3://cairn-test/cairn/shop",
        )
        .replace(
            "# s3.access-key-id = \"CHANGE-ME\"",
            &format!("s3.access-key-id = \"{}\"", common::s3server::ACCESS_KEY),
        )
        .replace("# s3.secret-access-key", "s3.secret-access-key")
        .replace(
            "# s3.endpoint = \"https://s3.eu-central-1.amazonaws.com\"",
            &format!("s3.endpoint = \"{}\"", s3.endpoint()),
        )
        .replace(
            "# s3.region = \"eu-central-1\"",
            "s3.region = \"us-east-1\"",
        )
        // The framework's directories too, so that their excludes are put to the test.
        .replace(
            &format!("\"{}\"]", app.join("storage/logs").display()),
            &format!(
                "\"{}\", \"{}\"]",
                app.join("storage/logs").display(),
                app.join("storage/framework").display()
            ),
        );
    assert_ne!(text, generated);
    assert!(text.contains("storage/framework\"]"), "{text}");
    write(&file, text.as_bytes());
    let cmd = || {
        Cairn::bare(&env)
            .env_remove("CAIRN_PASSWORD")
            .env("DB_PASSWORD", db_password)
            .env("OFFSITE_S3_SECRET", common::s3server::SECRET_KEY)
            .arg("--config")
            .arg(&file)
    };
    let mut outputs = Vec::new();
    let mut keep = |what: &str, out: Out| -> Out {
        outputs.push((
            what.to_string(),
            format!("{}{}", out.stdout_str(), out.stderr),
        ));
        out
    };
    keep("config check", cmd().args(["config", "check"]).run().ok());
    let shown = keep("config show", cmd().args(["config", "show"]).run().ok()).stdout_str();
    // What is in effect comes first: the file's default repository, the lease wait.
    assert!(
        shown.contains("#   name = \"local\"") && shown.contains("#   lease-wait = \"10m\""),
        "{shown}"
    );
    for r in ["local", "offsite"] {
        keep("init", cmd().args(["-r", r, "init"]).run().ok());
    }
    let out = keep(
        "run",
        cmd().args(["--json", "-v", "run", "nightly"]).run().ok(),
    );
    let r = out.json();
    assert_eq!(r["outcome"], "success", "{r}");
    let sources: Vec<&str> = r["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect();
    assert_eq!(sources.len(), 3, "{r}");
    for s in ["uploads", "app", "database"] {
        assert!(sources.contains(&s), "no snapshot of {s}: {r}");
    }
    assert!(step(&r, "copy offsite")["bytes_added"].as_u64().unwrap() > 0);

    // Files: restored by source name from each tier.
    let mut trees = Vec::new();
    for tier in ["local", "offsite"] {
        let target = env.path(&format!("restored-{tier}"));
        for source in ["uploads", "app"] {
            let listed = keep(
                "snapshots",
                cmd()
                    .args(["--json", "-r", tier, "snapshots", "--source", source])
                    .run()
                    .ok(),
            )
            .json();
            assert_eq!(listed.as_array().map(Vec::len), Some(1), "{tier} {source}");
            let mut c = cmd();
            if tier == "offsite" {
                c = c.args(["-r", "offsite"]);
            }
            keep(
                "restore",
                c.args(["restore", "--source", source, "latest", "--target"])
                    .arg(&target)
                    .run()
                    .ok(),
            );
        }
        // Restores recreate the absolute paths below the target.
        let inside = target.join(app.strip_prefix("/").unwrap());
        trees.push(tree_of(&inside));
    }
    let expected: std::collections::BTreeMap<String, Vec<u8>> = LARAVEL_TREE
        .iter()
        .filter(|(_, kept)| *kept)
        .map(|(rel, _)| (rel.to_string(), std::fs::read(app.join(rel)).unwrap()))
        .collect();
    let names = |t: &std::collections::BTreeMap<String, Vec<u8>>| -> Vec<String> {
        t.keys().cloned().collect()
    };
    assert_eq!(names(&trees[0]), names(&expected), "local tier");
    assert!(trees[0] == expected, "local tier: contents differ");
    assert!(trees[1] == trees[0], "the tiers differ");

    // The database: the same table from both tiers, and a whole restore into a new database
    // through the source's own connection (the .env's user and the password variable).
    let table = |tier: &str| {
        cmd()
            .args([
                "-r", tier, "mysql", "restore", "--source", "database", "latest",
            ])
            .args(["--database", &db, "--table", "orders", "--to-stdout"])
            .run()
            .ok()
            .stdout_str()
    };
    let (a, b) = (table("local"), table("offsite"));
    assert!(
        a.contains("INSERT INTO `orders`"),
        "{}",
        &a[..a.len().min(400)]
    );
    assert!(a == b, "the tiers give different orders tables");
    let copy = format!("{db}_restored");
    keep(
        "mysql restore",
        cmd()
            .args([
                "-r", "offsite", "mysql", "restore", "--source", "database", "latest",
            ])
            .args(["--database", &db, "--into", &copy])
            .run()
            .ok(),
    );
    for t in ["customers", "orders"] {
        assert_eq!(
            srv.checksum(&copy, t),
            srv.checksum(&db, t),
            "table {t} restored from S3 differs"
        );
    }
    for tier in ["local", "offsite"] {
        keep(
            "check",
            cmd()
                .args(["check", "--repository", tier, "--read-data"])
                .run()
                .ok(),
        );
    }
    // The run's log has every step.
    let log = keep("logs", cmd().args(["logs"]).run().ok()).stdout_str();
    for s in [
        "backup uploads",
        "backup app",
        "backup database",
        "copy offsite",
    ] {
        assert!(log.contains(&format!("step {s} ended: success")), "{log}");
    }

    let state = env.path("state");
    let mut haystacks = outputs;
    for f in files_below(&state) {
        haystacks.push((
            f.display().to_string(),
            String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into(),
        ));
    }
    assert!(haystacks.len() > 10);
    for (what, text) in &haystacks {
        for secret in [db_password, repo_password, common::s3server::SECRET_KEY] {
            assert!(!text.contains(secret), "{secret:?} in {what}:\n{text}");
        }
    }
}

/// `cairn run --metrics-file` and `cairn metrics`: valid for promtool, and the values are those
/// of `cairn runs --json`.
#[test]
fn metrics_agree_with_the_history() {
    let env = Env::new_local();
    let m = env.path("marks");
    std::fs::create_dir_all(&m).unwrap();
    let hooks = format!(
        "check = \"structure\"\nhooks.before = [\"test ! -e {}\"]\n",
        marker(&m, "fail")
    );
    let job = Job::new(env, None, &hooks);
    let metrics = job.env.path("textfile/cairn.prom");
    std::fs::create_dir_all(metrics.parent().unwrap()).unwrap();
    let mf = ["--metrics-file", metrics.to_str().unwrap()];
    job.run(&mf).ok();
    write(&m.join("fail"), b"");
    job.run(&mf).code(1);
    std::fs::remove_file(m.join("fail")).unwrap();
    write(
        &job.src.join("storage/app/more.txt"),
        &random_bytes(3, 50_000),
    );
    job.run(&mf).ok();
    let text = std::fs::read_to_string(&metrics).unwrap();
    promtool_check(&text);
    let s = samples(&text);
    let runs = job.cmd().args(["--json", "runs"]).run().ok().json();
    let last = &runs[0];
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    assert_eq!(
        get("cairn_job_runs_total{job=\"nightly\",outcome=\"success\"}"),
        2.0
    );
    assert_eq!(
        get("cairn_job_runs_total{job=\"nightly\",outcome=\"failure\"}"),
        1.0
    );
    assert_eq!(
        get("cairn_job_last_run_outcome{job=\"nightly\",outcome=\"success\"}"),
        1.0
    );
    let started: jiff::Timestamp = last["started"].as_str().unwrap().parse().unwrap();
    let t = get("cairn_job_last_run_timestamp_seconds{job=\"nightly\"}");
    assert!(
        (t - started.as_nanosecond() as f64 / 1e9).abs() < 1e-3,
        "{t}"
    );
    assert!(
        (get("cairn_job_last_run_duration_seconds{job=\"nightly\"}")
            - last["seconds"].as_f64().unwrap())
        .abs()
            < 1e-6
    );
    assert_eq!(
        get("cairn_source_last_backup_added_bytes{job=\"nightly\",source=\"files\"}"),
        last["added"][0][1].as_f64().unwrap()
    );
    assert!(last["added"][0][1].as_u64().unwrap() > 40_000, "{last}");
    assert_eq!(
        get("cairn_repository_snapshots{repository=\"local\"}"),
        job.snapshots("local").len() as f64
    );
    assert_eq!(
        get("cairn_repository_last_check_success{repository=\"offsite\"}"),
        1.0
    );
    // `cairn metrics --health` adds the health checks.
    let printed = job
        .cmd()
        .args(["metrics", "--health"])
        .run()
        .ok()
        .stdout_str();
    let p = samples(&printed);
    assert!(p.contains_key("cairn_healthy"), "{printed}");
    assert_eq!(
        p["cairn_health_check_ok{check=\"freshness files@local\"}"], 1.0,
        "{printed}"
    );
}
