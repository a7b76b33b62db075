//! The configuration file, `cairn.toml`: the repositories, what to back up into them and how
//! long to keep it, and the jobs that tie those together (issue 14).
//!
//! [`ConfigFile::load`] reads and checks a file completely: TOML syntax, unknown keys, wrong
//! types, references between sections (a job naming a repository or source that does not
//! exist), and secrets (a file that holds one must be readable by its owner only). Every error
//! names the file, line and column. Values keep their `${VAR}` references; they are replaced
//! from the environment when a setting is used ([`value::expand_env`], [`Secret::reveal`]).

pub mod laravel;
pub mod schedule;
pub mod value;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::Spanned;

use crate::error::{Error, Result};
use crate::ops::forget::{Count, Duration as Calendar, Policy};
pub use value::{Dur, Secret, Size};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The global flags (`cairn --help`), as defaults under the command line and environment.
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub repositories: BTreeMap<String, RepositoryConfig>,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    #[serde(default)]
    pub jobs: BTreeMap<String, JobConfig>,
    #[serde(default, skip_serializing_if = "HealthConfig::is_default")]
    pub health: HealthConfig,
    #[serde(default, skip_serializing_if = "DaemonConfig::is_default")]
    pub daemon: DaemonConfig,
    #[serde(default, skip_serializing_if = "NotifyConfig::is_default")]
    pub notify: NotifyConfig,
}

/// `[health]`: the thresholds of `cairn health`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthConfig {
    /// The latest snapshot of each source of a job must be younger than this (default 26h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Dur>,
    /// The free space the file systems of local repositories and of the cache must keep:
    /// `10%` or a size such as `5G` (default 5%).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_free: Option<MinFree>,
    /// Each repository's last check by a job must be younger than this, and clean (default
    /// 35d).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_check_age: Option<Dur>,
}

impl HealthConfig {
    fn is_default(&self) -> bool {
        *self == HealthConfig::default()
    }
}

/// Free space to keep: a share of the file system or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    Percent(f64),
    Bytes(u64),
}

impl std::str::FromStr for MinFree {
    type Err = Error;
    fn from_str(s: &str) -> Result<MinFree> {
        match s.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(v) if (0.0..=100.0).contains(&v) => Ok(MinFree::Percent(v)),
                _ => Err(Error::invalid(format!(
                    "{s:?} is not a share of the disk (0% to 100%)"
                ))),
            },
            None => value::parse_size(s).map(MinFree::Bytes),
        }
    }
}

impl std::fmt::Display for MinFree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MinFree::Percent(p) => write!(f, "{p}%"),
            MinFree::Bytes(b) => write!(f, "{b}"),
        }
    }
}

impl<'de> Deserialize<'de> for MinFree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<MinFree, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for MinFree {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl Config {
    /// The repository the first job (by name) that backs up `source` writes to.
    pub fn repository_of_source(&self, source: &str) -> Option<&str> {
        self.jobs
            .values()
            .find(|j| j.sources.iter().any(|s| s.get_ref() == source))
            .map(|j| j.repository.get_ref().as_str())
    }
}

/// Global settings: each is the default of the global flag of the same name.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// The repository commands use without `-r`: a name in `[repositories]`, or a location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_wait: Option<Dur>,
    /// Where the run history is kept (default: $XDG_STATE_HOME/cairn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verbose: Option<u8>,
    /// `[settings.s3]`: defaults for every S3 repository.
    #[serde(default, skip_serializing_if = "S3Config::is_empty")]
    pub s3: S3Config,
}

/// S3 options (the `--s3-*` flags and the AWS variables): `[repositories.NAME.s3]`, with
/// defaults in `[settings.s3]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct S3Config {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// auto, path or virtual.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addressing: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<usize>,
}

impl S3Config {
    pub fn is_empty(&self) -> bool {
        let S3Config {
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            storage_class,
            addressing,
            timeout,
            retries,
        } = self;
        endpoint.is_none()
            && region.is_none()
            && access_key_id.is_none()
            && secret_access_key.is_none()
            && storage_class.is_none()
            && addressing.is_none()
            && timeout.is_none()
            && retries.is_none()
    }
}

