//! `cairn drill`: a restore test that measures the recovery time (issue 16, item 5).
//!
//! Each snapshot given is restored into scratch space: a files snapshot into a temporary
//! directory with every file verified against the snapshot (its length and every chunk's
//! id); a MySQL snapshot into a throwaway server that the drill starts itself
//! ([`ScratchServer`]; or a scratch database `cairn_drill_<db>_<random>` on an existing
//! server, dropped afterwards), after which every table is dumped again with the backup's
//! options and its row count and checksum compared with those recorded at backup time
//! (`mysql.rows:`, `mysql.checksum:`), and `CHECK TABLE` run. What differs is reported, naming
//! the file or table; the times to a complete file tree and to a usable database are measured
//! against the target. Scratch space is removed on every exit path (the guards' `Drop`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mysql::{MysqlRestoreOptions, restore_to_server};
use super::restore::{RestoreOptions, restore};
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::id::Id;
use crate::repo::Repository;
use crate::source::mysql::scratch::ScratchServer;
use crate::source::mysql::{self as src, Connection, DumpOptions, Tools, encode_name, sql_ident};

/// One snapshot to drill.
#[derive(Debug, Clone)]
pub struct DrillTarget {
    /// The source it is of (a job's source name).
    pub source: String,
    pub id: Id,
    pub snapshot: Snapshot,
}

#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// The recovery time objective.
    pub rto: Duration,
    /// An existing server to restore into (scratch databases) instead of a throwaway one.
    pub server: Option<Connection>,
    pub lease_wait: Duration,
    /// A test hook: SQL run in each restored database after it is loaded and before it is
    /// checked, to alter the data (the binary sets it in debug builds only).
    pub after_load_sql: Option<String>,
}

/// A table as the drill found it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableDrill {
    pub database: String,
    pub table: String,
    pub rows_expected: Option<u64>,
    pub rows: Option<u64>,
    pub checksum_expected: Option<String>,
    pub checksum: Option<String>,
    /// `CHECK TABLE` said OK.
    pub check_ok: bool,
    pub ok: bool,
}

/// A snapshot as the drill found it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceDrill {
    pub source: String,
    pub snapshot: String,
    /// "files" or "mysql".
    pub kind: String,
    pub seconds: f64,
    pub files: u64,
    pub verified_files: u64,
    pub bytes: u64,
    pub tables: Vec<TableDrill>,
    /// What differs or failed, each naming its file or table.
    pub problems: Vec<String>,
}

/// What the drill found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrillReport {
    pub ok: bool,
    pub rto_seconds: f64,
    /// From the start to a complete, verified file tree (`None`: no files snapshot).
    pub files_seconds: Option<f64>,
    /// From the start to every database loaded and usable (`None`: no database snapshot).
    pub database_seconds: Option<f64>,
    /// Both (the drill restores one after the other): the recovery time.
    pub recovery_seconds: f64,
    pub within_rto: bool,
    pub sources: Vec<SourceDrill>,
}

impl DrillReport {
    /// Every problem, prefixed by its source.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .sources
            .iter()
            .flat_map(|s| s.problems.iter().map(move |p| format!("{}: {p}", s.source)))
            .collect();
        if !self.within_rto {
            out.push(format!(
                "recovery took {:.1}s, more than the target of {:.1}s",
                self.recovery_seconds, self.rto_seconds
            ));
        }
        out
    }
}

/// A directory removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Scratch databases on an existing server, dropped when this is.
struct ScratchDatabases {
    client: PathBuf,
    conn: Connection,
    names: Vec<String>,
}

impl Drop for ScratchDatabases {
    fn drop(&mut self) {
        for n in &self.names {
            let sql = format!("DROP DATABASE IF EXISTS {}", sql_ident(n));
            if let Err(e) = src::query(&self.client, &self.conn, &sql) {
                tracing::warn!("could not drop the scratch database {n}: {e}");
            }
        }
    }
}

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

fn meta<'a>(snap: &'a Snapshot, key: &str) -> Option<&'a str> {
    snap.meta
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn blocking_failed(e: tokio::task::JoinError) -> Error {
    src::failed("a drill task did not finish", e.to_string())
}

