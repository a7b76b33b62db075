//! Restore never writes through a symlink that is in the target (issue 18, item 3): a link where
//! the snapshot has a directory, a file, a symlink, a FIFO or a hard link is replaced by the
//! snapshot's entry, and nothing outside the target changes (contents, entries, modes, owners,
//! modification times). Entries of the wrong type are replaced too; a non-empty directory where
//! the snapshot has a file is an error for that entry and is left alone.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;

/// What a directory outside the target holds: every entry's metadata (access times aside:
/// they are not the restore's to keep) and every file's bytes.
#[derive(Debug, PartialEq, Eq)]
struct Outside(BTreeMap<Vec<u8>, (Meta, Option<Vec<u8>>)>);

impl Outside {
    fn capture(dir: &Path) -> Outside {
        let m = Manifest::capture(dir);
        let mut out = BTreeMap::new();
        for (rel, mut meta) in m.entries {
            meta.atime = (0, 0);
            let bytes = (meta.kind == "file").then(|| {
                let mut v = Vec::new();
                open_noatime(&bpath(dir, &rel)).read_to_end(&mut v).unwrap();
                v
            });
            out.insert(rel, (meta, bytes));
        }
        Outside(out)
    }

    fn assert_unchanged(&self, dir: &Path) {
        let now = Outside::capture(dir);
        if now != *self {
            let mut diffs = Vec::new();
            for (k, v) in &self.0 {
                match now.0.get(k) {
                    None => diffs.push(format!("{:?} removed", String::from_utf8_lossy(k))),
                    Some(w) if w != v => diffs.push(format!(
                        "{:?} changed: before {}, after {}",
                        String::from_utf8_lossy(k),
                        show(v),
                        show(w)
                    )),
                    _ => {}
                }
            }
            for k in now.0.keys().filter(|k| !self.0.contains_key(*k)) {
                diffs.push(format!("{:?} created", String::from_utf8_lossy(k)));
            }
            panic!(
                "restore changed {} outside the target:\n  {}",
                dir.display(),
                diffs.join("\n  ")
            );
        }
    }
}

/// An entry's metadata and contents, briefly.
fn show((m, bytes): &(Meta, Option<Vec<u8>>)) -> String {
    let contents = match bytes {
        Some(b) if b.len() <= 64 => format!(", contents {:?}", String::from_utf8_lossy(b)),
        Some(b) => format!(", {} bytes of contents", b.len()),
        None => String::new(),
    };
    format!(
        "{} mode {:o} owner {}:{} mtime {:?} inode {} links {}{}{contents}",
        m.kind,
        m.mode,
        m.uid,
        m.gid,
        m.mtime,
        m.ino,
        m.nlink,
        m.target
            .as_ref()
            .map(|t| format!(" -> {:?}", String::from_utf8_lossy(t)))
            .unwrap_or_default()
    )
}

/// A directory outside every target, with a file in it, distinctive mode and times.
fn outside_dir(env: &Env, name: &str, files: &[&str]) -> std::path::PathBuf {
    let d = env.path(name);
    fs::create_dir_all(&d).unwrap();
    for f in files {
        write(&d.join(f), format!("outside {f}\n").as_bytes());
        chmod(&d.join(f), 0o644);
        set_times(&d.join(f), (1_000_000_000, 1), (1_000_000_000, 2));
    }
    chmod(&d, 0o755);
    set_times(&d, (1_000_000_000, 3), (1_000_000_000, 4));
    d
}

/// Give every entry below `root` (and `root`) a mode and times no outside entry has, so that a
/// restore applying them through a link shows.
fn distinctive_metadata(root: &Path) {
    let mut all = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        all.push(p);
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        let m = fs::symlink_metadata(p).unwrap();
        if m.is_dir() {
            chmod(p, 0o750);
        } else if m.is_file() {
            chmod(p, 0o640);
        }
        let i = i as i64;
        set_times(p, (1_400_000_000 + i, 5), (1_300_000_000 + i, 6));
    }
}

