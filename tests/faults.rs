//! Fault loops: a small backup, prune and index repair are run with a fault injected at every
//! backend operation in turn (crash, transient error, dropped write, truncated write, flipped
//! read). After each, with a healthy backend:
//!
//! - `check --read-data` tells the truth: when it passes, every snapshot restores byte for
//!   byte (it may report more than a restore notices, e.g. an index entry for a missing pack
//!   whose blobs have another copy);
//! - faults that do not lie about stored data (crash, transient error, flipped read) never lose
//!   a committed snapshot, and the next run of the same operation succeeds.
//!
//! Lying storage (a write reported done that is not) can lose data; there the requirement is
//! only that `check` says so.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn::backend::{Backend, Fault, FaultBackend, FaultKind, LocalBackend};
use cairn::crypto::KdfParams;
use cairn::ops::backup::{self, BackupOptions};
use cairn::ops::check::{self, CheckOptions, ReadData};
use cairn::ops::prune::{self, PruneOptions};
use cairn::ops::repair;
use cairn::ops::restore::{self, RestoreOptions};
use cairn::repo::{InitOptions, OpenOptions, Repository};
use zeroize::Zeroizing;

const PASSWORD: &[u8] = b"fault loop password";
const KINDS: [FaultKind; 5] = [
    FaultKind::Crash,
    FaultKind::Transient,
    FaultKind::DropWrite,
    FaultKind::TruncateWrite,
    FaultKind::FlipRead,
];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Relative path -> contents of every file below `dir`.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                // O_NOATIME: reading must not change what the next backup sees. `stable/`'s
                // tree then stays the same blob, and version 1's tree pack is partly needed
                // by version 2 whichever way the data blobs fell into packs.
                let mut data = Vec::new();
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOATIME)
                    .open(&p)
                    .and_then(|mut f| f.read_to_end(&mut data))
                    .unwrap();
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), data);
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

struct World {
    dir: tempfile::TempDir,
    src: PathBuf,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        World { dir, src }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Version `v` of the source tree: some files change, some are added.
    fn write_version(&self, v: u64) {
        write(&self.src.join("big.bin"), &bytes(v, 300_000));
        write(&self.src.join("same.bin"), &bytes(99, 200_000));
        // Files that stay (written once, so their metadata stays too) and files only version
        // 1 has: packs of version 1 end up partly needed, which makes prune repack. Which data
        // packs those are depends on timing; version 1's tree pack always is one (`stable/`'s
        // tree is in both versions, see `contents`).
        for i in 0..6 {
            let p = self.src.join(format!("stable/s{i}.bin"));
            if !p.exists() {
                write(&p, &bytes(1000 + i, 4000));
            }
        }
        let _ = std::fs::remove_dir_all(self.src.join("only-v1"));
        if v == 1 {
            for i in 0..10 {
                write(
                    &self.src.join(format!("only-v1/t{i}.bin")),
                    &bytes(2000 + i, 6000),
                );
            }
        }
        for i in 0..v * 3 {
            write(
                &self.src.join(format!("d{}/f{i}.txt", i % 3)),
                format!("file {i} of version {v}\n").as_bytes(),
            );
        }
    }
}

async fn open(backend: Arc<dyn Backend>, cache: &Path) -> cairn::Result<Arc<Repository>> {
    let r = Repository::open(
        backend,
        || Ok(Zeroizing::new(PASSWORD.to_vec())),
        &OpenOptions::new(cache),
    )
    .await?;
    Ok(Arc::new(r))
}

fn backup_opts() -> BackupOptions {
    BackupOptions {
        host: Some("faults".into()),
        ..Default::default()
    }
}

/// Every snapshot of the repository with what it must restore to.
type Expect = BTreeMap<String, BTreeMap<PathBuf, Vec<u8>>>;

/// Restore every snapshot; true when each one is byte-identical to what it should be.
async fn all_restore(repo: &Arc<Repository>, world: &World, expect: &Expect, tag: &str) -> bool {
    let snaps = match repo.snapshots() {
        Ok(s) => s,
        Err(_) => return false,
    };
    for (id, snap) in snaps {
        let Some(want) = expect.get(&snap.tags.join(",")) else {
            panic!("unexpected snapshot {id} with tags {:?}", snap.tags);
        };
        let target = world.path(&format!("restore-{tag}-{id}"));
        let src = world.src.to_string_lossy().to_string();
        let r = restore::restore(repo, &snap, &src, &target, &RestoreOptions::default()).await;
        let ok = matches!(&r, Ok(o) if o.errors.is_empty()) && contents(&target) == *want;
        let _ = std::fs::remove_dir_all(&target);
        if !ok {
            return false;
        }
    }
    true
}

