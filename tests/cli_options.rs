//! Command-line options: excludes, streams, dry runs, snapshot time, tags and hosts, selective
//! restore, `dump`, `ls`, `snapshots` and `stats`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

/// The paths of a snapshot (`ls --json`) below `src`, relative to it.
fn ls_below(env: &Env, spec: &str, src: &Path) -> BTreeSet<String> {
    let prefix = format!("{}/", src.display());
    env.run(["ls", "--json", spec])
        .ok()
        .json_lines()
        .iter()
        .filter_map(|v| v["path"].as_str()?.strip_prefix(&prefix).map(String::from))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A small tree for the exclude tests.
fn exclude_tree(src: &Path) {
    for f in [
        "keep.txt",
        "a.log",
        "sub/b.log",
        "sub/keep.txt",
        "tmp/x",
        "sub/tmp/y",
        "cache/data.bin",
        "cache/keep.txt",
        "marked/inner.txt",
        "marked/.nobackup",
        "tagged/inner.txt",
        "faketag/inner.txt",
    ] {
        write(&src.join(f), f.as_bytes());
    }
    write(
        &src.join("tagged/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    );
    write(
        &src.join("faketag/CACHEDIR.TAG"),
        b"Signature: not the real one\n",
    );
}

#[test]
fn exclude_globs_by_name_and_path() {
    let env = Env::with_repo();
    let src = env.path("src");
    exclude_tree(&src);
    let abs_tmp = format!("{}/tmp", src.display());
    env.backup(
        &[&src],
        &[
            "--exclude",
            "*.log",
            "--exclude",
            &abs_tmp,
            "--exclude",
            "cache/*.bin",
        ],
    );
    let got = ls_below(&env, "latest", &src);
    for gone in ["a.log", "sub/b.log", "tmp", "tmp/x", "cache/data.bin"] {
        assert!(!got.contains(gone), "{gone} was not excluded: {got:?}");
    }
    for kept in [
        "keep.txt",
        "sub/keep.txt",
        "sub/tmp/y",
        "cache/keep.txt",
        "marked/.nobackup",
    ] {
        assert!(got.contains(kept), "{kept} was excluded: {got:?}");
    }
}

#[test]
fn exclude_file_with_comments_and_blank_lines() {
    let env = Env::with_repo();
    let src = env.path("src");
    exclude_tree(&src);
    let list = env.path("excludes");
    fs::write(&list, "# logs\n*.log\n\n   \n  sub/tmp  \n# cache/*.bin\n").unwrap();
    env.backup(&[&src], &["--exclude-file", list.to_str().unwrap()]);
    let got = ls_below(&env, "latest", &src);
    for gone in ["a.log", "sub/b.log", "sub/tmp", "sub/tmp/y"] {
        assert!(!got.contains(gone), "{gone} was not excluded: {got:?}");
    }
    // The commented-out pattern and the top-level tmp (a relative path pattern matches
    // `sub/tmp` only) stay.
    for kept in ["cache/data.bin", "tmp/x", "sub/keep.txt"] {
        assert!(got.contains(kept), "{kept} was excluded: {got:?}");
    }
    // A missing exclude file is an error, and no snapshot is written.
    env.cmd()
        .arg("backup")
        .arg(&src)
        .args(["--exclude-file", "/nonexistent/excludes"])
        .run()
        .code(1)
        .stderr_has("/nonexistent/excludes");
    assert_eq!(env.snapshots().len(), 1);
}

#[test]
fn exclude_if_present_and_exclude_caches() {
    let env = Env::with_repo();
    let src = env.path("src");
    exclude_tree(&src);
    env.backup(
        &[&src],
        &["--exclude-if-present", ".nobackup", "--exclude-caches"],
    );
    let got = ls_below(&env, "latest", &src);
    for gone in ["marked", "marked/inner.txt", "tagged", "tagged/inner.txt"] {
        assert!(!got.contains(gone), "{gone} was not excluded: {got:?}");
    }
    // A CACHEDIR.TAG without the signature does not count.
    for kept in [
        "faketag/inner.txt",
        "faketag/CACHEDIR.TAG",
        "keep.txt",
        "a.log",
    ] {
        assert!(got.contains(kept), "{kept} was excluded: {got:?}");
    }
    // Without the options everything is there.
    env.backup(&[&src], &[]);
    let all = ls_below(&env, "latest", &src);
    assert!(all.contains("marked/inner.txt") && all.contains("tagged/inner.txt"));
}

/// `--one-file-system` keeps a mount point but not what is mounted on it. The mount is a tmpfs
/// in a private mount namespace (`unshare -m`), so nothing leaks out of the test.
#[test]
fn one_file_system_stops_at_mount_points() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("here.txt"), b"here\n");
    let mnt = src.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    write(&mnt.join("under-the-mount.txt"), b"hidden by the mount\n");
    let probe = std::process::Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs \"$0\"",
            mnt.to_str().unwrap(),
        ])
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        eprintln!(
            "SKIPPED one_file_system_stops_at_mount_points: cannot mount a tmpfs in a mount namespace here"
        );
        return;
    }
    let script = "mount -t tmpfs tmpfs \"$0\" && echo mounted > \"$0/on-tmpfs.txt\" && exec \"$@\"";
    let backup = |extra: &[&str]| -> Value {
        env.cmd()
            .wrapped(["unshare", "-m", "sh", "-c", script, mnt.to_str().unwrap()])
            .args(["backup", "--json"])
            .arg(&src)
            .args(extra)
            .run()
            .ok()
            .json()
    };
    let crossing = backup(&[]);
    let id = crossing["snapshot_id"].as_str().unwrap().to_string();
    let staying = backup(&["--one-file-system"]);
    let id_x = staying["snapshot_id"].as_str().unwrap().to_string();
    let all = ls_below(&env, &id, &src);
    assert_eq!(all, set(&["here.txt", "mnt", "mnt/on-tmpfs.txt"]));
    let x = ls_below(&env, &id_x, &src);
    assert_eq!(x, set(&["here.txt", "mnt"]));
}

