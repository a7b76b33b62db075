//! MySQL/MariaDB as a source (DESIGN.md §9): finding and running the standard client tools
//! (`mariadb-dump`/`mysqldump` and `mariadb`/`mysql`), the dump options that make the output
//! consistent and deterministic, splitting the dump by table ([`split`]), and the names the
//! tables get in a snapshot (format-spec/mysql.md).
//!
//! Never puts a password on a command line: it reaches the tools through the `MYSQL_PWD`
//! environment variable of the child alone (or the user's option file), and the repository
//! password is removed from the child's environment. Knows nothing of the repository.

pub mod scratch;
pub mod split;

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::error::{DbErrorKind, Error, Result};

/// Databases that are never dumped by `--all-databases` (they are the server's own; users
/// and grants are what matter of `mysql`, and the server recreates the rest).
pub const SYSTEM_DATABASES: &[&str] = &["information_schema", "performance_schema", "sys", "mysql"];

/// How to reach the server. Passed to both the dump tool and the client.
#[derive(Clone, Default)]
pub struct Connection {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub socket: Option<PathBuf>,
    pub user: Option<String>,
    /// An option file read instead of the default ones (`--defaults-file`).
    pub defaults_file: Option<PathBuf>,
    /// Given to the tools through their environment only.
    pub password: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("socket", &self.socket)
            .field("user", &self.user)
            .field("defaults_file", &self.defaults_file)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Connection {
    /// The connection arguments (`--defaults-file` first, as the tools require).
    fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        if let Some(f) = &self.defaults_file {
            let mut s = OsString::from("--defaults-file=");
            s.push(f);
            a.push(s);
        }
        if let Some(h) = &self.host {
            a.push(format!("--host={h}").into());
        }
        if let Some(p) = self.port {
            a.push(format!("--port={p}").into());
            if self.host.is_none() {
                // A port alone means TCP to this machine, not the default socket.
                a.push("--protocol=TCP".into());
            }
        }
        if let Some(s) = &self.socket {
            let mut o = OsString::from("--socket=");
            o.push(s);
            a.push(o);
        }
        if let Some(u) = &self.user {
            a.push(format!("--user={u}").into());
        }
        a
    }

    /// A command for `program` with the connection's arguments and environment.
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.args(self.args());
        c.env_remove("CAIRN_PASSWORD")
            .env_remove("CAIRN_PASSWORD_FILE")
            .env_remove("CAIRN_MYSQL_PASSWORD");
        if let Some(p) = &self.password {
            c.env("MYSQL_PWD", p.as_str());
        }
        c.stdin(Stdio::null());
        c
    }
}

/// A failure the configuration must fix.
pub fn config_error(what: impl Into<String>) -> Error {
    Error::Database {
        what: what.into(),
        kind: DbErrorKind::Config,
        detail: String::new(),
        source: None,
    }
}

/// A dump or load that failed otherwise.
pub fn failed(what: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::Database {
        what: what.into(),
        kind: DbErrorKind::Failed,
        detail: detail.into(),
        source: None,
    }
}

/// A tool that could not be started: missing or not executable is the configuration's to fix.
pub fn spawn_error(tool: &Path, e: std::io::Error) -> Error {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => DbErrorKind::Config,
        _ => DbErrorKind::Failed,
    };
    Error::Database {
        what: format!("could not run {}", tool.display()),
        kind,
        detail: String::new(),
        source: Some(Box::new(e)),
    }
}

/// A tool that exited with an error: its message, and the kind of failure it tells of.
/// `usage_exit`: the exit status is the tool's "bad options" one.
pub fn tool_failed(
    tool: &str,
    status: std::process::ExitStatus,
    stderr: &[u8],
    usage_exit: bool,
) -> Error {
    let detail = tool_message(stderr);
    Error::Database {
        what: format!("{tool} failed ({status})"),
        kind: classify(&detail, usage_exit),
        detail: if detail.is_empty() {
            "no message".into()
        } else {
            detail
        },
        source: None,
    }
}

/// Add what was being done to a database error's description (other errors are typed
/// already and say what they concern).
pub fn context(e: Error, doing: impl std::fmt::Display) -> Error {
    match e {
        Error::Database {
            what,
            kind,
            detail,
            source,
        } => Error::Database {
            what: format!("{doing}: {what}"),
            kind,
            detail,
            source,
        },
        e => e,
    }
}

/// Server errors that pass: the server is not there, went away or is busy.
const UNAVAILABLE: &[u32] = &[
    1040, // too many connections
    1053, // server shutdown in progress
    1205, // lock wait timeout
    1213, // deadlock
    1412, // table definition changed during the dump's transaction ("please retry")
    1927, // connection killed
    2002, // can't connect through the socket
    2003, // can't connect over TCP
    2006, // server has gone away
    2013, // lost connection during query
    2055, // lost connection (system error)
];

/// Server errors that the configuration must fix.
const CONFIG: &[u32] = &[
    1044, // access denied to a database
    1045, // access denied (user or password)
    1049, // unknown database
    1142, // a command denied (a missing privilege)
    1143, // column access denied
    1153, // packet bigger than the server's max_allowed_packet
    1227, // a privilege (RELOAD, PROCESS...) needed
    1251, // authentication protocol refused
    1301, // result bigger than max_allowed_packet
    1524, // authentication plugin not loaded
    1698, // access denied (unix socket authentication)
    2005, // unknown server host
    2020, // packet bigger than the client's max_allowed_packet
    2026, // TLS error
    2059, // authentication plugin cannot be loaded
];