/// `[repositories.NAME]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RepositoryConfig {
    /// A directory, or `s3://bucket/prefix`.
    pub url: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// A shell command whose first line of output is the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_command: Option<String>,
    /// The password itself; best a `${VAR}` reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    #[serde(default, skip_serializing_if = "S3Config::is_empty")]
    pub s3: S3Config,
    /// `cairn health` fails when the repository's packs exceed this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Size>,
    // The retention policy, with the names of `cairn forget`'s flags.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "by_str")]
    pub keep_last: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "by_str")]
    pub keep_hourly: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "by_str")]
    pub keep_daily: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "by_str")]
    pub keep_weekly: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "by_str")]
    pub keep_monthly: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "by_str")]
    pub keep_yearly: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "by_str")]
    pub keep_within: Option<Calendar>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "by_str")]
    pub keep_within_hourly: Option<Calendar>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "by_str")]
    pub keep_within_daily: Option<Calendar>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "by_str")]
    pub keep_within_weekly: Option<Calendar>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "by_str")]
    pub keep_within_monthly: Option<Calendar>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "by_str")]
    pub keep_within_yearly: Option<Calendar>,
    /// Keep snapshots with all of these tags (each entry: comma-separated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tag: Vec<String>,
}

impl RepositoryConfig {
    /// Whether any rule is set (no rule: `forget` keeps everything of this repository).
    pub fn is_empty(&self) -> bool {
        self.policy() == Policy::default()
    }

    /// The policy `forget` applies.
    pub fn policy(&self) -> Policy {
        Policy {
            last: self.keep_last.unwrap_or_default(),
            hourly: self.keep_hourly.unwrap_or_default(),
            daily: self.keep_daily.unwrap_or_default(),
            weekly: self.keep_weekly.unwrap_or_default(),
            monthly: self.keep_monthly.unwrap_or_default(),
            yearly: self.keep_yearly.unwrap_or_default(),
            within: self.keep_within.unwrap_or_default(),
            within_hourly: self.keep_within_hourly.unwrap_or_default(),
            within_daily: self.keep_within_daily.unwrap_or_default(),
            within_weekly: self.keep_within_weekly.unwrap_or_default(),
            within_monthly: self.keep_within_monthly.unwrap_or_default(),
            within_yearly: self.keep_within_yearly.unwrap_or_default(),
            tags: crate::ops::forget::keep_tag_lists(&self.keep_tag),
        }
    }
}

/// Values written as a string (or, for counts, a number) and parsed by `FromStr`.
mod by_str {
    use super::*;

