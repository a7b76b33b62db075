//! The global settings, resolved once: the command line (with the environment variables clap
//! reads for a flag), then the rest of the environment, then the configuration file, then the
//! defaults. Commands receive a [`Settings`] and read neither the environment nor the file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use zeroize::Zeroizing;

use cairn::Error;
use cairn::backend::s3::{Addressing, S3Options, StaticCredentials};
use cairn::config::{self, ConfigFile, RepositoryConfig, Secret};
use cairn::repo::default_cache_dir;

use super::args::GlobalArgs;
use super::s3args::AddressingArg;

/// Everything a command needs to know beyond its own arguments.
pub struct Settings {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
    pub lease_wait: Duration,
    pub cache_dir: PathBuf,
    pub state_dir: PathBuf,
    pub cache_size: Option<u64>,
    pub accept_repository_change: bool,
    /// The configuration file, if there is one.
    pub config: Option<ConfigFile>,
    /// The repository of `-r` / `CAIRN_REPO` / `[settings] repository`, if any.
    pub repo: Option<RepoSettings>,
    /// Whether `-r` / `CAIRN_REPO` chose it (not the file's default).
    repo_given: bool,
    /// `CAIRN_PASSWORD`, `--password-file`.
    flag_passwords: Vec<PasswordSource>,
    flags: RepoFlags,
}

/// The flags that apply to every repository a command opens.
struct RepoFlags {
    connections: Option<usize>,
    s3_storage_class: Option<String>,
    s3_addressing: Option<AddressingArg>,
    s3_timeout: Option<Duration>,
    s3_retries: Option<usize>,
}

/// One repository, resolved: where, how to reach it, and where its password comes from.
pub struct RepoSettings {
    /// Its name in the configuration file, if it has one.
    pub name: Option<String>,
    pub url: String,
    pub connections: usize,
    pub s3: S3Options,
    password: Vec<PasswordSource>,
}

#[derive(Clone)]
enum PasswordSource {
    /// `CAIRN_PASSWORD`, read when the settings were resolved.
    Given(Zeroizing<Vec<u8>>),
    File(PathBuf),
    /// `sh -c COMMAND`, its first line of output.
    Command(String),
    /// `password = "..."` in the configuration (a literal or `${VAR}`), and its key.
    Config(Secret, String),
}

impl Settings {
    /// Resolve `g` with the environment and the configuration file (found as
    /// [`config::locate`] says; not read at all if `read_config` is false).
    pub fn resolve(g: &GlobalArgs, read_config: bool) -> Result<Settings> {
        let config = if read_config {
            config::locate(g.config.as_deref())?
                .map(|p| ConfigFile::load(&p))
                .transpose()?
        } else {
            None
        };
        let file = config.as_ref().map(|c| &c.config.settings);
        let lease_wait = match (&g.lease_wait, file.and_then(|s| s.lease_wait)) {
            (Some(flag), _) => config::value::parse_duration(flag).context("--lease-wait")?,
            (None, Some(d)) => d.0,
            (None, None) => Duration::ZERO,
        };
        let s3_timeout =
            g.s3.s3_timeout
                .as_deref()
                .map(|t| config::value::parse_duration(t).context("--s3-timeout"))
                .transpose()?;
        let mut s = Settings {
            json: g.json || file.and_then(|f| f.json).unwrap_or(false),
            quiet: g.quiet || file.and_then(|f| f.quiet).unwrap_or(false),
            verbose: if g.verbose > 0 {
                g.verbose
            } else {
                file.and_then(|f| f.verbose).unwrap_or(0)
            },
            lease_wait,
            cache_dir: g
                .cache_dir
                .clone()
                .or_else(|| file.and_then(|f| f.cache_dir.clone()))
                .unwrap_or_else(default_cache_dir),
            state_dir: g
                .state_dir
                .clone()
                .or_else(|| file.and_then(|f| f.state_dir.clone()))
                .unwrap_or_else(cairn::job::history::default_state_dir),
            cache_size: g
                .cache_size
                .or_else(|| file.and_then(|f| f.cache_size.map(|s| s.0))),
            accept_repository_change: g.accept_repository_change,
            flags: RepoFlags {
                connections: g.connections,
                s3_storage_class: g.s3.s3_storage_class.clone().filter(|s| !s.is_empty()),
                s3_addressing: g.s3.s3_addressing,
                s3_timeout,
                s3_retries: g.s3.s3_retries,
            },
            config,
            repo: None,
            repo_given: g.repo.as_ref().is_some_and(|r| !r.is_empty()),
            flag_passwords: Vec::new(),
        };
        let spec = g.repo.clone().filter(|r| !r.is_empty()).or_else(|| {
            s.config
                .as_ref()
                .and_then(|c| c.config.settings.repository.as_ref())
                .map(|r| r.get_ref().clone())
        });
        if let Some(p) = std::env::var_os("CAIRN_PASSWORD") {
            use std::os::unix::ffi::OsStringExt;
            s.flag_passwords
                .push(PasswordSource::Given(Zeroizing::new(p.into_vec())));
        }
        if let Some(f) = &g.password_file {
            s.flag_passwords.push(PasswordSource::File(f.clone()));
        }
        if let Some(spec) = spec {
            s.repo = Some(s.selected_repository(&spec)?);
        }
        Ok(s)
    }

