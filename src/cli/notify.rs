//! `cairn notify test`, and the notifications of the health checks and of the daemon's own
//! errors (a run's are sent by `run::run_job`).

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use cairn::job::health::HealthReport;
use cairn::job::notify::Notifier;

use super::settings::Settings;

#[derive(Debug, Args)]
pub struct NotifyArgs {
    #[command(subcommand)]
    command: NotifyCommand,
}

#[derive(Debug, Subcommand)]
enum NotifyCommand {
    /// Send a test message to every channel of [notify], whatever events it takes; exit 1
    /// if any channel failed.
    Test,
}

pub async fn run(g: &Settings, a: NotifyArgs) -> Result<i32> {
    match a.command {
        NotifyCommand::Test => {
            let file = super::config::load(g)?;
            let Some(n) = Notifier::new(&file.config.notify) else {
                bail!(
                    "{} has no [notify] channel ([notify.mail] or [[notify.webhook]])",
                    file.path.display()
                );
            };
            let results = n.test().await;
            let mut failed = 0;
            for (channel, error) in &results {
                if !g.quiet {
                    println!(
                        "{:<4} {channel}",
                        if error.is_some() { "FAIL" } else { "sent" }
                    );
                }
                if let Some(e) = error {
                    ewriteln!("cairn: {e}");
                    failed += 1;
                }
            }
            Ok(if failed == 0 {
                super::EXIT_OK
            } else {
                super::EXIT_FAILURE
            })
        }
    }
}

/// The configuration's notifier, if it loads and has a channel.
fn notifier(g: &Settings) -> Option<Notifier> {
    let file = super::config::load(g).ok()?;
    Notifier::new(&file.config.notify)
}

/// Tell of the failed checks of `report`, and of those that recovered.
pub(super) async fn health(g: &Settings, report: &HealthReport) {
    if let Some(n) = notifier(g) {
        n.notify(&g.state_dir, n.health_findings(report)).await;
    }
}
