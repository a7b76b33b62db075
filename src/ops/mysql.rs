//! MySQL/MariaDB snapshots table by table (DESIGN.md §9, format-spec/mysql.md).
//!
//! **Backup** runs one `--single-transaction` dump of the chosen databases (so every table
//! comes from the same point in time), splits it by table as it streams, and stores each table
//! as its own file `mysql/<db>/<table>.sql` with line-aligned chunks: an unchanged table
//! costs nothing, a changed one costs the chunks around its changed rows. Each table file is
//! loadable on its own: the dump's session settings (header) and their reset (trailer) are
//! stored once and shared by every file's extents. Views, events and routines go to
//! `mysql/<db>/_schema.sql` with the CREATE DATABASE statement; triggers stay in their table's
//! file, because the table file drops and recreates the table, which drops its triggers.
//! A dump that fails in any way (the tool's exit status, a missing closing line, a database
//! missing from the output) writes no snapshot.
//!
//! **Restore** feeds one or more table files (or a whole database) to the standard client,
//! into the same or another database; it refuses to replace existing tables unless forced.
//!
//! Failures of the server or its tools are [`Error::Database`], whose [`DbErrorKind`] (read
//! from the tools' error numbers) tells a scheduler to retry later (`Unavailable`, a
//! `Transient` error) or to fix the configuration (`Config`, `InvalidInput`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::backup::{BackupOptions, BackupOutcome};
use super::read::{self, Resolved};
use super::streams::{self, Produced, StreamFile, StreamWriter};
use crate::chunker::{Chunker, ChunkerParams};
use crate::error::{DbErrorKind, Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Extent, Node, NodeKind};
use crate::repo::Repository;
use crate::source::mysql::split::{Section, Splitter};
use crate::source::mysql::{
    self as src, Connection, DumpOptions, DumpProcess, Tools, decode_name, encode_name, sql_ident,
    table_path,
};

/// The snapshot source kind of MySQL/MariaDB snapshots.
pub const SOURCE: &str = "mysql";

/// Something about the data that a restore may not give back as it was: each names the table
/// (and column) and its file in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MysqlWarning {
    /// The table's engine (MyISAM, Aria, MEMORY, ...) is not transactional: the dump's single
    /// transaction does not cover it, so its rows may be from another moment than the others'.
    NonTransactional {
        path: String,
        database: String,
        table: String,
        engine: String,
    },
    /// A FLOAT column: the dump writes it with 6 significant digits, so a restore may not give
    /// back the exact value.
    FloatColumn {
        path: String,
        database: String,
        table: String,
        column: String,
    },
}

impl std::fmt::Display for MysqlWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MysqlWarning::NonTransactional {
                database,
                table,
                engine,
                ..
            } => write!(
                f,
                "table {}.{} uses the {engine} engine, which is not transactional: the dump's \
                 single transaction does not cover it, so its rows may be from another moment \
                 than the other tables' (InnoDB tables are consistent)",
                sql_ident(database),
                sql_ident(table)
            ),
            MysqlWarning::FloatColumn {
                database,
                table,
                column,
                ..
            } => write!(
                f,
                "column {}.{}.{} is FLOAT: the dump writes it with 6 significant digits, so a \
                 restore may not give back the exact value (DOUBLE is dumped exactly)",
                sql_ident(database),
                sql_ident(table),
                sql_ident(column)
            ),
        }
    }
}

/// What `cairn mysql backup` did.
#[derive(Debug)]
pub struct MysqlBackupOutcome {
    pub backup: BackupOutcome,
    /// What a restore may not give back as it was, table by table.
    pub warnings: Vec<MysqlWarning>,
}

/// The warnings for what the server says of the databases dumped, leaving out `excluded`
/// (`db.table`) tables.
fn warnings(
    non_transactional: Vec<(String, String, String)>,
    floats: Vec<(String, String, String)>,
    excluded: &[String],
) -> Vec<MysqlWarning> {
    let kept = |db: &str, t: &str| !excluded.iter().any(|x| *x == format!("{db}.{t}"));
    let path = |db: &str, t: &str| format!("/{}", table_path(db, t).join("/"));
    let mut out: Vec<MysqlWarning> = non_transactional
        .into_iter()
        .filter(|(db, t, _)| kept(db, t))
        .map(|(database, table, engine)| MysqlWarning::NonTransactional {
            path: path(&database, &table),
            database,
            table,
            engine,
        })
        .collect();
    out.extend(floats.into_iter().filter(|(db, t, _)| kept(db, t)).map(
        |(database, table, column)| MysqlWarning::FloatColumn {
            path: path(&database, &table),
            database,
            table,
            column,
        },
    ));
    out
}

