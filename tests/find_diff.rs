//! `cairn find` and `cairn diff` against a reference computed by walking restored trees
//! (issue 16): five snapshots of a tree churned between backups (contents, appends, renames,
//! deletions, additions, type changes, metadata-only changes), every pair of consecutive
//! snapshots and the first with the last, with and without `--metadata`, in `--json`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use serde_json::Value;

/// An entry of a restored tree, as `diff` and `find` compare it.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    kind: &'static str,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    /// A hash of the file's contents, link target or device number.
    content: u64,
}

fn capture(root: &Path, base: &str) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), base.to_string())];
    while let Some((p, name)) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let (kind, content) = if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap();
                stack.push((
                    e.path(),
                    format!("{name}/{}", e.file_name().to_string_lossy()),
                ));
            }
            ("dir", Vec::new())
        } else if ft.is_symlink() {
            use std::os::unix::ffi::OsStrExt;
            (
                "symlink",
                std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else if ft.is_file() {
            ("file", std::fs::read(&p).unwrap())
        } else if ft.is_fifo() {
            ("fifo", Vec::new())
        } else {
            ("other", m.rdev().to_le_bytes().to_vec())
        };
        let content = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            content.hash(&mut h);
            h.finish()
        };
        out.insert(
            name,
            Entry {
                kind,
                size: if kind == "file" { m.len() } else { 0 },
                mode: m.permissions().mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                content,
            },
        );
    }
    out
}

/// The changes `cairn diff --json` should list, as (path, change, old type, new type, old
/// size, new size).
type Row = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<u64>,
    Option<u64>,
);

fn reference_diff(
    a: &BTreeMap<String, Entry>,
    b: &BTreeMap<String, Entry>,
    metadata: bool,
) -> BTreeSet<Row> {
    let size = |e: &Entry| Some(e.size);
    let mut out = BTreeSet::new();
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for p in paths {
        let row = match (a.get(p), b.get(p)) {
            (Some(x), None) => Some(("removed", Some(x), None)),
            (None, Some(y)) => Some(("added", None, Some(y))),
            (Some(x), Some(y)) if x.kind != y.kind => Some(("type", Some(x), Some(y))),
            (Some(x), Some(y)) if x.content != y.content || x.size != y.size => {
                Some(("modified", Some(x), Some(y)))
            }
            (Some(x), Some(y))
                if metadata
                    && (x.mode != y.mode
                        || x.uid != y.uid
                        || x.gid != y.gid
                        || x.mtime != y.mtime) =>
            {
                Some(("metadata", Some(x), Some(y)))
            }
            _ => None,
        };
        if let Some((c, x, y)) = row {
            out.insert((
                p.clone(),
                c.to_string(),
                x.map(|e| e.kind.to_string()),
                y.map(|e| e.kind.to_string()),
                x.and_then(size),
                y.and_then(size),
            ));
        }
    }
    out
}

fn rows_of(diff: &Value) -> BTreeSet<Row> {
    let s = |v: &Value| v.as_str().map(str::to_string);
    diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                s(&c["path"]).unwrap(),
                s(&c["change"]).unwrap(),
                s(&c["old_type"]),
                s(&c["new_type"]),
                c["old_size"].as_u64(),
                c["new_size"].as_u64(),
            )
        })
        .collect()
}

/// A small deterministic random generator (xorshift), so the churn is the same every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    filetime::set_symlink_file_times(
        p,
        filetime::FileTime::from_unix_time(secs, nanos),
        filetime::FileTime::from_unix_time(secs, nanos),
    )
    .unwrap();
}

fn initial_tree(src: &Path) {
    for d in 0..4 {
        for f in 0..6 {
            let name = if f % 2 == 0 {
                format!("d{d}/file-{d}{f}.txt")
            } else {
                format!("d{d}/sub/blob-{f}.bin")
            };
            write(
                &src.join(name),
                &random_bytes((d * 10 + f) as u64, 200 + 3000 * f),
            );
        }
        std::os::unix::fs::symlink(format!("file-{d}0.txt"), src.join(format!("d{d}/link")))
            .unwrap();
    }
    write(&src.join("top.txt"), b"top\n");
    write(&src.join("empty"), b"");
    mkfifo(&src.join("d0/pipe"));
}

