//! Notifications (issue 15): mail arrives at a real SMTP server on 127.0.0.1 (aiosmtpd, with
//! AUTH, and STARTTLS with a private CA), webhooks at a local HTTP listener in each format,
//! for a success, a failure, a health event, a storage warning and the recovery; a failure
//! that repeats is throttled; no secret is in any message or log; and a channel that cannot
//! be reached never fails the run.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SMTP_USER: &str = "cairn-mailer";
const SMTP_PASSWORD: &str = "Smtp-Secret-5521";
const REPO_PASSWORD: &str = "Repo-Secret-8812";
const HOOK_TOKEN: &str = "Ntfy-Token-3304";
/// The secret part of the Slack-style webhook URL.
const HOOK_PATH_SECRET: &str = "T000-B000-Hook-Secret-7740";

/// aiosmtpd (tests/smtp/sink.py) on a free port, writing each message it accepts as JSON.
struct Smtp {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Smtp {
    fn start(env: &Env, tls: Option<(&Path, &Path)>) -> Option<Smtp> {
        let have = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            if std::env::var("CAIRN_REQUIRE_SERVERS").as_deref() == Ok("1") {
                panic!("CAIRN_REQUIRE_SERVERS=1 but python3 cannot import aiosmtpd");
            }
            common::s3server::skipped("notify", "aiosmtpd is not installed");
            return None;
        }
        let out = env.path("mail");
        std::fs::create_dir_all(&out).unwrap();
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/sink.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(port.to_string()).arg(&out);
        if let Some((cert, key)) = tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let mut child = cmd
            .env("SINK_USER", SMTP_USER)
            .env("SINK_PASSWORD", SMTP_PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP sink did not start");
        Some(Smtp { child, port, out })
    }

