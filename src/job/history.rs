//! The run history: every run and its steps in a local SQLite database (`history.db` in the
//! state directory), and each run's report appended as one JSON line to `runs.jsonl` beside
//! it, for log shippers. Both are created mode 0600 in a 0700 directory; reports hold no
//! secret (hooks and errors never see one).
//!
//! Also the lock that lets one run of a job at a time: `job-NAME.lock`, held with `flock` for
//! the whole run (the kernel releases it if the process dies).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::RunReport;
use crate::error::{Error, Result};

/// The default state directory: `$XDG_STATE_HOME/cairn`, else `~/.local/state/cairn`.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("cairn")
}

/// Create `dir` (and its parents) mode 0700 if missing.
pub(super) fn private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

/// Open (creating if missing, mode 0600) a file of the state directory; appending, or for
/// reading and writing in place.
pub(super) fn private_file(path: &Path, append: bool) -> Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    if append {
        o.append(true);
    } else {
        o.write(true).truncate(false);
    }
    o.create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

pub struct History {
    dir: PathBuf,
    db: Connection,
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::Catalog {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A run as the history lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub job: String,
    pub started: String,
    pub seconds: f64,
    pub outcome: String,
    /// Bytes added, per backup step (`backup NAME`).
    pub added: Vec<(String, u64)>,
    pub report: serde_json::Value,
}

impl History {
    pub fn open(dir: &Path) -> Result<History> {
        private_dir(dir)?;
        let path = dir.join("history.db");
        if !path.exists() {
            // Created private before SQLite opens it.
            private_file(&path, false)?;
        }
        let db = Connection::open(&path).map_err(sql_err(&path))?;
        db.execute_batch(
            "PRAGMA busy_timeout = 10000;
             CREATE TABLE IF NOT EXISTS runs (
                 run_id TEXT PRIMARY KEY, job TEXT NOT NULL, started TEXT NOT NULL,
                 ended TEXT NOT NULL, seconds REAL NOT NULL, outcome TEXT NOT NULL,
                 report TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS steps (
                 run_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL,
                 outcome TEXT NOT NULL, error TEXT, snapshot TEXT, bytes_read INTEGER NOT NULL,
                 bytes_added INTEGER NOT NULL, seconds REAL NOT NULL,
                 PRIMARY KEY (run_id, seq));
             CREATE TABLE IF NOT EXISTS fires (
                 schedule TEXT PRIMARY KEY, at TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS checks (
                 repository TEXT NOT NULL, started TEXT NOT NULL, outcome TEXT NOT NULL,
                 error TEXT);
             CREATE TABLE IF NOT EXISTS notices (
                 subject TEXT PRIMARY KEY, kind TEXT NOT NULL, since TEXT NOT NULL,
                 sent TEXT NOT NULL, held INTEGER NOT NULL);",
        )
        .map_err(sql_err(&path))?;
        Ok(History {
            dir: dir.to_path_buf(),
            db,
        })
    }

    /// The log file the reports are appended to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("runs.jsonl")
    }

    /// Record a finished run.
    pub fn record(&mut self, r: &RunReport) -> Result<()> {
        let path = self.dir.join("history.db");
        let json = serde_json::to_string(r).map_err(|e| Error::Other(e.to_string()))?;
        let outcome = super::outcome_word;
        let seconds = r.seconds();
        let tx = self.db.transaction().map_err(sql_err(&path))?;
        tx.execute(
            "INSERT OR REPLACE INTO runs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                r.run_id,
                r.job,
                r.started.to_rfc3339(),
                r.ended.to_rfc3339(),
                seconds,
                outcome(r.outcome),
                json
            ],
        )
        .map_err(sql_err(&path))?;
        for (i, s) in r.steps.iter().enumerate() {
            tx.execute(
                "INSERT OR REPLACE INTO steps VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    r.run_id,
                    i as i64,
                    s.name,
                    outcome(s.outcome),
                    s.error,
                    s.snapshot,
                    s.bytes_read as i64,
                    s.bytes_added as i64,
                    s.seconds
                ],
            )
            .map_err(sql_err(&path))?;
        }
        tx.commit().map_err(sql_err(&path))?;
        let log = self.log_path();
        let mut f = private_file(&log, true)?;
        writeln!(f, "{json}").map_err(|e| Error::io(&log, e))?;
        Ok(())
    }

    /// The last `limit` runs (of `job`, if given), newest first.
    pub fn runs(&self, job: Option<&str>, limit: usize) -> Result<Vec<RunRow>> {
        self.select(
            "SELECT run_id, job, started, seconds, outcome, report FROM runs
             WHERE ?1 IS NULL OR job = ?1 ORDER BY julianday(started) DESC, run_id DESC
             LIMIT ?2",
            params![job, limit as i64],
        )
    }

