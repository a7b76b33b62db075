//! `cairn find` and `cairn diff`: finding a file across snapshots, and what changed between
//! two of them.

use std::io::Write;

use anyhow::Result;
use clap::Args;

use cairn::format::snapshot::Snapshot;
use cairn::format::tree::NodeKind;
use cairn::id::Id;
use cairn::ops::diff::{self, ChangeKind, Counts, DiffOptions};
use cairn::ops::find::{self, FindOptions};

use super::commands::{open_repo, print_json};
use super::output;
use super::settings::Settings;
use super::{EXIT_FAILURE, EXIT_OK};

#[derive(Debug, Args)]
pub struct FindArgs {
    /// Glob patterns: on the name (`invoice-*.pdf`, a table name such as `orders`), or on the
    /// path when the pattern holds a `/` (`/srv/*/uploads/**`).
    #[arg(required = true, value_name = "PATTERN")]
    pub patterns: Vec<String>,
    /// Only these snapshots (id prefixes or "latest"; repeatable).
    #[arg(long = "snapshot", value_name = "SNAP")]
    pub snapshots: Vec<String>,
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag (repeatable: all of them).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only snapshots of this backed-up path (repeatable: any of them).
    #[arg(long = "path")]
    pub paths: Vec<String>,
    /// Match without regard to case.
    #[arg(short = 'i', long)]
    pub ignore_case: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first snapshot (id prefix or "latest").
    pub old: String,
    /// The second snapshot.
    pub new: String,
    /// Compare only below this path.
    pub path: Option<String>,
    /// Also list entries whose metadata alone changed (mode, owner, mtime, xattrs).
    #[arg(long)]
    pub metadata: bool,
}

fn local_time(t: cairn::format::Timestamp, tz: &jiff::tz::TimeZone) -> String {
    t.to_jiff()
        .map(|t| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// A match as `find --json` gives it: the match and its snapshot's time and host.
#[derive(serde::Serialize)]
struct JsonMatch<'a> {
    #[serde(flatten)]
    found: &'a find::Match,
    snapshot_time: cairn::format::Timestamp,
    host: &'a str,
}

pub async fn find(g: &Settings, a: FindArgs) -> Result<i32> {
    let repo = open_repo(g).await?;
    let snaps: Vec<(Id, Snapshot)> = if a.snapshots.is_empty() {
        repo.snapshots()?
    } else {
        let mut v = Vec::new();
        for s in &a.snapshots {
            let found = repo.find_snapshot(s, a.host.as_deref(), &a.tags)?;
            if !v.iter().any(|(id, _): &(Id, Snapshot)| *id == found.0) {
                v.push(found);
            }
        }
        v
    };
    let snaps: Vec<(Id, Snapshot)> = snaps
        .into_iter()
        .filter(|(_, s)| s.matches(a.host.as_deref(), &a.tags))
        .filter(|(_, s)| a.paths.is_empty() || s.paths.iter().any(|p| a.paths.contains(p)))
        .collect();
    let opts = FindOptions {
        patterns: a.patterns,
        ignore_case: a.ignore_case,
    };
    let o = find::find(&repo, &snaps, &opts).await?;
    for (id, e) in &o.errors {
        ewriteln!("error: snapshot {}: {e:#}", id.short());
    }
    let code = if o.errors.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    };
    if g.json {
        let by_id: std::collections::HashMap<Id, &Snapshot> =
            snaps.iter().map(|(id, s)| (*id, s)).collect();
        let matches: Vec<JsonMatch> = o
            .matches
            .iter()
            .map(|m| {
                let s = by_id[&m.snapshot];
                JsonMatch {
                    found: m,
                    snapshot_time: s.time,
                    host: &s.host,
                }
            })
            .collect();
        #[derive(serde::Serialize)]
        struct Report<'a> {
            matches: Vec<JsonMatch<'a>>,
            snapshots_searched: usize,
            snapshots_indexed: usize,
            errors: Vec<serde_json::Value>,
        }
        print_json(&Report {
            matches,
            snapshots_searched: o.searched,
            snapshots_indexed: o.indexed,
            errors: o
                .errors
                .iter()
                .map(|(id, e)| serde_json::json!({"snapshot": id, "error": format!("{e:#}")}))
                .collect(),
        })?;
        return Ok(code);
    }
    let tz = jiff::tz::TimeZone::system();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut current: Option<Id> = None;
    for m in &o.matches {
        if current != Some(m.snapshot) {
            current = Some(m.snapshot);
            let s = snaps
                .iter()
                .find(|(id, _)| *id == m.snapshot)
                .map(|(_, s)| s);
            if let Some(s) = s {
                writeln!(
                    out,
                    "snapshot {} of {} at {} ({}):",
                    m.snapshot.short(),
                    s.paths.join(" "),
                    local_time(s.time, &tz),
                    s.host
                )?;
            }
        }
        let table = m
            .table
            .as_ref()
            .map(|t| format!("  (table {t})"))
            .unwrap_or_default();
        let mode = if m.kind == NodeKind::Dir {
            "dir "
        } else {
            m.kind.as_str()
        };
        writeln!(
            out,
            "  {:<7} {:>12}  {}  {}{table}",
            mode,
            m.size,
            local_time(m.mtime, &tz),
            m.path
        )?;
    }
    out.flush()?;
    drop(out);
    if !g.quiet {
        let hits: std::collections::HashSet<Id> = o.matches.iter().map(|m| m.snapshot).collect();
        ewriteln!(
            "{} matches in {} of {} snapshots searched{}",
            o.matches.len(),
            hits.len(),
            o.searched,
            if o.indexed > 0 {
                format!(" ({} indexed now)", o.indexed)
            } else {
                String::new()
            }
        );
    }
    Ok(code)
}

