//! `cairn forget`: retention policies give exactly restic's decisions (checked against a golden
//! table that real restic produced), forgetting by id, dry runs, refusals and leases.
//!
//! The golden table `tests/fixtures/forget_policies.json` holds deterministic snapshot times
//! (seeded generator below), the policies, and what restic 0.14.0 kept and removed for each.
//! It is produced by the ignored test `regenerate_golden_table_with_restic`, which needs
//! `restic` on the PATH:
//!
//! ```text
//! cargo test --test cli_forget -- --ignored regenerate_golden_table_with_restic
//! ```
//!
//! The regular tests create the same snapshots with `cairn backup --time` and compare
//! `cairn forget --dry-run --json` with the table, so CI needs no restic. Both tools run with
//! `TZ=UTC`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{Value, json};

const FIXTURE: &str = "tests/fixtures/forget_policies.json";
const SEED: u64 = 20_261_126;

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)
}

// ---------------------------------------------------------------------------------------------
// The data sets and policies (used only to generate the table).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn epoch(s: &str) -> i64 {
    let dt: jiff::civil::DateTime = s.replacen(' ', "T", 1).parse().unwrap();
    dt.to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_second()
}

fn civil(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .unwrap()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// `count` distinct irregular times in `[start, start + span)`: uniform anchors plus, for
/// about a third of them, a follower minutes to hours later (so hours and days hold several).
fn irregular_times(rng: &mut Rng, start: &str, span_secs: u64, count: usize) -> Vec<i64> {
    let start = epoch(start);
    let mut set = BTreeSet::new();
    while set.len() < count {
        let t = start + rng.below(span_secs) as i64;
        set.insert(t);
        if set.len() < count && rng.chance(35) {
            let f = t + 60 + rng.below(3 * 3600) as i64;
            if f < start + span_secs as i64 {
                set.insert(f);
            }
        }
    }
    set.into_iter().collect()
}

fn datasets() -> BTreeMap<&'static str, Vec<Value>> {
    let mut rng = Rng(SEED);
    let mut out = BTreeMap::new();
    // One host, one path, 40 snapshots over 100 days across a year end (ISO week 1 of 2026
    // starts on 29 December 2025).
    let main: Vec<Value> = irregular_times(&mut rng, "2025-11-20 00:00:00", 100 * 86_400, 40)
        .into_iter()
        .map(|t| {
            let mut tags = Vec::new();
            if rng.chance(30) {
                tags.push("nightly");
            }
            if rng.chance(10) {
                tags.push("special");
            }
            if rng.chance(30) {
                tags.push("x");
            }
            if rng.chance(30) {
                tags.push("y");
            }
            json!({"time": civil(t), "host": "h", "path": "a", "tags": tags})
        })
        .collect();
    out.insert("main", main);
    // Two hosts and two paths, 40 snapshots over 60 days.
    let multi: Vec<Value> = irregular_times(&mut rng, "2026-03-01 00:00:00", 60 * 86_400, 40)
        .into_iter()
        .map(|t| {
            let host = if rng.chance(50) { "h1" } else { "h2" };
            let path = if rng.chance(60) { "a" } else { "b" };
            let tags: Vec<&str> = match rng.below(3) {
                0 => vec![],
                1 => vec!["nightly"],
                _ => vec!["manual"],
            };
            json!({"time": civil(t), "host": host, "path": path, "tags": tags})
        })
        .collect();
    out.insert("multi", multi);
    // 24 snapshots over six years.
    let years: Vec<Value> = irregular_times(&mut rng, "2020-03-01 00:00:00", 6 * 365 * 86_400, 24)
        .into_iter()
        .map(|t| json!({"time": civil(t), "host": "h", "path": "a", "tags": []}))
        .collect();
    out.insert("years", years);
    out
}

