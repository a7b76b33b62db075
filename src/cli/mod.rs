//! The command line: clap definitions, resolving flags and environment into library options,
//! and rendering results. Exit codes: 0 ok, 1 failure, 3 snapshot written but some sources
//! unreadable, 10 no repository, 11 lease not obtained, 12 wrong password, 130 interrupted.

mod args;
mod commands;
mod copy;
mod forget;
mod maint;
mod mysql;
mod output;
mod s3args;

use clap::Parser;

use cairn::ErrorKind;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_PARTIAL: i32 = 3;
pub const EXIT_NO_REPO: i32 = 10;
pub const EXIT_LOCKED: i32 = 11;
pub const EXIT_WRONG_PASSWORD: i32 = 12;
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
    init_logging(&cli.global);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: cannot start the async runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    let shutdown = commands::shutdown().clone();
    let result = rt.block_on(async {
        let command = commands::run(cli);
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

fn init_logging(g: &args::GlobalArgs) {
    let level = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("cairn={level},warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
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
    eprintln!("cairn: error: {e:#}");
    let kind = e
        .chain()
        .find_map(|c| c.downcast_ref::<cairn::Error>())
        .map(|c| c.kind());
    match kind {
        Some(ErrorKind::RepoNotFound) => EXIT_NO_REPO,
        Some(ErrorKind::Locked) => EXIT_LOCKED,
        Some(ErrorKind::WrongPassword) => EXIT_WRONG_PASSWORD,
        Some(ErrorKind::Interrupted) => EXIT_INTERRUPTED,
        _ => EXIT_FAILURE,
    }
}
