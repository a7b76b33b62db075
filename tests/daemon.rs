//! `cairn daemon` (issue 15): schedules with seconds fire when they should, a missed fire
//! time is caught up once at start-up, a job never overlaps itself, SIGHUP reloads (a broken
//! file keeps the old one), and SIGTERM during a backup leaves no lease, a clean `check` and
//! the run recorded as interrupted. The listener: /metrics valid for promtool with the values of
//! the history, /health, and the status page as headless Chromium shows it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Daemon {
    env: Env,
    file: PathBuf,
    src: PathBuf,
    repo: PathBuf,
}

impl Daemon {
    fn new() -> Daemon {
        let env = Env::new_local();
        let src = env.path("src");
        write(&src.join("a.txt"), b"alpha\n");
        let repo = env.path("local");
        write(&env.path("pw"), b"daemon-password\n");
        let d = Daemon {
            file: env.path("cairn.toml"),
            env,
            src,
            repo,
        };
        d.config("schedule = \"none\"", "", "");
        d.cmd().args(["-r", "local", "init"]).run().ok();
        d
    }

    /// The configuration: `job` lines for job nightly, `daemon` lines, more `sources`.
    fn config(&self, job: &str, daemon: &str, sources: &str) {
        // No listener unless the test asks for one (parallel tests, one port).
        let listen = if daemon.contains("listen") {
            ""
        } else {
            "listen = \"none\"\n"
        };
        let text = format!(
            "[daemon]\nhealth-schedule = \"none\"\ncleanup-schedule = \"none\"\n{listen}{daemon}\n\n\
             [repositories.local]\nurl = \"{repo}\"\npassword-file = \"{pw}\"\n\n\
             [sources.files]\nkind = \"files\"\npaths = [\"{src}\"]\n\n{sources}\n\
             [jobs.nightly]\nsources = [\"files\"]\nrepository = \"local\"\n{job}\n",
            repo = self.repo.display(),
            pw = self.env.path("pw").display(),
            src = self.src.display(),
        );
        write(&self.file, text.as_bytes());
    }

    /// A health check every second (the configuration written by [`Daemon::config`] has none).
    fn health_every_second(&self) {
        let text = std::fs::read_to_string(&self.file).unwrap().replace(
            "health-schedule = \"none\"",
            "health-schedule = \"* * * * * *\"",
        );
        write(&self.file, text.as_bytes());
    }

    /// Two successful runs: one dated 24 hours ago, then one now after adding `len` random
    /// bytes (from `seed`) as b.bin.
    fn two_nights(&self, seed: u64, len: usize) {
        let yesterday = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24))
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string();
        self.cmd().args(["run", "--time", &yesterday]).run().ok();
        write(&self.src.join("b.bin"), &random_bytes(seed, len));
        self.cmd().arg("run").run().ok();
    }

    fn cmd(&self) -> Cairn {
        Cairn::bare(&self.env)
            .env_remove("CAIRN_PASSWORD")
            .arg("--config")
            .arg(&self.file)
    }

    fn start(&self) -> Child {
        self.cmd()
            .args(["--log-format", "json", "daemon"])
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The runs of the history, oldest first: (started, ended, outcome).
    fn runs(&self) -> Vec<(jiff::Timestamp, jiff::Timestamp, String)> {
        let v = self
            .cmd()
            .args(["--json", "runs", "--last", "1000"])
            .run()
            .ok()
            .json();
        let mut out: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let started: jiff::Timestamp = r["started"].as_str().unwrap().parse().unwrap();
                let ended: jiff::Timestamp =
                    r["report"]["ended"].as_str().unwrap().parse().unwrap();
                (started, ended, r["outcome"].as_str().unwrap().to_string())
            })
            .collect();
        out.sort();
        out
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling a child we started.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Stop the daemon with SIGTERM; its exit code and log lines.
fn stop(mut child: Child) -> (i32, String) {
    signal(&child, libc::SIGTERM);
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut log = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut log)
                .unwrap();
            return (status.code().unwrap_or(-1), log);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the daemon did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The second of the minute `ahead` seconds from now.