/// (name, data set, arguments); `{a}` and `{b}` stand for the source directories.
fn cases() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        (
            "done_when_daily7_weekly4_monthly3",
            "main",
            vec![
                "--keep-daily",
                "7",
                "--keep-weekly",
                "4",
                "--keep-monthly",
                "3",
            ],
        ),
        ("last_5", "main", vec!["--keep-last", "5"]),
        ("last_1", "main", vec!["--keep-last", "1"]),
        ("hourly_10", "main", vec!["--keep-hourly", "10"]),
        ("hourly_100", "main", vec!["--keep-hourly", "100"]),
        ("daily_3", "main", vec!["--keep-daily", "3"]),
        ("weekly_6", "main", vec!["--keep-weekly", "6"]),
        (
            "monthly_2_yearly_2",
            "main",
            vec!["--keep-monthly", "2", "--keep-yearly", "2"],
        ),
        ("yearly_5", "main", vec!["--keep-yearly", "5"]),
        ("within_10d", "main", vec!["--keep-within", "10d"]),
        ("within_1m2d3h", "main", vec!["--keep-within", "1m2d3h"]),
        (
            "within_daily_14d",
            "main",
            vec!["--keep-within-daily", "14d"],
        ),
        (
            "within_hourly_2d_weekly_1m",
            "main",
            vec!["--keep-within-hourly", "2d", "--keep-within-weekly", "1m"],
        ),
        (
            "within_monthly_1y_yearly_3y",
            "main",
            vec!["--keep-within-monthly", "1y", "--keep-within-yearly", "3y"],
        ),
        ("keep_tag", "main", vec!["--keep-tag", "special"]),
        (
            "keep_tag_lists",
            "main",
            vec!["--keep-tag", "x,y", "--keep-tag", "special"],
        ),
        (
            "everything_at_once",
            "main",
            vec![
                "--keep-last",
                "3",
                "--keep-daily",
                "7",
                "--keep-weekly",
                "4",
                "--keep-monthly",
                "3",
                "--keep-yearly",
                "1",
                "--keep-within",
                "5d",
                "--keep-tag",
                "special",
            ],
        ),
        (
            "filter_tag",
            "main",
            vec!["--tag", "nightly", "--keep-last", "2", "--keep-daily", "3"],
        ),
        (
            "filter_host",
            "main",
            vec!["--host", "h", "--keep-within", "3d"],
        ),
        (
            "filter_path",
            "main",
            vec!["--path", "{a}", "--keep-weekly", "2"],
        ),
        (
            "group_none_main",
            "main",
            vec!["--group-by", "", "--keep-daily", "5"],
        ),
        ("default_grouping", "multi", vec!["--keep-daily", "3"]),
        (
            "group_host",
            "multi",
            vec!["--group-by", "host", "--keep-last", "3"],
        ),
        (
            "group_none",
            "multi",
            vec!["--group-by", "", "--keep-weekly", "2"],
        ),
        (
            "group_tags",
            "multi",
            vec!["--group-by", "tags", "--keep-last", "2"],
        ),
        (
            "group_host_tags",
            "multi",
            vec![
                "--group-by",
                "host,tags",
                "--keep-daily",
                "2",
                "--keep-within",
                "5d",
            ],
        ),
        (
            "group_paths",
            "multi",
            vec![
                "--group-by",
                "paths",
                "--keep-monthly",
                "1",
                "--keep-hourly",
                "3",
            ],
        ),
        (
            "filter_host_h1",
            "multi",
            vec!["--host", "h1", "--keep-last", "2"],
        ),
        (
            "filter_path_b_group_host",
            "multi",
            vec!["--path", "{b}", "--keep-daily", "4", "--group-by", "host"],
        ),
        ("yearly_3", "years", vec!["--keep-yearly", "3"]),
        (
            "monthly_6_yearly_10",
            "years",
            vec!["--keep-monthly", "6", "--keep-yearly", "10"],
        ),
        (
            "within_yearly_2y6m",
            "years",
            vec!["--keep-within-yearly", "2y6m"],
        ),
        (
            "within_3y_last_2",
            "years",
            vec!["--keep-within", "3y", "--keep-last", "2"],
        ),
        (
            "weekly_5_monthly_12",
            "years",
            vec!["--keep-weekly", "5", "--keep-monthly", "12"],
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Normalising both tools' JSON into the table's form.

/// An RFC 3339 time as "YYYY-MM-DD HH:MM:SS" UTC.
fn norm_time(v: &Value) -> String {
    let t: jiff::Timestamp = v.as_str().unwrap().parse().unwrap();
    civil(t.as_second())
}

/// A path as its label ("a" or "b"): the last component.
fn label(p: &str) -> String {
    p.rsplit('/').next().unwrap().to_string()
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// A group key: host ("" when not grouped by), path labels and tags, sorted (null and [] are
/// the same: an ungrouped key and an empty one are told apart by the number of groups).
fn norm_key(host: &Value, paths: &Value, tags: &Value) -> Value {
    let mut p: Vec<String> = str_list(paths).iter().map(|p| label(p)).collect();
    p.sort();
    let mut t = str_list(tags);
    t.sort();
    json!({"host": host.as_str().unwrap_or(""), "paths": p, "tags": t})
}

fn times(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .map(|a| a.iter().map(|s| norm_time(&s["time"])).collect())
        .unwrap_or_default();
    v.sort();
    v.reverse();
    v
}

/// restic's `forget --json` output as table groups, sorted by key.
fn from_restic(out: &Value) -> Vec<Value> {
    let mut groups: Vec<Value> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let reasons: Vec<Value> = g["reasons"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| json!([norm_time(&r["snapshot"]["time"]), r["matches"]]))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "key": norm_key(&g["host"], &g["paths"], &g["tags"]),
                "keep": times(&g["keep"]),
                "remove": times(&g["remove"]),
                "reasons": reasons,
            })
        })
        .collect();
    groups.sort_by_key(|g| g["key"].to_string());
    groups
}