/// What `cairn mysql backup` does.
#[derive(Debug, Clone, Default)]
pub struct MysqlBackupOptions {
    pub backup: BackupOptions,
    pub conn: Connection,
    /// Databases to dump; empty with `all_databases` means every user database.
    pub databases: Vec<String>,
    pub all_databases: bool,
    /// `db.table` names to leave out.
    pub exclude_tables: Vec<String>,
    pub dump_binary: Option<PathBuf>,
    pub client_binary: Option<PathBuf>,
    /// Average chunk size of the SQL streams (a power of two); default: the repository's dump
    /// chunker. Minimum and maximum follow as a quarter and sixteen times it.
    pub chunk_avg: Option<u32>,
    /// Upper bound of one INSERT statement, in bytes (`--net-buffer-length`).
    pub insert_bytes: Option<u32>,
    /// Also store users and grants as `mysql/_grants.sql`.
    pub grants: bool,
    /// `--max-allowed-packet` for the dump tool; `None`: [`src::DEFAULT_MAX_ALLOWED_PACKET`].
    pub max_allowed_packet: Option<u64>,
}

/// The chunker for SQL streams: the repository's dump parameters (line-aligned), or the same
/// with another average size.
pub fn sql_chunker(repo: &Repository, avg: Option<u32>) -> Result<Chunker> {
    let Some(avg) = avg else {
        return Ok(repo.dump_chunker());
    };
    let params = ChunkerParams {
        min_size: (avg / 4).max(64),
        avg_size: avg,
        max_size: avg.saturating_mul(16).min(64 << 20),
        normalization: ChunkerParams::DUMPS.normalization,
        align_lines: true,
    };
    Chunker::new(params, repo.keys().gear_table())
        .map_err(|e| Error::invalid(format!("chunk size {avg}: {e} (use a power of two)")))
}

