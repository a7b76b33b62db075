//! `cairn run [JOB]`: one job of the configuration file, every step of it (see `cairn::job`).

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::future::BoxFuture;

use cairn::job::history::{History, JobLock};
use cairn::job::log;
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
    /// After the run, write the metrics of the history (Prometheus text format) to this file,
    /// atomically: for node_exporter's textfile collector.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Also run the health checks and include them.
    #[arg(long)]
    pub health: bool,
    /// Write to this file (atomically) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

/// `cairn metrics`.
pub async fn metrics(g: &Settings, a: MetricsArgs) -> Result<i32> {
    let health = if a.health {
        Some(health_report(g).await?)
    } else {
        None
    };
    let h = History::open(&g.state_dir)?;
    let text = cairn::job::metrics::render(&h, health.as_ref())?;
    match &a.output {
        Some(f) => cairn::job::metrics::write_file(f, &text)?,
        None => print!("{text}"),
    }
    Ok(super::EXIT_OK)
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

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run: its id (or a unique prefix), or "latest" (the default).
    pub run: Option<String>,
    /// Keep printing what the run writes until it ends.
    #[arg(short, long)]
    pub follow: bool,
}

/// `cairn logs`.
pub async fn logs(g: &Settings, a: LogsArgs) -> Result<i32> {
    let ids = log::list(&g.state_dir)?;
    let want = a.run.as_deref().unwrap_or("latest");
    let id = if want == "latest" {
        log::latest(&g.state_dir)?.with_context(|| {
            format!(
                "no run has written a log in {} yet",
                log::logs_dir(&g.state_dir).display()
            )
        })?
    } else {
        let found: Vec<&String> = ids.iter().filter(|i| i.starts_with(want)).collect();
        match found.as_slice() {
            [one] => (*one).clone(),
            [] => bail!(
                "no log of run {want:?} in {} (cairn runs lists the runs; the {} newest logs \
                 are kept)",
                log::logs_dir(&g.state_dir).display(),
                log::KEEP_LOGS
            ),
            many => bail!(
                "{want:?} names {} runs ({}...): give more of the id",
                many.len(),
                many[0]
            ),
        }
    };
    let path = log::log_path(&g.state_dir, &id);
    let mut offset = 0u64;
    let mut text = String::new();
    let mut out = std::io::stdout().lock();
    let mut idle = 0u32;
    loop {
        let data = read_from(&path, offset)?;
        offset += data.len() as u64;
        if !data.is_empty() {
            idle = 0;
            std::io::Write::write_all(&mut out, &data)?;
            std::io::Write::flush(&mut out)?;
            text.push_str(&String::from_utf8_lossy(&data));
        }
        if !a.follow || text.lines().any(|l| log::is_end_line(l, &id)) {
            return Ok(super::EXIT_OK);
        }
        // Still running? Its writer's process says (checked when nothing came for 2 s).
        idle += 1;
        if idle >= 8 {
            idle = 0;
            let pid = text.lines().next().and_then(log::writer_pid);
            if !pid.is_some_and(log::alive) {
                ewriteln!("cairn: run {id} ended without finishing its log (was it killed?)");
                return Ok(super::EXIT_FAILURE);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The bytes of `path` from `offset` on.
fn read_from(path: &std::path::Path, offset: u64) -> Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let mut f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)
        .with_context(|| format!("{}", path.display()))?;
    Ok(data)
}

/// A night as `stats --history` shows it.
#[derive(Debug, serde::Serialize)]
struct Night {
    run_id: String,
    job: String,
    started: String,
    outcome: String,
    /// The sizes of the run's snapshots, summed.
    logical_bytes: u64,
    /// What the run's backups added to the job's repository.
    added_bytes: u64,
    repositories: Vec<NightRepository>,
}

#[derive(Debug, serde::Serialize)]
struct NightRepository {
    name: String,
    snapshots: u64,
    stored_bytes: u64,
    /// The sizes of all its snapshots over the size of its packs: what deduplication and
    /// compression save together.
    dedup_ratio: f64,
}

/// `cairn stats --history`.
pub fn stats_history(g: &Settings, job: Option<&str>, last: usize) -> Result<i32> {
    let h = History::open(&g.state_dir)?;
    let mut rows = h.runs(job, last)?;
    rows.reverse();
    let nights: Vec<Night> = rows
        .iter()
        .map(|r| {
            let steps = r.report["steps"].as_array().cloned().unwrap_or_default();
            let backups = steps
                .iter()
                .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with("backup ")));
            let (mut logical, mut added) = (0, 0);
            for s in backups {
                logical += s["logical_bytes"].as_u64().unwrap_or(0);
                added += s["bytes_added"].as_u64().unwrap_or(0);
            }
            let repositories = r.report["repositories"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|x| {
                    let stored = x["stored_bytes"].as_u64().unwrap_or(0);
                    let logical = x["logical_bytes"].as_u64().unwrap_or(0);
                    NightRepository {
                        name: x["name"].as_str().unwrap_or("?").to_string(),
                        snapshots: x["snapshots"].as_u64().unwrap_or(0),
                        stored_bytes: stored,
                        dedup_ratio: if stored > 0 {
                            logical as f64 / stored as f64
                        } else {
                            0.0
                        },
                    }
                })
                .collect();
            Night {
                run_id: r.run_id.clone(),
                job: r.job.clone(),
                started: r.started.clone(),
                outcome: r.outcome.clone(),
                logical_bytes: logical,
                added_bytes: added,
                repositories,
            }
        })
        .collect();
    if g.json {
        print_json(&serde_json::to_value(&nights)?)?;
        return Ok(super::EXIT_OK);
    }
    if nights.is_empty() {
        println!(
            "no run in the history ({}) yet",
            g.state_dir.join("history.db").display()
        );
        return Ok(super::EXIT_OK);
    }
    println!(
        "{:<20} {:<12} {:<8} {:>12} {:>12}  repositories (size, snapshots, dedup ratio)",
        "time", "job", "outcome", "logical", "added"
    );
    for n in &nights {
        let repos: Vec<String> = n
            .repositories
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {:.1}x",
                    r.name,
                    super::output::bytes(r.stored_bytes),
                    r.snapshots,
                    r.dedup_ratio
                )
            })
            .collect();
        println!(
            "{:<20} {:<12} {:<8} {:>12} {:>12}  {}",
            &n.started[..n.started.len().min(19)],
            n.job,
            n.outcome,
            super::output::bytes(n.logical_bytes),
            super::output::bytes(n.added_bytes),
            repos.join(", ")
        );
    }
    Ok(super::EXIT_OK)
}

