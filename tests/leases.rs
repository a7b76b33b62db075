//! Leases under concurrency and failure (issue 18, items 1 and 2): a backup from another host
//! racing a prune never commits a snapshot whose data the prune deleted; a backup that fails
//! (its command fails, the disk fills up, the S3 server goes away, Ctrl-C) leaves no lease
//! behind; restore and check hold a shared lease, so a prune cannot pull packs from under them;
//! a lease of an unknown version does not block for ever.
//!
//! "Another host" is another cache directory (its own catalog) and, where a dead holder's pid
//! must not help, another pid namespace (`unshare -p`): there a lease is only gone when its
//! holder deleted it or it expired.
//!
//! tests/s3_leases.rs runs this file again with the repository on a real S3 server.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn leases(env: &Env) -> Vec<PathBuf> {
    files_below(&env.repo.join("locks"))
}

/// Wait until a lease object exists; false if `child` exited first.
fn wait_for_lease(env: &Env, child: &mut Child) -> bool {
    let start = Instant::now();
    while leases(env).is_empty() {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no lease appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// A prune run the way another host's container would: its own cache, its own pid namespace
/// (so our dead pids mean nothing to it), and no waiting for leases.
fn prune_from_elsewhere(env: &Env) -> Out {
    let c = env
        .cmd()
        .env("CAIRN_CACHE_DIR", env.path("cache-elsewhere"))
        .args(["--lease-wait", "0s", "prune", "--grace", "0s"]);
    if is_root() {
        c.wrapped(["unshare", "-p", "-f", "--mount-proc"]).run()
    } else {
        c.run()
    }
}

fn assert_no_lease_left(env: &Env, what: &str) {
    assert_eq!(leases(env), Vec::<PathBuf>::new(), "{what} left its lease");
    let p = prune_from_elsewhere(env);
    assert_eq!(p.code, 0, "a prune from elsewhere after {what}: {p}");
}

/// New contents for a round: a few incompressible files and some small ones.
fn fill(src: &Path, round: u64) {
    if src.exists() {
        std::fs::remove_dir_all(src).unwrap();
    }
    for i in 0..3 {
        write(
            &src.join(format!("big{i}.bin")),
            &random_bytes(round * 10 + i, 2 << 20),
        );
    }
    for i in 0..40u64 {
        write(
            &src.join(format!("small/{}/f{i}.txt", i % 4)),
            format!("round {round} file {i}\n")
                .repeat(i as usize + 1)
                .as_bytes(),
        );
    }
}

fn snapshot_id(v: &serde_json::Value) -> String {
    v["snapshot_id"]
        .as_str()
        .expect("a snapshot id")
        .to_string()
}

/// Host B (its own cache) backs up; host A forgets that snapshot and prunes with no grace, which
/// deletes exactly the blobs B's catalog still lists; B backs up the same data again while the
/// prune runs, waiting for its lease. B must not deduplicate against what the prune deleted.
#[test]
fn backup_racing_another_hosts_prune_commits_only_stored_data() {
    let env = Env::with_repo();
    let src = env.path("src");
    let cache_b = env.path("cache-b");
    let rounds = 20;
    let mut damaged = Vec::new();
    let mut previous: Option<String> = None;
    for round in 0..rounds {
        fill(&src, round);
        let m = Manifest::capture(&src);
        let host_b = || env.cmd().env("CAIRN_CACHE_DIR", &cache_b);
        let first = snapshot_id(
            &host_b()
                .args(["backup", "--json"])
                .arg(&src)
                .run()
                .ok()
                .json(),
        );
        let mut forget = vec!["forget".to_string(), first];
        forget.extend(previous.take());
        env.run(&forget).ok();

        let mut prune = env
            .cmd()
            .args(["--lease-wait", "120s", "prune", "--grace", "0s"])
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(
            wait_for_lease(&env, &mut prune),
            "round {round}: the prune finished before it was seen holding its lease"
        );
        let backup = host_b()
            .args(["--lease-wait", "120s", "backup", "--json"])
            .arg(&src)
            .command()
            .spawn()
            .unwrap();
        // The overlap: the backup started while the prune still ran.
        let overlapped = prune.try_wait().unwrap().is_none();
        let b = backup.wait_with_output().unwrap();
        let p = prune.wait_with_output().unwrap();
        assert!(
            overlapped,
            "round {round}: the prune had ended when the backup started"
        );
        assert!(p.status.success(), "round {round}: prune: {p:?}");
        assert!(b.status.success(), "round {round}: backup: {b:?}");
        let id = snapshot_id(&serde_json::from_slice(&b.stdout).unwrap());
        let check = env.run(["check", "--read-data"]);
        if check.code != 0 {
            damaged.push(format!("round {round}: {check}"));
        } else {
            let t = env.path(&format!("r{round}"));
            env.restore(&format!("{}:{}", &id[..8], src.display()), &t, &[]);
            assert_same_tree(&m, &t, Compare::default());
            std::fs::remove_dir_all(&t).unwrap();
        }
        previous = Some(id);
    }
    assert!(
        damaged.is_empty(),
        "{} of {rounds} racing backups committed damaged snapshots:\n{}",
        damaged.len(),
        damaged.join("\n")
    );
}

#[test]
fn a_backup_whose_command_fails_leaves_no_lease() {
    let env = Env::with_repo();
    env.run([
        "backup",
        "--stdin-from-command",
        "--stdin-name",
        "dump.sql",
        "--",
        "sh",
        "-c",
        "head -c 3000000 /dev/urandom; exit 3",
    ])
    .code(1)
    .stderr_has("failed");
    assert_no_lease_left(&env, "a failed --stdin-from-command backup");
}

#[test]
fn an_interrupted_backup_leaves_no_lease() {
    let env = Env::with_repo();
    let mut child = env
        .cmd()
        .args([
            "backup",
            "--stdin-from-command",
            "--stdin-name",
            "slow",
            "--",
            "sh",
            "-c",
            "sleep 30; echo done",
        ])
        .command()
        .spawn()
        .unwrap();
    assert!(wait_for_lease(&env, &mut child), "the backup ended early");
    // SAFETY: kill only sends a signal to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert_no_lease_left(&env, "an interrupted backup");
}

/// The local disk fills up during the backup (a small tmpfs holds the repository).
#[test]
fn a_backup_on_a_full_disk_leaves_no_lease() {
    if suite_on_s3() {
        return; // a local file system's own failure; the S3 variant is below
    }
    if !is_root() {
        eprintln!("\n*** SKIPPED: mounting a small tmpfs needs root ***\n");
        return;
    }
    let mut env = Env::new_local();
    let mnt = env.path("small-fs");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount a tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    env.repo = mnt.join("repo");
    env.run(["init"]).ok();
    let src = env.path("src");
    for i in 0..6 {
        write(&src.join(format!("f{i}")), &random_bytes(i, 2 << 20));
    }
    env.cmd()
        .arg("backup")
        .arg(&src)
        .run()
        .code(1)
        .stderr_has("no space");
    assert_no_lease_left(&env, "a backup on a full disk");
}

/// The S3 server goes away during the backup and comes back while cairn is still trying to
/// delete its lease.
#[test]
fn a_backup_whose_s3_server_stops_leaves_no_lease() {
    if !suite_on_s3() {
        return;
    }
    let mut env = Env::with_repo();
    if env.s3.is_none() {
        return; // SKIPPED (said by common::Env)
    }
    let src = env.path("src");
    for i in 0..12 {
        write(&src.join(format!("f{i}")), &random_bytes(i, 4 << 20));
    }
    let mut child = env
        .cmd()
        .args(["--s3-retries", "1", "--s3-timeout", "2s", "backup"])
        .arg(&src)
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for_lease(&env, &mut child), "the backup ended early");
    let server = &mut env.s3.as_mut().unwrap().server;
    server.kill();
    // The backup fails; cairn then keeps trying to delete its lease and says so.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        said.push(line.clone());
        if line.contains("could not delete the lease") {
            server.restart();
            break;
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{}", said.join("\n"));
    assert!(
        said.iter().any(|l| l.contains("trying again")),
        "{}",
        said.join("\n")
    );
    assert_no_lease_left(&env, "a backup whose S3 server stopped");
}

/// Two snapshots sharing packs; forgetting one leaves packs that a prune repacks.
fn repackable(env: &Env) -> (PathBuf, Manifest, String) {
    let a = env.path("a");
    let b = env.path("b");
    for i in 0..8u64 {
        // Small files so that both snapshots' blobs share packs.
        for j in 0..30u64 {
            let data = random_bytes(i * 100 + j, 60 << 10);
            write(&a.join(format!("d{i}/f{j}")), &data);
            if j % 2 == 0 {
                write(&b.join(format!("d{i}/f{j}")), &data);
            } else {
                write(
                    &b.join(format!("d{i}/g{j}")),
                    &random_bytes(9000 + i * 100 + j, 60 << 10),
                );
            }
        }
    }
    env.backup(&[&a, &b], &[]);
    let m = Manifest::capture(&b);
    std::fs::remove_dir_all(&a).unwrap();
    let idb = snapshot_id(&env.backup(&[&b], &[]));
    (b, m, idb)
}

/// A restore and a `check --read-data` that start before a prune holds the shared lease, so
/// the prune waits for them and they read every pack they planned to.
#[test]
fn restore_and_check_hold_a_shared_lease_against_prune() {
    let env = Env::with_repo();
    let (b, m, idb) = repackable(&env);
    let first = env.snapshots()[0]["id"].as_str().unwrap().to_string();
    env.run(["forget", &first]).ok();
    for what in ["restore", "check"] {
        let target = env.path(&format!("t-{what}"));
        let mut reader = match what {
            "restore" => env
                .cmd()
                .args([
                    "restore",
                    &format!("{}:{}", &idb[..8], b.display()),
                    "--target",
                ])
                .arg(&target),
            _ => env.cmd().args(["check", "--read-data"]),
        }
        .command()
        .spawn()
        .unwrap();
        assert!(wait_for_lease(&env, &mut reader), "{what} ended early");
        let prune = env
            .cmd()
            .args(["--lease-wait", "120s", "prune", "--grace", "0s", "--json"])
            .run();
        let out = reader.wait_with_output().unwrap();
        assert!(out.status.success(), "{what} beside a prune: {out:?}");
        let p = prune.ok().json();
        if what == "restore" {
            assert_same_tree(&m, &target, Compare::default());
            assert!(p["packs_deleted"].as_u64().unwrap() > 0, "{p}");
        }
    }
    env.run(["check", "--read-data"]).ok();
}

/// A lease written by a newer cairn (unknown version) is obeyed while its object is fresh, is
/// ignored once it is older than any lease lifetime, and `check` names it either way.
#[test]
fn a_lease_of_an_unknown_version_does_not_block_for_ever() {
    if suite_on_s3() {
        return; // needs control of the object's modification time
    }
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("f"), b"data");
    let lease = env.repo.join("locks").join("f".repeat(64));
    std::fs::create_dir_all(lease.parent().unwrap()).unwrap();
    write(&lease, b"CRNL\x7fa lease from the future");
    env.run(["--lease-wait", "0s", "prune"])
        .code(11)
        .stderr_has("newer");
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let f = std::fs::File::options().write(true).open(&lease).unwrap();
    f.set_modified(hour_ago).unwrap();
    drop(f);
    env.cmd()
        .args(["--lease-wait", "0s", "backup"])
        .arg(&src)
        .run()
        .ok();
    env.run(["--lease-wait", "0s", "prune"]).ok();
    let v = env.run(["check", "--json"]).ok().json();
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains(&"f".repeat(64)), "{v}");
}