/// The kind of failure a tool's message tells of: its MySQL error numbers first, then the
/// option parser's words; anything else is a failed dump or load.
pub fn classify(stderr: &str, usage_exit: bool) -> DbErrorKind {
    for code in error_codes(stderr) {
        if UNAVAILABLE.contains(&code) {
            return DbErrorKind::Unavailable;
        }
        if CONFIG.contains(&code) {
            return DbErrorKind::Config;
        }
    }
    let lower = stderr.to_lowercase();
    let config_words = [
        "unknown variable",
        "unknown option",
        "could not open required defaults file",
        "found option without preceding group",
        "access denied",
    ];
    if usage_exit || config_words.iter().any(|w| lower.contains(w)) {
        return DbErrorKind::Config;
    }
    if lower.contains("can't connect") || lower.contains("lost connection") {
        return DbErrorKind::Unavailable;
    }
    DbErrorKind::Failed
}

/// The client tools.
#[derive(Debug, Clone)]
pub struct Tools {
    pub dump: PathBuf,
    pub client: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl Tools {
    /// Find the tools: the given paths, or `mariadb-dump`/`mysqldump` and `mariadb`/`mysql`
    /// (next to the dump tool first, then on `PATH`).
    pub fn find(dump: Option<&Path>, client: Option<&Path>) -> Result<Tools> {
        let dump = match dump {
            Some(p) if is_executable(p) => p.to_path_buf(),
            Some(p) => {
                return Err(config_error(format!(
                    "the dump tool {} is missing or not executable",
                    p.display()
                )));
            }
            None => on_path("mariadb-dump")
                .or_else(|| on_path("mysqldump"))
                .ok_or_else(|| {
                    config_error(
                        "the dump tool: neither mariadb-dump nor mysqldump is on PATH \
                         (install the MariaDB/MySQL client, or give --dump-binary)",
                    )
                })?,
        };
        let client = match client {
            Some(p) if is_executable(p) => p.to_path_buf(),
            Some(p) => {
                return Err(config_error(format!(
                    "the client {} is missing or not executable",
                    p.display()
                )));
            }
            None => {
                let dir = dump.parent().unwrap_or(Path::new("/"));
                ["mariadb", "mysql"]
                    .iter()
                    .map(|n| dir.join(n))
                    .find(|p| is_executable(p))
                    .or_else(|| on_path("mariadb"))
                    .or_else(|| on_path("mysql"))
                    .ok_or_else(|| {
                        config_error(
                            "the client: neither mariadb nor mysql is on PATH \
                             (install the MariaDB/MySQL client, or give --client-binary)",
                        )
                    })?
            }
        };
        Ok(Tools { dump, client })
    }

    /// Find only the client (for restores).
    pub fn find_client(client: Option<&Path>) -> Result<PathBuf> {
        match client {
            Some(p) if is_executable(p) => Ok(p.to_path_buf()),
            Some(p) => Err(config_error(format!(
                "the client {} is missing or not executable",
                p.display()
            ))),
            None => on_path("mariadb")
                .or_else(|| on_path("mysql"))
                .ok_or_else(|| {
                    config_error(
                        "the client: neither mariadb nor mysql is on PATH \
                     (install the MariaDB/MySQL client, or give --client-binary)",
                    )
                }),
        }
    }

    /// The dump tool's version line (e.g. `mariadb-dump from 11.x ... MariaDB`).
    pub fn dump_version(&self) -> Result<String> {
        let out = Command::new(&self.dump)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| spawn_error(&self.dump, e))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// A command running the client against the server (the caller adds its arguments).
pub fn client_command(client: &Path, conn: &Connection) -> Command {
    conn.command(client)
}

/// Run one SQL statement through the client; returns the rows of its (batch, tab-separated)
/// output. Fails with the client's message.
pub fn query(client: &Path, conn: &Connection, sql: &str) -> Result<Vec<Vec<String>>> {
    let out = conn
        .command(client)
        .args(["--batch", "--skip-column-names", "-e", sql])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| spawn_error(client, e))?;
    if !out.status.success() {
        return Err(tool_failed(
            &tool_name(client),
            out.status,
            &out.stderr,
            false,
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect())
}

/// A tool's file name, for messages.
pub fn tool_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// `s` as an SQL string literal.
pub fn sql_string(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `s` as a backquoted SQL identifier.
pub fn sql_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Names come back hex-encoded (`HEX(name)`), so any byte survives the batch output.
fn unhex_rows(rows: Vec<Vec<String>>) -> Result<Vec<String>> {
    rows.into_iter()
        .filter_map(|r| r.into_iter().next())
        .map(|h| unhex(&h))
        .collect()
}

fn unhex(h: &str) -> Result<String> {
    hex::decode(h.trim())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| Error::Database {
            what: "unexpected client output".into(),
            kind: DbErrorKind::Failed,
            detail: String::new(),
            source: Some(Box::new(e)),
        })
}

/// Rows of three hex-encoded names.
fn unhex_triples(rows: Vec<Vec<String>>) -> Result<Vec<(String, String, String)>> {
    rows.into_iter()
        .map(|r| {
            let get = |i: usize| unhex(r.get(i).map(String::as_str).unwrap_or(""));
            Ok((get(0)?, get(1)?, get(2)?))
        })
        .collect()
}

/// `IN (...)` of SQL strings.
fn sql_in(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| sql_string(n)).collect();
    format!("IN ({})", quoted.join(", "))
}

/// The base tables of `databases` whose engine is not InnoDB (MyISAM, Aria, MEMORY, ...), so
/// not in the dump's transaction: (database, table, engine), sorted.
pub fn non_transactional_tables(
    client: &Path,
    conn: &Connection,
    databases: &[String],
) -> Result<Vec<(String, String, String)>> {
    if databases.is_empty() {
        return Ok(Vec::new());
    }
    let rows = query(
        client,
        conn,
        &format!(
            "SELECT HEX(table_schema), HEX(table_name), HEX(engine) FROM information_schema.tables \
             WHERE table_schema {} AND table_type = 'BASE TABLE' AND engine IS NOT NULL \
             AND engine <> 'InnoDB' ORDER BY table_schema, table_name",
            sql_in(databases)
        ),
    )?;
    unhex_triples(rows)
}

/// The FLOAT columns of the base tables of `databases`: (database, table, column), in table
/// and column order.
pub fn float_columns(
    client: &Path,
    conn: &Connection,
    databases: &[String],
) -> Result<Vec<(String, String, String)>> {
    if databases.is_empty() {
        return Ok(Vec::new());
    }
    let rows = query(
        client,
        conn,
        &format!(
            "SELECT HEX(c.table_schema), HEX(c.table_name), HEX(c.column_name) \
             FROM information_schema.columns c JOIN information_schema.tables t \
             ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
             WHERE c.table_schema {} AND t.table_type = 'BASE TABLE' AND c.data_type = 'float' \
             ORDER BY c.table_schema, c.table_name, c.ordinal_position",
            sql_in(databases)
        ),
    )?;
    unhex_triples(rows)
}

/// What the server says about itself.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    pub version: String,
    pub log_bin: bool,
}

/// Connect once and read the server version and whether binary logging is on; the first
/// place a wrong password or a stopped server shows up.
pub fn server_info(client: &Path, conn: &Connection) -> Result<ServerInfo> {
    let rows = query(client, conn, "SELECT @@version, @@log_bin")?;
    let row = rows
        .first()
        .ok_or_else(|| failed("the server returned no version", ""))?;
    Ok(ServerInfo {
        version: row.first().cloned().unwrap_or_default(),
        log_bin: row.get(1).is_some_and(|v| v.trim() == "1"),
    })
}

/// The user databases (all but [`SYSTEM_DATABASES`]), sorted.
pub fn list_databases(client: &Path, conn: &Connection) -> Result<Vec<String>> {
    let rows = query(
        client,
        conn,
        "SELECT HEX(schema_name) FROM information_schema.schemata",
    )?;
    let mut dbs: Vec<String> = unhex_rows(rows)?
        .into_iter()
        .filter(|d| !SYSTEM_DATABASES.contains(&d.as_str()))
        .collect();
    dbs.sort();
    Ok(dbs)
}

/// Accounts the server creates for itself; their grants are not the operator's to restore.
const SYSTEM_ACCOUNTS: &[&str] = &[
    "mariadb.sys",
    "mysql.sys",
    "mysql.session",
    "mysql.infoschema",
];

/// Undo the escaping of the client's batch output (`\n`, `\t`, `\0`, `\\`).
fn unescape_batch(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

/// One account as `mysql/_grants.sql` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountGrants {
    /// The account as SQL: `'user'@'host'`, or `'role'` for a role.
    pub account: String,
    /// A MariaDB role (`mysql.user.is_role`), created with `CREATE ROLE`.
    pub role: bool,
    /// `SHOW CREATE USER` made idempotent (users only; empty for roles).
    pub create: Vec<String>,
    /// `SHOW GRANTS`, one statement each (without `SET DEFAULT ROLE`).
    pub grants: Vec<String>,
    /// `SET DEFAULT ROLE` statements (MariaDB shows them with the grants).
    pub default_role: Vec<String>,
    /// Why the server could not show the account (it is left out).
    pub skipped: Option<String>,
}

/// Users, roles and their grants as SQL that any client can load (`mysql/_grants.sql`), for
/// every account but the server's own, sorted by user and host. Works on MariaDB and MySQL
/// alike; on MariaDB (`mariadb`), rows of `mysql.user` with `is_role = 'Y'` are roles.
pub fn dump_grants(client: &Path, conn: &Connection, mariadb: bool) -> Result<Vec<u8>> {
    let sql = match mariadb {
        true => "SELECT HEX(user), HEX(host), is_role = 'Y' FROM mysql.user ORDER BY user, host",
        false => "SELECT HEX(user), HEX(host), 0 FROM mysql.user ORDER BY user, host",
    };
    let rows = query(client, conn, sql)?;
    let mut accounts = Vec::new();
    for row in rows {
        let [user, host] = [0, 1].map(|i| {
            row.get(i)
                .and_then(|h| hex::decode(h.trim()).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        });
        let role = row.get(2).is_some_and(|v| v.trim() == "1");
        if user.is_empty() || SYSTEM_ACCOUNTS.contains(&user.as_str()) {
            continue;
        }
        let mut a = AccountGrants {
            account: match role {
                true => sql_string(&user),
                false => format!("{}@{}", sql_string(&user), sql_string(&host)),
            },
            role,
            create: Vec::new(),
            grants: Vec::new(),
            default_role: Vec::new(),
            skipped: None,
        };
        if !role {
            match query(client, conn, &format!("SHOW CREATE USER {}", a.account)) {
                Ok(r) => {
                    a.create = r
                        .into_iter()
                        .map(|r| {
                            let stmt = unescape_batch(&r.join("\t"));
                            match stmt.strip_prefix("CREATE USER ") {
                                Some(rest) if !rest.starts_with("IF NOT EXISTS") => {
                                    format!("CREATE USER IF NOT EXISTS {rest}")
                                }
                                _ => stmt,
                            }
                        })
                        .collect()
                }
                Err(e) => {
                    a.skipped = Some(e.to_string().replace('\n', " "));
                    accounts.push(a);
                    continue;
                }
            }
        }
        for r in query(client, conn, &format!("SHOW GRANTS FOR {}", a.account))? {
            let stmt = unescape_batch(&r.join("\t"));
            match stmt.starts_with("SET DEFAULT ROLE ") {
                true => a.default_role.push(stmt),
                false => a.grants.push(stmt),
            }
        }
        accounts.push(a);
    }
    Ok(grants_sql(&accounts).into_bytes())
}

/// The text of `mysql/_grants.sql` (format-spec/mysql.md): every user created, then every
/// role, then every grant (a role's privileges and the roles granted to it, then each user's,
/// with the roles granted to it), then the default roles. So nothing is granted before it
/// exists, whatever the names' order.
///
/// Only an admin of a role may grant it, and `CREATE ROLE` makes its creator one, which the
/// account loading the file should not stay. So the roles are created `WITH ADMIN` a helper
/// role (`cairn_import_<connection id>`, as `mariadb-dump --system=users` does) that the loader
/// holds while the file loads and that is dropped at the end; the admins the server had are
/// in their own grants (`GRANT r TO a WITH ADMIN OPTION`).
pub fn grants_sql(accounts: &[AccountGrants]) -> String {
    let mut out = String::from(
        "-- cairn: users, roles and grants (SHOW CREATE USER, SHOW GRANTS): users, then roles, \
         then grants, then default roles\n",
    );
    for a in accounts {
        if let Some(why) = &a.skipped {
            out.push_str(&format!("-- skipped {}: {why}\n", a.account));
        }
    }
    out.push_str("\n-- users\n");
    for a in accounts.iter().filter(|a| !a.role) {
        for s in &a.create {
            out.push_str(s);
            out.push_str(";\n");
        }
    }
    let roles: Vec<&AccountGrants> = accounts.iter().filter(|a| a.role).collect();
    if !roles.is_empty() {
        out.push_str(
            "\n-- roles, created with a helper role as their admin (dropped at the end)\n\
             SET @cairn_previous_role = CURRENT_ROLE();\n\
             SET @cairn_import = CONCAT('`cairn_import_', CONNECTION_ID(), '`');\n\
             EXECUTE IMMEDIATE CONCAT('CREATE ROLE ', @cairn_import);\n\
             EXECUTE IMMEDIATE CONCAT('GRANT ', @cairn_import, ' TO CURRENT_USER');\n\
             EXECUTE IMMEDIATE CONCAT('SET ROLE ', @cairn_import);\n",
        );
        for r in &roles {
            let stmt = format!("CREATE ROLE IF NOT EXISTS {} WITH ADMIN ", r.account);
            out.push_str(&format!(
                "EXECUTE IMMEDIATE CONCAT({}, @cairn_import);\n",
                sql_string(&stmt)
            ));
        }
    }
    out.push_str("\n-- grants\n");
    // A role's SHOW GRANTS repeats the grants of the roles granted to it: each once.
    let mut seen = std::collections::HashSet::new();
    for a in roles
        .iter()
        .copied()
        .chain(accounts.iter().filter(|a| !a.role))
    {
        for s in a.grants.iter().filter(|s| seen.insert(s.as_str())) {
            out.push_str(s);
            out.push_str(";\n");
        }
    }
    let defaults: Vec<&String> = accounts.iter().flat_map(|a| &a.default_role).collect();
    if !defaults.is_empty() {
        out.push_str("\n-- default roles\n");
        for s in defaults {
            out.push_str(s);
            out.push_str(";\n");
        }
    }
    if !roles.is_empty() {
        out.push_str(
            "\nSET ROLE NONE;\n\
             EXECUTE IMMEDIATE CONCAT('DROP ROLE ', @cairn_import);\n\
             EXECUTE IMMEDIATE CONCAT('SET ROLE ', \
             IF(@cairn_previous_role IS NULL, 'NONE', QUOTE(@cairn_previous_role)));\n",
        );
    }
    out
}

/// The path of the users-and-grants file: `mysql/_grants.sql`.
pub fn grants_path() -> Vec<String> {
    vec!["mysql".into(), "_grants.sql".into()]
}

/// The tables (and views) of a database that exist now.
pub fn list_tables(client: &Path, conn: &Connection, db: &str) -> Result<Vec<String>> {
    let rows = query(
        client,
        conn,
        &format!(
            "SELECT HEX(table_name) FROM information_schema.tables WHERE table_schema = {}",
            sql_string(db)
        ),
    )?;
    unhex_rows(rows)
}

/// Whether a database exists.
pub fn database_exists(client: &Path, conn: &Connection, db: &str) -> Result<bool> {
    let rows = query(
        client,
        conn,
        &format!(
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = {}",
            sql_string(db)
        ),
    )?;
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .is_some_and(|c| c.trim() != "0"))
}

/// What to dump.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// Databases, in order.
    pub databases: Vec<String>,
    /// `db.table` names to leave out.
    pub exclude_tables: Vec<String>,
    /// Record the binlog position and GTID (needs binary logging on and the RELOAD privilege).
    pub binlog: bool,
    /// The dump tool is MariaDB's (it knows `--gtid`).
    pub mariadb: bool,
    /// Upper bound of one INSERT statement (`--net-buffer-length`); `None`: the tool's default.
    pub insert_bytes: Option<u32>,
    /// The largest row or statement the tool accepts (`--max-allowed-packet`); `None`:
    /// [`DEFAULT_MAX_ALLOWED_PACKET`].
    pub max_allowed_packet: Option<u64>,
}