#[test]
fn tags_and_hosts() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("v1.txt"), b"1");
    let a = env.backup(
        &[&src],
        &["--tag", "nightly", "--tag", "db", "--host", "web-1"],
    );
    write(&src.join("v2.txt"), b"2");
    let b = env.backup(&[&src], &["--tag", "nightly", "--host", "web-2"]);
    // Another host's snapshot is not the parent.
    assert_eq!(b["parent"], Value::Null, "{b}");
    assert_eq!(b["summary"]["files_new"], 2, "{b}");

    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2);
    let by_id = |v: &Value| {
        snaps
            .iter()
            .find(|s| s["id"] == v["snapshot_id"])
            .cloned()
            .unwrap()
    };
    let sa = by_id(&a);
    assert_eq!(sa["host"], "web-1");
    assert_eq!(sa["tags"], serde_json::json!(["nightly", "db"]));
    assert_eq!(by_id(&b)["host"], "web-2");

    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["snapshots", "--json"];
        all.extend_from_slice(args);
        match env.run(all).ok().json() {
            Value::Array(a) => a
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string())
                .collect(),
            v => panic!("{v}"),
        }
    };
    let ida = a["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(ids(&["--host", "web-1"]), vec![ida.clone()]);
    assert_eq!(ids(&["--tag", "db"]), vec![ida.clone()]);
    assert_eq!(ids(&["--tag", "nightly"]).len(), 2);
    assert_eq!(ids(&["--tag", "nightly", "--tag", "db"]), vec![ida.clone()]);
    assert!(ids(&["--host", "nowhere"]).is_empty());

    // `latest` honours --host and --tag.
    let only_v1 = set(&["v1.txt"]);
    let both = set(&["v1.txt", "v2.txt"]);
    let ls = |args: &[&str]| -> BTreeSet<String> {
        let mut all = vec!["ls", "--json", "latest"];
        all.extend_from_slice(args);
        let prefix = format!("{}/", src.display());
        env.run(all)
            .ok()
            .json_lines()
            .iter()
            .filter_map(|v| v["path"].as_str()?.strip_prefix(&prefix).map(String::from))
            .collect()
    };
    assert_eq!(ls(&["--host", "web-1"]), only_v1);
    assert_eq!(ls(&["--tag", "db"]), only_v1);
    assert_eq!(ls(&[]), both);
    let t = env.path("restore");
    env.restore(
        &format!("latest:{}", src.display()),
        &t,
        &["--host", "web-1"],
    );
    assert!(t.join("v1.txt").exists() && !t.join("v2.txt").exists());
}

