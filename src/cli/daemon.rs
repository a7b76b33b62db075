//! `cairn daemon`: the backup service in one process. It runs the configuration's jobs, the
//! health checks and the cleanup on their cron schedules (see `cairn::config::schedule`),
//! catches up a fire time missed while it was down (once, if within `catch-up`), never runs a
//! job twice at once, reloads the configuration on SIGHUP (a broken one keeps the old and
//! says why), and on SIGTERM or SIGINT stops taking work, lets the running steps end (their
//! leases deleted, the runs recorded as interrupted) within `shutdown-timeout`, and exits 0.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

use cairn::config::Task;
use cairn::config::schedule::Schedule;
use cairn::job::history::History;
use cairn::job::notify::Notifier;
use cairn::job::{self, RunOptions};

use super::args::GlobalArgs;
use super::settings::Settings;

#[derive(Debug, Args)]
pub struct DaemonArgs {}

/// The service error of a reload that failed.
const RELOAD: &str = "configuration reload";

/// Defaults of `[daemon]`.
const DEFAULT_CATCH_UP: Duration = Duration::from_secs(6 * 3600);
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(120);

struct Plan {
    settings: Arc<Settings>,
    listen: Option<std::net::SocketAddr>,
    schedules: Vec<(Task, Schedule)>,
    catch_up: Duration,
    shutdown_timeout: Duration,
    /// The notifications as the plan's configuration has them (kept through a reload that
    /// failed, so the failure can be told).
    notifier: Option<Arc<Notifier>>,
}

fn make_plan(settings: Settings) -> Result<Plan> {
    let file = super::config::load(&settings)?;
    let schedules = file.config.schedules()?;
    let d = &file.config.daemon;
    let listen = match d.listen.as_ref().map(|l| l.get_ref().as_str()) {
        Some("none") => None,
        Some(a) => Some(a.parse()?),
        None => Some(super::web::DEFAULT_LISTEN.parse()?),
    };
    Ok(Plan {
        listen,
        catch_up: d.catch_up.map_or(DEFAULT_CATCH_UP, |c| c.0),
        shutdown_timeout: d.shutdown_timeout.map_or(DEFAULT_SHUTDOWN_TIMEOUT, |c| c.0),
        schedules,
        notifier: Notifier::new(&file.config.notify).map(Arc::new),
        settings: Arc::new(settings),
    })
}

fn describe(p: &Plan) {
    for (task, s) in &p.schedules {
        let next = s
            .next_after(jiff::Timestamp::now())
            .map(|t| t.to_string())
            .unwrap_or_else(|| "never".into());
        tracing::info!(
            "{task}: \"{}\" ({}), next at {next}",
            s.expression,
            s.timezone
        );
    }
}

