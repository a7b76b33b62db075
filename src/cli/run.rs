//! `cairn run [JOB]`: one job of the configuration file, every step of it (see `cairn::job`).

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::future::BoxFuture;

use cairn::job::history::{History, JobLock};
use cairn::job::{self, Only, Opener, Outcome, RunOptions};

use super::commands::{open_repo_at, parse_time, print_json};
use super::settings::Settings;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job (default: the configuration's only job).
    pub job: Option<String>,
    /// Only the job's database sources.
    #[arg(long, conflicts_with = "only_files")]
    pub only_db: bool,
    /// Only the job's file sources.
    #[arg(long)]
    pub only_files: bool,
    /// Back up without writing anything; no copy, forget, prune, check or hook.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// The snapshots' time instead of now, "YYYY-MM-DD HH:MM:SS" in local time.
    #[arg(long)]
    pub time: Option<String>,
    /// How long packs a prune makes obsolete stay condemned before deletion (default 1h).
    #[arg(long)]
    pub prune_grace: Option<String>,
    /// If another run of the job is in progress, wait up to this long for it (default: exit
    /// with 11 at once).
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only runs of this job.
    #[arg(long)]
    pub job: Option<String>,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub last: usize,
}

/// `cairn runs`.
pub fn runs(g: &Settings, a: RunsArgs) -> Result<i32> {
    let h = History::open(&g.state_dir)?;
    let rows = h.runs(a.job.as_deref(), a.last)?;
    if g.json {
        print_json(&serde_json::to_value(&rows)?)?;
        return Ok(super::EXIT_OK);
    }
    println!(
        "{:<25} {:<24} {:<12} {:>8}  {:<8} added",
        "time", "run", "job", "seconds", "outcome"
    );
    for r in &rows {
        let added: Vec<String> = r
            .added
            .iter()
            .map(|(s, b)| format!("{s} {}", super::output::bytes(*b)))
            .collect();
        println!(
            "{:<25} {:<24} {:<12} {:>8.1}  {:<8} {}",
            &r.started[..r.started.len().min(25)],
            r.run_id,
            r.job,
            r.seconds,
            r.outcome,
            added.join(", ")
        );
    }
    Ok(super::EXIT_OK)
}

/// Opens the configuration's repositories with their own settings.
struct ConfigOpener<'a>(&'a Settings);

impl Opener for ConfigOpener<'_> {
    fn open<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, cairn::Result<std::sync::Arc<cairn::repo::Repository>>> {
        Box::pin(async move {
            let r = self
                .0
                .repository(name)
                .map_err(|e| cairn::Error::InvalidInput(format!("repository {name}: {e:#}")))?;
            open_repo_at(self.0, &r).await.map_err(|e| {
                // Keep the library error (and so its kind) where there is one.
                match e.downcast::<cairn::Error>() {
                    Ok(e) => e,
                    Err(e) => cairn::Error::Other(format!("{e:#}")),
                }
            })
        })
    }
}

pub async fn run(g: &Settings, a: RunArgs) -> Result<i32> {
    let file = super::config::load(g)?;
    let jobs = &file.config.jobs;
    let name = match &a.job {
        Some(j) => j.clone(),
        None if jobs.len() == 1 => jobs.keys().next().cloned().unwrap_or_default(),
        None if jobs.is_empty() => bail!("{} defines no job", file.path.display()),
        None => bail!(
            "{} defines several jobs ({}): name one",
            file.path.display(),
            jobs.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    };
    let opts = RunOptions {
        only: if a.only_db {
            Only::Databases
        } else if a.only_files {
            Only::Files
        } else {
            Only::All
        },
        dry_run: a.dry_run,
        time: a.time.as_deref().map(parse_time).transpose()?,
        lease_wait: g.lease_wait,
        prune_grace: a
            .prune_grace
            .as_deref()
            .map(super::commands::parse_duration)
            .transpose()
            .context("--prune-grace")?,
    };
    let wait = match &a.wait {
        Some(w) => super::commands::parse_duration(w).context("--wait")?,
        None => std::time::Duration::ZERO,
    };
    let _lock = JobLock::acquire(&g.state_dir, &name, wait)?;
    let report = job::run(&file.config, &name, &ConfigOpener(g), &opts).await?;
    if !a.dry_run {
        // The run happened: a history that cannot be written is a warning, not a failure.
        match History::open(&g.state_dir).and_then(|mut h| h.record(&report)) {
            Ok(()) => {}
            Err(e) => tracing::warn!("could not record the run in the history: {e}"),
        }
    }
    if g.json {
        print_json(&serde_json::to_value(&report)?)?;
    } else if !g.quiet {
        println!(
            "run {} of job {}: {:?}",
            report.run_id, report.job, report.outcome
        );
        for s in &report.steps {
            let what = match &s.error {
                Some(e) => format!("{:?}: {e}", s.outcome),
                None => format!("{:?}", s.outcome),
            };
            let snap = s
                .snapshot
                .as_deref()
                .map(|i| format!(" snapshot {}", &i[..i.len().min(8)]))
                .unwrap_or_default();
            println!(
                "  {:<24} {:>7.1}s  {}{snap}",
                s.name,
                s.seconds,
                what.to_lowercase()
            );
        }
    }
    if report.outcome != Outcome::Success {
        for s in report
            .steps
            .iter()
            .filter(|s| s.outcome != Outcome::Success)
        {
            ewriteln!(
                "cairn: {}: {}",
                s.name,
                s.error.as_deref().unwrap_or("failed")
            );
        }
    }
    Ok(job::exit_code(report.outcome))
}
