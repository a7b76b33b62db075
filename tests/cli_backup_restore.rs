//! End-to-end: back up with the real binary, restore, and compare contents and metadata;
//! incremental and deduplicated re-backups; no plaintext in an encrypted repository.

mod common;

use std::fs;

use common::*;

/// The rich tree (every kind of entry and metadata) restores identical, whether a sub-path is
/// restored (`SNAP:PATH`), the whole snapshot, or with `--verify`.
#[test]
fn rich_tree_restores_identical() {
    let env = Env::with_repo();
    let src = env.path("src");
    let rich = build_rich_tree(&src);
    let manifest = Manifest::capture(&src);

    if !rich.has_device {
        eprintln!("note: no character device in the rich tree (mknod not permitted)");
    }
    let b = env.backup(&[&src], &["--with-atime"]);
    let s = &b["summary"];
    assert_eq!(b["errors"], serde_json::json!([]), "{b}");
    assert_eq!(s["total_files"], rich.files, "{b}");
    assert_eq!(s["other_nodes"], if rich.has_device { 7 } else { 6 }, "{b}");
    assert_eq!(s["files_new"], rich.files, "{b}");
    assert_eq!(s["files_unmodified"], 0, "{b}");
    let logical: u64 = manifest
        .entries
        .values()
        .filter(|m| m.kind == "file")
        .map(|m| m.size)
        .sum();
    assert_eq!(s["total_bytes"], logical, "{b}");

    // The source directory's contents, into a target.
    let t1 = env.path("restore-sub");
    let spec = format!("latest:{}", src.display());
    let r = env.restore(&spec, &t1, &[]);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["files"], rich.files, "{r}");
    let same = Compare {
        atime: Atime::Same,
        ..Compare::default()
    };
    assert_same_tree(&manifest, &t1, same);

    // The whole snapshot: the source directory sits at its absolute path below the target,
    // with its own metadata.
    let t2 = env.path("restore-all");
    env.restore("latest", &t2, &[]);
    let inner = t2.join(src.strip_prefix("/").unwrap());
    assert_same_tree(
        &manifest,
        &inner,
        Compare {
            root_meta: true,
            ..same
        },
    );
}

/// `restore --verify` re-reads every restored file, checks it against the snapshot, and
/// leaves the restored tree (access times included) exactly as the source.
#[test]
fn restore_verify_checks_every_file_and_keeps_metadata() {
    let env = Env::with_repo();
    let src = env.path("src");
    let rich = build_rich_tree(&src);
    let manifest = Manifest::capture(&src);
    env.backup(&[&src], &["--with-atime"]);
    let t = env.path("restore");
    let r = env.restore(&format!("latest:{}", src.display()), &t, &["--verify"]);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    // Hard links are verified once per inode: three names of one inode, two of another.
    assert_eq!(r["verified_files"], rich.files - 3, "{r}");
    let same = Compare {
        atime: Atime::Same,
        ..Compare::default()
    };
    assert_same_tree(&manifest, &t, same);
}

/// Restoring again into the same target (over what the first restore wrote, read-only
/// directories, hard links, symlinks and FIFOs included) gives the same tree again.
#[test]
fn restore_twice_into_the_same_target() {
    let env = Env::with_repo();
    let src = env.path("src");
    build_rich_tree(&src);
    let manifest = Manifest::capture(&src);
    env.backup(&[&src], &[]);
    let t = env.path("restore");
    let spec = format!("latest:{}", src.display());
    env.restore(&spec, &t, &[]);
    // Disturb the first restore a little.
    fs::write(t.join("plain.txt"), b"changed since").unwrap();
    fs::remove_file(t.join("hardlinks/b")).unwrap();
    let r = env.restore(&spec, &t, &[]);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_same_tree(&manifest, &t, Compare::default());
}

