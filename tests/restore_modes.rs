//! Restore into a target that already has things (issue 16): `--overwrite always | if-changed
//! | if-newer | never`, `--delete`, a restore killed with SIGKILL and run again (only what is
//! missing or wrong is written), and a symlink already in the target never written through.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// The tree at `t` is the source's (as captured before anything read it).
fn assert_trees_equal(src: &Manifest, t: &Path) {
    assert_same_tree(src, t, Compare::default());
}

/// A source of a few files, a link and a subdirectory; backed up. Returns its manifest.
fn setup() -> (Env, Manifest, String) {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    write(&src.join("d/b.bin"), &random_bytes(1, 300_000));
    write(&src.join("d/c.txt"), b"gamma\n");
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    let manifest = Manifest::capture(&src);
    env.backup(&[&src], &[]);
    let spec = format!("latest:{}", src.display());
    (env, manifest, spec)
}

fn mtime(p: &Path) -> (i64, i64) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.mtime(), m.mtime_nsec())
}

fn set_mtime(p: &Path, secs: i64) {
    filetime::set_symlink_file_times(
        p,
        filetime::FileTime::from_unix_time(secs, 0),
        filetime::FileTime::from_unix_time(secs, 0),
    )
    .unwrap();
}

#[test]
fn if_changed_leaves_what_matches_and_replaces_what_differs() {
    let (env, manifest, spec) = setup();
    let t = env.path("t");
    let r = env.restore(&spec, &t, &[]);
    assert_eq!(
        (r["files"].as_u64(), r["unchanged"].as_u64()),
        (Some(3), Some(0)),
        "{r}"
    );
    // Again: nothing is written.
    let ino = std::fs::metadata(t.join("d/b.bin")).unwrap().ino();
    let r = env.restore(&spec, &t, &[]);
    assert_eq!(r["files"], 0, "{r}");
    assert_eq!(r["bytes"], 0, "{r}");
    assert_eq!(r["unchanged"], 4, "{r}"); // three files and the link
    assert_eq!(std::fs::metadata(t.join("d/b.bin")).unwrap().ino(), ino);
    // Same size, other contents; same contents, other mtime and mode; another link target.
    let mut b = std::fs::read(t.join("d/b.bin")).unwrap();
    b[1000] ^= 1;
    write(&t.join("d/b.bin"), &b);
    set_mtime(&t.join("a.txt"), 1_000_000);
    std::fs::set_permissions(
        t.join("a.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::remove_file(t.join("link")).unwrap();
    std::os::unix::fs::symlink("elsewhere", t.join("link")).unwrap();
    let r = env.restore(&spec, &t, &[]);
    assert_eq!(r["files"], 1, "{r}"); // b.bin
    assert_eq!(r["bytes"], 300_000, "{r}");
    assert_eq!(r["unchanged"], 2, "{r}"); // a.txt (metadata fixed) and c.txt
    assert_eq!(r["others"], 1, "{r}"); // the link, made again
    assert_trees_equal(&manifest, &t);
}

#[test]
fn always_never_and_if_newer() {
    let (env, manifest, spec) = setup();
    let t = env.path("t");
    env.restore(&spec, &t, &[]);
    // always: everything is written again.
    let r = env.restore(&spec, &t, &["--overwrite", "always"]);
    assert_eq!(r["files"], 3, "{r}");
    assert_eq!(r["bytes"], 300_000 + 12, "{r}");
    // never: what is there stays, whatever it is; what is missing is restored.
    write(&t.join("a.txt"), b"mine\n");
    std::fs::remove_file(t.join("d/c.txt")).unwrap();
    std::fs::remove_dir_all(t.join("d")).unwrap();
    write(&t.join("d"), b"a file where the snapshot has a directory\n");
    let r = env.restore(&spec, &t, &["--overwrite", "never"]);
    assert_eq!(r["files"], 0, "{r}");
    // a.txt, the link, the file d and the two files below it.
    assert_eq!(r["skipped"], 5, "{r}");
    assert_eq!(std::fs::read(t.join("a.txt")).unwrap(), b"mine\n");
    assert!(std::fs::metadata(t.join("d")).unwrap().is_file());
    std::fs::remove_file(t.join("d")).unwrap();
    let r = env.restore(&spec, &t, &["--overwrite", "never"]);
    assert_eq!(
        (r["files"].as_u64(), r["skipped"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    // if-newer: replaced only when the snapshot's is newer.
    let snap_mtime = mtime(&t.join("d/c.txt")).0; // as restored: the snapshot's
    set_mtime(&t.join("a.txt"), snap_mtime + 3600);
    let r = env.restore(&spec, &t, &["--overwrite", "if-newer"]);
    assert_eq!(r["files"], 0, "{r}");
    assert_eq!(std::fs::read(t.join("a.txt")).unwrap(), b"mine\n");
    set_mtime(&t.join("a.txt"), snap_mtime - 3600);
    let r = env.restore(&spec, &t, &["--overwrite", "if-newer"]);
    assert_eq!(r["files"], 1, "{r}");
    assert_trees_equal(&manifest, &t);
    // A wrong value is refused, naming the choices.
    env.cmd()
        .args(["restore", &spec, "--target"])
        .arg(&t)
        .args(["--overwrite", "sometimes"])
        .run()
        .code(1)
        .stderr_has("if-changed");
}

#[test]
fn delete_removes_what_the_snapshot_does_not_have() {
    let (env, manifest, spec) = setup();
    let t = env.path("t");
    env.restore(&spec, &t, &[]);
    write(&t.join("extra.txt"), b"x");
    write(&t.join("d/old/deep/f"), b"y");
    write(&t.join("keep.log"), b"excluded: kept");
    let outside = env.path("outside");
    write(&outside.join("precious"), b"not below the target");
    std::os::unix::fs::symlink(&outside, t.join("d/to-outside")).unwrap();
    // Without --delete nothing goes.
    let r = env.restore(&spec, &t, &[]);
    assert_eq!(r["deleted"], 0, "{r}");
    assert!(t.join("extra.txt").exists());
    let r = env.restore(&spec, &t, &["--delete", "--exclude", "*.log"]);
    // extra.txt, old, deep, f and the link (itself).
    assert_eq!(r["deleted"], 5, "{r}");
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
    assert!(t.join("keep.log").exists());
    assert_eq!(
        std::fs::read(outside.join("precious")).unwrap(),
        b"not below the target"
    );
    std::fs::remove_file(t.join("keep.log")).unwrap();
    assert_trees_equal(&manifest, &t);
}

#[test]
fn a_restore_killed_and_run_again_writes_only_what_is_missing() {
    let env = Env::with_repo();
    let src = env.path("src");
    let n = 300;
    for i in 0..n {
        write(
            &src.join(format!("f{i:03}")),
            &random_bytes(i as u64, 150_000),
        );
    }
    let manifest = Manifest::capture(&src);
    env.backup(&[&src], &[]);
    let spec = format!("latest:{}", src.display());
    let t = env.path("t");
    // Kill it once some files are there, a few times until one is caught in the middle.
    let mut caught = false;
    for round in 0..10 {
        let _ = std::fs::remove_dir_all(&t);
        let mut child = env
            .cmd()
            .args(["restore", &spec, "--target"])
            .arg(&t)
            .command()
            .spawn()
            .unwrap();
        let start = Instant::now();
        let want = 20 + round * 15;
        while start.elapsed() < Duration::from_secs(60) {
            let have = std::fs::read_dir(&t).map(|d| d.count()).unwrap_or(0);
            if have >= want || child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        if status.code().is_none() {
            caught = true;
            break;
        }
    }
    assert!(
        caught,
        "the restore always finished before it could be killed"
    );
    // What is already right in the target (size and contents).
    let right = (0..n)
        .filter(|i| {
            let name = format!("f{i:03}");
            std::fs::read(t.join(&name)).ok() == Some(random_bytes(*i as u64, 150_000))
        })
        .count() as u64;
    assert!(right < n as u64, "the kill came after the last file");
    let r = env.restore(&spec, &t, &[]);
    assert_eq!(r["files"].as_u64(), Some(n as u64 - right), "{r}");
    assert_eq!(r["unchanged"].as_u64(), Some(right), "{r}");
    assert_eq!(
        r["bytes"].as_u64(),
        Some((n as u64 - right) * 150_000),
        "{r}"
    );
    assert_trees_equal(&manifest, &t);
}

/// The bar a terminal sees: the restore's total from its plan and an ETA; off a terminal, no
/// bar at all. The terminal is a pty made by Python's `pty.spawn`.
#[test]
fn a_restore_on_a_terminal_shows_its_total_and_an_eta() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("big.bin"), &random_bytes(3, 48 << 20));
    env.backup(&[&src], &[]);
    let spec = format!("latest:{}", src.display());
    let t = env.path("t");
    let out = env
        .cmd()
        .wrapped([
            "python3",
            "-c",
            "import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)",
        ])
        .args(["restore", &spec, "--target"])
        .arg(&t)
        .run()
        .ok();
    // The pty's output (the bar goes to standard error, which is the pty too).
    let seen = out.stdout_str();
    let frames: Vec<&str> = seen.split('\r').filter(|f| f.contains("ETA")).collect();
    assert!(
        !frames.is_empty(),
        "no progress bar on the terminal: {seen:?}"
    );
    assert!(
        frames.iter().all(|f| f.contains("/48.00 MiB")),
        "the bar's total is the plan's 48 MiB: {frames:?}"
    );
    assert!(seen.contains("restored snapshot"), "{seen:?}");
    assert_eq!(std::fs::read(t.join("big.bin")).unwrap().len(), 48 << 20);
    // Off a terminal: no bar.
    let t2 = env.path("t2");
    let out = env
        .cmd()
        .args(["restore", &spec, "--target"])
        .arg(&t2)
        .run()
        .ok();
    assert!(!out.stderr.contains("ETA"), "{out}");
}
