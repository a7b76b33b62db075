//! A repository replaced behind its owner's back (threat-model.md, "Repository replaced"):
//! anyone who can write to the storage can put the config and key files of a repository of
//! their own, unencrypted, in place of the owner's. The cache remembers, per location and per
//! repository id, whether the repository was encrypted and which key files it had; a change is
//! refused with exit code 13 unless `--accept-repository-change` is given.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Incompressible bytes with a marker in the middle, so that a copy stored in clear shows.
const MARKER: &[u8] = b"owner's-secret-marker-5b1d";

fn secret_file(dir: &Path) {
    let mut data = random_bytes(42, 200_000);
    data[100_000..100_000 + MARKER.len()].copy_from_slice(MARKER);
    write(&dir.join("secret.bin"), &data);
}

/// Replace `victim`'s config and key files with `donor`'s, and hide its snapshots and index
/// (what an attacker with write access can do; see the threat model).
fn swap_config_and_keys(victim: &Path, donor: &Path) {
    fs::remove_file(victim.join("config")).unwrap();
    fs::remove_dir_all(victim.join("keys")).unwrap();
    fs::create_dir_all(victim.join("keys")).unwrap();
    fs::copy(donor.join("config"), victim.join("config")).unwrap();
    for e in fs::read_dir(donor.join("keys")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), victim.join("keys").join(e.file_name())).unwrap();
    }
    for dir in ["snapshots", "index"] {
        let _ = fs::remove_dir_all(victim.join(dir));
    }
}

/// A fresh unencrypted repository's directory (on local disk, with its own cache).
fn unencrypted_donor(env: &Env) -> std::path::PathBuf {
    let donor = env.path("donor");
    Cairn::bare(env)
        .env("CAIRN_CACHE_DIR", env.path("donor-cache"))
        .arg("-r")
        .arg(&donor)
        .args(["init", "--encryption", "none"])
        .run()
        .ok();
    donor
}

/// The swap on the environment's repository (local or S3): refused by every command until
/// accepted; nothing is written before; after acceptance the new state is remembered.
fn downgrade_is_refused(env: &Env) {
    let src = env.path("src");
    secret_file(&src);
    env.backup(&[&src], &[]);
    assert!(files_containing(&env.repo, MARKER).is_empty());

    let donor = unencrypted_donor(env);
    swap_config_and_keys(&env.repo, &donor);
    let before = env.repo_listing();
    for args in [
        vec!["backup".to_string(), src.display().to_string()],
        vec!["snapshots".into()],
        vec!["check".into()],
        vec!["ls".into(), "latest".into()],
    ] {
        env.run(&args)
            .code(13)
            .stderr_has("encrypted")
            .stderr_has("now unencrypted")
            .stderr_has("--accept-repository-change");
    }
    assert_eq!(env.repo_listing(), before, "nothing may be written");
    assert!(files_containing(&env.repo, MARKER).is_empty());

    // The owner says the change is theirs: the backup runs (into the unencrypted repository,
    // as asked), with a warning, and from then on the new state is what is remembered.
    env.cmd()
        .args(["backup", "--accept-repository-change"])
        .arg(&src)
        .run()
        .ok()
        .stderr_has("accepting");
    assert!(!files_containing(&env.repo, MARKER).is_empty());
    env.run(["snapshots"]).ok();
}

#[test]
fn an_encrypted_repository_replaced_by_an_unencrypted_one_is_refused() {
    downgrade_is_refused(&Env::with_repo());
}

#[test]
fn an_encrypted_repository_replaced_by_an_unencrypted_one_is_refused_on_s3() {
    let Some(env) = Env::new_s3() else { return };
    env.run(["init"]).ok();
    downgrade_is_refused(&env);
}

/// Another key file (or one fewer) in an encrypted repository is a change too, even one that
/// opens with the same password: `cairn key add` does not exist, so nothing legitimate adds
/// one behind the cache's back.
#[test]
fn a_changed_set_of_key_files_is_refused() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("f"), b"f\n");
    env.backup(&[&src], &[]);
    // A key file of another repository with the same password.
    let other = env.path("other");
    Cairn::bare(&env)
        .env("CAIRN_CACHE_DIR", env.path("other-cache"))
        .arg("-r")
        .arg(&other)
        .arg("init")
        .run()
        .ok();
    let extra = fs::read_dir(other.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let added = env.repo.join("keys").join(extra.file_name());
    fs::copy(extra.path(), &added).unwrap();
    env.run(["snapshots"])
        .code(13)
        .stderr_has("key files changed")
        .stderr_has(&extra.file_name().to_string_lossy()[..8]);
    env.run(["snapshots", "--accept-repository-change"]).ok();
    env.run(["snapshots"]).ok();
    // Removing it again is a change as well.
    fs::remove_file(&added).unwrap();
    env.run(["snapshots"]).code(13).stderr_has("removed");
    env.run(["snapshots", "--accept-repository-change"]).ok();
    env.backup(&[&src], &[]);
}

/// The memory of a repository id holds wherever the repository is reached from: a copy of
/// the repository at a new location opens (the same repository, first seen there), but not
/// once its key files differ from what the cache knows of that repository.
#[test]
fn the_memory_of_a_repository_follows_it_to_another_location() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("f"), b"f\n");
    env.backup(&[&src], &[]);
    let copy = env.path("copy");
    copy_dir(&env.repo, &copy);
    let at_copy = || Cairn::bare(&env).arg("-r").arg(&copy);
    at_copy().arg("snapshots").run().ok();
    // Give the copy a second key file (of another repository, same password).
    let other = env.path("other");
    Cairn::bare(&env)
        .env("CAIRN_CACHE_DIR", env.path("other-cache"))
        .arg("-r")
        .arg(&other)
        .arg("init")
        .run()
        .ok();
    let copy2 = env.path("copy2");
    copy_dir(&env.repo, &copy2);
    for e in fs::read_dir(other.join("keys")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), copy2.join("keys").join(e.file_name())).unwrap();
    }
    // copy2 was never opened: only the memory of the repository id can know.
    Cairn::bare(&env)
        .arg("-r")
        .arg(&copy2)
        .arg("snapshots")
        .run()
        .code(13)
        .stderr_has("key files changed");
}

/// What the memory cannot do, as documented: a cache that never saw the repository (a new
/// host, a deleted cache) knows nothing, so the swap goes unnoticed there. And `init` at a
/// location whose repository the owner deleted records the new one: no refusal.
#[test]
fn limits_a_fresh_cache_knows_nothing_and_init_starts_afresh() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("f"), b"f\n");
    env.backup(&[&src], &[]);
    let donor = unencrypted_donor(&env);
    swap_config_and_keys(&env.repo, &donor);
    env.run(["snapshots"]).code(13);
    env.cmd()
        .env("CAIRN_CACHE_DIR", env.path("fresh-cache"))
        .arg("snapshots")
        .run()
        .ok();

    fs::remove_dir_all(&env.repo).unwrap();
    env.run(["init"]).ok();
    env.backup(&[&src], &[]);
    env.run(["snapshots"]).ok();
}

fn copy_dir(from: &Path, to: &Path) {
    for f in files_below(from) {
        let rel = f.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&f, &dest).unwrap();
    }
}