/// Drill `targets` (files and MySQL snapshots of one repository).
pub async fn drill(
    repo: &Arc<Repository>,
    targets: &[DrillTarget],
    opts: &DrillOptions,
) -> Result<DrillReport> {
    let start = Instant::now();
    let mut sources = Vec::new();
    let (mut files_seconds, mut database_seconds) = (None, None);
    let files: Vec<&DrillTarget> = targets
        .iter()
        .filter(|t| t.snapshot.source != "mysql")
        .collect();
    let dbs: Vec<&DrillTarget> = targets
        .iter()
        .filter(|t| t.snapshot.source == "mysql")
        .collect();
    if !files.is_empty() {
        let mut r = [0u8; 4];
        crate::crypto::fill_random(&mut r);
        let dir = ScratchDir(std::env::temp_dir().join(format!(
            "cairn-drill-files-{}-{}",
            std::process::id(),
            hex::encode(r)
        )));
        for t in files {
            sources.push(drill_files(repo, t, &dir.0.join(encode_name(&t.source)), opts).await);
        }
        files_seconds = Some(start.elapsed().as_secs_f64());
    }
    if !dbs.is_empty() {
        let db_start = Instant::now();
        let client = Tools::find_client(None)?;
        let mut server = None;
        let conn = match &opts.server {
            Some(c) => c.clone(),
            None => match ScratchServer::start(&client).await {
                Ok(s) => {
                    let conn = s.connection().clone();
                    server = Some(s);
                    conn
                }
                Err(e) => return Err(src::context(e, "starting the throwaway server")),
            },
        };
        let mut scratch = ScratchDatabases {
            client: client.clone(),
            conn: conn.clone(),
            names: Vec::new(),
        };
        let mut loaded = Vec::new();
        for t in &dbs {
            let mut s = SourceDrill {
                source: t.source.clone(),
                snapshot: t.id.to_string(),
                kind: "mysql".into(),
                seconds: 0.0,
                files: 0,
                verified_files: 0,
                bytes: 0,
                tables: Vec::new(),
                problems: Vec::new(),
            };
            let started = Instant::now();
            let names: Vec<String> = meta(&t.snapshot, "mysql.databases")
                .unwrap_or("")
                .split(',')
                .filter(|d| !d.is_empty())
                .map(String::from)
                .collect();
            let mut targets_of = Vec::new();
            for db in names {
                let into = match opts.server {
                    Some(_) => {
                        let mut r = [0u8; 3];
                        crate::crypto::fill_random(&mut r);
                        format!("cairn_drill_{db}_{}", hex::encode(r))
                    }
                    None => db.clone(),
                };
                scratch.names.push(into.clone());
                let o = MysqlRestoreOptions {
                    conn: conn.clone(),
                    database: Some(db.clone()),
                    into: Some(into.clone()),
                    ..Default::default()
                };
                match restore_to_server(repo, &t.snapshot, &o).await {
                    Ok(r) => {
                        s.bytes += r.bytes;
                        targets_of.push((db, into));
                    }
                    Err(e) => s.problems.push(format!(
                        "database {}: restore failed: {}",
                        sql_ident(&db),
                        chain(&e)
                    )),
                }
            }
            s.seconds = started.elapsed().as_secs_f64();
            loaded.push((s, *t, targets_of));
        }
        if opts.server.is_none() {
            // Scratch databases on the throwaway server go with it.
            scratch.names.clear();
        }
        database_seconds = Some(db_start.elapsed().as_secs_f64());
        for (mut s, t, targets_of) in loaded {
            for (db, into) in targets_of {
                if let Some(sql) = &opts.after_load_sql {
                    let sql = format!("USE {}; {sql}", sql_ident(&into));
                    if let Err(e) = src::query(&client, &conn, &sql) {
                        s.problems
                            .push(format!("the test hook failed: {}", chain(&e)));
                    }
                }
                let (c2, conn2, snap) = (client.clone(), conn.clone(), t.snapshot.clone());
                let tables = tokio::task::spawn_blocking(move || {
                    verify_database(&c2, &conn2, &snap, &db, &into)
                })
                .await
                .map_err(blocking_failed)?;
                match tables {
                    Ok(tables) => {
                        for tb in &tables {
                            if !tb.ok {
                                s.problems.push(describe(tb));
                            }
                        }
                        s.tables.extend(tables);
                    }
                    Err(e) => s.problems.push(chain(&e)),
                }
            }
            sources.push(s);
        }
        drop(scratch);
        drop(server);
    }
    let rto = opts.rto.as_secs_f64();
    // One after the other: the whole recovery is both.
    let recovery = files_seconds.unwrap_or(0.0) + database_seconds.unwrap_or(0.0);
    let within_rto = recovery <= rto;
    let ok = within_rto && sources.iter().all(|s| s.problems.is_empty());
    Ok(DrillReport {
        ok,
        rto_seconds: rto,
        files_seconds,
        database_seconds,
        recovery_seconds: recovery,
        within_rto,
        sources,
    })
}

/// The checksum matches the one recorded at backup time, or none was recorded (a snapshot
/// from before checksums were).
fn checksum_ok(found: &Option<String>, expected: &Option<String>) -> bool {
    expected.is_none() || found == expected
}

