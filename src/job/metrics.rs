//! Prometheus metrics (text exposition format 0.0.4) from the run history: per job, source
//! and repository, what the last runs did. Written by `cairn run --metrics-file F` for
//! node_exporter's textfile collector, printed by `cairn metrics`, served by the daemon.
//!
//! Every value comes from `history.db`, so the metrics agree with `cairn runs --json`.

use std::fmt::Write as _;
use std::path::Path;

use super::health::HealthReport;
use super::history::{History, RunRow, unix_seconds as seconds};
use crate::error::{Error, Result};

/// One metric family being written: its HELP and TYPE lines once, then samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

/// A label value escaped as the format says: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The metrics of everything in `history` (and of `health`, when given).
pub fn render(history: &History, health: Option<&HealthReport>) -> Result<String> {
    let latest = history.latest_per_job()?;
    let mut out = String::new();

    let mut f = Family::new(
        &mut out,
        "cairn_job_last_run_timestamp_seconds",
        "gauge",
        "When the job's last run started.",
    );
    for r in &latest {
        if let Some(t) = seconds(&r.started) {
            f.sample(
                "cairn_job_last_run_timestamp_seconds",
                &[("job", &r.job)],
                t,
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "cairn_job_last_success_timestamp_seconds",
        "gauge",
        "When the job's last successful run started.",
    );
    for r in &latest {
        if let Some(t) = history.last_success(&r.job)?.as_deref().and_then(seconds) {
            f.sample(
                "cairn_job_last_success_timestamp_seconds",
                &[("job", &r.job)],
                t,
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "cairn_job_last_run_duration_seconds",
        "gauge",
        "How long the job's last run took.",
    );
    for r in &latest {
        f.sample(
            "cairn_job_last_run_duration_seconds",
            &[("job", &r.job)],
            r.seconds,
        );
    }
    let mut f = Family::new(
        &mut out,
        "cairn_job_last_run_outcome",
        "gauge",
        "The outcome of the job's last run: 1 for the outcome it had, 0 for the others.",
    );
    for r in &latest {
        for o in ["success", "partial", "failure", "interrupted"] {
            f.sample(
                "cairn_job_last_run_outcome",
                &[("job", &r.job), ("outcome", o)],
                if r.outcome == o { 1.0 } else { 0.0 },
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "cairn_job_runs_total",
        "counter",
        "Runs of the job in the history, by outcome.",
    );
    for (job, outcome, n) in history.counts()? {
        f.sample(
            "cairn_job_runs_total",
            &[("job", &job), ("outcome", &outcome)],
            n as f64,
        );
    }

    // Per source: the backup steps of the job's last run.
    let steps = |r: &RunRow| -> Vec<serde_json::Value> {
        r.report["steps"].as_array().cloned().unwrap_or_default()
    };
    let backups = |r: &RunRow| -> Vec<(String, serde_json::Value)> {
        steps(r)
            .into_iter()
            .filter_map(|s| {
                let name = s["name"].as_str()?.strip_prefix("backup ")?.to_string();
                Some((name, s))
            })
            .collect()
    };
    for (metric, key, help) in [
        (
            "cairn_source_last_backup_added_bytes",
            "bytes_added",
            "Bytes the source's last backup added to the repository (stored, compressed).",
        ),
        (
            "cairn_source_last_backup_read_bytes",
            "bytes_read",
            "Bytes the source's last backup read.",
        ),
        (
            "cairn_source_last_backup_logical_bytes",
            "logical_bytes",
            "The size of the source's last snapshot.",
        ),
        (
            "cairn_source_last_backup_duration_seconds",
            "seconds",
            "How long the source's last backup took.",
        ),
    ] {
        let mut f = Family::new(&mut out, metric, "gauge", help);
        for r in &latest {
            for (source, s) in backups(r) {
                f.sample(
                    metric,
                    &[("job", &r.job), ("source", &source)],
                    s[key].as_f64().unwrap_or(0.0),
                );
            }
        }
    }
    let mut f = Family::new(
        &mut out,
        "cairn_source_last_backup_success",
        "gauge",
        "1 if the source's last backup succeeded (fully or with unreadable entries), else 0.",
    );
    for r in &latest {
        for (source, s) in backups(r) {
            f.sample(
                "cairn_source_last_backup_success",
                &[("job", &r.job), ("source", &source)],
                if s["outcome"] == "failure" { 0.0 } else { 1.0 },
            );
        }
    }

    // Per repository: the figures of the newest run that measured it.
    let mut repos: Vec<(String, serde_json::Value)> = Vec::new();
    for r in &latest {
        for x in r.report["repositories"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let Some(name) = x["name"].as_str().map(str::to_string) else {
                continue;
            };
            match repos.iter_mut().find(|(n, _)| *n == name) {
                Some((_, old)) if old["_started"].as_str() < Some(r.started.as_str()) => {
                    *old = with_started(x, &r.started);
                }
                Some(_) => {}
                None => repos.push((name, with_started(x, &r.started))),
            }
        }
    }
    repos.sort_by(|a, b| a.0.cmp(&b.0));
    for (metric, key, help) in [
        (
            "cairn_repository_size_bytes",
            "stored_bytes",
            "The size of the repository's packs after the last run.",
        ),
        (
            "cairn_repository_snapshots",
            "snapshots",
            "Snapshots in the repository after the last run.",
        ),
        (
            "cairn_repository_logical_bytes",
            "logical_bytes",
            "The sizes of all the repository's snapshots, summed.",
        ),
    ] {
        let mut f = Family::new(&mut out, metric, "gauge", help);
        for (name, x) in &repos {
            f.sample(
                metric,
                &[("repository", name)],
                x[key].as_f64().unwrap_or(0.0),
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "cairn_repository_last_check_timestamp_seconds",
        "gauge",
        "When the repository's last check (by a job or cairn check) started.",
    );
    let mut checks = Vec::new();
    for (name, _) in &repos {
        if let Some(c) = history.last_check(name)? {
            if let Some(t) = seconds(&c.started) {
                f.sample(
                    "cairn_repository_last_check_timestamp_seconds",
                    &[("repository", name)],
                    t,
                );
            }
            checks.push((name.clone(), c.outcome == "success"));
        }
    }
    let mut f = Family::new(
        &mut out,
        "cairn_repository_last_check_success",
        "gauge",
        "1 if the repository's last check found it clean, else 0.",
    );
    for (name, ok) in &checks {
        f.sample(
            "cairn_repository_last_check_success",
            &[("repository", name)],
            if *ok { 1.0 } else { 0.0 },
        );
    }

    if let Some(h) = health {
        let mut f = Family::new(
            &mut out,
            "cairn_health_check_ok",
            "gauge",
            "1 if the health check passed, else 0.",
        );
        for c in &h.checks {
            f.sample(
                "cairn_health_check_ok",
                &[("check", &c.name)],
                if c.ok { 1.0 } else { 0.0 },
            );
        }
        let mut f = Family::new(
            &mut out,
            "cairn_healthy",
            "gauge",
            "1 if every health check passed, else 0.",
        );
        f.sample("cairn_healthy", &[], if h.healthy { 1.0 } else { 0.0 });
    }
    Ok(out)
}

fn with_started(mut x: serde_json::Value, started: &str) -> serde_json::Value {
    x["_started"] = serde_json::Value::String(started.to_string());
    x
}

/// Write `text` to `path` atomically (a temporary file beside it, then a rename), mode 0644:
/// node_exporter must never read half a file, and metrics hold no secret.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{}: not a file name", path.display())))?;
    let tmp = dir.unwrap_or(Path::new(".")).join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_numbers_plain() {
        let mut out = String::new();
        let mut f = Family::new(&mut out, "m", "gauge", "help");
        f.sample("m", &[("a", "x\"y\\z\nw")], 3.0);
        f.sample("m", &[], 0.5);
        assert_eq!(
            out,
            "# HELP m help\n# TYPE m gauge\nm{a=\"x\\\"y\\\\z\\nw\"} 3\nm 0.5\n"
        );
        assert_eq!(number(1.7e9), "1700000000");
    }

    #[test]
    fn an_empty_history_gives_only_headers() {
        let d = tempfile::tempdir().unwrap();
        let h = History::open(d.path()).unwrap();
        let text = render(&h, None).unwrap();
        assert!(text.lines().all(|l| l.starts_with('#')), "{text}");
        assert!(text.contains("# TYPE cairn_job_runs_total counter"));
    }
}