#[test]
fn snapshot_time_override() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("f"), b"f");
    let now = env.backup(&[&src], &[]);
    let utc = env
        .cmd()
        .env("TZ", "UTC")
        .args(["backup", "--json", "--time", "2001-02-03 04:05:06"])
        .arg(&src)
        .run()
        .ok()
        .json();
    let tokyo = env
        .cmd()
        .env("TZ", "Asia/Tokyo")
        .args(["backup", "--json", "--time", "2001-02-03 04:05:06"])
        .arg(&src)
        .run()
        .ok()
        .json();
    let snaps = env.snapshots();
    let time_of = |v: &Value| {
        snaps
            .iter()
            .find(|s| s["id"] == v["snapshot_id"])
            .map(|s| s["time"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(time_of(&utc), "2001-02-03T04:05:06Z");
    assert_eq!(time_of(&tokyo), "2001-02-02T19:05:06Z");
    // Snapshots are listed oldest first, and `latest` is the newest by time, not by creation.
    let order: Vec<&str> = snaps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        order,
        vec![
            tokyo["snapshot_id"].as_str().unwrap(),
            utc["snapshot_id"].as_str().unwrap(),
            now["snapshot_id"].as_str().unwrap()
        ]
    );
    // Malformed times are refused and write nothing.
    for bad in [
        "yesterday",
        "2001-13-01 00:00:00",
        "2001-02-03 25:00:00",
        "",
    ] {
        env.cmd()
            .args(["backup", "--time", bad])
            .arg(&src)
            .run()
            .code(1)
            .stderr_has("--time");
    }
    assert_eq!(env.snapshots().len(), 3);
}

#[test]
fn dry_run_writes_nothing() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.bin"), &random_bytes(1, 2 << 20));
    write(&src.join("b.txt"), b"b");
    let before = env.repo_listing();
    let out = env
        .cmd()
        .args(["backup", "--json", "--dry-run"])
        .arg(&src)
        .run()
        .ok()
        .json();
    assert_eq!(out["dry_run"], true, "{out}");
    assert_eq!(out["snapshot_id"], Value::Null, "{out}");
    assert_eq!(out["summary"]["files_new"], 2, "{out}");
    assert_eq!(out["summary"]["total_bytes"], (2 << 20) + 1, "{out}");
    assert_eq!(
        env.repo_listing(),
        before,
        "a dry run changed the repository"
    );
    assert!(env.snapshots().is_empty());
    // Also with -n after a real backup.
    env.backup(&[&src], &[]);
    write(&src.join("c.txt"), b"c");
    let before = env.repo_listing();
    let out = env
        .cmd()
        .args(["backup", "-n", "--json"])
        .arg(&src)
        .run()
        .ok()
        .json();
    assert_eq!(out["summary"]["files_new"], 1, "{out}");
    assert_eq!(out["summary"]["files_unmodified"], 2, "{out}");
    assert_eq!(
        env.repo_listing(),
        before,
        "a dry run changed the repository"
    );
    assert_eq!(env.snapshots().len(), 1);
    // The text output says so.
    let text = env.cmd().args(["backup", "--dry-run"]).arg(&src).run().ok();
    assert!(text.stdout_str().contains("dry run"), "{text}");
}