/// One night's churn: every kind of change the issue names, chosen by the generator.
fn churn(src: &Path, rng: &mut Rng, round: u64) {
    let files: Vec<_> = files_below(src)
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).unwrap().is_file())
        .collect();
    let pick = |rng: &mut Rng| files[rng.below(files.len())].clone();
    // Contents: the same size, other bytes.
    let f = pick(rng);
    let len = std::fs::metadata(&f).unwrap().len() as usize;
    write(&f, &random_bytes(1000 + round, len));
    // An append.
    let f = pick(rng);
    if f.exists() {
        let mut d = std::fs::read(&f).unwrap();
        d.extend_from_slice(b"appended\n");
        write(&f, &d);
    }
    // Metadata only: a mode and an mtime.
    let f = pick(rng);
    if f.exists() {
        chmod(&f, 0o600 + round as u32 % 2 * 0o40);
    }
    let f = pick(rng);
    if f.exists() {
        set_mtime(&f, 1_600_000_000 + round as i64 * 1000, 123_456_789);
    }
    // A rename (remove + add) and a deletion.
    let f = pick(rng);
    if f.exists() {
        std::fs::rename(&f, f.with_file_name(format!("renamed-{round}.txt"))).unwrap();
    }
    let f = pick(rng);
    if f.exists() {
        std::fs::remove_file(&f).unwrap();
    }
    // Additions: a file, and a directory of files.
    write(
        &src.join(format!("new-{round}.txt")),
        format!("night {round}\n").as_bytes(),
    );
    write(
        &src.join(format!("dir-{round}/a/b.txt")),
        &random_bytes(round, 5000),
    );
    // Type changes: a file becomes a directory, a link a file, a directory a link.
    let f = pick(rng);
    if f.exists() {
        std::fs::remove_file(&f).unwrap();
        write(&f.join("inside.txt"), b"was a file\n");
    }
    let link = src.join(format!("d{}/link", round % 4));
    if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(&link).unwrap();
        write(&link, b"now a file\n");
    }
    let dir = src.join(format!("dir-{}", round - 1));
    if dir.is_dir() && round.is_multiple_of(2) {
        std::fs::remove_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("top.txt", &dir).unwrap();
    }
    // Give the directories fixed times, so a metadata-only change of a directory is the test's
    // doing (and seen) rather than the clock's.
    for (i, d) in files_below(src)
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).unwrap().is_dir())
        .enumerate()
    {
        if rng.below(3) == 0 {
            set_mtime(&d, 1_700_000_000 + (round * 100 + i as u64) as i64, 0);
        }
    }
}

struct Night {
    id: String,
    tree: BTreeMap<String, Entry>,
}

fn five_nights(env: &Env) -> (String, Vec<Night>) {
    let src = env.path("src");
    initial_tree(&src);
    let base = src.to_str().unwrap().to_string();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut nights = Vec::new();
    for round in 1..=5u64 {
        if round > 1 {
            churn(&src, &mut rng, round);
        }
        let b = env.backup(&[&src], &[]);
        let id = b["snapshot_id"].as_str().unwrap().to_string();
        let t = env.path(&format!("restored-{round}"));
        env.restore(&format!("{id}:{base}"), &t, &[]);
        let mut tree = capture(&t, &base);
        // A restore of a path into a directory gives that directory what the path held, not
        // the path's own metadata: the root's entry is the source's.
        let now = capture(&src, &base);
        tree.insert(base.clone(), now[&base].clone());
        // The restored tree is the source as it was: the reference is about cairn's view.
        let differ: Vec<_> = now
            .iter()
            .filter(|(p, e)| tree.get(*p) != Some(e))
            .map(|(p, e)| format!("{p}: {e:?} restored as {:?}", tree.get(p)))
            .chain(
                tree.keys()
                    .filter(|p| !now.contains_key(*p))
                    .map(|p| format!("{p} restored, not in the source")),
            )
            .collect();
        assert!(differ.is_empty(), "restore of night {round}: {differ:#?}");
        nights.push(Night { id, tree });
    }
    (base, nights)
}

