//! `cairn config init | check | show`: write, validate and print the configuration file.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};

use cairn::config::{self, ConfigFile};

use super::EXIT_OK;
use super::commands::print_json;
use super::settings::Settings;

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a commented starting configuration for an application.
    Init(InitArgs),
    /// Validate the configuration file (syntax, keys, types, names, secrets).
    Check,
    /// Print the configuration as cairn reads it, every secret redacted.
    Show,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Preset {
    /// A Laravel application: uploads, config and logs, and its MySQL/MariaDB database.
    Laravel,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// What kind of application.
    #[arg(long, value_enum)]
    pub preset: Preset,
    /// The application's directory (its .env gives the database settings).
    #[arg(long, value_name = "DIR")]
    pub app: PathBuf,
    /// Write the file here instead of to standard output (refused if it exists).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub async fn run(g: &Settings, a: ConfigArgs) -> Result<i32> {
    match a.command {
        ConfigCommand::Init(a) => init(a),
        ConfigCommand::Check => {
            let f = load(g)?;
            if g.json {
                print_json(&serde_json::json!({
                    "file": f.path,
                    "repositories": f.config.repositories.keys().collect::<Vec<_>>(),
                    "sources": f.config.sources.keys().collect::<Vec<_>>(),
                    "jobs": f.config.jobs.keys().collect::<Vec<_>>(),
                }))?;
            } else if !g.quiet {
                let c = &f.config;
                println!(
                    "{}: ok ({} repositories, {} sources, {} jobs)",
                    f.path.display(),
                    c.repositories.len(),
                    c.sources.len(),
                    c.jobs.len()
                );
            }
            Ok(EXIT_OK)
        }
        ConfigCommand::Show => {
            let f = load(g)?;
            let effective = g.effective();
            if g.json {
                let file: serde_json::Value = toml::from_str(&f.show()?)?;
                print_json(&serde_json::json!({
                    "file": f.path,
                    "effective": effective,
                    "config": file,
                }))?;
                return Ok(EXIT_OK);
            }
            println!("# {}", f.path.display());
            println!("#");
            println!("# In effect (flags, then environment, then this file, then defaults):");
            for line in toml::to_string_pretty(&without_nulls(effective))?.lines() {
                if !line.is_empty() {
                    println!("#   {line}");
                }
            }
            println!();
            print!("{}", f.show()?);
            Ok(EXIT_OK)
        }
    }
}

/// `v` without its null members (TOML has no null).
fn without_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k, without_nulls(v)))
            .collect(),
        other => other,
    }
}

/// The configuration file (found and checked when the settings were resolved).
pub(super) fn load(g: &Settings) -> Result<&ConfigFile> {
    g.config.as_ref().with_context(|| {
        "no configuration file: give --config FILE (or CAIRN_CONFIG), or create \
         $XDG_CONFIG_HOME/cairn/cairn.toml or /etc/cairn/cairn.toml (see `cairn config init`)"
    })
}

fn init(a: InitArgs) -> Result<i32> {
    let text = match a.preset {
        Preset::Laravel => config::laravel::init(&a.app)?,
    };
    // What we write must be what we read.
    ConfigFile::parse(
        a.output.as_deref().unwrap_or("cairn.toml".as_ref()),
        text.clone(),
    )
    .context("the generated configuration does not check (a bug in cairn)")?;
    match &a.output {
        None => {
            std::io::stdout().write_all(text.as_bytes())?;
        }
        Some(out) => {
            use std::os::unix::fs::OpenOptionsExt;
            if out.exists() {
                bail!("{} exists; not overwriting it", out.display());
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(out)
                .with_context(|| format!("creating {}", out.display()))?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .with_context(|| format!("writing {}", out.display()))?;
            ewriteln!(
                "wrote {}; review it, then `cairn --config {} config check`",
                out.display(),
                out.display()
            );
        }
    }
    Ok(EXIT_OK)
}