/// A user without root's powers restores a tree of their own: contents, modes (0000 and
/// setuid included), times, xattrs, hard links, symlinks, FIFOs and holes come back; owners
/// cannot be given away and become the user's. `--verify` can read even a 0000 file.
#[test]
fn restore_as_an_ordinary_user() {
    if !is_root() {
        eprintln!("SKIPPED restore_as_an_ordinary_user: needs root to back up a 0000 file");
        return;
    }
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("plain.txt"), b"plain\n");
    write(&src.join("no-access"), b"mode 0000\n");
    write(&src.join("ro-dir/inside"), b"in a read-only directory\n");
    write(&src.join("big.bin"), &random_bytes(4, 2 << 20));
    fs::hard_link(src.join("plain.txt"), src.join("ro-dir/link")).unwrap();
    std::os::unix::fs::symlink("plain.txt", src.join("sym")).unwrap();
    mkfifo(&src.join("fifo"));
    xattr::set(src.join("plain.txt"), "user.k", b"v").unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(src.join("sparse")).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"x", 32 << 20).unwrap();
    }
    chmod(&src.join("no-access"), 0o000);
    chmod(&src.join("big.bin"), 0o4755);
    set_times(&src.join("big.bin"), (1, 2), (3, 4));
    chmod(&src.join("ro-dir"), 0o555);
    let manifest = Manifest::capture(&src);
    env.backup(&[&src], &[]);
    env.give_to(NOBODY, NOBODY);
    let t = env.path("restore");
    fs::create_dir(&t).unwrap();
    lchown(&t, NOBODY, NOBODY);
    let r = env
        .cmd()
        .args([
            "restore",
            "--json",
            "--verify",
            &format!("latest:{}", src.display()),
            "--target",
        ])
        .arg(&t)
        .run_as(NOBODY, NOBODY)
        .run()
        .ok()
        .json();
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["verified_files"], 5, "{r}");
    assert_same_tree(
        &manifest,
        &t,
        Compare {
            owner: false,
            ..Compare::default()
        },
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(t.join("plain.txt")).unwrap().uid(), NOBODY);
}

/// Two identical large files are stored once, and `stats` says so.
#[test]
fn identical_files_are_stored_once() {
    let env = Env::with_repo();
    let src = env.path("src");
    let big = random_bytes(99, BIG_LEN);
    write(&src.join("a/one.bin"), &big);
    write(&src.join("b/two.bin"), &big);
    write(&src.join("c/three.bin"), &big);
    let b = env.backup(&[&src], &[]);
    let s = &b["summary"];
    assert_eq!(s["total_bytes"], 3 * BIG_LEN as u64, "{b}");
    let added = s["new_data_bytes"].as_u64().unwrap();
    assert!(
        added >= BIG_LEN as u64 && added < BIG_LEN as u64 + (64 << 10),
        "three identical files of {BIG_LEN} bytes added {added} bytes: {b}"
    );
    let repo = env.repo_bytes();
    assert!(
        repo < BIG_LEN as u64 + (256 << 10),
        "repository holds {repo} bytes for one {BIG_LEN}-byte file stored three times"
    );
    let st = env.run(["stats", "--json"]).ok().json();
    assert_eq!(st["snapshots"], 1, "{st}");
    assert_eq!(st["files"], 3, "{st}");
    assert_eq!(st["logical_bytes"], 3 * BIG_LEN as u64, "{st}");
    let raw = st["raw_bytes"].as_u64().unwrap();
    assert!(raw < BIG_LEN as u64 + (64 << 10), "{st}");
    let ratio = st["dedup_ratio"].as_f64().unwrap();
    assert!(ratio > 2.9 && ratio <= 3.0, "dedup ratio {ratio}: {st}");
    assert!(st["repository_bytes"].as_u64().unwrap() > raw, "{st}");
}

