//! `cairn copy` (issue 3, item 6): snapshots copied to another repository restore identical
//! from it, a second copy adds nothing, a copy of a snapshot that shares data with one copied
//! before adds only what changed, and failures name what failed. The targets are local; the
//! source is on S3 too when this suite runs as `s3_cli_copy`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::*;

/// The targets' password, unlike the sources'.
const OTHER: &str = "a different password for the target";

/// A new local target repository: encrypted with [`OTHER`], or unencrypted.
fn target(encrypted: bool) -> Env {
    let t = Env::new_local();
    let c = on(&t).arg("init");
    if encrypted {
        c.run().ok();
    } else {
        c.args(["--encryption", "none"]).run().ok();
    }
    t
}

/// A command on a target.
fn on(t: &Env) -> Cairn {
    t.cmd().env("CAIRN_PASSWORD", OTHER)
}

/// `copy --json --to T --to-password-file F EXTRA...` from `src`.
fn copy(src: &Env, t: &Env, extra: &[&str]) -> Out {
    let pwf = src.path("target-password");
    write(&pwf, format!("{OTHER}\n").as_bytes());
    src.cmd()
        .args(["copy", "--json", "--to"])
        .arg(t.repo_arg())
        .arg("--to-password-file")
        .arg(&pwf)
        .args(extra)
        .run()
}

fn data_files(t: &Env) -> Vec<PathBuf> {
    files_below(&t.repo.join("data"))
}

fn target_snapshots(t: &Env) -> Vec<Value> {
    match on(t).args(["snapshots", "--json"]).run().ok().json() {
        Value::Array(a) => a,
        v => panic!("not an array: {v}"),
    }
}

fn ids(v: &Value, list: &str, field: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {v}"))
        .iter()
        .map(|e| e[field].as_str().unwrap().to_string())
        .collect()
}

fn check_read_data(t: &Env) {
    let out = on(t).args(["check", "--read-data", "--json"]).run().ok();
    let r = out.json();
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
}

fn restore_from(t: &Env, spec: &str, dir: &Path) {
    let r = on(t)
        .args(["restore", "--json", spec, "--target"])
        .arg(dir)
        .run()
        .ok()
        .json();
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
}