fn second_in(ahead: i64) -> i64 {
    (jiff::Timestamp::now().as_second() + ahead).rem_euclid(60)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lease_files(repo: &Path) -> Vec<PathBuf> {
    files_below(&repo.join("locks"))
}

#[test]
fn schedules_fire_and_a_missed_one_is_caught_up_once() {
    let d = Daemon::new();
    // Every 2 seconds.
    d.config("schedule = \"*/2 * * * * *\"", "catch-up = \"1m\"", "");
    let child = d.start();
    std::thread::sleep(Duration::from_millis(7_000));
    let (code, log) = stop(child);
    assert_eq!(code, 0, "{log}");
    let runs = d.runs();
    // Fire times at every even second: 3 or 4 in 7 s (the first is the first even second
    // after start-up: a schedule never seen before has nothing to catch up); on a loaded
    // machine a run may outlast a fire time, which is then skipped.
    assert!((2..=4).contains(&runs.len()), "{runs:?}\n{log}");
    assert!(runs.iter().all(|r| r.2 == "success"), "{runs:?}");
    for r in &runs {
        assert_eq!(r.0.as_second() % 2, 0, "a run off its schedule: {runs:?}");
    }
    assert!(log.contains("\"cairn daemon started"), "{log}");
    assert!(
        log.lines().all(|l| l.starts_with('{')),
        "not JSON lines:\n{log}"
    );

    // Two fire times pass while the daemon is down: at start-up one run catches up, once.
    let (s1, s2) = (second_in(2), second_in(3));
    d.config(
        &format!("schedule = \"{s1},{s2} * * * * *\""),
        "catch-up = \"1m\"",
        "",
    );
    std::thread::sleep(Duration::from_millis(4_500));
    let before = d.runs().len();
    let child = d.start();
    wait_until("the catch-up run", Duration::from_secs(20), || {
        d.runs().len() > before
    });
    // No second catch-up: the next fire time is about a minute away.
    std::thread::sleep(Duration::from_millis(3_000));
    let (code, log) = stop(child);
    assert_eq!(code, 0, "{log}");
    assert_eq!(d.runs().len(), before + 1, "{log}");
    assert!(log.contains("missed its run"), "{log}");

    // Outside catch-up, a missed fire time is not run.
    let s = second_in(2);
    d.config(
        &format!("schedule = \"{s} * * * * *\""),
        "catch-up = \"1s\"",
        "",
    );
    std::thread::sleep(Duration::from_millis(4_500));
    let before = d.runs().len();
    let child = d.start();
    std::thread::sleep(Duration::from_millis(3_000));
    let (code, log) = stop(child);
    assert_eq!(code, 0);
    assert_eq!(
        d.runs().len(),
        before,
        "ran a fire time outside catch-up: {log}"
    );
}

#[test]
fn a_job_never_overlaps_itself_and_sighup_reloads() {
    let d = Daemon::new();
    // Fires every second; each run takes 3 s.
    d.config(
        "schedule = \"* * * * * *\"\nhooks.before = [\"sleep 3\"]",
        "",
        "",
    );
    let child = d.start();
    std::thread::sleep(Duration::from_millis(7_500));
    // A broken file on SIGHUP: the old one stays in force.
    write(&d.file, b"[jobs.nightly\n");
    signal(&child, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(2_000));
    let (code, log) = stop(child);
    assert_eq!(code, 0, "{log}");
    d.config("schedule = \"none\"", "", "");
    let runs = d.runs();
    assert!(runs.len() >= 2, "{runs:?}\n{log}");
    for w in runs.windows(2) {
        assert!(w[1].0 >= w[0].1, "runs overlap: {runs:?}");
    }
    assert!(log.contains("still running"), "{log}");
    assert!(log.contains("was not reloaded"), "{log}");
    assert!(
        log.contains("cairn.toml:1:"),
        "the error is not located: {log}"
    );
    // The run cut by SIGTERM is recorded as interrupted (or ended before it).
    let last = runs.last().unwrap();
    assert!(last.2 == "interrupted" || last.2 == "success", "{runs:?}");
    assert!(lease_files(&d.repo).is_empty());
}

#[test]
fn sigterm_during_a_backup_leaves_no_lease_and_a_clean_check() {
    let Some(srv) = common::mysql::server() else {
        return; // SKIPPED (said by common::mysql)
    };
    let db = srv.database("daemonshop");
    srv.sql(
        Some(&db),
        "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2);",
    );
    let d = Daemon::new();
    // A dump tool that takes its time before dumping.
    let real = ["/usr/bin/mariadb-dump", "/usr/local/bin/mariadb-dump"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("mariadb-dump");
    let slow = d.env.path("bin/mariadb-dump");
    let started_mark = d.env.path("dump-started");
    write(
        &slow,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version) exec {real} \"$@\";; esac\n\
             touch {}\nsleep 30\nexec {real} \"$@\"\n",
            started_mark.display()
        )
        .as_bytes(),
    );
    chmod(&slow, 0o755);
    let client = ["/usr/bin/mariadb", "/usr/local/bin/mariadb"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("mariadb");
    let sources = format!(
        "[sources.db]\nkind = \"mysql\"\nsocket = \"{}\"\nuser = \"root\"\n\
         databases = [\"{db}\"]\ndump-binary = \"{}\"\nclient-binary = \"{client}\"\n",
        srv.socket.display(),
        slow.display()
    );
    let job = "schedule = \"* * * * * *\"";
    d.config(job, "shutdown-timeout = \"30s\"", &sources);
    // The job backs up the database too.
    let text = std::fs::read_to_string(&d.file)
        .unwrap()
        .replace("sources = [\"files\"]", "sources = [\"files\", \"db\"]");
    write(&d.file, text.as_bytes());
    let child = d.start();
    wait_until("the dump", Duration::from_secs(30), || {
        started_mark.exists()
    });
    wait_until("a lease", Duration::from_secs(10), || {
        !lease_files(&d.repo).is_empty()
    });
    let t = Instant::now();
    let (code, log) = stop(child);
    assert_eq!(code, 0, "{log}");
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "SIGTERM took {:?}",
        t.elapsed()
    );
    assert!(
        lease_files(&d.repo).is_empty(),
        "a lease left: {:?}\n{log}",
        lease_files(&d.repo)
    );
    let runs = d.runs();
    assert_eq!(
        runs.last().map(|r| r.2.as_str()),
        Some("interrupted"),
        "{runs:?}"
    );
    d.cmd().args(["-r", "local", "check"]).run().ok();
    // The interrupted run's log ends with its outcome.
    let shown = d.cmd().arg("logs").run().ok().stdout_str();
    assert!(shown.contains("ended: interrupted"), "{shown}");
}