/// Check with a healthy backend and a fresh cache; returns whether it reports no errors.
async fn check_ok(world: &World, repo_dir: &Path, tag: &str) -> (bool, Arc<Repository>) {
    let (r, repo) = check_report(world, repo_dir, tag).await;
    (r.ok(), repo)
}

async fn check_report(
    world: &World,
    repo_dir: &Path,
    tag: &str,
) -> (check::CheckReport, Arc<Repository>) {
    let repo = open(
        Arc::new(LocalBackend::new(repo_dir)),
        &world.path(&format!("cache-check-{tag}")),
    )
    .await
    .expect("the repository opens after a fault");
    let r = check::check(
        &repo,
        &CheckOptions {
            read_data: ReadData::All,
            progress: None,
            lease_wait: std::time::Duration::ZERO,
        },
    )
    .await
    .expect("check runs");
    (r, repo)
}

/// Whether the fault kind lies about what is stored.
fn lies(kind: FaultKind) -> bool {
    matches!(kind, FaultKind::DropWrite | FaultKind::TruncateWrite)
}

/// A template repository with snapshot "v1" of version 1 of the sources.
async fn template(world: &World) -> (PathBuf, Expect) {
    let repo_dir = world.path("template");
    let init = InitOptions {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        pack_size: 64 * 1024,
        ..Default::default()
    };
    let repo = Repository::init(
        Arc::new(LocalBackend::new(&repo_dir)),
        PASSWORD,
        &init,
        &OpenOptions::new(world.path("cache-template")),
    )
    .await
    .unwrap();
    let repo = Arc::new(repo);
    world.write_version(1);
    let mut o = backup_opts();
    o.tags = vec!["v1".into()];
    backup::backup_paths(&repo, std::slice::from_ref(&world.src), &o)
        .await
        .unwrap();
    let mut expect = Expect::new();
    expect.insert("v1".into(), contents(&world.src));
    (repo_dir, expect)
}