/// cairn's `forget --json` output as table groups, sorted by key.
fn from_cairn(out: &Value) -> Vec<Value> {
    let mut groups: Vec<Value> = out["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let k = &g["key"];
            let reasons: Vec<Value> = g["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| json!([norm_time(&r["time"]), r["matches"]]))
                .collect();
            json!({
                "key": norm_key(&k["host"], &k["paths"], &k["tags"]),
                "keep": times(&g["keep"]),
                "remove": times(&g["remove"]),
                "reasons": reasons,
            })
        })
        .collect();
    groups.sort_by_key(|g| g["key"].to_string());
    groups
}

fn expand(args: &[Value], base: &Path) -> Vec<String> {
    args.iter()
        .map(|a| {
            a.as_str()
                .unwrap()
                .replace("{a}", base.join("a").to_str().unwrap())
                .replace("{b}", base.join("b").to_str().unwrap())
        })
        .collect()
}

fn make_sources(base: &Path) {
    for l in ["a", "b"] {
        write(&base.join(l).join("file.txt"), l.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Generating the table with real restic.

fn restic(repo: &Path, cache: &Path, args: &[String]) -> std::process::Output {
    let out = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(args)
        .env("RESTIC_PASSWORD", "golden")
        .env("RESTIC_CACHE_DIR", cache)
        .env("TZ", "UTC")
        .output()
        .expect("run restic (is it installed?)");
    assert!(
        out.status.success(),
        "restic {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
#[ignore = "needs restic; regenerates tests/fixtures/forget_policies.json"]
fn regenerate_golden_table_with_restic() {
    let version = Command::new("restic").arg("version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let sets = datasets();
    let mut repos = BTreeMap::new();
    for (name, snaps) in &sets {
        let base = dir.path().join(name);
        make_sources(&base);
        let repo = base.join("repo");
        let cache = base.join("cache");
        restic(&repo, &cache, &["init".into(), "-q".into()]);
        for s in snaps {
            let mut args: Vec<String> = vec![
                "backup".into(),
                "-q".into(),
                "--host".into(),
                s["host"].as_str().unwrap().into(),
                "--time".into(),
                s["time"].as_str().unwrap().into(),
            ];
            for t in str_list(&s["tags"]) {
                args.push("--tag".into());
                args.push(t);
            }
            args.push(base.join(s["path"].as_str().unwrap()).display().to_string());
            restic(&repo, &cache, &args);
        }
        repos.insert(*name, (base, repo, cache));
    }
    let mut table_cases = Vec::new();
    for (name, set, args) in cases() {
        let (base, repo, cache) = &repos[set];
        let args_v: Vec<Value> = args.iter().map(|a| json!(a)).collect();
        let mut full = vec!["forget".to_string(), "--dry-run".into(), "--json".into()];
        full.extend(expand(&args_v, base));
        let out = restic(repo, cache, &full);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "restic forget output is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        table_cases.push(json!({
            "name": name,
            "dataset": set,
            "args": args_v,
            "groups": from_restic(&v),
        }));
    }
    let table = json!({
        "about": "Expected decisions of `forget` for each policy, produced by real restic with \
                  TZ=UTC by `cargo test --test cli_forget -- --ignored \
                  regenerate_golden_table_with_restic`. Times are UTC. Do not edit by hand.",
        "generated_by": version,
        "seed": SEED,
        "datasets": sets,
        "cases": table_cases,
    });
    let path = fixture_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&table).unwrap() + "\n").unwrap();
    eprintln!("wrote {}", path.display());
}

// ---------------------------------------------------------------------------------------------
// cairn against the table.

fn table() -> Value {
    let text = std::fs::read_to_string(fixture_path()).expect("golden table");
    serde_json::from_str(&text).expect("golden table is JSON")
}

/// A cairn repository holding data set `set` of the table; returns it and the sources' base.
fn cairn_dataset(table: &Value, set: &str) -> (Env, PathBuf) {
    let env = Env::with_repo();
    let base = env.path("src");
    make_sources(&base);
    let snaps = table["datasets"][set].as_array().unwrap();
    assert!(!snaps.is_empty());
    for s in snaps {
        let mut c = env
            .cmd()
            .env("TZ", "UTC")
            .args(["backup", "-q", "--host", s["host"].as_str().unwrap()])
            .args(["--time", s["time"].as_str().unwrap()]);
        for t in str_list(&s["tags"]) {
            c = c.args(["--tag", &t]);
        }
        c.arg(base.join(s["path"].as_str().unwrap())).run().ok();
    }
    assert_eq!(env.snapshots().len(), snaps.len());
    (env, base)
}

fn check_dataset(set: &str) {
    let table = table();
    let (env, base) = cairn_dataset(&table, set);
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in table["cases"].as_array().unwrap() {
        if case["dataset"] != set {
            continue;
        }
        let args = expand(case["args"].as_array().unwrap(), &base);
        let out = env
            .cmd()
            .env("TZ", "UTC")
            .args(["forget", "--dry-run", "--json"])
            .args(&args)
            .run()
            .ok()
            .json();
        let got = from_cairn(&out);
        let want = case["groups"].as_array().unwrap();
        if &got != want {
            failures.push(format!(
                "case {} ({args:?}):\n  restic: {}\n  cairn:  {}",
                case["name"],
                serde_json::to_string(want).unwrap(),
                serde_json::to_string(&got).unwrap()
            ));
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} cases for {set}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A dry run deleted nothing.
    assert_eq!(
        env.snapshots().len(),
        table["datasets"][set].as_array().unwrap().len()
    );
}

#[test]
fn golden_table_is_meaningful() {
    let table = table();
    assert!(
        table["generated_by"]
            .as_str()
            .unwrap()
            .starts_with("restic 0.14.0")
    );
    // The data sets are the ones the generator makes (the table is not edited by hand).
    let sets = serde_json::to_value(datasets()).unwrap();
    assert_eq!(table["datasets"], sets);
    let names: Vec<&str> = cases().iter().map(|c| c.0).collect();
    let in_table: Vec<&str> = table["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, in_table);
    // The Done-when case: 40 snapshots over 100 days, and restic both kept and removed some.
    let main = table["datasets"]["main"].as_array().unwrap();
    assert_eq!(main.len(), 40);
    let first = epoch(main[0]["time"].as_str().unwrap());
    let last = epoch(main[39]["time"].as_str().unwrap());
    assert!(last - first > 90 * 86_400 && last - first < 100 * 86_400);
    let done = &table["cases"][0];
    assert_eq!(done["name"], "done_when_daily7_weekly4_monthly3");
    let g = &done["groups"][0];
    let kept = g["keep"].as_array().unwrap().len();
    let removed = g["remove"].as_array().unwrap().len();
    assert_eq!(kept + removed, 40);
    assert!(kept >= 7 && removed >= 10, "kept {kept}, removed {removed}");
    // Most cases remove something.
    let removing = table["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| !g["remove"].as_array().unwrap().is_empty())
        })
        .count();
    assert!(removing >= 25, "only {removing} cases remove anything");
}

#[test]
fn policies_match_restic_on_one_host() {
    check_dataset("main");
}

#[test]
fn policies_match_restic_with_hosts_paths_and_tags_grouped() {
    check_dataset("multi");
}

#[test]
fn policies_match_restic_over_years() {
    check_dataset("years");
}

// ---------------------------------------------------------------------------------------------
// Forgetting by id, dry runs, refusals, leases.

/// A repository with three snapshots of `src` (oldest first: times 1, 2, 3 January 2026) and
/// their ids.
fn three_snapshots() -> (Env, PathBuf, Vec<String>) {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("f.txt"), b"contents\n");
    let mut ids = Vec::new();
    for (i, day) in ["01", "02", "03"].iter().enumerate() {
        write(&src.join(format!("v{i}.txt")), day.as_bytes());
        let v = env.backup(&[&src], &["--time", &format!("2026-01-{day} 12:00:00")]);
        ids.push(v["snapshot_id"].as_str().unwrap().to_string());
    }
    (env, src, ids)
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    env.snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn snapshot_files(env: &Env) -> BTreeSet<PathBuf> {
    env.repo_listing()
        .into_keys()
        .filter(|p| p.starts_with("snapshots"))
        .collect()
}

#[test]
fn forget_by_id_removes_exactly_that_snapshot_everywhere() {
    let (env, _src, ids) = three_snapshots();
    // A second cache that has seen all three snapshots: its catalog must learn of the removal.
    let other_cache = env.path("other-cache");
    let listed = |cache: &Path| -> Vec<String> {
        env.cmd()
            .env("CAIRN_CACHE_DIR", cache)
            .args(["snapshots", "--json"])
            .run()
            .ok()
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(&other_cache), ids);

    let out = env.run(["forget", "--json", &ids[1][..10]]).ok().json();
    assert_eq!(out["dry_run"], false);
    assert_eq!(out["policy"], Value::Null);
    assert_eq!(out["removed"], json!([ids[1]]));
    assert_eq!(out["remove"][0]["id"], ids[1].as_str());
    assert_eq!(snapshot_ids(&env), [ids[0].clone(), ids[2].clone()]);
    assert_eq!(listed(&other_cache), [ids[0].clone(), ids[2].clone()]);
    assert_eq!(
        listed(&env.path("fresh-cache")),
        [ids[0].clone(), ids[2].clone()]
    );
    assert!(!env.repo.join("snapshots").join(&ids[1]).exists());
    assert_eq!(snapshot_files(&env).len(), 2);
    // The forgotten snapshot is unknown to ls, restore, dump and stats.
    let t = env.path("t");
    env.run(["ls", &ids[1]]).code(1).stderr_has("not found");
    env.cmd()
        .args(["restore", &ids[1], "--target"])
        .arg(&t)
        .run()
        .code(1)
        .stderr_has("not found");
    env.run(["stats", &ids[1]]).code(1).stderr_has("not found");
    assert!(!t.exists());
    // The others still restore.
    env.restore(&ids[2], &t, &[]);
    // Forgetting it again, or any unknown id, fails and removes nothing else.
    env.run(["forget", &ids[1], &ids[0]])
        .code(1)
        .stderr_has("not found");
    assert_eq!(snapshot_ids(&env).len(), 2);
    // `latest` and several ids at once; the text report names them.
    let out = env.run(["forget", "latest", &ids[0]]).ok();
    let text = out.stdout_str();
    assert!(
        text.contains(&ids[0][..8]) && text.contains(&ids[2][..8]),
        "{text}"
    );
    assert!(text.contains("2 snapshots removed"), "{text}");
    assert!(snapshot_ids(&env).is_empty());
    // No lease is left behind.
    assert!(
        env.repo_listing().keys().all(|p| !p.starts_with("locks")),
        "{:?}",
        env.repo_listing()
    );
}

#[test]
fn policy_forget_deletes_what_the_dry_run_announced() {
    let (env, _src, ids) = three_snapshots();
    let before = env.repo_listing();
    let dry = env
        .run(["forget", "--dry-run", "--json", "--keep-last", "1"])
        .ok()
        .json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["removed"], json!([]));
    assert_eq!(dry["policy"], "keep 1 latest snapshots");
    let g = &dry["groups"][0];
    assert_eq!(
        g["key"]["host"].as_str(),
        env.snapshots()[0]["host"].as_str()
    );
    assert_eq!(g["key"]["tags"], Value::Null);
    assert_eq!(g["keep"][0]["id"], ids[2].as_str());
    assert_eq!(g["reasons"][0]["matches"], json!(["last snapshot"]));
    assert_eq!(g["reasons"][0]["counters"], json!({"last": 0}));
    let would: Vec<&str> = dry["remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(would, [ids[0].as_str(), ids[1].as_str()]);
    // The dry run wrote and deleted nothing (not even a lease).
    assert_eq!(env.repo_listing(), before);
    // The text form of a dry run.
    let text = env
        .run(["forget", "-n", "--keep-last", "1"])
        .ok()
        .stdout_str();
    assert!(
        text.contains("Applying Policy: keep 1 latest snapshots"),
        "{text}"
    );
    assert!(
        text.contains("keep 1 snapshots:") && text.contains("last snapshot"),
        "{text}"
    );
    assert!(text.contains("remove 2 snapshots:"), "{text}");
    assert!(text.contains("would have removed 2 snapshots"), "{text}");
    assert_eq!(env.repo_listing(), before);

    let done = env
        .run(["forget", "--json", "--keep-last", "1"])
        .ok()
        .json();
    assert_eq!(done["removed"], json!([ids[0], ids[1]]));
    assert_eq!(snapshot_ids(&env), [ids[2].clone()]);
    // Applying the same policy again removes nothing.
    let again = env
        .run(["forget", "--json", "--keep-last", "1"])
        .ok()
        .json();
    assert_eq!(again["removed"], json!([]));
}

#[test]
fn empty_policies_and_bad_arguments_are_refused() {
    let (env, src, ids) = three_snapshots();
    let before = env.repo_listing();
    env.run(["forget"])
        .code(1)
        .stderr_has("no policy was specified");
    env.run(["forget", "--keep-last", "0"])
        .code(1)
        .stderr_has("no policy was specified");
    env.run(["forget", "--unsafe-allow-remove-all"])
        .code(1)
        .stderr_has("filter");
    for bad in [
        &["forget", "--keep-last", "-2"][..],
        &["forget", "--keep-daily", "many"],
        &["forget", "--keep-within", "3x"],
        &["forget", "--keep-within", "7"],
        &["forget", "--keep-within-daily", "-1d"],
        &["forget", "--keep-last", "1", "--group-by", "host,color"],
        &["forget", "--keep-last", "1", &ids[0]],
        &["forget", "abc"],
    ] {
        env.run(bad).code(1);
    }
    env.run(["forget", "--keep-last", "-1", "--dry-run"]).ok();
    assert_eq!(env.repo_listing(), before);
    // -1 / unlimited keep every snapshot.
    let out = env
        .run(["forget", "--json", "--keep-daily", "unlimited"])
        .ok()
        .json();
    assert_eq!(out["removed"], json!([]));
    // With a filter, --unsafe-allow-remove-all removes what it selects, and only that.
    let other = env.backup(&[&src], &["--host", "elsewhere"]);
    let out = env
        .run([
            "forget",
            "--json",
            "--unsafe-allow-remove-all",
            "--host",
            "elsewhere",
        ])
        .ok()
        .json();
    assert_eq!(out["removed"], json!([other["snapshot_id"]]));
    assert_eq!(snapshot_ids(&env), ids);
}

/// Run `f` while holding a lease on `env`'s repository through the library, as another process
/// would.
fn holding_lease(env: &Env, mode: cairn::repo::lease::LeaseMode, f: impl FnOnce()) {
    use std::sync::Arc;
    let cache = env.path("holder-cache");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend = cairn::backend::open(env.repo.to_str().unwrap()).unwrap();
        let repo = Arc::new(
            cairn::repo::Repository::open(
                backend,
                || Ok(zeroize::Zeroizing::new(PASSWORD.as_bytes().to_vec())),
                &cairn::repo::OpenOptions::new(cache),
            )
            .await
            .unwrap(),
        );
        repo.with_lease(mode, "prune", std::time::Duration::ZERO, |_| async {
            // The commands run as other processes; this thread only waits for them.
            tokio::task::block_in_place(f);
            Ok(())
        })
        .await
        .unwrap();
    });
}

