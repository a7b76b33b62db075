//! Deep trees (issue 18, item 4): walks are iterative, so depth costs memory and never the
//! stack. A directory tree 2,000 levels deep backs up, restores, checks, copies and prunes; a
//! snapshot crafted to nest 20,000 directories works or fails with a clear error in every
//! command, never with "stack overflow" (the harness fails any run that dies of a signal or
//! panics).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn::compress::Compression;
use cairn::crypto::KdfParams;
use cairn::format::Timestamp;
use cairn::format::pack::BlobKind;
use cairn::format::snapshot::{Snapshot, Summary};
use cairn::format::tree::{Extent, Node, NodeKind, Tree};
use cairn::repo::packer::BlobSink;
use cairn::repo::{InitOptions, OpenOptions, Repository};
use common::*;

/// `root/d/d/.../d/leaf.txt`, `levels` directories below `root`.
fn deep_dirs(root: &Path, levels: usize) -> PathBuf {
    let mut p = root.to_path_buf();
    for _ in 0..levels {
        p.push("d");
    }
    std::fs::create_dir_all(&p).unwrap();
    write(&p.join("leaf.txt"), b"at the bottom\n");
    p
}

#[test]
fn a_tree_2000_levels_deep_backs_up_restores_checks_and_prunes() {
    let env = Env::with_repo();
    let src = env.path("s");
    let bottom = deep_dirs(&src, 2000);
    write(&src.join("top.txt"), b"at the top\n");
    let m = Manifest::capture(&src);
    let first = env.backup(&[&src], &[]);
    // The 2,000 levels and the three directories on the way to the source.
    assert_eq!(first["summary"]["dirs"], 2003, "{first}");
    // Unchanged: the parent's trees are followed all the way down.
    let again = env.backup(&[&src], &[]);
    assert_eq!(again["summary"]["files_unmodified"], 2, "{again}");
    assert_eq!(again["summary"]["tree_blobs_added"], 0, "{again}");

    let t = env.path("r");
    env.restore(&format!("latest:{}", src.display()), &t, &[]);
    assert_same_tree(&m, &t, Compare::default());

    env.run(["check", "--read-data"]).ok();
    let ls = env.run(["ls", "latest"]).ok().stdout_str();
    assert!(ls.contains("leaf.txt"), "ls does not reach the bottom");
    env.run(["stats"]).ok();
    let dumped = env
        .run([
            "dump",
            &format!("latest:{}", bottom.join("leaf.txt").display()),
        ])
        .ok();
    assert_eq!(dumped.stdout, b"at the bottom\n");

    // A copy, then forgetting and pruning the first snapshot.
    let other = Env::new_local();
    other.run(["init"]).ok();
    env.cmd()
        .args(["copy", "--to"])
        .arg(&other.repo)
        .env("CAIRN_TO_PASSWORD", PASSWORD)
        .run()
        .ok();
    other.run(["check", "--read-data"]).ok();
    let first_id = first["snapshot_id"].as_str().unwrap();
    env.run(["forget", first_id]).ok();
    env.run(["prune", "--grace", "0s"]).ok();
    env.run(["check", "--read-data"]).ok();
}

/// A snapshot whose root holds `levels` nested directories `d`, the deepest holding `f`,
/// written through the library (no file system allows such a path).
fn crafted_snapshot(env: &Env, levels: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend = cairn::backend::open(env.repo.to_str().unwrap()).unwrap();
        let init = InitOptions {
            kdf: KdfParams::INSECURE_FOR_TESTS,
            ..Default::default()
        };
        let repo = Arc::new(
            Repository::init(
                backend,
                PASSWORD.as_bytes(),
                &init,
                &OpenOptions::new(&env.cache),
            )
            .await
            .unwrap(),
        );
        let (sink, uploader) = BlobSink::start(repo.clone(), Compression::Auto, false).unwrap();
        let r2 = repo.clone();
        let root = tokio::task::spawn_blocking(move || {
            let data = b"deep down\n".to_vec();
            let id = r2.keys().blob_id(&data);
            sink.save(BlobKind::Data, id, &data).unwrap();
            let mut file = Node::new(b"f".to_vec(), NodeKind::File);
            file.mode = 0o644;
            file.size = data.len() as u64;
            file.links = 1;
            file.content = vec![Extent::Data {
                id,
                len: data.len() as u32,
            }];
            let mut nodes = vec![file];
            for _ in 0..levels {
                let tree = Tree { nodes }.encode();
                let id = r2.keys().blob_id(&tree);
                sink.save(BlobKind::Tree, id, &tree).unwrap();
                let mut d = Node::new(b"d".to_vec(), NodeKind::Dir);
                d.mode = 0o755;
                d.subtree = Some(id);
                nodes = vec![d];
            }
            let tree = Tree { nodes }.encode();
            let id = r2.keys().blob_id(&tree);
            sink.save(BlobKind::Tree, id, &tree).unwrap();
            (id, sink)
        })
        .await
        .unwrap();
        let (tree, sink) = root;
        sink.flush().await.unwrap();
        uploader.finish().await.unwrap();
        repo.save_snapshot(&Snapshot {
            time: Timestamp::new(1_800_000_000, 0),
            tree,
            paths: vec!["/deep".into()],
            host: "crafted".into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            tags: vec![],
            parent: None,
            source: "files".into(),
            program: "tests/deep_trees.rs".into(),
            summary: Summary::default(),
            meta: vec![],
        })
        .await
        .unwrap();
    });
}

#[test]
fn a_snapshot_20000_levels_deep_never_aborts() {
    let env = Env::new_local();
    crafted_snapshot(&env, 20_000);
    // Reading commands work.
    env.run(["check", "--read-data"]).ok();
    let ls = env.run(["ls", "latest"]).ok().stdout_str();
    assert_eq!(ls.lines().filter(|l| l.ends_with("/f")).count(), 1);
    env.run(["stats"]).ok();
    let deep = "/d".repeat(20_000) + "/f";
    let dumped = env.run(["dump", &format!("latest:{deep}")]).ok();
    assert_eq!(dumped.stdout, b"deep down\n");
    // A restore cannot make paths that long: a clear error per entry, never an abort.
    let t = env.path("r");
    let r = env
        .cmd()
        .args(["restore", "latest", "--target"])
        .arg(&t)
        .run();
    assert!(r.code == 0 || r.code == 1, "{r}");
    if r.code == 1 {
        assert!(
            r.stderr.contains("too long") || r.stderr.contains("deep"),
            "{r}"
        );
    }
    // Copying and pruning walk it all too.
    let other = Env::new_local();
    other.run(["init"]).ok();
    env.cmd()
        .args(["copy", "--to"])
        .arg(&other.repo)
        .env("CAIRN_TO_PASSWORD", PASSWORD)
        .run()
        .ok();
    other.run(["check"]).ok();
    env.run(["prune", "--grace", "0s"]).ok();
    env.run(["check"]).ok();
    // A backup whose parent is that snapshot (same host and paths) is not disturbed by it.
    let src = env.path("deep");
    write(&src.join("f"), b"shallow\n");
    env.cmd()
        .args(["backup", "--host", "crafted", "--parent", "latest"])
        .arg(&src)
        .run()
        .ok();
}