/// Opens the configuration's repositories with their own settings.
pub(super) struct ConfigOpener<'a>(pub(super) &'a Settings);

impl Opener for ConfigOpener<'_> {
    fn open<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, cairn::Result<std::sync::Arc<cairn::repo::Repository>>> {
        Box::pin(async move {
            let r = self
                .0
                .repository_or_flag_password(name)
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

/// What shows more of a job's runs.
pub(super) const RUNS_MORE: &str = "cairn runs; cairn logs";

/// The name a job's runs are locked, recorded and notified under: `NAME`, or `NAME:cleanup`
/// for its cleanup.
pub(super) fn job_key(name: &str, cleanup: bool) -> String {
    if cleanup {
        format!("{name}:cleanup")
    } else {
        name.to_string()
    }
}

/// Run job `name` under its lock (waiting up to `wait` for another run of it), record it in
/// the history (not a dry run), and write the metrics file if asked.
pub(super) async fn run_job(
    g: &Settings,
    name: &str,
    opts: &RunOptions,
    wait: std::time::Duration,
    metrics_file: Option<&std::path::Path>,
) -> Result<job::RunReport> {
    let file = super::config::load(g)?;
    let key = job_key(name, opts.cleanup.is_some());
    let notifier = cairn::job::notify::Notifier::new(&file.config.notify);
    let started: cairn::Result<_> = async {
        let lock = JobLock::acquire(&g.state_dir, &key, wait)?;
        Ok((
            lock,
            job::run(&file.config, name, &ConfigOpener(g), opts).await?,
        ))
    }
    .await;
    let (_lock, report) = match started {
        Ok(x) => x,
        Err(e) => {
            let e = anyhow::Error::from(e);
            if let Some(n) = &notifier
                && !opts.dry_run
            {
                let f = n.error_findings(&format!("job {key}"), &format!("{e:#}"), RUNS_MORE);
                n.notify(&g.state_dir, f).await;
            }
            return Err(e);
        }
    };
    if let Some(n) = &notifier
        && !opts.dry_run
    {
        for line in n.notify(&g.state_dir, n.run_findings(&report)).await {
            report.log().line(&line);
        }
    }
    if !opts.dry_run {
        // The run happened: a history that cannot be written is a warning, not a failure.
        match History::open(&g.state_dir).and_then(|mut h| h.record(&report).map(|_| h)) {
            Ok(h) => {
                if let Some(f) = metrics_file {
                    let written = cairn::job::metrics::render(&h, None)
                        .and_then(|text| cairn::job::metrics::write_file(f, &text));
                    if let Err(e) = written {
                        tracing::warn!("could not write the metrics: {e}");
                    }
                }
            }
            Err(e) => tracing::warn!("could not record the run in the history: {e}"),
        }
    }
    Ok(report)
}

/// The job a command names, or the configuration's only job.
pub(super) fn job_name(file: &cairn::config::ConfigFile, given: Option<&str>) -> Result<String> {
    let jobs = &file.config.jobs;
    Ok(match given {
        Some(j) => j.to_string(),
        None if jobs.len() == 1 => jobs.keys().next().cloned().unwrap_or_default(),
        None if jobs.is_empty() => bail!("{} defines no job", file.path.display()),
        None => bail!(
            "{} defines several jobs ({}): name one",
            file.path.display(),
            jobs.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    })
}

pub async fn run(g: &Settings, a: RunArgs) -> Result<i32> {
    let file = super::config::load(g)?;
    let name = job_name(file, a.job.as_deref())?;
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
        state_dir: Some(g.state_dir.clone()),
        shutdown: None,
        cleanup: None,
    };
    let wait = match &a.wait {
        Some(w) => super::commands::parse_duration(w).context("--wait")?,
        None => std::time::Duration::ZERO,
    };
    let report = run_job(g, &name, &opts, wait, a.metrics_file.as_deref()).await?;
    if g.json {
        print_json(&serde_json::to_value(&report)?)?;
    } else if !g.quiet {
        println!(
            "run {} of job {}: {}",
            report.run_id,
            report.job,
            job::outcome_word(report.outcome)
        );
        for s in &report.steps {
            let outcome = job::outcome_word(s.outcome);
            let what = match &s.error {
                Some(e) => format!("{outcome}: {e}"),
                None => outcome.to_string(),
            };
            let snap = s
                .snapshot
                .as_deref()
                .map(|i| format!(" snapshot {}", &i[..i.len().min(8)]))
                .unwrap_or_default();
            println!("  {:<24} {:>7.1}s  {}{snap}", s.name, s.seconds, what);
        }
    }
    if let Some(p) = report.log().path()
        && !g.quiet
        && !g.json
    {
        println!("  log: {} (cairn logs {})", p.display(), report.run_id);
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

pub(super) async fn health_report(g: &Settings) -> Result<cairn::job::health::HealthReport> {
    let file = super::config::load(g)?;
    Ok(cairn::job::health::health(
        &file.config,
        &ConfigOpener(g),
        &cairn::job::health::HealthOptions {
            cache_dir: g.cache_dir.clone(),
            state_dir: g.state_dir.clone(),
            now: jiff::Timestamp::now(),
        },
    )
    .await)
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Notify ([notify]) of failed checks and of recovered ones, as the daemon's health
    /// schedule does (for health checks run by cron).
    #[arg(long)]
    pub notify: bool,
}

/// `cairn health`.
pub async fn health(g: &Settings, a: HealthArgs) -> Result<i32> {
    let report = health_report(g).await?;
    if a.notify {
        super::notify::health(g, &report).await;
    }
    if g.json {
        print_json(&serde_json::to_value(&report)?)?;
    } else {
        for c in &report.checks {
            if g.quiet && c.ok {
                continue;
            }
            println!(
                "{:<4} {:<28} {}",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            );
            if let Some(f) = &c.fix {
                println!("     {:<28} -> {f}", "");
            }
        }
        if !g.quiet {
            let failed = report.checks.iter().filter(|c| !c.ok).count();
            if failed == 0 {
                println!("healthy ({} checks)", report.checks.len());
            } else {
                println!(
                    "UNHEALTHY: {failed} of {} checks failed",
                    report.checks.len()
                );
            }
        }
    }
    Ok(if report.healthy {
        super::EXIT_OK
    } else {
        super::EXIT_FAILURE
    })
}
