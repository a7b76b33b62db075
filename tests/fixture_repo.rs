//! A repository written by cairn 0.1.0 (format version 1) is kept in `tests/fixtures/repo-v1/`
//! (see the README there). This test reads it as it is, so a later change that cannot read old
//! repositories fails here.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

const PASSWORD_V1: &str = "cairn fixture v1";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1")
}

/// The fixture's source trees, generated the same way every time.
fn write_sources(root: &Path, version: u32) {
    write(&root.join("README.txt"), b"cairn fixture repository\n");
    write(&root.join("data/big.bin"), &random_bytes(7, 700_000));
    write(
        &root.join("data/table.sql"),
        "INSERT INTO t VALUES (1,'a'),(2,'b');\n"
            .repeat(2000)
            .as_bytes(),
    );
    write(&root.join("empty"), b"");
    if version >= 2 {
        write(&root.join("data/added-in-v2.txt"), "é ü ✓\n".as_bytes());
        write(
            &root.join("README.txt"),
            b"cairn fixture repository, version 2\n",
        );
    }
}

fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = files_below(root)
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(root).unwrap().to_path_buf(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_v1_fixture_reads_checks_and_restores() {
    let env = Env::new();
    copy(&fixture(), &env.repo);
    let run = |args: &[&str]| {
        env.cmd()
            .env("CAIRN_PASSWORD", PASSWORD_V1)
            .args(args)
            .run()
    };
    let snaps = run(&["snapshots", "--json"]).ok().json();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let readme = fs::read_to_string(fixture().join("README.md")).unwrap();
    for s in snaps {
        let id = s["id"].as_str().unwrap();
        assert!(
            readme.contains(id),
            "snapshot {id} is not in the fixture's README"
        );
    }
    run(&["check", "--read-data"]).ok();
    for (i, s) in snaps.iter().enumerate() {
        let version = s["tags"][0].as_str().unwrap();
        let want = env.path(&format!("want-{version}"));
        write_sources(&want, if version == "v1" { 1 } else { 2 });
        let t = env.path(&format!("restored-{i}"));
        let id = s["id"].as_str().unwrap();
        let out = run(&[
            "restore",
            &format!("{id}:/fixture-src"),
            "--target",
            t.to_str().unwrap(),
        ]);
        out.ok();
        assert_eq!(files(&t), files(&want), "snapshot {version}");
    }
    // A wrong password is still told apart.
    env.cmd()
        .env("CAIRN_PASSWORD", "not the fixture password")
        .args(["snapshots"])
        .run()
        .code(12);
}

/// Writes the fixture (run once per format version, by hand):
/// `cargo test --test fixture_repo -- --ignored write_fixture`.
#[test]
#[ignore = "rewrites tests/fixtures/repo-v1"]
fn write_fixture() {
    let dir = fixture();
    let _ = fs::remove_dir_all(&dir);
    let env = Env::new();
    let src = PathBuf::from("/fixture-src");
    let _ = fs::remove_dir_all(&src);
    let run = |args: &[&str]| {
        env.cmd()
            .env("CAIRN_PASSWORD", PASSWORD_V1)
            .args(args)
            .run()
            .ok()
    };
    run(&["init"]);
    let mut ids = Vec::new();
    for (version, time) in [(1, "2026-11-26 10:00:00"), (2, "2026-11-27 10:00:00")] {
        write_sources(&src, version);
        let v = run(&[
            "backup",
            "--json",
            "--host",
            "fixture",
            "--time",
            time,
            "--tag",
            &format!("v{version}"),
            src.to_str().unwrap(),
        ])
        .json();
        ids.push(v["snapshot_id"].as_str().unwrap().to_string());
    }
    fs::remove_dir_all(&src).unwrap();
    copy(&env.repo, &dir);
    fs::write(
        dir.join("README.md"),
        format!(
            "# Fixture: a repository written by cairn 0.1.0 (format version 1)\n\n\
             Password: `{PASSWORD_V1}` (cheap test KDF parameters). Written by \
             `cargo test --test fixture_repo -- --ignored write_fixture`; read by \
             `tests/fixture_repo.rs`. Do not rewrite it for a format change: add a new \
             fixture beside it.\n\n\
             | snapshot | tag | time | source |\n|---|---|---|---|\n\
             | {} | v1 | 2026-11-26 10:00:00 | /fixture-src, version 1 |\n\
             | {} | v2 | 2026-11-27 10:00:00 | /fixture-src, version 2 (a file added, README changed) |\n",
            ids[0], ids[1]
        ),
    )
    .unwrap();
}

fn copy(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy(&e.path(), &t);
        } else {
            fs::copy(e.path(), &t).unwrap();
        }
    }
}
