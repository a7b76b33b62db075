//! `cairn run`: one job of the configuration file (issue 14).
//!
//! A run goes through its steps in order, and a step that fails never undoes those that
//! succeeded: the `before` hooks (a failure ends the run: no snapshot); the job's sources,
//! **concurrently**, each its own snapshot tagged `job=J`, `source=S` and `run=ID`; the copy
//! of the job's snapshots to every `copy-to` repository (all the job's snapshots the target
//! lacks, so a night whose copy failed is caught up the next night); each repository's
//! retention (per source), prune and the configured check; then the `validate` hooks (the run's
//! JSON report on stdin; a failure fails the run) and the `after` or `on-error` hooks.
//!
//! The outcome is success (every step succeeded), partial (something was stored but a step
//! failed: exit 3) or failure (nothing was stored, or a hook said no: exit 1).

pub mod health;
pub mod history;
pub mod hooks;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Serialize;

use crate::config::{CheckSubset, Config, JobConfig, MysqlSource, SourceConfig, value::expand_env};
use crate::error::{Error, Result};
use crate::format::Timestamp;
use crate::id::Id;
use crate::ops::backup::{self, BackupOptions};
use crate::ops::check::{CheckOptions, ReadData};
use crate::ops::copy::{self, CopyOptions};
use crate::ops::forget::{Filter, GroupBy};
use crate::ops::forget_run::{self, ForgetOptions, Selection};
use crate::ops::mysql::{self, MysqlBackupOptions};
use crate::ops::prune::{self, PruneOptions};
use crate::repo::Repository;
use crate::source::exclude::ExcludeOptions;
use crate::source::mysql::Connection;

/// Opens the configuration's repositories (the binary knows how to find their passwords).
pub trait Opener: Send + Sync {
    fn open<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Arc<Repository>>>;
}

/// Which of the job's sources run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Only {
    #[default]
    All,
    Databases,
    Files,
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub only: Only,
    /// Back up and report, write nothing (no copy, forget, prune or hooks but `before`...
    /// none at all: a dry run runs no hook).
    pub dry_run: bool,
    /// The snapshots' time (default: now); simulated nights in tests.
    pub time: Option<Timestamp>,
    pub lease_wait: Duration,
    /// Grace of the job's prune (default 1h, as `cairn prune`).
    pub prune_grace: Option<Duration>,
    /// Where the run's log goes (`logs/RUN_ID.log` under it); none: no log file.
    pub state_dir: Option<std::path::PathBuf>,
    /// A stop request (SIGTERM to the daemon): the running step ends (its lease deleted), no
    /// further step starts, and the run's outcome is `interrupted`.
    pub shutdown: Option<crate::repo::lease::Shutdown>,
    /// The cleanup instead of the night: no hook, backup or copy; every repository of the job
    /// gets its retention, a prune, and a check reading this subset.
    pub cleanup: Option<CheckSubset>,
}

impl RunOptions {
    fn stopped(&self) -> bool {
        self.shutdown.as_ref().is_some_and(|s| s.is_requested())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Partial,
    Failure,
    /// Stopped by a shutdown request before it ended.
    Interrupted,
}

/// One step of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// `hook before`, `backup uploads`, `copy offsite`, `forget local`, `prune local`,
    /// `check offsite`, ...
    pub name: String,
    pub outcome: Outcome,
    /// The error and its causes, one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Of a backup: the snapshot's size (its files' sizes summed).
    pub logical_bytes: u64,
    pub bytes_read: u64,
    pub bytes_added: u64,
    pub seconds: f64,
}

/// A repository of the job as the run left it.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryFigures {
    pub name: String,
    pub snapshots: u64,
    /// The sizes of all its snapshots, summed (what restoring each of them would write).
    pub logical_bytes: u64,
    /// The size of its packs.
    pub stored_bytes: u64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub job: String,
    pub outcome: Outcome,
    pub started: Timestamp,
    pub ended: Timestamp,
    pub steps: Vec<Step>,
    /// The new snapshots, by source.
    pub snapshots: Vec<(String, String)>,
    /// Each repository the run wrote to, after its retention and prune.
    pub repositories: Vec<RepositoryFigures>,
    #[serde(skip)]
    log: Arc<log::RunLog>,
}

