//! Maintenance commands: check (and, as they land, prune and repair).

use anyhow::Result;
use clap::Args;

use cairn::ops::check::{self, CheckOptions, CheckReport, ReadData};

use super::args::GlobalArgs;
use super::commands::{open_repo, print_json};
use super::output::{self, ProgressBar};
use super::{EXIT_FAILURE, EXIT_OK};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Read and verify every blob of every pack.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read a part: N/M (the N-th of M groups) or P% (the packs verified longest ago first).
    #[arg(long, value_name = "N/M|P%")]
    pub read_data_subset: Option<String>,
}

pub async fn check(g: &GlobalArgs, a: CheckArgs) -> Result<i32> {
    let read_data = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => ReadData::parse_subset(s)?,
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let repo = open_repo(g).await?;
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
        },
    )
    .await;
    bar.finish().await;
    let report = r?;
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
        eprintln!("error: {}: {}", e.object, e.message);
    }
    for d in &r.damaged_snapshots {
        let when = d
            .time
            .map(|t| format!(" ({})", t.to_rfc3339()))
            .unwrap_or_default();
        eprintln!(
            "error: snapshot {}{when}: {} damaged paths",
            &d.id[..8],
            d.paths.len()
        );
        for p in d.paths.iter().take(20) {
            eprintln!("  {}: {}", p.path, p.reason);
        }
        if d.paths.len() > 20 {
            eprintln!("  ... and {} more (see --json)", d.paths.len() - 20);
        }
    }
    if r.ok() {
        if !quiet {
            println!("no errors found");
        }
    } else {
        eprintln!(
            "{} errors; {} snapshots cannot be restored in full",
            r.errors.len(),
            r.damaged_snapshots.len()
        );
    }
}