fn restore_code(env: &Env, spec: &str, target: &Path, extra: &[&str], code: i32) -> Out {
    env.cmd()
        .args(["restore", "--json", spec, "--target"])
        .arg(target)
        .args(extra)
        .run()
        .code(code)
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// (a) The target has `dir -> /outside` where the snapshot has directory `dir` with files:
/// the link is replaced by a real directory, nothing is written into `/outside`.
#[test]
fn symlink_where_the_snapshot_has_a_directory() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("dir/f1"), b"one\n");
    write(&src.join("dir/keep"), b"the snapshot's keep\n");
    write(&src.join("dir/sub/f2"), &random_bytes(1, 3 << 20));
    write(&src.join("dir/empty"), b"");
    symlink("f1", src.join("dir/link")).unwrap();
    mkfifo(&src.join("dir/fifo"));
    distinctive_metadata(&src);
    let manifest = Manifest::capture(&src);
    env.backup(&[&src], &[]);

    let outside = outside_dir(&env, "outside", &["keep", "f1", "empty", "link", "fifo"]);
    let before = Outside::capture(&outside);
    let t = env.path("t");
    fs::create_dir(&t).unwrap();
    symlink(&outside, t.join("dir")).unwrap();

    let r = env.restore(&format!("latest:{}", src.display()), &t, &[]);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    before.assert_unchanged(&outside);
    assert!(!is_symlink(&t.join("dir")), "the link is still there");
    assert_same_tree(&manifest, &t, Compare::default());
}

/// (b) The target has `file -> /outside/victim` where the snapshot has a regular file (small,
/// several chunks, empty), at the top and one level down, and when one file is restored
/// (`SNAP:PATH`): the links are replaced by the snapshot's files, the victims keep their bytes.
#[test]
fn symlink_where_the_snapshot_has_a_file() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("small"), b"the snapshot's small file\n");
    write(&src.join("big"), &random_bytes(2, 3 << 20));
    write(&src.join("empty"), b"");
    write(&src.join("sub/small"), b"one level down\n");
    write(&src.join("sub/big"), &random_bytes(3, 3 << 20));
    distinctive_metadata(&src);
    let manifest = Manifest::capture(&src);
    env.backup(&[&src], &[]);

    let outside = outside_dir(&env, "outside", &["v1", "v2", "v3", "v4", "v5", "v6"]);
    let before = Outside::capture(&outside);
    let t = env.path("t");
    fs::create_dir_all(t.join("sub")).unwrap();
    symlink(outside.join("v1"), t.join("small")).unwrap();
    symlink(outside.join("v2"), t.join("big")).unwrap();
    symlink(outside.join("v3"), t.join("empty")).unwrap();
    symlink("../../outside/v4", t.join("sub/small")).unwrap();
    symlink(outside.join("v5"), t.join("sub/big")).unwrap();
    let r = env.restore(&format!("latest:{}", src.display()), &t, &[]);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    before.assert_unchanged(&outside);
    assert_same_tree(&manifest, &t, Compare::default());

    // One file of the snapshot, into a target where its name is a link.
    let t1 = env.path("t1");
    fs::create_dir(&t1).unwrap();
    symlink(outside.join("v6"), t1.join("big")).unwrap();
    let r = env.restore(&format!("latest:{}/big", src.display()), &t1, &[]);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    before.assert_unchanged(&outside);
    assert!(!is_symlink(&t1.join("big")));
    assert_eq!(
        first_difference(&src.join("big"), &t1.join("big")),
        None,
        "contents"
    );
}

/// (c) A link at a deeper component: the target has `a/b -> /outside` (absolute) and
/// `x/y -> ../../outside2` (relative) where the snapshot has `a/b/c/file` and `x/y/z/file`; also
/// with `--include` selecting only the files below.
#[test]
fn symlink_at_a_deeper_component() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a/b/c/file"), b"deep file\n");
    write(&src.join("a/b/c/big"), &random_bytes(4, 2 << 20));
    write(&src.join("a/b/top"), b"b's own file\n");
    write(&src.join("x/y/z/file"), b"another deep file\n");
    distinctive_metadata(&src);
    let manifest = Manifest::capture(&src);
    env.backup(&[&src], &[]);

    let outside = outside_dir(&env, "outside", &["top", "c/file"]);
    let outside2 = outside_dir(&env, "outside2", &["z/file"]);
    let (before, before2) = (Outside::capture(&outside), Outside::capture(&outside2));
    let spec = format!("latest:{}", src.display());
    for (name, extra) in [("t", &[][..]), ("ti", &["--include", "file"][..])] {
        let t = env.path(name);
        fs::create_dir_all(t.join("a")).unwrap();
        fs::create_dir_all(t.join("x")).unwrap();
        symlink(&outside, t.join("a/b")).unwrap();
        symlink("../../outside2", t.join("x/y")).unwrap();
        let r = env.restore(&spec, &t, extra);
        assert_eq!(r["errors"], serde_json::json!([]), "{name}: {r}");
        before.assert_unchanged(&outside);
        before2.assert_unchanged(&outside2);
        assert!(!is_symlink(&t.join("a/b")) && !is_symlink(&t.join("x/y")));
        if extra.is_empty() {
            assert_same_tree(&manifest, &t, Compare::default());
        } else {
            assert_eq!(fs::read(t.join("a/b/c/file")).unwrap(), b"deep file\n");
            assert_eq!(
                fs::read(t.join("x/y/z/file")).unwrap(),
                b"another deep file\n"
            );
            assert!(!t.join("a/b/top").exists());
        }
    }
}

