//! Failures: exit codes (DESIGN.md §10: 1 failure, 3 partial backup, 10 no repository, 12 wrong
//! password), bad arguments, damaged repositories. The harness fails any test in which the
//! binary panics or dies of a signal, so every case here also proves "no panic".

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// A repository with one snapshot of a small tree holding a multi-chunk file.
fn repo_with_snapshot() -> (Env, PathBuf) {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("big.bin"), &random_bytes(77, 3 << 20));
    write(&src.join("small.txt"), b"small file\n");
    env.backup(&[&src], &[]);
    (env, src)
}

#[test]
fn missing_repository_exits_10() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f"), b"f");
    let t = env.path("t");
    let cases: Vec<Vec<String>> = vec![
        vec!["snapshots".into()],
        vec!["ls".into(), "latest".into()],
        vec!["backup".into(), src.display().to_string()],
        vec![
            "restore".into(),
            "latest".into(),
            "--target".into(),
            t.display().to_string(),
        ],
        vec!["dump".into(), "latest".into(), "/f".into()],
        vec!["stats".into()],
    ];
    for args in &cases {
        env.run(args).code(10).stderr_has("no repository");
    }
    // Also when the directory exists but holds no repository, and through CAIRN_REPO.
    fs::create_dir_all(&env.repo).unwrap();
    env.run(["snapshots"]).code(10);
    Cairn::bare(&env)
        .env("CAIRN_REPO", &env.repo)
        .arg("snapshots")
        .run()
        .code(10);
    // Nothing was created by trying.
    assert!(files_below(&env.repo).is_empty());
    assert!(!t.exists());
}

#[test]
fn wrong_password_exits_12() {
    let (env, src) = repo_with_snapshot();
    let t = env.path("t");
    for args in [
        vec!["snapshots".to_string()],
        vec!["ls".into(), "latest".into()],
        vec!["backup".into(), src.display().to_string()],
        vec![
            "restore".into(),
            "latest".into(),
            "--target".into(),
            t.display().to_string(),
        ],
        vec!["stats".into()],
    ] {
        env.cmd()
            .env("CAIRN_PASSWORD", "not the password")
            .args(&args)
            .run()
            .code(12)
            .stderr_has("wrong password");
    }
    assert_eq!(env.snapshots().len(), 1);
    assert!(!t.exists());

    // The password from a file: the first line counts.
    let good = env.path("good-pw");
    fs::write(&good, format!("{PASSWORD}\nignored second line\n")).unwrap();
    let bad = env.path("bad-pw");
    fs::write(&bad, "nope\n").unwrap();
    let via_file = |f: &Path| {
        env.cmd()
            .env_remove("CAIRN_PASSWORD")
            .env("CAIRN_PASSWORD_FILE", f)
            .arg("snapshots")
            .run()
    };
    via_file(&good).ok();
    via_file(&bad).code(12);
    env.cmd()
        .env_remove("CAIRN_PASSWORD")
        .arg("--password-file")
        .arg(&good)
        .arg("snapshots")
        .run()
        .ok();
    // No password at all, and no terminal to ask on: a clear failure, not a hang.
    env.cmd()
        .env_remove("CAIRN_PASSWORD")
        .arg("snapshots")
        .run()
        .code(1)
        .stderr_has("no password");
    // An empty or missing password file.
    let empty = env.path("empty-pw");
    fs::write(&empty, "").unwrap();
    via_file(&empty).code(1).stderr_has("empty");
    via_file(Path::new("/nonexistent/pw"))
        .code(1)
        .stderr_has("/nonexistent/pw");
}