/// The `--max-allowed-packet` given to the dump tool and the client unless told otherwise:
/// the most they accept (1 GiB). Their own default, or a distribution's option file (Debian's
/// says 16M), fails a dump with "Lost connection" at the first row larger than that.
pub const DEFAULT_MAX_ALLOWED_PACKET: u64 = 1 << 30;

/// The `--max-allowed-packet` argument for a setting (`None`: the default).
pub fn max_allowed_packet_arg(n: Option<u64>) -> String {
    format!(
        "--max-allowed-packet={}",
        n.unwrap_or(DEFAULT_MAX_ALLOWED_PACKET)
    )
}

/// The arguments of a consistent, deterministic dump: one transaction for every table
/// (`--single-transaction`), rows in primary key order, no dump date, binary columns in hex
/// (so the stream is plain text whatever the data), and the section comments kept (the
/// splitter needs them).
pub fn dump_args(opts: &DumpOptions) -> Vec<String> {
    let mut a: Vec<String> = [
        "--single-transaction",
        "--quick",
        "--order-by-primary",
        "--skip-dump-date",
        "--hex-blob",
        "--routines",
        "--events",
        "--triggers",
        "--default-character-set=utf8mb4",
        "--tz-utc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(n) = opts.insert_bytes {
        a.push(format!("--net-buffer-length={n}"));
    }
    a.push(max_allowed_packet_arg(opts.max_allowed_packet));
    if opts.binlog {
        a.push("--master-data=2".into());
        if opts.mariadb {
            a.push("--gtid".into());
        }
    }
    for t in &opts.exclude_tables {
        a.push(format!("--ignore-table={t}"));
    }
    a.push("--databases".into());
    a.extend(opts.databases.iter().cloned());
    a
}