    /// The latest run of each job, by job name.
    pub fn latest_per_job(&self) -> Result<Vec<RunRow>> {
        self.select(
            "SELECT run_id, job, started, seconds, outcome, report FROM runs r
             WHERE run_id = (SELECT run_id FROM runs WHERE job = r.job
                             ORDER BY julianday(started) DESC, run_id DESC LIMIT 1)
             ORDER BY job",
            [],
        )
    }

    /// When the job's latest successful run started.
    pub fn last_success(&self, job: &str) -> Result<Option<String>> {
        let path = self.dir.join("history.db");
        let mut st = self
            .db
            .prepare(
                "SELECT started FROM runs WHERE job = ?1 AND outcome = 'success'
                 ORDER BY julianday(started) DESC LIMIT 1",
            )
            .map_err(sql_err(&path))?;
        let mut rows = st
            .query_map(params![job], |row| row.get::<_, String>(0))
            .map_err(sql_err(&path))?;
        rows.next().transpose().map_err(sql_err(&path))
    }

    /// How many runs each job had, by outcome.
    pub fn counts(&self) -> Result<Vec<(String, String, u64)>> {
        let path = self.dir.join("history.db");
        let mut st = self
            .db
            .prepare(
                "SELECT job, outcome, COUNT(*) FROM runs GROUP BY job, outcome
                 ORDER BY job, outcome",
            )
            .map_err(sql_err(&path))?;
        let rows = st
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as u64))
            })
            .map_err(sql_err(&path))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(sql_err(&path))
    }

    fn select(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<RunRow>> {
        let path = self.dir.join("history.db");
        let mut st = self.db.prepare(sql).map_err(sql_err(&path))?;
        let rows = st
            .query_map(p, |row| {
                let report: String = row.get(5)?;
                Ok(RunRow {
                    run_id: row.get(0)?,
                    job: row.get(1)?,
                    started: row.get(2)?,
                    seconds: row.get(3)?,
                    outcome: row.get(4)?,
                    added: Vec::new(),
                    report: serde_json::from_str(&report).unwrap_or_default(),
                })
            })
            .map_err(sql_err(&path))?;
        let mut out = Vec::new();
        for r in rows {
            let mut r = r.map_err(sql_err(&path))?;
            if let Some(steps) = r.report["steps"].as_array() {
                r.added = steps
                    .iter()
                    .filter_map(|s| {
                        let name = s["name"].as_str()?.strip_prefix("backup ")?;
                        Some((name.to_string(), s["bytes_added"].as_u64().unwrap_or(0)))
                    })
                    .collect();
            }
            out.push(r);
        }
        Ok(out)
    }
}

/// An RFC 3339 time of the history as Unix seconds.
pub fn unix_seconds(rfc3339: &str) -> Option<f64> {
    rfc3339
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_nanosecond() as f64 / 1e9)
}

/// The latest step named `name` of any run: its run's start (RFC 3339), its outcome and
/// error.
#[derive(Debug, Clone)]
pub struct LastStep {
    pub started: String,
    pub outcome: String,
    pub error: Option<String>,
}

impl History {
    /// The daemon's last fire time of schedule `key` (`job nightly`, `health`, ...).
    pub fn fire(&self, key: &str) -> Result<Option<jiff::Timestamp>> {
        let path = self.dir.join("history.db");
        let mut st = self
            .db
            .prepare("SELECT at FROM fires WHERE schedule = ?1")
            .map_err(sql_err(&path))?;
        let mut rows = st
            .query_map(params![key], |row| row.get::<_, String>(0))
            .map_err(sql_err(&path))?;
        Ok(rows
            .next()
            .transpose()
            .map_err(sql_err(&path))?
            .and_then(|t| t.parse().ok()))
    }

    pub fn set_fire(&mut self, key: &str, at: jiff::Timestamp) -> Result<()> {
        let path = self.dir.join("history.db");
        self.db
            .execute(
                "INSERT OR REPLACE INTO fires VALUES (?1, ?2)",
                params![key, at.to_string()],
            )
            .map_err(sql_err(&path))?;
        Ok(())
    }

    /// Record a `cairn check` of the configuration's repository `repository` outside a run.
    pub fn record_check(
        &mut self,
        repository: &str,
        started: jiff::Timestamp,
        ok: bool,
        error: Option<&str>,
    ) -> Result<()> {
        let path = self.dir.join("history.db");
        self.db
            .execute(
                "INSERT INTO checks VALUES (?1, ?2, ?3, ?4)",
                params![
                    repository,
                    started.to_string(),
                    if ok { "success" } else { "failure" },
                    error
                ],
            )
            .map_err(sql_err(&path))?;
        Ok(())
    }