/// As root every file is readable, so the backup runs as `nobody` (when the tests run as
/// root): a 0000 file and a 0000 directory cannot be read. Both are reported, the rest is backed up, the snapshot is written
/// and the exit code is 3.
#[test]
fn unreadable_sources_give_exit_3_and_a_snapshot() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("readable.txt"), b"fine\n");
    write(&src.join("locked.txt"), b"secret\n");
    write(&src.join("locked-dir/inner.txt"), b"inner\n");
    chmod(&src.join("locked.txt"), 0o000);
    chmod(&src.join("locked-dir"), 0o000);
    chmod(&src, 0o755);
    env.give_to_unprivileged();

    let out = env
        .cmd()
        .args(["backup", "--json"])
        .arg(&src)
        .unprivileged()
        .run()
        .code(3);
    let v = out.json();
    // Each unreadable entry, typed: its path, why (for a scheduler) and what the system said.
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{v}");
    for name in ["locked.txt", "locked-dir"] {
        let e = errors
            .iter()
            .find(|e| e["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("no error for {name}: {v}"));
        assert_eq!(e["kind"], "permission_denied", "{v}");
        assert!(e["message"].as_str().unwrap().contains("ermission"), "{v}");
    }
    assert_eq!(v["summary"]["errors"], 2, "{v}");
    assert_eq!(v["summary"]["total_files"], 1, "{v}");
    let id = v["snapshot_id"]
        .as_str()
        .expect("a snapshot id")
        .to_string();

    let snaps = env
        .cmd()
        .args(["snapshots", "--json"])
        .unprivileged()
        .run()
        .ok()
        .json();
    assert_eq!(snaps[0]["id"], id.as_str());
    let dump = env
        .cmd()
        .args(["dump", &id, &format!("{}/readable.txt", src.display())])
        .unprivileged()
        .run()
        .ok();
    assert_eq!(dump.stdout, b"fine\n");
    let locked = format!("{}/locked.txt", src.display());
    env.cmd()
        .args(["dump", &id, &locked])
        .unprivileged()
        .run()
        .code(1);

    // The text output names the file on stderr.
    env.cmd()
        .arg("backup")
        .arg(&src)
        .unprivileged()
        .run()
        .code(3)
        .stderr_has("locked.txt");
}

#[test]
fn unknown_snapshots_exit_1() {
    let (env, src) = repo_with_snapshot();
    let t = env.path("t");
    for spec in ["deadbeef", "0000000000", "abc", "xyz!", "latest-ish", ""] {
        env.run(["ls", spec]).code(1);
        env.cmd()
            .args(["restore", spec, "--target"])
            .arg(&t)
            .run()
            .code(1);
        env.run(["dump", spec, "/x"]).code(1);
        env.run(["stats", spec]).code(1);
    }
    env.run(["ls", "deadbeef"]).code(1).stderr_has("not found");
    env.run(["ls", "abc"])
        .code(1)
        .stderr_has("not a snapshot id");
    // `latest` of a host or tag that has none.
    env.run(["ls", "latest", "--host", "nowhere"])
        .code(1)
        .stderr_has("latest");
    env.run(["ls", "latest", "--tag", "none"]).code(1);
    // `latest` of an empty repository.
    let empty = Env::with_repo();
    empty
        .run(["ls", "latest"])
        .code(1)
        .stderr_has("no matching snapshot");
    assert!(!t.exists());
    let _ = src;
}

#[test]
fn bad_arguments_exit_1() {
    let (env, src) = repo_with_snapshot();
    let s = src.display().to_string();
    let t = env.path("t").display().to_string();
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["backup"],
        &["backup", "--no-such-flag", &s],
        &["backup", "--stdin", &s],
        &["backup", "--stdin", "--stdin-from-command", "true"],
        &["backup", "--compression", "bogus", &s],
        &["backup", "--compression", "0", &s],
        &["backup", "--compression", "23", &s],
        &["backup", "--exclude", "[", &s],
        &["backup", "--time", "not a time", &s],
        &["backup", "--lease-wait", "5 fortnights", &s],
        &["backup", "--lease-wait", "99999999999999999h", &s],
        &["backup", "--parent", "deadbeef", &s],
        &["backup", ""],
        &["backup", "/nonexistent/source/path"],
        &["restore", "latest"],
        &["restore", "--target", &t],
        &["restore", "latest", "--target", &t, "--include", "["],
        &["restore", "latest", "--target", &t, "--exclude", "a[b"],
        &["restore", "latest:../../etc", "--target", &t],
        &["ls", "latest", "a/../../b"],
        &["ls"],
        &["dump", "latest", "/"],
        &["dump", "latest:"],
        &["init"],
        &["init", "--encryption", "rot13"],
        &["snapshots", "--connections", "many"],
    ];
    for args in cases {
        env.run(*args).code(1);
    }
    // No repository given at all.
    Cairn::bare(&env)
        .arg("snapshots")
        .run()
        .code(1)
        .stderr_has("CAIRN_REPO");
    Cairn::bare(&env)
        .env("CAIRN_REPO", "")
        .arg("snapshots")
        .run()
        .code(1);
    // Nothing was written by any of them.
    assert_eq!(env.snapshots().len(), 1);
    assert!(!env.path("t").exists());
    // --help and --version succeed.
    assert!(env.run(["--help"]).ok().stdout_str().contains("restore"));
    assert!(env.run(["--version"]).ok().stdout_str().contains("cairn"));
}