#[test]
fn the_health_and_cleanup_schedules_run_theirs() {
    let d = Daemon::new();
    d.cmd().arg("run").run().ok();
    // `[daemon]` lines come after the defaults the helper writes, so replace those.
    d.config("schedule = \"none\"", "", "");
    let text = std::fs::read_to_string(&d.file)
        .unwrap()
        .replace(
            "health-schedule = \"none\"",
            "health-schedule = \"*/2 * * * * *\"",
        )
        .replace(
            "cleanup-schedule = \"none\"",
            "cleanup-schedule = \"*/3 * * * * *\"\ncleanup-check = \"100%\"",
        );
    write(&d.file, text.as_bytes());
    let child = d.start();
    let health = d.env.path("state/health.json");
    wait_until("a cleanup run", Duration::from_secs(20), || {
        d.runs().len() >= 2 && health.exists()
    });
    let (code, log) = stop(child);
    assert_eq!(code, 0, "{log}");
    let h: serde_json::Value = serde_json::from_slice(&std::fs::read(&health).unwrap()).unwrap();
    assert!(h["checks"].as_array().is_some_and(|c| !c.is_empty()), "{h}");
    let runs = d
        .cmd()
        .args(["--json", "runs", "--job", "nightly:cleanup"])
        .run()
        .ok()
        .json();
    let r = &runs[0]["report"];
    let steps: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        steps.contains(&"prune local") && steps.contains(&"check local"),
        "{steps:?}"
    );
    assert!(!steps.iter().any(|s| s.starts_with("backup")), "{steps:?}");
    assert_eq!(runs[0]["outcome"], "success", "{r}");
}