pub async fn run(first: Settings, global: GlobalArgs, _a: DaemonArgs) -> Result<i32> {
    let mut plan = make_plan(first)?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tracing::info!(
        "cairn daemon started (pid {}): {} schedules",
        std::process::id(),
        plan.schedules.len()
    );
    describe(&plan);
    let shared: super::web::Shared = Arc::new(std::sync::RwLock::new(plan.settings.clone()));
    if let Some(addr) = plan.listen {
        super::web::serve(addr, shared.clone()).await?;
    }

    // Where each schedule stands: its last fire time (from the history, so a restart knows
    // what it missed). A schedule never seen before starts from now: nothing to catch up.
    let now = jiff::Timestamp::now();
    let mut cursor: HashMap<String, jiff::Timestamp> = HashMap::new();
    let mut due_now: Vec<Task> = Vec::new();
    {
        let mut h = History::open(&plan.settings.state_dir)?;
        for (task, s) in &plan.schedules {
            let key = task.to_string();
            match h.fire(&key)? {
                Some(last) => {
                    if let Some(missed) = s.latest_in(Some(last), now, plan.catch_up) {
                        tracing::warn!("{task}: missed its run at {missed}; running it now");
                        due_now.push(task.clone());
                        h.set_fire(&key, missed)?;
                        cursor.insert(key, now);
                    } else {
                        cursor.insert(key, last.max(now));
                    }
                }
                None => {
                    h.set_fire(&key, now)?;
                    cursor.insert(key, now);
                }
            }
        }
    }
    let mut running: HashMap<Task, tokio::task::JoinHandle<()>> = HashMap::new();
    for task in due_now {
        launch(&plan, task, &mut running);
    }

    loop {
        // The next fire time of any schedule.
        let next = plan
            .schedules
            .iter()
            .filter_map(|(task, s)| {
                let from = cursor.get(&task.to_string()).copied().unwrap_or(now);
                s.next_after(from).map(|t| (t, task.clone()))
            })
            .min_by_key(|(t, _)| *t);
        // Sleep until then, but wake at least every minute (the clock may jump).
        let wait = next
            .as_ref()
            .map(|(t, _)| {
                let d = t.as_millisecond() - jiff::Timestamp::now().as_millisecond();
                Duration::from_millis(d.max(0) as u64)
            })
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = hup.recv() => {
                match Settings::resolve(&global, true).and_then(make_plan) {
                    Ok(p) => {
                        tracing::info!("configuration reloaded: {} schedules", p.schedules.len());
                        let now = jiff::Timestamp::now();
                        for (task, _) in &p.schedules {
                            cursor.entry(task.to_string()).or_insert(now);
                        }
                        if p.listen != plan.listen {
                            tracing::warn!("a new listen address takes effect at the next start");
                        }
                        plan = p;
                        match shared.write() {
                            Ok(mut g) => *g = plan.settings.clone(),
                            Err(poisoned) => *poisoned.into_inner() = plan.settings.clone(),
                        }
                        describe(&plan);
                        if let Some(n) = &plan.notifier {
                            n.notify(&plan.settings.state_dir, n.error_fine(RELOAD)).await;
                        }
                    }
                    Err(e) => {
                        tracing::error!(
                            "the configuration was not reloaded (the old one stays in force): {e:#}"
                        );
                        if let Some(n) = &plan.notifier {
                            let f = n.error_findings(
                                RELOAD,
                                &format!("{e:#} (the old configuration stays in force)"),
                                "cairn config check",
                            );
                            n.notify(&plan.settings.state_dir, f).await;
                        }
                    }
                }
                continue;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        let now = jiff::Timestamp::now();
        running.retain(|_, h| !h.is_finished());
        let mut h = History::open(&plan.settings.state_dir)?;
        for (task, s) in &plan.schedules {
            let key = task.to_string();
            let from = cursor.get(&key).copied().unwrap_or(now);
            // Every fire time passed since (a suspended machine may have several): run once.
            let Some(fire) = s.latest_in(Some(from), now, Duration::from_secs(400 * 86400)) else {
                continue;
            };
            cursor.insert(key.clone(), fire);
            if let Err(e) = h.set_fire(&key, fire) {
                tracing::warn!("could not record the fire time of {task}: {e}");
            }
            launch(&plan, task.clone(), &mut running);
        }
    }

    // Stop: no new work; the running steps end and delete their leases.
    tracing::info!(
        "stopping: waiting up to {}s for {} running tasks",
        plan.shutdown_timeout.as_secs(),
        running.values().filter(|h| !h.is_finished()).count()
    );
    super::commands::shutdown().request();
    let all = futures::future::join_all(running.into_values());
    if tokio::time::timeout(plan.shutdown_timeout, all)
        .await
        .is_err()
    {
        tracing::error!("running tasks did not end within the shutdown timeout");
    }
    tracing::info!("cairn daemon stopped");
    Ok(super::EXIT_OK)
}

/// Start `task` unless it is still running from its last fire time.
fn launch(plan: &Plan, task: Task, running: &mut HashMap<Task, tokio::task::JoinHandle<()>>) {
    if running.get(&task).is_some_and(|h| !h.is_finished()) {
        tracing::warn!("{task}: still running from its last fire time; this one is skipped");
        return;
    }
    let g = plan.settings.clone();
    let t = task.clone();
    let notifier = plan.notifier.clone();
    let handle = tokio::spawn(async move {
        let notifier = notifier.as_deref();
        match &t {
            Task::Job(name) => run_job(&g, name, None, notifier).await,
            Task::Health => match super::run::health_report(&g).await {
                Ok(r) => {
                    let failed: Vec<&str> = r
                        .checks
                        .iter()
                        .filter(|c| !c.ok)
                        .map(|c| c.name.as_str())
                        .collect();
                    if failed.is_empty() {
                        tracing::info!("health: {} checks passed", r.checks.len());
                    } else {
                        tracing::error!("health: failed: {}", failed.join(", "));
                    }
                    let path = g.state_dir.join("health.json");
                    if let Ok(text) = serde_json::to_string(&r) {
                        let _ = cairn::job::metrics::write_file(&path, &text);
                    }
                    if let Some(n) = notifier {
                        n.notify(&g.state_dir, n.health_findings(&r)).await;
                    }
                }
                Err(e) => {
                    tracing::error!("health: {e:#}");
                    if let Some(n) = notifier {
                        let f = n.error_findings(
                            cairn::job::notify::HEALTH,
                            &format!("{e:#}"),
                            "cairn health",
                        );
                        n.notify(&g.state_dir, f).await;
                    }
                }
            },
            Task::Cleanup => {
                let (jobs, check) = match super::config::load(&g) {
                    Ok(f) => (
                        f.config.jobs.keys().cloned().collect::<Vec<_>>(),
                        f.config
                            .daemon
                            .cleanup_check
                            .as_ref()
                            .map(|c| c.get_ref().clone())
                            .unwrap_or_else(|| cairn::config::DEFAULT_CLEANUP_CHECK.into()),
                    ),
                    Err(e) => {
                        tracing::error!("cleanup: {e:#}");
                        if let Some(n) = notifier {
                            let f = n.error_findings(
                                "cleanup",
                                &format!("{e:#}"),
                                "cairn config check",
                            );
                            n.notify(&g.state_dir, f).await;
                        }
                        return;
                    }
                };
                let subset = cairn::config::CheckSubset::parse(&check)
                    .unwrap_or(cairn::config::CheckSubset::Structure);
                for name in jobs {
                    run_job(&g, &name, Some(subset), notifier).await;
                }
            }
        }
    });
    running.insert(task, handle);
}

async fn run_job(
    g: &Settings,
    name: &str,
    cleanup: Option<cairn::config::CheckSubset>,
    notifier: Option<&Notifier>,
) {
    let opts = RunOptions {
        lease_wait: g.lease_wait,
        state_dir: Some(g.state_dir.clone()),
        shutdown: Some(super::commands::shutdown().clone()),
        cleanup,
        ..Default::default()
    };
    let what = if cleanup.is_some() {
        format!("cleanup of job {name}")
    } else {
        format!("job {name}")
    };
    match super::run::run_job(g, name, &opts, Duration::ZERO, None).await {
        Ok(r) => {
            let line = format!(
                "{what}: run {} {} in {:.1}s",
                r.run_id,
                job::outcome_word(r.outcome),
                r.seconds()
            );
            if r.outcome == job::Outcome::Success {
                tracing::info!("{line}");
            } else {
                tracing::error!("{line} (cairn logs {})", r.run_id);
            }
        }
        Err(e) => {
            tracing::error!("{what}: {e:#}");
            // A run that did not start tells it itself, but not when the configuration no
            // longer loads: the daemon's (the same subject, so it is said once).
            if let Some(n) = notifier {
                let subject = format!("job {}", super::run::job_key(name, cleanup.is_some()));
                let f = n.error_findings(&subject, &format!("{e:#}"), super::run::RUNS_MORE);
                n.notify(&g.state_dir, f).await;
            }
        }
    }
}