    pub fn deserialize<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: std::str::FromStr<Err = Error>,
    {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        let s = match Raw::deserialize(d)? {
            Raw::N(n) => n.to_string(),
            Raw::S(s) => s,
        };
        s.parse().map(Some).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S, T>(v: &Option<T>, s: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: Serializer,
        T: std::fmt::Display,
    {
        let text = v.as_ref().map(|v| v.to_string());
        match text {
            // Counts as numbers, as they are usually written.
            Some(t) => match t.parse::<i64>() {
                Ok(n) => s.serialize_i64(n),
                Err(_) => s.serialize_str(&t),
            },
            None => s.serialize_none(),
        }
    }
}

/// `[sources.NAME]`: what one snapshot holds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SourceConfig {
    Files(FilesSource),
    Mysql(MysqlSource),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FilesSource {
    pub paths: Vec<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_file: Vec<PathBuf>,
    /// Named lists of excludes: see [`exclude_preset`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_presets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_if_present: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude_caches: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_file_system: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_atime: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl FilesSource {
    /// The source's exclude patterns: its own, then those of its presets.
    pub fn patterns(&self) -> Vec<String> {
        let mut p = self.exclude.clone();
        for name in &self.exclude_presets {
            p.extend(
                exclude_preset(name)
                    .unwrap_or_default()
                    .iter()
                    .map(|s| s.to_string()),
            );
        }
        p
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MysqlSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Best a `${VAR}` reference, or use `password-file` or a `defaults-file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defaults_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_databases: bool,
    /// `database.table`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_tables: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grants: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dump_binary: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_binary: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_allowed_packet: Option<Size>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// `[jobs.NAME]`: one night's work.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobConfig {
    pub sources: Vec<Spanned<String>>,
    pub repository: Spanned<String>,
    /// Repositories the new snapshots are copied to (another tier, e.g. S3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_to: Vec<Spanned<String>>,
    /// Apply each repository's retention after the backup (default: yes, where it has one).
    #[serde(default = "yes")]
    pub forget: bool,
    /// Prune after forgetting.
    #[serde(default)]
    pub prune: bool,
    /// What `check` reads afterwards: "none", "structure", "read-data", "N%" or "N/M".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Spanned<String>>,
    #[serde(default)]
    pub hooks: Hooks,
    /// When `cairn daemon` runs the job: a cron schedule (default `0 2 * * *`, 02:00 every
    /// day), or "none".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Spanned<String>>,
    /// The schedule's time zone (default: `[daemon] timezone`, else UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// `[daemon]`: what `cairn daemon` runs besides the jobs, and how it starts and stops.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DaemonConfig {
    /// The default time zone of schedules (default UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// A fire time missed while the daemon was down runs once at start-up if it is at most
    /// this old (default 6h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<Dur>,
    /// How long SIGTERM waits for a running step to end (default 2m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<Dur>,
    /// When the health checks run (default `0 1 * * SUN`), or "none".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_schedule: Option<Spanned<String>>,
    /// When the cleanup runs: every job's retention, prune and a read-data check (default
    /// `0 3 1 * *`, the 1st at 03:00), or "none".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_schedule: Option<Spanned<String>>,
    /// What the cleanup's check reads (default "10%").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_check: Option<Spanned<String>>,
    /// Where the status page, `/metrics` and `/health` listen (default 127.0.0.1:9187; "none"
    /// turns the listener off). An address beyond loopback is the configuration's choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<Spanned<String>>,
    /// A bearer token every request to the listener must carry (best a `${VAR}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

impl DaemonConfig {
    fn is_default(&self) -> bool {
        *self == DaemonConfig::default()
    }
}

/// `[notify]`: who hears about runs, health checks and the service, and of what.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NotifyConfig {
    /// The events every channel gets unless it names its own (default: failure, health,
    /// storage, error, recovered; not success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<NotifyEvent>>,
    /// A problem that stays is said again at most this often (default 24h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_after: Option<Dur>,
    /// The host name messages give (default: this machine's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail: Option<MailConfig>,
    /// `[[notify.webhook]]`: any number of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook: Vec<WebhookConfig>,
}

impl NotifyConfig {
    fn is_default(&self) -> bool {
        *self == NotifyConfig::default()
    }
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyEvent {
    /// A run succeeded.
    Success,
    /// A run failed or was partial.
    Failure,
    /// A health check failed (other than disk and size).
    Health,
    /// A file system under min-free or a repository over max-size.
    Storage,
    /// The service itself: a run that could not start, a configuration that did not load.
    Error,
    /// What was reported as a problem is fine again.
    Recovered,
}

impl NotifyEvent {
    pub const DEFAULT: [NotifyEvent; 5] = [
        NotifyEvent::Failure,
        NotifyEvent::Health,
        NotifyEvent::Storage,
        NotifyEvent::Error,
        NotifyEvent::Recovered,
    ];

    pub fn word(self) -> &'static str {
        match self {
            NotifyEvent::Success => "success",
            NotifyEvent::Failure => "failure",
            NotifyEvent::Health => "health",
            NotifyEvent::Storage => "storage",
            NotifyEvent::Error => "error",
            NotifyEvent::Recovered => "recovered",
        }
    }
}

/// How the mail channel talks to its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MailSecurity {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption (port 25; a relay on localhost).
    None,
}

/// `[notify.mail]`: mail over SMTP.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MailConfig {
    /// The SMTP server's host name.
    pub server: String,
    /// Default: 587 with STARTTLS, 465 with TLS, 25 without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: MailSecurity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The sender: `cairn@example.com` or `cairn <cairn@example.com>`.
    pub from: String,
    pub to: Vec<String>,
    /// A PEM file of certificates to trust besides the system's (a private CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How long sending may take (default 30s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<NotifyEvent>>,
}

/// The body a webhook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookFormat {
    /// cairn's own JSON object (every field of the event).
    #[default]
    Json,
    /// `{"text": ...}` for a Slack incoming webhook (and Mattermost, Rocket.Chat).
    Slack,
    /// `{"content": ...}` for a Discord webhook.
    Discord,
    /// The message as the body, its title and priority in headers, for an ntfy topic URL.
    Ntfy,
}

