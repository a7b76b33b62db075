//! `cairn health`: is the backup service able to do its job, and did it do it? Each check is
//! named, and a failed one says what to do:
//!
//! - `database NAME`: connect as the MySQL source does and run a query;
//! - `repository NAME`: open it (its config and key) and list its snapshots, within a timeout;
//! - `disk NAME` and `disk cache`: free space on the file system of each local repository and
//!   of the cache, against `[health] min-free`;
//! - `size NAME`: the repository's packs against its `max-size`;
//! - `freshness SOURCE@REPOSITORY`: the latest snapshot of each job's source, in the job's
//!   repository and every `copy-to`, younger than `[health] max-age`;
//! - `last check NAME`: the repository's latest check (a job's, or `cairn check` of the
//!   repository by its name) was clean and is younger than `[health] max-check-age`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::Opener;
use super::history::History;
use crate::config::{Config, MinFree, SourceConfig};
use crate::error::Result;
use crate::repo::Repository;

/// Defaults of `[health]`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(26 * 3600);
pub const DEFAULT_MIN_FREE: MinFree = MinFree::Percent(5.0);
pub const DEFAULT_MAX_CHECK_AGE: Duration = Duration::from_secs(35 * 86400);
/// How long opening a repository or reaching a database may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Check {
    /// `database shop`, `repository offsite`, `disk local`, `freshness uploads@local`, ...
    pub name: String,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct HealthReport {
    pub healthy: bool,
    pub checks: Vec<Check>,
}

pub struct HealthOptions {
    pub cache_dir: PathBuf,
    pub state_dir: PathBuf,
    pub now: jiff::Timestamp,
}

fn ok(name: String, detail: String) -> Check {
    Check {
        name,
        ok: true,
        detail,
        fix: None,
    }
}

fn bad(name: String, detail: String, fix: impl Into<String>) -> Check {
    Check {
        name,
        ok: false,
        detail,
        fix: Some(fix.into()),
    }
}

