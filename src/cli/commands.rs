//! One function per command: resolve flags into library options, call the library, render.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use zeroize::Zeroizing;

use cairn::compress::Compression;
use cairn::crypto::{Encryption, KdfParams};
use cairn::format::Timestamp;
use cairn::format::snapshot::Snapshot;
use cairn::format::tree::NodeKind;
use cairn::ops::backup::{self, BackupOptions, BackupOutcome};
use cairn::ops::progress::Progress;
use cairn::ops::read::{self, Resolved};
use cairn::ops::restore::{self, RestoreOptions};
use cairn::repo::lease::{LeaseMode, Shutdown};
use cairn::repo::{InitOptions, OpenOptions, Repository};
use cairn::source::exclude::ExcludeOptions;
use cairn::{Error, Id};

use super::args::*;
use super::output::{self, ProgressBar};
use super::settings::{RepoSettings, Settings};
use super::{EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL};

pub async fn run(g: &Settings, command: Command) -> Result<i32> {
    match command {
        Command::Init(a) => init(g, a).await,
        Command::Backup(a) => backup_cmd(g, a).await,
        Command::Snapshots(a) => snapshots(g, a).await,
        Command::Ls(a) => ls(g, a).await,
        Command::Dump(a) => dump(g, a).await,
        Command::Restore(a) => restore_cmd(g, a).await,
        Command::Stats(a) => stats(g, a).await,
        Command::Find(a) => super::find::find(g, a).await,
        Command::Diff(a) => super::find::diff_cmd(g, a).await,
        Command::Check(a) => super::maint::check(g, a).await,
        Command::Prune(a) => super::maint::prune(g, a).await,
        Command::Repair(a) => super::maint::repair(g, a).await,
        Command::Forget(a) => super::forget::forget(g, a).await,
        Command::Mysql(a) => super::mysql::run(g, a).await,
        Command::Copy(a) => super::copy::copy(g, a).await,
        Command::Config(a) => super::config::run(g, a).await,
        Command::Run(a) => super::run::run(g, a).await,
        Command::Drill(a) => super::drill::drill(g, a).await,
        // Started by `cli::main`, which gives it the global flags to reload with.
        Command::Daemon(_) => unreachable!("the daemon is started before commands::run"),
        // Started by `cli::main` too: it handles its own signals.
        Command::Mount(_) => unreachable!("mount is started before commands::run"),
        Command::Runs(a) => super::run::runs(g, a),
        Command::Logs(a) => super::run::logs(g, a).await,
        Command::Health(a) => super::run::health(g, a).await,
        Command::Notify(a) => super::notify::run(g, a).await,
        Command::Metrics(a) => super::run::metrics(g, a).await,
    }
}

/// The backend of the repository of `-r`.
fn backend(g: &Settings) -> Result<Arc<dyn cairn::backend::Backend>> {
    backend_of(g.repo()?)
}

/// The backend of a resolved repository.
pub(super) fn backend_of(r: &RepoSettings) -> Result<Arc<dyn cairn::backend::Backend>> {
    let o = cairn::backend::OpenBackendOptions { s3: r.s3.clone() };
    cairn::backend::open_with(&r.url, &o).map_err(|e| anyhow!(e))
}

/// The first line of a password file.
pub(super) fn password_from_file(
    f: &std::path::Path,
) -> std::result::Result<Zeroizing<Vec<u8>>, Error> {
    let data = Zeroizing::new(std::fs::read(f).map_err(|e| Error::Io {
        path: f.to_path_buf(),
        source: e,
    })?);
    let line = data.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(Error::InvalidInput(format!(
            "password file {} is empty",
            f.display()
        )));
    }
    Ok(Zeroizing::new(line.to_vec()))
}

/// Ask on the terminal (twice if `confirm`).
pub(super) fn prompt_password(
    prompt: &str,
    confirm: bool,
) -> std::result::Result<Zeroizing<Vec<u8>>, Error> {
    let p = Zeroizing::new(rpassword::prompt_password(prompt).map_err(|e| Error::Io {
        path: PathBuf::from("/dev/tty"),
        source: e,
    })?);
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("enter the password again: ").map_err(|e| Error::Io {
                path: PathBuf::from("/dev/tty"),
                source: e,
            })?,
        );
        if *again != *p {
            return Err(Error::InvalidInput("the passwords do not match".into()));
        }
    }
    if p.is_empty() {
        return Err(Error::InvalidInput("empty password".into()));
    }
    Ok(Zeroizing::new(p.as_bytes().to_vec()))
}

