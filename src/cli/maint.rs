//! Maintenance commands: check, prune, repair.

use anyhow::Result;
use clap::Args;

use cairn::ops::check::{self, CheckOptions, CheckReport, ReadData};
use cairn::ops::prune::{PruneOptions, PruneReport};

use super::commands::{open_repo, parse_duration, print_json};
use super::output::{self, ProgressBar};
use super::settings::Settings;
use super::{EXIT_FAILURE, EXIT_OK};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Read and verify every blob of every pack.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read a part: N/M (the N-th of M groups) or P% (the packs verified longest ago first).
    #[arg(long, value_name = "N/M|P%")]
    pub read_data_subset: Option<String>,
    /// The repository, by its name in the configuration file (or a location), as -r.
    #[arg(long, value_name = "NAME")]
    pub repository: Option<String>,
}

pub async fn check(g: &Settings, a: CheckArgs) -> Result<i32> {
    let read_data = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => ReadData::parse_subset(s)?,
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let (repo, name) = match &a.repository {
        Some(name) => {
            let r = g.selected_repository(name)?;
            (super::commands::open_repo_at(g, &r).await?, r.name)
        }
        None => (open_repo(g).await?, g.repo()?.name.clone()),
    };
    let started = jiff::Timestamp::now();
    let progress = std::sync::Arc::new(cairn::ops::progress::Progress::default());
    let bar = ProgressBar::start(
        progress.clone(),
        g.quiet || g.json || read_data == ReadData::None,
        "check",
    );
    let r = check::check(
        &repo,
        &CheckOptions {
            read_data,
            progress: Some(progress),
            lease_wait: g.lease_wait,
        },
    )
    .await;
    bar.finish().await;
    let report = r?;
    // A repository of the configuration: `cairn health` reports its last check.
    if let Some(name) = &name {
        let error = (!report.ok()).then(|| {
            format!(
                "{} errors, {} damaged snapshots",
                report.errors.len(),
                report.damaged_snapshots.len()
            )
        });
        let recorded = cairn::job::history::History::open(&g.state_dir)
            .and_then(|mut h| h.record_check(name, started, report.ok(), error.as_deref()));
        if let Err(e) = recorded {
            tracing::warn!("could not record the check in the history: {e}");
        }
    }
    if g.json {
        print_json(&serde_json::to_value(&report)?)?;
    } else {
        print_report(&report, g.quiet);
    }
    Ok(if report.ok() { EXIT_OK } else { EXIT_FAILURE })
}

fn print_report(r: &CheckReport, quiet: bool) {
    let s = &r.stats;
    if !quiet {
        println!(
            "{} snapshots, {} index objects, {} packs ({}), {} trees, {} blobs in use",
            s.snapshots,
            s.index_objects,
            s.packs,
            output::bytes(s.pack_bytes),
            s.trees,
            s.blobs_referenced
        );
        if s.packs_read > 0 {
            println!(
                "read {} packs ({}), verified {} blobs",
                s.packs_read,
                output::bytes(s.bytes_read),
                s.blobs_verified
            );
        }
        for w in &r.warnings {
            println!("warning: {}: {}", w.object, w.message);
        }
    }
    for e in &r.errors {
        ewriteln!("error: {}: {}", e.object, e.message);
    }
    for d in &r.damaged_snapshots {
        let when = d
            .time
            .map(|t| format!(" ({})", t.to_rfc3339()))
            .unwrap_or_default();
        ewriteln!(
            "error: snapshot {}{when}: {} damaged paths",
            &d.id[..8],
            d.paths.len()
        );
        for p in d.paths.iter().take(20) {
            ewriteln!("  {}: {}", p.path, p.reason);
        }
        if d.paths.len() > 20 {
            ewriteln!("  ... and {} more (see --json)", d.paths.len() - 20);
        }
    }
    if r.ok() {
        if !quiet {
            println!("no errors found");
        }
    } else {
        ewriteln!(
            "{} errors; {} snapshots cannot be restored in full",
            r.errors.len(),
            r.damaged_snapshots.len()
        );
    }
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Repack packs with more than this share of unneeded data, e.g. 5% (or 0.05).
    #[arg(long, default_value = "5%")]
    pub max_unused: String,
    /// How long obsolete packs stay condemned before a prune deletes them (0s: at once).
    #[arg(long, default_value = "1h")]
    pub grace: String,
    /// Print what would be done; change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

fn parse_share(s: &str) -> Result<f64> {
    let v = match s.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.trim().parse::<f64>(),
    };
    match v {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => anyhow::bail!("--max-unused {s:?}: use a percentage such as 5% (0% to 100%)"),
    }
}