/// `[[notify.webhook]]`: an HTTP POST per event.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookConfig {
    /// The URL (a secret: a Slack or Discord webhook URL is its own credential).
    pub url: Secret,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Sent as `Authorization: Bearer TOKEN` (an ntfy access token, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// How long a POST may take (default 10s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<NotifyEvent>>,
}

/// What a schedule of the daemon runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Task {
    Job(String),
    Health,
    Cleanup,
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Task::Job(j) => write!(f, "job {j}"),
            Task::Health => f.write_str("health"),
            Task::Cleanup => f.write_str("cleanup"),
        }
    }
}

/// The defaults of the daemon's schedules.
pub const DEFAULT_JOB_SCHEDULE: &str = "0 2 * * *";
pub const DEFAULT_HEALTH_SCHEDULE: &str = "0 1 * * SUN";
pub const DEFAULT_CLEANUP_SCHEDULE: &str = "0 3 1 * *";
pub const DEFAULT_CLEANUP_CHECK: &str = "10%";

impl Config {
    /// Every schedule of the daemon, with what it runs ("none" leaves one out).
    pub fn schedules(&self) -> Result<Vec<(Task, schedule::Schedule)>> {
        let d = &self.daemon;
        let tz = d.timezone.as_deref();
        let mut out = Vec::new();
        let mut add =
            |task: Task, expr: Option<&Spanned<String>>, default: &str, tz: Option<&str>| {
                let e = expr.map_or(default, |e| e.get_ref().as_str());
                if e.trim() == "none" {
                    return Ok(());
                }
                let s = schedule::Schedule::parse(e, tz)
                    .map_err(|err| Error::invalid(format!("{task}: {err}")))?;
                out.push((task, s));
                Ok::<(), Error>(())
            };
        for (name, j) in &self.jobs {
            add(
                Task::Job(name.clone()),
                j.schedule.as_ref(),
                DEFAULT_JOB_SCHEDULE,
                j.timezone.as_deref().or(tz),
            )?;
        }
        add(
            Task::Health,
            d.health_schedule.as_ref(),
            DEFAULT_HEALTH_SCHEDULE,
            tz,
        )?;
        add(
            Task::Cleanup,
            d.cleanup_schedule.as_ref(),
            DEFAULT_CLEANUP_SCHEDULE,
            tz,
        )?;
        Ok(out)
    }
}

fn yes() -> bool {
    true
}

/// Shell commands run around a job (`sh -c`), each with its timeout.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Hooks {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_error: Vec<String>,
    /// Get the run's JSON summary on stdin; a failure fails the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validate: Vec<String>,
    /// Default 5m.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
}

/// The exclude presets: `laravel` (dependencies, VCS data, secrets in `.env` files, the
/// framework's caches, sessions and compiled views) and `temporary` (editor and temp files,
/// which `laravel` includes).
pub fn exclude_preset(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "laravel" => Some(&[
            "node_modules",
            ".git",
            ".env*",
            "storage/framework/cache",
            "storage/framework/sessions",
            "storage/framework/views",
            "*.tmp",
            "*.swp",
            "*~",
        ]),
        "temporary" => Some(&["*.tmp", "*.swp", "*~"]),
        _ => None,
    }
}

/// A loaded, checked configuration file.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    text: String,
    pub config: Config,
}

impl ConfigFile {
    /// Read and check the file at `path`.
    pub fn load(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let f = ConfigFile::parse(path, text)?;
        f.check_permissions()?;
        Ok(f)
    }

