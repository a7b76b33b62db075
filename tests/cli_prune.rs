//! `cairn prune` and `cairn repair index`: space comes back, nothing a snapshot needs is ever
//! deleted, obsolete packs are condemned before they are deleted, condemned packs that are
//! needed again are kept, and the index can be rebuilt from the packs alone.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::*;

const MIB: u64 = 1 << 20;

/// Two snapshots: `a` holds 32 MiB that only it has plus files shared with `b`.
struct Two {
    env: Env,
    a: PathBuf,
    b: PathBuf,
    /// The sources as they were backed up (captured before the backups touched atimes).
    ma: Manifest,
    mb: Manifest,
    snap_a: String,
}

fn two_snapshots() -> Two {
    let env = Env::with_repo();
    let a = env.path("a");
    let b = env.path("b");
    write(&a.join("unique.bin"), &random_bytes(1, 32 * MIB as usize));
    for i in 0..10 {
        let data = random_bytes(100 + i, 300_000);
        write(&a.join(format!("shared/{i}.bin")), &data);
        write(&b.join(format!("shared/{i}.bin")), &data);
    }
    write(&b.join("own.txt"), b"b's own file\n");
    let ma = Manifest::capture(&a);
    let mb = Manifest::capture(&b);
    let snap_a = env.backup(&[&a], &[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.backup(&[&b], &[]);
    Two {
        env,
        a,
        b,
        ma,
        mb,
        snap_a,
    }
}

/// `cairn forget ID`; returns a copy of the forgotten snapshot object.
fn forget(env: &Env, id: &str) -> PathBuf {
    let p = env.repo.join("snapshots").join(id);
    let keep = env.path(&format!("forgotten-{id}"));
    fs::copy(&p, &keep).unwrap();
    env.run(["forget", id]).ok();
    assert!(!p.exists());
    keep
}

fn prune(env: &Env, extra: &[&str]) -> Value {
    env.cmd()
        .args(["prune", "--json"])
        .args(extra)
        .run()
        .ok()
        .json()
}

fn check_read_data(env: &Env) {
    let out = env.run(["check", "--read-data", "--json"]);
    assert_eq!(out.code, 0, "check fails: {out}");
}

fn assert_restores(env: &Env, snap: &str, src: &Path, m: &Manifest, name: &str) {
    let t = env.path(name);
    let r = env.restore(&format!("{snap}:{}", src.display()), &t, &[]);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_same_tree(m, &t, Compare::default());
}

#[test]
fn prune_frees_forgotten_data_in_two_phases() {
    let t = two_snapshots();
    let env = &t.env;
    forget(env, &t.snap_a);
    let before = env.repo_bytes();

    // A dry run changes nothing and predicts the real run.
    let listing = env.repo_listing();
    let dry = prune(env, &["--dry-run"]);
    assert_eq!(env.repo_listing(), listing);
    assert_eq!(dry["dry_run"], true);

    // First phase: the forgotten data is condemned, nothing is deleted yet.
    let r = prune(env, &[]);
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert!(r["bytes_condemned"].as_u64().unwrap() >= 30 * MIB, "{r}");
    assert_eq!(r["packs_condemned"], dry["packs_condemned"], "{r} vs {dry}");
    assert_eq!(r["packs_repacked"], dry["packs_repacked"], "{r} vs {dry}");
    assert_eq!(files_below(&env.repo.join("condemned")).len(), 1);
    check_read_data(env);
    assert_restores(env, "latest", &t.b, &t.mb, "r1");

    // Within the grace period a second prune deletes nothing.
    let r = prune(env, &[]);
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert!(r["bytes_waiting"].as_u64().unwrap() >= 30 * MIB, "{r}");

    // After it (here: a grace of zero), the space comes back.
    let r = prune(env, &["--grace", "0s"]);
    assert!(r["bytes_deleted"].as_u64().unwrap() >= 30 * MIB, "{r}");
    let after = env.repo_bytes();
    assert!(
        before - after >= 30 * MIB,
        "freed only {} bytes",
        before - after
    );
    assert!(files_below(&env.repo.join("condemned")).is_empty());
    check_read_data(env);
    assert_restores(env, "latest", &t.b, &t.mb, "r2");

    // Nothing left to do.
    let r = prune(env, &["--grace", "0s"]);
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert_eq!(r["packs_repacked"], 0, "{r}");
    assert!(
        env.run(["check", "--json"]).ok().json()["warnings"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// `forget --prune` with a grace of zero frees the space in one command.
#[test]
fn forget_with_prune() {
    let t = two_snapshots();
    let env = &t.env;
    let before = env.repo_bytes();
    let v = env
        .run(["forget", "--json", "--prune", "--grace", "0s", &t.snap_a])
        .ok()
        .json();
    assert!(
        v["prune"]["bytes_deleted"].as_u64().unwrap() >= 30 * MIB,
        "{v}"
    );
    assert!(before - env.repo_bytes() >= 30 * MIB);
    check_read_data(env);
    assert_restores(env, "latest", &t.b, &t.mb, "rb");
}

/// A snapshot that comes to need a condemned pack (a backup that deduplicated against it
/// before the prune and committed after, say) keeps that pack alive.
#[test]
fn condemned_packs_needed_again_are_kept() {
    let t = two_snapshots();
    let env = &t.env;
    let saved = forget(env, &t.snap_a);
    let r = prune(env, &[]);
    assert!(r["packs_condemned"].as_u64().unwrap() >= 1, "{r}");
    // The snapshot comes back (as a late commit would).
    fs::copy(&saved, env.repo.join("snapshots").join(&t.snap_a)).unwrap();
    let r = prune(env, &["--grace", "0s"]);
    assert!(r["packs_rescued"].as_u64().unwrap() >= 1, "{r}");
    check_read_data(env);
    assert_restores(env, &t.snap_a[..8], &t.a, &t.ma, "ra");
    assert_restores(env, "latest", &t.b, &t.mb, "rb");
}

/// Prune refuses to work from a damaged index or a damaged snapshot (it could not tell what
/// they need) and deletes nothing.
#[test]
fn prune_refuses_damaged_metadata() {
    let t = two_snapshots();
    let env = &t.env;
    forget(env, &t.snap_a);
    let listing = env.repo_listing();
    let idx = files_below(&env.repo.join("index"))[0].clone();
    let original = fs::read(&idx).unwrap();
    flip_bytes(&idx, original.len() as u64 / 2, 1);
    env.run(["prune", "--grace", "0s"])
        .code(1)
        .stderr_has("repair index");
    fs::write(&idx, &original).unwrap();
    // A fresh cache, so the damaged snapshot is read from the repository.
    fs::remove_dir_all(&env.cache).unwrap();
    let snap = files_below(&env.repo.join("snapshots"))[0].clone();
    let original = fs::read(&snap).unwrap();
    flip_bytes(&snap, original.len() as u64 - 2, 1);
    env.run(["prune", "--grace", "0s"])
        .code(1)
        .stderr_has("unreadable");
    fs::write(&snap, &original).unwrap();
    assert_eq!(env.repo_listing(), listing);
}

/// A snapshot that needs a blob the index no longer has (its pack lost, the index rebuilt from
/// what is left) stops prune before it deletes anything, naming the snapshot and the blob.
#[test]
fn prune_refuses_when_a_snapshot_needs_an_unindexed_blob() {
    let t = two_snapshots();
    let env = &t.env;
    // The largest pack holds a part of a's 32 MiB file (packs are 16 MiB; trees and b's
    // 3 MB of shared data cannot fill one that large).
    let mut packs = files_below(&env.repo.join("data"));
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let lost = packs.last().unwrap().clone();
    let keep = env.path("lost-pack");
    fs::rename(&lost, &keep).unwrap();
    env.run(["repair", "index"]).ok();
    let listing = env.repo_listing();
    env.run(["prune", "--grace", "0s"])
        .code(1)
        .stderr_has("not in the index")
        .stderr_has(&t.snap_a);
    assert_eq!(env.repo_listing(), listing, "prune changed the repository");
    fs::rename(&keep, &lost).unwrap();
    env.run(["repair", "index"]).ok();
    check_read_data(env);
    assert_restores(env, &t.snap_a[..8], &t.a, &t.ma, "ra");
}

/// Deleting every index object and the cache, then `repair index`, gives a repository that
/// passes `check --read-data` and restores identically.
#[test]
fn repair_index_rebuilds_from_packs() {
    let t = two_snapshots();
    let env = &t.env;
    for p in files_below(&env.repo.join("index")) {
        fs::remove_file(p).unwrap();
    }
    fs::remove_dir_all(&env.cache).unwrap();
    env.run(["check"]).code(1);
    let r = env.run(["repair", "index", "--json"]).ok().json();
    assert!(r["packs"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(r["unreadable_packs"], serde_json::json!([]), "{r}");
    check_read_data(env);
    assert_restores(env, &t.snap_a[..8], &t.a, &t.ma, "ra");
    assert_restores(env, "latest", &t.b, &t.mb, "rb");
    // Repeating it changes nothing that matters.
    env.run(["repair", "index"]).ok();
    check_read_data(env);
}

/// A backup holding its shared lease keeps prune out (exit 11, naming the holder).
#[test]
fn prune_waits_for_running_backups() {
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
            "sleep 4; echo done",
        ])
        .command()
        .spawn()
        .unwrap();
    // Wait until the backup's lease is there.
    let locks = env.repo.join("locks");
    let start = std::time::Instant::now();
    while files_below(&locks).is_empty() {
        assert!(start.elapsed().as_secs() < 20, "no lease appeared");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    env.run(["prune"]).code(11).stderr_has("backup");
    assert!(child.wait().unwrap().success());
    env.run(["prune"]).ok();
    env.run(["check", "--read-data"]).ok();
}
