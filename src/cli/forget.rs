//! `cairn forget`: flags, resolution into [`ForgetOptions`], and the report (a table per group
//! like restic's, or one JSON document).

use std::io::Write;

use anyhow::{Result, bail};
use clap::Args;
use jiff::tz::TimeZone;

use cairn::Id;
use cairn::format::snapshot::Snapshot;
use cairn::ops::forget::{Count, Counters, Duration, Filter, GroupBy, GroupKey, Policy};
use cairn::ops::forget_run::{self, ForgetOptions, ForgetOutcome, Selection};

use super::EXIT_OK;
use super::commands::{open_repo, print_json, snapshot_json};
use super::settings::Settings;

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Snapshots to forget (id prefixes, or "latest"). Without any, the --keep-* policy
    /// decides, per group.
    #[arg(value_name = "SNAP")]
    pub snapshots: Vec<String>,
    /// Keep the last N snapshots (-1 or "unlimited": all).
    #[arg(short = 'l', long, value_name = "N", allow_hyphen_values = true)]
    pub keep_last: Option<Count>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(short = 'H', long, value_name = "N", allow_hyphen_values = true)]
    pub keep_hourly: Option<Count>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(short = 'd', long, value_name = "N", allow_hyphen_values = true)]
    pub keep_daily: Option<Count>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(short = 'w', long, value_name = "N", allow_hyphen_values = true)]
    pub keep_weekly: Option<Count>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(short = 'm', long, value_name = "N", allow_hyphen_values = true)]
    pub keep_monthly: Option<Count>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(short = 'y', long, value_name = "N", allow_hyphen_values = true)]
    pub keep_yearly: Option<Count>,
    /// Keep snapshots newer than DURATION (e.g. 1y5m7d2h) before the latest snapshot.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<Duration>,
    /// Keep the newest snapshot of each hour within DURATION of the latest snapshot.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<Duration>,
    /// Keep the newest snapshot of each day within DURATION of the latest snapshot.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<Duration>,
    /// Keep the newest snapshot of each ISO week within DURATION of the latest snapshot.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<Duration>,
    /// Keep the newest snapshot of each month within DURATION of the latest snapshot.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<Duration>,
    /// Keep the newest snapshot of each year within DURATION of the latest snapshot.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<Duration>,
    /// Keep snapshots with all of these tags (comma-separated; repeat: any list).
    #[arg(long = "keep-tag", value_name = "TAG[,TAG...]")]
    pub keep_tags: Vec<String>,
    /// Only consider snapshots of this host (repeat: any of them).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only consider snapshots with this tag (repeat: all must match).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only consider snapshots that include this path (repeat: all must match).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// Group snapshots by a comma-separated list of host, paths, tags ("" for one group);
    /// the policy applies to each group on its own.
    #[arg(short = 'g', long, value_name = "GROUP", default_value = "host,paths")]
    pub group_by: String,
    /// Decide and print, but delete nothing (and take no lease).
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Run prune afterwards to free the space of the forgotten snapshots.
    #[arg(long)]
    pub prune: bool,
    /// With --prune: repack packs with more than this share of unneeded data.
    #[arg(long, default_value = "5%", requires = "prune")]
    pub max_unused: String,
    /// With --prune: how long obsolete packs stay condemned before deletion.
    #[arg(long, default_value = "1h", requires = "prune")]
    pub grace: String,
    /// With no policy, remove every snapshot that the --host/--tag/--path filter selects.
    #[arg(long)]
    pub unsafe_allow_remove_all: bool,
}

fn policy(a: &ForgetArgs) -> Policy {
    let d = |x: Option<Duration>| x.unwrap_or_default();
    Policy {
        last: a.keep_last.unwrap_or_default(),
        hourly: a.keep_hourly.unwrap_or_default(),
        daily: a.keep_daily.unwrap_or_default(),
        weekly: a.keep_weekly.unwrap_or_default(),
        monthly: a.keep_monthly.unwrap_or_default(),
        yearly: a.keep_yearly.unwrap_or_default(),
        within: d(a.keep_within),
        within_hourly: d(a.keep_within_hourly),
        within_daily: d(a.keep_within_daily),
        within_weekly: d(a.keep_within_weekly),
        within_monthly: d(a.keep_within_monthly),
        within_yearly: d(a.keep_within_yearly),
        tags: cairn::ops::forget::keep_tag_lists(&a.keep_tags),
    }
}