/// A damaged data pack: restore reports the damaged file by name, restores the rest, exits 1;
/// `dump` of that file fails; with `--verify` the damage is also caught by verification.
#[test]
fn corrupt_pack_is_reported_by_file_name() {
    let (env, src) = repo_with_snapshot();
    let data_pack = packs(&env)[0].clone();
    let len = fs::metadata(&data_pack).unwrap().len();
    assert!(len > 3 << 20, "the largest pack should hold big.bin");
    flip_bytes(&data_pack, len / 2, 16);

    let t = env.path("t");
    let out = env
        .cmd()
        .args(["restore", &format!("latest:{}", src.display()), "--target"])
        .arg(&t)
        .run()
        .code(1);
    let mentions = out.stderr.matches("big.bin").count();
    assert!(mentions >= 1, "the damaged file is not named: {out}");
    assert!(!out.stderr.contains("small.txt"), "{out}");
    // The undamaged file is restored anyway.
    assert_eq!(fs::read(t.join("small.txt")).unwrap(), b"small file\n");

    let tv = env.path("tv");
    let out = env
        .cmd()
        .args([
            "restore",
            "--json",
            "--verify",
            &format!("latest:{}", src.display()),
            "--target",
        ])
        .arg(&tv)
        .run()
        .code(1);
    let v = out.json();
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("big.bin") && e.contains("corrupt")),
        "{v}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("verify") && e.contains("big.bin")),
        "{v}"
    );
    assert_eq!(v["verified_files"], 1, "{v}");

    env.run(["dump", "latest", &format!("{}/big.bin", src.display())])
        .code(1)
        .stderr_has("corrupt");
    env.run(["dump", "latest", &format!("{}/small.txt", src.display())])
        .ok();
}

/// A truncated or missing data pack: restore names the files it could not restore, exits 1.
#[test]
fn truncated_or_missing_pack_is_reported() {
    for missing in [false, true] {
        let (env, src) = repo_with_snapshot();
        let data_pack = packs(&env)[0].clone();
        if missing {
            fs::remove_file(&data_pack).unwrap();
        } else {
            let len = fs::metadata(&data_pack).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(&data_pack)
                .unwrap()
                .set_len(len / 3)
                .unwrap();
        }
        let t = env.path("t");
        let out = env
            .cmd()
            .args(["restore", "latest", "--target"])
            .arg(&t)
            .run()
            .code(1);
        assert!(out.stderr.contains("big.bin"), "{out}");
        let pack_name = data_pack.file_name().unwrap().to_str().unwrap();
        assert!(
            out.stderr.contains(pack_name),
            "the pack is not named: {out}"
        );
        env.run(["dump", "latest", &format!("{}/big.bin", src.display())])
            .code(1);
    }
}