/// What the tools say when a row or statement is larger than a `max_allowed_packet` (theirs or
/// the server's): the connection is dropped (2013 "Lost connection", 2006 "server has gone
/// away") or the packet refused (2020, 1153, 1301).
fn packet_trouble(stderr: &str) -> bool {
    ["2006", "2013", "2020", "1153", "1301"]
        .iter()
        .any(|c| error_codes(stderr).contains(&c.parse::<u32>().unwrap_or(0)))
        || stderr.contains("max_allowed_packet")
}

/// A hint naming the setting when a tool failed as it does on a row or statement larger than
/// its `max_allowed_packet`.
pub fn packet_hint(stderr: &str, tool: &str, setting: Option<u64>) -> Option<String> {
    packet_trouble(stderr).then(|| {
        format!(
            " (if a row or statement is larger than max_allowed_packet: cairn ran {tool} with \
             {}; raise it with --max-allowed-packet SIZE, up to 1G, and the server's \
             max_allowed_packet too)",
            max_allowed_packet_arg(setting)
        )
    })
}

/// The MySQL error numbers in a tool's message (`ERROR 2002 (HY000)`, `Got error: 1045:`,
/// `Error 2013:`, `... (1146)`).
pub fn error_codes(stderr: &str) -> Vec<u32> {
    let b = stderr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && b[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i - start != 4 || b.get(i).is_some_and(|c| c.is_ascii_alphanumeric()) {
            continue;
        }
        let before = stderr[..start].trim_end();
        let framed = before.ends_with("ERROR")
            || before.ends_with("Error")
            || before.ends_with("error:")
            || (before.ends_with('(') && b.get(i) == Some(&b')'));
        if framed && let Ok(n) = stderr[start..i].parse() {
            out.push(n);
        }
    }
    out
}