#[test]
fn diff_agrees_with_the_restored_trees_over_five_churned_snapshots() {
    let env = Env::with_repo();
    let (base, nights) = five_nights(&env);
    let mut pairs: Vec<(usize, usize)> = (0..4).map(|i| (i, i + 1)).collect();
    pairs.push((0, 4));
    let mut kinds = BTreeSet::new();
    for (i, j) in pairs {
        for metadata in [false, true] {
            let mut args = vec!["diff", &nights[i].id, &nights[j].id, &base];
            if metadata {
                args.push("--metadata");
            }
            let got = env.cmd().arg("--json").args(&args).run().ok().json();
            let want = reference_diff(&nights[i].tree, &nights[j].tree, metadata);
            let have = rows_of(&got);
            assert_eq!(
                have.difference(&want).collect::<Vec<_>>(),
                Vec::<&Row>::new(),
                "diff {i}->{j} (metadata {metadata}) lists changes the trees do not have"
            );
            assert_eq!(
                want.difference(&have).collect::<Vec<_>>(),
                Vec::<&Row>::new(),
                "diff {i}->{j} (metadata {metadata}) misses changes"
            );
            kinds.extend(have.iter().map(|r| r.1.clone()));
            // The counts are the listing's.
            let n = |c: &str| want.iter().filter(|r| r.1 == c).count() as u64;
            let sum = |c: &str| {
                ["files", "dirs", "others"]
                    .iter()
                    .map(|k| got[k][c].as_u64().unwrap())
                    .sum::<u64>()
            };
            for c in ["added", "removed", "modified", "type", "metadata"] {
                assert_eq!(sum(c), n(c), "{c} count of diff {i}->{j}: {got}");
            }
        }
    }
    for k in ["added", "removed", "modified", "type", "metadata"] {
        assert!(kinds.contains(k), "the churn made no {k} change: {kinds:?}");
    }
    // The whole snapshots: the same changes below the source, and nothing for a snapshot
    // against itself.
    let whole = env
        .cmd()
        .arg("--json")
        .args(["diff", &nights[0].id, &nights[4].id])
        .run()
        .ok()
        .json();
    let below: BTreeSet<Row> = rows_of(&whole)
        .into_iter()
        .filter(|r| r.0 == base || r.0.starts_with(&format!("{base}/")))
        .collect();
    assert_eq!(
        below,
        reference_diff(&nights[0].tree, &nights[4].tree, false)
    );
    let same = env
        .cmd()
        .arg("--json")
        .args(["diff", &nights[2].id, &nights[2].id, "--metadata"])
        .run()
        .ok()
        .json();
    assert_eq!(same["changes"].as_array().unwrap().len(), 0, "{same}");
    assert_eq!(same["added_bytes"], 0);
    // The text listing marks each kind.
    let text = env
        .cmd()
        .args(["diff", &nights[0].id, &nights[4].id, &base, "--metadata"])
        .run()
        .ok()
        .stdout_str();
    for mark in ["+    ", "-    ", "M    ", "T    ", "U    "] {
        assert!(
            text.lines().any(|l| l.starts_with(mark)),
            "no {mark:?} line in\n{text}"
        );
    }
}