/// Damaged tree blobs, index objects, snapshot objects, config and key files: every command
/// fails cleanly (exit 1, the object named), none panics.
#[test]
fn damaged_metadata_objects_fail_cleanly() {
    let (env, src) = repo_with_snapshot();
    let pristine = env.path("pristine");
    copy_dir(&env.repo, &pristine);
    let reset = |env: &Env| {
        fs::remove_dir_all(&env.repo).unwrap();
        copy_dir(&pristine, &env.repo);
        // A fresh cache, so the damage is read from the repository.
        let _ = fs::remove_dir_all(&env.cache);
    };
    let t = env.path("t");
    let all_commands = |env: &Env| -> Vec<Out> {
        vec![
            env.run(["snapshots"]),
            env.run(["ls", "latest"]),
            env.cmd()
                .args(["restore", "latest", "--target"])
                .arg(&t)
                .run(),
            env.run(["stats"]),
            env.run(["dump", "latest", &format!("{}/small.txt", src.display())]),
        ]
    };

    // Tree blobs: damage the first blob of every pack but the data pack.
    reset(&env);
    for p in &packs(&env)[1..] {
        flip_bytes(p, 5 + 24, 8);
    }
    let outs = all_commands(&env);
    assert_eq!(outs[0].code, 0, "{}", outs[0]); // snapshots need no trees
    for o in &outs[1..] {
        assert_eq!(o.code, 1, "{o}");
        assert!(o.stderr.contains("corrupt"), "{o}");
    }

    // Config: truncated, emptied, replaced.
    for damage in [&b""[..], b"CRNC", b"garbage that is not a config at all"] {
        reset(&env);
        fs::write(env.repo.join("config"), damage).unwrap();
        for o in all_commands(&env) {
            assert_eq!(o.code, 1, "{o}");
            assert!(o.stderr.contains("config"), "{o}");
        }
    }

    // Key files: damaged (no key can be read).
    reset(&env);
    for k in files_below(&env.repo.join("keys")) {
        fs::write(&k, b"junk").unwrap();
    }
    for o in all_commands(&env) {
        assert_eq!(o.code, 1, "{o}");
        assert!(o.stderr.contains("key"), "{o}");
    }

    // An index object or a snapshot object with damaged contents: nothing succeeds silently.
    // The damaged object is named in a warning and left out; commands that need it fail
    // (reading the snapshot's data, or finding the only snapshot); `stats` of what remains and
    // `snapshots` succeed with the warning.
    for dir in ["index", "snapshots"] {
        reset(&env);
        for f in files_below(&env.repo.join(dir)) {
            flip_bytes(&f, 10, 4);
        }
        let outs = all_commands(&env);
        for o in &outs {
            assert!(o.stderr.contains(&format!("{dir}/")), "{o}");
            assert!(o.code == 0 || o.code == 1, "{o}");
        }
        for o in [&outs[1], &outs[2], &outs[4]] {
            assert_eq!(o.code, 1, "{o}");
        }
    }

    // A corrupt local catalog is only a cache: rebuilt, and everything works.
    reset(&env);
    env.run(["snapshots"]).ok();
    for f in files_below(&env.cache) {
        fs::write(&f, b"this is not a database").unwrap();
    }
    for o in all_commands(&env) {
        assert_eq!(o.code, 0, "{o}");
    }
    assert_eq!(
        fs::read(t.join(src.strip_prefix("/").unwrap()).join("small.txt")).unwrap(),
        b"small file\n"
    );
}

