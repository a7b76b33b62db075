//! `cairn config init --preset laravel`: a commented starting file for a Laravel application,
//! its database settings read from the app's `.env` (the password is referenced, never
//! copied).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

/// The settings of a Laravel `.env` file that matter here.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DotEnv {
    pub vars: BTreeMap<String, String>,
}

impl DotEnv {
    /// Parse `KEY=VALUE` lines (`export ` prefixes, quotes and `#` comments as Laravel's
    /// dotenv reads them; `${...}` interpolation is left as written).
    pub fn parse(text: &str) -> DotEnv {
        let mut vars = BTreeMap::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let l = l.strip_prefix("export ").unwrap_or(l);
            let Some((k, v)) = l.split_once('=') else {
                continue;
            };
            let v = v.trim();
            let v = if let Some(q) = v.strip_prefix('"') {
                q.split_once('"').map_or(q, |(a, _)| a)
            } else if let Some(q) = v.strip_prefix('\'') {
                q.split_once('\'').map_or(q, |(a, _)| a)
            } else {
                v.split(" #").next().unwrap_or(v).trim()
            };
            vars.insert(k.trim().to_string(), v.to_string());
        }
        DotEnv { vars }
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.vars
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The starting file for the app in `app` (an absolute path is best: the file is read by a
/// service that may run elsewhere).
pub fn init(app: &Path) -> Result<String> {
    let app = std::path::absolute(app).map_err(|e| Error::io(app, e))?;
    if !app.join("artisan").exists() && !app.join("storage").is_dir() {
        return Err(Error::invalid(format!(
            "{} does not look like a Laravel application (no artisan, no storage/)",
            app.display()
        )));
    }
    let env_path = app.join(".env");
    let env = match std::fs::read_to_string(&env_path) {
        Ok(t) => DotEnv::parse(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DotEnv::default(),
        Err(e) => return Err(Error::io(env_path, e)),
    };
    let name = env
        .get("APP_NAME")
        .map(slug)
        .filter(|s| !s.is_empty())
        .or_else(|| app.file_name().map(|n| slug(&n.to_string_lossy())))
        .unwrap_or_else(|| "app".into());
    let p = |rel: &str| quote(&app.join(rel).to_string_lossy());
    let mut out = String::new();
    out.push_str(&format!(
        "# cairn configuration for the Laravel application in {app}\n\
         # (written by `cairn config init --preset laravel`; check it with `cairn config check`).\n\
         # Durations are written 90s, 1h30m, 7d; sizes 512M, 2G. ${{VAR}} is replaced from the\n\
         # environment, so secrets can stay out of this file.\n\n\
         [settings]\n\
         repository = \"local\"\n\
         lease-wait = \"10m\"\n\n",
        app = app.display()
    ));
    out.push_str(&format!(
        "# Nightly snapshots on this machine, kept 7 days.\n\
         [repositories.local]\n\
         url = {local}\n\
         password-file = \"/etc/cairn/{name}.password\"\n\
         keep-daily = 7\n\n\
         # The offsite copy on S3, kept 30 days. Its credentials: AWS_ACCESS_KEY_ID and\n\
         # AWS_SECRET_ACCESS_KEY in cairn's environment, or the two lines below (the secret\n\
         # as a ${{VAR}} reference; a literal one needs this file to be mode 0600).\n\
         [repositories.offsite]\n\
         url = \"s3://CHANGE-ME-bucket/cairn/{name}\"\n\
         password-file = \"/etc/cairn/{name}.password\"\n\
         # s3.access-key-id = \"CHANGE-ME\"\n\
         # s3.secret-access-key = \"${{OFFSITE_S3_SECRET}}\"\n\
         # s3.endpoint = \"https://s3.eu-central-1.amazonaws.com\"\n\
         # s3.region = \"eu-central-1\"\n\
         keep-daily = 30\n\n",
        local = quote(&format!("/var/backups/cairn/{name}")),
    ));
    out.push_str(&format!(
        "# Uploads (storage/app).\n\
         [sources.uploads]\n\
         kind = \"files\"\n\
         paths = [{uploads}]\n\
         # node_modules, .git, .env*, storage/framework/{{cache,sessions,views}}, *.tmp, *.swp, *~\n\
         exclude-presets = [\"laravel\"]\n\n\
         # The application's configuration and logs.\n\
         [sources.app]\n\
         kind = \"files\"\n\
         paths = [{config}, {logs}]\n\
         exclude-presets = [\"laravel\"]\n\n",
        uploads = p("storage/app"),
        config = p("config"),
        logs = p("storage/logs"),
    ));
    let mut sources = vec!["\"uploads\"", "\"app\""];
    let connection = env.get("DB_CONNECTION").unwrap_or("mysql");
    if matches!(connection, "mysql" | "mariadb") {
        let database = env.get("DB_DATABASE").unwrap_or("laravel");
        out.push_str(
            "# The database, from the app's .env. The password is not copied here: export\n",
        );
        out.push_str(
            "# DB_PASSWORD to cairn's environment (or use password-file / defaults-file).\n",
        );
        out.push_str("[sources.database]\nkind = \"mysql\"\n");
        let host = env.get("DB_HOST").unwrap_or("127.0.0.1");
        if let Some(sock) = env.get("DB_SOCKET") {
            out.push_str(&format!("socket = {}\n", quote(sock)));
        } else {
            out.push_str(&format!("host = {}\n", quote(host)));
            let port = env
                .get("DB_PORT")
                .and_then(|p| p.parse::<u16>().ok())
                .unwrap_or(3306);
            out.push_str(&format!("port = {port}\n"));
        }
        out.push_str(&format!(
            "user = {}\npassword = \"${{DB_PASSWORD}}\"\ndatabases = [{}]\n\n",
            quote(env.get("DB_USERNAME").unwrap_or("root")),
            quote(database)
        ));
        sources.push("\"database\"");
    } else {
        out.push_str(&format!(
            "# DB_CONNECTION is {connection:?}: cairn backs up MySQL and MariaDB databases only.\n\n"
        ));
    }
    out.push_str(&format!(
        "# `cairn run nightly`: back up every source (at the same time), copy the new snapshots\n\
         # offsite, apply each repository's keep-* rules, prune, and check a sample.\n\
         [jobs.nightly]\n\
         sources = [{sources}]\n\
         repository = \"local\"\n\
         copy-to = [\"offsite\"]\n\
         forget = true\n\
         prune = true\n\
         check = \"5%\"\n\n\
         [jobs.nightly.hooks]\n\
         # Shell commands; each gets CAIRN_RUN_ID, CAIRN_JOB, CAIRN_OUTCOME and CAIRN_SNAPSHOTS.\n\
         # before = [\"php {artisan} down --retry=60\"]\n\
         # after = [\"php {artisan} up\"]\n\
         # on-error = [\"php {artisan} up\"]\n\
         # validate = [\"jq -e '.outcome == \\\"success\\\"'\"]\n\
         timeout = \"5m\"\n",
        sources = sources.join(", "),
        artisan = app.join("artisan").display(),
    ));
    Ok(out)
}

/// A name usable in paths and bucket prefixes: lower case, `-` for anything else.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_values() {
        let e = DotEnv::parse(
            "# comment\nAPP_NAME=\"My Shop\"\nDB_HOST=db.internal # the db\nexport DB_PORT=3307\n\
             DB_PASSWORD='s3cr#t'\nEMPTY=\n",
        );
        assert_eq!(e.get("APP_NAME"), Some("My Shop"));
        assert_eq!(e.get("DB_HOST"), Some("db.internal"));
        assert_eq!(e.get("DB_PORT"), Some("3307"));
        assert_eq!(e.get("DB_PASSWORD"), Some("s3cr#t"));
        assert_eq!(e.get("EMPTY"), None);
        assert_eq!(slug("My Shop!"), "my-shop");
    }
}