fn counts_line(what: &str, c: &Counts, metadata: bool) -> String {
    let mut s = format!(
        "{what:<7} {:>6} added, {:>6} removed, {:>6} modified, {:>6} type changed",
        c.added, c.removed, c.modified, c.type_changed
    );
    if metadata {
        s.push_str(&format!(", {:>6} metadata", c.metadata));
    }
    s
}

pub async fn diff_cmd(g: &Settings, a: DiffArgs) -> Result<i32> {
    let repo = open_repo(g).await?;
    let (old_id, old) = repo.find_snapshot(&a.old, None, &[])?;
    let (new_id, new) = repo.find_snapshot(&a.new, None, &[])?;
    let opts = DiffOptions {
        metadata: a.metadata,
    };
    let o = diff::diff(&repo, &old, &new, a.path.as_deref(), &opts).await?;
    if g.json {
        let mut v = serde_json::to_value(&o)?;
        v["old"] = serde_json::json!(old_id);
        v["new"] = serde_json::json!(new_id);
        print_json(&v)?;
        return Ok(EXIT_OK);
    }
    let tz = jiff::tz::TimeZone::system();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if !g.quiet {
        ewriteln!(
            "comparing snapshot {} ({}) to {} ({})",
            old_id.short(),
            local_time(old.time, &tz),
            new_id.short(),
            local_time(new.time, &tz)
        );
    }
    for c in &o.changes {
        let mut extra = String::new();
        if let Some(t) = &c.table {
            extra.push_str(&format!("  (table {t}"));
            match (c.old_rows, c.new_rows) {
                (Some(a), Some(b)) => extra.push_str(&format!(", rows {a} -> {b}")),
                (Some(n), None) | (None, Some(n)) => extra.push_str(&format!(", {n} rows")),
                _ => {}
            }
            extra.push(')');
        }
        match c.change {
            ChangeKind::Modified if c.differs.contains(&"content") => {
                let (a, b) = (c.old_size.unwrap_or(0), c.new_size.unwrap_or(0));
                let delta = b as i128 - a as i128;
                extra.push_str(&format!(
                    "  ({} -> {}, {}{})",
                    output::bytes(a),
                    output::bytes(b),
                    if delta < 0 { "-" } else { "+" },
                    output::bytes(delta.unsigned_abs() as u64)
                ));
            }
            ChangeKind::Metadata | ChangeKind::Modified => {
                extra.push_str(&format!("  ({})", c.differs.join(", ")));
            }
            ChangeKind::Type => extra.push_str(&format!(
                "  ({} -> {})",
                c.old_type.map(|k| k.as_str()).unwrap_or("?"),
                c.new_type.map(|k| k.as_str()).unwrap_or("?")
            )),
            _ => {}
        }
        let dir = if c.new_type.or(c.old_type) == Some(NodeKind::Dir) {
            "/"
        } else {
            ""
        };
        writeln!(out, "{}    {}{dir}{extra}", c.change.mark(), c.path)?;
    }
    writeln!(out)?;
    writeln!(out, "{}", counts_line("Files:", &o.files, a.metadata))?;
    writeln!(out, "{}", counts_line("Dirs:", &o.dirs, a.metadata))?;
    writeln!(out, "{}", counts_line("Others:", &o.others, a.metadata))?;
    writeln!(
        out,
        "Added:   {} in {} blobs (data the second snapshot has and the first does not)",
        output::bytes(o.added_bytes),
        o.added_blobs
    )?;
    writeln!(
        out,
        "Removed: {} in {} blobs",
        output::bytes(o.removed_bytes),
        o.removed_blobs
    )?;
    out.flush()?;
    Ok(EXIT_OK)
}
