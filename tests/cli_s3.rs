//! S3-only behaviour of the command line, against a real S3 server (s3s-fs on 127.0.0.1):
//! wrong credentials, a missing bucket and an unreachable endpoint each give their own clear
//! error; a server that dies in the middle of a backup makes it fail in bounded time, and the
//! next backup resumes from what landed; `copy` goes local -> S3 -> local. Skipped (loudly) without s3s-fs unless
//! CAIRN_REQUIRE_SERVERS=1.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

/// A repository with one small snapshot on a fresh S3 server.
fn s3_env() -> Option<Env> {
    let env = Env::new_s3()?;
    env.run(["init"]).ok();
    Some(env)
}

#[test]
fn s3_round_trip_and_missing_repository() {
    let Some(env) = s3_env() else { return };
    let src = env.path("src");
    write(&src.join("a.txt"), b"hello s3\n");
    write(&src.join("big.bin"), &random_bytes(5, 3 << 20));
    let snap = env.backup(&[&src], &[]);
    let id = snap["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(env.snapshots().len(), 1);
    let ls = env.run(["ls", &id[..8]]).ok().stdout_str();
    assert!(ls.contains("a.txt"), "{ls}");
    let out = env
        .run(["dump", &id[..8], &src.join("a.txt").display().to_string()])
        .ok();
    assert_eq!(out.stdout, b"hello s3\n");
    // The objects are where the server keeps them, under the prefix.
    assert!(env.repo.join("config").is_file());
    assert!(!files_below(&env.repo.join("data")).is_empty());

    // Another prefix of the same bucket holds no repository: exit 10, naming it.
    let other = format!("s3://{}/elsewhere", s3server::BUCKET);
    Cairn::bare(&env)
        .args(["-r", &other, "snapshots"])
        .run()
        .code(10)
        .stderr_has(&other);
    // Wrong password: 12.
    env.cmd()
        .env("CAIRN_PASSWORD", "not the password")
        .arg("snapshots")
        .run()
        .code(12);
}

#[test]
fn wrong_credentials_missing_bucket_and_unreachable_endpoint_are_told_apart() {
    let Some(env) = s3_env() else { return };
    let s3 = env.s3.as_ref().unwrap();

    // Wrong secret key: access denied, exit 1, the secret never printed.
    let out = env
        .cmd()
        .env("AWS_SECRET_ACCESS_KEY", "wrong-SECRET-key-value")
        .arg("snapshots")
        .run();
    assert_eq!(out.code, 1, "{out}");
    assert!(!out.stderr.contains("wrong-SECRET-key-value"), "{out}");
    assert!(!out.stderr.contains(s3server::SECRET_KEY), "{out}");
    let denied = out.stderr_has("access denied").stderr_has(s3server::BUCKET);

    // Unknown access key id: also access denied.
    env.cmd()
        .env("AWS_ACCESS_KEY_ID", "no-such-key-id")
        .arg("snapshots")
        .run()
        .code(1)
        .stderr_has("access denied");

    // A bucket that does not exist: named, exit 1, for reading and for init.
    for cmd in ["snapshots", "init"] {
        let out = Cairn::bare(&env)
            .args(["-r", "s3://no-such-bucket/x", cmd])
            .run();
        assert_eq!(out.code, 1, "{out}");
        let out = out.stderr_has("bucket 'no-such-bucket' does not exist");
        assert!(!out.stderr.contains("access denied"), "{out}");
    }

    // Nothing listens on the endpoint: a clear error naming it, quickly, no hang.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    let out = env
        .cmd()
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("CAIRN_S3_RETRIES", "2")
        .arg("snapshots")
        .run();
    let took = t.elapsed();
    assert_eq!(out.code, 1, "{out}");
    let out = out.stderr_has(&format!("cannot connect to {endpoint}"));
    assert!(took < Duration::from_secs(20), "took {took:?}: {out}");

    // Three different messages.
    assert_ne!(denied.stderr, out.stderr);
    assert!(!s3.url.is_empty());
}

/// Kill the server while a backup uploads: the backup fails with a clear error within the
/// configured timeout; after a restart the next backup completes, uploads less than half of
/// the data again (the packs named by the index objects written every 8 packs are reused), and
/// the snapshot restores identical.
#[test]
fn server_killed_mid_backup_then_resume() {
    let Some(mut env) = s3_env() else { return };
    let src = env.path("src");
    // Incompressible, so ~13 packs of 16 MiB.
    for i in 0..10 {
        write(
            &src.join(format!("f{i:02}.bin")),
            &random_bytes(100 + i, 20 << 20),
        );
    }
    let total: u64 = 200 << 20;
    let mut child = env
        .cmd()
        .args([
            "backup",
            "--json",
            "--s3-timeout",
            "10s",
            "--connections",
            "2",
        ])
        .arg(&src)
        .command()
        .spawn()
        .unwrap();
    // Wait for the first index object: by then 8 packs are stored and named.
    let index_dir = env.repo.join("index");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if !files_below(&index_dir).is_empty() {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the backup ended ({st}) before the server could be killed");
        }
        assert!(Instant::now() < deadline, "no index object after 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s3 = env.s3.as_mut().unwrap();
    s3.server.kill();
    let killed = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the backup hangs after the server died"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = killed.elapsed();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!status.success(), "the backup succeeded without its server");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let endpoint = s3.server.endpoint();
    assert!(
        stderr.contains(&format!("cannot connect to {endpoint}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Retries (4, backoff 0.5-10 s) and per-attempt timeouts (10 s) bound the failure.
    assert!(took < Duration::from_secs(45), "failing took {took:?}");
    eprintln!("backup failed {took:?} after the server was killed");

    s3.server.restart();
    assert!(
        env.snapshots().is_empty(),
        "no snapshot from the failed backup"
    );
    let before = env.repo_bytes();
    let snap = env.backup(&[&src], &[]);
    let added = env.repo_bytes() - before;
    eprintln!(
        "resumed backup uploaded {} MiB of {} MiB",
        added >> 20,
        total >> 20
    );
    assert!(
        added < total / 2,
        "the resumed backup uploaded {added} bytes"
    );
    let t = env.path("restore");
    let id = snap["snapshot_id"].as_str().unwrap();
    env.restore(
        &format!("{}:{}", &id[..8], src.display()),
        &t,
        &["--verify"],
    );
    for i in 0..10 {
        let name = format!("f{i:02}.bin");
        let back = std::fs::read(t.join(&name)).unwrap();
        assert!(back == random_bytes(100 + i, 20 << 20), "{name} differs");
    }
}

const S3_PASSWORD: &str = "the bucket's password";
const BACK_PASSWORD: &str = "the second local repository's password";

fn password_file(env: &Env, name: &str, pw: &str) -> PathBuf {
    let p = env.path(name);
    write(&p, format!("{pw}\n").as_bytes());
    p
}

/// The rich tree copied from a local repository to an S3 bucket and from there to another local
/// repository (three passwords) restores identical; a second copy to S3 skips the snapshot and
/// adds no pack; the bucket passes `check --read-data`.
#[test]
fn s3_local_to_s3_to_local_round_trip() {
    let Some(s3) = Env::new_s3() else { return };
    let url = s3.s3.as_ref().unwrap().url.clone();
    s3.cmd()
        .env("CAIRN_PASSWORD", S3_PASSWORD)
        .arg("init")
        .run()
        .ok();
    let local = Env::with_repo();
    let src = local.path("src");
    build_rich_tree(&src);
    let manifest = Manifest::capture(&src);
    let id = local.backup(&[&src], &["--tag", "nightly"])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Local -> S3: the command needs the S3 server's environment, which `Cairn::bare(&s3)` has.
    let to_s3 = || {
        Cairn::bare(&s3)
            .arg("-r")
            .arg(&local.repo)
            .args(["copy", "--json", "--to", &url, "--to-password-file"])
            .arg(password_file(&local, "s3-password", S3_PASSWORD))
            .run()
            .ok()
            .json()
    };
    let r = to_s3();
    assert_eq!(r["copied"][0]["source"], id.as_str(), "{r}");
    let on_s3 = r["copied"][0]["target"].as_str().unwrap().to_string();
    assert!(r["packs_added"].as_u64().unwrap() > 0, "{r}");
    let data = files_below(&s3.repo.join("data"));
    assert!(!data.is_empty());

    // Again: skipped, no new pack.
    let r = to_s3();
    assert_eq!(r["copied"], serde_json::json!([]), "{r}");
    assert_eq!(r["skipped"][0]["source"], id.as_str(), "{r}");
    assert_eq!(r["skipped"][0]["target"], on_s3.as_str(), "{r}");
    assert_eq!(r["packs_added"], 0, "{r}");
    assert_eq!(files_below(&s3.repo.join("data")), data);
    let check = s3
        .cmd()
        .env("CAIRN_PASSWORD", S3_PASSWORD)
        .args(["check", "--read-data", "--json"])
        .run()
        .ok()
        .json();
    assert_eq!(check["errors"], serde_json::json!([]), "{check}");

    // S3 -> another local repository.
    let back = Env::new_local();
    back.cmd()
        .env("CAIRN_PASSWORD", BACK_PASSWORD)
        .args(["init"])
        .run()
        .ok();
    let r = s3
        .cmd()
        .env("CAIRN_PASSWORD", S3_PASSWORD)
        .args(["copy", "--json", "--to"])
        .arg(&back.repo)
        .env("CAIRN_TO_PASSWORD", BACK_PASSWORD)
        .run()
        .ok()
        .json();
    assert_eq!(r["copied"][0]["source"], on_s3.as_str(), "{r}");
    let on_back = back
        .cmd()
        .env("CAIRN_PASSWORD", BACK_PASSWORD)
        .args(["snapshots", "--json"])
        .run()
        .ok()
        .json();
    let Value::Array(on_back) = on_back else {
        panic!("{on_back}")
    };
    assert_eq!(on_back.len(), 1);
    // Each copy names its immediate original.
    assert_eq!(on_back[0]["meta"]["copied_from"], on_s3.as_str());
    assert_eq!(on_back[0]["tags"], serde_json::json!(["nightly"]));
    let dir = back.path("restored");
    let out = back
        .cmd()
        .env("CAIRN_PASSWORD", BACK_PASSWORD)
        .args([
            "restore",
            "--json",
            &format!("latest:{}", src.display()),
            "--target",
        ])
        .arg(&dir)
        .run()
        .ok()
        .json();
    assert_eq!(out["errors"], serde_json::json!([]), "{out}");
    assert_same_tree(&manifest, &dir, Compare::default());
}