/// Files whose chunks repeat (long runs of zeros written as data, a block written twice) are
/// restored with every copy in place (one blob written at several offsets), and the zeros are
/// stored once.
#[test]
fn repeated_chunks_within_a_file() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("zeros.bin"), &vec![0u8; 20 << 20]);
    let block = random_bytes(17, 3 << 20);
    write(
        &src.join("twice.bin"),
        &[&block[..], &block[..], b"tail"].concat(),
    );
    let manifest = Manifest::capture(&src);
    assert!(
        manifest.get("zeros.bin").blocks * 512 >= 20 << 20,
        "zeros.bin is sparse"
    );
    let b = env.backup(&[&src], &[]);
    // 20 MiB of zeros cost next to nothing (a few identical, compressible chunks); the twice-
    // written block at most its two copies (cut points need not line up again after the seam).
    let stored = b["summary"]["stored_bytes_added"].as_u64().unwrap();
    assert!(
        stored < (6 << 20) + (256 << 10),
        "{stored} bytes stored for 20 MiB of zeros and 6 MiB of data: {b}"
    );
    let t = env.path("restore");
    env.restore(&format!("latest:{}", src.display()), &t, &["--verify"]);
    assert_same_tree(&manifest, &t, Compare::default());
}

/// An unchanged re-backup reads nothing, adds no data and under 1 MiB to the repository; its
/// parent is the first snapshot; it restores identical.
#[test]
fn unchanged_rebackup_adds_under_one_mib() {
    let env = Env::with_repo();
    let src = env.path("src");
    let rich = build_rich_tree(&src);
    let first = env.backup(&[&src], &[]);
    // Listing directories and reading links during the first backup updated their access
    // times (relatime): the second snapshot records those.
    let manifest = Manifest::capture(&src);
    let before = env.repo_bytes();
    let second = env.backup(&[&src], &[]);
    let grew = env.repo_bytes() - before;
    let s = &second["summary"];
    assert_eq!(second["parent"], first["snapshot_id"], "{second}");
    assert_eq!(s["files_unmodified"], rich.files, "{second}");
    assert_eq!(s["files_new"], 0, "{second}");
    assert_eq!(s["files_changed"], 0, "{second}");
    assert_eq!(s["data_blobs_added"], 0, "{second}");
    assert_eq!(s["total_files"], rich.files, "{second}");
    assert_eq!(
        s["total_bytes"], first["summary"]["total_bytes"],
        "{second}"
    );
    assert!(grew < 1 << 20, "an unchanged re-backup added {grew} bytes");
    assert_eq!(env.snapshots().len(), 2);
    let t = env.path("restore");
    let id = second["snapshot_id"].as_str().unwrap();
    env.restore(&format!("{}:{}", &id[..8], src.display()), &t, &[]);
    assert_same_tree(&manifest, &t, Compare::default());
}

/// Unchanged nights add no tree, whatever happens to the access times: by default none are
/// recorded, and with `--with-atime` cairn's own reading of the directories must not move them
/// (relatime refreshes an access time older than a day on the next read).
#[test]
fn unchanged_nights_add_no_tree_whatever_the_access_times() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::with_repo();
    let src = env.path("src");
    let mut dirs = vec![src.clone()];
    for d in 0..20 {
        for f in 0..4 {
            write(
                &src.join(format!("d{d}/sub/f{f}")),
                format!("{d} {f}\n").as_bytes(),
            );
        }
        dirs.push(src.join(format!("d{d}")));
        dirs.push(src.join(format!("d{d}/sub")));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // As on a later night: every directory last read two days ago.
    let age_access_times = || {
        for d in &dirs {
            let m = std::fs::symlink_metadata(d).unwrap();
            set_times(d, (now - 2 * 86_400, 0), (m.mtime(), m.mtime_nsec() as u32));
        }
    };
    let trees_added = |v: &serde_json::Value| v["summary"]["tree_blobs_added"].as_u64().unwrap();
    // The snapshot also holds the directories on the way to the source with their own
    // metadata: the test's directory (unchanged, so the tree naming `src` is stored once), and
    // above it the trees of `/` and of the temporary directory, which record the times of the
    // temporary directory and of this test's directory; parallel tests (and their S3 servers)
    // create files there at any moment. Those two may be stored again; no tree of the source.
    let outside = (src.ancestors().count() - 2) as u64;
    assert!(outside < 20, "{}", src.display());
    // (Setting the times changes the directories' ctime, so the ageing comes before a first
    // backup, as on a tree nobody has read for two days.)
    age_access_times();
    env.backup(&[&src], &[]);
    let second = env.backup(&[&src], &[]);
    assert!(trees_added(&second) <= outside, "{second}");
    assert_eq!(second["summary"]["data_blobs_added"], 0, "{second}");

    age_access_times();
    env.backup(&[&src], &["--with-atime"]);
    let fourth = env.backup(&[&src], &["--with-atime"]);
    assert!(
        trees_added(&fourth) <= outside,
        "cairn moved access times: {fourth}"
    );
    for d in &dirs {
        let m = std::fs::symlink_metadata(d).unwrap();
        assert_eq!(
            m.atime(),
            now - 2 * 86_400,
            "{} was read with its atime",
            d.display()
        );
    }
}