/// The process's one stop request: Ctrl-C asks it, every repository opened obeys it.
pub(super) fn shutdown() -> &'static Shutdown {
    static SHUTDOWN: std::sync::OnceLock<Shutdown> = std::sync::OnceLock::new();
    SHUTDOWN.get_or_init(Shutdown::new)
}

/// How to open the repository `r`.
pub(super) fn open_options(g: &Settings, r: &RepoSettings) -> OpenOptions {
    let mut o = OpenOptions::new(g.cache_dir.clone());
    o.shutdown = shutdown().clone();
    // A local disk gains nothing from more than two writers at once, and every pack in flight
    // is 16 MiB of memory.
    o.connections = r.connections;
    o.accept_repository_change = g.accept_repository_change;
    if let Some(limit) = g.cache_size {
        o.cache_size = limit;
    }
    o
}

/// Argon2id parameters for new keys. Cheap ones only in debug builds, and only on request.
fn kdf_params() -> KdfParams {
    if cfg!(debug_assertions) && std::env::var("CAIRN_INSECURE_TEST_KDF").as_deref() == Ok("1") {
        tracing::warn!("using INSECURE key derivation parameters (test builds only)");
        KdfParams::INSECURE_FOR_TESTS
    } else {
        KdfParams::DEFAULT
    }
}

/// Open the repository of `-r`.
pub(super) async fn open_repo(g: &Settings) -> Result<Arc<Repository>> {
    open_repo_at(g, g.repo()?).await
}

/// Open the repository of a command that may name a source of the configuration
/// (`--source NAME`): `-r` if given, else the repository of the job that backs it up. Also the
/// tag filter that picks the source's snapshots (`tags` and `source=NAME`).
pub(super) async fn open_repo_for_source(
    g: &Settings,
    source: Option<&str>,
    tags: &[String],
) -> Result<(Arc<Repository>, Vec<String>)> {
    let mut tags = tags.to_vec();
    let Some(name) = source else {
        return Ok((open_repo(g).await?, tags));
    };
    let repo = match g.source_repository(name)? {
        Some(r) => open_repo_at(g, &r).await?,
        None => open_repo(g).await?,
    };
    tags.push(format!("source={name}"));
    Ok((repo, tags))
}

/// Open the repository `r`.
pub(super) async fn open_repo_at(g: &Settings, r: &RepoSettings) -> Result<Arc<Repository>> {
    let b = backend_of(r)?;
    let location = b.location();
    let repo = Repository::open(b, || r.password(false), &open_options(g, r))
        .await
        .with_context(|| format!("opening repository {location}"))?;
    Ok(Arc::new(repo))
}

/// A duration flag: `90s`, `1h30m`, `7d` (the syntax of the configuration file too).
pub(super) fn parse_duration(s: &str) -> Result<Duration> {
    Ok(cairn::config::value::parse_duration(s)?)
}

/// "YYYY-MM-DD HH:MM:SS" in the local time zone.
pub(super) fn parse_time(s: &str) -> Result<Timestamp> {
    let dt: jiff::civil::DateTime = s
        .trim()
        .replacen(' ', "T", 1)
        .parse()
        .with_context(|| format!("--time {s:?}: expected \"YYYY-MM-DD HH:MM:SS\""))?;
    let z = dt
        .to_zoned_datetime(jiff::tz::TimeZone::system())
        .with_context(|| format!("--time {s:?}"))?;
    Ok(Timestamp::from_jiff(z.timestamp()))
}

fn split_snap(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((s, p)) => (s, Some(p)),
        None => (spec, None),
    }
}

pub(super) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    // Buffered: standard output is line-buffered, and pretty JSON of a long list is many lines.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

async fn init(g: &Settings, a: InitArgs) -> Result<i32> {
    let b = backend(g)?;
    let location = b.location();
    let encryption = match a.encryption {
        EncryptionArg::Repokey => Encryption::Repokey,
        EncryptionArg::None => Encryption::None,
    };
    let pw = match encryption {
        Encryption::Repokey => g.repo()?.password(true)?,
        Encryption::None => Zeroizing::new(Vec::new()),
    };
    let opts = InitOptions {
        encryption,
        kdf: kdf_params(),
        ..Default::default()
    };
    let repo = Repository::init(b, &pw, &opts, &open_options(g, g.repo()?))
        .await
        .with_context(|| format!("creating a repository at {location}"))?;
    if g.json {
        print_json(&serde_json::json!({
            "repository": location,
            "id": repo.config().repo_id,
            "encryption": encryption.as_str(),
        }))?;
    } else if !g.quiet {
        println!(
            "created cairn repository {} at {location} (encryption: {})",
            repo.config().repo_id.short(),
            encryption.as_str()
        );
        if encryption == Encryption::Repokey {
            println!("Losing the password means losing the data in the repository.");
        }
    }
    Ok(EXIT_OK)
}