    /// The repository `spec` names as the one a command works on (`-r`, `check
    /// --repository`): `CAIRN_PASSWORD` and `--password-file` come before what the file says.
    pub fn selected_repository(&self, spec: &str) -> Result<RepoSettings> {
        let mut repo = self.repository(spec)?;
        let mut first = self.flag_passwords.clone();
        first.append(&mut repo.password);
        repo.password = first;
        Ok(repo)
    }

    /// A repository a job or a source names: its own password sources first, then
    /// `CAIRN_PASSWORD` and `--password-file`.
    pub fn repository_or_flag_password(&self, spec: &str) -> Result<RepoSettings> {
        let mut repo = self.repository(spec)?;
        repo.password.extend(self.flag_passwords.iter().cloned());
        Ok(repo)
    }

    /// Another repository `spec` names (a job's, a copy's target), with only its own
    /// password sources: a repository of the configuration file, or a location (a directory
    /// or `s3://...`).
    pub fn repository(&self, spec: &str) -> Result<RepoSettings> {
        let named = self
            .config
            .as_ref()
            .and_then(|c| c.config.repositories.get(spec).map(|r| (c, r)));
        let (name, url, rc) = match named {
            Some((_, r)) => (
                Some(spec.to_string()),
                config::value::expand_env(r.url.get_ref(), &format!("repositories.{spec}.url"))?,
                Some(r),
            ),
            None => (None, spec.to_string(), None),
        };
        let default = if cairn::backend::is_s3_url(&url) {
            8
        } else {
            2
        };
        let file_settings = self.config.as_ref().map(|c| &c.config.settings);
        let connections = self
            .flags
            .connections
            .or(rc.and_then(|r| r.connections))
            .or(file_settings.and_then(|s| s.connections))
            .unwrap_or(default)
            .clamp(1, 64);
        let s3 = self.s3_options(rc, connections, name.as_deref())?;
        let mut password = Vec::new();
        if let Some(r) = rc {
            let key = format!("repositories.{}", name.as_deref().unwrap_or(""));
            if let Some(p) = &r.password {
                password.push(PasswordSource::Config(p.clone(), format!("{key}.password")));
            }
            if let Some(f) = &r.password_file {
                password.push(PasswordSource::File(f.clone()));
            }
            if let Some(c) = &r.password_command {
                password.push(PasswordSource::Command(c.clone()));
            }
        }
        Ok(RepoSettings {
            name,
            url,
            connections,
            s3,
            password,
        })
    }