/// Back up databases as one snapshot.
pub async fn backup(
    repo: &Arc<Repository>,
    opts: &MysqlBackupOptions,
) -> Result<MysqlBackupOutcome> {
    for t in &opts.exclude_tables {
        if !t.contains('.') {
            return Err(Error::invalid(format!(
                "--exclude-table {t:?}: give it as database.table"
            )));
        }
    }
    if opts.all_databases && !opts.databases.is_empty() {
        return Err(Error::invalid(
            "give either --databases or --all-databases, not both",
        ));
    }
    if !opts.all_databases && opts.databases.is_empty() {
        return Err(Error::invalid(
            "nothing to back up: give --databases a,b or --all-databases",
        ));
    }
    let chunker = sql_chunker(repo, opts.chunk_avg)?;
    let tools = Tools::find(opts.dump_binary.as_deref(), opts.client_binary.as_deref())?;
    // Connect once before anything is written: a stopped server or a wrong password fails here,
    // with the client's own message.
    let pre = {
        let tools = tools.clone();
        let conn = opts.conn.clone();
        let all = opts.all_databases;
        let given = opts.databases.clone();
        let grants = opts.grants;
        tokio::task::spawn_blocking(move || -> Result<_> {
            let info = src::server_info(&tools.client, &conn)
                .map_err(|e| src::context(e, "connecting to the database server"))?;
            let dbs = if all {
                src::list_databases(&tools.client, &conn)
                    .map_err(|e| src::context(e, "listing the databases"))?
            } else {
                given
            };
            let version = tools.dump_version()?;
            // Accounts are not transactional data: read them just before the dump starts.
            let grants = match grants {
                true => Some(
                    src::dump_grants(&tools.client, &conn, info.version.contains("MariaDB"))
                        .map_err(|e| src::context(e, "reading the users and grants"))?,
                ),
                false => None,
            };
            let non_transactional = src::non_transactional_tables(&tools.client, &conn, &dbs)
                .map_err(|e| src::context(e, "listing the tables' engines"))?;
            let floats = src::float_columns(&tools.client, &conn, &dbs)
                .map_err(|e| src::context(e, "listing the FLOAT columns"))?;
            Ok((info, dbs, version, grants, (non_transactional, floats)))
        })
        .await
        .map_err(|e| task_failed("connecting to the database server", e))?
    };
    let (info, databases, tool_version, grants, (non_transactional, floats)) = pre?;
    let warnings = warnings(non_transactional, floats, &opts.exclude_tables);
    if databases.is_empty() {
        return Err(Error::invalid(
            "the server has no user databases to back up",
        ));
    }
    let dump_opts = DumpOptions {
        databases: databases.clone(),
        exclude_tables: opts.exclude_tables.clone(),
        binlog: info.log_bin,
        mariadb: tool_version.contains("MariaDB"),
        insert_bytes: opts.insert_bytes,
        max_allowed_packet: opts.max_allowed_packet,
    };
    let paths: Vec<String> = databases
        .iter()
        .map(|d| format!("mysql/{}", encode_name(d)))
        .collect();
    let conn = opts.conn.clone();
    let mut meta = vec![
        ("mysql.server_version".to_string(), info.version.clone()),
        ("mysql.dump_tool".to_string(), tool_version),
        (
            "mysql.chunk_avg".to_string(),
            chunker.params().avg_size.to_string(),
        ),
    ];
    if let Some(n) = opts.insert_bytes {
        meta.push(("mysql.insert_bytes".to_string(), n.to_string()));
    }
    streams::backup_streams(repo, &opts.backup, SOURCE, paths, chunker, move |w| {
        let (process, stdout) = DumpProcess::spawn(&tools, &conn, &dump_opts)?;
        let split = match split_dump(w, stdout) {
            Ok(s) => {
                process.finish()?;
                s
            }
            Err(e) => return Err(process.abort().unwrap_or(e)),
        };
        let mut produced = assemble(w, split, &dump_opts, meta)?;
        if let Some(g) = &grants {
            let (content, size) = w.store_bytes(g)?;
            produced.files.push(StreamFile {
                path: src::grants_path(),
                content,
                size,
            });
        }
        Ok(produced)
    })
    .await
    .map(|backup| MysqlBackupOutcome { backup, warnings })
}

/// A table as stored: its section's extents, length and rows.
struct TableStream {
    db: String,
    name: String,
    content: Vec<Extent>,
    size: u64,
    rows: u64,
    /// BLAKE3 over its INSERT statements (format-spec/mysql.md, "Table checksums").
    checksum: [u8; 32],
}

/// The dump, split.
struct SplitDump {
    header: Vec<u8>,
    trailer: Vec<u8>,
    schemas: BTreeMap<String, Vec<u8>>,
    tables: Vec<TableStream>,
    info: src::split::DumpInfo,
}

fn io_err(e: std::io::Error) -> Error {
    Error::Database {
        what: "reading the dump".into(),
        kind: DbErrorKind::Failed,
        detail: String::new(),
        source: Some(Box::new(e)),
    }
}

/// A blocking task that did not finish (it panicked or the runtime is shutting down).
fn task_failed(what: &str, e: tokio::task::JoinError) -> Error {
    Error::Database {
        what: what.into(),
        kind: DbErrorKind::Failed,
        detail: String::new(),
        source: Some(Box::new(e)),
    }
}

