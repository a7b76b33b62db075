//! Argument vectors from a fixed seed: every sub-command with plausible and implausible flags
//! and values, local and S3 repositories (with and without AWS credentials), missing and
//! invalid values. Whatever the vector, stderr holds sentences, never Rust debug formatting
//! (`Some(..)`, `Error { kind: .. }`, ...), and the binary never panics (the harness fails any
//! run that exits 101 or prints "panicked").
//!
//! S3 repositories point at a local port nothing listens on (and so does the EC2 metadata
//! endpoint the AWS credential chain tries last), so nothing leaves the machine and every
//! vector fails fast; `--s3-retries 0` unless the vector says otherwise.

mod common;

use std::ffi::OsString;
use std::path::Path;

use common::*;

/// How Rust's `Debug` output of an `Option`, an error struct or an `io::Error` looks.
const DEBUG_MARKS: [&str; 6] = ["Some(", "None", "Error {", "kind:", "Os {", "{ code:"];

/// xorshift64*: the same vectors on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    /// True `pct` percent of the time.
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

/// A port on 127.0.0.1 that nothing listens on (it was free a moment ago).
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A sub-command's words and its flags `(name, takes a value)`; positionals are `("", _)`.
type SubCommand = (Vec<&'static str>, Vec<(&'static str, bool)>);

/// One invocation: arguments and environment.
struct Vector {
    args: Vec<OsString>,
    env: Vec<(&'static str, Option<String>)>,
}

struct World<'a> {
    env: &'a Env,
    src: &'a Path,
    port: u16,
    empty_file: &'a Path,
}