/// Incremental backup: new, changed and unchanged files are told apart; a changed file is
/// read again even if only its metadata changed; both snapshots restore their own contents.
#[test]
fn incremental_backup_reads_only_changed_files() {
    let env = Env::with_repo();
    let src = env.path("src");
    for i in 0..10 {
        write(
            &src.join(format!("f{i}.txt")),
            format!("file {i}\n").as_bytes(),
        );
    }
    write(&src.join("sub/big.bin"), &random_bytes(5, 2 << 20));
    let first = env.backup(&[&src], &[]);
    assert_eq!(first["summary"]["files_new"], 11, "{first}");

    // Change one file's contents, another's mtime only, delete one, add one.
    write(&src.join("f1.txt"), b"file 1, changed\n");
    set_times(&src.join("f2.txt"), (1_000_000_000, 0), (1_600_000_000, 5));
    fs::remove_file(src.join("f3.txt")).unwrap();
    write(&src.join("sub/new.txt"), b"new\n");
    let manifest = Manifest::capture(&src);
    let second = env.backup(&[&src], &[]);
    let s = &second["summary"];
    assert_eq!(second["parent"], first["snapshot_id"], "{second}");
    assert_eq!(s["files_new"], 1, "{second}");
    assert_eq!(s["files_changed"], 2, "{second}");
    assert_eq!(s["files_unmodified"], 8, "{second}");
    assert_eq!(s["total_files"], 11, "{second}");
    // Only f1's new contents and the new file are new data (f2's contents are known).
    assert_eq!(s["data_blobs_added"], 2, "{second}");

    let t2 = env.path("restore-2");
    env.restore(&format!("latest:{}", src.display()), &t2, &[]);
    assert_same_tree(&manifest, &t2, Compare::default());

    // The first snapshot still has the old state.
    let id1 = first["snapshot_id"].as_str().unwrap();
    let t1 = env.path("restore-1");
    env.restore(&format!("{}:{}", &id1[..10], src.display()), &t1, &[]);
    assert_eq!(fs::read(t1.join("f1.txt")).unwrap(), b"file 1\n");
    assert_eq!(fs::read(t1.join("f3.txt")).unwrap(), b"file 3\n");
    assert!(!t1.join("sub/new.txt").exists());
}