/// Two snapshots of the rich tree (hard links, symlinks, xattrs, a sparse file, large files of
/// several chunks) copied to a target with another password restore identical from it, keep
/// their metadata and name their originals; the target passes `check --read-data` and holds no
/// plaintext; a second copy skips both and adds no pack.
#[test]
fn copied_snapshots_restore_identical_and_a_second_copy_adds_nothing() {
    let env = Env::with_repo();
    let src = env.path("src");
    let rich = build_rich_tree(&src);
    let m1 = Manifest::capture(&src);
    let s1 = env.backup(&[&src], &["--tag", "first"]);
    write(&src.join("added/later.bin"), &random_bytes(3, 2 << 20));
    let m2 = Manifest::capture(&src);
    let s2 = env.backup(&[&src], &[]);
    let (s1, s2) = (
        s1["snapshot_id"].as_str().unwrap().to_string(),
        s2["snapshot_id"].as_str().unwrap().to_string(),
    );

    let t = target(true);
    let r = copy(&env, &t, &[]).ok().json();
    assert_eq!(ids(&r, "copied", "source"), [s1.clone(), s2.clone()], "{r}");
    assert_eq!(ids(&r, "skipped", "source"), Vec::<String>::new(), "{r}");
    let copies = ids(&r, "copied", "target");
    assert!(r["packs_added"].as_u64().unwrap() > 0, "{r}");
    // The big file is stored once (its twin deduplicated), like in the source.
    let added = r["new_data_bytes"].as_u64().unwrap();
    assert!(added < BIG_LEN as u64 + (3 << 20), "{r}");

    // Metadata: time, host, paths, tags and the summary kept; the parent mapped; the origin
    // named.
    let sources = env.snapshots();
    let targets = target_snapshots(&t);
    assert_eq!(targets.len(), 2);
    for (i, (s, c)) in sources.iter().zip(&targets).enumerate() {
        assert_eq!(c["id"], copies[i].as_str(), "{c}");
        for f in [
            "time", "host", "username", "paths", "tags", "source", "summary",
        ] {
            assert_eq!(s[f], c[f], "{f} of the copy {c} of {s}");
        }
        assert_eq!(c["meta"]["copied_from"], s["id"], "{c}");
        assert_ne!(c["tree"], s["tree"], "ids are keyed per repository");
    }
    assert_eq!(targets[0]["tags"], serde_json::json!(["first"]));
    assert_eq!(targets[0]["parent"], Value::Null);
    assert_eq!(targets[1]["parent"], targets[0]["id"]);

    for (id, m, name) in [(&copies[0], &m1, "r1"), (&copies[1], &m2, "r2")] {
        let dir = env.path(name);
        restore_from(&t, &format!("{}:{}", &id[..8], src.display()), &dir);
        assert_same_tree(m, &dir, Compare::default());
    }
    check_read_data(&t);
    assert_eq!(
        files_containing(&t.repo, rich.canary_content),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_containing(&t.repo, rich.canary_name.as_bytes()),
        Vec::<PathBuf>::new()
    );

    // Again: nothing to do.
    let before = data_files(&t);
    let r = copy(&env, &t, &[]).ok().json();
    assert_eq!(
        ids(&r, "skipped", "source"),
        [s1.clone(), s2.clone()],
        "{r}"
    );
    assert_eq!(ids(&r, "skipped", "target"), copies, "{r}");
    assert_eq!(r["copied"], serde_json::json!([]), "{r}");
    assert_eq!(r["packs_added"], 0, "{r}");
    assert_eq!(r["blobs_read"], 0, "{r}");
    assert_eq!(data_files(&t), before);
    assert_eq!(target_snapshots(&t).len(), 2);

    // The human report says so too.
    let pwf = env.path("target-password");
    let out = env
        .cmd()
        .args(["copy", "--to"])
        .arg(t.repo_arg())
        .arg("--to-password-file")
        .arg(&pwf)
        .run()
        .ok()
        .stdout_str();
    assert!(
        out.contains(&format!("skipped snapshot {}", &s1[..8])),
        "{out}"
    );
    assert!(
        out.contains(&format!("already copied as {}", &copies[1][..8])),
        "{out}"
    );
}

/// An unencrypted target (no password asked): the copy restores identical, checks clean, and
/// `--host`/`--tag` choose what is copied; `--dry-run` writes nothing.
#[test]
fn copy_to_an_unencrypted_target_with_filters_and_dry_run() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    write(&src.join("big.bin"), &random_bytes(8, 5 << 20));
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    xattr::set(src.join("a.txt"), "user.k", b"v").unwrap();
    let m = Manifest::capture(&src);
    let tagged = env.backup(&[&src], &["--tag", "keep", "--host", "web1"]);
    env.backup(&[&src], &["--host", "web2"]);
    let tagged = tagged["snapshot_id"].as_str().unwrap().to_string();

    let t = target(false);
    let r = copy(&env, &t, &["--dry-run", "--tag", "keep"]).ok().json();
    assert_eq!(ids(&r, "copied", "source"), [tagged.as_str()], "{r}");
    assert_eq!(r["copied"][0]["target"], Value::Null, "{r}");
    assert_eq!(r["dry_run"], true, "{r}");
    assert!(r["new_data_bytes"].as_u64().unwrap() >= 5 << 20, "{r}");
    assert_eq!(data_files(&t), Vec::<PathBuf>::new());
    assert!(target_snapshots(&t).is_empty());

    let r = copy(&env, &t, &["--host", "web1"]).ok().json();
    assert_eq!(ids(&r, "copied", "source"), [tagged.as_str()], "{r}");
    let snaps = target_snapshots(&t);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["host"], "web1");
    let dir = env.path("restored");
    restore_from(&t, &format!("latest:{}", src.display()), &dir);
    assert_same_tree(&m, &dir, Compare::default());
    check_read_data(&t);
    // Unencrypted, the target holds the plaintext (this is what "none" means).
    assert!(!files_containing(&t.repo, b"alpha\n").is_empty());
}

