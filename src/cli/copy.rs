//! `cairn copy`: snapshots from the repository of `-r` to the one of `--to`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use zeroize::Zeroizing;

use cairn::Error;
use cairn::ops::copy::{self, CopyOptions, CopyReport};
use cairn::ops::progress::Progress;
use cairn::repo::Repository;

use super::commands::{
    backend_of, open_options, open_repo, password_from_file, print_json, prompt_password,
};
use super::output::{self, ProgressBar};
use super::settings::RepoSettings;
use super::settings::Settings;
use super::{EXIT_FAILURE, EXIT_OK};

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Snapshots to copy: id prefixes or "latest" (default: every snapshot matching --host
    /// and --tag).
    #[arg(value_name = "SNAP")]
    pub snapshots: Vec<String>,
    /// The target repository: a directory path or s3://bucket/prefix (the same S3 options and
    /// AWS environment as the source).
    #[arg(long, value_name = "REPO")]
    pub to: String,
    /// Read the target repository's password from this file (first line); else
    /// CAIRN_TO_PASSWORD, else a prompt.
    #[arg(long, env = "CAIRN_TO_PASSWORD_FILE", value_name = "FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag (repeat: all must match).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Read and count everything, write nothing to the target.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// The target's password: --to-password-file / CAIRN_TO_PASSWORD_FILE, else
/// CAIRN_TO_PASSWORD, else a prompt. Never from the command line.
fn target_password(
    a: &CopyArgs,
    to: &RepoSettings,
) -> std::result::Result<Zeroizing<Vec<u8>>, Error> {
    if let Some(f) = &a.to_password_file {
        return password_from_file(f);
    }
    if let Some(p) = std::env::var_os("CAIRN_TO_PASSWORD") {
        use std::os::unix::ffi::OsStringExt;
        if p.is_empty() {
            return Err(Error::InvalidInput("CAIRN_TO_PASSWORD is empty".into()));
        }
        return Ok(Zeroizing::new(p.into_vec()));
    }
    if to.name.is_some() {
        return to.password(false);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::InvalidInput(
            "no password given for the target repository: use --to-password-file (or \
             CAIRN_TO_PASSWORD_FILE, or CAIRN_TO_PASSWORD)"
                .into(),
        ));
    }
    prompt_password("enter the target repository's password: ", false)
}

pub async fn copy(g: &Settings, a: CopyArgs) -> Result<i32> {
    let lease_wait = g.lease_wait;
    let source = open_repo(g).await?;
    // Resolve the snapshots first: a mistyped id should not cost a password prompt.
    let snaps = copy::select_snapshots(&source, &a.snapshots, a.host.as_deref(), &a.tags)?;
    // A name from the configuration brings its own password sources; --to-password-file
    // and CAIRN_TO_PASSWORD come first.
    let to = g.repository(&a.to)?;
    let b = backend_of(&to)?;
    let location = b.location();
    let oo = open_options(g, &to);
    let target = Repository::open(b, || target_password(&a, &to), &oo)
        .await
        .with_context(|| format!("opening the target repository {location}"))?;
    let target = Arc::new(target);
    let progress = Arc::new(Progress::default());
    let total: u64 = snaps.iter().map(|(_, s)| s.summary.total_bytes).sum();
    progress
        .total_bytes
        .store(total, std::sync::atomic::Ordering::Relaxed);
    let opts = CopyOptions {
        dry_run: a.dry_run,
        lease_wait,
        progress: Some(progress.clone()),
        ..Default::default()
    };
    let bar = ProgressBar::start(progress, g.quiet || g.json, "copy");
    let started = Instant::now();
    let r = copy::copy_snapshots(&source, &target, snaps, &opts).await;
    bar.finish().await;
    let report = r.with_context(|| format!("copying to {location}"))?;
    if g.json {
        let mut v = serde_json::to_value(&report)?;
        v["target_repository"] = location.into();
        v["seconds"] = started.elapsed().as_secs_f64().into();
        print_json(&v)?;
    } else {
        print_report(&report, g.quiet, started.elapsed());
    }
    Ok(if report.failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    })
}

fn print_report(r: &CopyReport, quiet: bool, took: std::time::Duration) {
    for f in &r.failed {
        ewriteln!(
            "cairn: error: {}; snapshot {} not copied",
            f.error,
            f.source.short()
        );
    }
    if quiet {
        return;
    }
    for c in &r.copied {
        match &c.target {
            Some(t) => println!("copied snapshot {} as {}", c.source.short(), t.short()),
            None => println!("would copy snapshot {}", c.source.short()),
        }
    }
    for s in &r.skipped {
        println!(
            "skipped snapshot {}: already copied as {}",
            s.source.short(),
            s.target.short()
        );
    }
    println!(
        "Stored:    {} in {} packs (new data: {} before compression and deltas)",
        output::bytes(r.stored_bytes_added),
        r.packs_added,
        output::bytes(r.new_data_bytes),
    );
    println!(
        "Read:      {} blobs, {} from the source in {}",
        r.blobs_read,
        output::bytes(r.bytes_read),
        output::duration(took)
    );
    if r.dry_run {
        println!("dry run: nothing written to the target");
    }
    if !r.failed.is_empty() {
        ewriteln!("cairn: {} snapshots could not be copied", r.failed.len());
    }
}