impl RunReport {
    /// How long the run took.
    pub fn seconds(&self) -> f64 {
        (self.ended.as_nanos() - self.started.as_nanos()) as f64 / 1e9
    }

    /// The run's log.
    pub fn log(&self) -> &log::RunLog {
        &self.log
    }

    /// Say in the log that step `name` starts; its start time.
    fn begin(&self, name: &str) -> Instant {
        self.log.line(&format!("step {name} started"));
        Instant::now()
    }

    fn push(&mut self, name: impl Into<String>, started: Instant, r: Result<StepDone>) -> bool {
        self.push_took(name, started.elapsed().as_secs_f64(), r)
    }

    /// Record a step that took `seconds`.
    fn push_took(&mut self, name: impl Into<String>, seconds: f64, r: Result<StepDone>) -> bool {
        let (outcome, error, done) = match r {
            Ok(d) => (
                if d.partial.is_some() {
                    Outcome::Partial
                } else {
                    Outcome::Success
                },
                d.partial.clone(),
                d,
            ),
            Err(e) => (Outcome::Failure, Some(chain(&e)), StepDone::default()),
        };
        let name = name.into();
        match &error {
            Some(e) => tracing::warn!("{name}: {e}"),
            None => tracing::info!("{name}: done in {seconds:.1}s"),
        }
        for d in &done.details {
            self.log.line(&format!("step {name}: {d}"));
        }
        let mut line = format!(
            "step {name} ended: {} in {seconds:.1}s",
            outcome_word(outcome)
        );
        if let Some(id) = &done.snapshot {
            line.push_str(&format!(", snapshot {id}"));
        }
        if done.bytes_read > 0 || done.bytes_added > 0 {
            line.push_str(&format!(
                ", read {} bytes, added {} bytes",
                done.bytes_read, done.bytes_added
            ));
        }
        if let Some(e) = &error {
            line.push_str(&format!(": {e}"));
        }
        self.log.line(&line);
        self.steps.push(Step {
            name,
            outcome,
            error,
            snapshot: done.snapshot.map(|i| i.to_string()),
            logical_bytes: done.logical_bytes,
            bytes_read: done.bytes_read,
            bytes_added: done.bytes_added,
            seconds,
        });
        outcome == Outcome::Success
    }
}

/// A size for people: `812 B`, `1.5 MiB` (binary units, one decimal).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// How an outcome is spelled in reports, logs and hooks' environment.
pub fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Partial => "partial",
        Outcome::Failure => "failure",
        Outcome::Interrupted => "interrupted",
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[derive(Debug, Default)]
struct StepDone {
    snapshot: Option<Id>,
    logical_bytes: u64,
    bytes_read: u64,
    bytes_added: u64,
    /// Done, but not all of it (some files unreadable, some snapshots not copied).
    partial: Option<String>,
    /// Lines for the run's log (the entries that could not be read, ...).
    details: Vec<String>,
}