/// Read the dump, storing each table's section as it streams.
fn split_dump<R: Read>(w: &StreamWriter, stdout: R) -> Result<SplitDump> {
    let mut sp = Splitter::new(stdout);
    let mut out = SplitDump {
        header: Vec::new(),
        trailer: Vec::new(),
        schemas: BTreeMap::new(),
        tables: Vec::new(),
        info: Default::default(),
    };
    let mut db: Option<String> = None;
    let outside = |what: &str| src::failed(format!("the dump has {what} outside any database"), "");
    while let Some(section) = sp.next_section().map_err(io_err)? {
        match section {
            Section::Header => {
                sp.read_to_end(&mut out.header).map_err(io_err)?;
            }
            Section::Trailer => {
                sp.read_to_end(&mut out.trailer).map_err(io_err)?;
            }
            Section::Database(name) => {
                let mut buf = Vec::new();
                sp.read_to_end(&mut buf).map_err(io_err)?;
                // `USE db` would pin a restore to the original database.
                let kept = keep_lines(&buf, |l| !l.starts_with(b"USE `") && !replication(l));
                out.schemas.entry(name.clone()).or_default().extend(kept);
                db = Some(name);
            }
            Section::Schema => {
                let d = db.as_ref().ok_or_else(|| outside("views or routines"))?;
                let mut buf = Vec::new();
                sp.read_to_end(&mut buf).map_err(io_err)?;
                let kept = keep_lines(&buf, |l| !replication(l));
                out.schemas.entry(d.clone()).or_default().extend(kept);
            }
            Section::Table(name) => {
                let d = db.clone().ok_or_else(|| outside("a table"))?;
                tracing::info!("dumping {d}.{name}");
                let (content, size) = w.store_like(&mut sp, &table_path(&d, &name))?;
                out.tables.push(TableStream {
                    db: d,
                    name,
                    content,
                    size,
                    rows: sp.rows(),
                    checksum: sp.checksum(),
                });
            }
        }
    }
    out.info = sp.info().clone();
    Ok(out)
}

/// A comment with the replication position: recorded in the snapshot's metadata, and kept
/// out of the schema file, which would otherwise differ on every run.
fn replication(line: &[u8]) -> bool {
    line.starts_with(b"-- SET GLOBAL gtid_slave_pos=") || line.starts_with(b"-- CHANGE MASTER TO")
}

/// The lines of `data` for which `keep` holds.
fn keep_lines(data: &[u8], mut keep: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    data.split_inclusive(|&b| b == b'\n')
        .filter(|l| keep(l))
        .flatten()
        .copied()
        .collect()
}

/// The statements of a header or trailer (the `/*!...*/;` lines), without its comments.
fn statements(data: &[u8]) -> Vec<u8> {
    keep_lines(data, |l| l.starts_with(b"/*"))
}

/// Check the split dump and turn it into the snapshot's files and metadata.
fn assemble(
    w: &StreamWriter,
    split: SplitDump,
    opts: &DumpOptions,
    mut meta: Vec<(String, String)>,
) -> Result<Produced> {
    if !split.info.completed {
        return Err(src::failed(
            "the dump ended without its closing \"-- Dump completed\" line (cut short?)",
            "",
        ));
    }
    for d in &opts.databases {
        if !split.schemas.contains_key(d) {
            return Err(src::failed(
                format!("database {} is missing from the dump", sql_ident(d)),
                "",
            ));
        }
    }
    let mut pre_text = statements(&split.header);
    pre_text.push(b'\n');
    let mut post_text = b"\n".to_vec();
    post_text.extend(statements(&split.trailer));
    let (pre, pre_len) = w.store_bytes(&pre_text)?;
    let (post, post_len) = w.store_bytes(&post_text)?;
    let wrap = |content: Vec<Extent>, size: u64| -> (Vec<Extent>, u64) {
        let mut all = pre.clone();
        all.extend(content);
        all.extend(post.iter().copied());
        (all, pre_len + size + post_len)
    };
    let mut files = Vec::new();
    for (db, schema) in &split.schemas {
        let (content, size) = w.store_bytes(schema)?;
        let (content, size) = wrap(content, size);
        files.push(StreamFile {
            path: src::schema_path(db),
            content,
            size,
        });
    }
    let mut rows_total = 0u64;
    for t in split.tables {
        let key = format!("{}/{}", encode_name(&t.db), encode_name(&t.name));
        meta.push((format!("mysql.rows:{key}"), t.rows.to_string()));
        meta.push((format!("mysql.checksum:{key}"), hex::encode(t.checksum)));
        meta.push((format!("mysql.bytes:{key}"), t.size.to_string()));
        rows_total += t.rows;
        let (content, size) = wrap(t.content, t.size);
        files.push(StreamFile {
            path: table_path(&t.db, &t.name),
            content,
            size,
        });
    }
    meta.push(("mysql.databases".into(), opts.databases.join(",")));
    meta.push(("mysql.rows_total".into(), rows_total.to_string()));
    if let Some(f) = &split.info.binlog_file {
        meta.push(("mysql.binlog_file".into(), f.clone()));
    }
    if let Some(p) = split.info.binlog_position {
        meta.push(("mysql.binlog_position".into(), p.to_string()));
    }
    if let Some(g) = &split.info.gtid {
        meta.push(("mysql.gtid".into(), g.clone()));
    }
    Ok(Produced { files, meta })
}

