//! The command line: clap definitions, resolving flags and environment into library options,
//! and rendering results. Exit codes: 0 ok, 1 failure, 3 snapshot written but some sources
//! unreadable, 10 no repository, 11 lease not obtained, 12 wrong password, 13 the repository
//! is not the one this cache knew at its location (`--accept-repository-change`), 130
//! interrupted.
//!
//! Standard error is for people and logs, and may be closed or full: nothing written to it may
//! change the outcome. Messages go through [`ewriteln!`], which ignores a failed write
//! (`eprintln!` panics, and a panic exits 101), and colour is used only on a terminal.
// `eprintln!` panics when stderr is full; use `ewriteln!`.
#![deny(clippy::print_stderr)]

/// `eprintln!` that ignores a failed write (a closed or full standard error).
macro_rules! ewriteln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod args;
mod commands;
mod config;
mod copy;
mod daemon;
mod drill;
mod find;
mod forget;
mod maint;
mod mount;
mod mysql;
mod notify;
mod output;
mod run;
mod s3args;
mod settings;
mod web;

use clap::Parser;

use cairn::ErrorKind;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_PARTIAL: i32 = 3;
pub const EXIT_NO_REPO: i32 = 10;
pub const EXIT_LOCKED: i32 = 11;
pub const EXIT_WRONG_PASSWORD: i32 = 12;
pub const EXIT_REPOSITORY_CHANGED: i32 = 13;
pub const EXIT_INTERRUPTED: i32 = 130;

pub fn main() -> i32 {
    let cli = match args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    // `config init` must work whatever the file it replaces says.
    let read_config = !matches!(
        &cli.command,
        args::Command::Config(config::ConfigArgs {
            command: config::ConfigCommand::Init(_)
        })
    );
    // The daemon says what it does unless told to be quiet.
    let is_daemon = matches!(cli.command, args::Command::Daemon(_));
    let json_logs = cli.global.log_format == args::LogFormat::Json;
    let settings = match settings::Settings::resolve(&cli.global, read_config) {
        Ok(s) => s,
        Err(e) => {
            init_logging(cli.global.quiet, cli.global.verbose, json_logs);
            return report(&e);
        }
    };
    let verbose = if is_daemon {
        settings.verbose.max(1)
    } else {
        settings.verbose
    };
    init_logging(settings.quiet, verbose, json_logs);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ewriteln!("cairn: cannot start the async runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    let shutdown = commands::shutdown().clone();
    let result = rt.block_on(async {
        if let args::Command::Daemon(a) = cli.command {
            // The daemon handles its own signals.
            return daemon::run(settings, cli.global, a).await;
        }
        if let args::Command::Mount(a) = cli.command {
            // Mount unmounts on SIGINT and SIGTERM itself, and then exits 0.
            return mount::mount(&settings, a).await;
        }
        let command = commands::run(&settings, cli.command);
        tokio::pin!(command);
        tokio::select! {
            r = &mut command => return r,
            _ = tokio::signal::ctrl_c() => {}
        }
        // Ctrl-C: operations under a lease stop their work and delete their lease; wait for
        // that (a second Ctrl-C, or the deadline, gives up). Others just end here.
        shutdown.request();
        if shutdown.leases_in_flight() > 0 {
            let deadline = cairn::repo::lease::RELEASE_PATIENCE + std::time::Duration::from_secs(5);
            tokio::select! {
                _ = &mut command => {}
                _ = tokio::signal::ctrl_c() => {}
                _ = tokio::time::sleep(deadline) => {}
            }
        }
        Err(anyhow::Error::new(cairn::Error::Interrupted))
    });
    // Do not wait for blocking tasks of an interrupted command.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

/// Log lines go to stderr: cairn's own at the level `-q`/`-v` choose; other crates' (opendal,
/// the AWS signer, ...) only from `-vv` on, as they print their internals in Rust's debug
/// notation and whatever matters reaches the user as an error anyway. `CAIRN_LOG` (an
/// `EnvFilter` directive) overrides both.
fn init_logging(quiet: bool, verbose: u8, json: bool) {
    let directives = if quiet {
        "cairn=error".to_string()
    } else {
        match verbose {
            0 => "cairn=warn".to_string(),
            1 => "cairn=info".to_string(),
            2 => "cairn=debug,warn".to_string(),
            _ => "trace".to_string(),
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Its fallback for a failed write is `eprintln!`, which panics on a full stderr.
        .log_internal_errors(false)
        .with_target(false);
    let _ = if json {
        builder.json().with_ansi(false).try_init()
    } else {
        builder
            .with_ansi(colour_on_stderr())
            .without_time()
            .try_init()
    };
}

/// Colour only on a terminal, and not with `NO_COLOR` set to anything but "" (no-color.org).
/// (clap decides the same way for its own messages.)
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Print an error and choose the exit code.
fn report(e: &anyhow::Error) -> i32 {
    // A closed pipe (`cairn ls ... | head`) is how the reader says it has enough.
    for cause in e.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return EXIT_OK;
        }
        if let Some(cairn::Error::Io { source, .. }) = cause.downcast_ref::<cairn::Error>()
            && source.kind() == std::io::ErrorKind::BrokenPipe
        {
            return EXIT_OK;
        }
    }
    ewriteln!("cairn: error: {e:#}");
    let kind = e
        .chain()
        .find_map(|c| c.downcast_ref::<cairn::Error>())
        .map(|c| c.kind());
    match kind {
        Some(ErrorKind::RepoNotFound) => EXIT_NO_REPO,
        Some(ErrorKind::Locked) => EXIT_LOCKED,
        Some(ErrorKind::WrongPassword) => EXIT_WRONG_PASSWORD,
        Some(ErrorKind::RepositoryChanged) => EXIT_REPOSITORY_CHANGED,
        Some(ErrorKind::Interrupted) => EXIT_INTERRUPTED,
        _ => EXIT_FAILURE,
    }
}