#[test]
fn a_live_lease_makes_forget_exit_11_and_delete_nothing() {
    use cairn::repo::lease::LeaseMode;
    let (env, _src, ids) = three_snapshots();
    for mode in [LeaseMode::Exclusive, LeaseMode::Write] {
        holding_lease(&env, mode, || {
            let before = snapshot_files(&env);
            env.run(["forget", "--keep-last", "1"])
                .code(11)
                .stderr_has("prune")
                .stderr_has(&format!("pid {}", std::process::id()));
            env.run(["forget", &ids[0]]).code(11);
            assert_eq!(snapshot_files(&env), before);
            // A dry run needs no lease.
            env.run(["forget", "--dry-run", "--keep-last", "1"]).ok();
        });
    }
    // Once the holder is gone, forget proceeds.
    env.run(["forget", "--keep-last", "1"]).ok();
    assert_eq!(snapshot_ids(&env), [ids[2].clone()]);
}

/// Days, weeks, ... are those of the local time zone (`TZ`), as in restic.
#[test]
fn periods_follow_the_local_time_zone() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("f"), b"f");
    for t in ["2026-01-01 21:30:00", "2026-01-01 22:30:00"] {
        env.cmd()
            .env("TZ", "UTC")
            .args(["backup", "-q", "--time", t])
            .arg(&src)
            .run()
            .ok();
    }
    let removed = |tz: &str| -> usize {
        env.cmd()
            .env("TZ", tz)
            .args(["forget", "--dry-run", "--json", "--keep-daily", "10"])
            .run()
            .ok()
            .json()["remove"]
            .as_array()
            .unwrap()
            .len()
    };
    // One day in UTC; 23:30 and 00:30 of two days at UTC+2 (a POSIX TZ string, so the test
    // needs no time zone database).
    assert_eq!(removed("UTC"), 1);
    assert_eq!(removed("XST-2"), 0);
}