/// A GET on 127.0.0.1:`port`: the status code and the body.
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

#[test]
fn the_listener_serves_metrics_health_and_the_status_page() {
    let d = Daemon::new();
    let port = free_port();
    let token = "Status-Token-4471";
    d.config(
        "schedule = \"none\"\ncheck = \"structure\"",
        &format!("listen = \"127.0.0.1:{port}\"\ntoken = \"${{STATUS_TOKEN}}\""),
        "",
    );
    d.health_every_second();
    // Two nights for the charts.
    d.two_nights(9, 300_000);
    let child = d
        .cmd()
        .env("STATUS_TOKEN", token)
        .arg("daemon")
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let health = d.env.path("state/health.json");
    wait_until("the first health check", Duration::from_secs(30), || {
        health.exists()
    });
    // No token, a wrong one: refused.
    assert_eq!(get(port, "/metrics", None).0, 401);
    assert_eq!(get(port, "/", Some("wrong")).0, 401);
    let (code, metrics) = get(port, "/metrics", Some(token));
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.contains("cairn_job_runs_total{job=\"nightly\",outcome=\"success\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("cairn_healthy 1"), "{metrics}");
    // Valid exposition format, and the values those of `cairn runs --json`.
    promtool_check(&metrics);
    let s = samples(&metrics);
    let runs = d.cmd().args(["--json", "runs"]).run().ok().json();
    let last = &runs[0];
    let value = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no {k} in\n{metrics}"));
    assert!(
        (value("cairn_job_last_run_duration_seconds{job=\"nightly\"}")
            - last["seconds"].as_f64().unwrap())
        .abs()
            < 1e-6,
        "{last}"
    );
    assert_eq!(
        value("cairn_source_last_backup_added_bytes{job=\"nightly\",source=\"files\"}"),
        last["added"][0][1].as_f64().unwrap()
    );
    assert_eq!(
        value("cairn_repository_snapshots{repository=\"local\"}"),
        2.0
    );
    let (code, body) = get(port, "/health", Some(token));
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["healthy"], true, "{h}");
    let (code, page) = get(port, "/", Some(token));
    assert_eq!(code, 200);
    let latest = runs[0]["run_id"].as_str().unwrap();
    assert!(page.contains(&format!("data-run=\"{latest}\"")), "{page}");
    assert!(page.contains("<svg id=\"chart-size\"") && page.contains("<svg id=\"chart-added\""));
    assert_eq!(page.matches("class=\"series\"").count(), 2, "{page}");
    assert!(
        page.contains("data-check=\"freshness files@local\""),
        "{page}"
    );
    assert!(!page.contains(token) && !metrics.contains(token));
    assert_eq!(get(port, "/nothing", Some(token)).0, 404);
    let (code, log) = stop(child);
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains(token), "{log}");
}

