//! `cairn check`: a clean repository passes; damage anywhere is found and attributed to the
//! snapshots and paths it affects; wasted space is a warning, not an error; subset reads
//! rotate through the repository.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use common::*;

/// A repository with one snapshot of a tree holding a multi-chunk file and small files.
fn repo_with_snapshot() -> (Env, PathBuf, String) {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("big.bin"), &random_bytes(11, 3 << 20));
    for i in 0..20 {
        write(
            &src.join(format!("dir/f{i}.txt")),
            format!("small file {i}\n").repeat(i + 1).as_bytes(),
        );
    }
    let v = env.backup(&[&src], &[]);
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    (env, src, id)
}

fn check(env: &Env, extra: &[&str]) -> (i32, Value) {
    let out = env.cmd().args(["check", "--json"]).args(extra).run();
    let code = out.code;
    assert!(code == 0 || code == 1, "unexpected exit code: {out}");
    (code, out.json())
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}: {}", e["object"], e["message"]))
        .collect()
}

/// The damaged paths the report gives for a snapshot.
fn damaged_paths(report: &Value, snap: &str) -> Vec<String> {
    report["damaged_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["id"] == snap)
        .flat_map(|d| d["paths"].as_array().unwrap().iter())
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_clean_repository_passes() {
    let (env, _src, _) = repo_with_snapshot();
    for extra in [&[][..], &["--read-data"][..]] {
        let (code, v) = check(&env, extra);
        assert_eq!(code, 0, "{v}");
        assert!(strings(&v, "errors").is_empty(), "{v}");
        assert!(strings(&v, "warnings").is_empty(), "{v}");
        assert_eq!(v["stats"]["snapshots"], 1);
        assert!(v["stats"]["trees"].as_u64().unwrap() >= 2, "{v}");
    }
    let (_, v) = check(&env, &["--read-data"]);
    let packs = packs(&env).len() as u64;
    assert_eq!(v["stats"]["packs_read"], packs, "{v}");
    assert!(v["stats"]["blobs_verified"].as_u64().unwrap() >= 23, "{v}");
    // Text output.
    assert!(env.run(["check"]).ok().stdout_str().contains("no errors"));
}

/// One flipped byte anywhere in any pack is found by `check --read-data`; where it hits a
/// blob, the report names the snapshot and the file.
#[test]
fn a_flipped_byte_in_any_pack_is_found() {
    let (env, src, snap) = repo_with_snapshot();
    for pack in packs(&env) {
        let len = fs::metadata(&pack).unwrap().len();
        let original = fs::read(&pack).unwrap();
        let name = pack.file_name().unwrap().to_str().unwrap().to_string();
        // The prefix, blobs at several places, the header and the trailer.
        let mut at: Vec<u64> = vec![0, 4, 5, 40, len / 3, len / 2, len - 40, len - 1];
        at.sort();
        at.dedup();
        for pos in at {
            flip_bytes(&pack, pos, 1);
            let (code, v) = check(&env, &["--read-data"]);
            assert_eq!(
                code, 1,
                "byte {pos} of {name} flipped, but check passes: {v}"
            );
            let errors = strings(&v, "errors").join("\n");
            assert!(errors.contains(&name), "pack not named (byte {pos}): {v}");
            let paths = damaged_paths(&v, &snap);
            // Damaged paths are the source tree's files, or directories on the way to them
            // (a damaged directory listing).
            for p in &paths {
                let p = std::path::Path::new(p);
                assert!(
                    p.starts_with(&src) || src.starts_with(p),
                    "odd damaged path {}: {v}",
                    p.display()
                );
            }
            fs::write(&pack, &original).unwrap();
        }
        // A flip in the middle of the data pack hits a blob of big.bin.
        if len > 1 << 20 {
            flip_bytes(&pack, len / 2, 1);
            let (_, v) = check(&env, &["--read-data"]);
            let paths = damaged_paths(&v, &snap);
            assert_eq!(paths, vec![format!("{}/big.bin", src.display())], "{v}");
            fs::write(&pack, &original).unwrap();
        }
    }
    let (code, v) = check(&env, &["--read-data"]);
    assert_eq!(code, 0, "{v}");
}

/// Without --read-data, a damaged header, a truncated pack and a missing pack are found.
#[test]
fn structural_check_finds_missing_and_truncated_packs() {
    let (env, src, snap) = repo_with_snapshot();
    let data_pack = packs(&env)[0].clone();
    let original = fs::read(&data_pack).unwrap();
    let len = original.len() as u64;
    let name = data_pack.file_name().unwrap().to_str().unwrap().to_string();

    flip_bytes(&data_pack, len - 30, 1);
    let (code, v) = check(&env, &[]);
    assert_eq!(code, 1, "{v}");
    assert!(strings(&v, "errors").join("\n").contains(&name), "{v}");
    fs::write(&data_pack, &original).unwrap();

    fs::OpenOptions::new()
        .write(true)
        .open(&data_pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (code, v) = check(&env, &[]);
    assert_eq!(code, 1, "{v}");
    assert!(strings(&v, "errors").join("\n").contains(&name), "{v}");
    assert!(
        damaged_paths(&v, &snap).contains(&format!("{}/big.bin", src.display())),
        "{v}"
    );

    fs::remove_file(&data_pack).unwrap();
    let out = env.run(["check"]).code(1);
    out.stderr_has(&name)
        .stderr_has("missing")
        .stderr_has("big.bin");
}

/// A flipped byte in an index object or a snapshot object is an error naming the object and
/// the snapshots it affects; a damaged key file beside a good one is a warning.
#[test]
fn damaged_metadata_is_attributed() {
    let (env, src, snap) = repo_with_snapshot();
    let index = files_below(&env.repo.join("index"));
    assert_eq!(index.len(), 1);
    let original = fs::read(&index[0]).unwrap();
    flip_bytes(&index[0], original.len() as u64 / 2, 1);
    let (code, v) = check(&env, &[]);
    assert_eq!(code, 1, "{v}");
    let idx_name = index[0].file_name().unwrap().to_str().unwrap();
    assert!(strings(&v, "errors").join("\n").contains(idx_name), "{v}");
    // Every blob is now missing from the index: the whole snapshot is damaged.
    assert!(!damaged_paths(&v, &snap).is_empty(), "{v}");
    fs::write(&index[0], &original).unwrap();

    let snaps = files_below(&env.repo.join("snapshots"));
    let original = fs::read(&snaps[0]).unwrap();
    flip_bytes(&snaps[0], original.len() as u64 - 3, 1);
    let (code, v) = check(&env, &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(damaged_paths(&v, &snap), vec!["/".to_string()], "{v}");
    fs::write(&snaps[0], &original).unwrap();

    // A stray copy of the key file under a name it does not hash to.
    let key = files_below(&env.repo.join("keys"))[0].clone();
    let mut bytes = fs::read(&key).unwrap();
    bytes[10] ^= 1;
    let stray = key.with_file_name(format!("{:064x}", 7));
    fs::write(&stray, &bytes).unwrap();
    let (code, v) = check(&env, &[]);
    assert_eq!(code, 0, "{v}");
    assert!(strings(&v, "warnings").join("\n").contains("keys/"), "{v}");
    fs::remove_file(&stray).unwrap();

    let (code, v) = check(&env, &["--read-data"]);
    assert_eq!(code, 0, "{v}");
    let t = env.path("t");
    env.restore("latest", &t, &[]);
    assert_eq!(
        fs::read(t.join(src.strip_prefix("/").unwrap()).join("big.bin")).unwrap(),
        random_bytes(11, 3 << 20)
    );
}

/// Wasted space (a pack no index names) is a warning: exit 0.
#[test]
fn unreferenced_data_is_a_warning() {
    let (env, _src, _) = repo_with_snapshot();
    let p = packs(&env)[0].clone();
    let bytes = fs::read(&p).unwrap();
    let stray_id = format!("{}", blake3::hash(b"stray"));
    let dir = env.repo.join("data").join(&stray_id[..2]);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(&stray_id), &bytes).unwrap();
    let (code, v) = check(&env, &[]);
    assert_eq!(code, 0, "{v}");
    let w = strings(&v, "warnings").join("\n");
    assert!(
        w.contains("not in the index") && w.contains(&stray_id),
        "{v}"
    );
}

/// `--read-data-subset N/M` partitions the packs; `P%` reads the packs verified longest ago
/// first, so repeated runs cover everything.
#[test]
fn subsets_partition_and_rotate() {
    let env = Env::with_repo();
    for i in 0..4u64 {
        let src = env.path(&format!("src{i}"));
        write(&src.join("f.bin"), &random_bytes(100 + i, 200_000));
        env.backup(&[&src], &[]);
    }
    let all: BTreeSet<String> = packs(&env)
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert!(all.len() >= 8, "{all:?}");
    let read = |extra: &[&str]| -> BTreeSet<String> {
        let (code, v) = check(&env, extra);
        assert_eq!(code, 0, "{v}");
        v["stats"]["read_packs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let a = read(&["--read-data-subset", "1/3"]);
    let b = read(&["--read-data-subset", "2/3"]);
    let c = read(&["--read-data-subset", "3/3"]);
    assert!(a.is_disjoint(&b) && a.is_disjoint(&c) && b.is_disjoint(&c));
    let union: BTreeSet<String> = a.iter().chain(&b).chain(&c).cloned().collect();
    assert_eq!(union, all);

    // Forget what the N/M runs verified: a fresh cache.
    fs::remove_dir_all(&env.cache).unwrap();
    let n = all.len().div_ceil(4);
    let mut seen = BTreeSet::new();
    for round in 0..4 {
        let r = read(&["--read-data-subset", "25%"]);
        assert_eq!(r.len(), n, "round {round}");
        if round < 3 {
            assert!(r.is_disjoint(&seen), "round {round} re-read packs: {r:?}");
        }
        seen.extend(r);
    }
    assert_eq!(seen, all);
    env.run(["check", "--read-data-subset", "0/3"])
        .code(1)
        .stderr_has("read-data-subset");
}

/// `repair snapshots` rewrites a damaged snapshot without the damaged file; the rest restores,
/// and with --forget the damaged original goes, after which `check` passes.
#[test]
fn repair_snapshots_leaves_out_damaged_files() {
    let (env, src, snap) = repo_with_snapshot();
    let m = Manifest::capture(&src);
    let data_pack = packs(&env)[0].clone();
    let len = fs::metadata(&data_pack).unwrap().len();
    flip_bytes(&data_pack, len / 2, 1);

    let dry = env
        .run(["repair", "snapshots", "--read-data", "--dry-run", "--json"])
        .ok()
        .json();
    assert_eq!(dry["snapshots"][0]["repaired"], Value::Null, "{dry}");
    assert_eq!(env.snapshots().len(), 1);

    let r = env
        .run(["repair", "snapshots", "--read-data", "--json"])
        .ok()
        .json();
    let s = &r["snapshots"][0];
    assert_eq!(s["original"], snap.as_str(), "{r}");
    let removed: Vec<&str> = s["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    let big = format!("{}/big.bin", src.display());
    assert_eq!(removed, vec![big.as_str()], "{r}");
    let new = s["repaired"].as_str().unwrap().to_string();
    // The original is kept: check still fails on it.
    assert_eq!(env.snapshots().len(), 2);
    let (code, _) = check(&env, &["--read-data"]);
    assert_eq!(code, 1);
    // The repaired snapshot restores everything but the damaged file.
    let t = env.path("t");
    let out = env.restore(&format!("{}:{}", &new[..8], src.display()), &t, &[]);
    assert_eq!(out["errors"], serde_json::json!([]), "{out}");
    assert!(!t.join("big.bin").exists());
    for i in 0..20 {
        let rel = format!("dir/f{i}.txt");
        assert_eq!(
            fs::read(t.join(&rel)).unwrap(),
            fs::read(src.join(&rel)).unwrap()
        );
    }
    let _ = m;
    // --forget: the damaged original goes; the repository checks clean (the damaged blob is
    // now only a warning: nothing needs it).
    env.run(["repair", "snapshots", "--read-data", "--forget"])
        .ok();
    let snaps = env.snapshots();
    assert!(snaps.iter().all(|s| s["id"] != snap.as_str()), "{snaps:?}");
    let (code, v) = check(&env, &["--read-data"]);
    assert_eq!(code, 0, "{v}");
    assert!(!strings(&v, "warnings").is_empty(), "{v}");
}

/// Objects cairn did not write where they are (names that are not ids under `snapshots/`,
/// `index/`, `data/xx/`, `keys/`, `locks/`, `condemned/`, a pack under the wrong `data/xx/`,
/// files elsewhere in the repository) and, on local disk, leftover `.tmp-` files of interrupted
/// puts in any directory: each is a warning naming its key; none is an error.
fn junk_is_reported_by_name(env: &Env) {
    let src = env.path("src");
    write(&src.join("f.txt"), b"some file\n");
    env.backup(&[&src], &[]);
    let some_id = format!("{}", blake3::hash(b"junk"));
    let misplaced_dir = if some_id.starts_with("00") {
        "01"
    } else {
        "00"
    };
    let mut junk: Vec<String> = vec![
        "snapshots/not-an-id".into(),
        "index/1234.bak".into(),
        format!("index/{}", some_id.to_uppercase()),
        "data/ab/short".into(),
        format!("data/{misplaced_dir}/{some_id}"),
        format!("data/{some_id}"),
        "keys/README".into(),
        "locks/junk".into(),
        "condemned/junk".into(),
        "stray.txt".into(),
        "configuration.bak".into(),
        "elsewhere/deeper/file".into(),
    ];
    if env.s3.is_none() {
        // On S3 a put leaves nothing behind; such names would be plain non-id names there.
        junk.extend([
            ".tmp-00112233aabbccdd".to_string(),
            "data/.tmp-0123456789abcdef".into(),
            "snapshots/.tmp-fedcba9876543210".into(),
            format!("data/{}/.tmp-aaaaaaaaaaaaaaaa", &some_id[..2]),
        ]);
    }
    for k in &junk {
        write(&env.repo.join(k), b"not cairn's");
    }
    let (code, v) = check(env, &[]);
    assert_eq!(code, 0, "junk is not damage: {v}");
    let objects: BTreeSet<String> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["object"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = junk.iter().filter(|k| !objects.contains(*k)).collect();
    assert!(missing.is_empty(), "not reported: {missing:?} in {v}");
    assert!(v["errors"].as_array().unwrap().is_empty(), "{v}");
    // The text output lists them too.
    let out = env.run(["check"]).ok();
    for k in &junk {
        assert!(
            out.stdout_str().contains(k.as_str()),
            "{k} not named: {out}"
        );
    }
    // The repository's own objects are not junk.
    for w in v["warnings"].as_array().unwrap() {
        let o = w["object"].as_str().unwrap();
        assert!(junk.iter().any(|k| k == o), "unexpected warning {w}");
    }
}

#[test]
fn junk_objects_and_leftover_temporary_files_are_warnings() {
    junk_is_reported_by_name(&Env::with_repo());
}

#[test]
fn junk_objects_are_warnings_on_s3() {
    let Some(env) = Env::new_s3() else { return };
    env.run(["init"]).ok();
    junk_is_reported_by_name(&env);
}
