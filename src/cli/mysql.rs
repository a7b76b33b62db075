//! `cairn mysql backup` and `cairn mysql restore`: flags resolved into the library's options.
//! The database password comes from `CAIRN_MYSQL_PASSWORD` or `MYSQL_PWD` (or the user's
//! option file), never from the command line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use cairn::compress::Compression;
use cairn::ops::backup::BackupOptions;
use cairn::ops::mysql::{self, MysqlBackupOptions, MysqlRestoreOptions};
use cairn::ops::progress::Progress;
use cairn::repo::lease::LeaseMode;
use cairn::source::mysql::Connection;

use super::EXIT_OK;
use super::commands::{
    backup_json, open_repo, open_repo_for_source, parse_time, print_json, report_backup,
};
use super::output::ProgressBar;
use super::settings::Settings;

#[derive(Debug, Args)]
pub struct MysqlArgs {
    #[command(subcommand)]
    pub command: MysqlCommand,
}

#[derive(Debug, Subcommand)]
pub enum MysqlCommand {
    /// Back up databases table by table, from one consistent dump.
    Backup(MysqlBackupArgs),
    /// Load tables (or a whole database) from a snapshot into the server, or print their SQL.
    Restore(MysqlRestoreArgs),
}

/// How to reach the server (the password: CAIRN_MYSQL_PASSWORD or MYSQL_PWD, or the option
/// file).
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// Server host name or address.
    #[arg(long = "host")]
    pub db_host: Option<String>,
    /// Server TCP port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Server Unix socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Database user.
    #[arg(long)]
    pub user: Option<String>,
    /// Read client options from this file only (as the client tools' --defaults-file).
    #[arg(long)]
    pub defaults_file: Option<PathBuf>,
    /// The client (default: mariadb or mysql).
    #[arg(long)]
    pub client_binary: Option<PathBuf>,
    /// The largest row or statement the dump tool and the client accept, e.g. 256M (default
    /// 1G, their maximum; it overrides the option files, whose max_allowed_packet, 16M on
    /// Debian, would stop at the first larger row). The server has its own max_allowed_packet.
    #[arg(long, value_name = "SIZE", value_parser = super::args::parse_size)]
    pub max_allowed_packet: Option<u64>,
}