/// (d) Links where the snapshot has a symlink, a FIFO and a hard-linked pair, in the target's
/// top directory and below a link to a directory that holds entries of those names.
#[test]
fn symlink_where_the_snapshot_has_a_link_a_fifo_or_hard_links() {
    let env = Env::with_repo();
    let src = env.path("src");
    for d in ["", "d/"] {
        write(&src.join(format!("{d}pair1")), b"two names, one inode\n");
        fs::hard_link(src.join(format!("{d}pair1")), src.join(format!("{d}pair2"))).unwrap();
        symlink("pair1", src.join(format!("{d}link"))).unwrap();
        mkfifo(&src.join(format!("{d}fifo")));
    }
    distinctive_metadata(&src);
    let manifest = Manifest::capture(&src);
    env.backup(&[&src], &[]);

    let names = ["pair1", "pair2", "link", "fifo"];
    let outside = outside_dir(&env, "outside", &names);
    let outside_d = outside_dir(&env, "outside-d", &names);
    let (before, before_d) = (Outside::capture(&outside), Outside::capture(&outside_d));
    let t = env.path("t");
    fs::create_dir(&t).unwrap();
    for n in names {
        symlink(outside.join(n), t.join(n)).unwrap();
    }
    symlink(&outside_d, t.join("d")).unwrap();
    let r = env.restore(&format!("latest:{}", src.display()), &t, &[]);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    before.assert_unchanged(&outside);
    before_d.assert_unchanged(&outside_d);
    assert_same_tree(&manifest, &t, Compare::default());
}

/// `--verify` re-reads what the restore wrote, never what a link in the target points to.
#[test]
fn verify_does_not_read_through_links() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("file"), b"the snapshot's file\n");
    write(&src.join("dir/big"), &random_bytes(5, 3 << 20));
    write(&src.join("dir/small"), b"small\n");
    distinctive_metadata(&src);
    let manifest = Manifest::capture(&src);
    env.backup(&[&src], &[]);

    let outside = outside_dir(&env, "outside", &["victim", "big", "small"]);
    let before = Outside::capture(&outside);
    let t = env.path("t");
    fs::create_dir(&t).unwrap();
    symlink(outside.join("victim"), t.join("file")).unwrap();
    symlink(&outside, t.join("dir")).unwrap();
    let r = env.restore(&format!("latest:{}", src.display()), &t, &["--verify"]);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["verified_files"], 3, "{r}");
    before.assert_unchanged(&outside);
    assert_same_tree(&manifest, &t, Compare::default());
}

/// Entries of the wrong type: a regular file where the snapshot has a directory and an empty
/// directory where it has a file are replaced; a non-empty directory where it has a file is an
/// error that names the entry, and is left as it was; everything else is restored.
#[test]
fn entries_of_the_wrong_type_in_the_target() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("was-file/inner"), b"inner\n");
    write(&src.join("was-empty-dir"), b"a file now\n");
    write(&src.join("was-full-dir"), b"cannot replace a tree\n");
    write(&src.join("other"), b"other\n");
    env.backup(&[&src], &[]);

    let t = env.path("t");
    write(&t.join("was-file"), b"a file in the way\n");
    fs::create_dir_all(t.join("was-empty-dir")).unwrap();
    write(&t.join("was-full-dir/precious"), b"keep me\n");
    let out = restore_code(&env, &format!("latest:{}", src.display()), &t, &[], 1);
    let v = out.json();
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{v}");
    let e = errors[0].as_str().unwrap();
    assert!(e.contains("was-full-dir"), "{v}");
    assert_eq!(
        fs::read(t.join("was-full-dir/precious")).unwrap(),
        b"keep me\n"
    );
    assert_eq!(fs::read(t.join("was-file/inner")).unwrap(), b"inner\n");
    assert_eq!(fs::read(t.join("was-empty-dir")).unwrap(), b"a file now\n");
    assert_eq!(fs::read(t.join("other")).unwrap(), b"other\n");
}

/// The target itself may be a link (the user named it): restore goes where it points.
#[test]
fn a_target_that_is_a_link_is_followed() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("dir/file"), b"file\n");
    distinctive_metadata(&src);
    let manifest = Manifest::capture(&src);
    env.backup(&[&src], &[]);
    let real = env.path("real");
    fs::create_dir(&real).unwrap();
    let link = env.path("link");
    symlink(&real, &link).unwrap();
    let r = env.restore(&format!("latest:{}", src.display()), &link, &[]);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert!(is_symlink(&link));
    assert_same_tree(&manifest, &real, Compare::default());
}
