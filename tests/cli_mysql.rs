//! `cairn mysql backup` / `cairn mysql restore` against a real MariaDB server (issue 4): table
//! by table snapshots from one consistent dump, restores of one table that give back the same
//! `CHECKSUM TABLE`, dedup of unchanged tables, and failed dumps that write no snapshot.

mod common;

use common::Env;
use serde_json::Value;

/// `cairn mysql backup --json --databases DB EXTRA...` against the test server.
fn mysql_backup(env: &Env, srv: &common::mysql::Server, dbs: &str, extra: &[&str]) -> common::Out {
    env.cmd()
        .args(["mysql", "backup", "--json", "--databases", dbs])
        .args(srv.cairn_args())
        .args(extra)
        .run()
}

fn meta<'a>(snap: &'a Value, key: &str) -> Option<&'a str> {
    snap["meta"][key].as_str()
}

/// Tables with NULLs, binary data, Unicode and awkward names, a view, a trigger and a routine.
fn fill_app(srv: &common::mysql::Server, db: &str) {
    srv.sql(
        Some(db),
        r#"
        CREATE TABLE users (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(50) NOT NULL,
            email VARCHAR(100) NULL, bio MEDIUMTEXT NULL, created DATETIME(6) NULL,
            score DOUBLE NULL, flags BIT(8) NULL);
        INSERT INTO users (name, email, bio, created, score, flags) VALUES
            ('ann', NULL, NULL, NULL, NULL, NULL),
            ('Zoë ünïcødé 😀', 'z@example.com', 'line1\nline2\ttab \'quoted\' "dq" \\ backslash;', '2024-02-29 12:34:56.789012', -1.5e-300, b'10100101'),
            ('-- Table structure for table `users`', '', 'DELIMITER ;;', '1970-01-01 00:00:01', 0, b'0'),
            ('日本語テキスト', NULL, REPEAT('x', 70000), NULL, 3.14159, NULL);
        CREATE TABLE files (id BIGINT PRIMARY KEY, data LONGBLOB NULL, small TINYBLOB NULL);
        INSERT INTO files VALUES (1, NULL, ''), (2, 0x00FF0A0D275C22601A, 0x00),
            (3, RANDOM_BYTES(1024), RANDOM_BYTES(200)), (4, REPEAT(RANDOM_BYTES(1000), 300), NULL);
        CREATE TABLE `odd ``name``/with;stuff` (k VARCHAR(10) PRIMARY KEY, v INT);
        INSERT INTO `odd ``name``/with;stuff` VALUES ('a', 1), ('b', NULL);
        CREATE TABLE _schema (x INT);
        INSERT INTO _schema VALUES (42);
        CREATE TABLE empty_one (x INT PRIMARY KEY);
        CREATE TABLE nopk (a INT, b VARCHAR(10));
        INSERT INTO nopk VALUES (2, 'b'), (1, 'a'), (2, 'b');
        CREATE VIEW user_names AS SELECT id, name FROM users;
        CREATE TRIGGER users_lower BEFORE INSERT ON users FOR EACH ROW SET NEW.email = LOWER(NEW.email);
        CREATE PROCEDURE count_users() SELECT COUNT(*) FROM users;
        "#,
    );
}

const APP_TABLES: &[&str] = &[
    "users",
    "files",
    "odd `name`/with;stuff",
    "_schema",
    "empty_one",
    "nopk",
];