    /// S3 options: the flag (or its variable), then the AWS environment, then the
    /// repository's `s3` table, then `[settings.s3]`, then the defaults.
    fn s3_options(
        &self,
        rc: Option<&RepositoryConfig>,
        connections: usize,
        name: Option<&str>,
    ) -> Result<S3Options> {
        let env = S3Options::from_env();
        let repo = rc.map(|r| &r.s3);
        let global = self.config.as_ref().map(|c| &c.config.settings.s3);
        let pick = |f: &dyn Fn(&config::S3Config) -> Option<String>| {
            repo.and_then(f).or_else(|| global.and_then(f))
        };
        let key = |k: &str| match name {
            Some(n) => format!("repositories.{n}.s3.{k}"),
            None => format!("settings.s3.{k}"),
        };
        let expand = |v: Option<String>, k: &str| -> Result<Option<String>> {
            v.map(|v| config::value::expand_env(&v, &key(k)))
                .transpose()
                .map_err(Into::into)
        };
        let addressing = match self.flags.s3_addressing {
            Some(a) => a,
            None => {
                match pick(&|s| s.addressing.as_ref().map(|a| a.get_ref().clone())).as_deref() {
                    Some("path") => AddressingArg::Path,
                    Some("virtual") => AddressingArg::Virtual,
                    _ => AddressingArg::Auto,
                }
            }
        };
        let timeout = self
            .flags
            .s3_timeout
            .or_else(|| {
                repo.and_then(|s| s.timeout)
                    .or_else(|| global.and_then(|s| s.timeout))
                    .map(|d| d.0)
            })
            .unwrap_or(Duration::from_secs(60));
        if timeout.is_zero() {
            return Err(anyhow!("the S3 timeout must be more than 0s"));
        }
        let credentials = if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
            None // the environment's, read by the S3 client
        } else {
            let id = expand(pick(&|s| s.access_key_id.clone()), "access-key-id")?;
            let secret = repo
                .and_then(|s| s.secret_access_key.clone())
                .or_else(|| global.and_then(|s| s.secret_access_key.clone()));
            match (id, secret) {
                (Some(id), Some(secret)) => Some(StaticCredentials {
                    access_key_id: id,
                    secret_access_key: secret.reveal(&key("secret-access-key"))?.to_string(),
                    session_token: None,
                }),
                (None, None) => None,
                _ => {
                    return Err(anyhow!(
                        "{}: give both access-key-id and secret-access-key, or neither",
                        key("")
                    ));
                }
            }
        };
        Ok(S3Options {
            endpoint: env
                .endpoint
                .or(expand(pick(&|s| s.endpoint.clone()), "endpoint")?),
            region: env
                .region
                .or(expand(pick(&|s| s.region.clone()), "region")?),
            credentials,
            addressing: match addressing {
                AddressingArg::Auto => Addressing::Auto,
                AddressingArg::Path => Addressing::Path,
                AddressingArg::Virtual => Addressing::Virtual,
            },
            data_storage_class: self
                .flags
                .s3_storage_class
                .clone()
                .or_else(|| pick(&|s| s.storage_class.clone())),
            connections,
            timeout,
            retries: self
                .flags
                .s3_retries
                .or_else(|| {
                    repo.and_then(|s| s.retries)
                        .or_else(|| global.and_then(|s| s.retries))
                })
                .unwrap_or(4),
            ..env
        })
    }

    /// The repository of `-r`, or an error saying how to give one.
    /// The configuration's source `name`, or an error naming the file and its sources.
    pub fn source(&self, name: &str) -> Result<&config::SourceConfig> {
        let Some(c) = &self.config else {
            return Err(anyhow!(
                "--source {name}: there is no configuration file (see cairn config init)"
            ));
        };
        c.config.sources.get(name).ok_or_else(|| {
            anyhow!(
                "no source {name:?} in {} (it has: {})",
                c.path.display(),
                c.config
                    .sources
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    /// For a command about the configuration's source `name`: the repository of the job that
    /// backs it up, unless `-r` chose one (then `None`: use [`Settings::repo`]).
    pub fn source_repository(&self, name: &str) -> Result<Option<RepoSettings>> {
        self.source(name)?;
        if self.repo_given {
            return Ok(None);
        }
        let job_repo = self
            .config
            .as_ref()
            .and_then(|c| c.config.repository_of_source(name));
        match job_repo {
            Some(r) => Ok(Some(self.repository_or_flag_password(r)?)),
            None => Ok(None),
        }
    }

    /// What the settings came to (for `config show`), every secret left out: the values
    /// a command uses after flags, environment, file and defaults.
    pub fn effective(&self) -> serde_json::Value {
        let repo = self.repo.as_ref().map(|r| {
            let mut v = serde_json::json!({
                "name": r.name,
                "url": r.url,
                "connections": r.connections,
                "password": r.password_source(),
            });
            if cairn::backend::is_s3_url(&r.url) {
                v["s3"] = serde_json::json!({
                    "endpoint": r.s3.endpoint,
                    "region": r.s3.region,
                    "credentials": if r.s3.credentials.is_some() {
                        "the configuration file"
                    } else {
                        "the AWS environment"
                    },
                    "timeout": humantime::format_duration(r.s3.timeout).to_string(),
                    "retries": r.s3.retries,
                });
            }
            v
        });
        serde_json::json!({
            "repository": repo,
            "lease-wait": humantime::format_duration(self.lease_wait).to_string(),
            "cache-dir": self.cache_dir,
            "cache-size": self.cache_size,
            "state-dir": self.state_dir,
            "json": self.json,
            "quiet": self.quiet,
            "verbose": self.verbose,
        })
    }

    pub fn repo(&self) -> Result<&RepoSettings> {
        self.repo.as_ref().ok_or_else(|| {
            anyhow!(
                "no repository given: use -r/--repo (a location, or a name from the \
                 configuration file), set CAIRN_REPO, or set [settings] repository"
            )
        })
    }
}

impl RepoSettings {
    /// Where its password will come from, in words (never the password).
    pub fn password_source(&self) -> String {
        match self.password.first() {
            Some(PasswordSource::Given(_)) => "CAIRN_PASSWORD".into(),
            Some(PasswordSource::File(f)) => format!("the file {}", f.display()),
            Some(PasswordSource::Command(_)) => "its password-command".into(),
            Some(PasswordSource::Config(_, key)) => key.clone(),
            None => "a prompt".into(),
        }
    }

    /// The password, from the first of its sources (`CAIRN_PASSWORD`, `--password-file`,
    /// the configuration's password, password-file, password-command), else a prompt on the
    /// terminal. Never from the command line.
    pub fn password(&self, confirm: bool) -> std::result::Result<Zeroizing<Vec<u8>>, Error> {
        use super::commands::{password_from_file, prompt_password};
        if let Some(source) = self.password.first() {
            let p = match source {
                PasswordSource::Given(p) => {
                    if p.is_empty() {
                        return Err(Error::InvalidInput("CAIRN_PASSWORD is empty".into()));
                    }
                    p.clone()
                }
                PasswordSource::File(f) => password_from_file(f)?,
                PasswordSource::Config(s, key) => {
                    let p = s.reveal(key)?;
                    if p.is_empty() {
                        return Err(Error::InvalidInput(format!("{key} is empty")));
                    }
                    Zeroizing::new(p.as_bytes().to_vec())
                }
                PasswordSource::Command(c) => password_from_command(c)?,
            };
            return Ok(p);
        }
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return Err(Error::InvalidInput(format!(
                "no password given for {}: set CAIRN_PASSWORD_FILE (or --password-file, or \
                 CAIRN_PASSWORD){}",
                self.url,
                if self.name.is_some() {
                    ", or password-file / password-command in its [repositories] table"
                } else {
                    ""
                }
            )));
        }
        prompt_password("enter repository password: ", confirm)
    }
}

/// The first line of what `sh -c command` prints. Its standard error goes to ours; the
/// password never appears in an error.
fn password_from_command(command: &str) -> std::result::Result<Zeroizing<Vec<u8>>, Error> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::Other(format!("password-command: could not run sh: {e}")))?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(Error::InvalidInput(format!(
            "password-command {command:?} failed ({})",
            out.status
        )));
    }
    let line = stdout.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(Error::InvalidInput(format!(
            "password-command {command:?} printed no password"
        )));
    }
    Ok(Zeroizing::new(line.to_vec()))
}