/// Headless Chromium: its DOM of `url` after loading (scripts run, no other host reachable), and
/// a screenshot in `png`. None (a skip) when Chromium is not installed and servers are not required.
fn chromium(url: &str, profile: &Path, png: &Path) -> Option<String> {
    let Some(bin) = which("chromium").or_else(|| which("chromium-browser")) else {
        s3server::skipped(
            "the_status_page_renders_in_headless_chromium",
            "chromium is not installed",
        );
        if std::env::var_os("CAIRN_REQUIRE_SERVERS").is_some() {
            panic!("chromium is not installed and CAIRN_REQUIRE_SERVERS=1");
        }
        return None;
    };
    let run = |what: &str| {
        let out = std::process::Command::new("timeout")
            .arg("120")
            .arg(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                // Any request beyond the daemon's address fails: the page needs none.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--window-size=1200,1600",
                "--virtual-time-budget=3000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(what)
            .arg(url)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chromium {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let dom = run("--dump-dom");
    run(&format!("--screenshot={}", png.display()));
    Some(dom)
}

/// The status page as a browser shows it: the runs table with the latest run's outcome, the
/// health checks, the snapshots and both charts, from the page alone (no other host).
#[test]
fn the_status_page_renders_in_headless_chromium() {
    let d = Daemon::new();
    let port = free_port();
    let mark = d.env.path("fail-next-run");
    d.config(
        &format!(
            "schedule = \"none\"\ncheck = \"structure\"\nhooks.before = [\"test ! -e {}\"]",
            mark.display()
        ),
        &format!("listen = \"127.0.0.1:{port}\""),
        "",
    );
    d.health_every_second();
    // Two good nights, then a failed run: the latest.
    d.two_nights(11, 400_000);
    write(&mark, b"");
    d.cmd().arg("run").run().code(1);
    let runs = d.cmd().args(["--json", "runs"]).run().ok().json();
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(runs[0]["outcome"], "failure", "{runs}");
    let child = d.start();
    let health = d.env.path("state/health.json");
    wait_until("the first health check", Duration::from_secs(30), || {
        health.exists()
    });
    let png = d.env.path("status.png");
    let dom = chromium(
        &format!("http://127.0.0.1:{port}/"),
        &d.env.path("chromium-profile"),
        &png,
    );
    let (code, log) = stop(child);
    assert_eq!(code, 0, "{log}");
    let Some(dom) = dom else { return };

    use scraper::{Html, Selector};
    let doc = Html::parse_document(&dom);
    let all = |css: &str| -> Vec<scraper::ElementRef<'_>> {
        doc.select(&Selector::parse(css).unwrap()).collect()
    };
    let text = |e: &scraper::ElementRef| e.text().collect::<String>().trim().to_string();
    // The runs table, newest first, each row with its outcome.
    let rows = all("table#runs tr.run");
    let shown: Vec<&str> = rows
        .iter()
        .map(|r| r.value().attr("data-run").unwrap())
        .collect();
    assert_eq!(shown, ids, "{dom}");
    let outcome = |row: &scraper::ElementRef| {
        text(
            &row.select(&Selector::parse("td.outcome").unwrap())
                .next()
                .unwrap(),
        )
    };
    assert_eq!(outcome(&rows[0]), "failure");
    assert_eq!(outcome(&rows[1]), "success");
    assert_eq!(outcome(&rows[2]), "success");
    // The health checks, each with its result.
    let checks = all("table#health tr[data-check]");
    let names: Vec<&str> = checks
        .iter()
        .map(|r| r.value().attr("data-check").unwrap())
        .collect();
    assert!(names.contains(&"freshness files@local"), "{names:?}");
    assert!(names.contains(&"repository local"), "{names:?}");
    for c in &checks {
        let cells: Vec<String> = c
            .select(&Selector::parse("td").unwrap())
            .map(|t| text(&t))
            .collect();
        assert_eq!(cells[1], "ok", "{cells:?}");
    }
    assert_eq!(text(&all("#healthy")[0]), "healthy");
    // The snapshots of the source: two in the last 90 days.
    let snaps = all("table#snapshots tr[data-source=\"files\"] td");
    assert_eq!(text(&snaps[1]), "2", "{dom}");
    // Both charts, each with a line through the two nights.
    for id in ["chart-size", "chart-added"] {
        let lines = all(&format!("svg#{id} polyline.series"));
        assert_eq!(lines.len(), 1, "{id}: {dom}");
        let points = lines[0].value().attr("points").unwrap();
        assert_eq!(points.split_whitespace().count(), 2, "{id}: {points}");
        assert_eq!(all(&format!("svg#{id} circle")).len(), 2, "{id}");
    }
    // Nothing from elsewhere: no scripts, no linked assets.
    assert!(all("script, link, img, iframe").is_empty(), "{dom}");
    // And it renders: a screenshot that is a PNG of the window's size.
    let shot = std::fs::read(&png).unwrap();
    assert_eq!(&shot[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) = (
        u32::from_be_bytes(shot[16..20].try_into().unwrap()),
        u32::from_be_bytes(shot[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1200, 1600));
}