#[test]
fn backup_under_every_fault() {
    rt().block_on(async {
        let world = World::new();
        let (tpl, mut expect) = template(&world).await;
        world.write_version(2);
        expect.insert("v2".into(), contents(&world.src));
        let mut o = backup_opts();
        o.tags = vec!["v2".into()];

        // How many operations a clean run makes.
        let probe_dir = world.path("probe");
        copy_dir(&tpl, &probe_dir);
        let fb = Arc::new(FaultBackend::new(
            Arc::new(LocalBackend::new(&probe_dir)),
            None,
        ));
        let repo = open(fb.clone(), &world.path("cache-probe")).await.unwrap();
        backup::backup_paths(&repo, std::slice::from_ref(&world.src), &o)
            .await
            .unwrap();
        let n = fb.ops();
        assert!(n > 10, "only {n} operations");

        let mut fired = 0;
        for at in 0..n {
            for kind in KINDS {
                let tag = format!("b{at}-{kind:?}");
                let dir = world.path(&tag);
                copy_dir(&tpl, &dir);
                let fb = Arc::new(FaultBackend::new(
                    Arc::new(LocalBackend::new(&dir)),
                    Some(Fault { at, kind }),
                ));
                if let Ok(repo) = open(fb.clone(), &world.path(&format!("cache-{tag}"))).await {
                    let _ = backup::backup_paths(&repo, std::slice::from_ref(&world.src), &o).await;
                }
                if !fb.fired() {
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
                fired += 1;
                // The crashed process is gone: its lease with it.
                let _ = std::fs::remove_dir_all(dir.join("locks"));
                let (report, repo) = check_report(&world, &dir, &tag).await;
                let ok = report.ok();
                let restores = all_restore(&repo, &world, &expect, &tag).await;
                assert!(
                    !ok || restores,
                    "{tag}: check passes but a snapshot does not restore: {report:#?}"
                );
                if !lies(kind) {
                    assert!(ok, "{tag}: a fault that loses nothing lost data");
                    // The next backup succeeds and everything restores.
                    backup::backup_paths(&repo, std::slice::from_ref(&world.src), &o)
                        .await
                        .unwrap_or_else(|e| panic!("{tag}: the next backup fails: {e}"));
                    let (ok, repo) = check_ok(&world, &dir, &format!("{tag}-after")).await;
                    assert!(ok, "{tag}: check fails after the next backup");
                    assert!(all_restore(&repo, &world, &expect, &tag).await, "{tag}");
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        assert!(
            fired as u64 >= n,
            "only {fired} faults fired in {n} operations"
        );
    });
}

#[test]
fn prune_and_repair_under_every_fault() {
    rt().block_on(async {
        let world = World::new();
        let (tpl, mut expect) = template(&world).await;
        // A second snapshot, then the first forgotten: prune has packs to delete and repack.
        {
            let repo = open(
                Arc::new(LocalBackend::new(&tpl)),
                &world.path("cache-template"),
            )
            .await
            .unwrap();
            world.write_version(2);
            let mut o = backup_opts();
            o.tags = vec!["v2".into()];
            backup::backup_paths(&repo, std::slice::from_ref(&world.src), &o)
                .await
                .unwrap();
            expect.insert("v2".into(), contents(&world.src));
            let v1 = repo
                .snapshots()
                .unwrap()
                .into_iter()
                .find(|(_, s)| s.tags == ["v1"])
                .unwrap()
                .0;
            std::fs::remove_file(tpl.join("snapshots").join(v1.to_hex())).unwrap();
            expect.remove("v1");
        }
        let opts = PruneOptions {
            grace: std::time::Duration::ZERO,
            ..Default::default()
        };
        for op in ["prune", "repair"] {
            let probe_dir = world.path(&format!("probe-{op}"));
            copy_dir(&tpl, &probe_dir);
            let fb = Arc::new(FaultBackend::new(
                Arc::new(LocalBackend::new(&probe_dir)),
                None,
            ));
            let repo = open(fb.clone(), &world.path(&format!("cache-probe-{op}")))
                .await
                .unwrap();
            let before = fb.ops();
            match op {
                "prune" => {
                    let r = prune::prune(&repo, &opts).await.unwrap();
                    assert!(r.packs_deleted > 0 && r.packs_repacked > 0, "{r:?}");
                }
                _ => {
                    repair::repair_index(&repo, std::time::Duration::ZERO)
                        .await
                        .unwrap();
                }
            }
            let n = fb.ops();
            assert!(n - before > 5);
            for at in 0..n {
                for kind in KINDS {
                    let tag = format!("{op}{at}-{kind:?}");
                    let dir = world.path(&tag);
                    copy_dir(&tpl, &dir);
                    let fb = Arc::new(FaultBackend::new(
                        Arc::new(LocalBackend::new(&dir)),
                        Some(Fault { at, kind }),
                    ));
                    if let Ok(repo) = open(fb.clone(), &world.path(&format!("cache-{tag}"))).await {
                        let _ = match op {
                            "prune" => prune::prune(&repo, &opts).await.map(|_| ()),
                            _ => repair::repair_index(&repo, std::time::Duration::ZERO)
                                .await
                                .map(|_| ()),
                        };
                    }
                    if !fb.fired() {
                        let _ = std::fs::remove_dir_all(&dir);
                        continue;
                    }
                    let _ = std::fs::remove_dir_all(dir.join("locks"));
                    let (report, repo) = check_report(&world, &dir, &tag).await;
                    let ok = report.ok();
                    let restores = all_restore(&repo, &world, &expect, &tag).await;
                    assert!(
                        !ok || restores,
                        "{tag}: check passes but a snapshot does not restore: {report:#?}"
                    );
                    if !lies(kind) {
                        assert!(ok, "{tag}: a fault that loses nothing lost data");
                        // The next run finishes and leaves a clean repository.
                        match op {
                            "prune" => {
                                prune::prune(&repo, &opts)
                                    .await
                                    .unwrap_or_else(|e| panic!("{tag}: next prune: {e}"));
                            }
                            _ => {
                                repair::repair_index(&repo, std::time::Duration::ZERO)
                                    .await
                                    .unwrap_or_else(|e| panic!("{tag}: next repair: {e}"));
                            }
                        }
                        let (ok, repo) = check_ok(&world, &dir, &format!("{tag}-after")).await;
                        assert!(ok, "{tag}: check fails after the next run");
                        assert!(all_restore(&repo, &world, &expect, &tag).await, "{tag}");
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
    });
}