/// A running dump tool, its standard error collected.
pub struct DumpProcess {
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    name: String,
    max_allowed_packet: Option<u64>,
}

/// Keep the last this many bytes of a tool's standard error.
const STDERR_KEEP: usize = 16 * 1024;

/// Read a tool's standard error to its end, keeping the last [`STDERR_KEEP`] bytes (the client
/// echoes a failing statement, which may be a whole table's INSERT).
pub fn read_stderr_tail(mut r: impl Read) -> Vec<u8> {
    let mut keep = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        keep.extend_from_slice(&buf[..n]);
        if keep.len() > 2 * STDERR_KEEP {
            keep.drain(..keep.len() - STDERR_KEEP);
        }
    }
    if keep.len() > STDERR_KEEP {
        keep.drain(..keep.len() - STDERR_KEEP);
    }
    keep
}

/// A tool's standard error as a message: without the statements the MariaDB client echoes
/// between `--------------` lines before an error (`--print-query-on-error`), each line cut
/// to a readable length.
pub fn tool_message(stderr: &[u8]) -> String {
    const RULE: &str = "--------------";
    const LINE: usize = 300;
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    // A rule with no opening one before it (the tail kept began inside an echo) closes one.
    let rules = lines.iter().filter(|l| l.trim_end() == RULE).count();
    let mut inside = rules % 2 == 1;
    let mut out: Vec<String> = Vec::new();
    for l in lines {
        if l.trim_end() == RULE {
            inside = !inside;
            continue;
        }
        if inside || l.trim().is_empty() {
            continue;
        }
        let mut l = l.trim_end().to_string();
        if l.len() > LINE {
            let mut cut = LINE;
            while !l.is_char_boundary(cut) {
                cut -= 1;
            }
            l.truncate(cut);
            l.push_str("...");
        }
        out.push(l);
    }
    out.join("; ")
}