#[derive(Debug, Args)]
pub struct MysqlBackupArgs {
    /// Databases to back up, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "all_databases")]
    pub databases: Vec<String>,
    /// Every database but the server's own (mysql, sys, information_schema,
    /// performance_schema).
    #[arg(long)]
    pub all_databases: bool,
    /// Leave out a table, as database.table (repeatable).
    #[arg(long = "exclude-table", value_name = "DB.TABLE")]
    pub exclude_tables: Vec<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Host name to record in the snapshot (default: this machine's).
    #[arg(long)]
    pub snapshot_host: Option<String>,
    /// Snapshot time instead of now, "YYYY-MM-DD HH:MM:SS" in local time.
    #[arg(long)]
    pub time: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The dump tool (default: mariadb-dump or mysqldump).
    #[arg(long)]
    pub dump_binary: Option<PathBuf>,
    /// Average chunk size of the SQL streams in bytes (a power of two; default: the
    /// repository's dump chunker).
    #[arg(long)]
    pub chunk_avg: Option<u32>,
    /// Upper bound of one INSERT statement in bytes (the dump tool's --net-buffer-length).
    #[arg(long)]
    pub insert_bytes: Option<u32>,
    /// Also store users and their grants as mysql/_grants.sql (SHOW CREATE USER and SHOW
    /// GRANTS, loadable with the client; needs read access to mysql.user).
    #[arg(long)]
    pub grants: bool,
    /// Compression: off, auto, max or a zstd level 1-22.
    #[arg(long, default_value = "auto")]
    pub compression: String,
    /// Do everything but write to the repository.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct MysqlRestoreArgs {
    /// Snapshot: id prefix or "latest" (the latest MySQL snapshot).
    pub snapshot: String,
    /// A MySQL source of the configuration file: "latest" is its latest snapshot (in its
    /// job's repository unless -r says another), and its connection settings are used
    /// unless connection flags are given.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// The database in the snapshot.
    #[arg(long, required_unless_present = "grants")]
    pub database: Option<String>,
    /// Only this table (repeatable); default: the whole database.
    #[arg(long = "table", value_name = "TABLE", requires = "database")]
    pub tables: Vec<String>,
    /// Load into this database instead (created if missing).
    #[arg(long, requires = "database")]
    pub into: Option<String>,
    /// Load the users, roles and grants (mysql/_grants.sql, stored by `mysql backup
    /// --grants`), before the database if one is given. They are loaded as stored: they name
    /// the original databases, whatever --into says.
    #[arg(long)]
    pub grants: bool,
    /// Write the SQL to standard output instead of loading it (the grants first; with --into,
    /// it creates and uses that database).
    #[arg(long)]
    pub to_stdout: bool,
    /// Replace tables that already exist in the target database.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// With "latest": only snapshots of this host.
    #[arg(long = "snapshot-host")]
    pub snapshot_host: Option<String>,
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

pub async fn run(g: &Settings, a: MysqlArgs) -> Result<i32> {
    match a.command {
        MysqlCommand::Backup(b) => backup(g, b).await,
        MysqlCommand::Restore(r) => restore(g, r).await,
    }
}

fn connection(c: &ConnArgs) -> Connection {
    let password = std::env::var("CAIRN_MYSQL_PASSWORD")
        .ok()
        .or_else(|| std::env::var("MYSQL_PWD").ok())
        .filter(|p| !p.is_empty())
        .map(Zeroizing::new);
    Connection {
        host: c.db_host.clone(),
        port: c.port,
        socket: c.socket.clone(),
        user: c.user.clone(),
        defaults_file: c.defaults_file.clone(),
        password,
    }
}

async fn backup(g: &Settings, a: MysqlBackupArgs) -> Result<i32> {
    if a.databases.is_empty() && !a.all_databases {
        bail!("nothing to back up: give --databases a,b or --all-databases");
    }
    let progress = Arc::new(Progress::default());
    let opts = MysqlBackupOptions {
        backup: BackupOptions {
            tags: a.tags.clone(),
            host: a.snapshot_host.clone(),
            time: a.time.as_deref().map(parse_time).transpose()?,
            dry_run: a.dry_run,
            compression: a.compression.parse::<Compression>()?,
            progress: Some(progress.clone()),
            lease_wait: g.lease_wait,
            ..Default::default()
        },
        conn: connection(&a.conn),
        databases: a.databases.clone(),
        all_databases: a.all_databases,
        exclude_tables: a.exclude_tables.clone(),
        dump_binary: a.dump_binary.clone(),
        client_binary: a.conn.client_binary.clone(),
        chunk_avg: a.chunk_avg,
        insert_bytes: a.insert_bytes,
        grants: a.grants,
        max_allowed_packet: a.conn.max_allowed_packet,
    };
    let repo = open_repo(g).await?;
    let bar = ProgressBar::start(
        progress,
        g.quiet || g.json || !std::io::stderr().is_terminal(),
        "mysql backup",
    );
    let started = Instant::now();
    let result = mysql::backup(&repo, &opts).await;
    bar.finish().await;
    let outcome = result.context("mysql backup failed; no snapshot written")?;
    let took = started.elapsed();
    // Warnings go to stderr whatever the output (a closed stderr is no reason to fail).
    let mut err = std::io::stderr().lock();
    for w in &outcome.warnings {
        let _ = writeln!(err, "cairn: warning: {w}");
    }
    drop(err);
    if g.json {
        let mut doc = backup_json(&outcome.backup, took);
        let warnings: Vec<serde_json::Value> = outcome
            .warnings
            .iter()
            .map(|w| {
                let mut v = serde_json::to_value(w).unwrap_or_default();
                v["message"] = w.to_string().into();
                v
            })
            .collect();
        doc["warnings"] = warnings.into();
        print_json(&doc)?;
    } else {
        report_backup(g, &outcome.backup, took)?;
    }
    Ok(EXIT_OK)
}

async fn restore(g: &Settings, a: MysqlRestoreArgs) -> Result<i32> {
    // The source's connection, unless the command line gives one.
    let source = match &a.source {
        Some(name) => match g.source(name)? {
            cairn::config::SourceConfig::Mysql(m) => Some((name.as_str(), m)),
            _ => bail!("source {name} is not a MySQL source (kind = \"mysql\")"),
        },
        None => None,
    };
    let (repo, tags) = open_repo_for_source(g, a.source.as_deref(), &a.tags).await?;
    let (id, snap) = if a.snapshot == "latest" {
        repo.snapshots()?
            .into_iter()
            .rfind(|(_, s)| {
                s.source == mysql::SOURCE
                    && a.snapshot_host.as_ref().is_none_or(|h| &s.host == h)
                    && tags.iter().all(|t| s.tags.contains(t))
            })
            .with_context(|| match &a.source {
                Some(n) => format!("no MySQL snapshot of source {n} in the repository"),
                None => "no MySQL snapshot in the repository".to_string(),
            })?
    } else {
        repo.find_snapshot(&a.snapshot, a.snapshot_host.as_deref(), &tags)?
    };
    if snap.source != mysql::SOURCE {
        bail!(
            "snapshot {} is a {} snapshot, not a MySQL one",
            id.short(),
            snap.source
        );
    }
    let c = &a.conn;
    let flags_given = c.db_host.is_some()
        || c.port.is_some()
        || c.socket.is_some()
        || c.user.is_some()
        || c.defaults_file.is_some();
    let (conn, client_binary, packet) = match source {
        Some((name, m)) if !flags_given => {
            let mut conn = cairn::job::mysql_connection(name, m)?;
            if let Some(p) = connection(c).password {
                conn.password = Some(p);
            }
            (
                conn,
                c.client_binary.clone().or_else(|| m.client_binary.clone()),
                c.max_allowed_packet
                    .or_else(|| m.max_allowed_packet.map(|s| s.0)),
            )
        }
        _ => (connection(c), c.client_binary.clone(), c.max_allowed_packet),
    };
    let opts = MysqlRestoreOptions {
        conn,
        client_binary,
        database: a.database.clone(),
        tables: a.tables.clone(),
        into: a.into.clone(),
        force: a.force,
        grants: a.grants,
        max_allowed_packet: packet,
    };
    let started = Instant::now();
    // Read under a shared lease, so that no prune deletes what the restore is about to read.
    let wait = g.lease_wait;
    if a.to_stdout {
        repo.with_lease(LeaseMode::Read, "mysql restore", wait, |_| async {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            mysql::restore_to_writer(&repo, &snap, &opts, &mut out).await
        })
        .await?;
        return Ok(EXIT_OK);
    }
    let o = repo
        .with_lease(LeaseMode::Read, "mysql restore", wait, |_| {
            mysql::restore_to_server(&repo, &snap, &opts)
        })
        .await
        .with_context(|| format!("restoring from snapshot {}", id.short()))?;
    if g.json {
        print_json(&serde_json::json!({
            "snapshot_id": id,
            "database": o.database,
            "tables": o.tables,
            "schema": o.schema,
            "grants": o.grants,
            "replaced": o.replaced,
            "bytes": o.bytes,
            "seconds": started.elapsed().as_secs_f64(),
        }))?;
    } else if !g.quiet {
        if !o.replaced.is_empty() {
            ewriteln!("replaced existing tables: {}", o.replaced.join(", "));
        }
        let took = super::output::duration(started.elapsed());
        if o.grants {
            println!("restored the users, roles and grants");
        }
        if let Some(db) = &o.database {
            println!(
                "restored {} {} into database {db}{} in {took}",
                o.tables.len(),
                if o.tables.len() == 1 {
                    "table"
                } else {
                    "tables"
                },
                if o.schema {
                    " (with views, routines and events)"
                } else {
                    ""
                },
            );
        }
    }
    Ok(EXIT_OK)
}