/// Every check of `config`.
pub async fn health(config: &Config, opener: &dyn Opener, o: &HealthOptions) -> HealthReport {
    let h = &config.health;
    let max_age = h.max_age.map_or(DEFAULT_MAX_AGE, |d| d.0);
    let min_free = h.min_free.unwrap_or(DEFAULT_MIN_FREE);
    let max_check_age = h.max_check_age.map_or(DEFAULT_MAX_CHECK_AGE, |d| d.0);
    let mut checks = Vec::new();

    // Databases, all at once (each is a client process).
    let dbs = config.sources.iter().filter_map(|(name, s)| match s {
        SourceConfig::Mysql(m) => Some((name.clone(), m.clone())),
        SourceConfig::Files(_) => None,
    });
    let db_checks = dbs.map(|(name, m)| async move {
        let label = format!("database {name}");
        let probe = tokio::task::spawn_blocking(move || -> Result<String> {
            let conn = super::mysql_connection(&name, &m)?;
            let client = crate::source::mysql::Tools::find_client(m.client_binary.as_deref())?;
            let started = std::time::Instant::now();
            let info = crate::source::mysql::server_info(&client, &conn)?;
            Ok(format!(
                "{} answered in {} ms",
                info.version,
                started.elapsed().as_millis()
            ))
        });
        match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
            Ok(Ok(Ok(d))) => ok(label, d),
            Ok(Ok(Err(e))) => bad(
                label,
                super::chain(&e),
                "start the server, or fix the source's connection settings in the configuration",
            ),
            Ok(Err(e)) => bad(label, e.to_string(), "report this as a bug"),
            Err(_) => bad(
                label,
                format!("no answer within {}s", CHECK_TIMEOUT.as_secs()),
                "check the server and the network",
            ),
        }
    });
    checks.extend(futures::future::join_all(db_checks).await);

    // Repositories: open each, then what depends on it.
    let history = History::open(&o.state_dir).ok();
    let mut opened: Vec<(String, std::sync::Arc<Repository>)> = Vec::new();
    for (name, rc) in &config.repositories {
        let label = format!("repository {name}");
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(CHECK_TIMEOUT, async {
            let repo = opener.open(name).await?;
            let n = repo.snapshots()?.len();
            Ok::<_, crate::error::Error>((repo, n))
        })
        .await;
        match r {
            Ok(Ok((repo, n))) => {
                checks.push(ok(
                    label,
                    format!(
                        "{n} snapshots, opened in {:.1}s",
                        started.elapsed().as_secs_f64()
                    ),
                ));
                opened.push((name.clone(), repo));
            }
            Ok(Err(e)) => checks.push(bad(
                label,
                super::chain(&e),
                format!("see `cairn -r {name} snapshots`; is the server or disk there?"),
            )),
            Err(_) => checks.push(bad(
                label,
                format!("not opened within {}s", CHECK_TIMEOUT.as_secs()),
                "check the server and the network",
            )),
        }
        let url = crate::config::value::expand_env(rc.url.get_ref(), "url").unwrap_or_default();
        if !crate::backend::is_s3_url(&url) && !url.is_empty() {
            checks.push(disk(format!("disk {name}"), Path::new(&url), min_free));
        }
    }
    checks.push(disk("disk cache".into(), &o.cache_dir, min_free));

    for (name, repo) in &opened {
        let Some(rc) = config.repositories.get(name) else {
            continue;
        };
        if let Some(max) = rc.max_size {
            let label = format!("size {name}");
            match repo.catalog().packs() {
                Ok(p) => {
                    let size: u64 = p.iter().map(|p| p.2).sum();
                    checks.push(if size <= max.0 {
                        ok(
                            label,
                            format!("{} of max-size {}", bytes(size), bytes(max.0)),
                        )
                    } else {
                        bad(
                            label,
                            format!("{} is over max-size {}", bytes(size), bytes(max.0)),
                            format!(
                                "keep fewer snapshots (keep-* rules) and `cairn -r {name} prune`, \
                                 or raise max-size"
                            ),
                        )
                    });
                }
                Err(e) => checks.push(bad(label, super::chain(&e), "run `cairn check`")),
            }
        }
    }

    // Freshness: each job's sources in each of its repositories.
    for (job_name, job) in &config.jobs {
        let repos = std::iter::once(job.repository.get_ref())
            .chain(job.copy_to.iter().map(|c| c.get_ref()));
        for repo_name in repos {
            let Some((_, repo)) = opened.iter().find(|(n, _)| n == repo_name) else {
                continue; // its own check failed
            };
            let snaps = repo.snapshots().unwrap_or_default();
            for source in &job.sources {
                let source = source.get_ref();
                let label = format!("freshness {source}@{repo_name}");
                let tags = [format!("job={job_name}"), format!("source={source}")];
                let latest = snaps
                    .iter()
                    .filter(|(_, s)| tags.iter().all(|t| s.tags.contains(t)))
                    .filter_map(|(_, s)| s.time.to_jiff())
                    .max();
                checks.push(match latest {
                    None => bad(
                        label,
                        "no snapshot yet".into(),
                        format!("run `cairn run {job_name}`"),
                    ),
                    Some(t) => {
                        let age = o.now.duration_since(t);
                        let age = Duration::from_secs(age.as_secs().max(0) as u64);
                        if age <= max_age {
                            ok(label, format!("latest snapshot {} old", human(age)))
                        } else {
                            bad(
                                label,
                                format!(
                                    "latest snapshot {} old (max-age {})",
                                    human(age),
                                    human(max_age)
                                ),
                                format!(
                                    "see `cairn runs --job {job_name}` and `cairn logs`; run \
                                     `cairn run {job_name}`"
                                ),
                            )
                        }
                    }
                });
            }
        }
    }

    // The last check a job ran on each repository.
    for (name, _) in &opened {
        let label = format!("last check {name}");
        let last = history
            .as_ref()
            .and_then(|h| h.last_check(name).ok().flatten());
        checks.push(match last {
            None => bad(
                label,
                "never checked".into(),
                format!("run `cairn check --repository {name}` (or a job with check = ...)"),
            ),
            Some(l) => {
                let when = l.started.parse::<jiff::Timestamp>().ok();
                let age = when.map(|t| {
                    Duration::from_secs(o.now.duration_since(t).as_secs().max(0) as u64)
                });
                if l.outcome != "success" {
                    bad(
                        label,
                        format!(
                            "the last check ({}) failed: {}",
                            l.started,
                            l.error.unwrap_or_default()
                        ),
                        format!("run `cairn check --repository {name} --read-data` and `cairn repair` if it finds damage"),
                    )
                } else if age.is_some_and(|a| a > max_check_age) {
                    bad(
                        label,
                        format!(
                            "the last check was {} ago (max-check-age {})",
                            human(age.unwrap_or_default()),
                            human(max_check_age)
                        ),
                        format!("run `cairn check --repository {name}`"),
                    )
                } else {
                    ok(
                        label,
                        format!("clean, {} ago", human(age.unwrap_or_default())),
                    )
                }
            }
        });
    }
    HealthReport {
        healthy: checks.iter().all(|c| c.ok),
        checks,
    }
}