/// An absolute path with `.`, `..` and repeated or trailing slashes resolved lexically, as
/// backup records it; anything else (a stdin name) as given.
fn clean_path(p: &str) -> String {
    if !p.starts_with('/') {
        return p.to_string();
    }
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

fn options(g: &Settings, a: &ForgetArgs) -> Result<ForgetOptions> {
    let policy = policy(a);
    let selection = if !a.snapshots.is_empty() {
        if !policy.is_empty() || a.unsafe_allow_remove_all {
            bail!("give either snapshot ids or a --keep-* policy, not both");
        }
        Selection::Ids(a.snapshots.clone())
    } else if policy.is_empty() && a.unsafe_allow_remove_all {
        Selection::AllMatching
    } else {
        Selection::Policy {
            policy,
            group_by: a.group_by.parse::<GroupBy>()?,
        }
    };
    Ok(ForgetOptions {
        selection,
        filter: Filter {
            hosts: a.hosts.clone(),
            tags: a.tags.clone(),
            paths: a.paths.iter().map(|p| clean_path(p)).collect(),
        },
        dry_run: a.dry_run,
        lease_wait: g.lease_wait,
        tz: TimeZone::system(),
    })
}

pub async fn forget(g: &Settings, a: ForgetArgs) -> Result<i32> {
    let opts = options(g, &a)?;
    let prune_opts = if a.prune && !a.dry_run {
        Some(super::maint::prune_options(
            g,
            &super::maint::PruneArgs {
                max_unused: a.max_unused.clone(),
                grace: a.grace.clone(),
                dry_run: false,
            },
        )?)
    } else {
        None
    };
    let repo = open_repo(g).await?;
    let outcome = forget_run::run(&repo, &opts).await?;
    let pruned = match &prune_opts {
        Some(p) => Some(cairn::ops::prune::prune(&repo, p).await?),
        None => None,
    };
    if g.json {
        let mut doc = report_json(&opts, &outcome);
        if let (Some(r), Some(m)) = (&pruned, doc.as_object_mut()) {
            m.insert("prune".into(), serde_json::to_value(r)?);
        }
        print_json(&doc)?;
    } else {
        if !g.quiet {
            report_text(&opts, &outcome)?;
        }
        if let Some(r) = &pruned {
            super::maint::print_prune(g, r)?;
        }
    }
    Ok(EXIT_OK)
}

fn counters_json(c: &Counters) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (name, v) in [
        ("last", c.last),
        ("hourly", c.hourly),
        ("daily", c.daily),
        ("weekly", c.weekly),
        ("monthly", c.monthly),
        ("yearly", c.yearly),
    ] {
        match v {
            Count::Off => {}
            Count::N(n) => {
                m.insert(name.into(), n.into());
            }
            Count::Unlimited => {
                m.insert(name.into(), "unlimited".into());
            }
        }
    }
    serde_json::Value::Object(m)
}

fn key_json(k: &GroupKey) -> serde_json::Value {
    serde_json::json!({ "host": k.host, "paths": k.paths, "tags": k.tags })
}