impl DumpProcess {
    /// Start the dump; returns the process and its standard output.
    pub fn spawn(
        tools: &Tools,
        conn: &Connection,
        opts: &DumpOptions,
    ) -> Result<(DumpProcess, std::process::ChildStdout)> {
        let mut child = conn
            .command(&tools.dump)
            .args(dump_args(opts))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(&tools.dump, e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| failed("running the dump tool", "no stdout pipe"))?;
        let mut err = child
            .stderr
            .take()
            .ok_or_else(|| failed("running the dump tool", "no stderr pipe"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let keep = stderr.clone();
        let stderr_thread = std::thread::Builder::new()
            .name("cairn-dump-stderr".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut k = keep.lock().unwrap_or_else(|p| p.into_inner());
                    k.extend_from_slice(&buf[..n]);
                    if k.len() > STDERR_KEEP {
                        let cut = k.len() - STDERR_KEEP;
                        k.drain(..cut);
                    }
                }
            })
            .map_err(|e| Error::io("<a thread reading the dump tool's errors>", e))?;
        Ok((
            DumpProcess {
                child,
                stderr,
                stderr_thread: Some(stderr_thread),
                name: tool_name(&tools.dump),
                max_allowed_packet: opts.max_allowed_packet,
            },
            stdout,
        ))
    }

    /// Wait for the tool to exit; an error naming the cause if it failed. Its warnings are
    /// logged.
    pub fn finish(mut self) -> Result<()> {
        let status = self.child.wait().map_err(|e| Error::Database {
            what: format!("waiting for {}", self.name),
            kind: DbErrorKind::Failed,
            detail: String::new(),
            source: Some(Box::new(e)),
        })?;
        self.outcome(status)
    }