fn exclude_options(a: &BackupArgs) -> Result<ExcludeOptions> {
    let mut patterns = a.exclude.clone();
    for f in &a.exclude_file {
        patterns.extend(
            cairn::source::exclude::patterns_from_file(f)
                .with_context(|| format!("reading exclude file {}", f.display()))?,
        );
    }
    Ok(ExcludeOptions {
        patterns,
        if_present: a.exclude_if_present.clone(),
        caches: a.exclude_caches,
    })
}

async fn backup_cmd(g: &Settings, a: BackupArgs) -> Result<i32> {
    let stream = a.stdin || a.stdin_from_command;
    if a.stdin && a.stdin_from_command {
        bail!("--stdin and --stdin-from-command cannot be combined");
    }
    if a.stdin && !a.paths.is_empty() {
        bail!("--stdin takes no paths");
    }
    if !stream && a.paths.is_empty() {
        bail!("nothing to back up: give at least one path");
    }
    let progress = Arc::new(Progress::default());
    let opts = BackupOptions {
        exclude: exclude_options(&a)?,
        one_file_system: a.one_file_system,
        with_atime: a.with_atime,
        tags: a.tags.clone(),
        host: a.host.clone(),
        time: a.time.as_deref().map(parse_time).transpose()?,
        dry_run: a.dry_run,
        parent: a.parent.clone(),
        force: a.force,
        compression: a.compression.parse::<Compression>()?,
        progress: Some(progress.clone()),
        scan: !g.quiet && std::io::stderr().is_terminal(),
        lease_wait: g.lease_wait,
    };
    let repo = open_repo(g).await?;
    let bar = ProgressBar::start(progress.clone(), g.quiet || g.json, "backup");
    let started = Instant::now();
    let result = if a.stdin {
        backup::backup_reader(&repo, std::io::stdin(), &a.stdin_name, &opts).await
    } else if a.stdin_from_command {
        backup::backup_command(&repo, &a.paths, &a.stdin_name, &opts).await
    } else {
        let paths: Vec<PathBuf> = a.paths.iter().map(PathBuf::from).collect();
        backup::backup_paths(&repo, &paths, &opts).await
    };
    bar.finish().await;
    let outcome = result.context("backup failed")?;
    report_backup(g, &outcome, started.elapsed())?;
    Ok(if outcome.errors.is_empty() {
        EXIT_OK
    } else {
        EXIT_PARTIAL
    })
}

/// A backup's outcome as its `--json` document.
pub(super) fn backup_json(o: &BackupOutcome, took: Duration) -> serde_json::Value {
    serde_json::json!({
        "snapshot_id": o.snapshot_id,
        "dry_run": o.snapshot_id.is_none(),
        "parent": o.snapshot.parent,
        "summary": o.snapshot.summary,
        "errors": o.errors,
        "seconds": took.as_secs_f64(),
    })
}

pub(super) fn report_backup(g: &Settings, o: &BackupOutcome, took: Duration) -> Result<()> {
    let s = &o.snapshot.summary;
    if g.json {
        return print_json(&backup_json(o, took));
    }
    for e in &o.errors {
        ewriteln!("cairn: could not read {e}");
    }
    if g.quiet {
        return Ok(());
    }
    println!(
        "Files:     {} new, {} changed, {} unmodified",
        s.files_new, s.files_changed, s.files_unmodified
    );
    println!("Dirs:      {}", s.dirs);
    println!(
        "Stored:    {} in {} packs (new data: {} before compression and deltas)",
        output::bytes(s.stored_bytes_added),
        s.packs_added,
        output::bytes(s.new_data_bytes),
    );
    println!(
        "Processed: {} files, {} in {}",
        s.total_files,
        output::bytes(s.total_bytes),
        output::duration(took)
    );
    match &o.snapshot_id {
        Some(id) => println!("snapshot {} saved", id.short()),
        None => println!("dry run: no snapshot written"),
    }
    if !o.errors.is_empty() {
        println!(
            "warning: {} source entries could not be read and are missing from the snapshot",
            o.errors.len()
        );
    }
    Ok(())
}

pub(super) fn snapshot_json(id: &Id, s: &Snapshot) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "short_id": id.short(),
        "time": s.time,
        "host": s.host,
        "username": s.username,
        "tags": s.tags,
        "paths": s.paths,
        "tree": s.tree,
        "parent": s.parent,
        "source": s.source,
        "program": s.program,
        "summary": s.summary,
        "meta": s.meta.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
    })
}