/// One damaged snapshot object must not make the rest of the repository unusable: other
/// snapshots can still be listed and restored, and new backups can still be made.
#[test]
fn one_damaged_snapshot_does_not_block_the_repository() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    let first = env.backup(&[&src], &[]);
    write(&src.join("b"), b"b");
    env.backup(&[&src], &[]);
    let id1 = first["snapshot_id"].as_str().unwrap();
    flip_bytes(&env.repo.join("snapshots").join(id1), 10, 4);
    let _ = fs::remove_dir_all(&env.cache);
    assert_eq!(env.snapshots().len(), 1);
    env.backup(&[&src], &[]);
    let t = env.path("t");
    env.restore("latest", &t, &[]);
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// An interrupted backup (SIGINT) exits 130 and writes no snapshot; the next backup works
/// without any unlocking.
#[test]
fn interrupted_backup_exits_130_without_a_snapshot() {
    let env = Env::with_repo();
    // A stream that never ends: the backup is still running when it is interrupted.
    let mut cmd = env
        .cmd()
        .args(["backup", "--stdin", "--stdin-name", "endless"])
        .stdin(Vec::new())
        .command();
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    stdin.write_all(&random_bytes(1, 1 << 20)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "cairn did not stop after SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    drop(stdin);
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(env.snapshots().is_empty());
    // No lease is left that blocks the next backup.
    env.cmd()
        .args(["backup", "--stdin", "--stdin-name", "next"])
        .stdin(b"data".to_vec())
        .run()
        .ok();
    assert_eq!(env.snapshots().len(), 1);
}

/// Where standard error goes in [`exit_code_with_stderr`].
#[derive(Debug, Clone, Copy)]
enum Stderr {
    /// `2>&-`
    Closed,
    /// `2>/dev/full`: every write fails with ENOSPC.
    Full,
}

/// Run `c` with its standard error closed or full (standard output discarded) and return its
/// exit code; fails the test if it does not finish within a minute.
fn exit_code_with_stderr(c: Cairn, how: Stderr) -> i32 {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let mut cmd = c.command();
    cmd.stdout(Stdio::null());
    match how {
        Stderr::Full => {
            let full = fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap();
            cmd.stderr(full);
        }
        Stderr::Closed => {
            cmd.stderr(Stdio::null());
            // SAFETY: close(2) is async-signal-safe; it runs in the child before exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::close(2);
                    Ok(())
                });
            }
        }
    }
    let mut child = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            use std::os::unix::process::ExitStatusExt;
            return s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("no exit within a minute with stderr {how:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Writing to a closed or full standard error is not a reason to fail: every command exits with
/// the code it has with a working stderr (0 after success, the documented code of a failure),
/// never 101 (a panic). Each case writes something to stderr: a warning, an error, a usage
/// message or a list of unreadable files.
#[test]
fn closed_or_full_stderr_keeps_the_exit_code() {
    let (env, src) = repo_with_snapshot();
    let fresh = env.path("fresh-repo");
    let missing = env.path("no-repo");
    let t = env.path("t");
    write(&src.join("locked.txt"), b"secret\n");
    chmod(&src.join("locked.txt"), 0o000);
    env.give_to_unprivileged();
    type MakeCmd<'a> = Box<dyn Fn() -> Cairn + 'a>;
    let cases: Vec<(&str, MakeCmd)> = vec![
        // Warns that the test KDF is insecure, then succeeds.
        (
            "init",
            Box::new(|| Cairn::bare(&env).arg("-r").arg(&fresh).arg("init")),
        ),
        (
            "snapshots -v",
            Box::new(|| env.cmd().args(["snapshots", "-v"])),
        ),
        (
            "no repository",
            Box::new(|| Cairn::bare(&env).arg("-r").arg(&missing).arg("snapshots")),
        ),
        (
            "wrong password",
            Box::new(|| {
                env.cmd()
                    .env("CAIRN_PASSWORD", "not the password")
                    .arg("snapshots")
            }),
        ),
        ("usage", Box::new(|| env.cmd().arg("frobnicate"))),
        ("bad value", Box::new(|| env.cmd().args(["ls", "zz"]))),
        (
            "unreadable source",
            Box::new(|| env.cmd().arg("backup").arg(&src).unprivileged()),
        ),
        (
            "restore",
            Box::new(|| env.cmd().args(["restore", "latest", "--target"]).arg(&t)),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, make) in &cases {
        let expected = make().run().code;
        if *what == "init" {
            // The first run created it; the ones below create it again.
            let _ = fs::remove_dir_all(&fresh);
        }
        for how in [Stderr::Closed, Stderr::Full] {
            let got = exit_code_with_stderr(make(), how);
            if got != expected {
                wrong.push(format!(
                    "{what}: exit code {got} with stderr {how:?}, {expected} with a working stderr"
                ));
            }
            if *what == "init" {
                let _ = fs::remove_dir_all(&fresh);
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// No colour codes on a standard error that is not a terminal: warnings, errors and usage
/// messages are plain text when piped into a log.
#[test]
fn no_colour_codes_when_stderr_is_not_a_terminal() {
    let (env, _src) = repo_with_snapshot();
    let fresh = env.path("fresh-repo");
    let outs = [
        // A warning (the insecure test KDF).
        Cairn::bare(&env)
            .arg("-r")
            .arg(&fresh)
            .arg("init")
            .run()
            .ok(),
        // An error.
        env.run(["ls", "zz"]).code(1),
        // A usage error.
        env.run(["frobnicate"]).code(1),
        // Debug logging.
        env.cmd()
            .args(["restore", "latest", "-vv", "--target"])
            .arg(env.path("t"))
            .run()
            .ok(),
    ];
    for out in &outs {
        assert!(!out.stderr.is_empty(), "nothing on stderr: {out}");
        assert!(
            !out.stderr.contains('\u{1b}'),
            "escape codes on a piped stderr: {out}"
        );
    }
}

/// On a terminal, warnings may be coloured, but not with `NO_COLOR` set (no-color.org).
#[test]
fn no_colour_codes_on_a_terminal_with_no_color() {
    let env = Env::new();
    let with_color = run_on_terminal(Cairn::bare(&env).arg("-r").arg(env.path("a")).arg("init"));
    // The check below can fail: without NO_COLOR the warning is coloured.
    assert!(
        with_color.contains("\u{1b}["),
        "no colour on a terminal at all: {with_color:?}"
    );
    for c in [
        Cairn::bare(&env).arg("-r").arg(env.path("b")).arg("init"),
        Cairn::bare(&env)
            .arg("-r")
            .arg(env.path("b"))
            .arg("frobnicate"),
        Cairn::bare(&env)
            .arg("-r")
            .arg(env.path("none"))
            .arg("snapshots"),
    ] {
        let text = run_on_terminal(c.env("NO_COLOR", "1"));
        assert!(!text.is_empty());
        assert!(
            !text.contains('\u{1b}'),
            "escape codes with NO_COLOR: {text:?}"
        );
    }
}

/// Run `c` with its standard error on a pseudo-terminal; what it wrote there.
fn run_on_terminal(c: Cairn) -> String {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into the integers it is given.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    for fd in [master, slave] {
        // SAFETY: fcntl on descriptors we own; only the child's fd 2 should hold the terminal.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (mut master, slave) = unsafe {
        (
            fs::File::from_raw_fd(master),
            std::process::Stdio::from(fs::File::from_raw_fd(slave)),
        )
    };
    let mut cmd = c.command();
    cmd.stderr(slave).stdout(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // Drop our copy of the terminal's other end (held by `cmd`), so reading ends with the child.
    drop(cmd);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // Linux reports the end of a pseudo-terminal whose other side closed as EIO.
            Err(_) => break,
        }
    }
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(101), "panicked");
    String::from_utf8_lossy(&out).into_owned()
}

/// The local catalog of the environment's repository.
fn catalog_file(env: &Env) -> PathBuf {
    let found: Vec<PathBuf> = files_below(&env.cache)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "catalog.sqlite"))
        .collect();
    assert_eq!(found.len(), 1, "one catalog in {}", env.cache.display());
    found[0].clone()
}

/// The catalog is a cache: when it says a blob is somewhere it is not (wrong offset, pack or
/// length, rows missing), `restore` and `dump` notice, rebuild the catalog's index from the
/// repository once, read again and succeed, with a warning. Only a blob that also fails after
/// the rebuild is reported as damaged (see `corrupt_pack_is_reported_by_file_name`).
#[test]
fn a_damaged_catalog_is_rebuilt_and_the_read_retried() {
    let (env, src) = repo_with_snapshot();
    let big = fs::read(src.join("big.bin")).unwrap();
    let big_path = format!("{}/big.bin", src.display());
    let damages = [
        (
            "data offsets",
            "UPDATE blobs SET offset = offset + 1 WHERE kind = 0",
        ),
        (
            "data packs",
            "UPDATE blobs SET pack = randomblob(32) WHERE kind = 0",
        ),
        (
            "data lengths",
            "UPDATE blobs SET length = length - 1 WHERE kind = 0",
        ),
        (
            "data plaintext lengths",
            "UPDATE blobs SET raw_len = raw_len + 1 WHERE kind = 0",
        ),
        ("data rows", "DELETE FROM blobs WHERE kind = 0"),
        ("every row", "DELETE FROM blobs"),
        (
            "tree plaintext lengths",
            "UPDATE blobs SET raw_len = raw_len + 1",
        ),
    ];
    let damage = |sql: &str| {
        let db = rusqlite::Connection::open(catalog_file(&env)).unwrap();
        db.execute_batch(sql).unwrap();
    };
    let mut failures = Vec::new();
    for (what, sql) in damages {
        damage(sql);
        let t = env.path(&format!("restore {what}"));
        let out = env
            .cmd()
            .args(["restore", "latest", "--target"])
            .arg(&t)
            .run();
        let restored = t.join(src.strip_prefix("/").unwrap());
        let same = out.code == 0
            && fs::read(restored.join("big.bin")).ok().as_deref() == Some(&big[..])
            && fs::read(restored.join("small.txt")).ok().as_deref() == Some(b"small file\n");
        if !same {
            failures.push(format!("restore with damaged {what}: {out}"));
        } else if out.stderr.matches("rebuil").count() != 1 {
            failures.push(format!(
                "restore with damaged {what}: not one warning: {out}"
            ));
        }
        damage(sql);
        let out = env.run(["dump", "latest", &big_path]);
        if out.code != 0 || out.stdout != big {
            failures.push(format!(
                "dump with damaged {what}: exit {}, {} bytes: {}",
                out.code,
                out.stdout.len(),
                out.stderr
            ));
        } else if !out.stderr.contains("rebuil") {
            failures.push(format!("dump with damaged {what}: no warning: {out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // And the catalog is whole again.
    env.run(["check"]).ok();
}