/// Proof that unchanged files are not read: after the first backup (as root), every file is
/// made unreadable to the user running the second backup (by running it as `nobody`), without
/// changing any file's size, mtime, ctime or inode. The second backup succeeds because it
/// reads none of them; with `--force` it must read them all and reports each as unreadable.
#[test]
fn unchanged_files_are_not_read_again() {
    if !is_root() {
        eprintln!("SKIPPED unchanged_files_are_not_read_again: needs root to switch users");
        return;
    }
    let env = Env::with_repo();
    let src = env.path("src");
    for i in 0..5 {
        write(&src.join(format!("secret-{i}")), &random_bytes(i, 10_000));
        chmod(&src.join(format!("secret-{i}")), 0o600);
    }
    chmod(&src, 0o755);
    let first = env.backup(&[&src], &[]);
    assert_eq!(first["summary"]["files_new"], 5);
    env.give_to(NOBODY, NOBODY);

    let second = env
        .cmd()
        .args(["backup", "--json"])
        .arg(&src)
        .run_as(NOBODY, NOBODY)
        .run()
        .ok()
        .json();
    assert_eq!(second["errors"], serde_json::json!([]), "{second}");
    assert_eq!(second["summary"]["files_unmodified"], 5, "{second}");
    assert_eq!(second["summary"]["total_files"], 5, "{second}");

    let forced = env
        .cmd()
        .args(["backup", "--json", "--force"])
        .arg(&src)
        .run_as(NOBODY, NOBODY)
        .run()
        .code(3)
        .json();
    assert_eq!(
        forced["errors"].as_array().map(|a| a.len()),
        Some(5),
        "{forced}"
    );
}

/// The bytes read from the source are reported truthfully: an unchanged re-backup reads none.
#[test]
fn unchanged_rebackup_reports_no_bytes_read() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.bin"), &random_bytes(1, 1 << 20));
    write(&src.join("b.txt"), b"b\n");
    let first = env.backup(&[&src], &[]);
    assert_eq!(first["summary"]["bytes_read"], (1 << 20) + 2, "{first}");
    write(&src.join("b.txt"), b"bb\n");
    let second = env.backup(&[&src], &[]);
    assert_eq!(second["summary"]["files_unmodified"], 1, "{second}");
    assert_eq!(second["summary"]["bytes_read"], 3, "{second}");
}

/// An encrypted repository holds no plaintext of file contents, file or directory names, or
/// the password; the same search finds them in an unencrypted, uncompressed repository (so the
/// search itself works).
#[test]
fn encrypted_repository_contains_no_plaintext() {
    let content: &[u8] = b"CANARY-CONTENT-b7e0c3f1-the-quick-brown-fox";
    let name = "canary-name-5d2a94e8.txt";
    let dir_name = "canary-dir-0c81f7aa";
    let check = |encrypted: bool| -> Vec<(String, usize)> {
        let env = Env::new();
        if encrypted {
            env.run(["init"]).ok();
        } else {
            env.run(["init", "--encryption", "none"]).ok();
        }
        let src = env.path("src");
        write(&src.join(dir_name).join(name), &content.repeat(100));
        write(&src.join("other.txt"), content);
        env.backup(&[&src], &["--compression", "off"]);
        let mut found = Vec::new();
        for needle in [
            content,
            name.as_bytes(),
            dir_name.as_bytes(),
            PASSWORD.as_bytes(),
        ] {
            let hits = files_containing(&env.repo, needle);
            found.push((String::from_utf8_lossy(needle).into_owned(), hits.len()));
        }
        found
    };
    for (needle, hits) in check(true) {
        assert_eq!(
            hits, 0,
            "{needle:?} found in plaintext in an encrypted repository"
        );
    }
    let plain = check(false);
    for (needle, hits) in &plain[..3] {
        assert!(
            *hits > 0,
            "{needle:?} not found in an unencrypted repository: {plain:?}"
        );
    }
}

/// The rich tree in a repository without encryption round-trips as well (integrity-only mode
/// shares the whole pipeline but the cipher).
#[test]
fn unencrypted_repository_round_trip() {
    let env = Env::new();
    env.cmd()
        .args(["init", "--encryption", "none"])
        .env_remove("CAIRN_PASSWORD")
        .run()
        .ok();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("x/y.bin"), &random_bytes(3, 1 << 20));
    write(&src.join("z.txt"), b"zzz\n");
    let manifest = Manifest::capture(&src);
    let no_pw = |c: Cairn| c.env_remove("CAIRN_PASSWORD");
    no_pw(env.cmd().args(["backup", "--json"]).arg(&src))
        .run()
        .ok();
    let t = env.path("restore");
    no_pw(
        env.cmd()
            .args(["restore", &format!("latest:{}", src.display()), "--target"])
            .arg(&t),
    )
    .run()
    .ok();
    assert_same_tree(&manifest, &t, Compare::default());
}

