//! `kill -9` of the real binary at many moments of a backup and of a prune: afterwards `check`
//! passes (leftovers are warnings, never errors), the next run finishes, and every snapshot
//! restores exactly. (A backup racing a prune, with the overlap asserted in every round, is in
//! tests/leases.rs.)

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// A source tree big enough that a backup takes a while: large random files and many small.
fn source(env: &Env, seed: u64) -> std::path::PathBuf {
    let src = env.path(&format!("src{seed}"));
    for i in 0..6 {
        write(
            &src.join(format!("big{i}.bin")),
            &random_bytes(seed * 100 + i, 6 << 20),
        );
    }
    for i in 0..300u64 {
        write(
            &src.join(format!("small/{}/f{i}.txt", i % 10)),
            format!("small file {i} seed {seed}\n")
                .repeat(i as usize % 50 + 1)
                .as_bytes(),
        );
    }
    src
}

/// Run cairn with `args`, SIGKILL it after `after`; returns whether it had already finished.
fn run_and_kill(env: &Env, args: &[&str], after: Duration) -> bool {
    let mut child = env
        .cmd()
        .args(args)
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    false
}

fn time_of(env: &Env, args: &[&str]) -> Duration {
    let t = Instant::now();
    env.run(args).ok();
    t.elapsed()
}

/// Deterministic pseudo-random fractions in [0, 1).
fn fractions(n: usize) -> Vec<f64> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

fn check_passes(env: &Env, what: &str) {
    let out = env.run(["check", "--json"]);
    assert_eq!(out.code, 0, "check fails after {what}: {out}");
}

fn restores(env: &Env, snap: &str, src: &Path, m: &Manifest, name: &str) {
    let t = env.path(name);
    let r = env.restore(&format!("{snap}:{}", src.display()), &t, &[]);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_same_tree(m, &t, Compare::default());
    std::fs::remove_dir_all(&t).unwrap();
}

#[test]
fn kill_9_during_backup_loses_nothing() {
    let env = Env::with_repo();
    let src1 = source(&env, 1);
    let m1 = Manifest::capture(&src1);
    let first = env.backup(&[&src1], &[]);
    let snap1 = first["snapshot_id"].as_str().unwrap().to_string();
    let src2 = source(&env, 2);

    // How long a full backup of the second tree takes, on a copy of the repository.
    let probe = Env::new();
    copy_tree(&env.repo, &probe.repo);
    let full = time_of(&probe, &["backup", src2.to_str().unwrap()]);
    drop(probe);

    // The probe's time is only an estimate on a shared machine (other tests run beside this
    // one): a round that finishes before its kill shrinks the estimate and does not count, so
    // the test always kills the wanted number of backups at spread-out moments.
    let wanted = 20;
    let mut full = full;
    let mut killed = 0;
    let mut finished = 0;
    for (round, f) in fractions(3 * wanted).into_iter().enumerate() {
        if killed == wanted {
            break;
        }
        // New contents every round, so every round has as much to do as the probe had.
        for i in 0..6 {
            write(
                &src2.join(format!("big{i}.bin")),
                &random_bytes(1000 * round as u64 + i, 6 << 20),
            );
        }
        let after = full.mul_f64(0.02 + 0.9 * f);
        if run_and_kill(&env, &["backup", src2.to_str().unwrap()], after) {
            finished += 1;
            full = full.mul_f64(0.7);
        } else {
            killed += 1;
        }
        check_passes(&env, &format!("kill round {round} at {after:?}"));
    }
    assert_eq!(
        killed, wanted,
        "only {killed} rounds were killed mid-backup ({finished} finished first)"
    );
    // The next backup finishes; everything restores.
    let src2 = source(&env, 2);
    let m2 = Manifest::capture(&src2);
    env.backup(&[&src2], &[]);
    let out = env.run(["check", "--read-data"]);
    assert_eq!(out.code, 0, "{out}");
    restores(&env, &snap1[..8], &src1, &m1, "r1");
    restores(&env, "latest", &src2, &m2, "r2");
}

#[test]
fn kill_9_during_prune_loses_nothing() {
    let env = Env::with_repo();
    let mut keep = Vec::new();
    let mut forget = Vec::new();
    for seed in 1..=4u64 {
        let src = source(&env, seed);
        let m = Manifest::capture(&src);
        let id = env.backup(&[&src], &[])["snapshot_id"]
            .as_str()
            .unwrap()
            .to_string();
        if seed % 2 == 0 {
            keep.push((id, src, m));
        } else {
            forget.push(id);
        }
    }
    let mut args = vec!["forget"];
    args.extend(forget.iter().map(|s| s.as_str()));
    env.run(&args).ok();

    let probe = Env::new();
    copy_tree(&env.repo, &probe.repo);
    let full = time_of(&probe, &["prune", "--grace", "0s"]);
    drop(probe);

    // As for backups: a round whose prune finishes before its kill shrinks the estimate and
    // does not count, so the wanted number of prunes is killed part way. A prune that finished
    // leaves nothing for later rounds to interrupt, so the forgotten data comes back first.
    let wanted = 12;
    let mut full = full;
    let (mut killed, mut finished) = (0, 0);
    for (round, f) in fractions(4 * wanted).into_iter().enumerate() {
        if killed == wanted {
            break;
        }
        let after = full.mul_f64(0.05 + 0.9 * f);
        if run_and_kill(&env, &["prune", "--grace", "0s"], after) {
            finished += 1;
            full = full.mul_f64(0.7);
            // More to prune for the next round: back up and forget a new tree.
            let src = source(&env, 100 + round as u64);
            let id = env.backup(&[&src], &[])["snapshot_id"]
                .as_str()
                .unwrap()
                .to_string();
            env.run(["forget", &id]).ok();
        } else {
            killed += 1;
        }
        check_passes(&env, &format!("prune kill round {round} at {after:?}"));
        for (id, src, m) in &keep {
            restores(&env, &id[..8], src, m, &format!("r{round}"));
        }
    }
    assert_eq!(
        killed, wanted,
        "only {killed} prunes were killed part way ({finished} finished first)"
    );
    // The next prune finishes and leaves nothing behind but the temporary files of the writes
    // that the kills interrupted (check names them; format-spec/ordering.md).
    env.run(["prune", "--grace", "0s"]).ok();
    let v = env.run(["check", "--read-data", "--json"]).ok().json();
    let others: Vec<&serde_json::Value> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| !w["object"].as_str().unwrap().contains("/.tmp-"))
        .collect();
    assert!(others.is_empty(), "{v}");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}