    /// After reading the dump failed: the tool's own error if it failed by itself (a dump that
    /// stops halfway is usually the tool's doing); otherwise it is stopped and `None`.
    pub fn abort(mut self) -> Option<Error> {
        for _ in 0..40 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return self.outcome(status).err();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    fn outcome(&mut self, status: std::process::ExitStatus) -> Result<()> {
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        let err = self
            .stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if status.success() {
            for line in String::from_utf8_lossy(&err).lines() {
                tracing::warn!("{}: {line}", self.name);
            }
            return Ok(());
        }
        // mysqldump and mariadb-dump exit with 1 (EX_USAGE) for bad options.
        let mut e = tool_failed(&self.name, status, &err, status.code() == Some(1));
        if let Error::Database { detail, .. } = &mut e
            && let Some(h) = packet_hint(detail, &self.name, self.max_allowed_packet)
        {
            detail.push_str(&h);
        }
        Err(e)
    }
}

impl Drop for DumpProcess {
    fn drop(&mut self) {
        // A dump abandoned on an error path must not outlive us.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The path of a table's file in a snapshot: `mysql/<db>/<table>.sql`.
pub fn table_path(db: &str, table: &str) -> Vec<String> {
    vec![
        "mysql".into(),
        encode_name(db),
        format!("{}.sql", encode_name(table)),
    ]
}

/// The path of a database's schema file: `mysql/<db>/_schema.sql`.
pub fn schema_path(db: &str) -> Vec<String> {
    vec!["mysql".into(), encode_name(db), "_schema.sql".into()]
}

/// A database or table name as a file name: `%`, `/` and control characters percent-encoded,
/// and a leading `_` or `.` too (so no table is confused with `_schema.sql` and no name is `.`
/// or `..`). Any other character, Unicode included, is kept.
pub fn encode_name(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        let special = c == '%' || c == '/' || c.is_control() || (i == 0 && (c == '_' || c == '.'));
        if special && (c as u32) < 0x80 {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The inverse of [`encode_name`].
pub fn decode_name(file: &str) -> String {
    let b = file.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            let v = (h * 16 + l) as u8;
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Dump one database as a backup does (`opts`, with `databases` that one) and return, per
/// table, the rows counted and the checksum of its INSERT statements (format-spec/mysql.md,
/// "Table checksums"); nothing is kept of the data.
pub fn table_checksums(
    tools: &Tools,
    conn: &Connection,
    opts: &DumpOptions,
) -> Result<std::collections::BTreeMap<String, (u64, [u8; 32])>> {
    let (process, stdout) = DumpProcess::spawn(tools, conn, opts)?;
    let read = || -> std::io::Result<_> {
        let mut sp = split::Splitter::new(stdout);
        let mut out = std::collections::BTreeMap::new();
        while let Some(section) = sp.next_section()? {
            std::io::copy(&mut sp, &mut std::io::sink())?;
            if let split::Section::Table(name) = section {
                out.insert(name, (sp.rows(), sp.checksum()));
            }
        }
        Ok(out)
    };
    match read() {
        Ok(out) => {
            process.finish()?;
            Ok(out)
        }
        Err(e) => Err(process
            .abort()
            .unwrap_or_else(|| failed("reading the dump", e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_output_unescaped() {
        assert_eq!(unescape_batch(r"a\tb\nc\\d\0e"), "a\tb\nc\\d\0e");
        assert_eq!(unescape_batch("plain `x`@'%'"), "plain `x`@'%'");
        assert_eq!(unescape_batch("trailing\\"), "trailing\\");
    }

    #[test]
    fn names_round_trip_and_never_escape() {
        for n in [
            "users",
            "_schema",
            ".",
            "..",
            "a/b",
            "50%",
            "new\nline",
            "ünï😀",
            "_",
            "x_y",
        ] {
            let e = encode_name(n);
            assert!(
                crate::format::tree::valid_name(e.as_bytes()),
                "{n:?} -> {e:?}"
            );
            assert!(!e.contains('/') && !e.starts_with('_') && !e.starts_with('.'));
            assert_eq!(decode_name(&e), n);
        }
        assert_eq!(encode_name("users"), "users");
        assert_eq!(encode_name("_schema"), "%5Fschema");
        assert_eq!(table_path("app", "a/b")[2], "a%2Fb.sql");
    }

    #[test]
    fn grants_file_creates_every_account_before_granting() {
        let user = AccountGrants {
            account: "'a'@'h'".into(),
            role: false,
            create: vec!["CREATE USER IF NOT EXISTS `a`@`h`".into()],
            grants: vec![
                "GRANT `zrole` TO `a`@`h`".into(),
                "GRANT USAGE ON *.* TO `a`@`h`".into(),
            ],
            default_role: vec!["SET DEFAULT ROLE `zrole` FOR `a`@`h`".into()],
            skipped: None,
        };
        let role = AccountGrants {
            account: "'zrole'".into(),
            role: true,
            create: vec![],
            grants: vec![
                "GRANT SELECT ON `db`.* TO `zrole`".into(),
                "GRANT `it's` TO `zrole`".into(),
            ],
            default_role: vec![],
            skipped: None,
        };
        let inner = AccountGrants {
            account: sql_string("it's"),
            grants: vec!["GRANT SELECT ON `db`.* TO `zrole`".into()],
            ..role.clone()
        };
        let sql = grants_sql(&[user.clone(), role, inner]);
        let at = |needle: &str| {
            sql.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from\n{sql}"))
        };
        let create_helper = at("CONCAT('CREATE ROLE ', @cairn_import)");
        assert!(at("CREATE USER IF NOT EXISTS `a`") < create_helper);
        // The statement is a string literal: its quotes are doubled once more.
        assert!(at("CREATE ROLE IF NOT EXISTS ''zrole''") < at("GRANT `zrole` TO `a`"));
        assert!(at("CREATE ROLE IF NOT EXISTS ''it''''s''") < at("GRANT `it's` TO `zrole`"));
        assert!(at("GRANT USAGE ON *.* TO `a`") < at("SET DEFAULT ROLE `zrole`"));
        assert!(at("SET DEFAULT ROLE") < at("CONCAT('DROP ROLE ', @cairn_import)"));
        assert_eq!(sql.matches("GRANT SELECT ON `db`.* TO `zrole`").count(), 1);
        // Without roles: no helper role and nothing MariaDB-only.
        let plain = grants_sql(&[user]);
        assert!(
            !plain.contains("cairn_import") && !plain.contains("EXECUTE"),
            "{plain}"
        );
        assert!(plain.contains("GRANT `zrole` TO `a`@`h`;\n"));
    }

    #[test]
    fn error_numbers_are_read_from_the_tools_messages() {
        for (msg, codes) in [
            (
                "mariadb-dump: Error 2013: Lost connection to server during query when dumping \
                 table `b2024` at row: 1234",
                vec![2013],
            ),
            (
                "ERROR 2002 (HY000): Can't connect to local server through socket '/x' (2)",
                vec![2002],
            ),
            (
                "mariadb-dump: Got error: 1045: \"Access denied for user 'u'@'localhost' \
                 (using password: YES)\" when trying to connect",
                vec![1045],
            ),
            (
                "mariadb-dump: Couldn't execute 'SHOW FIELDS FROM `zz`': Table 'f.zz' doesn't \
                 exist (1146)",
                vec![1146],
            ),
            ("ERROR 1959 (OP000) at line 5: Invalid role", vec![1959]),
            ("no number 12345 here, nor (2020 or x2020)", vec![]),
        ] {
            assert_eq!(error_codes(msg), codes, "{msg}");
        }
        assert!(
            packet_hint(
                "ERROR 2006 (HY000) at line 3: Server has gone away",
                "c",
                None
            )
            .is_some_and(|h| h.contains("--max-allowed-packet=1073741824"))
        );
        assert!(packet_hint("ERROR 1146 (42S02): Table 'a.b' doesn't exist", "c", None).is_none());
    }

    #[test]
    fn echoed_statements_are_left_out_of_messages() {
        let long = "x".repeat(5000);
        let full = format!(
            "--------------\nINSERT INTO t VALUES\n({long})\n--------------\n\nERROR 2006 (HY000) at line 34: Server has gone away\n"
        );
        assert_eq!(
            tool_message(full.as_bytes()),
            "ERROR 2006 (HY000) at line 34: Server has gone away"
        );
        // The tail kept starts inside the echo.
        let tail = &full[full.len() - 300..];
        assert_eq!(
            tool_message(tail.as_bytes()),
            "ERROR 2006 (HY000) at line 34: Server has gone away"
        );
        let m = tool_message(format!("a\n{long}\n").as_bytes());
        assert!(
            m.starts_with("a; xxx") && m.ends_with("...") && m.len() < 400,
            "{m}"
        );
        let kept = read_stderr_tail(full.repeat(10).as_bytes());
        assert_eq!(kept.len(), STDERR_KEEP);
    }

    #[test]
    fn failures_have_the_kind_a_scheduler_acts_on() {
        use crate::error::ErrorKind;
        // The tools missing: fix the configuration.
        let e = Tools::find(Some(Path::new("/nonexistent/mariadb-dump")), None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("/nonexistent/mariadb-dump"), "{e}");
        let Some(client) = on_path("mariadb").or_else(|| on_path("mysql")) else {
            eprintln!("SKIPPED the rest: no mariadb or mysql client on PATH");
            return;
        };
        // No server on the socket: retry later.
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection {
            socket: Some(dir.path().join("none.sock")),
            user: Some("root".into()),
            ..Default::default()
        };
        let e = server_info(&client, &conn).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
        assert!(e.to_string().contains("Can't connect"), "{e}");
        // A bad option file: fix the configuration.
        let cnf = dir.path().join("bad.cnf");
        std::fs::write(&cnf, "[client]\nno_such_option_here=1\n").unwrap();
        let conn = Connection {
            defaults_file: Some(cnf),
            ..conn
        };
        let e = server_info(&client, &conn).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }

    #[test]
    fn tool_messages_map_to_the_kind_of_failure() {
        use crate::error::{DbErrorKind as K, ErrorKind};
        for (msg, usage, kind) in [
            (
                "ERROR 2002 (HY000): Can't connect to local server through socket '/s' (2)",
                false,
                K::Unavailable,
            ),
            (
                "mariadb-dump: Got error: 2003: \"Can't connect to server on 'db' (111)\" \
                 when trying to connect",
                false,
                K::Unavailable,
            ),
            (
                "mariadb-dump: Error 2013: Lost connection to server during query when \
                 dumping table `b` at row: 0",
                false,
                K::Unavailable,
            ),
            (
                "mariadb-dump: Error 1412: Table definition has changed, please retry \
                 transaction when dumping table `events` at row: 0",
                false,
                K::Unavailable,
            ),
            (
                "ERROR 1040 (HY000): Too many connections",
                false,
                K::Unavailable,
            ),
            (
                "ERROR 1045 (28000): Access denied for user 'u'@'localhost' (using password: \
                 YES)",
                false,
                K::Config,
            ),
            (
                "mariadb-dump: Got error: 1049: \"Unknown database 'nope'\" when selecting the \
                 database",
                false,
                K::Config,
            ),
            (
                "mariadb-dump: Couldn't execute 'FLUSH TABLES WITH READ LOCK': Access denied; \
                 you need (at least one of) the RELOAD privilege(s) for this operation (1227)",
                false,
                K::Config,
            ),
            (
                "mariadb: unknown variable 'no_such_option_here=1'",
                false,
                K::Config,
            ),
            (
                "mariadb-dump: option '--x' requires an argument",
                true,
                K::Config,
            ),
            (
                "mariadb-dump: Couldn't execute 'SHOW FIELDS FROM `zz`': Table 'f.zz' doesn't \
                 exist (1146)",
                false,
                K::Failed,
            ),
            (
                "ERROR 1959 (OP000) at line 5: Invalid role specification `r`",
                false,
                K::Failed,
            ),
            ("", false, K::Failed),
        ] {
            assert_eq!(classify(msg, usage), kind, "{msg}");
        }
        assert_eq!(K::Unavailable.error_kind(), ErrorKind::Transient);
        assert_eq!(K::Config.error_kind(), ErrorKind::InvalidInput);
        assert_eq!(K::Failed.error_kind(), ErrorKind::Other);
        // The kind and the cause survive added context; the message reads as one sentence.
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = context(
            spawn_error(Path::new("/x/mariadb"), io),
            "restoring table `t`",
        );
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            "restoring table `t`: could not run /x/mariadb"
        );
        assert!(std::error::Error::source(&e).is_some());
        use std::os::unix::process::ExitStatusExt;
        let e = tool_failed(
            "mariadb",
            std::process::ExitStatus::from_raw(1 << 8),
            b"ERROR 2006 (HY000) at line 3: Server has gone away\n",
            false,
        );
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert_eq!(
            e.to_string(),
            "mariadb failed (exit status: 1): ERROR 2006 (HY000) at line 3: Server has gone away"
        );
    }

    #[test]
    fn sql_quoting() {
        assert_eq!(sql_string("it's \\"), "'it''s \\\\'");
        assert_eq!(sql_ident("a`b"), "`a``b`");
    }

    #[test]
    fn dump_arguments_are_consistent_and_deterministic() {
        let a = dump_args(&DumpOptions {
            databases: vec!["app".into()],
            exclude_tables: vec!["app.log".into()],
            binlog: true,
            mariadb: true,
            insert_bytes: Some(65536),
            max_allowed_packet: None,
        });
        for must in [
            "--single-transaction",
            "--order-by-primary",
            "--skip-dump-date",
            "--master-data=2",
            "--gtid",
            "--ignore-table=app.log",
            "--net-buffer-length=65536",
            "--max-allowed-packet=1073741824",
        ] {
            assert!(a.iter().any(|x| x == must), "{must}");
        }
        assert!(!a.iter().any(|x| x == "--skip-comments"));
        assert_eq!(a[a.len() - 2..], ["--databases", "app"]);
    }

    #[test]
    fn passwords_stay_off_the_command_line() {
        let c = Connection {
            user: Some("u".into()),
            password: Some(Zeroizing::new("s3cret".into())),
            ..Default::default()
        };
        let cmd = c.command(Path::new("/bin/true"));
        assert!(
            cmd.get_args()
                .all(|a| !a.to_string_lossy().contains("s3cret"))
        );
        assert!(
            cmd.get_envs()
                .any(|(k, v)| k == "MYSQL_PWD" && v.is_some_and(|v| v == "s3cret"))
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