#[test]
fn stdin_backup_and_dump() {
    let env = Env::with_repo();
    let data = random_bytes(8, (2 << 20) + 12345);
    let out = env
        .cmd()
        .args(["backup", "--json", "--stdin", "--stdin-name", "db/app.sql"])
        .stdin(data.clone())
        .run()
        .ok()
        .json();
    assert_eq!(out["summary"]["total_files"], 1, "{out}");
    let snaps = env.snapshots();
    assert_eq!(snaps[0]["source"], "stdin");
    assert_eq!(snaps[0]["paths"], serde_json::json!(["db/app.sql"]));
    let dumped = env.run(["dump", "latest", "db/app.sql"]).ok().stdout;
    assert!(dumped == data, "dump differs from what was piped in");
    let paths: Vec<String> = env
        .run(["ls", "--json", "latest"])
        .ok()
        .json_lines()
        .iter()
        .map(|v| v["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, vec!["/db", "/db/app.sql"]);
    // The default name, and an empty stream.
    env.cmd()
        .args(["backup", "--stdin"])
        .stdin(b"".to_vec())
        .run()
        .ok();
    assert_eq!(env.run(["dump", "latest", "stdin"]).ok().stdout, b"");
    // Names that would escape are refused.
    for bad in ["../escape", "a/../../b", "/"] {
        env.cmd()
            .args(["backup", "--stdin", "--stdin-name", bad])
            .stdin(b"x".to_vec())
            .run()
            .code(1);
    }
    assert_eq!(env.snapshots().len(), 2);
}

#[test]
fn stdin_from_command() {
    let env = Env::with_repo();
    let out = env
        .cmd()
        .args([
            "backup",
            "--json",
            "--stdin-from-command",
            "--stdin-name",
            "dump.sql",
            "--",
        ])
        .args([
            "sh",
            "-c",
            "printf 'line %s\\n' 1 2 3; printf 'password:%s\\n' \"$CAIRN_PASSWORD\"",
        ])
        .run()
        .ok()
        .json();
    assert!(out["snapshot_id"].is_string(), "{out}");
    // The repository password is not passed on to the command.
    assert_eq!(
        env.run(["dump", "latest", "dump.sql"]).ok().stdout,
        b"line 1\nline 2\nline 3\npassword:\n"
    );

    // A failing command: no snapshot, a non-zero exit, and the reason.
    env.cmd()
        .args([
            "backup",
            "--stdin-from-command",
            "--stdin-name",
            "dump.sql",
            "--",
        ])
        .args(["sh", "-c", "echo partial output; exit 7"])
        .run()
        .code(1)
        .stderr_has("no snapshot written");
    // A command that does not exist.
    env.cmd()
        .args([
            "backup",
            "--stdin-from-command",
            "--",
            "/nonexistent/dumper",
        ])
        .run()
        .code(1)
        .stderr_has("/nonexistent/dumper");
    // No command at all.
    env.cmd()
        .args(["backup", "--stdin-from-command"])
        .run()
        .code(1);
    assert_eq!(env.snapshots().len(), 1);
}

fn restore_tree(src: &Path) {
    for f in [
        "a.txt",
        "b.log",
        "docs/readme.txt",
        "docs/notes.log",
        "docs/deep/x.txt",
        "src/main.rs",
        "src/lib.rs",
        "empty/.keep",
    ] {
        write(&src.join(f), f.as_bytes());
    }
}

/// Every entry below `root`, relative.
fn tree_paths(root: &Path) -> BTreeSet<String> {
    Manifest::capture(root)
        .paths()
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect()
}

#[test]
fn restore_include_exclude_and_subpaths() {
    let env = Env::with_repo();
    let src = env.path("src");
    restore_tree(&src);
    env.backup(&[&src], &[]);
    let spec = format!("latest:{}", src.display());

    let t = env.path("inc-name");
    env.restore(&spec, &t, &["--include", "*.txt"]);
    assert_eq!(
        tree_paths(&t),
        set(&[
            "a.txt",
            "docs",
            "docs/readme.txt",
            "docs/deep",
            "docs/deep/x.txt"
        ])
    );

    let t = env.path("inc-path");
    let inc = format!("{}/src", src.display());
    env.restore(&spec, &t, &["--include", &inc]);
    assert_eq!(tree_paths(&t), set(&["src", "src/main.rs", "src/lib.rs"]));

    let t = env.path("exc");
    env.restore(&spec, &t, &["--exclude", "*.log", "--exclude", "docs/deep"]);
    assert_eq!(
        tree_paths(&t),
        set(&[
            "a.txt",
            "docs",
            "docs/readme.txt",
            "empty",
            "empty/.keep",
            "src",
            "src/main.rs",
            "src/lib.rs"
        ])
    );

    let t = env.path("both");
    env.restore(&spec, &t, &["--include", "docs", "--exclude", "*.log"]);
    assert_eq!(
        tree_paths(&t),
        set(&["docs", "docs/readme.txt", "docs/deep", "docs/deep/x.txt"])
    );

    // SNAP:PATH of a directory restores its contents; of a file, the file.
    let t = env.path("sub-dir");
    env.restore(&format!("latest:{}/docs", src.display()), &t, &[]);
    assert_eq!(
        tree_paths(&t),
        set(&["readme.txt", "notes.log", "deep", "deep/x.txt"])
    );
    let t = env.path("sub-file");
    env.restore(&format!("latest:{}/src/main.rs", src.display()), &t, &[]);
    assert_eq!(tree_paths(&t), set(&["main.rs"]));
    assert_eq!(fs::read(t.join("main.rs")).unwrap(), b"src/main.rs");

    // A path that is not in the snapshot.
    env.cmd()
        .args([
            "restore",
            &format!("latest:{}/nope", src.display()),
            "--target",
        ])
        .arg(env.path("nope"))
        .run()
        .code(1)
        .stderr_has("not found");
}

#[test]
fn dump_writes_exact_bytes() {
    let env = Env::with_repo();
    let src = env.path("src");
    let big = random_bytes(21, (5 << 20) + 777);
    write(&src.join("big.bin"), &big);
    write(&src.join("empty"), b"");
    write(&src.join("dir/small.txt"), b"small\n");
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(src.join("sparse")).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(b"middle", 4 << 20).unwrap();
    }
    std::os::unix::fs::symlink("big.bin", src.join("link")).unwrap();
    env.backup(&[&src], &[]);
    let p = |rel: &str| format!("{}/{rel}", src.display());

    let out = env.run(["dump", "latest", &p("big.bin")]).ok();
    assert!(
        out.stdout == big,
        "dump of big.bin differs ({} bytes)",
        out.stdout.len()
    );
    let out = env
        .run(["dump", &format!("latest:{}", p("dir/small.txt"))])
        .ok();
    assert_eq!(out.stdout, b"small\n");
    assert_eq!(env.run(["dump", "latest", &p("empty")]).ok().stdout, b"");
    let sparse = env.run(["dump", "latest", &p("sparse")]).ok().stdout;
    assert_eq!(sparse, fs::read(src.join("sparse")).unwrap());

    // Not a file, or not there.
    env.run(["dump", "latest", &p("dir")])
        .code(1)
        .stderr_has("is a directory");
    env.run(["dump", "latest", &p("link")])
        .code(1)
        .stderr_has("symlink");
    env.run(["dump", "latest", &p("missing")])
        .code(1)
        .stderr_has("not found");
    env.run(["dump", "latest"]).code(1).stderr_has("path");
}

#[test]
fn ls_text_json_and_long() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.txt"), b"aaa");
    write(&src.join("sub/b.bin"), &[0u8; 1000]);
    chmod(&src.join("sub/b.bin"), 0o640);
    std::os::unix::fs::symlink("a.txt", src.join("ln")).unwrap();
    set_times(
        &src.join("a.txt"),
        (1_000_000_000, 0),
        (1_234_567_890, 123_456_789),
    );
    let b = env.backup(&[&src], &[]);
    let id = b["snapshot_id"].as_str().unwrap();

    // Text: one path a line, parents first.
    let text = env.run(["ls", &id[..8]]).ok().stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    let s = src.display().to_string();
    let want: Vec<String> = ["a.txt", "ln", "sub", "sub/b.bin"]
        .iter()
        .map(|r| format!("{s}/{r}"))
        .collect();
    assert_eq!(&lines[lines.len() - 4..], want.as_slice(), "{text}");
    assert_eq!(lines[lines.len() - 5], s, "{text}");

    // A sub-path, both as an argument and as SNAP:PATH.
    let sub = format!("{s}/sub");
    let a = env.run(["ls", "latest", &sub]).ok().stdout_str();
    let b2 = env.run(["ls", &format!("latest:{sub}")]).ok().stdout_str();
    assert_eq!(a, format!("{sub}\n{sub}/b.bin\n"));
    assert_eq!(a, b2);

    // JSON lines with types, modes, sizes, times and link targets.
    let lines = env.run(["ls", "--json", "latest", &s]).ok().json_lines();
    let get = |rel: &str| {
        let p = format!("{s}/{rel}");
        lines
            .iter()
            .find(|v| v["path"] == p.as_str())
            .cloned()
            .unwrap()
    };
    let a = get("a.txt");
    assert_eq!(a["type"], "file");
    assert_eq!(a["size"], 3);
    assert_eq!(a["mtime"], "2009-02-13T23:31:30.123456789Z");
    assert_eq!(get("sub/b.bin")["mode"], 0o640);
    assert_eq!(get("sub/b.bin")["size"], 1000);
    assert_eq!(get("sub")["type"], "dir");
    assert_eq!(get("ln")["type"], "symlink");
    assert_eq!(get("ln")["target"], "a.txt");
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    assert_eq!(a["uid"], uid);
    if uid == 0 {
        assert_eq!(a["user"], "root");
    }

    // Long listing.
    let long = env.run(["ls", "-l", "latest", &sub]).ok().stdout_str();
    assert!(long.contains("-rw-r-----"), "{long}");
    assert!(long.contains(" 1000 "), "{long}");
    let long = env
        .run(["ls", "--long", "latest", &format!("{s}/ln")])
        .ok()
        .stdout_str();
    assert!(long.starts_with('l') && long.contains("-> a.txt"), "{long}");

    env.run(["ls", "latest", &format!("{s}/missing")])
        .code(1)
        .stderr_has("not found");
}