fn describe(t: &TableDrill) -> String {
    let name = format!("table {}.{}", sql_ident(&t.database), sql_ident(&t.table));
    let mut why = Vec::new();
    if t.rows != t.rows_expected {
        why.push(format!(
            "{} rows, the snapshot recorded {}",
            t.rows.map_or("no".into(), |r| r.to_string()),
            t.rows_expected.map_or("none".into(), |r| r.to_string())
        ));
    }
    if !checksum_ok(&t.checksum, &t.checksum_expected) {
        why.push(format!(
            "checksum {} differs from the one recorded at backup time ({})",
            t.checksum.as_deref().unwrap_or("none"),
            t.checksum_expected.as_deref().unwrap_or("none")
        ));
    }
    if !t.check_ok {
        why.push("CHECK TABLE did not say OK".into());
    }
    format!("{name}: {}", why.join("; "))
}

/// Dump database `into` again with the backup's options and compare each table of `db` in
/// the snapshot; `CHECK TABLE` each.
fn verify_database(
    client: &Path,
    conn: &Connection,
    snap: &Snapshot,
    db: &str,
    into: &str,
) -> Result<Vec<TableDrill>> {
    let tools = Tools::find(None, Some(client))?;
    let version = tools.dump_version()?;
    let opts = DumpOptions {
        databases: vec![into.to_string()],
        mariadb: version.contains("MariaDB"),
        insert_bytes: meta(snap, "mysql.insert_bytes").and_then(|v| v.parse().ok()),
        ..Default::default()
    };
    let found = src::table_checksums(&tools, conn, &opts)
        .map_err(|e| src::context(e, format!("dumping the restored {}", sql_ident(db))))?;
    let prefix = format!("mysql.rows:{}/", encode_name(db));
    let mut out = Vec::new();
    for (k, v) in &snap.meta {
        let Some(enc) = k.strip_prefix(&prefix) else {
            continue;
        };
        let table = src::decode_name(enc);
        let rows_expected = v.parse().ok();
        let checksum_expected =
            meta(snap, &format!("mysql.checksum:{}/{enc}", encode_name(db))).map(String::from);
        let (rows, checksum) = match found.get(&table) {
            Some((r, c)) => (Some(*r), Some(hex::encode(c))),
            None => (None, None),
        };
        let check = src::query(
            client,
            conn,
            &format!("CHECK TABLE {}.{}", sql_ident(into), sql_ident(&table)),
        );
        let check_ok = match check {
            Ok(rows) => {
                !rows.is_empty()
                    && rows.iter().all(|r| {
                        let kind = r.get(2).map(|s| s.to_lowercase()).unwrap_or_default();
                        let text = r.get(3).map(String::as_str).unwrap_or("");
                        kind != "error"
                            && (kind != "status"
                                || text == "OK"
                                || text == "Table is already up to date")
                    })
            }
            Err(_) => false,
        };
        // A snapshot taken before checksums were recorded is compared by its rows alone.
        let ok = rows == rows_expected && checksum_ok(&checksum, &checksum_expected) && check_ok;
        out.push(TableDrill {
            database: db.to_string(),
            table,
            rows_expected,
            rows,
            checksum_expected,
            checksum,
            check_ok,
            ok,
        });
    }
    Ok(out)
}

async fn drill_files(
    repo: &Arc<Repository>,
    t: &DrillTarget,
    target: &Path,
    opts: &DrillOptions,
) -> SourceDrill {
    let started = Instant::now();
    let mut s = SourceDrill {
        source: t.source.clone(),
        snapshot: t.id.to_string(),
        kind: "files".into(),
        seconds: 0.0,
        files: 0,
        verified_files: 0,
        bytes: 0,
        tables: Vec::new(),
        problems: Vec::new(),
    };
    let o = RestoreOptions {
        verify: true,
        lease_wait: opts.lease_wait,
        ..Default::default()
    };
    match restore(repo, &t.snapshot, "/", target, &o).await {
        Ok(r) => {
            s.files = r.files;
            s.verified_files = r.verified_files;
            s.bytes = r.bytes;
            s.problems.extend(r.errors.iter().map(|e| {
                // Name the file as the snapshot has it, not the scratch path.
                let base = target.display().to_string();
                e.replace(&base, "")
            }));
            if r.errors.is_empty() && r.verified_files != r.files {
                s.problems.push(format!(
                    "{} files restored but {} verified",
                    r.files, r.verified_files
                ));
            }
        }
        Err(e) => s.problems.push(format!("restore failed: {}", chain(&e))),
    }
    s.seconds = started.elapsed().as_secs_f64();
    s
}

#[cfg(test)]
mod checksum_tests {
    use super::checksum_ok;

    #[test]
    fn a_snapshot_without_a_recorded_checksum_is_compared_by_rows_alone() {
        let some = |s: &str| Some(s.to_string());
        assert!(checksum_ok(&some("ab"), &some("ab")));
        assert!(!checksum_ok(&some("ab"), &some("cd")));
        assert!(!checksum_ok(&None, &some("cd")));
        assert!(checksum_ok(&some("ab"), &None));
        assert!(checksum_ok(&None, &None));
    }
}