#[test]
fn tables_restore_one_by_one_with_the_same_checksum() {
    let srv = mysql_server_or_skip!();
    let env = Env::with_repo();
    let db = srv.database("app");
    fill_app(srv, &db);
    // A million rows, generated in the server.
    srv.sql(
        Some(&db),
        "CREATE TABLE big (id INT PRIMARY KEY, n INT NOT NULL, s VARCHAR(40) NULL);
         INSERT INTO big SELECT seq, seq * 7 % 1000, IF(seq % 10 = 0, NULL, CONCAT('row ', seq))
           FROM seq_1_to_1000000;",
    );
    let mut tables: Vec<&str> = APP_TABLES.to_vec();
    tables.push("big");
    let before: Vec<(String, Option<String>)> = tables
        .iter()
        .map(|t| (t.to_string(), srv.checksum(&db, t)))
        .collect();
    assert!(before.iter().all(|(_, c)| c.is_some()));

    let started = std::time::Instant::now();
    let out = mysql_backup(&env, srv, &db, &[]).ok();
    eprintln!("backup of {db} took {:?}", started.elapsed());
    let id = out.json()["snapshot_id"].as_str().unwrap().to_string();

    // The snapshot records the server, the binlog position and exact row counts.
    let snaps = env.snapshots();
    let snap = &snaps[0];
    assert_eq!(snap["source"], "mysql");
    assert!(
        meta(snap, "mysql.server_version")
            .unwrap()
            .contains("MariaDB")
    );
    assert!(
        meta(snap, "mysql.binlog_file")
            .unwrap()
            .starts_with("binlog.")
    );
    assert!(
        meta(snap, "mysql.binlog_position")
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    assert!(!meta(snap, "mysql.gtid").unwrap().is_empty());
    assert_eq!(meta(snap, &format!("mysql.rows:{db}/big")), Some("1000000"));
    assert_eq!(meta(snap, &format!("mysql.rows:{db}/users")), Some("4"));
    assert_eq!(meta(snap, &format!("mysql.rows:{db}/empty_one")), Some("0"));
    assert_eq!(meta(snap, &format!("mysql.rows:{db}/nopk")), Some("3"));

    // ls shows one file per table (names encoded), and the schema file.
    let ls = env
        .run(["ls", &id, &format!("mysql/{db}")])
        .ok()
        .stdout_str();
    for f in [
        "users.sql",
        "files.sql",
        "odd `name`%2Fwith;stuff.sql",
        "%5Fschema.sql",
        "_schema.sql",
        "big.sql",
    ] {
        assert!(
            ls.lines().any(|l| l == format!("/mysql/{db}/{f}")),
            "{f} missing from:\n{ls}"
        );
    }
    // dump gives the table's SQL: loadable on its own (session settings, no USE).
    let sql = env
        .run(["dump", &id, &format!("mysql/{db}/users.sql")])
        .ok()
        .stdout_str();
    assert!(sql.contains("CREATE TABLE `users`"));
    assert!(sql.contains("TRIGGER users_lower"));
    assert!(sql.contains("SET NAMES utf8mb4"));
    assert!(sql.trim_end().ends_with("*/;"));
    assert!(!sql.contains("USE `"));
    assert!(!sql.contains("CREATE TABLE `files`"));
    let schema = env
        .run(["dump", &id, &format!("mysql/{db}/_schema.sql")])
        .ok()
        .stdout_str();
    assert!(schema.contains("CREATE DATABASE"));
    assert!(schema.contains("VIEW `user_names`"));
    assert!(schema.contains("PROCEDURE `count_users`"));

    // Each table, restored alone into a new database, has the checksum the source had.
    let target = srv.database("restored");
    for (t, sum) in &before {
        let started = std::time::Instant::now();
        env.cmd()
            .args([
                "mysql",
                "restore",
                &id,
                "--database",
                &db,
                "--table",
                t,
                "--into",
                &target,
            ])
            .args(srv.cairn_args())
            .run()
            .ok();
        eprintln!("restore of {t} took {:?}", started.elapsed());
        assert_eq!(&srv.checksum(&target, t), sum, "table {t}");
    }
    // Only those tables were created; the source is untouched.
    let mut expected: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    expected.sort();
    assert_eq!(srv.tables(&target), expected);
    for (t, sum) in &before {
        assert_eq!(&srv.checksum(&db, t), sum, "source table {t} changed");
    }
    assert_eq!(
        srv.sql(Some(&target), "SELECT COUNT(*), COUNT(s) FROM big")
            .trim(),
        "1000000\t900000"
    );
}

#[test]
fn whole_database_restore_and_refusal_to_overwrite() {
    let srv = mysql_server_or_skip!();
    let env = Env::with_repo();
    let db = srv.database("whole");
    fill_app(srv, &db);
    let sums: Vec<_> = APP_TABLES.iter().map(|t| srv.checksum(&db, t)).collect();
    let id = mysql_backup(&env, srv, &db, &[]).ok().json()["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The whole database, into a new one: tables, view, trigger and routine.
    let copy = format!("{db}_copy");
    env.cmd()
        .args([
            "mysql",
            "restore",
            "latest",
            "--database",
            &db,
            "--into",
            &copy,
        ])
        .args(srv.cairn_args())
        .run()
        .ok();
    for (t, s) in APP_TABLES.iter().zip(&sums) {
        assert_eq!(&srv.checksum(&copy, t), s, "{t}");
    }
    assert_eq!(
        srv.sql(Some(&copy), "SELECT name FROM user_names WHERE id = 1")
            .trim(),
        "ann"
    );
    assert_eq!(
        srv.sql(Some(&copy), "CALL count_users()").trim(),
        "4",
        "routine restored"
    );
    srv.sql(
        Some(&copy),
        "INSERT INTO users (name, email) VALUES ('t', 'UP@X')",
    );
    assert_eq!(
        srv.sql(Some(&copy), "SELECT email FROM users WHERE name = 't'")
            .trim(),
        "up@x",
        "trigger restored"
    );

    // Restoring over an existing table needs --force, and says so.
    srv.sql(Some(&db), "DELETE FROM users WHERE id = 1");
    let out = env
        .cmd()
        .args([
            "mysql",
            "restore",
            &id,
            "--database",
            &db,
            "--table",
            "users",
        ])
        .args(srv.cairn_args())
        .run()
        .code(1)
        .stderr_has("--force");
    assert!(out.stderr.contains("already has table `users`"), "{out}");
    assert_ne!(srv.checksum(&db, "users"), sums[0]);
    let out = env
        .cmd()
        .args([
            "mysql",
            "restore",
            &id,
            "--database",
            &db,
            "--table",
            "users",
            "--force",
        ])
        .args(srv.cairn_args())
        .run()
        .ok();
    assert!(
        out.stderr.contains("replaced existing tables: users"),
        "{out}"
    );
    assert_eq!(srv.checksum(&db, "users"), sums[0]);

    // --to-stdout writes the SQL instead of loading it.
    let out = env
        .cmd()
        .args([
            "mysql",
            "restore",
            &id,
            "--database",
            &db,
            "--table",
            "nopk",
            "--to-stdout",
        ])
        .run()
        .ok()
        .stdout_str();
    assert!(out.contains("CREATE TABLE `nopk`") && out.contains("INSERT INTO `nopk`"));

    // Unknown database or table: a clear error.
    env.cmd()
        .args(["mysql", "restore", &id, "--database", "nope", "--to-stdout"])
        .run()
        .code(1)
        .stderr_has("database `nope`");
    env.cmd()
        .args([
            "mysql",
            "restore",
            &id,
            "--database",
            &db,
            "--table",
            "nope",
            "--to-stdout",
        ])
        .run()
        .code(1)
        .stderr_has("`nope` in the snapshot");
}

#[test]
fn unchanged_tables_cost_nothing_and_changed_rows_little() {
    let srv = mysql_server_or_skip!();
    let env = Env::with_repo();
    let db = srv.database("dedup");
    srv.sql(
        Some(&db),
        "CREATE TABLE still (id INT PRIMARY KEY, s VARCHAR(60));
         INSERT INTO still SELECT seq, MD5(seq) FROM seq_1_to_50000;
         CREATE TABLE log (id INT PRIMARY KEY, s VARCHAR(60));
         INSERT INTO log SELECT seq, MD5(seq) FROM seq_1_to_50000;",
    );
    let first = mysql_backup(&env, srv, &db, &[]).ok().json();
    assert_eq!(first["warnings"], serde_json::json!([]), "{first}");
    let full = first["summary"]["new_data_bytes"].as_u64().unwrap();
    // Nothing changed: no data blob is new (the trees are identical too).
    let again = mysql_backup(&env, srv, &db, &[]).ok().json();
    assert_eq!(again["summary"]["data_blobs_added"], 0, "{again}");
    assert_eq!(again["summary"]["new_data_bytes"], 0, "{again}");
    // 1% of one table's rows appended: a small fraction of the first backup is new.
    srv.sql(
        Some(&db),
        "INSERT INTO log SELECT seq, MD5(seq) FROM seq_50001_to_50500",
    );
    let third = mysql_backup(&env, srv, &db, &[]).ok().json();
    let added = third["summary"]["new_data_bytes"].as_u64().unwrap();
    assert!(added > 0 && added < full / 10, "added {added} of {full}");
}

#[test]
fn all_databases_skips_the_system_ones_and_exclude_table_works() {
    let srv = mysql_server_or_skip!();
    let env = Env::with_repo();
    let db = srv.database("allx");
    srv.sql(
        Some(&db),
        "CREATE TABLE keep (x INT); CREATE TABLE skipme (x INT);",
    );
    // Every database of the shared server is dumped, while the other tests change theirs: a
    // dump may meet a table being altered or dropped ("Table definition has changed, please
    // retry transaction", a deadlock) and fail, writing no snapshot. Try again then.
    let backup = || {
        env.cmd()
            .args(["mysql", "backup", "--json", "--all-databases"])
            .args(["--exclude-table", &format!("{db}.skipme")])
            .args(srv.cairn_args())
            .run()
    };
    let mut out = backup();
    for _ in 0..4 {
        if out.code == 0 {
            break;
        }
        assert!(out.stderr.contains("no snapshot written"), "{out}");
        eprintln!(
            "another test's DDL broke the dump, again: {}",
            out.stderr.trim()
        );
        out = backup();
    }
    let out = out.ok();
    let id = out.json()["snapshot_id"].as_str().unwrap().to_string();
    let ls = env.run(["ls", &id, "mysql"]).ok().stdout_str();
    assert!(ls.contains(&format!("/mysql/{db}/keep.sql")), "{ls}");
    assert!(!ls.contains("skipme"), "{ls}");
    for sys in [
        "/mysql/mysql/",
        "/mysql/information_schema",
        "/mysql/performance_schema",
    ] {
        assert!(!ls.contains(sys), "{sys} in {ls}");
    }
}

fn snapshot_count(env: &Env) -> usize {
    env.snapshots().len()
}

#[test]
fn failed_dumps_write_no_snapshot() {
    let srv = mysql_server_or_skip!();
    let env = Env::with_repo();
    let db = srv.database("fail");
    srv.sql(
        Some(&db),
        "CREATE TABLE a_big (id INT PRIMARY KEY, s VARCHAR(100));
         INSERT INTO a_big SELECT seq, REPEAT(MD5(seq), 3) FROM seq_1_to_200000;
         CREATE TABLE zz (x INT); INSERT INTO zz VALUES (1);",
    );
    let user = format!("u{}", std::process::id());
    srv.sql(
        None,
        &format!(
            "CREATE USER '{user}'@'localhost' IDENTIFIED BY 'right-pw';
             GRANT ALL ON *.* TO '{user}'@'localhost';"
        ),
    );

    // Server down (nothing listens on the socket).
    env.cmd()
        .args(["mysql", "backup", "--databases", &db])
        .arg(format!("--socket={}", env.path("no.sock").display()))
        .run()
        .code(1)
        .stderr_has("can't connect");
    // Wrong password (from the environment, never the command line).
    let out = env
        .cmd()
        .args(["mysql", "backup", "--databases", &db, "--user", &user])
        .arg(format!("--socket={}", srv.socket.display()))
        .env("CAIRN_MYSQL_PASSWORD", "wrong-pw")
        .run()
        .code(1)
        .stderr_has("access denied");
    assert!(!out.stderr.contains("wrong-pw"));
    // The client tool missing.
    env.cmd()
        .args(["mysql", "backup", "--databases", &db, "--dump-binary"])
        .arg(env.path("no-such-dump"))
        .args(srv.cairn_args())
        .run()
        .code(1)
        .stderr_has("no-such-dump");
    // A database that does not exist.
    env.cmd()
        .args(["mysql", "backup", "--databases", "no_such_db_here"])
        .args(srv.cairn_args())
        .run()
        .code(1)
        .stderr_has("no_such_db_here");
    // A table dropped while the dump runs: the dump tool fails halfway through.
    let wrapper = env.path("dump-and-drop.sh");
    common::write(
        &wrapper,
        format!(
            "#!/bin/sh\nset -e\n[ \"$1\" = --version ] && exec mariadb-dump --version\n\
             fifo=$(mktemp -u); mkfifo \"$fifo\"\n\
             mariadb-dump \"$@\" > \"$fifo\" & pid=$!\n\
             (head -c 200000; mariadb --no-defaults --socket={} --user=root -e 'DROP TABLE `{db}`.zz'; cat) < \"$fifo\"\n\
             wait $pid; status=$?; rm -f \"$fifo\"; exit $status\n",
            srv.socket.display()
        )
        .as_bytes(),
    );
    common::chmod(&wrapper, 0o755);
    let out = env
        .cmd()
        .args(["mysql", "backup", "--databases", &db, "--dump-binary"])
        .arg(&wrapper)
        .args(srv.cairn_args())
        .run()
        .code(1);
    assert!(
        out.stderr.contains("zz") && out.stderr.contains("no snapshot written"),
        "{out}"
    );
    assert_eq!(snapshot_count(&env), 0);

    // The right password works, and the repository takes the next backup.
    srv.sql(Some(&db), "CREATE TABLE zz (x INT)");
    env.cmd()
        .args(["mysql", "backup", "--databases", &db, "--user", &user])
        .arg(format!("--socket={}", srv.socket.display()))
        .env("MYSQL_PWD", "right-pw")
        .run()
        .ok();
    assert_eq!(snapshot_count(&env), 1);
}

#[test]
fn password_from_an_option_file() {
    let srv = mysql_server_or_skip!();
    let env = Env::with_repo();
    let db = srv.database("optfile");
    srv.sql(
        Some(&db),
        "CREATE TABLE t (x INT); INSERT INTO t VALUES (7);",
    );
    let user = format!("o{}", std::process::id());
    srv.sql(
        None,
        &format!(
            "CREATE USER '{user}'@'localhost' IDENTIFIED BY 'file-pw';
             GRANT ALL ON *.* TO '{user}'@'localhost';"
        ),
    );
    let cnf = env.path("client.cnf");
    common::write(
        &cnf,
        format!(
            "[client]\nuser={user}\npassword=file-pw\nsocket={}\n",
            srv.socket.display()
        )
        .as_bytes(),
    );
    common::chmod(&cnf, 0o600);
    let out = env
        .cmd()
        .args([
            "mysql",
            "backup",
            "--json",
            "--databases",
            &db,
            "--defaults-file",
        ])
        .arg(&cnf)
        .env_remove("MYSQL_PWD")
        .env_remove("CAIRN_MYSQL_PASSWORD")
        .run()
        .ok();
    let id = out.json()["snapshot_id"].as_str().unwrap().to_string();
    let sql = env
        .run(["dump", &id, &format!("mysql/{db}/t.sql")])
        .ok()
        .stdout_str();
    assert!(sql.contains("(7)"), "{sql}");
}

/// `--grants` stores users and grants as `mysql/_grants.sql`, which loads back with the client
/// and gives the same grants; without it there is no such file.
#[test]
fn grants_are_stored_and_load_back() {
    let Some(srv) = common::mysql::server() else {
        return;
    };
    let env = Env::with_repo();
    let db = srv.database("grants");
    srv.sql(
        Some(&db),
        "CREATE TABLE t (x INT PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    let user = format!("app_{db}");
    let account = format!("'{user}'@'localhost'");
    srv.sql(
        None,
        &format!(
            "CREATE USER {account} IDENTIFIED BY 'app s3cret';
             GRANT SELECT, INSERT ON `{db}`.* TO {account};"
        ),
    );
    let before = srv.sql(None, &format!("SHOW GRANTS FOR {account}"));
    assert!(before.contains("GRANT SELECT, INSERT"), "{before}");

    mysql_backup(&env, srv, &db, &[]).ok();
    env.run(["dump", "latest", "mysql/_grants.sql"]).code(1);
    // Restoring grants from a snapshot without them says how to get them.
    env.cmd()
        .args(["mysql", "restore", "latest", "--grants"])
        .args(srv.cairn_args())
        .run()
        .code(1)
        .stderr_has("mysql backup --grants");
    // Nothing to restore: a clear error.
    env.cmd()
        .args(["mysql", "restore", "latest"])
        .args(srv.cairn_args())
        .run()
        .code(1)
        .stderr_has("--database");
    mysql_backup(&env, srv, &db, &["--grants"]).ok();
    let sql = env
        .run(["dump", "latest", "mysql/_grants.sql"])
        .ok()
        .stdout_str();
    // --to-stdout --grants prints the file.
    let printed = env
        .cmd()
        .args(["mysql", "restore", "latest", "--grants", "--to-stdout"])
        .run()
        .ok()
        .stdout_str();
    assert_eq!(printed, sql);
    assert!(
        sql.contains(&format!("CREATE USER IF NOT EXISTS `{user}`@`localhost`")),
        "{sql}"
    );
    assert!(sql.contains("GRANT SELECT, INSERT ON"), "{sql}");
    assert!(!sql.contains("mariadb.sys"), "{sql}");
    assert!(
        !sql.contains("app s3cret"),
        "the password itself must not be stored: {sql}"
    );
    let ls = env.run(["ls", "latest"]).ok().stdout_str();
    assert!(ls.lines().any(|l| l == "/mysql/_grants.sql"), "{ls}");

    // Drop the account, load the file through the client: the same grants and password.
    srv.sql(None, &format!("DROP USER {account}"));
    load_sql(srv, &sql).unwrap();
    assert_eq!(srv.sql(None, &format!("SHOW GRANTS FOR {account}")), before);
    srv.sql(None, &format!("DROP USER {account}"));
}

/// Load SQL into the test server through the client, as root; the client's error if it fails.
fn load_sql(srv: &common::mysql::Server, sql: &str) -> Result<(), String> {
    use std::io::Write;
    let mut load = srv.client();
    load.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = load.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// The lines of `SHOW GRANTS FOR account` that mention `name` (the server is shared, so an
/// account's other grants may change while a test runs), sorted.
fn grants_naming(srv: &common::mysql::Server, account: &str, name: &str) -> Vec<String> {
    let mut v: Vec<String> = srv
        .sql(None, &format!("SHOW GRANTS FOR {account}"))
        .lines()
        .filter(|l| l.contains(name))
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// MariaDB roles (issue 18 item 8): `--grants` stores roles, their privileges, the roles
/// granted to roles and users, and each user's default role, in an order that loads into a
/// server without them (a role granted before it exists stops the load with ERROR 1959). The
/// user then logs in with the role active and its privileges (and its granted role's) work,
/// and loading leaves the loader no admin rights it did not have.
#[test]
fn roles_and_default_roles_are_stored_and_load_back() {
    let srv = mysql_server_or_skip!();
    let env = Env::with_repo();
    let db = srv.database("roles");
    srv.sql(
        Some(&db),
        "CREATE TABLE t (x INT PRIMARY KEY); INSERT INTO t VALUES (1), (2);",
    );
    let (reader, writer, user) = (
        format!("reader_{db}"),
        format!("writer_{db}"),
        format!("ro_{db}"),
    );
    let account = format!("'{user}'@'localhost'");
    srv.sql(
        None,
        &format!(
            "CREATE ROLE '{reader}'; GRANT SELECT ON `{db}`.* TO '{reader}';
             CREATE ROLE '{writer}'; GRANT INSERT ON `{db}`.`t` TO '{writer}';
             GRANT '{writer}' TO '{reader}';
             CREATE USER {account} IDENTIFIED BY 'role pw';
             GRANT '{reader}' TO {account};
             SET DEFAULT ROLE '{reader}' FOR {account};"
        ),
    );
    let login = |sql: &str| srv.sql_as(&user, "role pw", sql);
    let check_login = |label: &str| {
        assert_eq!(
            login("SELECT CURRENT_ROLE()").as_deref().map(str::trim),
            Ok(reader.as_str()),
            "{label}"
        );
        let n = login(&format!("SELECT COUNT(*) FROM `{db}`.t"));
        assert_eq!(n.as_deref().map(str::trim), Ok("2"), "{label}");
    };
    check_login("before the backup");
    let grants_of = |who: &str| {
        let mut v: Vec<String> = srv
            .sql(None, &format!("SHOW GRANTS FOR {who}"))
            .lines()
            .map(String::from)
            .collect();
        v.sort();
        v
    };
    let before = [
        grants_of(&account),
        grants_of(&format!("'{reader}'")),
        grants_of(&format!("'{writer}'")),
    ];
    let root_before = grants_naming(srv, "'root'@'localhost'", &reader);

    mysql_backup(&env, srv, &db, &["--grants"]).ok();
    let sql = env
        .run(["dump", "latest", "mysql/_grants.sql"])
        .ok()
        .stdout_str();

    srv.sql(
        None,
        &format!("DROP USER {account}; DROP ROLE '{reader}'; DROP ROLE '{writer}';"),
    );
    assert!(login("SELECT 1").is_err());
    let restore = || {
        env.cmd()
            .args(["mysql", "restore", "latest", "--grants"])
            .args(srv.cairn_args())
            .run()
    };
    restore().ok();

    check_login("after the load");
    assert!(sql.contains(&format!("`{reader}`")), "{sql}");
    assert!(
        !sql.lines()
            .any(|l| l.starts_with("-- skipped") && l.contains(&reader)),
        "{sql}"
    );
    let after = [
        grants_of(&account),
        grants_of(&format!("'{reader}'")),
        grants_of(&format!("'{writer}'")),
    ];
    assert_eq!(after, before);
    assert_eq!(
        grants_naming(srv, "'root'@'localhost'", &reader),
        root_before
    );
    // No helper role is left behind.
    assert_eq!(
        srv.sql(
            None,
            "SELECT COUNT(*) FROM mysql.user WHERE is_role = 'Y' AND user LIKE 'cairn%'"
        )
        .trim(),
        "0"
    );
    // Loading again over the accounts changes nothing (the loader is the roles' admin, as it
    // was when it created them).
    restore().ok();
    check_login("after loading again");
    assert_eq!(
        [
            grants_of(&account),
            grants_of(&format!("'{reader}'")),
            grants_of(&format!("'{writer}'")),
        ],
        before
    );
    // The role's granted role works too.
    login(&format!("INSERT INTO `{db}`.t VALUES (3)")).unwrap();
    srv.sql(
        None,
        &format!("DROP USER {account}; DROP ROLE '{reader}'; DROP ROLE '{writer}';"),
    );
}

/// The lines of `new` that are not lines of `old`: a night's new and changed rows.
fn new_lines(old: &str, new: &str) -> String {
    let old: std::collections::HashSet<&str> = old.lines().collect();
    new.lines()
        .filter(|l| !old.contains(l))
        .flat_map(|l| [l, "\n"])
        .collect()
}

/// Issue 4's web-app night: 2% new rows appended to one table, 0.5% of another's rows updated
/// (80% of them among its newest 10%), a third table untouched. Changed chunks are stored as
/// deltas against the chunks they replace, so the night costs at most 3x the new and changed
/// rows' SQL compressed alone; restores are exact, and survive a prune of the first snapshot.
#[test]
fn a_web_app_night_costs_about_its_changed_rows() {
    let srv = mysql_server_or_skip!();
    let env = Env::with_repo();
    let db = srv.database("night");
    srv.sql(
        Some(&db),
        "CREATE TABLE orders (id INT PRIMARY KEY, customer INT NOT NULL, status VARCHAR(20),
            total DECIMAL(10,2), note VARCHAR(100), updated DATETIME);
         INSERT INTO orders SELECT seq, seq * 7919 % 5000, ELT(1 + seq % 3, 'paid', 'shipped', 'new'),
            (seq * 37 % 100000) / 100, CONCAT('order ', seq, ' for ', MD5(seq)),
            '2026-01-01' + INTERVAL seq MINUTE FROM seq_1_to_40000;
         CREATE TABLE events (id INT PRIMARY KEY, kind VARCHAR(20), payload VARCHAR(120));
         INSERT INTO events SELECT seq, ELT(1 + seq % 4, 'login', 'view', 'buy', 'logout'),
            CONCAT('{\"user\":', seq % 977, ',\"page\":\"', SHA1(seq), '\"}') FROM seq_1_to_40000;
         CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(80));
         INSERT INTO products SELECT seq, CONCAT('product ', MD5(seq)) FROM seq_1_to_5000;",
    );
    let first = mysql_backup(&env, srv, &db, &[]).ok().json();
    let id1 = first["snapshot_id"].as_str().unwrap().to_string();
    let dump = |id: &str, t: &str| {
        env.run(["dump", id, &format!("mysql/{db}/{t}.sql")])
            .ok()
            .stdout_str()
    };
    // A night: `sql` runs; the tables' checksums are noted and a backup made. Returns the
    // backup's JSON, its snapshot id, the checksums, and the night's new and changed rows' SQL
    // (against snapshot `prev`) with its compressed size.
    let night = |prev: &str, sql: &str| {
        let (orders, events) = (dump(prev, "orders"), dump(prev, "events"));
        srv.sql(Some(&db), sql);
        let sums: Vec<(&str, Option<String>)> = ["orders", "events", "products"]
            .into_iter()
            .map(|t| (t, srv.checksum(&db, t)))
            .collect();
        let out = mysql_backup(&env, srv, &db, &[]).ok().json();
        let id = out["snapshot_id"].as_str().unwrap().to_string();
        let changed =
            new_lines(&orders, &dump(&id, "orders")) + &new_lines(&events, &dump(&id, "events"));
        let zst = cairn::compress::compress(changed.as_bytes(), Default::default())
            .unwrap()
            .len() as u64;
        (out, id, sums, changed, zst)
    };
    // The night: 800 events appended; 200 orders updated, 160 of them among the newest 4,000.
    let (night1, id2, checksums, changed, changed_zst) = night(
        &id1,
        "INSERT INTO events SELECT seq, 'view', CONCAT('{\"user\":', seq % 977, ',\"page\":\"',
            SHA1(seq), '\"}') FROM seq_40001_to_40800;
         UPDATE orders SET status = 'refunded', updated = '2026-11-26 03:00:00'
            WHERE (id > 36000 AND id % 25 = 7) OR (id <= 36000 AND id % 900 = 11);",
    );
    // 200 changed and 800 new rows, and the few lines where extended INSERTs now start or end.
    let n = changed.lines().count();
    assert!((1000..1030).contains(&n), "{n} changed lines");
    let stored = night1["summary"]["stored_bytes_added"].as_u64().unwrap();
    let full = first["summary"]["stored_bytes_added"].as_u64().unwrap();
    let new_data = night1["summary"]["new_data_bytes"].as_u64().unwrap();
    eprintln!(
        "first backup {full} bytes; night {stored} bytes stored, {new_data} bytes of new data; \
         changed rows' SQL {} bytes, {changed_zst} compressed",
        changed.len()
    );
    // The two fields differ by what dedup and deltas save: the night's cost is far below the
    // logical size of its changed chunks.
    assert!(
        stored * 10 < new_data,
        "stored {stored}, new data {new_data}"
    );
    let snaps = env.snapshots();
    assert!(
        stored <= 3 * changed_zst,
        "night {stored} > 3 x {changed_zst}"
    );
    let deltas: u64 = meta(&snaps[1], "delta_blobs").unwrap().parse().unwrap();
    assert!(deltas > 0, "{}", snaps[1]);

    // Nothing new for the untouched table: its stream equals the last one (same extents), which
    // is why its file keeps its time; a changed table's file gets the night's time.
    let mtime = |id: &str, t: &str| {
        let out = env
            .run(["--json", "ls", id, &format!("mysql/{db}/{t}.sql")])
            .ok();
        out.json_lines()[0]["mtime"].clone()
    };
    assert_eq!(mtime(&id1, "products"), mtime(&id2, "products"));
    assert_ne!(mtime(&id1, "orders"), mtime(&id2, "orders"));

    // A second web night updates rows in the same chunks: their new versions are deltas
    // against the first night's deltas (chains of two), and cost about their rows again.
    let (night2, id3, checksums2, _, changed2_zst) = night(
        &id2,
        "INSERT INTO events SELECT seq, 'buy', CONCAT('{\"user\":', seq % 977, ',\"page\":\"',
            SHA1(seq), '\"}') FROM seq_40801_to_41600;
         UPDATE orders SET status = 'lost', updated = '2026-11-27 03:00:00'
            WHERE (id > 36000 AND id % 25 = 9) OR (id <= 36000 AND id % 900 = 13);",
    );
    let stored2 = night2["summary"]["stored_bytes_added"].as_u64().unwrap();
    eprintln!("second night {stored2} bytes; changed rows {changed2_zst} bytes compressed");
    assert!(
        stored2 <= 3 * changed2_zst,
        "second night {stored2} > 3 x {changed2_zst}"
    );
    let deltas: u64 = meta(&env.snapshots()[2], "delta_blobs")
        .unwrap()
        .parse()
        .unwrap();
    assert!(deltas > 0);

    // Restores are exact; then again after the first two snapshots are forgotten and pruned
    // (the second night's deltas are read through the first night's and the first backup's
    // chunks, which the prune must keep).
    let check_restores = |label: &str, id: &str, sums: &[(&str, Option<String>)]| {
        let target = srv.database("night_restored");
        for (t, sum) in sums {
            env.cmd()
                .args(["mysql", "restore", id, "--database", &db, "--table", t])
                .args(["--into", &target])
                .args(srv.cairn_args())
                .run()
                .ok();
            assert_eq!(&srv.checksum(&target, t), sum, "{label}: table {t}");
        }
    };
    check_restores("night 1", &id2, &checksums);
    check_restores("night 2", &id3, &checksums2);
    env.run(["forget", &id1, &id2]).ok();
    env.run(["prune", "--grace", "0s"]).ok();
    env.run(["check", "--read-data"]).ok();
    check_restores("night 2 after prune", &id3, &checksums2);
}

/// A delta blob is only as readable as its base: with the packs of the first backup gone, a
/// table whose every chunk the night stored as a delta is reported damaged in the night's
/// snapshot too (its own blobs are all there), and restoring it fails naming the lost data
/// instead of writing wrong rows.
#[test]
fn a_delta_is_only_as_good_as_its_base() {
    let srv = mysql_server_or_skip!();
    let env = Env::with_repo();
    let db = srv.database("bases");
    srv.sql(
        Some(&db),
        "CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(80), n INT);
         INSERT INTO t SELECT seq, CONCAT('row ', seq, ' ', MD5(seq)), seq % 7 FROM seq_1_to_20000;",
    );
    mysql_backup(&env, srv, &db, &[]).ok();
    let first_packs: Vec<_> = env
        .repo_listing()
        .into_keys()
        .filter(|p| p.starts_with("data"))
        .collect();
    // One row in 50 changes: every chunk of the table changes.
    srv.sql(Some(&db), "UPDATE t SET n = n + 100 WHERE id % 50 = 0");
    let night = mysql_backup(&env, srv, &db, &[]).ok().json();
    let id2 = night["snapshot_id"].as_str().unwrap().to_string();
    let snaps = env.snapshots();
    let deltas: u64 = meta(&snaps[1], "delta_blobs").unwrap().parse().unwrap();
    let added = night["summary"]["data_blobs_added"].as_u64().unwrap();
    // Every changed chunk of t is a delta; the other new data blobs are the dump's preamble.
    assert!(
        deltas >= 3 && deltas + 2 >= added,
        "{deltas} deltas of {added}"
    );
    // A second night changes other rows of the same chunks: its deltas are read through the
    // first night's, and so through the first backup's chunks too.
    srv.sql(Some(&db), "UPDATE t SET n = n + 200 WHERE id % 50 = 1");
    let night2 = mysql_backup(&env, srv, &db, &[]).ok().json();
    let id3 = night2["snapshot_id"].as_str().unwrap().to_string();
    let deltas: u64 = meta(&env.snapshots()[2], "delta_blobs")
        .unwrap()
        .parse()
        .unwrap();
    assert!(deltas >= 3, "{deltas} deltas on the second night");
    for p in &first_packs {
        std::fs::remove_file(env.repo.join(p)).unwrap();
    }
    // The index forgets the lost packs, and a backup of another database stores the dump's
    // preamble again: what is left of t.sql's damage is its chunks' lost bases.
    env.run(["repair", "index"]).ok();
    let other = srv.database("bases_other");
    srv.sql(
        Some(&other),
        "CREATE TABLE x (id INT PRIMARY KEY); INSERT INTO x VALUES (1);",
    );
    mysql_backup(&env, srv, &other, &[]).ok();
    let out = env.cmd().args(["check", "--json"]).run();
    assert_eq!(out.code, 1, "{out}");
    let report = out.json();
    for id in [&id2, &id3] {
        let damaged: Vec<String> = report["damaged_snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["id"] == id.as_str())
            .flat_map(|d| d["paths"].as_array().unwrap().iter())
            .map(|p| format!("{} {}", p["path"], p["reason"]))
            .collect();
        let table = format!("/mysql/{db}/t.sql");
        assert!(
            damaged
                .iter()
                .any(|d| d.contains(&table) && d.contains("delta")),
            "{id}: {damaged:?}"
        );
        let out = env.run(["dump", id, &format!("mysql/{db}/t.sql")]).code(1);
        assert!(out.stderr.contains("the base of delta blob"), "{out}");
    }
}

/// A row larger than 16 MiB under Debian's stock client configuration (`max_allowed_packet =
/// 16M` for the client and the dump tool) backs up and restores identically: cairn gives both
/// tools a large `--max-allowed-packet` (issue 18 item 8; before, the dump failed). One set too
/// small fails naming the setting.
#[test]
fn a_row_larger_than_the_stock_packet_limit_backs_up_and_restores() {
    let srv = mysql_server_or_skip!();
    let env = Env::with_repo();
    let db = srv.database("bigrow");
    srv.sql(
        Some(&db),
        "CREATE TABLE b (id INT PRIMARY KEY, data LONGBLOB NOT NULL);
         INSERT INTO b VALUES (1, REPEAT(RANDOM_BYTES(1024), 20 * 1024)), (2, 'small');",
    );
    assert_eq!(
        srv.sql(Some(&db), "SELECT MAX(LENGTH(data)) FROM b").trim(),
        (20 << 20).to_string()
    );
    let sum = srv.checksum(&db, "b");
    let cnf = env.path("debian.cnf");
    common::write(
        &cnf,
        format!(
            "[client]\nuser=root\nsocket={}\nmax_allowed_packet=16M\n\
             [mysqldump]\nmax_allowed_packet=16M\n[mariadb-dump]\nmax_allowed_packet=16M\n",
            srv.socket.display()
        )
        .as_bytes(),
    );
    let backup = |extra: &[&str]| {
        env.cmd()
            .args([
                "mysql",
                "backup",
                "--json",
                "--databases",
                &db,
                "--defaults-file",
            ])
            .arg(&cnf)
            .args(extra)
            .env_remove("MYSQL_PWD")
            .run()
    };
    let id = backup(&[]).ok().json()["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let copy = format!("{db}_copy");
    env.cmd()
        .args(["mysql", "restore", &id, "--database", &db, "--into", &copy])
        .arg("--defaults-file")
        .arg(&cnf)
        .run()
        .ok();
    assert_eq!(srv.checksum(&copy, "b"), sum);

    // Too small a setting: the error names it.
    let out = backup(&["--max-allowed-packet", "1M"]).code(1);
    assert!(out.stderr.contains("--max-allowed-packet"), "{out}");
    assert_eq!(env.snapshots().len(), 1);
    // The 40 MB INSERT refused by the server (the user may create the table but not insert):
    // the error is the server's, without the statement the client echoes before it.
    let (user, limited) = (format!("lim_{db}"), format!("{db}_lim"));
    srv.sql(
        None,
        &format!(
            "CREATE USER '{user}'@'localhost' IDENTIFIED BY 'lim pw';
             GRANT CREATE, DROP, ALTER, SELECT, LOCK TABLES ON `{limited}`.* TO '{user}'@'localhost';
             CREATE DATABASE `{limited}`;"
        ),
    );
    let out = env
        .cmd()
        .args(["mysql", "restore", &id, "--database", &db, "--table", "b"])
        .args(["--into", &limited, "--user", &user])
        .arg(format!("--socket={}", srv.socket.display()))
        .env("CAIRN_MYSQL_PASSWORD", "lim pw")
        .run()
        .code(1);
    assert!(out.stderr.contains("INSERT command denied"), "{out}");
    assert!(out.stderr.len() < 2000, "{} bytes", out.stderr.len());
    assert!(!out.stderr.contains("--max-allowed-packet"), "{out}");
    srv.sql(None, &format!("DROP USER '{user}'@'localhost'"));
}

/// Tables the dump's transaction does not cover (MyISAM, Aria, MEMORY: anything but InnoDB)
/// and FLOAT columns (dumped with 6 significant digits) are warned about, named, on stderr and
/// in --json; views, excluded tables and DOUBLE columns are not (issue 18 item 8).
#[test]
fn non_transactional_tables_and_float_columns_are_warned_about() {
    let srv = mysql_server_or_skip!();
    let env = Env::with_repo();
    let db = srv.database("warn");
    srv.sql(
        Some(&db),
        "CREATE TABLE inno (id INT PRIMARY KEY, f FLOAT, d DOUBLE, g FLOAT(10,2));
         INSERT INTO inno VALUES (1, 16777217, 16777217, 1.5);
         CREATE TABLE myi (x INT) ENGINE=MyISAM;
         CREATE TABLE ari (x INT) ENGINE=Aria;
         CREATE TABLE mem (x INT) ENGINE=MEMORY;
         CREATE TABLE skipped (x FLOAT) ENGINE=MyISAM;
         CREATE VIEW v AS SELECT f FROM inno;",
    );
    let out = mysql_backup(
        &env,
        srv,
        &db,
        &["--exclude-table", &format!("{db}.skipped")],
    )
    .ok();
    let warnings = out.json()["warnings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut seen: Vec<String> = warnings
        .iter()
        .map(|w| {
            format!(
                "{} {}.{}.{}{}",
                w["kind"].as_str().unwrap_or("?"),
                w["database"].as_str().unwrap_or("?"),
                w["table"].as_str().unwrap_or("?"),
                w["column"].as_str().unwrap_or(""),
                w["engine"].as_str().unwrap_or(""),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            format!("float_column {db}.inno.f"),
            format!("float_column {db}.inno.g"),
            format!("non_transactional {db}.ari.Aria"),
            format!("non_transactional {db}.mem.MEMORY"),
            format!("non_transactional {db}.myi.MyISAM"),
        ],
        "{out}"
    );
    for w in &warnings {
        assert!(
            w["path"]
                .as_str()
                .unwrap()
                .starts_with(&format!("/mysql/{db}/")),
            "{w}"
        );
        assert!(!w["message"].as_str().unwrap().is_empty(), "{w}");
    }
    // On stderr too, in words.
    for needle in [
        format!("`{db}`.`myi` uses the MyISAM engine"),
        format!("`{db}`.`inno`.`f` is FLOAT"),
        "DOUBLE".to_string(),
    ] {
        assert!(out.stderr.contains(&needle), "{needle:?} missing: {out}");
    }
    assert!(!out.stderr.contains("skipped"), "{out}");
    assert!(!out.stderr.contains("`d`"), "{out}");
    // The text output warns as well.
    let out = env
        .cmd()
        .args(["mysql", "backup", "--databases", &db])
        .args(srv.cairn_args())
        .run()
        .ok();
    assert!(out.stderr.contains("uses the Aria engine"), "{out}");
}

/// `--to-stdout --into NEWDB` writes SQL that targets NEWDB, as a restore into the server
/// would: loaded with a client that has no database selected, it creates NEWDB and fills it,
/// and leaves the original alone (issue 18 item 8; before, --into was ignored and the SQL
/// named no database).
#[test]
fn to_stdout_honours_into() {
    let srv = mysql_server_or_skip!();
    let env = Env::with_repo();
    let db = srv.database("stdout");
    fill_app(srv, &db);
    let sums: Vec<_> = APP_TABLES.iter().map(|t| srv.checksum(&db, t)).collect();
    let id = mysql_backup(&env, srv, &db, &[]).ok().json()["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let to_stdout = |extra: &[&str]| {
        env.cmd()
            .args(["mysql", "restore", &id, "--database", &db, "--to-stdout"])
            .args(extra)
            .run()
            .ok()
            .stdout_str()
    };
    // The whole database.
    let copy = format!("{db}_piped");
    let sql = to_stdout(&["--into", &copy]);
    let named: Vec<&str> = sql
        .lines()
        .filter(|l| l.contains(&format!("`{db}`")))
        .collect();
    assert!(named.is_empty(), "the original is named: {named:?}");
    load_sql(srv, &sql).unwrap_or_else(|e| panic!("{e}"));
    for (t, s) in APP_TABLES.iter().zip(&sums) {
        assert_eq!(&srv.checksum(&copy, t), s, "{t}");
    }
    assert_eq!(
        srv.sql(Some(&copy), "SELECT name FROM user_names WHERE id = 1")
            .trim(),
        "ann"
    );
    assert_eq!(srv.sql(Some(&copy), "CALL count_users()").trim(), "4");
    // One table, into a database that does not exist yet.
    let one = format!("{db}_one");
    load_sql(srv, &to_stdout(&["--table", "files", "--into", &one])).unwrap();
    assert_eq!(srv.tables(&one), ["files"]);
    assert_eq!(srv.checksum(&one, "files"), sums[1]);
    // The original is untouched.
    for (t, s) in APP_TABLES.iter().zip(&sums) {
        assert_eq!(&srv.checksum(&db, t), s, "{t}");
    }
}

#[test]
fn find_and_diff_name_the_tables_of_database_snapshots() {
    let srv = mysql_server_or_skip!();
    let env = Env::with_repo();
    let db = srv.database("finddiff");
    srv.sql(
        Some(&db),
        "CREATE TABLE orders (id INT PRIMARY KEY, s VARCHAR(60));
         INSERT INTO orders SELECT seq, MD5(seq) FROM seq_1_to_2000;
         CREATE TABLE customers (id INT PRIMARY KEY, s VARCHAR(60));
         INSERT INTO customers SELECT seq, MD5(seq) FROM seq_1_to_300;",
    );
    let first = mysql_backup(&env, srv, &db, &[]).ok().json();
    srv.sql(Some(&db), "DELETE FROM orders WHERE id > 1990");
    let second = mysql_backup(&env, srv, &db, &[]).ok().json();
    let (a, b) = (
        first["snapshot_id"].as_str().unwrap(),
        second["snapshot_id"].as_str().unwrap(),
    );
    // Which tables changed: orders, with its row counts; customers did not.
    let d = env.cmd().args(["--json", "diff", a, b]).run().ok().json();
    let changes = d["changes"].as_array().unwrap();
    let tables: Vec<&Value> = changes.iter().filter(|c| !c["table"].is_null()).collect();
    assert_eq!(tables.len(), 1, "{d}");
    assert_eq!(tables[0]["table"], format!("{db}.orders"));
    assert_eq!(tables[0]["change"], "modified");
    assert_eq!(
        (
            tables[0]["old_rows"].as_u64(),
            tables[0]["new_rows"].as_u64()
        ),
        (Some(2000), Some(1990))
    );
    let text = env.cmd().args(["diff", a, b]).run().ok().stdout_str();
    assert!(
        text.contains(&format!("table {db}.orders, rows 2000 -> 1990")),
        "{text}"
    );
    // A table is found by its name in every snapshot that holds it.
    let f = env
        .cmd()
        .args(["--json", "find", "orders"])
        .run()
        .ok()
        .json();
    let m = f["matches"].as_array().unwrap();
    assert_eq!(m.len(), 2, "{f}");
    assert!(
        m.iter().all(|x| x["table"] == format!("{db}.orders")),
        "{f}"
    );
    let ids: Vec<&str> = m.iter().map(|x| x["snapshot"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![a, b]);
}
