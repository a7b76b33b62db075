//! `cairn mount DIR`: the snapshots as a read-only file system until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

use cairn::ops::mount::{self, MountOptions, SnapshotFs};
use cairn::repo::lease::LeaseMode;

use super::EXIT_OK;
use super::args::parse_size;
use super::commands::open_repo;
use super::settings::Settings;

#[derive(Debug, Args)]
pub struct MountArgs {
    /// The directory to mount on (it must exist).
    pub dir: PathBuf,
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag (repeat for all of several).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Memory for opened blobs of the files being read.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub blob_cache: u64,
}

/// Mount, serve until SIGINT or SIGTERM, unmount, exit 0. Runs under a read lease, as a
/// restore does: backups go on, a prune waits for the unmount.
pub async fn mount(g: &Settings, a: MountArgs) -> Result<i32> {
    mount::check_mount_point(&a.dir)?;
    // Registered before mounting, so a signal from the moment the mount exists is not lost.
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let repo = open_repo(g).await?;
    let opts = MountOptions {
        host: a.host.clone(),
        tags: a.tags.clone(),
        cache_bytes: a.blob_cache,
    };
    let quiet = g.quiet || g.json;
    let r = repo.clone();
    repo.with_lease(LeaseMode::Read, "mount", g.lease_wait, |_| async move {
        let fs = SnapshotFs::new(r, &opts, tokio::runtime::Handle::current())?;
        let dir = a.dir.clone();
        let mounted = tokio::task::spawn_blocking(move || mount::mount(fs, &dir))
            .await
            .map_err(|e| cairn::Error::Other(e.to_string()))??;
        if !quiet {
            ewriteln!(
                "cairn: snapshots mounted on {}; Ctrl-C (or SIGTERM) unmounts",
                a.dir.display()
            );
        }
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tokio::task::spawn_blocking(move || mounted.unmount(Duration::from_secs(5)))
            .await
            .map_err(|e| cairn::Error::Other(e.to_string()))?;
        if !quiet {
            ewriteln!("cairn: unmounted {}", a.dir.display());
        }
        Ok(())
    })
    .await?;
    Ok(EXIT_OK)
}