impl World<'_> {
    /// Values that a flag may get: plausible, implausible and hostile.
    fn value(&self, r: &mut Rng) -> OsString {
        let pool: Vec<OsString> = vec![
            "".into(),
            "0".into(),
            "-1".into(),
            "1".into(),
            "3".into(),
            "abc".into(),
            "99999999999999999999".into(),
            "10x".into(),
            "5m".into(),
            "0s".into(),
            "1h".into(),
            "2d".into(),
            "latest".into(),
            "latest:/".into(),
            "deadbeef".into(),
            "zz".into(),
            "50%".into(),
            "%".into(),
            "1/0".into(),
            "2/1".into(),
            "1/3".into(),
            "512M".into(),
            "1Q".into(),
            "/nonexistent/x".into(),
            ".".into(),
            "..".into(),
            "a[b".into(),
            "*.log".into(),
            "é".into(),
            "-".into(),
            "x".repeat(300).into(),
            "host,paths".into(),
            "tags,bogus".into(),
            "repokey".into(),
            "none".into(),
            "max".into(),
            "23".into(),
            "2024-13-45 25:61:61".into(),
            "2024-01-02 03:04:05".into(),
            self.src.as_os_str().to_owned(),
            self.empty_file.as_os_str().to_owned(),
            self.env.path("target").into_os_string(),
        ];
        r.pick(&pool).clone()
    }

    /// A sub-command, with the flags and positionals it may get.
    fn command(&self, r: &mut Rng) -> SubCommand {
        let table: Vec<SubCommand> = vec![
            (vec!["init"], vec![("--encryption", true)]),
            (
                vec!["backup"],
                vec![
                    ("", false),
                    ("--exclude", true),
                    ("--exclude-file", true),
                    ("--exclude-if-present", true),
                    ("--exclude-caches", false),
                    ("-x", false),
                    ("--tag", true),
                    ("--host", true),
                    ("--time", true),
                    ("--dry-run", false),
                    ("--stdin", false),
                    ("--stdin-name", true),
                    ("--parent", true),
                    ("--force", false),
                    ("--compression", true),
                ],
            ),
            (vec!["snapshots"], vec![("--host", true), ("--tag", true)]),
            (
                vec!["ls"],
                vec![
                    ("", false),
                    ("", false),
                    ("--long", false),
                    ("--host", true),
                ],
            ),
            (
                vec!["dump"],
                vec![("", false), ("", false), ("--tag", true)],
            ),
            (
                vec!["restore"],
                vec![
                    ("", false),
                    ("--target", true),
                    ("--include", true),
                    ("--exclude", true),
                    ("--verify", false),
                    ("--host", true),
                ],
            ),
            (vec!["stats"], vec![("", false)]),
            (
                vec!["check"],
                vec![("--read-data", false), ("--read-data-subset", true)],
            ),
            (
                vec!["prune"],
                vec![
                    ("--max-unused", true),
                    ("--grace", true),
                    ("--dry-run", false),
                ],
            ),
            (vec!["repair", "index"], vec![]),
            (
                vec!["repair", "snapshots"],
                vec![("--read-data", false), ("--forget", false), ("-n", false)],
            ),
            (vec!["repair"], vec![("", false)]),
            (
                vec!["forget"],
                vec![
                    ("", false),
                    ("--keep-last", true),
                    ("--keep-daily", true),
                    ("--keep-within", true),
                    ("--keep-tag", true),
                    ("--group-by", true),
                    ("--dry-run", false),
                    ("--prune", false),
                    ("--grace", true),
                ],
            ),
            (
                vec!["mysql", "backup"],
                vec![
                    ("--databases", true),
                    ("--all-databases", false),
                    ("--exclude-table", true),
                    ("--chunk-avg", true),
                    ("--insert-bytes", true),
                    ("--dry-run", false),
                ],
            ),
            (
                vec!["mysql", "restore"],
                vec![
                    ("", false),
                    ("--database", true),
                    ("--table", true),
                    ("--into", true),
                    ("--to-stdout", false),
                ],
            ),
            (vec!["mysql"], vec![("", false)]),
            (
                vec!["copy"],
                vec![("", false), ("--to", true), ("--to-password-file", true)],
            ),
            (vec!["frobnicate"], vec![("", false)]),
        ];
        r.pick(&table).clone()
    }

    fn vector(&self, r: &mut Rng) -> Vector {
        let mut args: Vec<OsString> = Vec::new();
        let mut env: Vec<(&'static str, Option<String>)> = Vec::new();
        let dead = format!("http://127.0.0.1:{}", self.port);
        // The repository.
        let s3_urls = [
            "s3://cairn-fuzz/backups/repo",
            "s3://cairn-fuzz",
            "s3:cairn-fuzz/x",
            "s3://",
            "s3://Bad Bucket/x",
            "s3://cairn-fuzz/a/../b",
        ];
        let mut s3 = false;
        match r.below(10) {
            0..=3 => args.extend(["-r".into(), self.env.repo_arg()]),
            4 => args.extend(["-r".into(), self.env.path("no-repo").into_os_string()]),
            5 => args.extend(["-r".into(), self.empty_file.as_os_str().to_owned()]),
            _ => {
                s3 = true;
                let url = if r.chance(60) {
                    s3_urls[0]
                } else {
                    *r.pick(&s3_urls)
                };
                args.extend(["-r".into(), url.into()]);
            }
        }
        if s3 {
            env.push(("AWS_ENDPOINT_URL", Some(dead.clone())));
            env.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT", Some(dead.clone())));
            if r.chance(30) {
                env.push(("AWS_EC2_METADATA_DISABLED", Some("true".into())));
            }
            let garbage = self.empty_file.display().to_string();
            match r.below(9) {
                0 | 1 => {}
                2 => env.push(("AWS_ACCESS_KEY_ID", Some("AKIAFUZZ".into()))),
                3 => env.push(("AWS_SECRET_ACCESS_KEY", Some("fuzz-secret".into()))),
                4 => env.push(("AWS_PROFILE", Some("no-such-profile".into()))),
                5 => env.push(("AWS_SHARED_CREDENTIALS_FILE", Some(garbage))),
                6 => env.push(("AWS_CONTAINER_CREDENTIALS_FULL_URI", Some(dead.clone()))),
                7 => env.push(("AWS_SESSION_TOKEN", Some("fuzz-token".into()))),
                _ => {
                    env.push(("AWS_ACCESS_KEY_ID", Some("AKIAFUZZ".into())));
                    env.push(("AWS_SECRET_ACCESS_KEY", Some("fuzz-secret".into())));
                }
            }
            if r.chance(20) {
                env.push(("AWS_REGION", Some(self.value(r).to_string_lossy().into())));
            }
            if !r.chance(10) {
                args.extend(["--s3-retries".into(), "0".into()]);
            }
        }
        // The password.
        match r.below(10) {
            0 => env.push(("CAIRN_PASSWORD", Some("not the password".into()))),
            1 => env.push(("CAIRN_PASSWORD", Some(String::new()))),
            2 => env.push(("CAIRN_PASSWORD", None)),
            3 => {
                env.push(("CAIRN_PASSWORD", None));
                args.push("--password-file".into());
                args.push(self.value(r));
            }
            _ => {}
        }
        // Global flags (not -vv: from there on the log shows other crates' internals as they
        // print them).
        let globals: [(&str, bool); 10] = [
            ("--json", false),
            ("-q", false),
            ("-v", false),
            ("--connections", true),
            ("--cache-size", true),
            ("--s3-timeout", true),
            ("--s3-retries", true),
            ("--s3-addressing", true),
            ("--s3-storage-class", true),
            ("--no-such-flag", false),
        ];
        for _ in 0..r.below(3) {
            let (flag, takes) = *r.pick(&globals);
            if flag == "--s3-retries" && !s3 {
                continue;
            }
            args.push(flag.into());
            if takes && !r.chance(5) {
                args.push(self.value(r));
            }
        }
        // Commands that would wait for a lease give up at once.
        args.extend(["--lease-wait".into(), "0s".into()]);
        // The sub-command and its flags.
        let (words, flags) = self.command(r);
        args.extend(words.iter().map(OsString::from));
        if !flags.is_empty() {
            for _ in 0..r.below(4) {
                let (flag, takes) = *r.pick(&flags);
                if !flag.is_empty() {
                    args.push(flag.into());
                }
                // A value for a flag that takes one (missing now and then), or a positional.
                if (takes && !r.chance(5)) || flag.is_empty() {
                    args.push(self.value(r));
                }
            }
        }
        if words[0] == "mysql" {
            // Never a real server: a socket that does not exist.
            args.push("--socket".into());
            args.push(self.env.path("no-such-socket").into_os_string());
        }
        Vector { args, env }
    }
}