    /// Check `text` as the contents of `path` (which is not read).
    pub fn parse(path: &Path, text: String) -> Result<ConfigFile> {
        let config: Config = match toml::from_str(&text) {
            Ok(c) => c,
            Err(e) => {
                let mut at = e.span().map_or(0, |s| s.start);
                // Inside a source (an internally tagged table) the span is the table's: point at
                // the unknown key itself.
                if let Some(key) = e
                    .message()
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split('`').next())
                {
                    at += find_key(&text[at..], key).unwrap_or(0);
                }
                return Err(config_error(path, &text, at, e.message()));
            }
        };
        let f = ConfigFile {
            path: path.to_path_buf(),
            text,
            config,
        };
        f.check_references()?;
        Ok(f)
    }

    fn error_at(&self, at: usize, message: impl Into<String>) -> Error {
        config_error(&self.path, &self.text, at, &message.into())
    }

    /// Sections that name others must name existing ones; values with a syntax of their own
    /// must follow it.
    fn check_references(&self) -> Result<()> {
        let c = &self.config;
        if let Some(r) = &c.settings.repository
            && looks_like_name(r.get_ref())
            && !c.repositories.contains_key(r.get_ref())
        {
            return Err(self.error_at(
                r.span().start,
                format!("no repository {:?} in [repositories]", r.get_ref()),
            ));
        }
        for s3 in std::iter::once(&c.settings.s3).chain(c.repositories.values().map(|r| &r.s3)) {
            if let Some(a) = &s3.addressing
                && !matches!(a.get_ref().as_str(), "auto" | "path" | "virtual")
            {
                return Err(self.error_at(
                    a.span().start,
                    format!("s3 addressing {:?}: use auto, path or virtual", a.get_ref()),
                ));
            }
        }
        for (name, r) in &c.repositories {
            if r.url.get_ref().trim().is_empty() {
                return Err(
                    self.error_at(r.url.span().start, format!("repository {name}: empty url"))
                );
            }
            let ways = [
                r.password.is_some(),
                r.password_file.is_some(),
                r.password_command.is_some(),
            ];
            if ways.iter().filter(|w| **w).count() > 1 {
                return Err(self.error_at(
                    r.url.span().start,
                    format!(
                        "repository {name}: give one of password, password-file and password-command"
                    ),
                ));
            }
        }
        for (name, s) in &c.sources {
            match s {
                SourceConfig::Files(f) => {
                    if f.paths.is_empty() {
                        return Err(self.error_at(
                            self.table_offset("sources", name),
                            format!("source {name}: paths is empty"),
                        ));
                    }
                    if let Some(p) = f
                        .exclude_presets
                        .iter()
                        .find(|p| exclude_preset(p).is_none())
                    {
                        return Err(self.error_at(
                            self.table_offset("sources", name),
                            format!("source {name}: unknown exclude preset {p:?} (known: laravel, temporary)"),
                        ));
                    }
                }
                SourceConfig::Mysql(m) => {
                    if m.databases.is_empty() != m.all_databases {
                        return Err(self.error_at(
                            self.table_offset("sources", name),
                            format!("source {name}: give either databases or all-databases = true"),
                        ));
                    }
                    if m.password.is_some() && m.password_file.is_some() {
                        return Err(self.error_at(
                            self.table_offset("sources", name),
                            format!("source {name}: give password or password-file, not both"),
                        ));
                    }
                }
            }
        }
        for (name, j) in &c.jobs {
            if j.sources.is_empty() {
                return Err(self.error_at(
                    self.table_offset("jobs", name),
                    format!("job {name}: sources is empty"),
                ));
            }
            for s in &j.sources {
                if !c.sources.contains_key(s.get_ref()) {
                    return Err(self.error_at(
                        s.span().start,
                        format!("job {name}: no source {:?} in [sources]", s.get_ref()),
                    ));
                }
            }
            for r in std::iter::once(&j.repository).chain(&j.copy_to) {
                if !c.repositories.contains_key(r.get_ref()) {
                    return Err(self.error_at(
                        r.span().start,
                        format!(
                            "job {name}: no repository {:?} in [repositories]",
                            r.get_ref()
                        ),
                    ));
                }
            }
            if let Some(t) = j
                .copy_to
                .iter()
                .find(|t| t.get_ref() == j.repository.get_ref())
            {
                return Err(self.error_at(
                    t.span().start,
                    format!("job {name}: copy-to names the job's own repository"),
                ));
            }
            if let Some(chk) = &j.check
                && let Err(e) = CheckSubset::parse(chk.get_ref())
            {
                return Err(self.error_at(chk.span().start, format!("job {name}: {e}")));
            }
            if let Some(sch) = &j.schedule
                && sch.get_ref().trim() != "none"
                && let Err(e) = schedule::Schedule::parse(
                    sch.get_ref(),
                    j.timezone.as_deref().or(c.daemon.timezone.as_deref()),
                )
            {
                return Err(self.error_at(sch.span().start, format!("job {name}: {e}")));
            }
        }
        let d = &c.daemon;
        for sch in [&d.health_schedule, &d.cleanup_schedule]
            .into_iter()
            .flatten()
        {
            if sch.get_ref().trim() != "none"
                && let Err(e) = schedule::Schedule::parse(sch.get_ref(), d.timezone.as_deref())
            {
                return Err(self.error_at(sch.span().start, format!("daemon: {e}")));
            }
        }
        if let Some(chk) = &d.cleanup_check
            && let Err(e) = CheckSubset::parse(chk.get_ref())
        {
            return Err(self.error_at(chk.span().start, format!("daemon: {e}")));
        }
        if let Some(l) = &d.listen
            && l.get_ref() != "none"
            && l.get_ref().parse::<std::net::SocketAddr>().is_err()
        {
            return Err(self.error_at(
                l.span().start,
                format!(
                    "daemon: listen {:?} is not an address and port (e.g. 127.0.0.1:9187)",
                    l.get_ref()
                ),
            ));
        }
        if let Some(m) = &c.notify.mail {
            let at = self.table_offset("notify", "mail");
            if m.to.is_empty() {
                return Err(self.error_at(at, "notify.mail: `to` names no recipient"));
            }
            for a in m.to.iter().chain(std::iter::once(&m.from)) {
                if !a.contains('@') {
                    return Err(
                        self.error_at(at, format!("notify.mail: {a:?} is not a mail address"))
                    );
                }
            }
            if m.password.is_some() && m.username.is_none() {
                return Err(self.error_at(at, "notify.mail: a password needs a username"));
            }
        }
        // A time zone of no schedule (every job "none") is still checked.
        self.config
            .schedules()
            .map_err(|e| self.error_at(0, e.to_string()))?;
        Ok(())
    }

    /// The offset of `[section.name]` (or of the section) in the text, for errors about a
    /// table as a whole.
    fn table_offset(&self, section: &str, name: &str) -> usize {
        for header in [
            format!("[{section}.{name}]"),
            format!("[{section}.\"{name}\"]"),
        ] {
            if let Some(i) = self.text.find(&header) {
                return i;
            }
        }
        self.text.find(&format!("[{section}")).unwrap_or(0)
    }

    /// The secrets the file holds itself (not as `${VAR}` references), by key.
    pub fn literal_secrets(&self) -> Vec<String> {
        let c = &self.config;
        let mut out = Vec::new();
        let s3 = |prefix: &str, s: &S3Config, out: &mut Vec<String>| {
            if s.secret_access_key.as_ref().is_some_and(Secret::is_literal) {
                out.push(format!("{prefix}s3.secret-access-key"));
            }
        };
        s3("settings.", &c.settings.s3, &mut out);
        for (name, r) in &c.repositories {
            if r.password.as_ref().is_some_and(Secret::is_literal) {
                out.push(format!("repositories.{name}.password"));
            }
            s3(&format!("repositories.{name}."), &r.s3, &mut out);
        }
        for (name, s) in &c.sources {
            if let SourceConfig::Mysql(m) = s
                && m.password.as_ref().is_some_and(Secret::is_literal)
            {
                out.push(format!("sources.{name}.password"));
            }
        }
        if c.daemon.token.as_ref().is_some_and(Secret::is_literal) {
            out.push("daemon.token".into());
        }
        if let Some(m) = &c.notify.mail
            && m.password.as_ref().is_some_and(Secret::is_literal)
        {
            out.push("notify.mail.password".into());
        }
        for (i, w) in c.notify.webhook.iter().enumerate() {
            if w.url.is_literal() {
                out.push(format!("notify.webhook[{i}].url"));
            }
            if w.token.as_ref().is_some_and(Secret::is_literal) {
                out.push(format!("notify.webhook[{i}].token"));
            }
        }
        out
    }

    /// A file holding a secret must be readable by its owner only.
    fn check_permissions(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let secrets = self.literal_secrets();
        if secrets.is_empty() {
            return Ok(());
        }
        let meta = std::fs::metadata(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::invalid(format!(
                "{} holds a secret ({}) and is readable by others (mode {mode:03o}): make it \
                 readable by its owner only (chmod 600), or use password-file, \
                 password-command or a ${{VAR}} reference instead",
                self.path.display(),
                secrets.join(", ")
            )));
        }
        Ok(())
    }

    /// The configuration as TOML, secrets redacted (`cairn config show`).
    pub fn show(&self) -> Result<String> {
        toml::to_string_pretty(&self.config)
            .map_err(|e| Error::Other(format!("printing the configuration: {e}")))
    }
}

