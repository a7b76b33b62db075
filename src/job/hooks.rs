//! A job's hooks: shell commands (`sh -c`) with the run in their environment, a timeout that
//! kills the hook and everything it started, and their output in the run's log.

use std::time::Duration;

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::RunReport;
use super::log::RunLog;
use crate::error::{Error, Result};

/// The default time a hook may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

pub struct Hooks {
    run_id: String,
    job: String,
    timeout: Duration,
    log: Arc<RunLog>,
    shutdown: Option<crate::repo::lease::Shutdown>,
}

impl Hooks {
    pub fn new(
        cfg: &crate::config::Hooks,
        run_id: &str,
        job: &str,
        log: Arc<RunLog>,
        shutdown: Option<crate::repo::lease::Shutdown>,
    ) -> Hooks {
        Hooks {
            run_id: run_id.to_string(),
            job: job.to_string(),
            timeout: cfg.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0),
            log,
            shutdown,
        }
    }

    /// Run `commands` in order; the first that fails (or times out) ends the list.
    pub async fn run_all(
        &self,
        which: &str,
        commands: &[String],
        report: &RunReport,
        stdin: Option<&[u8]>,
    ) -> Result<()> {
        for (i, c) in commands.iter().enumerate() {
            self.run_one(&format!("{which}[{i}]"), c, report, stdin)
                .await?;
        }
        Ok(())
    }

    async fn run_one(
        &self,
        label: &str,
        command: &str,
        report: &RunReport,
        stdin: Option<&[u8]>,
    ) -> Result<()> {
        let outcome = super::outcome_word(report.outcome);
        let snapshots: Vec<String> = report
            .snapshots
            .iter()
            .map(|(s, id)| format!("{s}={id}"))
            .collect();
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .env("CAIRN_RUN_ID", &self.run_id)
            .env("CAIRN_JOB", &self.job)
            .env("CAIRN_OUTCOME", outcome)
            .env("CAIRN_SNAPSHOTS", snapshots.join(" "))
            // The repository's password is not a hook's business.
            .env_remove("CAIRN_PASSWORD")
            .env_remove("CAIRN_PASSWORD_FILE")
            .stdin(if stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Other(format!("hook {label}: could not run sh: {e}")))?;
        let pid = child.id();
        if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
            let data = data.to_vec();
            tokio::spawn(async move {
                let _ = w.write_all(&data).await;
            });
        }
        // The hook's output goes to the run's log (and the process log) line by line as it
        // comes, so `cairn logs --follow` shows a slow hook's progress.
        let pipe = |r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>,
                    stream: &'static str| {
            let log = self.log.clone();
            let label = label.to_string();
            async move {
                let Some(r) = r else { return };
                let mut lines = tokio::io::BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log.line(&format!("hook {label} {stream}: {line}"));
                    if stream == "stdout" {
                        tracing::info!("hook {label}: {line}");
                    } else {
                        tracing::warn!("hook {label}: {line}");
                    }
                }
            }
        };
        let out = child.stdout.take().map(|o| Box::new(o) as _);
        let err = child.stderr.take().map(|o| Box::new(o) as _);
        let finished = async {
            let (status, _, _) =
                tokio::join!(child.wait(), pipe(out, "stdout"), pipe(err, "stderr"));
            status
        };
        let stop = async {
            match &self.shutdown {
                Some(s) => s.requested().await,
                None => std::future::pending().await,
            }
        };
        let status = tokio::select! {
            r = tokio::time::timeout(self.timeout, finished) => r,
            _ = stop => {
                if let Some(pid) = pid {
                    // SAFETY: signalling a process group we created.
                    unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
                }
                return Err(Error::Interrupted);
            }
        };
        let status = match status {
            Ok(r) => r.map_err(|e| Error::Other(format!("hook {label}: {e}")))?,
            Err(_) => {
                // Kill the hook's whole process group: `sh -c 'sleep 100'` leaves a child.
                if let Some(pid) = pid {
                    // SAFETY: signalling a process group we created.
                    unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
                }
                return Err(Error::Other(format!(
                    "hook {label} ({command:?}) did not finish within {}s and was killed",
                    self.timeout.as_secs()
                )));
            }
        };
        if !status.success() {
            return Err(Error::Other(format!(
                "hook {label} ({command:?}) failed ({status})"
            )));
        }
        Ok(())
    }
}