pub fn prune_options(g: &Settings, a: &PruneArgs) -> Result<PruneOptions> {
    Ok(PruneOptions {
        max_unused: parse_share(&a.max_unused)?,
        grace: parse_duration(&a.grace)?,
        dry_run: a.dry_run,
        lease_wait: g.lease_wait,
    })
}

pub async fn prune(g: &Settings, a: PruneArgs) -> Result<i32> {
    let opts = prune_options(g, &a)?;
    let repo = open_repo(g).await?;
    let r = cairn::ops::prune::prune(&repo, &opts).await?;
    print_prune(g, &r)?;
    Ok(EXIT_OK)
}

pub fn print_prune(g: &Settings, r: &PruneReport) -> Result<()> {
    if g.json {
        return print_json(&serde_json::to_value(r)?);
    }
    if g.quiet {
        return Ok(());
    }
    let would = if r.dry_run { "would be " } else { "" };
    println!(
        "{} snapshots use {} blobs; {} packs ({}) before",
        r.snapshots,
        r.blobs_used,
        r.packs_before,
        output::bytes(r.bytes_before)
    );
    println!(
        "repacked: {} packs ({} of needed data {would}copied into {} new packs)",
        r.packs_repacked,
        output::bytes(r.bytes_repacked),
        r.packs_written
    );
    println!(
        "deleted: {} packs, {} freed",
        r.packs_deleted,
        output::bytes(r.bytes_deleted)
    );
    println!(
        "condemned: {} packs ({}) {would}deleted by a prune after the grace period; {} packs ({}) still waiting",
        r.packs_condemned,
        output::bytes(r.bytes_condemned),
        r.packs_waiting,
        output::bytes(r.bytes_waiting)
    );
    if r.packs_rescued > 0 {
        println!(
            "{} condemned packs are needed again and were kept",
            r.packs_rescued
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    #[command(subcommand)]
    pub what: RepairWhat,
}

#[derive(Debug, clap::Subcommand)]
pub enum RepairWhat {
    /// Rebuild the index from the pack headers alone.
    Index,
    /// Rewrite damaged snapshots without their damaged files (originals kept unless --forget).
    Snapshots {
        /// Verify every blob to find damage (otherwise only missing data is found).
        #[arg(long)]
        read_data: bool,
        /// Delete the damaged originals once their repaired versions are stored.
        #[arg(long)]
        forget: bool,
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
}

pub async fn repair(g: &Settings, a: RepairArgs) -> Result<i32> {
    let repo = open_repo(g).await?;
    match a.what {
        RepairWhat::Index => {
            let r = cairn::ops::repair::repair_index(&repo, g.lease_wait).await?;
            if g.json {
                print_json(&serde_json::to_value(&r)?)?;
            } else if !g.quiet {
                println!(
                    "indexed {} blobs in {} packs; wrote {} index objects, removed {}",
                    r.blobs, r.packs, r.index_objects_written, r.index_objects_removed
                );
                for p in &r.unreadable_packs {
                    ewriteln!("error: {p}: header unreadable; its blobs are lost to the index");
                }
            }
            Ok(if r.unreadable_packs.is_empty() {
                EXIT_OK
            } else {
                EXIT_FAILURE
            })
        }
        RepairWhat::Snapshots {
            read_data,
            forget,
            dry_run,
        } => {
            let opts = cairn::ops::repair::RepairSnapshotsOptions {
                read_data: if read_data {
                    ReadData::All
                } else {
                    ReadData::None
                },
                forget,
                dry_run,
                lease_wait: g.lease_wait,
            };
            let r = cairn::ops::repair::repair_snapshots(&repo, &opts).await?;
            if g.json {
                print_json(&serde_json::to_value(&r)?)?;
            } else if !g.quiet {
                if r.snapshots.is_empty() {
                    println!("no damaged snapshots");
                }
                for s in &r.snapshots {
                    match (&s.repaired, &s.unrepairable) {
                        (_, Some(why)) => {
                            ewriteln!("snapshot {}: cannot be repaired: {why}", &s.original[..8])
                        }
                        (Some(new), _) => println!(
                            "snapshot {} -> {}{}: {} paths left out",
                            &s.original[..8],
                            &new[..8],
                            if s.forgotten {
                                " (original forgotten)"
                            } else {
                                ""
                            },
                            s.removed.len()
                        ),
                        (None, None) => println!(
                            "snapshot {}: would leave out {} paths",
                            &s.original[..8],
                            s.removed.len()
                        ),
                    }
                    for p in &s.removed {
                        println!("  {}: {}", p.path, p.reason);
                    }
                }
            }
            Ok(if r.snapshots.iter().any(|s| s.unrepairable.is_some()) {
                EXIT_FAILURE
            } else {
                EXIT_OK
            })
        }
    }
}