    /// The messages received, in order.
    fn mails(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request a webhook made.
#[derive(Debug, Clone)]
struct Hook {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Hook {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// An HTTP listener on 127.0.0.1 that records every request and answers 200 (500 under
/// `/broken`).
struct Listener {
    port: u16,
    got: Arc<Mutex<Vec<Hook>>>,
}

impl Listener {
    fn start() -> Listener {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                if let Some(h) = read_request(&mut c) {
                    let code = if h.path.starts_with("/broken") {
                        "500 Internal Server Error"
                    } else {
                        "200 OK"
                    };
                    g.lock().unwrap().push(h);
                    let _ = write!(
                        c,
                        "HTTP/1.1 {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        });
        Listener { port, got }
    }

    fn hooks(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }

    fn at(&self, path: &str) -> Vec<Hook> {
        self.hooks()
            .into_iter()
            .filter(|h| h.path == path)
            .collect()
    }
}

fn read_request(c: &mut std::net::TcpStream) -> Option<Hook> {
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut r = BufReader::new(c.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Hook {
        path,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct World {
    env: Env,
    file: PathBuf,
    src: PathBuf,
}

impl World {
    fn new() -> World {
        let env = Env::new_local();
        let src = env.path("src");
        write(&src.join("invoice-2291.pdf"), &random_bytes(1, 50_000));
        write(&env.path("pw"), format!("{REPO_PASSWORD}\n").as_bytes());
        World {
            file: env.path("cairn.toml"),
            env,
            src,
        }
    }

    /// The configuration with `[notify]` lines `notify` (and its channels after them).
    fn config(&self, repository_extra: &str, health: &str, notify: &str) {
        let text = format!(
            "[health]\n{health}\n\n\
             [repositories.local]\nurl = \"{repo}\"\npassword-file = \"{pw}\"\n{repository_extra}\n\n\
             [sources.files]\nkind = \"files\"\npaths = [\"{src}\"]\n\n\
             [jobs.nightly]\nsources = [\"files\"]\nrepository = \"local\"\ncheck = \"structure\"\n\n\
             [notify]\nhost = \"shop-web-1\"\n{notify}\n",
            repo = self.env.path("local").display(),
            pw = self.env.path("pw").display(),
            src = self.src.display(),
        );
        write(&self.file, text.as_bytes());
        // A webhook URL is a secret: the file holding one is its owner's only.
        chmod(&self.file, 0o600);
    }

    fn cmd(&self) -> Cairn {
        Cairn::bare(&self.env)
            .env_remove("CAIRN_PASSWORD")
            .env("SMTP_PASSWORD", SMTP_PASSWORD)
            .env("HOOK_TOKEN", HOOK_TOKEN)
            .env("HOOK_SECRET", HOOK_PATH_SECRET)
            .arg("--config")
            .arg(&self.file)
    }
}

fn channels(smtp_port: u16, hook_port: u16, security: &str, extra_mail: &str) -> String {
    format!(
        "[notify.mail]\nserver = \"{server}\"\nport = {smtp_port}\nsecurity = \"{security}\"\n\
         username = \"{SMTP_USER}\"\npassword = \"${{SMTP_PASSWORD}}\"\n\
         from = \"cairn <cairn@shop.example>\"\nto = [\"ops@shop.example\", \"oncall@shop.example\"]\n\
         {extra_mail}\n\n\
         [[notify.webhook]]\nurl = \"http://127.0.0.1:{hook_port}/json\"\n\n\
         [[notify.webhook]]\nurl = \"http://127.0.0.1:{hook_port}/services/${{HOOK_SECRET}}\"\n\
         format = \"slack\"\n\n\
         [[notify.webhook]]\nurl = \"http://127.0.0.1:{hook_port}/discord\"\nformat = \"discord\"\n\n\
         [[notify.webhook]]\nurl = \"http://127.0.0.1:{hook_port}/backups\"\nformat = \"ntfy\"\n\
         token = \"${{HOOK_TOKEN}}\"\n",
        server = if security == "none" {
            "127.0.0.1"
        } else {
            "localhost"
        },
    )
}

/// No secret in `text`.
fn assert_no_secret(what: &str, text: &str) {
    for s in [SMTP_PASSWORD, REPO_PASSWORD, HOOK_TOKEN, HOOK_PATH_SECRET] {
        assert!(!text.contains(s), "{what} holds a secret ({s}): {text}");
    }
}

#[test]
fn mail_and_webhooks_tell_of_success_failure_health_and_recovery_without_secrets() {
    let w = World::new();
    let Some(smtp) = Smtp::start(&w.env, None) else {
        return;
    };
    let hooks = Listener::start();
    let notify = format!(
        "events = [\"success\", \"failure\", \"health\", \"storage\", \"error\", \"recovered\"]\n\
         repeat-after = \"1h\"\n\n{}",
        channels(smtp.port, hooks.port, "none", "")
    );
    w.config("", "max-age = \"26h\"", &notify);
    w.cmd().args(["-r", "local", "init"]).run().ok();
    let mut logs = String::new();

    // 1. A night that succeeds: a mail to both recipients and a POST to each webhook.
    let out = w.cmd().args(["run", "nightly"]).run().ok();
    logs.push_str(&out.stderr);
    let runs = w.cmd().args(["--json", "runs"]).run().ok().json();
    let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
    let snapshot = runs[0]["report"]["snapshots"][0][1]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the success mail", || smtp.mails().len() == 1);
    let m = &smtp.mails()[0];
    assert_eq!(m["login"], SMTP_USER, "{m}");
    assert_eq!(m["mail_from"], "cairn@shop.example");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["ops@shop.example", "oncall@shop.example"])
    );
    assert_eq!(m["subject"], "cairn on shop-web-1: job nightly succeeded");
    let body = m["body"].as_str().unwrap();
    for needle in [
        "Host: shop-web-1",
        "Job: nightly",
        &run_id,
        &snapshot[..8],
        "backup files",
        &format!("More: cairn logs {run_id}"),
    ] {
        assert!(body.contains(needle), "no {needle:?} in the mail: {body}");
    }
    assert_eq!(hooks.hooks().len(), 4, "{:?}", hooks.hooks());
    let j = hooks.at("/json")[0].json();
    assert_eq!(j["event"], "success");
    assert_eq!(j["host"], "shop-web-1");
    assert_eq!(j["job"], "nightly");
    assert_eq!(j["run_id"], run_id.as_str());
    assert_eq!(j["outcome"], runs[0]["outcome"]);
    assert_eq!(j["snapshots"][0]["id"], snapshot.as_str());
    assert_eq!(j["snapshots"][0]["source"], "files");
    assert_eq!(
        j["bytes_added"].as_u64().unwrap(),
        runs[0]["report"]["steps"][0]["bytes_added"]
            .as_u64()
            .unwrap()
    );
    let slack = &hooks.at(&format!("/services/{HOOK_PATH_SECRET}"))[0];
    assert!(slack.json()["text"].as_str().unwrap().contains(&run_id));
    assert_eq!(slack.header("content-type"), Some("application/json"));
    let discord = hooks.at("/discord")[0].json();
    assert!(
        discord["content"]
            .as_str()
            .unwrap()
            .contains("job nightly succeeded")
    );
    let ntfy = &hooks.at("/backups")[0];
    assert_eq!(
        ntfy.header("authorization"),
        Some(format!("Bearer {HOOK_TOKEN}").as_str())
    );
    assert_eq!(
        ntfy.header("title"),
        Some("cairn on shop-web-1: job nightly succeeded")
    );
    assert!(ntfy.body.contains(&run_id), "{}", ntfy.body);

    // 2. A night that fails (the source is gone): the error, named.
    std::fs::rename(&w.src, w.env.path("src-away")).unwrap();
    let out = w.cmd().args(["run", "nightly"]).run();
    assert_ne!(out.code, 0);
    logs.push_str(&out.stderr);
    wait_for("the failure mail", || smtp.mails().len() == 2);
    let m = &smtp.mails()[1];
    let subject = m["subject"].as_str().unwrap();
    assert!(
        subject == "cairn on shop-web-1: job nightly failed"
            || subject == "cairn on shop-web-1: job nightly was partial",
        "{subject}"
    );
    let body = m["body"].as_str().unwrap();
    assert!(body.contains("FAIL") && body.contains("src"), "{body}");
    let failed_run = w.cmd().args(["--json", "runs"]).run().ok().json()[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(body.contains(&format!("cairn logs {failed_run}")), "{body}");
    let j = hooks.at("/json")[1].json();
    assert_eq!(j["event"], "failure");
    assert!(!j["errors"].as_array().unwrap().is_empty(), "{j}");

    // 3. It fails again within repeat-after: held back, nothing sent.
    let out = w.cmd().args(["run", "nightly"]).run();
    assert_ne!(out.code, 0);
    logs.push_str(&out.stderr);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(smtp.mails().len(), 2, "a repeated failure was re-sent");
    assert_eq!(hooks.at("/json").len(), 2);

    // 4. Back: a success and a recovery.
    std::fs::rename(w.env.path("src-away"), &w.src).unwrap();
    let out = w.cmd().args(["run", "nightly"]).run().ok();
    logs.push_str(&out.stderr);
    wait_for("the success and recovery mails", || smtp.mails().len() == 4);
    let subjects: Vec<String> = smtp.mails()[2..]
        .iter()
        .map(|m| m["subject"].as_str().unwrap().to_string())
        .collect();
    assert!(
        subjects.contains(&"cairn on shop-web-1: job nightly succeeded".to_string()),
        "{subjects:?}"
    );
    let recovered = smtp
        .mails()
        .into_iter()
        .find(|m| m["subject"] == "cairn on shop-web-1: recovered: job nightly")
        .unwrap_or_else(|| panic!("no recovery mail: {subjects:?}"));
    assert!(
        recovered["body"]
            .as_str()
            .unwrap()
            .contains("a failure problem since"),
        "{recovered}"
    );
    let events: Vec<String> = hooks
        .at("/json")
        .iter()
        .map(|h| h.json()["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["success", "failure", "success", "recovered"]);

    // 5. Health: a repository over max-size (storage) and stale snapshots (health), told
    // by `cairn health --notify` as two messages, each naming its checks and what to do.
    w.config("max-size = \"1K\"", "max-age = \"1s\"", &notify);
    std::thread::sleep(Duration::from_millis(2100));
    let out = w.cmd().args(["health", "--notify"]).run();
    assert_eq!(out.code, 1);
    logs.push_str(&out.stderr);
    wait_for(&format!("the health mails after {out}"), || {
        smtp.mails().len() == 6
    });
    let mails = smtp.mails();
    let storage = mails[4..]
        .iter()
        .find(|m| m["subject"] == "cairn on shop-web-1: storage warning: size local")
        .unwrap_or_else(|| panic!("no storage mail: {:?}", &mails[4..]));
    assert!(
        storage["body"].as_str().unwrap().contains("over max-size"),
        "{storage}"
    );
    let health = mails[4..]
        .iter()
        .find(|m| {
            m["subject"]
                .as_str()
                .unwrap()
                .starts_with("cairn on shop-web-1: health check failed: freshness files@local")
        })
        .unwrap_or_else(|| panic!("no health mail: {:?}", &mails[4..]));
    let body = health["body"].as_str().unwrap();
    assert!(body.contains("run `cairn run nightly`"), "{body}");
    assert!(body.contains("(max-age 1s)"), "{body}");
    assert!(body.contains("More: cairn health"), "{body}");
    let kinds: Vec<String> = hooks.at("/json")[4..]
        .iter()
        .map(|h| h.json()["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["health", "storage"]);
    // Again at once: throttled.
    let out = w.cmd().args(["health", "--notify"]).run();
    assert_eq!(out.code, 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        smtp.mails().len(),
        6,
        "a repeated health failure was re-sent"
    );

    // No secret in any message, webhook body or log line.
    for m in smtp.mails() {
        assert_no_secret("a mail", &m["raw"].to_string());
    }
    for h in hooks.hooks() {
        assert_no_secret("a webhook body", &h.body);
    }
    assert_no_secret("cairn's stderr", &logs);
    for log in files_below(&w.env.path("state")) {
        if let Ok(text) = std::fs::read_to_string(&log) {
            assert_no_secret(&log.display().to_string(), &text);
        }
    }
}

#[test]
fn a_channel_that_cannot_be_reached_never_fails_the_run() {
    let w = World::new();
    let dead = free_port();
    let hooks = Listener::start();
    let notify = format!(
        "events = [\"success\"]\n\n\
         [notify.mail]\nserver = \"127.0.0.1\"\nport = {dead}\nsecurity = \"none\"\n\
         from = \"cairn@shop.example\"\nto = [\"ops@shop.example\"]\ntimeout = \"5s\"\n\n\
         [[notify.webhook]]\nurl = \"http://127.0.0.1:{port}/broken/${{HOOK_SECRET}}\"\n\n\
         [[notify.webhook]]\nurl = \"http://127.0.0.1:{dead}/${{HOOK_SECRET}}\"\n",
        port = hooks.port
    );
    w.config("", "", &notify);
    w.cmd().args(["-r", "local", "init"]).run().ok();
    let out = w
        .cmd()
        .args(["run", "nightly"])
        .run()
        .ok()
        .stderr_has("notification by mail not sent: mail via 127.0.0.1:")
        .stderr_has(
            "notification to webhook 1 not sent: POST to 127.0.0.1: the server answered 500",
        )
        .stderr_has("notification to webhook 2 not sent: POST to 127.0.0.1:");
    let stderr = out.stderr.clone();
    assert_no_secret("cairn's stderr", &stderr);
    assert_eq!(hooks.hooks().len(), 1);
    // The run's log has it too; the run is a success.
    let runs = w.cmd().args(["--json", "runs"]).run().ok().json();
    assert_eq!(runs[0]["outcome"], "success");
    let log = w
        .cmd()
        .args(["logs", runs[0]["run_id"].as_str().unwrap()])
        .run()
        .ok()
        .stdout_str();
    assert!(log.contains("notification by mail not sent"), "{log}");
    assert_no_secret("the run's log", &log);
    // `cairn notify test` says which channel failed, with exit 1.
    let out = w.cmd().args(["notify", "test"]).run().code(1);
    let text = out.stdout_str();
    assert!(text.contains("FAIL mail to ops@shop.example"), "{text}");
    assert!(text.contains("FAIL webhook 1"), "{text}");
}

/// openssl: a private CA and a certificate for localhost signed by it.
fn private_ca(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::create_dir_all(dir).unwrap();
    write(
        &dir.join("leaf.ext"),
        b"subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
          keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    );
    let ok = run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=cairn test CA",
    ]) && run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    ok.then(|| {
        (
            dir.join("ca.pem"),
            dir.join("leaf.pem"),
            dir.join("leaf.key"),
        )
    })
}

#[test]
fn mail_over_starttls_with_a_private_ca_and_a_test_message() {
    let w = World::new();
    let Some((ca, cert, key)) = private_ca(&w.env.path("tls")) else {
        panic!("openssl could not make a test CA");
    };
    let Some(smtp) = Smtp::start(&w.env, Some((&cert, &key))) else {
        return;
    };
    let hooks = Listener::start();
    // Without the CA the server's certificate is refused: nothing is sent in clear.
    w.config(
        "",
        "",
        &channels(smtp.port, hooks.port, "starttls", "timeout = \"10s\""),
    );
    w.cmd().args(["-r", "local", "init"]).run().ok();
    let out = w.cmd().args(["notify", "test"]).run().code(1);
    assert!(smtp.mails().is_empty());
    assert!(
        out.stderr.as_str().contains("mail: mail via localhost:"),
        "{out}"
    );
    // With it: the test message arrives over TLS, authenticated, and every webhook gets it.
    w.config(
        "",
        "",
        &channels(
            smtp.port,
            hooks.port,
            "starttls",
            &format!("ca-file = \"{}\"", ca.display()),
        ),
    );
    let out = w.cmd().args(["notify", "test"]).run().ok();
    let text = out.stdout_str();
    assert!(text.contains("sent mail to ops@shop.example"), "{text}");
    wait_for("the test mail", || smtp.mails().len() == 1);
    let m = &smtp.mails()[0];
    assert_eq!(m["tls"], true, "{m}");
    assert_eq!(m["login"], SMTP_USER);
    assert_eq!(m["subject"], "cairn on shop-web-1: test message");
    // A failed night over the same channel.
    std::fs::remove_dir_all(&w.src).unwrap();
    w.cmd().args(["run", "nightly"]).run();
    wait_for("the failure mail", || smtp.mails().len() == 2);
    assert!(
        smtp.mails()[1]["subject"]
            .as_str()
            .unwrap()
            .starts_with("cairn on shop-web-1: job nightly"),
        "{:?}",
        smtp.mails()[1]
    );
    for m in smtp.mails() {
        assert_no_secret("a mail", &m["raw"].to_string());
    }
}