/// Sparse files: the holes are not stored (the repository stays far smaller than the file),
/// and come back as holes.
#[test]
fn sparse_file_holes_stay_holes() {
    let env = Env::with_repo();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(src.join("disk.img")).unwrap();
        f.set_len(1 << 30).unwrap();
        f.write_all_at(&random_bytes(1, 1 << 16), 512 << 20)
            .unwrap();
    }
    let manifest = Manifest::capture(&src);
    let m = manifest.get("disk.img");
    assert!(
        m.blocks * 512 < 1 << 20,
        "the filesystem did not make a sparse file"
    );
    env.backup(&[&src], &[]);
    assert!(env.repo_bytes() < 1 << 20, "holes were stored");
    let t = env.path("restore");
    env.restore(&format!("latest:{}", src.display()), &t, &[]);
    assert_same_tree(&manifest, &t, Compare::default());
    let restored = fs::symlink_metadata(t.join("disk.img")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        restored.blocks() <= m.blocks + 8,
        "restored sparse file has {} blocks, source {}",
        restored.blocks(),
        m.blocks
    );
}

/// Backups running at the same time into one repository (overlapping cron jobs) all succeed,
/// even when they store the same data, and each snapshot restores its own tree.
#[test]
fn concurrent_backups_into_one_repository() {
    let env = Env::with_repo();
    let shared = random_bytes(1234, 2 << 20);
    let mut sources = Vec::new();
    for i in 0..4u64 {
        let src = env.path(&format!("src{i}"));
        write(&src.join("shared.bin"), &shared);
        write(&src.join("own.bin"), &random_bytes(i, 1 << 20));
        sources.push(src);
    }
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = sources
            .iter()
            .map(|src| s.spawn(|| env.backup(&[src], &[])))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap()["snapshot_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    });
    assert_eq!(env.snapshots().len(), 4);
    for (i, (id, src)) in ids.iter().zip(&sources).enumerate() {
        let manifest = Manifest::capture(src);
        let t = env.path(&format!("restore{i}"));
        env.restore(&format!("{id}:{}", src.display()), &t, &[]);
        assert_same_tree(&manifest, &t, Compare::default());
    }
}

/// The walker opens files ahead of their readers (so the kernel starts reading them early),
/// which can hold a few hundred files open. Under a low limit on open files that cannot be
/// raised, the backup must not run out of file descriptors: it reads every file and exits 0.
#[test]
fn backup_under_a_low_open_files_limit() {
    let env = Env::with_repo();
    let src = env.path("src");
    // Walked first: while the readers are busy with these, the walker runs ahead.
    for i in 0..8 {
        write(
            &src.join(format!("0big{i}")),
            &random_bytes(40 + i, 4 << 20),
        );
    }
    for d in 0..3 {
        for i in 0..300 {
            write(
                &src.join(format!("d{d}/f{i:03}")),
                format!("file {d}/{i}\n").repeat(i + 1).as_bytes(),
            );
        }
    }
    let manifest = Manifest::capture(&src);
    let out = env
        .cmd()
        .args(["backup", "--json"])
        .arg(&src)
        .wrapped(["prlimit", "--nofile=64:64"])
        .run();
    assert_eq!(out.code, 0, "{out}");
    let b = out.json();
    assert_eq!(b["summary"]["files_new"], 908, "{b}");
    let t = env.path("restore");
    let r = env.restore(&format!("latest:{}", src.display()), &t, &[]);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_same_tree(&manifest, &t, Compare::default());
}