/// The `--json` document. Field names are stable:
/// `dry_run`, `policy` (a summary string, or null when snapshots were named), `groups` (each
/// with `key` {`host`, `paths`, `tags`: null when not grouped by}, `keep`, `remove` (snapshots
/// as `cairn snapshots --json` prints them, newest first) and `reasons` (per kept snapshot:
/// `id`, `short_id`, `time`, `matches`, `counters`)), `remove` (every snapshot selected for
/// removal, oldest first) and `removed` (the ids deleted; empty on a dry run).
fn report_json(opts: &ForgetOptions, o: &ForgetOutcome) -> serde_json::Value {
    let policy = match &opts.selection {
        Selection::Policy { policy, .. } => serde_json::Value::String(policy.to_string()),
        Selection::AllMatching => "remove all matching snapshots".into(),
        Selection::Ids(_) => serde_json::Value::Null,
    };
    let groups: Vec<serde_json::Value> = o
        .groups
        .iter()
        .map(|gr| {
            serde_json::json!({
                "key": key_json(&gr.key),
                "keep": gr.keep.iter().map(|k| snapshot_json(&k.id, &k.snapshot)).collect::<Vec<_>>(),
                "remove": gr.remove.iter().map(|(id, s)| snapshot_json(id, s)).collect::<Vec<_>>(),
                "reasons": gr.keep.iter().map(|k| serde_json::json!({
                    "id": k.id,
                    "short_id": k.id.short(),
                    "time": k.snapshot.time,
                    "matches": k.matches,
                    "counters": counters_json(&k.counters),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "dry_run": opts.dry_run,
        "policy": policy,
        "groups": groups,
        "remove": o.remove.iter().map(|(id, s)| snapshot_json(id, s)).collect::<Vec<_>>(),
        "removed": o.removed,
    })
}

fn local_time(s: &Snapshot) -> String {
    s.time
        .to_jiff()
        .map(|t| {
            t.to_zoned_datetime(TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| s.time.to_rfc3339())
}

fn describe_key(k: &GroupKey) -> String {
    let mut parts = Vec::new();
    if let Some(h) = &k.host {
        parts.push(format!("host [{h}]"));
    }
    if let Some(p) = &k.paths {
        parts.push(format!("paths [{}]", p.join(", ")));
    }
    if let Some(t) = &k.tags {
        parts.push(format!("tags [{}]", t.join(", ")));
    }
    parts.join(", ")
}

/// One table: id, time, host, tags, (reasons,) paths. A snapshot with several reasons takes
/// one line per reason, as in restic.
fn table(
    out: &mut impl Write,
    rows: &[(&Id, &Snapshot, Option<&[String]>)],
    with_reasons: bool,
) -> std::io::Result<()> {
    let reason_w = rows
        .iter()
        .flat_map(|r| r.2.unwrap_or(&[]).iter().map(String::len))
        .max()
        .unwrap_or(0)
        .max(7);
    let head = if with_reasons {
        format!(
            "{:<8}  {:<19}  {:<12}  {:<12}  {:<reason_w$}  Paths",
            "ID", "Time", "Host", "Tags", "Reasons"
        )
    } else {
        format!(
            "{:<8}  {:<19}  {:<12}  {:<12}  Paths",
            "ID", "Time", "Host", "Tags"
        )
    };
    writeln!(out, "{head}")?;
    writeln!(out, "{}", "-".repeat(head.len().max(60)))?;
    for (id, s, reasons) in rows {
        let reasons = reasons.unwrap_or(&[]);
        let first = reasons.first().map(String::as_str).unwrap_or("");
        if with_reasons {
            writeln!(
                out,
                "{:<8}  {:<19}  {:<12}  {:<12}  {:<reason_w$}  {}",
                id.short(),
                local_time(s),
                s.host,
                s.tags.join(","),
                first,
                s.paths.join(" ")
            )?;
            for r in reasons.iter().skip(1) {
                writeln!(out, "{:<59}{r}", "")?;
            }
        } else {
            writeln!(
                out,
                "{:<8}  {:<19}  {:<12}  {:<12}  {}",
                id.short(),
                local_time(s),
                s.host,
                s.tags.join(","),
                s.paths.join(" ")
            )?;
        }
    }
    writeln!(out, "{}", "-".repeat(head.len().max(60)))?;
    writeln!(out, "{} snapshots", rows.len())
}

fn report_text(opts: &ForgetOptions, o: &ForgetOutcome) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if let Selection::Policy { policy, .. } = &opts.selection {
        writeln!(out, "Applying Policy: {policy}")?;
    }
    for gr in &o.groups {
        let k = describe_key(&gr.key);
        if !k.is_empty() {
            writeln!(out, "snapshots for ({k}):")?;
        }
        if !gr.keep.is_empty() {
            writeln!(out, "keep {} snapshots:", gr.keep.len())?;
            let rows: Vec<_> = gr
                .keep
                .iter()
                .map(|k| (&k.id, &k.snapshot, Some(k.matches.as_slice())))
                .collect();
            table(&mut out, &rows, true)?;
            writeln!(out)?;
        }
        if !gr.remove.is_empty() {
            writeln!(out, "remove {} snapshots:", gr.remove.len())?;
            let rows: Vec<_> = gr.remove.iter().map(|(id, s)| (id, s, None)).collect();
            table(&mut out, &rows, false)?;
            writeln!(out)?;
        }
    }
    if o.groups.is_empty()
        && !o.remove.is_empty()
        && !matches!(opts.selection, Selection::Policy { .. })
    {
        let rows: Vec<_> = o.remove.iter().map(|(id, s)| (id, s, None)).collect();
        writeln!(out, "remove {} snapshots:", rows.len())?;
        table(&mut out, &rows, false)?;
        writeln!(out)?;
    }
    if opts.dry_run {
        writeln!(
            out,
            "dry run: would have removed {} snapshots{}",
            o.remove.len(),
            if o.remove.is_empty() { "" } else { ":" }
        )?;
        for (id, _) in &o.remove {
            writeln!(out, "  {}", id.short())?;
        }
    } else {
        for id in &o.removed {
            writeln!(out, "removed snapshot {}", id.short())?;
        }
        writeln!(out, "{} snapshots removed", o.removed.len())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::clean_path;

    #[test]
    fn paths_are_cleaned_like_backup_records_them() {
        assert_eq!(clean_path("/srv/app/"), "/srv/app");
        assert_eq!(clean_path("/srv//./x/../app"), "/srv/app");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("db/dump.sql"), "db/dump.sql");
    }
}
