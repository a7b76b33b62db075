//! `cairn drill [JOB]`: restore the job's latest snapshots into scratch space, check them, and
//! measure the recovery time against the target (see `cairn::ops::drill`).

use anyhow::{Context, Result};
use clap::Args;

use cairn::job::history::History;
use cairn::ops::drill::DrillOptions;
use cairn::source::mysql::Connection;

use super::commands::{parse_duration, print_json};
use super::run::ConfigOpener;
use super::settings::Settings;

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The job (default: the configuration's only job).
    pub job: Option<String>,
    /// The recovery time objective: exit 1 if the recovery takes longer.
    #[arg(long, default_value = "30m", value_name = "DURATION")]
    pub rto: String,
    /// Restore the databases into scratch databases (cairn_drill_<db>_<random>, dropped
    /// afterwards) of this server, a socket path or HOST[:PORT], instead of a throwaway server
    /// (its password from CAIRN_MYSQL_PASSWORD or MYSQL_PWD).
    #[arg(long, value_name = "SOCKET|HOST[:PORT]")]
    pub server: Option<String>,
    /// The user on --server.
    #[arg(long, requires = "server")]
    pub server_user: Option<String>,
}

fn server_connection(spec: &str, user: Option<String>) -> Result<Connection> {
    let mut c = Connection {
        user,
        password: std::env::var("CAIRN_MYSQL_PASSWORD")
            .ok()
            .map(zeroize::Zeroizing::new),
        ..Default::default()
    };
    if spec.starts_with('/') {
        c.socket = Some(spec.into());
    } else {
        match spec.rsplit_once(':') {
            Some((h, p)) => {
                c.host = Some(h.to_string());
                c.port = Some(
                    p.parse()
                        .with_context(|| format!("--server {spec:?}: port"))?,
                );
            }
            None => c.host = Some(spec.to_string()),
        }
    }
    Ok(c)
}

/// `cairn drill`.
pub async fn drill(g: &Settings, a: DrillArgs) -> Result<i32> {
    let file = super::config::load(g)?;
    let name = super::run::job_name(file, a.job.as_deref())?;
    let opts = DrillOptions {
        rto: parse_duration(&a.rto).context("--rto")?,
        server: a
            .server
            .as_deref()
            .map(|s| server_connection(s, a.server_user.clone()))
            .transpose()?,
        lease_wait: g.lease_wait,
        // A test hook of debug builds: alter the restored data before it is checked.
        after_load_sql: if cfg!(debug_assertions) {
            std::env::var("CAIRN_TEST_DRILL_AFTER_LOAD").ok()
        } else {
            None
        },
    };
    let opener = ConfigOpener(g);
    let run = cairn::job::drill(&file.config, &name, &opener, &opts, Some(&g.state_dir));
    // SIGTERM as Ctrl-C (which cli::main handles): the drill's future is dropped, and with it
    // the throwaway server (killed) and the scratch directories (removed).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    let (report, d) = tokio::select! {
        r = run => r?,
        _ = term.recv() => return Err(anyhow::Error::new(cairn::Error::Interrupted)),
    };
    let notifier = cairn::job::notify::Notifier::new(&file.config.notify);
    if let Some(n) = &notifier {
        for line in n.notify(&g.state_dir, n.run_findings(&report)).await {
            report.log().line(&line);
        }
    }
    if let Err(e) = History::open(&g.state_dir).and_then(|mut h| h.record(&report)) {
        tracing::warn!("could not record the drill in the history: {e}");
    }
    if g.json {
        let mut v = serde_json::to_value(&d)?;
        v["run_id"] = report.run_id.clone().into();
        v["job"] = report.job.clone().into();
        v["problems"] = serde_json::to_value(d.problems())?;
        print_json(&v)?;
    } else if !g.quiet {
        println!(
            "drill {} of job {}: {}",
            report.run_id,
            name,
            if d.ok { "passed" } else { "FAILED" }
        );
        for s in &d.sources {
            let what = match s.kind.as_str() {
                "mysql" => format!("{} tables", s.tables.len()),
                _ => format!("{} files verified", s.verified_files),
            };
            println!(
                "  {:<20} {:>8.1}s  {what}, {}",
                s.source,
                s.seconds,
                super::output::bytes(s.bytes)
            );
        }
        if let Some(t) = d.files_seconds {
            println!("  time to a complete file tree: {t:.1}s");
        }
        if let Some(t) = d.database_seconds {
            println!("  time to a usable database:    {t:.1}s");
        }
        println!(
            "  recovery time {:.1}s, target {:.1}s: {}",
            d.recovery_seconds,
            d.rto_seconds,
            if d.within_rto { "met" } else { "MISSED" }
        );
    }
    for p in d.problems() {
        ewriteln!("cairn: drill: {p}");
    }
    Ok(if d.ok {
        super::EXIT_OK
    } else {
        super::EXIT_FAILURE
    })
}