async fn snapshots(g: &Settings, a: SnapshotsArgs) -> Result<i32> {
    let (repo, tags) = open_repo_for_source(g, a.source.as_deref(), &a.tags).await?;
    let list: Vec<(Id, Snapshot)> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| a.host.as_ref().is_none_or(|h| &s.host == h))
        .filter(|(_, s)| tags.iter().all(|t| s.tags.contains(t)))
        .collect();
    if g.json {
        return print_json(&serde_json::Value::Array(
            list.iter().map(|(id, s)| snapshot_json(id, s)).collect(),
        ))
        .map(|_| EXIT_OK);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<8}  {:<19}  {:<12}  {:<12}  {:>12}  Paths",
        "ID", "Time", "Host", "Tags", "Size"
    )?;
    for (id, s) in &list {
        let time = s
            .time
            .to_jiff()
            .map(|t| {
                t.to_zoned_datetime(jiff::tz::TimeZone::system())
                    .strftime("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        writeln!(
            out,
            "{:<8}  {:<19}  {:<12}  {:<12}  {:>12}  {}",
            id.short(),
            time,
            s.host,
            s.tags.join(","),
            output::bytes(s.summary.total_bytes),
            s.paths.join(" ")
        )?;
    }
    writeln!(out, "{} snapshots", list.len())?;
    Ok(EXIT_OK)
}

async fn ls(g: &Settings, a: LsArgs) -> Result<i32> {
    let repo = open_repo(g).await?;
    let (spec, sub) = split_snap(&a.snapshot);
    let path = a.path.as_deref().or(sub).unwrap_or("/");
    let (id, snap) = repo.find_snapshot(spec, a.host.as_deref(), &a.tags)?;
    let start = read::resolve(&repo, &snap, path).await?;
    let prefix = format!("/{}", read::components(path)?.join("/"));
    let prefix = if prefix == "/" { String::new() } else { prefix };
    let entries = read::walk(&repo, &start, &prefix).await?;
    let mut out = std::io::stdout().lock();
    if g.json {
        for (p, n) in &entries {
            let v = serde_json::json!({
                "path": p,
                "type": n.kind,
                "mode": n.mode,
                "uid": n.uid, "gid": n.gid, "user": n.user, "group": n.group,
                "size": n.size,
                "mtime": n.mtime, "atime": n.atime, "ctime": n.ctime,
                "inode": n.inode, "links": n.links,
                "target": (n.kind == NodeKind::Symlink).then(|| String::from_utf8_lossy(&n.target).into_owned()),
            });
            serde_json::to_writer(&mut out, &v)?;
            writeln!(out)?;
        }
        return Ok(EXIT_OK);
    }
    if !g.quiet {
        ewriteln!(
            "snapshot {} of {} at {}",
            id.short(),
            snap.paths.join(" "),
            snap.time.to_rfc3339()
        );
    }
    for (p, n) in &entries {
        let shown = if p.is_empty() { "/" } else { p.as_str() };
        if a.long {
            let time = n
                .mtime
                .to_jiff()
                .map(|t| {
                    t.to_zoned_datetime(jiff::tz::TimeZone::system())
                        .strftime("%Y-%m-%d %H:%M:%S")
                        .to_string()
                })
                .unwrap_or_default();
            let owner = if n.user.is_empty() {
                n.uid.to_string()
            } else {
                n.user.clone()
            };
            let group = if n.group.is_empty() {
                n.gid.to_string()
            } else {
                n.group.clone()
            };
            let link = if n.kind == NodeKind::Symlink {
                format!(" -> {}", String::from_utf8_lossy(&n.target))
            } else {
                String::new()
            };
            writeln!(
                out,
                "{} {:>8} {:>8} {:>12} {} {}{}",
                output::mode_string(n.kind, n.mode),
                owner,
                group,
                n.size,
                time,
                shown,
                link
            )?;
        } else {
            writeln!(out, "{shown}")?;
        }
    }
    Ok(EXIT_OK)
}

async fn dump(g: &Settings, a: DumpArgs) -> Result<i32> {
    let repo = open_repo(g).await?;
    let (spec, sub) = split_snap(&a.snapshot);
    let path = a
        .path
        .as_deref()
        .or(sub)
        .ok_or_else(|| anyhow!("dump needs a path: cairn dump SNAP PATH"))?;
    let (_, snap) = repo.find_snapshot(spec, a.host.as_deref(), &a.tags)?;
    let wait = g.lease_wait;
    repo.with_lease(LeaseMode::Read, "dump", wait, |_| async {
        let node = match read::resolve(&repo, &snap, path).await? {
            Resolved::Node(n) if n.kind == NodeKind::File => n,
            Resolved::Node(n) if n.kind != NodeKind::Dir => {
                return Err(Error::InvalidInput(format!(
                    "{path} is a {}; dump writes one file",
                    n.kind.as_str()
                )));
            }
            Resolved::Node(_) | Resolved::Root(_) => {
                return Err(Error::InvalidInput(format!(
                    "{path} is a directory; dump writes one file"
                )));
            }
        };
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
        read::dump(&repo, &node, &mut out).await
    })
    .await?;
    Ok(EXIT_OK)
}

async fn restore_cmd(g: &Settings, a: RestoreArgs) -> Result<i32> {
    let (repo, tags) = open_repo_for_source(g, a.source.as_deref(), &a.tags).await?;
    let (spec, sub) = split_snap(&a.snapshot);
    let (id, snap) = repo.find_snapshot(spec, a.host.as_deref(), &tags)?;
    let progress = Arc::new(Progress::default());
    progress.total_bytes.store(
        snap.summary.total_bytes,
        std::sync::atomic::Ordering::Relaxed,
    );
    let opts = RestoreOptions {
        include: a.include.clone(),
        exclude: a.exclude.clone(),
        verify: a.verify,
        progress: Some(progress.clone()),
        lease_wait: g.lease_wait,
        overwrite: a.overwrite,
        delete: a.delete,
    };
    let bar = ProgressBar::start(progress, g.quiet || g.json, "restore");
    let started = Instant::now();
    let r = restore::restore(&repo, &snap, sub.unwrap_or("/"), &a.target, &opts).await;
    bar.finish().await;
    let o = r.with_context(|| format!("restoring snapshot {}", id.short()))?;
    let took = started.elapsed();
    if g.json {
        print_json(&serde_json::json!({
            "snapshot_id": id,
            "target": a.target,
            "files": o.files, "dirs": o.dirs, "others": o.others,
            "bytes": o.bytes,
            "verified_files": o.verified_files,
            "unchanged": o.unchanged,
            "skipped": o.skipped,
            "deleted": o.deleted,
            "errors": o.errors,
            "seconds": took.as_secs_f64(),
        }))?;
    } else {
        for e in &o.errors {
            ewriteln!("cairn: {e}");
        }
        if !g.quiet {
            let mut left = Vec::new();
            if o.unchanged > 0 {
                left.push(format!("{} unchanged", o.unchanged));
            }
            if o.skipped > 0 {
                left.push(format!("{} kept (--overwrite {})", o.skipped, a.overwrite));
            }
            if o.deleted > 0 {
                left.push(format!("{} deleted", o.deleted));
            }
            println!(
                "restored snapshot {} to {}: {} files, {} dirs, {} in {}{}",
                id.short(),
                a.target.display(),
                o.files,
                o.dirs,
                output::bytes(o.bytes),
                output::duration(took),
                if left.is_empty() {
                    String::new()
                } else {
                    format!("; {}", left.join(", "))
                }
            );
            if a.verify {
                println!("verified {} files", o.verified_files);
            }
        }
    }
    if o.errors.is_empty() {
        Ok(EXIT_OK)
    } else {
        ewriteln!("cairn: {} errors during restore", o.errors.len());
        Ok(EXIT_FAILURE)
    }
}

async fn stats(g: &Settings, a: StatsArgs) -> Result<i32> {
    if a.history {
        return super::run::stats_history(g, a.job.as_deref(), a.last);
    }
    let repo = open_repo(g).await?;
    let snaps = if a.snapshots.is_empty() {
        repo.snapshots()?
    } else {
        a.snapshots
            .iter()
            .map(|s| repo.find_snapshot(s, None, &[]))
            .collect::<std::result::Result<Vec<_>, _>>()?
    };
    let s = read::stats(&repo, &snaps).await?;
    if g.json {
        print_json(&serde_json::to_value(&s)?)?;
        return Ok(EXIT_OK);
    }
    println!("Snapshots:          {}", s.snapshots);
    println!("Files:              {}", s.files);
    println!("Logical size:       {}", output::bytes(s.logical_bytes));
    println!(
        "Unique data:        {} in {} blobs",
        output::bytes(s.raw_bytes),
        s.blobs
    );
    println!("Stored size:        {}", output::bytes(s.stored_bytes));
    println!("Dedup ratio:        {:.2}x", s.dedup_ratio);
    println!("Compression ratio:  {:.2}x", s.compression_ratio);
    println!("Repository packs:   {}", output::bytes(s.repository_bytes));
    let _ = EXIT_FAILURE;
    Ok(EXIT_OK)
}