/// What `cairn mysql restore` does.
#[derive(Debug, Clone, Default)]
pub struct MysqlRestoreOptions {
    pub conn: Connection,
    pub client_binary: Option<PathBuf>,
    /// The database in the snapshot; `None` with `grants` to restore only those.
    pub database: Option<String>,
    /// Tables to restore; empty: the whole database (tables, then views, routines, events).
    pub tables: Vec<String>,
    /// Restore into this database instead (created if missing).
    pub into: Option<String>,
    /// Replace tables that already exist.
    pub force: bool,
    /// Load the users, roles and grants (`mysql/_grants.sql`) first.
    pub grants: bool,
    /// `--max-allowed-packet` for the client; `None`: [`src::DEFAULT_MAX_ALLOWED_PACKET`].
    pub max_allowed_packet: Option<u64>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct MysqlRestoreOutcome {
    /// The database restored into (`None`: only grants).
    pub database: Option<String>,
    pub tables: Vec<String>,
    pub schema: bool,
    /// The users, roles and grants were loaded.
    pub grants: bool,
    pub bytes: u64,
    /// Tables that existed and were replaced (with `force`).
    pub replaced: Vec<String>,
}

impl MysqlRestoreOptions {
    fn check(&self) -> Result<()> {
        if self.database.is_none() {
            if !self.grants {
                return Err(Error::invalid(
                    "nothing to restore: give --database DB (and --table T), --grants, or both",
                ));
            }
            if !self.tables.is_empty() || self.into.is_some() {
                return Err(Error::invalid("--table and --into need --database"));
            }
        }
        Ok(())
    }
}

/// The users-and-grants file of a snapshot.
async fn grants_node(repo: &Repository, snap: &Snapshot) -> Result<Node> {
    let path = src::grants_path().join("/");
    match read::resolve(repo, snap, &path).await {
        Ok(Resolved::Node(n)) if n.kind == NodeKind::File => Ok(*n),
        Ok(_) => Err(missing_grants()),
        Err(e) if e.kind() == crate::error::ErrorKind::NotFound => Err(missing_grants()),
        Err(e) => Err(e),
    }
}

fn missing_grants() -> Error {
    Error::not_found(
        "users and grants in this snapshot (mysql/_grants.sql: `cairn mysql backup --grants` \
         stores them)",
    )
}

/// The files to restore: (table name or `None` for the schema, node).
async fn plan(
    repo: &Repository,
    snap: &Snapshot,
    database: &str,
    tables: &[String],
) -> Result<Vec<(Option<String>, Node)>> {
    let dir = format!("mysql/{}", encode_name(database));
    let tree_id = match read::resolve(repo, snap, &dir).await {
        Ok(Resolved::Node(n)) if n.kind == NodeKind::Dir => n.subtree,
        Ok(_) => None,
        Err(e) if e.kind() == crate::error::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let tree_id = tree_id.ok_or_else(|| {
        Error::not_found(format!("database {} in the snapshot", sql_ident(database)))
    })?;
    let tree = repo.load_tree(&tree_id).await?;
    let mut out = Vec::new();
    if tables.is_empty() {
        let mut schema = None;
        for n in &tree.nodes {
            let name = n.name_lossy();
            if n.kind != NodeKind::File {
                continue;
            }
            if name == "_schema.sql" {
                schema = Some(n.clone());
            } else if let Some(stem) = name.strip_suffix(".sql") {
                out.push((Some(decode_name(stem)), n.clone()));
            }
        }
        if let Some(s) = schema {
            out.push((None, s));
        }
    } else {
        for t in tables {
            let file = format!("{}.sql", encode_name(t));
            let node = tree
                .find(file.as_bytes())
                .filter(|n| n.kind == NodeKind::File)
                .ok_or_else(|| {
                    Error::not_found(format!(
                        "table {}.{} in the snapshot",
                        sql_ident(database),
                        sql_ident(t)
                    ))
                })?;
            out.push((Some(t.clone()), node.clone()));
        }
    }
    Ok(out)
}

/// Write the SQL of the grants (first, with `grants`) and of the chosen tables (or the whole
/// database) to `out`. With `into`, the SQL targets that database as a restore into the server
/// would: it starts with the schema's `CREATE DATABASE IF NOT EXISTS` renamed and a `USE`, and
/// the views, routines and events follow the tables. Without, it names no database (load it
/// with `mariadb DB < file`).
pub async fn restore_to_writer(
    repo: &Repository,
    snap: &Snapshot,
    opts: &MysqlRestoreOptions,
    out: &mut (dyn Write + Send),
) -> Result<MysqlRestoreOutcome> {
    opts.check()?;
    let grants = match opts.grants {
        true => Some(grants_node(repo, snap).await?),
        false => None,
    };
    let files = match &opts.database {
        Some(db) => plan(repo, snap, db, &opts.tables).await?,
        None => Vec::new(),
    };
    let mut o = MysqlRestoreOutcome {
        database: opts.database.clone(),
        ..Default::default()
    };
    if let Some(g) = grants {
        o.bytes += read::dump(repo, &g, out).await?;
        o.grants = true;
    }
    let (Some(original), Some(target)) = (&opts.database, &opts.into) else {
        for (table, node) in files {
            o.bytes += read::dump(repo, &node, out).await?;
            match table {
                Some(t) => o.tables.push(t),
                None => o.schema = true,
            }
        }
        return Ok(o);
    };
    o.database = Some(target.clone());
    let path = format!("mysql/{}/_schema.sql", encode_name(original));
    let (create, mut rest) = match read::resolve(repo, snap, &path).await {
        Ok(Resolved::Node(n)) if n.kind == NodeKind::File => {
            let mut buf = Vec::new();
            read::dump(repo, &n, &mut buf).await?;
            let (create, rest) = split_create_database(&buf, original, target);
            (create, Some(rest))
        }
        _ => (None, None),
    };
    let create =
        if_not_exists(create.unwrap_or_else(|| format!("CREATE DATABASE {};", sql_ident(target))));
    let head = format!("{create}\nUSE {};\n", sql_ident(target));
    let write = |out: &mut (dyn Write + Send), b: &[u8]| {
        out.write_all(b)
            .map_err(|e| Error::io("<standard output>", e))
    };
    write(out, head.as_bytes())?;
    o.bytes += head.len() as u64;
    for (table, node) in files {
        match table {
            Some(t) => {
                o.bytes += read::dump(repo, &node, out).await?;
                o.tables.push(t);
            }
            None => {
                let rest = rest.take().unwrap_or_default();
                write(out, &rest)?;
                o.bytes += rest.len() as u64;
                o.schema = true;
            }
        }
    }
    Ok(o)
}

/// A `CREATE DATABASE` statement that does nothing if the database exists.
fn if_not_exists(create: String) -> String {
    if create.contains("IF NOT EXISTS") {
        return create;
    }
    match create.strip_prefix("CREATE DATABASE ") {
        Some(rest) => format!("CREATE DATABASE IF NOT EXISTS {rest}"),
        None => create,
    }
}

/// The CREATE DATABASE statement of a schema file, for database `target`, and the schema
/// without it (its `-- Current Database:` comments naming `target` too).
fn split_create_database(schema: &[u8], original: &str, target: &str) -> (Option<String>, Vec<u8>) {
    let mut create = None;
    let mut rest = Vec::with_capacity(schema.len());
    let comment = format!("-- Current Database: {}", sql_ident(original));
    for l in schema.split_inclusive(|&b| b == b'\n') {
        if create.is_none() && l.starts_with(b"CREATE DATABASE ") {
            let line = String::from_utf8_lossy(l).trim_end().to_string();
            create = Some(line.replacen(&sql_ident(original), &sql_ident(target), 1));
        } else if l.strip_suffix(b"\n").unwrap_or(l) == comment.as_bytes() {
            rest.extend_from_slice(
                format!("-- Current Database: {}\n", sql_ident(target)).as_bytes(),
            );
        } else {
            rest.extend_from_slice(l);
        }
    }
    (create, rest)
}

/// A database restore, checked against the server and ready to load.
struct DatabasePlan {
    /// The database restored into.
    target: String,
    files: Vec<(Option<String>, Node)>,
    /// The target database exists already.
    exists: bool,
    /// Its CREATE DATABASE statement (renamed), from the schema file.
    create: Option<String>,
    /// The schema file without it, when the whole database is restored.
    schema_rest: Option<Vec<u8>>,
    replaced: Vec<String>,
}

/// Plan a database restore: what the snapshot has, what the server has, and a refusal to
/// replace existing tables unless forced. Loads nothing.
async fn prepare_database(
    repo: &Repository,
    snap: &Snapshot,
    opts: &MysqlRestoreOptions,
    client: &std::path::Path,
    original: &str,
) -> Result<DatabasePlan> {
    let target = opts.into.clone().unwrap_or_else(|| original.to_string());
    let files = plan(repo, snap, original, &opts.tables).await?;
    let (client2, conn, t2) = (client.to_path_buf(), opts.conn.clone(), target.clone());
    let existing = tokio::task::spawn_blocking(move || -> Result<Option<Vec<String>>> {
        if src::database_exists(&client2, &conn, &t2)? {
            Ok(Some(src::list_tables(&client2, &conn, &t2)?))
        } else {
            Ok(None)
        }
    })
    .await
    .map_err(|e| task_failed("connecting to the database server", e))?
    .map_err(|e| src::context(e, "connecting to the database server"))?;
    let mut replaced = Vec::new();
    if let Some(existing) = &existing {
        replaced = files
            .iter()
            .filter_map(|(t, _)| t.clone())
            .filter(|t| existing.contains(t))
            .collect();
        if !replaced.is_empty() && !opts.force {
            let names: Vec<String> = replaced.iter().map(|t| sql_ident(t)).collect();
            return Err(Error::invalid(format!(
                "database {} already has {} {}: restoring would replace {}; use --force to \
                 replace {}",
                sql_ident(&target),
                if names.len() == 1 { "table" } else { "tables" },
                names.join(", "),
                if names.len() == 1 { "it" } else { "them" },
                if names.len() == 1 { "it" } else { "them" },
            )));
        }
    }
    // The schema file: its CREATE DATABASE (renamed) creates a missing database; the rest is
    // loaded after the tables, as the dump had it.
    let schema_node = match files.iter().find(|(t, _)| t.is_none()) {
        Some((_, n)) => Some(n.clone()),
        None => {
            let path = format!("mysql/{}/_schema.sql", encode_name(original));
            match read::resolve(repo, snap, &path).await {
                Ok(Resolved::Node(n)) if n.kind == NodeKind::File => Some(*n),
                _ => None,
            }
        }
    };
    let (mut create, mut schema_rest) = (None, None);
    if let Some(n) = &schema_node {
        let mut buf = Vec::new();
        read::dump(repo, n, &mut buf).await?;
        let (c, rest) = split_create_database(&buf, original, &target);
        create = c;
        schema_rest = Some(rest);
    }
    Ok(DatabasePlan {
        target,
        files,
        exists: existing.is_some(),
        create,
        schema_rest,
        replaced,
    })
}

/// Load the grants (first, with `grants`) and the chosen tables (or the whole database) into
/// the server through the client. Every check (the files in the snapshot, tables that would be
/// replaced) is made before anything is loaded.
pub async fn restore_to_server(
    repo: &Repository,
    snap: &Snapshot,
    opts: &MysqlRestoreOptions,
) -> Result<MysqlRestoreOutcome> {
    opts.check()?;
    let client = Tools::find_client(opts.client_binary.as_deref())?;
    let grants = match opts.grants {
        true => Some(grants_node(repo, snap).await?),
        false => None,
    };
    let plan = match &opts.database {
        Some(db) => Some(prepare_database(repo, snap, opts, &client, db).await?),
        None => None,
    };
    let mut o = MysqlRestoreOutcome::default();
    // Accounts first: the definers of views, routines and triggers then exist.
    if let Some(g) = &grants {
        o.bytes += load(
            repo,
            &client,
            &opts.conn,
            None,
            opts.max_allowed_packet,
            Feed::Node(g),
        )
        .await
        .map_err(|e| src::context(e, "loading the users and grants"))?;
        o.grants = true;
    }
    let Some(mut plan) = plan else {
        return Ok(o);
    };
    let target = plan.target.clone();
    o.database = Some(target.clone());
    o.replaced = std::mem::take(&mut plan.replaced);
    if !plan.exists {
        let sql = plan
            .create
            .take()
            .unwrap_or_else(|| format!("CREATE DATABASE {}", sql_ident(&target)));
        let (client2, conn) = (client.clone(), opts.conn.clone());
        tokio::task::spawn_blocking(move || src::query(&client2, &conn, &sql))
            .await
            .map_err(|e| task_failed("creating the database", e))?
            .map_err(|e| src::context(e, format!("creating database {}", sql_ident(&target))))?;
    }
    for (table, node) in &plan.files {
        match table {
            Some(t) => {
                o.bytes += load(
                    repo,
                    &client,
                    &opts.conn,
                    Some(&target),
                    opts.max_allowed_packet,
                    Feed::Node(node),
                )
                .await
                .map_err(|e| {
                    src::context(
                        e,
                        format!("restoring table {}.{}", sql_ident(&target), sql_ident(t)),
                    )
                })?;
                o.tables.push(t.clone());
            }
            None => {
                let rest = plan.schema_rest.take().unwrap_or_default();
                o.bytes += load(
                    repo,
                    &client,
                    &opts.conn,
                    Some(&target),
                    opts.max_allowed_packet,
                    Feed::Bytes(rest),
                )
                .await
                .map_err(|e| {
                    src::context(
                        e,
                        format!(
                            "restoring the views, routines and events of {}",
                            sql_ident(&target)
                        ),
                    )
                })?;
                o.schema = true;
            }
        }
    }
    Ok(o)
}

/// What to feed the client.
enum Feed<'a> {
    Node(&'a Node),
    Bytes(Vec<u8>),
}

/// Run the client (on database `db`, if given) and feed it SQL; an error with the client's
/// message if it fails.
async fn load(
    repo: &Repository,
    client: &std::path::Path,
    conn: &Connection,
    db: Option<&str>,
    max_allowed_packet: Option<u64>,
    feed: Feed<'_>,
) -> Result<u64> {
    let mut cmd = src::client_command(client, conn);
    cmd.arg("--binary-mode")
        .arg(src::max_allowed_packet_arg(max_allowed_packet));
    if let Some(db) = db {
        cmd.arg(format!("--database={db}"));
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| src::spawn_error(client, e))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| src::failed("running the client", "no stdin pipe"))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| src::failed("running the client", "no stderr pipe"))?;
    let err_thread = std::thread::spawn(move || src::read_stderr_tail(&mut stderr));
    let mut w = std::io::BufWriter::with_capacity(1 << 20, stdin);
    let fed = match feed {
        Feed::Node(n) => read::dump(repo, n, &mut w).await,
        Feed::Bytes(b) => w
            .write_all(&b)
            .and_then(|_| w.flush())
            .map(|_| b.len() as u64)
            .map_err(|e| Error::io("<client>", e)),
    };
    // Closing its input lets the client finish.
    drop(w);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .map_err(|e| task_failed("waiting for the client", e))?
        .map_err(|e| Error::Database {
            what: "waiting for the client".into(),
            kind: DbErrorKind::Failed,
            detail: String::new(),
            source: Some(Box::new(e)),
        })?;
    let msg = err_thread.join().unwrap_or_default();
    if !status.success() {
        // The client's message explains a broken pipe on our side.
        let mut e = src::tool_failed(&src::tool_name(client), status, &msg, false);
        if let Error::Database { detail, .. } = &mut e
            && let Some(h) = src::packet_hint(detail, "the client", max_allowed_packet)
        {
            detail.push_str(&h);
        }
        return Err(e);
    }
    fed
}