/// After one snapshot was copied, copying the next one, which changes a little of a large
/// file, adds exactly what the source's backup added and reads from the source only the new
/// chunks (the target's catalog remembers where the others went).
#[test]
fn copying_a_related_snapshot_adds_only_the_changes() {
    let env = Env::with_repo();
    let src = env.path("src");
    let mut big = random_bytes(21, 24 << 20);
    write(&src.join("big.bin"), &big);
    write(&src.join("small.txt"), b"small\n");
    let b1 = env.backup(&[&src], &[]);
    let t = target(true);
    let r1 = copy(&env, &t, &[b1["snapshot_id"].as_str().unwrap()])
        .ok()
        .json();
    let first_added = r1["new_data_bytes"].as_u64().unwrap();
    assert!(first_added >= 24 << 20, "{r1}");

    // 4 KiB changed in the middle, a small file added.
    big[12 << 20..(12 << 20) + 4096].copy_from_slice(&random_bytes(22, 4096));
    write(&src.join("big.bin"), &big);
    write(&src.join("new.txt"), b"new\n");
    let m2 = Manifest::capture(&src);
    let b2 = env.backup(&[&src], &[]);
    let id2 = b2["snapshot_id"].as_str().unwrap().to_string();
    let s = &b2["summary"];

    let before = data_files(&t).len();
    let r2 = copy(&env, &t, &[&id2[..8]]).ok().json();
    eprintln!(
        "second copy: {} bytes added ({} stored, {} packs), {} blobs / {} bytes read; the \
         source's backup added {} bytes",
        r2["new_data_bytes"],
        r2["stored_bytes_added"],
        r2["packs_added"],
        r2["blobs_read"],
        r2["bytes_read"],
        s["new_data_bytes"]
    );
    assert_eq!(ids(&r2, "copied", "source"), [id2.as_str()], "{r2}");
    // The same blobs are new in both repositories: the same counts and bytes.
    assert_eq!(r2["data_blobs_added"], s["data_blobs_added"], "{r2} {b2}");
    assert_eq!(r2["tree_blobs_added"], s["tree_blobs_added"], "{r2} {b2}");
    assert_eq!(r2["new_data_bytes"], s["new_data_bytes"], "{r2} {b2}");
    let added = r2["new_data_bytes"].as_u64().unwrap();
    assert!(
        added < 10 << 20,
        "{added} bytes added for a 4 KiB change: {r2}"
    );
    assert_eq!(r2["blobs_read"], s["data_blobs_added"], "{r2} {b2}");
    assert!(data_files(&t).len() - before <= 2, "{r2}");
    let snaps = target_snapshots(&t);
    assert_eq!(snaps[1]["parent"], snaps[0]["id"]);
    let dir = env.path("restored");
    restore_from(&t, &format!("latest:{}", src.display()), &dir);
    assert_same_tree(&m2, &dir, Compare::default());
    check_read_data(&t);
}

