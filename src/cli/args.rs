//! clap definitions. Raw flags only; `commands` resolves them into library options.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Deduplicating, encrypted snapshots of files and databases",
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The configuration file (default: $XDG_CONFIG_HOME/cairn/cairn.toml, then
    /// /etc/cairn/cairn.toml).
    #[arg(long, env = "CAIRN_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Repository: a directory path, s3://bucket/prefix, or a name from the configuration.
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPO", global = true)]
    pub repo: Option<String>,
    /// Read the repository password from this file (first line).
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Machine-readable output: one JSON document.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// How log lines on standard error look: text, or json (one object per line).
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// Directory for the run history and job locks (default: $XDG_STATE_HOME/cairn).
    #[arg(long, env = "CAIRN_STATE_DIR", global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Directory for the local catalog (default: $XDG_CACHE_HOME/cairn).
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Concurrent pack uploads and downloads (default: 2 for local repositories, 8 for S3).
    #[arg(long, global = true)]
    pub connections: Option<usize>,
    /// Size limit of the local cache of tree blobs, e.g. 512M, 2G; 0 turns it off (default 1G).
    #[arg(long, env = "CAIRN_CACHE_SIZE", global = true, value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// How long to wait for a conflicting lease, e.g. 30s, 5m (default 0s).
    #[arg(long, global = true)]
    pub lease_wait: Option<String>,
    /// Open the repository even though it is not what this computer's cache remembers of it
    /// (it was encrypted and is not, or its key files changed), and remember it as it is now.
    #[arg(long, global = true)]
    pub accept_repository_change: bool,
    #[command(flatten)]
    pub s3: super::s3args::S3Args,
}

