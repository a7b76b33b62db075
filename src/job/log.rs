//! A run's log: one text file per run, `logs/RUN_ID.log` in the state directory, written as
//! the run goes (so `cairn logs --follow` can watch it): each step's start and end with its
//! error and causes, and every line the hooks print. Created mode 0600 in a 0700 directory.
//! It holds no secret: hooks never see the repository password, and errors never contain one.
//!
//! The first line is `... run RUN_ID of job JOB started (pid PID)`, the last `... run RUN_ID
//! ended: OUTCOME`; a log without that last line belongs to a run in progress (its process is
//! alive) or one that was killed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// How many run logs are kept; older ones are deleted when a run starts.
pub const KEEP_LOGS: usize = 400;

/// The directory of the run logs under a state directory.
pub fn logs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("logs")
}

/// The log of run `run_id`.
pub fn log_path(state_dir: &Path, run_id: &str) -> PathBuf {
    logs_dir(state_dir).join(format!("{run_id}.log"))
}

/// The run ids that have a log, oldest first (run ids sort by their start time).
pub fn list(state_dir: &Path) -> Result<Vec<String>> {
    let dir = logs_dir(state_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .map(str::to_string)
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// The run whose log was written last (a run in progress, or the latest to end).
pub fn latest(state_dir: &Path) -> Result<Option<String>> {
    let mut best: Option<(std::time::SystemTime, String)> = None;
    for id in list(state_dir)? {
        let Ok(m) = std::fs::metadata(log_path(state_dir, &id)).and_then(|m| m.modified()) else {
            continue;
        };
        // Ties (two runs in one clock tick) go to the later id.
        if best.as_ref().is_none_or(|(t, _)| m >= *t) {
            best = Some((m, id));
        }
    }
    Ok(best.map(|(_, id)| id))
}

/// The line that ends a finished run's log.
pub fn is_end_line(line: &str, run_id: &str) -> bool {
    line.split_once(' ')
        .is_some_and(|(_, rest)| rest.starts_with(&format!("run {run_id} ended: ")))
}

/// The process that writes a log, from its first line.
pub fn writer_pid(first_line: &str) -> Option<u32> {
    let rest = first_line.rsplit_once("(pid ")?.1;
    rest.strip_suffix(')')?.parse().ok()
}

/// Whether process `pid` is alive.
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// An open run log. Writing never fails the run: a line that cannot be written is dropped
/// (and said once in the process log).
pub struct RunLog {
    file: Mutex<Option<std::fs::File>>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for RunLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLog").field("path", &self.path).finish()
    }
}

impl RunLog {
    /// A log that writes nowhere (dry runs, library callers without a state directory).
    pub fn none() -> RunLog {
        RunLog {
            file: Mutex::new(None),
            path: None,
        }
    }

    /// Create the log of `run_id` under `state_dir`, and delete the oldest logs beyond
    /// [`KEEP_LOGS`].
    pub fn create(state_dir: &Path, run_id: &str) -> Result<RunLog> {
        let dir = logs_dir(state_dir);
        super::history::private_dir(&dir)?;
        let path = log_path(state_dir, run_id);
        let file = super::history::private_file(&path, true)?;
        if let Ok(ids) = list(state_dir) {
            for old in ids.iter().take(ids.len().saturating_sub(KEEP_LOGS)) {
                let _ = std::fs::remove_file(log_path(state_dir, old));
            }
        }
        Ok(RunLog {
            file: Mutex::new(Some(file)),
            path: Some(path),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Append one line (or several, each stamped) with the current time.
    pub fn line(&self, text: &str) {
        let Ok(mut guard) = self.file.lock() else {
            return;
        };
        let Some(f) = guard.as_mut() else {
            return;
        };
        let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ");
        let mut buf = String::new();
        for l in text.lines() {
            buf.push_str(&format!("{now} {l}\n"));
        }
        if let Err(e) = f.write_all(buf.as_bytes()) {
            tracing::warn!(
                "could not write the run log {}: {e}; it stops here",
                self.path.as_deref().unwrap_or(Path::new("?")).display()
            );
            *guard = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_stamped_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let log = RunLog::create(d.path(), "20261203T020000Z-abcd").unwrap();
        log.line("run 20261203T020000Z-abcd of job nightly started (pid 4242)");
        log.line("two\nlines");
        log.line("run 20261203T020000Z-abcd ended: success");
        let path = log.path().unwrap().to_path_buf();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].ends_with(" two") && lines[2].ends_with(" lines"));
        assert!(lines[0].starts_with("20") && lines[0].contains("Z run "));
        assert_eq!(writer_pid(lines[0]), Some(4242));
        assert_eq!(writer_pid(lines[1]), None);
        assert!(alive(std::process::id()));
        assert!(is_end_line(lines[3], "20261203T020000Z-abcd"));
        assert!(!is_end_line(lines[0], "20261203T020000Z-abcd"));
        assert!(!is_end_line(lines[3], "20261203T020000Z-ffff"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(logs_dir(d.path()))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert_eq!(list(d.path()).unwrap(), vec!["20261203T020000Z-abcd"]);
    }

    #[test]
    fn old_logs_are_deleted() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..KEEP_LOGS + 3 {
            RunLog::create(d.path(), &format!("2026{i:06}")).unwrap();
        }
        let ids = list(d.path()).unwrap();
        // The newest run's log is created before the cleanup, so KEEP_LOGS remain.
        assert_eq!(ids.len(), KEEP_LOGS);
        assert_eq!(ids[0], format!("2026{:06}", 3));
    }
}
