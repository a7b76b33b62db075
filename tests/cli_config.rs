//! `cairn config init | check | show` (issue 14): the Laravel preset reads the app's `.env`
//! and never copies its password; errors name file, line and column; a file holding a secret
//! must be readable by its owner only; `show` redacts every secret.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

const DB_PASSWORD: &str = "Db-Pa55-never-copied";

/// A Laravel application tree with a `.env`.
fn laravel_app(env: &Env) -> PathBuf {
    let app = env.path("shop-app");
    write(&app.join("artisan"), b"#!/usr/bin/env php\n");
    write(&app.join("storage/app/public/avatar.png"), b"png");
    write(&app.join("config/app.php"), b"<?php return [];\n");
    write(
        &app.join(".env"),
        format!(
            "APP_NAME=\"Web Shop\"\nDB_CONNECTION=mysql\nDB_HOST=db.internal\nDB_PORT=3307\n\
             DB_DATABASE=shop\nDB_USERNAME=shopuser\nDB_PASSWORD=\"{DB_PASSWORD}\"\n"
        )
        .as_bytes(),
    );
    app
}

fn with_config(env: &Env, file: &Path) -> Cairn {
    env.cmd().arg("--config").arg(file)
}

#[test]
fn laravel_preset_reads_the_env_and_checks() {
    let env = Env::new_local();
    let app = laravel_app(&env);
    let file = env.path("cairn.toml");
    env.cmd()
        .args(["config", "init", "--preset", "laravel", "--app"])
        .arg(&app)
        .arg("-o")
        .arg(&file)
        .run()
        .ok();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(DB_PASSWORD), "{text}");
    for want in [
        "host = \"db.internal\"",
        "port = 3307",
        "user = \"shopuser\"",
        "databases = [\"shop\"]",
        "password = \"${DB_PASSWORD}\"",
        "keep-daily = 7",
        "keep-daily = 30",
        "exclude-presets = [\"laravel\"]",
        "/var/backups/cairn/web-shop",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert!(text.contains(&format!("\"{}\"", app.join("storage/app").display())));
    // Not overwritten.
    env.cmd()
        .args(["config", "init", "--preset", "laravel", "--app"])
        .arg(&app)
        .arg("-o")
        .arg(&file)
        .run()
        .code(1)
        .stderr_has("exists");
    let out = with_config(&env, &file)
        .args(["--json", "config", "check"])
        .run()
        .ok()
        .json();
    assert_eq!(out["jobs"], serde_json::json!(["nightly"]), "{out}");
    assert_eq!(
        out["sources"],
        serde_json::json!(["app", "database", "uploads"])
    );
    // CAIRN_CONFIG finds it too, and so does $XDG_CONFIG_HOME/cairn/cairn.toml.
    env.cmd()
        .env("CAIRN_CONFIG", &file)
        .args(["config", "check"])
        .run()
        .ok();
    let xdg = env.dir.path().join("xdg-config/cairn");
    std::fs::create_dir_all(&xdg).unwrap();
    std::fs::copy(&file, xdg.join("cairn.toml")).unwrap();
    let shown = env.cmd().args(["config", "show"]).run().ok().stdout_str();
    assert!(shown.contains("[jobs.nightly]"), "{shown}");
    // Not a Laravel app.
    env.cmd()
        .args(["config", "init", "--preset", "laravel", "--app"])
        .arg(env.path("nowhere"))
        .run()
        .code(1)
        .stderr_has("does not look like a Laravel application");
}

#[test]
fn errors_name_file_line_and_column() {
    let env = Env::new_local();
    let cases: &[(&str, &str, &str)] = &[
        (
            "[settings]\nlease-wait = \"5m\"\nbogus = 1\n",
            ":3:1: ",
            "unknown field `bogus`",
        ),
        (
            "[settings]\nconnections = \"four\"\n",
            ":2:15: ",
            "invalid type",
        ),
        (
            "[repositories.local]\nurl = \"/r\"\n\n[sources.s]\nkind = \"files\"\npaths = [\"/srv\"]\n\n\
             [jobs.j]\nsources = [\"s\"]\nrepository = \"locl\"\n",
            ":10:14: ",
            "no repository \"locl\"",
        ),
        (
            "[sources.s]\nkind = \"files\"\npaths = [\"/srv\"]\n    one-filesystem = true\n",
            ":4:5: ",
            "unknown field `one-filesystem`",
        ),
        (
            "[repositories.x]\nurl = \"/r\"\nkeep-within = \"3w\"\n",
            ":3:15: ",
            "unknown unit",
        ),
        ("[settings\n", ":1:", ""),
    ];
    for (i, (text, at, what)) in cases.iter().enumerate() {
        let file = env.path(&format!("bad{i}.toml"));
        write(&file, text.as_bytes());
        let out = with_config(&env, &file)
            .args(["config", "check"])
            .run()
            .code(1);
        let want = format!("{}{at}", file.display());
        assert!(out.stderr.contains(&want), "{want:?}: {out}");
        assert!(out.stderr.contains(what), "{what:?}: {out}");
        assert!(!out.stderr.contains("panicked"), "{out}");
    }
    // A missing file named explicitly.
    with_config(&env, &env.path("absent.toml"))
        .args(["config", "check"])
        .run()
        .code(1)
        .stderr_has("absent.toml");
    // None at all.
    env.cmd()
        .args(["config", "check"])
        .run()
        .code(1)
        .stderr_has("no configuration file");
}