/// A run id: the start time (UTC, to the second) and 4 random hex digits.
fn run_id(now: Timestamp) -> String {
    let mut r = [0u8; 2];
    crate::crypto::fill_random(&mut r);
    let t = now
        .to_jiff()
        .map(|t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_default();
    format!("{t}-{}", hex::encode(r))
}

/// The job `name` of the configuration, or an error that lists the jobs it has.
fn find_job<'a>(config: &'a Config, name: &str) -> Result<&'a JobConfig> {
    config.jobs.get(name).ok_or_else(|| {
        Error::invalid(format!(
            "no job {name:?} in the configuration (it has: {})",
            config.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Run job `job_name` of `config`.
pub async fn run(
    config: &Config,
    job_name: &str,
    opener: &dyn Opener,
    opts: &RunOptions,
) -> Result<RunReport> {
    let job = find_job(config, job_name)?;
    let started = Timestamp::from_jiff(jiff::Timestamp::now());
    let id = run_id(started);
    let log = match (&opts.state_dir, opts.dry_run) {
        (Some(dir), false) => log::RunLog::create(dir, &id)?,
        _ => log::RunLog::none(),
    };
    log.line(&format!(
        "run {id} of job {job_name} started (pid {})",
        std::process::id()
    ));
    let mut report = RunReport {
        run_id: id,
        // A cleanup is recorded apart from the job's nights.
        job: match opts.cleanup {
            Some(_) => format!("{job_name}:cleanup"),
            None => job_name.to_string(),
        },
        outcome: Outcome::Success,
        started,
        ended: started,
        steps: Vec::new(),
        snapshots: Vec::new(),
        repositories: Vec::new(),
        log: Arc::new(log),
    };
    let hooks = hooks::Hooks::new(
        &job.hooks,
        &report.run_id,
        job_name,
        report.log.clone(),
        opts.shutdown.clone(),
    );
    let stored = run_steps(config, job_name, job, opener, opts, &hooks, &mut report).await;
    let any_failed = report.steps.iter().any(|s| s.outcome != Outcome::Success);
    report.outcome = match (any_failed, stored) {
        (false, _) => Outcome::Success,
        (true, true) => Outcome::Partial,
        (true, false) => Outcome::Failure,
    };
    if opts.stopped() {
        report.outcome = Outcome::Interrupted;
    }
    if !opts.dry_run && opts.cleanup.is_none() && !opts.stopped() {
        // Validation can fail the run; its hooks see the report so far.
        if report.outcome != Outcome::Failure && !job.hooks.validate.is_empty() {
            let t = report.begin("hook validate");
            let json = serde_json::to_vec(&report).unwrap_or_default();
            let r = hooks
                .run_all("validate", &job.hooks.validate, &report, Some(&json))
                .await;
            if !report.push("hook validate", t, r.map(|_| StepDone::default())) {
                report.outcome = Outcome::Failure;
            }
        }
        let (which, list) = match report.outcome {
            Outcome::Success => ("after", &job.hooks.after),
            _ => ("on-error", &job.hooks.on_error),
        };
        if !list.is_empty() {
            let t = report.begin(&format!("hook {which}"));
            let r = hooks.run_all(which, list, &report, None).await;
            if !report.push(format!("hook {which}"), t, r.map(|_| StepDone::default()))
                && report.outcome == Outcome::Success
            {
                report.outcome = Outcome::Partial;
            }
        }
    }
    report.ended = Timestamp::from_jiff(jiff::Timestamp::now());
    report.log.line(&format!(
        "run {} ended: {}",
        report.run_id,
        outcome_word(report.outcome)
    ));
    Ok(report)
}

/// The steps up to the hooks at the end; whether any snapshot was stored.
async fn run_steps(
    config: &Config,
    job_name: &str,
    job: &JobConfig,
    opener: &dyn Opener,
    opts: &RunOptions,
    hooks: &hooks::Hooks,
    report: &mut RunReport,
) -> bool {
    if let Some(subset) = opts.cleanup {
        return cleanup(config, job_name, job, opener, opts, subset, report).await;
    }
    if !opts.dry_run && !job.hooks.before.is_empty() {
        let t = report.begin("hook before");
        let r = hooks
            .run_all("before", &job.hooks.before, report, None)
            .await;
        if !report.push("hook before", t, r.map(|_| StepDone::default())) {
            return false;
        }
    }
    let repo_name = job.repository.get_ref().as_str();
    let t = Instant::now();
    let repo = match opener.open(repo_name).await {
        Ok(r) => r,
        Err(e) => {
            report.push(format!("open {repo_name}"), t, Err(e));
            return false;
        }
    };
    // The sources, at the same time.
    let sources: Vec<(&str, &SourceConfig)> = job
        .sources
        .iter()
        .map(|s| s.get_ref().as_str())
        .filter_map(|n| config.sources.get(n).map(|s| (n, s)))
        .filter(|(_, s)| {
            matches!(
                (opts.only, s),
                (Only::All, _)
                    | (Only::Databases, SourceConfig::Mysql(_))
                    | (Only::Files, SourceConfig::Files(_))
            )
        })
        .collect();
    let run_id = report.run_id.clone();
    let backups: Vec<_> = sources
        .iter()
        .map(|(name, source)| {
            let repo = repo.clone();
            let t = report.begin(&format!("backup {name}"));
            let tags = vec![
                format!("job={job_name}"),
                format!("source={name}"),
                format!("run={run_id}"),
            ];
            async move {
                let r = backup_source(&repo, name, source, tags, opts).await;
                // Its own time: the steps run together and are recorded after the last ends.
                (*name, t.elapsed().as_secs_f64(), r)
            }
        })
        .collect();
    let mut stored = false;
    for (name, t, r) in futures::future::join_all(backups).await {
        if let Ok(d) = &r
            && let Some(id) = d.snapshot
        {
            stored = true;
            report.snapshots.push((name.to_string(), id.to_string()));
        }
        report.push_took(format!("backup {name}"), t, r);
    }
    if opts.dry_run || opts.stopped() {
        return stored;
    }
    // Every repository of the job: its own first, then the copies.
    let mut repos = vec![(repo_name, repo.clone())];
    for target in &job.copy_to {
        if opts.stopped() {
            return stored;
        }
        let target = target.get_ref().as_str();
        let t = report.begin(&format!("copy {target}"));
        let r = async {
            let to = opener.open(target).await?;
            let snaps = copy::select_snapshots(&repo, &[], None, &[format!("job={job_name}")])?;
            let c = copy::copy_snapshots(
                &repo,
                &to,
                snaps,
                &CopyOptions {
                    lease_wait: opts.lease_wait,
                    ..Default::default()
                },
            )
            .await?;
            let partial = (!c.failed.is_empty())
                .then(|| format!("{} snapshots could not be copied", c.failed.len()));
            Ok((
                to,
                StepDone {
                    bytes_read: c.bytes_read,
                    bytes_added: c.stored_bytes_added,
                    partial,
                    details: c
                        .failed
                        .iter()
                        .map(|f| format!("not copied: snapshot {}: {}", f.source, f.error))
                        .collect(),
                    ..Default::default()
                },
            ))
        }
        .await;
        match r {
            Ok((to, done)) => {
                report.push(format!("copy {target}"), t, Ok(done));
                repos.push((target, to));
            }
            Err(e) => {
                report.push(format!("copy {target}"), t, Err(e));
            }
        }
    }
    let check = job
        .check
        .as_ref()
        .map(|c| CheckSubset::parse(c.get_ref()).unwrap_or(CheckSubset::Structure));
    maintain(
        config, job_name, job, &repos, repo_name, job.prune, check, opts, report,
    )
    .await;
    stored
}

/// Each repository's retention (per source), prune (`prune`: always for the job's own
/// repository, for the others when the retention removed something), check, and figures.
#[allow(clippy::too_many_arguments)]
async fn maintain(
    config: &Config,
    job_name: &str,
    job: &JobConfig,
    repos: &[(&str, Arc<Repository>)],
    repo_name: &str,
    prune: bool,
    check_subset: Option<CheckSubset>,
    opts: &RunOptions,
    report: &mut RunReport,
) {
    for (name, r) in repos {
        if opts.stopped() {
            return;
        }
        let Some(rc) = config.repositories.get(*name) else {
            continue;
        };
        let mut forgot = false;
        if job.forget && !rc.is_empty() {
            let t = report.begin(&format!("forget {name}"));
            let res = forget(r, job_name, &job.sources, rc.policy(), opts).await;
            forgot = matches!(res, Ok(n) if n > 0);
            report.push(
                format!("forget {name}"),
                t,
                res.map(|_| StepDone::default()),
            );
        }
        if prune && (forgot || *name == repo_name) && !opts.stopped() {
            let t = report.begin(&format!("prune {name}"));
            let res = prune::prune(
                r,
                &PruneOptions {
                    grace: opts.prune_grace.unwrap_or(Duration::from_secs(3600)),
                    lease_wait: opts.lease_wait,
                    ..Default::default()
                },
            )
            .await;
            report.push(format!("prune {name}"), t, res.map(|_| StepDone::default()));
        }
        if let Some(subset) = check_subset
            && subset != CheckSubset::None
            && !opts.stopped()
        {
            let t = report.begin(&format!("check {name}"));
            let res = check(r, subset, opts.lease_wait).await;
            report.push(format!("check {name}"), t, res);
        }
        match figures(name, r) {
            Ok(f) => report.repositories.push(f),
            Err(e) => report
                .log
                .line(&format!("could not measure repository {name}: {e}")),
        }
    }
}

/// The cleanup of a job: every repository's retention, a prune and a check of `subset`.
async fn cleanup(
    config: &Config,
    job_name: &str,
    job: &JobConfig,
    opener: &dyn Opener,
    opts: &RunOptions,
    subset: CheckSubset,
    report: &mut RunReport,
) -> bool {
    let mut repos = Vec::new();
    for name in std::iter::once(&job.repository).chain(&job.copy_to) {
        let name = name.get_ref().as_str();
        let t = Instant::now();
        match opener.open(name).await {
            Ok(r) => repos.push((name, r)),
            Err(e) => {
                report.push(format!("open {name}"), t, Err(e));
            }
        }
    }
    let own = job.repository.get_ref().as_str();
    maintain(
        config,
        job_name,
        job,
        &repos,
        own,
        true,
        Some(subset),
        opts,
        report,
    )
    .await;
    // Nothing stored: a failed step makes the cleanup a failure.
    false
}

fn figures(name: &str, repo: &Repository) -> Result<RepositoryFigures> {
    let snaps = repo.snapshots()?;
    Ok(RepositoryFigures {
        name: name.to_string(),
        snapshots: snaps.len() as u64,
        logical_bytes: snaps.iter().map(|(_, s)| s.summary.total_bytes).sum(),
        stored_bytes: repo.catalog().packs()?.iter().map(|p| p.2).sum(),
    })
}

async fn forget(
    repo: &Arc<Repository>,
    job: &str,
    sources: &[toml::Spanned<String>],
    policy: crate::ops::forget::Policy,
    opts: &RunOptions,
) -> Result<usize> {
    let mut removed = 0;
    // Per source: each keeps its own nights.
    for s in sources {
        let o = ForgetOptions {
            selection: Selection::Policy {
                policy: policy.clone(),
                group_by: GroupBy {
                    host: true,
                    paths: false,
                    tags: false,
                },
            },
            filter: Filter {
                tags: vec![format!("job={job}"), format!("source={}", s.get_ref())],
                ..Default::default()
            },
            dry_run: false,
            lease_wait: opts.lease_wait,
            tz: jiff::tz::TimeZone::system(),
        };
        removed += forget_run::run(repo, &o).await?.removed.len();
    }
    Ok(removed)
}

async fn check(repo: &Arc<Repository>, subset: CheckSubset, wait: Duration) -> Result<StepDone> {
    let read_data = match subset {
        CheckSubset::None | CheckSubset::Structure => ReadData::None,
        CheckSubset::All => ReadData::All,
        CheckSubset::Percent(p) => ReadData::Percent(p),
        CheckSubset::Part(n, m) => ReadData::Subset { n, m },
    };
    let r = crate::ops::check::check(
        repo,
        &CheckOptions {
            read_data,
            progress: None,
            lease_wait: wait,
        },
    )
    .await?;
    if r.ok() {
        Ok(StepDone::default())
    } else {
        Err(Error::Corrupt {
            object: format!("the repository at {}", repo.backend().location()),
            reason: format!(
                "{} errors, {} damaged snapshots (run cairn check for details)",
                r.errors.len(),
                r.damaged_snapshots.len()
            ),
        })
    }
}

async fn backup_source(
    repo: &Arc<Repository>,
    name: &str,
    source: &SourceConfig,
    tags: Vec<String>,
    opts: &RunOptions,
) -> Result<StepDone> {
    let key = |k: &str| format!("sources.{name}.{k}");
    match source {
        SourceConfig::Files(f) => {
            let mut patterns = f.patterns();
            for file in &f.exclude_file {
                patterns.extend(crate::source::exclude::patterns_from_file(file)?);
            }
            let mut all_tags = f.tags.clone();
            all_tags.extend(tags);
            let o = BackupOptions {
                exclude: ExcludeOptions {
                    patterns,
                    if_present: f.exclude_if_present.clone(),
                    caches: f.exclude_caches,
                },
                one_file_system: f.one_file_system,
                with_atime: f.with_atime,
                tags: all_tags,
                time: opts.time,
                dry_run: opts.dry_run,
                lease_wait: opts.lease_wait,
                ..Default::default()
            };
            let mut paths = Vec::new();
            for p in &f.paths {
                paths.push(std::path::PathBuf::from(expand_env(
                    &p.to_string_lossy(),
                    &key("paths"),
                )?));
            }
            let out = backup::backup_paths(repo, &paths, &o).await?;
            let partial = (!out.errors.is_empty())
                .then(|| format!("{} entries could not be read", out.errors.len()));
            let details = out
                .errors
                .iter()
                .map(|p| format!("not backed up: {}: {}", p.path, p.message))
                .collect();
            Ok(StepDone {
                snapshot: out.snapshot_id,
                logical_bytes: out.snapshot.summary.total_bytes,
                bytes_read: out.snapshot.summary.bytes_read,
                bytes_added: out.snapshot.summary.stored_bytes_added,
                partial,
                details,
            })
        }
        SourceConfig::Mysql(m) => {
            let mut all_tags = m.tags.clone();
            all_tags.extend(tags);
            let o = MysqlBackupOptions {
                backup: BackupOptions {
                    tags: all_tags,
                    time: opts.time,
                    dry_run: opts.dry_run,
                    lease_wait: opts.lease_wait,
                    ..Default::default()
                },
                conn: mysql_connection(name, m)?,
                databases: m.databases.clone(),
                all_databases: m.all_databases,
                exclude_tables: m.exclude_tables.clone(),
                dump_binary: m.dump_binary.clone(),
                client_binary: m.client_binary.clone(),
                grants: m.grants,
                max_allowed_packet: m.max_allowed_packet.map(|s| s.0),
                ..Default::default()
            };
            let out = mysql::backup(repo, &o).await?;
            Ok(StepDone {
                snapshot: out.backup.snapshot_id,
                logical_bytes: out.backup.snapshot.summary.total_bytes,
                bytes_read: out.backup.snapshot.summary.bytes_read,
                bytes_added: out.backup.snapshot.summary.stored_bytes_added,
                ..Default::default()
            })
        }
    }
}

/// How to reach the server of the configuration's MySQL source `name`, its password read
/// (from `password`, a literal or `${VAR}`, or the first line of `password-file`).
pub fn mysql_connection(name: &str, m: &MysqlSource) -> Result<Connection> {
    let password = match (&m.password, &m.password_file) {
        (Some(p), _) => Some(p.reveal(&format!("sources.{name}.password"))?),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
            Some(zeroize::Zeroizing::new(
                text.lines().next().unwrap_or("").to_string(),
            ))
        }
        (None, None) => None,
    };
    Ok(Connection {
        host: m.host.clone(),
        port: m.port,
        socket: m.socket.clone(),
        user: m.user.clone(),
        defaults_file: m.defaults_file.clone(),
        password,
    })
}

/// The exit code of an outcome: 0 success, 3 partial, 1 failure, 130 interrupted.
pub fn exit_code(o: Outcome) -> i32 {
    match o {
        Outcome::Success => 0,
        Outcome::Partial => 3,
        Outcome::Failure => 1,
        Outcome::Interrupted => 130,
    }
}

/// Drill job `job_name` of `config`: restore the latest snapshot of each of its sources (in
/// its repository) into scratch space and check it (see [`crate::ops::drill`]). The report is
/// a run of `JOB:drill`, one step `drill SOURCE` per source (and `rto` when the recovery took
/// longer than the target), for the history, metrics and notifications.
pub async fn drill(
    config: &Config,
    job_name: &str,
    opener: &dyn Opener,
    opts: &crate::ops::drill::DrillOptions,
    state_dir: Option<&std::path::Path>,
) -> Result<(RunReport, crate::ops::drill::DrillReport)> {
    use crate::ops::drill::DrillTarget;
    let job = find_job(config, job_name)?;
    let started = Timestamp::from_jiff(jiff::Timestamp::now());
    let id = run_id(started);
    let log = match state_dir {
        Some(dir) => log::RunLog::create(dir, &id)?,
        None => log::RunLog::none(),
    };
    log.line(&format!(
        "run {id} of job {job_name}:drill started (pid {})",
        std::process::id()
    ));
    let repo = opener.open(job.repository.get_ref().as_str()).await?;
    let snaps = repo.snapshots()?;
    let mut targets = Vec::new();
    for s in &job.sources {
        let name = s.get_ref().as_str();
        let tags = [format!("job={job_name}"), format!("source={name}")];
        let latest = snaps
            .iter()
            .filter(|(_, snap)| snap.matches(None, &tags))
            .max_by_key(|(_, snap)| snap.time.as_nanos());
        match latest {
            Some((id, snap)) => targets.push(DrillTarget {
                source: name.to_string(),
                id: *id,
                snapshot: snap.clone(),
            }),
            None => {
                return Err(Error::not_found(format!(
                    "a snapshot of source {name} of job {job_name} (cairn run {job_name} makes one)"
                )));
            }
        }
    }
    let d = crate::ops::drill::drill(&repo, &targets, opts).await?;
    let mut report = RunReport {
        run_id: id,
        job: format!("{job_name}:drill"),
        outcome: Outcome::Success,
        started,
        ended: started,
        steps: Vec::new(),
        snapshots: Vec::new(),
        repositories: Vec::new(),
        log: Arc::new(log),
    };
    for s in &d.sources {
        let r = if s.problems.is_empty() {
            Ok(StepDone {
                logical_bytes: s.bytes,
                bytes_read: s.bytes,
                details: vec![format!("snapshot {} restored and verified", s.snapshot)],
                ..Default::default()
            })
        } else {
            Err(Error::Corrupt {
                object: format!("snapshot {} of source {}", s.snapshot, s.source),
                reason: s.problems.join("; "),
            })
        };
        report.push_took(format!("drill {}", s.source), s.seconds, r);
    }
    if !d.within_rto {
        let why = format!(
            "recovery took {:.1}s, more than the target of {:.1}s",
            d.recovery_seconds, d.rto_seconds
        );
        report.push_took("rto", d.recovery_seconds, Err(Error::Other(why)));
    }
    report.outcome = if d.ok {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    report.ended = Timestamp::from_jiff(jiff::Timestamp::now());
    report.log.line(&format!(
        "run {} ended: {}",
        report.run_id,
        outcome_word(report.outcome)
    ));
    Ok((report, d))
}