/// Free space on the file system holding `path` (or its nearest existing ancestor).
fn disk(label: String, path: &Path, min_free: MinFree) -> Check {
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    match rustix::fs::statvfs(p) {
        Ok(st) => {
            let total = st.f_blocks.saturating_mul(st.f_frsize);
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let pct = if total > 0 {
                free as f64 * 100.0 / total as f64
            } else {
                100.0
            };
            let enough = match min_free {
                MinFree::Percent(want) => pct >= want,
                MinFree::Bytes(want) => free >= want,
            };
            let detail = format!(
                "{} free of {} ({pct:.1}%) at {}",
                bytes(free),
                bytes(total),
                p.display()
            );
            if enough {
                ok(label, detail)
            } else {
                bad(
                    label,
                    format!("{detail}, under min-free {}", show_min_free(min_free)),
                    "free space on that file system (or prune the repository)",
                )
            }
        }
        Err(e) => bad(
            label,
            format!("{}: {e}", p.display()),
            "check that the path exists and is readable",
        ),
    }
}

fn show_min_free(m: MinFree) -> String {
    match m {
        MinFree::Percent(p) => format!("{p}%"),
        MinFree::Bytes(b) => bytes(b),
    }
}

use super::human_bytes as bytes;

/// A duration to the minute (to the second under one): `3d 2h`, `26h`, `5m`, `40s`.
pub(super) fn human(d: Duration) -> String {
    if d.as_secs() < 60 {
        return format!("{}s", d.as_secs());
    }
    let mins = d.as_secs() / 60;
    let (days, hours, m) = (mins / 1440, mins / 60 % 24, mins % 60);
    match (days, hours, m) {
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_secs(59)), "59s");
        assert_eq!(human(Duration::from_secs(60)), "1m");
        assert_eq!(human(Duration::from_secs(5 * 60)), "5m");
        assert_eq!(human(Duration::from_secs(26 * 3600)), "1d 2h");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 120)), "3h 2m");
        assert_eq!(human(Duration::from_secs(35 * 86400)), "35d");
    }

    #[test]
    fn disk_thresholds() {
        let d = tempfile::tempdir().unwrap();
        assert!(disk("disk t".into(), d.path(), MinFree::Percent(0.0)).ok);
        assert!(!disk("disk t".into(), d.path(), MinFree::Percent(100.1)).ok);
        let c = disk(
            "disk t".into(),
            &d.path().join("not/yet"),
            MinFree::Bytes(u64::MAX),
        );
        assert!(!c.ok && c.detail.contains("under min-free"), "{c:?}");
        assert!(c.detail.contains(&d.path().display().to_string()), "{c:?}");
    }
}