/// An unknown snapshot (exit 1), a wrong target password (12) and a missing target (10) are
/// named; a snapshot whose source data is damaged is not copied (exit 1, naming the snapshot,
/// the file and the blob), while the others are, and the target stays valid.
#[test]
fn failures_name_what_failed() {
    let env = Env::with_repo();
    let t = target(true);
    let a = env.path("a");
    let b = env.path("b");
    write(&a.join("damaged.bin"), &random_bytes(31, 3 << 20));
    write(&b.join("fine.bin"), &random_bytes(32, 1 << 20));
    let sa = env.backup(&[&a], &[]);
    let packs_a = packs(&env);
    let sb = env.backup(&[&b], &[]);
    let (sa, sb) = (
        sa["snapshot_id"].as_str().unwrap().to_string(),
        sb["snapshot_id"].as_str().unwrap().to_string(),
    );

    copy(&env, &t, &["deadbeef"])
        .code(1)
        .stderr_has("snapshot deadbeef not found");
    let wrong = env.path("wrong-password");
    write(&wrong, b"not the password\n");
    let out = env
        .cmd()
        .args(["copy", "--to"])
        .arg(t.repo_arg())
        .arg("--to-password-file")
        .arg(&wrong)
        .run()
        .code(12)
        .stderr_has("wrong password")
        .stderr_has(&t.repo.display().to_string());
    assert!(!out.stderr.contains("not the password"), "{out}");
    let missing = env.path("no-such-repo");
    env.cmd()
        .args(["copy", "--to"])
        .arg(&missing)
        .env("CAIRN_TO_PASSWORD", OTHER)
        .run()
        .code(10)
        .stderr_has(&missing.display().to_string());
    assert!(target_snapshots(&t).is_empty());

    // Damage the data of the first snapshot (its largest pack holds the file's chunks).
    let pack = &packs_a[0];
    let len = fs::metadata(pack).unwrap().len();
    flip_bytes(pack, len / 3, 16);
    let out = copy(&env, &t, &[]).code(1);
    let r = out.json();
    assert_eq!(ids(&r, "copied", "source"), [sb.as_str()], "{r}");
    assert_eq!(ids(&r, "failed", "source"), [sa.as_str()], "{r}");
    let out = out
        .stderr_has(&sa[..8])
        .stderr_has(&a.join("damaged.bin").display().to_string())
        .stderr_has("blob ");
    assert!(out.stderr.contains("corrupt"), "{out}");
    let snaps = target_snapshots(&t);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["meta"]["copied_from"], sb.as_str());
    check_read_data(&t);
    // Still failing, the good one skipped.
    let r = copy(&env, &t, &[]).code(1).json();
    assert_eq!(ids(&r, "skipped", "source"), [sb.as_str()], "{r}");
    assert_eq!(ids(&r, "failed", "source"), [sa.as_str()], "{r}");
}

/// A copy killed (SIGKILL) at several moments, or interrupted (SIGINT, exit 130), leaves a
/// target that `check` passes with at most complete snapshots in it; the next copy finishes and
/// restores identical.
#[test]
fn an_interrupted_copy_leaves_the_target_valid() {
    use std::process::Stdio;
    use std::time::Instant;
    let env = Env::with_repo();
    let src = env.path("src");
    for i in 0..5 {
        write(
            &src.join(format!("big{i}.bin")),
            &random_bytes(100 + i, 8 << 20),
        );
    }
    for i in 0..200u64 {
        write(
            &src.join(format!("small/{}/f{i}.txt", i % 10)),
            format!("file {i}\n").repeat(i as usize + 1).as_bytes(),
        );
    }
    let m = Manifest::capture(&src);
    env.backup(&[&src], &[]);
    let copy_cmd = |t: &Env| {
        env.cmd()
            .args(["copy", "--to"])
            .arg(t.repo_arg())
            .env("CAIRN_TO_PASSWORD", OTHER)
    };
    // How long a whole copy takes here.
    let scratch = target(true);
    let started = Instant::now();
    copy_cmd(&scratch).run().ok();
    let full = started.elapsed();

    let t = target(true);
    for (i, frac) in [0.1, 0.3, 0.5, 0.7, 0.9].into_iter().enumerate() {
        let signal = if i == 2 { libc::SIGINT } else { libc::SIGKILL };
        let mut child = copy_cmd(&t)
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(frac));
        // SAFETY: signalling our own child, which has not been waited for yet.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let status = child.wait().unwrap();
        if signal == libc::SIGINT && status.code().is_some() {
            assert!(
                matches!(status.code(), Some(0) | Some(130)),
                "interrupted copy: {status}"
            );
        }
        eprintln!(
            "copy of {full:?} stopped at {frac}: {status}, {} packs, {} snapshots in the target",
            data_files(&t).len(),
            target_snapshots(&t).len()
        );
        let out = on(&t).args(["check", "--json"]).run();
        assert_eq!(out.code, 0, "check after an interruption at {frac}: {out}");
        assert!(target_snapshots(&t).len() <= 1);
    }
    let r = copy(&env, &t, &[]).ok().json();
    assert_eq!(
        r["copied"].as_array().unwrap().len() + r["skipped"].as_array().unwrap().len(),
        1,
        "{r}"
    );
    let dir = env.path("restored");
    restore_from(&t, &format!("latest:{}", src.display()), &dir);
    assert_same_tree(&m, &dir, Compare::default());
    check_read_data(&t);
}
