//! S3-only behaviour of the command line, against a real S3 server (s3s-fs on 127.0.0.1):
//! wrong credentials, a missing bucket and an unreachable endpoint each give their own clear
//! error; a server that dies in the middle of a backup makes it fail in bounded time, and the
//! next backup resumes from what landed. Skipped (loudly) without s3s-fs unless
//! CAIRN_REQUIRE_SERVERS=1.

mod common;

use std::time::{Duration, Instant};

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