#[test]
fn no_debug_formatting_on_stderr_for_random_argument_vectors() {
    let (env, src) = {
        let env = Env::with_repo();
        let src = env.path("src");
        write(&src.join("a.txt"), b"some text\n");
        write(&src.join("d/b.bin"), &random_bytes(5, 100_000));
        env.backup(&[&src], &["--tag", "t1"]);
        (env, src)
    };
    let empty_file = env.path("empty-file");
    write(&empty_file, b"");
    let home = env.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let world = World {
        env: &env,
        src: &src,
        port: dead_port(),
        empty_file: &empty_file,
    };
    let mut r = Rng(0x00c0_ffee_cafe_f00d);
    let n = 300;
    let mut bad = Vec::new();
    for _ in 0..n {
        let v = world.vector(&mut r);
        // No shared AWS files of the machine's user.
        let mut c = Cairn::bare(&env).env("HOME", &home);
        for (k, val) in &v.env {
            c = match val {
                Some(val) => c.env(k, val),
                None => c.env_remove(k),
            };
        }
        let out = c.args(&v.args).run();
        if let Some(m) = DEBUG_MARKS.iter().find(|m| out.stderr.contains(**m)) {
            let shown: Vec<String> = v
                .env
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("<unset>")))
                .collect();
            bad.push(format!("[{m}] {} {out}", shown.join(" ")));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {n} argument vectors printed debug formatting:\n{}",
        bad.len(),
        bad.join("\n\n")
    );
}

/// Without credentials an S3 repository fails at once with a sentence that names what to set,
/// not the AWS signer's "failed to load signing credential" (and not after retries).
#[test]
fn missing_s3_credentials_are_named() {
    let env = Env::new_local();
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let home = env.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let run = |extra: &[(&str, &str)]| {
        let mut c = Cairn::bare(&env)
            .env("HOME", &home)
            .env("AWS_ENDPOINT_URL", &dead)
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &dead);
        for (k, v) in extra {
            c = c.env(k, v);
        }
        c.args(["-r", "s3://cairn-fuzz/repo", "snapshots"])
            .run()
            .code(1)
    };
    run(&[]).stderr_has(
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE",
    );
    run(&[("AWS_ACCESS_KEY_ID", "AKIAFUZZ")])
        .stderr_has("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
    run(&[("AWS_SECRET_ACCESS_KEY", "fuzz-secret")])
        .stderr_has("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not");
    let out = run(&[("AWS_PROFILE", "no-such-profile")]).stderr_has("profile 'no-such-profile'");
    assert!(!out.stderr.contains("fuzz-secret"));
}