#[test]
fn a_file_holding_a_secret_must_be_private_and_show_redacts_it() {
    let env = Env::new_local();
    let file = env.path("cairn.toml");
    let text = format!(
        "[repositories.offsite]\nurl = \"s3://b/p\"\npassword = \"repo-secret-1\"\n\
         s3.secret-access-key = \"aws-secret-2\"\n\n[sources.db]\nkind = \"mysql\"\n\
         databases = [\"shop\"]\npassword = \"{DB_PASSWORD}\"\n"
    );
    write(&file, text.as_bytes());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = with_config(&env, &file)
        .args(["config", "check"])
        .run()
        .code(1)
        .stderr_has("readable by others")
        .stderr_has(&file.display().to_string());
    for secret in ["repo-secret-1", "aws-secret-2", DB_PASSWORD] {
        assert!(!out.stderr.contains(secret), "{out}");
    }
    assert!(
        out.stderr.contains("repositories.offsite.password"),
        "{out}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    with_config(&env, &file)
        .args(["config", "check"])
        .run()
        .ok();
    let shown = with_config(&env, &file).args(["config", "show"]).run().ok();
    let s = shown.stdout_str();
    for secret in ["repo-secret-1", "aws-secret-2", DB_PASSWORD] {
        assert!(!s.contains(secret) && !shown.stderr.contains(secret), "{s}");
    }
    assert_eq!(s.matches("<redacted>").count(), 3, "{s}");
    // References are not secrets: a world-readable file of references is fine.
    let refs = env.path("refs.toml");
    write(
        &refs,
        b"[repositories.offsite]\nurl = \"s3://b/p\"\npassword = \"${REPO_PASSWORD}\"\n",
    );
    std::fs::set_permissions(&refs, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = with_config(&env, &refs)
        .args(["config", "show"])
        .run()
        .ok()
        .stdout_str();
    assert!(s.contains("${REPO_PASSWORD}"), "{s}");
}

/// Repositories by name: `[settings] repository` when there is no `-r`, `-r NAME`, and
/// `copy --to NAME`, each with its password from the file's password-file or
/// password-command; a flag still beats the file.
#[test]
fn repositories_by_name_take_their_settings_from_the_file() {
    let env = Env::new_local();
    let local = env.path("tier-local");
    let offsite = env.path("tier-offsite");
    let pw_local = env.path("local.password");
    let pw_offsite = env.path("offsite.password");
    write(&pw_local, b"local-password-1\n");
    write(&pw_offsite, b"offsite-password-2\n");
    let file = env.path("cairn.toml");
    write(
        &file,
        format!(
            "[settings]\nrepository = \"local\"\njson = true\nlease-wait = \"2s\"\n\n\
             [repositories.local]\nurl = \"{}\"\npassword-file = \"{}\"\n\n\
             [repositories.offsite]\nurl = \"{}\"\npassword-command = \"cat {}\"\n",
            local.display(),
            pw_local.display(),
            offsite.display(),
            pw_offsite.display()
        )
        .as_bytes(),
    );
    let cmd = || {
        Cairn::bare(&env)
            .env_remove("CAIRN_PASSWORD")
            .arg("--config")
            .arg(&file)
    };
    cmd().arg("init").run().ok();
    assert!(local.join("config").exists(), "init went elsewhere");
    cmd().args(["-r", "offsite", "init"]).run().ok();
    assert!(offsite.join("config").exists());
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    // `json = true` from the file.
    let out = cmd().arg("backup").arg(&src).run().ok().json();
    let id = out["snapshot_id"].as_str().unwrap().to_string();
    let copied = cmd().args(["copy", "--to", "offsite"]).run().ok().json();
    assert_eq!(
        copied["copied"].as_array().map(Vec::len),
        Some(1),
        "{copied}"
    );
    let listed = cmd().args(["-r", "offsite", "snapshots"]).run().ok().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    // The password file is the local one's: opening offsite with it fails.
    cmd()
        .args(["-r", "offsite", "--password-file"])
        .arg(&pw_local)
        .arg("snapshots")
        .run()
        .code(12);
    // A path given with -r is a location, not a name, and beats [settings] repository.
    let other = env.path("elsewhere");
    cmd()
        .arg("-r")
        .arg(&other)
        .arg("--password-file")
        .arg(&pw_local)
        .arg("init")
        .run()
        .ok();
    assert!(other.join("config").exists());
    let snaps = cmd().arg("snapshots").run().ok().json();
    assert_eq!(snaps[0]["id"].as_str(), Some(id.as_str()), "{snaps}");
    // A password-command that fails is named, and nothing leaks.
    write(
        &file,
        format!(
            "[repositories.local]\nurl = \"{}\"\npassword-command = \"exit 3\"\n",
            local.display()
        )
        .as_bytes(),
    );
    cmd()
        .args(["-r", "local", "snapshots"])
        .run()
        .code(1)
        .stderr_has("password-command \"exit 3\" failed");
}

/// `--source NAME`: the source's snapshots, from the repository of the job that backs it up
/// (unless -r names another); unknown names are errors that list the file's sources.
#[test]
fn sources_by_name_find_their_job_repository_and_snapshots() {
    let env = Env::new_local();
    let (one, two) = (env.path("repo-one"), env.path("repo-two"));
    let pw = env.path("pw");
    write(&pw, b"source-test-password\n");
    let (uploads, docs) = (env.path("uploads"), env.path("docs"));
    write(&uploads.join("a.png"), b"png");
    write(&docs.join("manual.txt"), b"read me\n");
    let file = env.path("cairn.toml");
    write(
        &file,
        format!(
            "[settings]\nrepository = \"one\"\n\n\
             [repositories.one]\nurl = \"{one}\"\npassword-file = \"{pw}\"\n\n\
             [repositories.two]\nurl = \"{two}\"\n\n\
             [sources.uploads]\nkind = \"files\"\npaths = [\"{uploads}\"]\n\n\
             [sources.docs]\nkind = \"files\"\npaths = [\"{docs}\"]\n\n\
             [sources.db]\nkind = \"mysql\"\ndatabases = [\"shop\"]\n\n\
             [jobs.web]\nsources = [\"uploads\"]\nrepository = \"one\"\n\n\
             [jobs.papers]\nsources = [\"docs\"]\nrepository = \"two\"\n",
            one = one.display(),
            two = two.display(),
            pw = pw.display(),
            uploads = uploads.display(),
            docs = docs.display(),
        )
        .as_bytes(),
    );
    // Repository two has no password setting: CAIRN_PASSWORD is its password, for -r and
    // for the job and the source that name it.
    let cmd = || {
        Cairn::bare(&env)
            .env("CAIRN_PASSWORD", "source-test-password")
            .arg("--config")
            .arg(&file)
    };
    for r in ["one", "two"] {
        cmd().args(["-r", r, "init"]).run().ok();
    }
    cmd().args(["run", "web"]).run().ok();
    cmd().args(["run", "papers"]).run().ok();
    // A plain backup of docs into the default repository is not the source's snapshot.
    cmd().arg("backup").arg(&docs).run().ok();
    let count = |args: &[&str]| {
        let out = cmd().arg("--json").args(args).run().ok().json();
        out.as_array().map(Vec::len).unwrap_or(0)
    };
    assert_eq!(count(&["snapshots"]), 2, "the default repository");
    assert_eq!(count(&["snapshots", "--source", "uploads"]), 1);
    // docs is job papers', in repository two, not the default.
    assert_eq!(count(&["snapshots", "--source", "docs"]), 1);
    assert_eq!(count(&["-r", "one", "snapshots", "--source", "docs"]), 0);
    let target = env.path("restored");
    cmd()
        .args(["restore", "--source", "docs", "latest", "--target"])
        .arg(&target)
        .run()
        .ok();
    let restored = target
        .join(docs.strip_prefix("/").unwrap())
        .join("manual.txt");
    assert_eq!(std::fs::read(&restored).unwrap(), b"read me\n");
    // -r beats the job's repository: one has no snapshot of source docs.
    cmd()
        .args([
            "-r", "one", "restore", "--source", "docs", "latest", "--target",
        ])
        .arg(env.path("nothing"))
        .run()
        .code(1);
    cmd()
        .args(["snapshots", "--source", "nope"])
        .run()
        .code(1)
        .stderr_has("no source \"nope\"")
        .stderr_has("it has: db, docs, uploads")
        .stderr_has(&file.display().to_string());
    cmd()
        .args([
            "mysql",
            "restore",
            "--source",
            "uploads",
            "latest",
            "--database",
            "x",
        ])
        .args(["--to-stdout"])
        .run()
        .code(1)
        .stderr_has("not a MySQL source");
    cmd()
        .args([
            "mysql",
            "restore",
            "--source",
            "db",
            "latest",
            "--database",
            "shop",
        ])
        .args(["--to-stdout"])
        .run()
        .code(1)
        .stderr_has("no MySQL snapshot of source db");
    let checked = cmd()
        .args(["--json", "check", "--repository", "two"])
        .run()
        .ok()
        .json();
    // Two holds one snapshot (one holds two).
    assert_eq!(checked["stats"]["snapshots"], 1, "{checked}");
    cmd()
        .args(["check", "--repository", "three"])
        .run()
        .code(10);
    // Without a configuration file.
    env.cmd()
        .args(["snapshots", "--source", "docs"])
        .run()
        .code(1)
        .stderr_has("there is no configuration file");
}