    /// The latest check of repository `name`: a job's step `check NAME` or a `cairn check`.
    pub fn last_check(&self, name: &str) -> Result<Option<LastStep>> {
        let path = self.dir.join("history.db");
        let mut st = self
            .db
            .prepare(
                "SELECT started, outcome, error FROM (
                     SELECT r.started AS started, s.outcome AS outcome, s.error AS error
                         FROM steps s JOIN runs r USING (run_id) WHERE s.name = 'check ' || ?1
                     UNION ALL
                     SELECT started, outcome, error FROM checks WHERE repository = ?1)
                 ORDER BY julianday(started) DESC LIMIT 1",
            )
            .map_err(sql_err(&path))?;
        let mut rows = st
            .query_map(params![name], |row| {
                Ok(LastStep {
                    started: row.get(0)?,
                    outcome: row.get(1)?,
                    error: row.get(2)?,
                })
            })
            .map_err(sql_err(&path))?;
        rows.next().transpose().map_err(sql_err(&path))
    }
}

/// One run of a job at a time: an exclusive `flock` on `job-NAME.lock`, held until dropped.
pub struct JobLock {
    _file: std::fs::File,
}

impl JobLock {
    /// Take the lock; if another run holds it, wait up to `wait` (checking twice a second).
    pub fn acquire(dir: &Path, job: &str, wait: std::time::Duration) -> Result<JobLock> {
        private_dir(dir)?;
        let path = dir.join(format!("job-{job}.lock"));
        let file = private_file(&path, false)?;
        let started = std::time::Instant::now();
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(JobLock { _file: file }),
                Err(rustix::io::Errno::WOULDBLOCK) if started.elapsed() < wait => {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(Error::Locked(format!(
                        "another run of job {job} is in progress (it holds {}); use --wait to \
                         wait for it",
                        path.display()
                    )));
                }
                Err(e) => return Err(Error::io(&path, e.into())),
            }
        }
    }
}

/// A problem the notifications have told of and not yet seen recover.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// What it is about: `job nightly`, `health freshness db@local`, ...
    pub subject: String,
    /// The event's kind (`failure`, `health`, ...).
    pub kind: String,
    /// When it was first seen.
    pub since: jiff::Timestamp,
    /// When it was last sent.
    pub sent: jiff::Timestamp,
    /// How often it was seen again since then and held back.
    pub held: u64,
}

impl History {
    pub fn notice(&self, subject: &str) -> Result<Option<Notice>> {
        let path = self.dir.join("history.db");
        let mut st = self
            .db
            .prepare("SELECT subject, kind, since, sent, held FROM notices WHERE subject = ?1")
            .map_err(sql_err(&path))?;
        let mut rows = st
            .query_map(params![subject], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .map_err(sql_err(&path))?;
        let Some((subject, kind, since, sent, held)) =
            rows.next().transpose().map_err(sql_err(&path))?
        else {
            return Ok(None);
        };
        let time = |t: &str| {
            t.parse::<jiff::Timestamp>().map_err(|e| Error::Catalog {
                path: path.clone(),
                message: format!("notice {subject}: time {t:?}: {e}"),
            })
        };
        Ok(Some(Notice {
            since: time(&since)?,
            sent: time(&sent)?,
            subject,
            kind,
            held: held.max(0) as u64,
        }))
    }

    pub fn set_notice(&mut self, n: &Notice) -> Result<()> {
        let path = self.dir.join("history.db");
        self.db
            .execute(
                "INSERT OR REPLACE INTO notices VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    n.subject,
                    n.kind,
                    n.since.to_string(),
                    n.sent.to_string(),
                    n.held as i64
                ],
            )
            .map_err(sql_err(&path))?;
        Ok(())
    }

    pub fn clear_notice(&mut self, subject: &str) -> Result<()> {
        let path = self.dir.join("history.db");
        self.db
            .execute("DELETE FROM notices WHERE subject = ?1", params![subject])
            .map_err(sql_err(&path))?;
        Ok(())
    }

    /// Every problem told of and not yet recovered, oldest first.
    pub fn notices(&self) -> Result<Vec<String>> {
        let path = self.dir.join("history.db");
        let mut st = self
            .db
            .prepare("SELECT subject FROM notices ORDER BY since")
            .map_err(sql_err(&path))?;
        let rows = st
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(sql_err(&path))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql_err(&path))
    }
}