#[test]
fn diff_counts_the_bytes_only_the_second_snapshot_has() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.bin"), &random_bytes(7, 3_000_000));
    write(&src.join("keep/b.txt"), b"b\n");
    write(&src.join("keep/c.bin"), &random_bytes(9, 1_500_000));
    let s1 = env.backup(&[&src], &[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    // A copy of a file the first snapshot has adds no data; a new file adds all of its bytes.
    // (the copy of keep/c.bin is found in keep/, an identical subtree the comparison skips)
    std::fs::copy(src.join("a.bin"), src.join("copy-of-a.bin")).unwrap();
    std::fs::copy(src.join("keep/c.bin"), src.join("copy-of-c.bin")).unwrap();
    write(&src.join("new.bin"), &random_bytes(8, 2_000_000));
    let s2 = env.backup(&[&src], &[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = env
        .cmd()
        .arg("--json")
        .args(["diff", &s1, &s2])
        .run()
        .ok()
        .json();
    assert_eq!(d["added_bytes"], 2_000_000, "{d}");
    assert_eq!(d["removed_bytes"], 0, "{d}");
    assert!(
        d["identical_subtrees"].as_u64().unwrap() >= 1,
        "keep/ is skipped by id: {d}"
    );
    // Deleting the original leaves its data in the copy: nothing is removed.
    std::fs::remove_file(src.join("a.bin")).unwrap();
    let s3 = env.backup(&[&src], &[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = env
        .cmd()
        .arg("--json")
        .args(["diff", &s2, &s3])
        .run()
        .ok()
        .json();
    assert_eq!(
        (d["added_bytes"].as_u64(), d["removed_bytes"].as_u64()),
        (Some(0), Some(0)),
        "{d}"
    );
    let d = env
        .cmd()
        .arg("--json")
        .args(["diff", &s3, &s1])
        .run()
        .ok()
        .json();
    assert_eq!(d["removed_bytes"], 2_000_000, "{d}");
    // Unknown snapshots and paths are named.
    env.cmd()
        .args(["diff", &s1, "ffffffff"])
        .run()
        .code(1)
        .stderr_has("snapshot ffffffff");
    env.cmd()
        .args(["diff", &s1, &s2, "/no/such/path"])
        .run()
        .code(1)
        .stderr_has("/no/such/path");
}

/// Reference matchers for the patterns the find test uses (written out, not globs).
fn reference_match(pattern: &str, base: &str, path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap();
    match pattern {
        "*.txt" => name.ends_with(".txt"),
        "file-1?.txt" => name.starts_with("file-1") && name.len() == "file-1?.txt".len(),
        "sub/*.bin" => path.rsplit('/').nth(1) == Some("sub") && name.ends_with(".bin"),
        p if p.starts_with(base) => {
            // "<base>/d1/*": exactly one component below d1.
            path.strip_prefix(&format!("{base}/d1/"))
                .is_some_and(|r| !r.contains('/'))
        }
        _ => unreachable!(),
    }
}

#[test]
fn find_agrees_with_the_restored_trees_and_uses_its_index() {
    let env = Env::with_repo();
    let (base, nights) = five_nights(&env);
    let anchored = format!("{base}/d1/*");
    for pattern in ["*.txt", "file-1?.txt", "sub/*.bin", anchored.as_str()] {
        let got = env
            .cmd()
            .arg("--json")
            .args(["find", pattern])
            .run()
            .ok()
            .json();
        assert_eq!(got["snapshots_searched"], 5, "{got}");
        // Every backup indexed its snapshot: no search has to.
        assert_eq!(got["snapshots_indexed"], 0, "{pattern}");
        let have: BTreeSet<(String, String, String, u64, String)> = got["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let s = |k: &str| m[k].as_str().unwrap().to_string();
                (
                    s("snapshot"),
                    s("path"),
                    s("type"),
                    m["size"].as_u64().unwrap(),
                    s("mtime"),
                )
            })
            .collect();
        let mut want = BTreeSet::new();
        for n in &nights {
            for (p, e) in &n.tree {
                if reference_match(pattern, &base, p) {
                    let mtime =
                        cairn::format::Timestamp::new(e.mtime.0, e.mtime.1 as u32).to_rfc3339();
                    want.insert((n.id.clone(), p.clone(), e.kind.to_string(), e.size, mtime));
                }
            }
        }
        assert!(
            !want.is_empty(),
            "{pattern} matches nothing: a useless case"
        );
        assert_eq!(have, want, "find {pattern}");
    }
    // One snapshot, by --snapshot; and a case-insensitive search.
    let one = env
        .cmd()
        .arg("--json")
        .args(["find", "FILE-*", "-i", "--snapshot", &nights[2].id])
        .run()
        .ok()
        .json();
    assert_eq!(one["snapshots_searched"], 1);
    let n = nights[2]
        .tree
        .keys()
        .filter(|p| p.rsplit('/').next().unwrap().starts_with("file-"))
        .count();
    assert_eq!(one["matches"].as_array().unwrap().len(), n, "{one}");
    // The backups indexed their snapshots: the searches above indexed none, and a search
    // reads no tree: with the tree cache switched off and every pack gone, it still answers.
    assert_eq!(one["snapshots_indexed"], 0);
    let all = env
        .cmd()
        .arg("--json")
        .args(["find", "*"])
        .run()
        .ok()
        .json();
    let packs = packs(&env);
    assert!(!packs.is_empty());
    for p in &packs {
        std::fs::rename(p, p.with_extension("away")).unwrap();
    }
    let offline = env
        .cmd()
        .args(["--cache-size", "0", "--json", "find", "*"])
        .run();
    for p in &packs {
        std::fs::rename(p.with_extension("away"), p).unwrap();
    }
    assert_eq!(offline.ok().json()["matches"], all["matches"]);
    // The index is only a cache: without the catalog, a search indexes every snapshot again
    // from the repository and finds the same.
    std::fs::remove_dir_all(&env.cache).unwrap();
    let again = env
        .cmd()
        .arg("--json")
        .args(["find", "*"])
        .run()
        .ok()
        .json();
    assert_eq!(again["snapshots_indexed"], 5, "{again}");
    assert_eq!(again["matches"], all["matches"]);
    // A forgotten snapshot is no longer searched.
    env.run(["forget", nights[0].id.as_str()]).ok();
    let after = env
        .cmd()
        .arg("--json")
        .args(["find", "*"])
        .run()
        .ok()
        .json();
    assert_eq!(after["snapshots_searched"], 4, "{after}");
    assert!(
        after["matches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["snapshot"] != nights[0].id.as_str()),
        "{after}"
    );
    // A bad pattern is named.
    env.cmd()
        .args(["find", "a[b"])
        .run()
        .code(1)
        .stderr_has("a[b");
}