#[test]
fn snapshots_table_json_and_stats() {
    let env = Env::with_repo();
    // An empty repository.
    assert!(env.snapshots().is_empty());
    let text = env.run(["snapshots"]).ok().stdout_str();
    assert!(text.contains("0 snapshots"), "{text}");
    let st = env.run(["stats", "--json"]).ok().json();
    assert_eq!(st["snapshots"], 0, "{st}");
    assert_eq!(st["logical_bytes"], 0, "{st}");

    let src = env.path("src");
    let big = random_bytes(3, 1 << 20);
    write(&src.join("one.bin"), &big);
    write(&src.join("two.bin"), &big);
    write(&src.join("t.txt"), &b"text ".repeat(10_000));
    let first = env.backup(&[&src], &["--tag", "t1", "--host", "h"]);
    env.backup(&[&src], &["--host", "h"]);

    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2);
    let s = &snaps[0];
    assert_eq!(s["id"], first["snapshot_id"]);
    let id = s["id"].as_str().unwrap();
    assert_eq!(id.len(), 64);
    assert_eq!(s["short_id"], &id[..8]);
    assert_eq!(s["paths"], serde_json::json!([src.display().to_string()]));
    assert_eq!(s["source"], "files");
    assert_eq!(s["host"], "h");
    if is_root() {
        assert_eq!(s["username"], "root");
    }
    assert_eq!(s["summary"]["total_files"], 3);
    assert!(s["tree"].as_str().unwrap().len() == 64);
    assert!(s["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(snaps[1]["parent"], first["snapshot_id"]);

    let text = env.run(["snapshots"]).ok().stdout_str();
    assert!(text.contains(&id[..8]), "{text}");
    assert!(text.contains("t1"), "{text}");
    assert!(text.contains("2 snapshots"), "{text}");
    let text = env.run(["snapshots", "--tag", "t1"]).ok().stdout_str();
    assert!(text.contains("1 snapshots"), "{text}");

    let logical = 2 * (1 << 20) + 50_000;
    let st = env.run(["stats", "--json"]).ok().json();
    assert_eq!(st["snapshots"], 2, "{st}");
    assert_eq!(st["files"], 6, "{st}");
    assert_eq!(st["logical_bytes"], 2 * logical, "{st}");
    let raw = st["raw_bytes"].as_u64().unwrap();
    assert!(
        raw > (1 << 20) + 50_000 && raw < (1 << 20) + 50_000 + (64 << 10),
        "{st}"
    );
    let stored = st["stored_bytes"].as_u64().unwrap();
    // The text compresses; the random data does not.
    assert!(stored < raw, "{st}");
    assert!(st["compression_ratio"].as_f64().unwrap() > 1.0, "{st}");
    let dedup = st["dedup_ratio"].as_f64().unwrap();
    assert!(dedup > 3.5 && dedup <= 4.0, "{st}");
    assert!(st["repository_bytes"].as_u64().unwrap() >= stored, "{st}");

    // One snapshot by id prefix.
    let one = env.run(["stats", "--json", &id[..6]]).ok().json();
    assert_eq!(one["snapshots"], 1, "{one}");
    assert_eq!(one["logical_bytes"], logical, "{one}");
    let text = env.run(["stats"]).ok().stdout_str();
    assert!(text.contains("Dedup ratio"), "{text}");
}

/// A stream snapshot records the stream's length as its size, in the report and in the stored
/// snapshot, also when its data was already in the repository.
#[test]
fn stdin_snapshot_records_its_size() {
    let env = Env::with_repo();
    let data = random_bytes(8, 300_000);
    for _ in 0..2 {
        let out = env
            .cmd()
            .args(["backup", "--json", "--stdin", "--stdin-name", "s.bin"])
            .stdin(data.clone())
            .run()
            .ok()
            .json();
        assert_eq!(out["summary"]["total_bytes"], data.len(), "{out}");
    }
    for s in env.snapshots() {
        assert_eq!(s["summary"]["total_bytes"], data.len(), "{s}");
    }
}

/// Several sources at once, a single file as a source, a symlink as a source (stored as the
/// link, not followed), and relative paths (stored absolute, so the parent is found again from
/// another working directory).
#[test]
fn sources_files_several_paths_and_relative_paths() {
    let env = Env::with_repo();
    let a = env.path("a");
    let b = env.path("b");
    write(&a.join("one.txt"), b"one");
    write(&b.join("sub/two.txt"), b"two");
    write(&env.path("single.txt"), b"single");
    std::os::unix::fs::symlink(&a, env.path("link-to-a")).unwrap();
    let single = env.path("single.txt");
    let link = env.path("link-to-a");
    let v = env.backup(&[&b, &a, &single, &link], &[]);
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    let snaps = env.snapshots();
    let mut want: Vec<String> = [&a, &b, &link, &single]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    want.sort();
    assert_eq!(snaps[0]["paths"], serde_json::json!(want));
    let root = env.dir.path().display().to_string();
    let listed: BTreeSet<String> = env
        .run(["ls", "--json", &id])
        .ok()
        .json_lines()
        .iter()
        .filter_map(|v| {
            v["path"]
                .as_str()?
                .strip_prefix(&format!("{root}/"))
                .map(String::from)
        })
        .collect();
    assert_eq!(
        listed,
        set(&[
            "a",
            "a/one.txt",
            "b",
            "b/sub",
            "b/sub/two.txt",
            "link-to-a",
            "single.txt"
        ])
    );
    let l = env
        .run(["ls", "--json", &id, &format!("{root}/link-to-a")])
        .ok()
        .json_lines();
    assert_eq!(l.len(), 1, "a symlink source was followed: {l:?}");
    assert_eq!(l[0]["type"], "symlink");
    assert_eq!(
        env.run(["dump", &id, &format!("{root}/single.txt")])
            .ok()
            .stdout,
        b"single"
    );

    // Relative paths, from the directory above: recorded absolute, and an unchanged re-backup
    // from elsewhere with the absolute path finds its parent.
    let first = env
        .cmd()
        .current_dir(env.dir.path())
        .args(["backup", "--json", "a", "./b/../b"])
        .run()
        .ok()
        .json();
    let snaps = env.snapshots();
    let last = snaps
        .iter()
        .find(|s| s["id"] == first["snapshot_id"])
        .unwrap();
    assert_eq!(
        last["paths"],
        serde_json::json!([a.display().to_string(), b.display().to_string()])
    );
    let second = env
        .cmd()
        .current_dir(Path::new("/"))
        .args(["backup", "--json"])
        .arg(&b)
        .arg(&a)
        .run()
        .ok()
        .json();
    assert_eq!(second["parent"], first["snapshot_id"], "{second}");
    assert_eq!(second["summary"]["files_unmodified"], 2, "{second}");
}

/// Tree blobs are kept in a local cache (issue 3): once a backup wrote them or `ls` read them,
/// listing a snapshot needs no pack at all, and `--cache-size 0` turns the cache off.
#[test]
fn tree_cache_serves_ls_without_packs() {
    let env = Env::with_repo();
    let src = env.path("src");
    for f in [
        "a.txt",
        "d1/b.txt",
        "d1/d2/c.txt",
        "d1/d2/d3/e.txt",
        "x/y.txt",
    ] {
        write(&src.join(f), f.as_bytes());
    }
    env.backup(&[&src], &[]);
    let all = ls_below(&env, "latest", &src);
    assert!(all.contains("d1/d2/d3/e.txt"), "{all:?}");
    // The repository's own cache directory (beside it, `locations/` of the repository memory).
    let db = env
        .cache
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().path().join("blobs.sqlite"))
        .find(|p| p.exists())
        .expect("a blob cache");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o600,
        "{}",
        db.display()
    );

    // Without its packs the repository still lists, from the trees the backup cached...
    let data = env.repo.join("data");
    let aside = env.path("data-aside");
    fs::rename(&data, &aside).unwrap();
    assert_eq!(ls_below(&env, "latest", &src), all);
    // ...but file contents need the packs, and say which one is missing.
    let file = format!("latest:{}/a.txt", src.display());
    env.run(["dump", &file]).code(1).stderr_has("pack");
    // With the cache off (which also deletes it), listing needs the packs too.
    env.run(["--cache-size", "0", "ls", "latest"])
        .code(1)
        .stderr_has("pack");
    assert!(!db.exists());

    // Reading trees fills the cache again.
    fs::rename(&aside, &data).unwrap();
    assert_eq!(ls_below(&env, "latest", &src), all);
    fs::rename(&data, &aside).unwrap();
    assert_eq!(ls_below(&env, "latest", &src), all);
    fs::rename(&aside, &data).unwrap();
    env.run(["check", "--read-data"]).ok();
    env.run(["--cache-size", "12X", "ls", "latest"])
        .code(1)
        .stderr_has("unknown unit");
}