/// Whether a `repository` setting is a name (rather than a path or URL).
pub fn looks_like_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.contains(':') && s != "." && s != ".."
}

/// The offset in `text` of the first line that sets `key` (`key =` or `key.sub =`).
fn find_key(text: &str, key: &str) -> Option<usize> {
    let mut off = 0;
    for line in text.split_inclusive('\n') {
        let indent = line.len() - line.trim_start().len();
        let rest = line.trim_start();
        if let Some(after) = rest.strip_prefix(key)
            && matches!(after.trim_start().chars().next(), Some('=' | '.'))
        {
            return Some(off + indent);
        }
        off += line.len();
    }
    None
}

fn config_error(path: &Path, text: &str, at: usize, message: &str) -> Error {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Error::Config {
        path: path.to_path_buf(),
        line,
        column,
        message: message.trim().to_string(),
    }
}

/// What a job's `check` reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CheckSubset {
    None,
    /// Structure only: every snapshot's trees and the index.
    Structure,
    /// Every blob.
    All,
    /// This share of the packs, 0 < p <= 100.
    Percent(f64),
    /// Part n of m.
    Part(u32, u32),
}

impl CheckSubset {
    pub fn parse(s: &str) -> Result<CheckSubset> {
        let t = s.trim();
        let bad = || {
            Error::invalid(format!(
                "check {s:?}: use none, structure, read-data, a percentage (5%) or a part (1/7)"
            ))
        };
        Ok(match t {
            "none" => CheckSubset::None,
            "structure" => CheckSubset::Structure,
            "read-data" => CheckSubset::All,
            _ => {
                if let Some(p) = t.strip_suffix('%') {
                    let p: f64 = p.trim().parse().map_err(|_| bad())?;
                    if !(p > 0.0 && p <= 100.0) {
                        return Err(bad());
                    }
                    CheckSubset::Percent(p)
                } else if let Some((n, m)) = t.split_once('/') {
                    let n: u32 = n.trim().parse().map_err(|_| bad())?;
                    let m: u32 = m.trim().parse().map_err(|_| bad())?;
                    if n == 0 || m == 0 || n > m {
                        return Err(bad());
                    }
                    CheckSubset::Part(n, m)
                } else {
                    return Err(bad());
                }
            }
        })
    }
}