/// A size in bytes: a number with an optional binary unit (K, M, G, T; "KiB", "MB"... alike).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 512M, 2G)"))?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches("IB").trim_end_matches('B');
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository.
    Init(InitArgs),
    /// Back up files or a stream into a new snapshot.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List the files of a snapshot.
    Ls(LsArgs),
    /// Write one file of a snapshot to standard output.
    Dump(DumpArgs),
    /// Restore a snapshot (or a part of it) into a directory.
    Restore(RestoreArgs),
    /// The snapshots as a read-only file system (FUSE) on DIR, until Ctrl-C or SIGTERM:
    /// snapshots/<time>/, ids/<id>/, hosts/<host>/<time>/, tags/<tag>/<time>/, and `latest`.
    Mount(super::mount::MountArgs),
    /// Sizes: logical, stored, deduplication and compression ratios.
    Stats(StatsArgs),
    /// Find files (or database tables) by name or path in every snapshot.
    Find(super::find::FindArgs),
    /// What changed between two snapshots: added, removed, modified entries, bytes added.
    Diff(super::find::DiffArgs),
    /// Verify the repository: structure, and with --read-data every blob.
    Check(super::maint::CheckArgs),
    /// Delete data no snapshot needs (two-phase: condemn, then delete after --grace).
    Prune(super::maint::PruneArgs),
    /// Rebuild repository metadata from what survives.
    Repair(super::maint::RepairArgs),
    /// Remove snapshots: the ones named, or those a --keep-* policy does not keep.
    Forget(super::forget::ForgetArgs),
    /// MySQL/MariaDB: back up databases table by table, restore tables.
    Mysql(super::mysql::MysqlArgs),
    /// Copy snapshots to another repository (deduplicated, re-encrypted for its key).
    Copy(super::copy::CopyArgs),
    /// The configuration file (cairn.toml): write a starting one, check it, show it.
    Config(super::config::ConfigArgs),
    /// Run a job of the configuration file: hooks, backups, copies, retention, checks.
    Run(super::run::RunArgs),
    /// A restore test of a job's latest snapshots into scratch space (files verified, the
    /// databases loaded into a throwaway server and compared), timed against --rto.
    Drill(super::drill::DrillArgs),
    /// The history of `cairn run`: time, job, duration, outcome, bytes added per source.
    Runs(super::run::RunsArgs),
    /// The log of a run of `cairn run` (default: the latest), or --follow one in progress.
    Logs(super::run::LogsArgs),
    /// Check the service: databases and repositories reachable, disk space, the latest
    /// snapshots fresh, the last check clean and recent, sizes under their limits. Exit 1 if
    /// any check fails.
    Health(super::run::HealthArgs),
    /// Notifications ([notify]): send a test message to every channel.
    Notify(super::notify::NotifyArgs),
    /// Prometheus metrics of the run history (and with --health, of the health checks).
    Metrics(super::run::MetricsArgs),
    /// The backup service: run the jobs, health checks and cleanup on their schedules.
    Daemon(super::daemon::DaemonArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EncryptionArg {
    Repokey,
    None,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// repokey: encrypted, key sealed by the password; none: integrity only.
    #[arg(long, value_enum, default_value = "repokey")]
    pub encryption: EncryptionArg,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Files and directories to back up (or, with --stdin-from-command, the command and its
    /// arguments).
    #[arg(value_name = "PATH")]
    pub paths: Vec<OsString>,
    /// Leave out paths matching GLOB (a name, or a path if it contains '/').
    #[arg(short = 'e', long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Read exclude patterns from a file, one per line ('#' starts a comment).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Leave out directories that contain a file with this name.
    #[arg(long = "exclude-if-present", value_name = "NAME")]
    pub exclude_if_present: Vec<String>,
    /// Leave out directories tagged with a valid CACHEDIR.TAG.
    #[arg(long)]
    pub exclude_caches: bool,
    /// Do not cross filesystem boundaries.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Record access times (off by default: reading a tree changes them, so every night would
    /// store every directory again; without them a restored entry's atime is its mtime).
    #[arg(long)]
    pub with_atime: bool,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
    /// Snapshot time instead of now, "YYYY-MM-DD HH:MM:SS" in local time.
    #[arg(long)]
    pub time: Option<String>,
    /// Do everything but write to the repository.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Read the data to back up from standard input.
    #[arg(long)]
    pub stdin: bool,
    /// File name for --stdin / --stdin-from-command data.
    #[arg(long, default_value = "stdin")]
    pub stdin_name: String,
    /// Back up the standard output of the command given as arguments; no snapshot is written
    /// if it fails.
    #[arg(long)]
    pub stdin_from_command: bool,
    /// Compare with this snapshot instead of the latest with the same host and paths.
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file even if the parent says it is unchanged.
    #[arg(short, long)]
    pub force: bool,
    /// Compression: off, auto, max or a zstd level 1-22.
    #[arg(long, default_value = "auto")]
    pub compression: String,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Only snapshots of this source of the configuration file (from its job's repository
    /// unless -r says another).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag (repeat: all must match).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot: id prefix or "latest", optionally SNAP:PATH.
    pub snapshot: String,
    /// Path inside the snapshot.
    pub path: Option<String>,
    /// Long listing: type, mode, owner, size, time.
    #[arg(short, long)]
    pub long: bool,
    /// With "latest": only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    pub snapshot: String,
    /// Path of a file inside the snapshot.
    pub path: Option<String>,
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot, optionally SNAP:PATH to restore only a part.
    pub snapshot: String,
    /// Directory to restore into.
    #[arg(short, long)]
    pub target: PathBuf,
    /// Restore only paths matching GLOB.
    #[arg(short, long = "include", value_name = "GLOB")]
    pub include: Vec<String>,
    /// Do not restore paths matching GLOB.
    #[arg(short, long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Re-read every restored file and compare it with the snapshot.
    #[arg(long)]
    pub verify: bool,
    /// What to do with an entry the target already has: always replace it; if-changed (a file
    /// of the same size and contents, a link to the same target, is left and given the
    /// snapshot's metadata; else replaced); if-newer (replaced when the snapshot's is newer);
    /// never. A restore run again after an interruption writes only what is missing or wrong.
    #[arg(long, value_name = "WHEN", default_value = "if-changed",
          value_parser = clap::value_parser!(cairn::ops::restore::Overwrite))]
    pub overwrite: cairn::ops::restore::Overwrite,
    /// Remove from the target what the snapshot does not have below the restored path
    /// (entries that --include/--exclude leave out of the restore are kept).
    #[arg(long)]
    pub delete: bool,
    /// A source of the configuration file: "latest" is its latest snapshot, in its job's
    /// repository unless -r says another.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Snapshots to measure (default: all).
    pub snapshots: Vec<String>,
    /// Per run of `cairn run` (from the run history, no repository needed): the night's
    /// logical size, what it added, and each repository's size and dedup ratio after it.
    #[arg(long, conflicts_with = "snapshots")]
    pub history: bool,
    /// With --history: only runs of this job.
    #[arg(long, requires = "history")]
    pub job: Option<String>,
    /// With --history: how many runs, newest last.
    #[arg(long, requires = "history", default_value_t = 30)]
    pub last: usize,
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1 gb"), Ok(1 << 30));
        assert_eq!(parse_size("3T"), Ok(3 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