/// Where the configuration file is: `explicit` (`--config` / `CAIRN_CONFIG`), else
/// `$XDG_CONFIG_HOME/cairn/cairn.toml` (`~/.config/...`), else `/etc/cairn/cairn.toml`; `None`
/// if there is none. An explicit file must exist.
pub fn locate(explicit: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(p) = explicit {
        if !p.exists() {
            return Err(Error::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such configuration file"),
            ));
        }
        return Ok(Some(p.to_path_buf()));
    }
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    let candidates = user
        .map(|d| d.join("cairn/cairn.toml"))
        .into_iter()
        .chain([PathBuf::from("/etc/cairn/cairn.toml")]);
    for c in candidates {
        if c.exists() {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile> {
        ConfigFile::parse(Path::new("/etc/cairn/cairn.toml"), text.to_string())
    }

    const GOOD: &str = r#"
[settings]
lease-wait = "5m"
cache-size = "512M"

[repositories.local]
url = "/var/backups/cairn"
password-file = "/etc/cairn/password"
keep-daily = 7

[repositories.offsite]
url = "s3://bucket/cairn"
password = "${CAIRN_OFFSITE_PASSWORD}"
keep-daily = 30
keep-within = "1m"
s3.secret-access-key = "${AWS_SECRET_ACCESS_KEY}"
s3.timeout = "2m"

[sources.uploads]
kind = "files"
paths = ["/srv/app/storage/app"]
exclude-presets = ["laravel"]

[sources.shop]
kind = "mysql"
databases = ["shop"]
user = "backup"
password = "${DB_PASSWORD}"

[jobs.nightly]
sources = ["uploads", "shop"]
repository = "local"
copy-to = ["offsite"]
prune = true
check = "5%"
hooks.before = ["true"]
hooks.timeout = "90s"
"#;

    #[test]
    fn a_full_file_parses() {
        let f = parse(GOOD).unwrap();
        let c = &f.config;
        assert_eq!(
            c.settings.lease_wait,
            Some(Dur(std::time::Duration::from_secs(300)))
        );
        assert_eq!(c.settings.cache_size, Some(Size(512 << 20)));
        assert_eq!(c.repositories["local"].keep_daily, Some(Count::N(7)));
        assert_eq!(
            c.repositories["offsite"].policy().within,
            "1m".parse().unwrap()
        );
        let j = &c.jobs["nightly"];
        assert!(j.forget && j.prune);
        assert_eq!(
            j.hooks.timeout,
            Some(Dur(std::time::Duration::from_secs(90)))
        );
        let SourceConfig::Files(u) = &c.sources["uploads"] else {
            panic!()
        };
        assert!(
            u.patterns()
                .contains(&"storage/framework/sessions".to_string())
        );
        assert!(f.literal_secrets().is_empty());
        let shown = f.show().unwrap();
        assert!(shown.contains("${DB_PASSWORD}"), "{shown}");
        // What `show` prints parses back to the same.
        let again = parse(&shown).unwrap();
        assert_eq!(again.config.jobs["nightly"].sources.len(), 2);
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = error("[settings]\nlease-wait = \"5m\"\nbogus = 1\n");
        assert!(e.starts_with("/etc/cairn/cairn.toml:3:1: "), "{e}");
        assert!(e.contains("bogus"), "{e}");
        let e = error("[settings]\nconnections = \"four\"\n");
        assert!(e.starts_with("/etc/cairn/cairn.toml:2:15: "), "{e}");
        let e = error("[settings]\nlease-wait = \"soon\"\n");
        assert!(e.contains(":2:14: ") && e.contains("not a duration"), "{e}");
        let e = error(&GOOD.replace("copy-to = [\"offsite\"]", "copy-to = [\"ofsite\"]"));
        let line = GOOD.lines().position(|l| l.starts_with("copy-to")).unwrap() + 1;
        assert!(e.contains(&format!(":{line}:12: ")), "{e}");
        assert!(e.contains("no repository \"ofsite\""), "{e}");
        let e = error(&GOOD.replace("\"uploads\", \"shop\"", "\"uploads\", \"shopp\""));
        assert!(e.contains("no source \"shopp\""), "{e}");
        let e = error(&GOOD.replace("kind = \"files\"", "kind = \"ftp\""));
        assert!(e.contains("ftp"), "{e}");
        let e = error(&GOOD.replace("check = \"5%\"", "check = \"often\""));
        assert!(e.contains("check \"often\""), "{e}");
        let e = error(&GOOD.replace(
            "exclude-presets = [\"laravel\"]",
            "exclude-presets = [\"rails\"]",
        ));
        assert!(e.contains("unknown exclude preset \"rails\""), "{e}");
        let e = error(&GOOD.replace("keep-daily = 7", "keep-daily = \"often\""));
        assert!(e.contains("not a count"), "{e}");
        let e = error(
            "[settings]\nquiet = true\n\n[sources.x]\nkind = \"files\"\npaths = [\"/\"]\n  exclud = []\n",
        );
        assert!(
            e.starts_with("/etc/cairn/cairn.toml:7:3: unknown field `exclud`"),
            "{e}"
        );
        let e = error("[settings\n");
        assert!(e.starts_with("/etc/cairn/cairn.toml:1:"), "{e}");
    }

    #[test]
    fn literal_secrets_are_found_and_never_shown() {
        let text = GOOD
            .replace("${DB_PASSWORD}", "shop-db-secret")
            .replace("${AWS_SECRET_ACCESS_KEY}", "aws-secret-key");
        let f = parse(&text).unwrap();
        assert_eq!(
            f.literal_secrets(),
            [
                "repositories.offsite.s3.secret-access-key",
                "sources.shop.password"
            ]
        );
        let shown = f.show().unwrap();
        assert!(
            !shown.contains("shop-db-secret") && !shown.contains("aws-secret-key"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!format!("{:?}", f.config).contains("shop-db-secret"));
    }

    #[test]
    fn check_subsets() {
        assert_eq!(CheckSubset::parse("5%").unwrap(), CheckSubset::Percent(5.0));
        assert_eq!(CheckSubset::parse("1/7").unwrap(), CheckSubset::Part(1, 7));
        assert_eq!(CheckSubset::parse("read-data").unwrap(), CheckSubset::All);
        for bad in ["0%", "101%", "8/7", "0/3", "x", ""] {
            assert!(CheckSubset::parse(bad).is_err(), "{bad}");
        }
    }
}
