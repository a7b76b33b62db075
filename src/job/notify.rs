//! Notifications (`[notify]`): mail over SMTP and webhooks (cairn's JSON, Slack, Discord,
//! ntfy) on the events each channel opts into: a run that succeeded, one that failed or was
//! partial, a failed health check, a storage warning (a file system under `min-free`, a
//! repository over `max-size`), a service error, and the recovery of what was reported.
//!
//! A problem is a *subject* (`job nightly`, `health freshness db@local`, `error job
//! nightly`); the history keeps the subjects told of (`notices`), so a problem that stays is
//! said again at most every `repeat-after` (default 24 h; the times held back are counted and
//! given in the next message), and the first time it is seen fine again a `recovered` message
//! says so. A message names the host, the job, the run, its snapshots, sizes, duration, the
//! errors and the command that shows more; it never holds a secret (the errors of a run never
//! do, and a webhook's URL, which is a credential, is never logged).
//!
//! Sending never fails what it reports on: what cannot be sent is logged (and returned, for
//! the run's log), and the next event tries again.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::health::HealthReport;
use super::history::{History, Notice};
use super::{Outcome, RunReport, human_bytes, outcome_word};
use crate::config::{
    MailConfig, MailSecurity, NotifyConfig, NotifyEvent, WebhookConfig, WebhookFormat,
};
use crate::error::{Error, Result};

/// Defaults of `[notify]`.
pub const DEFAULT_REPEAT_AFTER: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_MAIL_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Discord refuses a message longer than this.
const DISCORD_MAX: usize = 2000;

/// One message, as every channel gets it.
#[derive(Debug, Clone)]
pub struct Message {
    pub kind: NotifyEvent,
    /// One line: `cairn on web-1: job nightly failed`.
    pub title: String,
    /// The whole message, plain text.
    pub text: String,
    /// The event's facts, for the JSON webhook (job, run, outcome, snapshots, ...).
    pub fields: serde_json::Map<String, Value>,
    /// The subjects it reports as problems (throttled); none for news such as a success.
    problems: Vec<String>,
}

/// What an event found: the messages it would send, and the subjects it saw fine (which
/// recover if they were reported).
#[derive(Debug, Clone, Default)]
pub struct Findings {
    pub messages: Vec<Message>,
    pub fine: Vec<String>,
}

/// The configured channels and what they want.
pub struct Notifier {
    config: NotifyConfig,
    host: String,
}

/// What a service error of the health checks is about.
pub const HEALTH: &str = "health";

/// The throttling subject of a job's runs.
fn job_subject(job: &str) -> String {
    format!("job {job}")
}

impl Notifier {
    /// The notifier of `config`, or none when it has no channel.
    pub fn new(config: &NotifyConfig) -> Option<Notifier> {
        if config.mail.is_none() && config.webhook.is_empty() {
            return None;
        }
        Some(Notifier {
            host: config.host.clone().unwrap_or_else(crate::repo::hostname),
            config: config.clone(),
        })
    }

    fn events<'a>(&'a self, own: &'a Option<Vec<NotifyEvent>>) -> &'a [NotifyEvent] {
        own.as_deref()
            .or(self.config.events.as_deref())
            .unwrap_or(&NotifyEvent::DEFAULT)
    }

    /// The mail channel, then the webhooks in their order.
    fn channels(&self) -> impl Iterator<Item = Channel<'_>> {
        let mail = self.config.mail.iter().map(Channel::Mail);
        let hooks =
            (self.config.webhook.iter().enumerate()).map(|(i, w)| Channel::Webhook(i + 1, w));
        mail.chain(hooks)
    }

    /// Whether channel `c` takes `kind`.
    fn takes(&self, c: &Channel<'_>, kind: NotifyEvent) -> bool {
        self.events(c.own_events()).contains(&kind)
    }

    /// Whether any channel wants `kind`.
    pub fn wants(&self, kind: NotifyEvent) -> bool {
        self.channels().any(|c| self.takes(&c, kind))
    }

    fn repeat_after(&self) -> Duration {
        self.config
            .repeat_after
            .map_or(DEFAULT_REPEAT_AFTER, |d| d.0)
    }

    fn message(
        &self,
        kind: NotifyEvent,
        title: String,
        text: String,
        mut fields: serde_json::Map<String, Value>,
        problems: Vec<String>,
    ) -> Message {
        let title = format!("cairn on {}: {title}", self.host);
        fields.insert("event".into(), json!(kind.word()));
        fields.insert("host".into(), json!(self.host));
        Message {
            kind,
            title,
            text: format!("Host: {}\n{text}", self.host),
            fields,
            problems,
        }
    }

    /// What a finished run says: a success, or a failure (failed or partial). An interrupted
    /// run (the daemon was stopped) says nothing. A run that happened is the recovery of its
    /// job's service error (the run that could not start).
    pub fn run_findings(&self, r: &RunReport) -> Findings {
        let subject = job_subject(&r.job);
        let started = self.error_fine(&subject).fine;
        let (kind, verb) = match r.outcome {
            Outcome::Success => (NotifyEvent::Success, "succeeded"),
            Outcome::Partial => (NotifyEvent::Failure, "was partial"),
            Outcome::Failure => (NotifyEvent::Failure, "failed"),
            Outcome::Interrupted => {
                return Findings {
                    messages: Vec::new(),
                    fine: started,
                };
            }
        };
        let mut text = format!(
            "Job: {}\nRun: {} ({}, {:.1}s, started {})\n\nSteps:\n",
            r.job,
            r.run_id,
            outcome_word(r.outcome),
            r.seconds(),
            r.started.to_rfc3339()
        );
        for s in &r.steps {
            text.push_str(&format!(
                "  {:<5} {:<24} {:>7.1}s",
                match s.outcome {
                    Outcome::Success => "ok",
                    Outcome::Partial => "PART",
                    _ => "FAIL",
                },
                s.name,
                s.seconds
            ));
            if let Some(id) = &s.snapshot {
                text.push_str(&format!(
                    "  snapshot {}, {}, added {}",
                    &id[..id.len().min(8)],
                    human_bytes(s.logical_bytes),
                    human_bytes(s.bytes_added)
                ));
            }
            if let Some(e) = &s.error {
                text.push_str(&format!("\n        {e}"));
            }
            text.push('\n');
        }
        if !r.repositories.is_empty() {
            text.push_str("\nRepositories:\n");
            for repo in &r.repositories {
                text.push_str(&format!(
                    "  {}: {} snapshots, {} stored\n",
                    repo.name,
                    repo.snapshots,
                    human_bytes(repo.stored_bytes)
                ));
            }
        }
        text.push_str(&format!("\nMore: cairn logs {}\n", r.run_id));
        let added: u64 = r.steps.iter().map(|s| s.bytes_added).sum();
        let errors: Vec<String> = r
            .steps
            .iter()
            .filter_map(|s| s.error.as_ref().map(|e| format!("{}: {e}", s.name)))
            .collect();
        let mut fields = serde_json::Map::new();
        fields.insert("job".into(), json!(r.job));
        fields.insert("run_id".into(), json!(r.run_id));
        fields.insert("outcome".into(), json!(outcome_word(r.outcome)));
        fields.insert("seconds".into(), json!(r.seconds()));
        fields.insert(
            "snapshots".into(),
            json!(
                r.snapshots
                    .iter()
                    .map(|(source, id)| json!({"source": source, "id": id}))
                    .collect::<Vec<_>>()
            ),
        );
        fields.insert("bytes_added".into(), json!(added));
        fields.insert("errors".into(), json!(errors));
        fields.insert("more".into(), json!(format!("cairn logs {}", r.run_id)));
        let title = format!("job {} {verb}", r.job);
        if kind == NotifyEvent::Success {
            Findings {
                messages: vec![self.message(kind, title, text, fields, Vec::new())],
                fine: [vec![subject], started].concat(),
            }
        } else {
            Findings {
                messages: vec![self.message(kind, title, text, fields, vec![subject])],
                fine: started,
            }
        }
    }

    /// What a health report says: one message for the failed storage checks (`disk ...`,
    /// `size ...`) and one for the others. A report is the recovery of the service error of
    /// health checks that could not run.
    pub fn health_findings(&self, r: &HealthReport) -> Findings {
        let mut out = Findings::default();
        for kind in [NotifyEvent::Health, NotifyEvent::Storage] {
            let failed: Vec<_> = r
                .checks
                .iter()
                .filter(|c| !c.ok && health_kind(&c.name) == kind)
                .collect();
            if failed.is_empty() {
                continue;
            }
            let mut text = String::from("\nFailed checks:\n");
            for c in &failed {
                text.push_str(&format!("  {}: {}\n", c.name, c.detail));
                if let Some(f) = &c.fix {
                    text.push_str(&format!("    -> {f}\n"));
                }
            }
            text.push_str("\nMore: cairn health\n");
            let mut fields = serde_json::Map::new();
            fields.insert(
                "checks".into(),
                json!(
                    failed
                        .iter()
                        .map(|c| json!({"name": c.name, "detail": c.detail, "fix": c.fix}))
                        .collect::<Vec<_>>()
                ),
            );
            fields.insert("more".into(), json!("cairn health"));
            let names: Vec<&str> = failed.iter().map(|c| c.name.as_str()).collect();
            let title = match kind {
                NotifyEvent::Storage => format!("storage warning: {}", names.join(", ")),
                _ => format!("health check failed: {}", names.join(", ")),
            };
            let problems = failed
                .iter()
                .map(|c| format!("health {}", c.name))
                .collect();
            out.messages
                .push(self.message(kind, title, text, fields, problems));
        }
        out.fine = r
            .checks
            .iter()
            .filter(|c| c.ok)
            .map(|c| format!("health {}", c.name))
            .chain(self.error_fine(HEALTH).fine)
            .collect();
        out
    }

    /// A service error: `what` could not be done (a run that did not start, a configuration
    /// that did not load).
    pub fn error_findings(&self, what: &str, error: &str, more: &str) -> Findings {
        let mut fields = serde_json::Map::new();
        fields.insert("what".into(), json!(what));
        fields.insert("error".into(), json!(error));
        fields.insert("more".into(), json!(more));
        Findings {
            messages: vec![self.message(
                NotifyEvent::Error,
                format!("{what} failed"),
                format!("\n{what}: {error}\n\nMore: {more}\n"),
                fields,
                vec![format!("error {what}")],
            )],
            fine: Vec::new(),
        }
    }

    /// That `what` works again: its error recovers if it was reported.
    pub fn error_fine(&self, what: &str) -> Findings {
        Findings {
            messages: Vec::new(),
            fine: vec![format!("error {what}")],
        }
    }

    /// Throttle `f` against the notices of the history: the messages to send now, a
    /// recovery among them. Updates the notices.
    pub fn triage(
        &self,
        h: &mut History,
        now: jiff::Timestamp,
        f: Findings,
    ) -> Result<Vec<Message>> {
        let repeat = self.repeat_after();
        let mut out = Vec::new();
        for mut m in f.messages {
            if !self.wants(m.kind) {
                continue;
            }
            if m.problems.is_empty() {
                out.push(m);
                continue;
            }
            let mut due = false;
            let mut known = Vec::new();
            for s in &m.problems {
                match h.notice(s)? {
                    Some(n) => {
                        let since_sent = now.duration_since(n.sent).unsigned_abs();
                        if since_sent >= repeat {
                            due = true;
                        }
                        known.push(n);
                    }
                    None => due = true,
                }
            }
            if !due {
                for mut n in known {
                    n.held += 1;
                    tracing::info!(
                        "notification of {} held back: told at {}, repeat-after {}",
                        n.subject,
                        n.sent,
                        super::health::human(repeat)
                    );
                    h.set_notice(&n)?;
                }
                continue;
            }
            if let Some(first) = known.iter().min_by_key(|n| n.since) {
                let held: u64 = known.iter().map(|n| n.held).sum();
                m.text.push_str(&format!(
                    "\nThis problem was first reported at {}; seen {held} more times since the \
                     last message (at most one message every {}).\n",
                    first.since,
                    super::health::human(repeat)
                ));
                m.fields
                    .insert("since".into(), json!(first.since.to_string()));
                m.fields.insert("held_back".into(), json!(held));
            }
            for s in &m.problems {
                let since = known
                    .iter()
                    .find(|n| &n.subject == s)
                    .map_or(now, |n| n.since);
                h.set_notice(&Notice {
                    subject: s.clone(),
                    kind: m.kind.word().into(),
                    since,
                    sent: now,
                    held: 0,
                })?;
            }
            out.push(m);
        }
        let mut recovered = Vec::new();
        for s in &f.fine {
            if let Some(n) = h.notice(s)? {
                h.clear_notice(s)?;
                recovered.push(n);
            }
        }
        if !recovered.is_empty() && self.wants(NotifyEvent::Recovered) {
            let mut text = String::from("\nFine again:\n");
            for n in &recovered {
                text.push_str(&format!(
                    "  {} (a {} problem since {})\n",
                    n.subject, n.kind, n.since
                ));
            }
            let mut fields = serde_json::Map::new();
            fields.insert(
                "recovered".into(),
                json!(
                    recovered
                        .iter()
                        .map(|n| json!({"subject": n.subject, "kind": n.kind,
                                        "since": n.since.to_string()}))
                        .collect::<Vec<_>>()
                ),
            );
            let names: Vec<&str> = recovered.iter().map(|n| n.subject.as_str()).collect();
            out.push(self.message(
                NotifyEvent::Recovered,
                format!("recovered: {}", names.join(", ")),
                text,
                fields,
                Vec::new(),
            ));
        }
        Ok(out)
    }

    /// Send every message to every channel that wants it. What could not be sent comes back
    /// as lines (and is logged); nothing here fails.
    pub async fn send(&self, messages: &[Message]) -> Vec<String> {
        let mut failed = Vec::new();
        for m in messages {
            for c in self.channels() {
                if self.takes(&c, m.kind)
                    && let Err(e) = c.send(m).await
                {
                    let to = match c {
                        Channel::Mail(_) => "by mail".to_string(),
                        Channel::Webhook(i, _) => format!("to webhook {i}"),
                    };
                    failed.push(format!("{} notification {to} not sent: {e}", m.kind.word()));
                }
            }
        }
        for f in &failed {
            tracing::warn!("{f}");
        }
        failed
    }

    /// Triage `f` against the history in `state_dir` and send what is due; the lines of what
    /// went wrong (a history that cannot be read sends nothing: it is a warning too).
    pub async fn notify(&self, state_dir: &Path, f: Findings) -> Vec<String> {
        let due = History::open(state_dir).and_then(|mut h| {
            let now = jiff::Timestamp::now();
            self.triage(&mut h, now, f)
        });
        match due {
            Ok(messages) => self.send(&messages).await,
            Err(e) => {
                let line = format!("notifications not sent: {e}");
                tracing::warn!("{line}");
                vec![line]
            }
        }
    }

    /// A test message to every channel, whatever its events (`cairn notify test`): each
    /// channel, for people (`mail to a@b via smtp.example.com:587 (Starttls)`, `webhook 1
    /// (Slack, hooks.slack.com)`), and its error as `mail: ...` or `webhook 1: ...`.
    pub async fn test(&self) -> Vec<(String, Option<String>)> {
        let m = self.message(
            NotifyEvent::Success,
            "test message".into(),
            "\nThis is a test of cairn's notifications: this channel works.\n".into(),
            serde_json::Map::new(),
            Vec::new(),
        );
        let mut out = Vec::new();
        for c in self.channels() {
            let error = c
                .send(&m)
                .await
                .err()
                .map(|e| format!("{}: {e}", c.label()));
            out.push((c.describe(), error));
        }
        out
    }
}

/// One channel of `[notify]`.
enum Channel<'a> {
    Mail(&'a MailConfig),
    /// The webhook's number (from 1, in the file's order) and itself.
    Webhook(usize, &'a WebhookConfig),
}

impl Channel<'_> {
    fn own_events(&self) -> &Option<Vec<NotifyEvent>> {
        match self {
            Channel::Mail(m) => &m.events,
            Channel::Webhook(_, w) => &w.events,
        }
    }

    async fn send(&self, m: &Message) -> Result<()> {
        match self {
            Channel::Mail(mail) => send_mail(mail, m).await,
            Channel::Webhook(_, w) => send_webhook(w, m).await,
        }
    }

    fn label(&self) -> String {
        match self {
            Channel::Mail(_) => "mail".into(),
            Channel::Webhook(i, _) => format!("webhook {i}"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Channel::Mail(m) => format!(
                "mail to {} via {}:{} ({:?})",
                m.to.join(", "),
                m.server,
                mail_port(m),
                m.security
            ),
            Channel::Webhook(i, w) => format!("webhook {i} ({:?}, {})", w.format, webhook_host(w)),
        }
    }
}

/// Storage checks are their own event.
fn health_kind(check: &str) -> NotifyEvent {
    if check.starts_with("disk ") || check.starts_with("size ") {
        NotifyEvent::Storage
    } else {
        NotifyEvent::Health
    }
}

fn mail_port(m: &MailConfig) -> u16 {
    m.port.unwrap_or(match m.security {
        MailSecurity::Starttls => 587,
        MailSecurity::Tls => 465,
        MailSecurity::None => 25,
    })
}

async fn send_mail(m: &MailConfig, msg: &Message) -> Result<()> {
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

    let server = format!("{}:{}", m.server, mail_port(m));
    let deadline = m.timeout.map_or(DEFAULT_MAIL_TIMEOUT, |d| d.0);
    let err = |what: &str, e: &dyn std::fmt::Display| {
        Error::Other(format!("mail via {server}: {what}: {e}"))
    };
    let mut b = lettre::Message::builder()
        .from(
            m.from
                .parse::<Mailbox>()
                .map_err(|e| err(&format!("from {:?}", m.from), &e))?,
        )
        .subject(&msg.title)
        .header(ContentType::TEXT_PLAIN);
    for to in &m.to {
        b = b.to(to
            .parse::<Mailbox>()
            .map_err(|e| err(&format!("to {to:?}"), &e))?);
    }
    let mail = b
        .body(msg.text.clone())
        .map_err(|e| err("the message", &e))?;

    let tls = |wrapper: bool| -> Result<Tls> {
        let mut p = TlsParameters::builder(m.server.clone());
        if let Some(ca) = &m.ca_file {
            let pem = std::fs::read(ca).map_err(|e| Error::io(ca, e))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| err(&format!("ca-file {}", ca.display()), &e))?;
            p = p.add_root_certificate(cert);
        }
        let p = p.build_rustls().map_err(|e| err("TLS", &e))?;
        Ok(if wrapper {
            Tls::Wrapper(p)
        } else {
            Tls::Required(p)
        })
    };
    let mut t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&m.server)
        .port(mail_port(m))
        .timeout(Some(deadline));
    t = match m.security {
        MailSecurity::Starttls => t.tls(tls(false)?),
        MailSecurity::Tls => t.tls(tls(true)?),
        MailSecurity::None => t,
    };
    if let Some(user) = &m.username {
        let password = match &m.password {
            Some(p) => p.reveal("notify.mail.password")?.to_string(),
            None => String::new(),
        };
        t = t.credentials(Credentials::new(user.clone(), password));
    }
    let transport = t.build();
    match tokio::time::timeout(deadline, transport.send(mail)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(err("sending", &e)),
        Err(_) => Err(err(
            "sending",
            &format!("no answer within {}s", deadline.as_secs()),
        )),
    }
}

/// The host a webhook posts to (its URL is a credential: only the host is ever shown).
fn webhook_host(w: &WebhookConfig) -> String {
    w.url
        .reveal("notify.webhook.url")
        .ok()
        .and_then(|u| reqwest::Url::parse(&u).ok())
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "an unparsable URL".into())
}

/// The body of `msg` in `format`: its content type and bytes, and extra headers.
fn webhook_body(
    format: WebhookFormat,
    msg: &Message,
) -> (&'static str, Vec<u8>, Vec<(&'static str, String)>) {
    match format {
        WebhookFormat::Json => {
            let mut o = msg.fields.clone();
            o.insert("title".into(), json!(msg.title));
            o.insert("text".into(), json!(msg.text));
            (
                "application/json",
                Value::Object(o).to_string().into_bytes(),
                Vec::new(),
            )
        }
        WebhookFormat::Slack => {
            let text = format!("*{}*\n```\n{}```", msg.title, msg.text);
            (
                "application/json",
                json!({ "text": text }).to_string().into_bytes(),
                Vec::new(),
            )
        }
        WebhookFormat::Discord => {
            let mut text = format!("**{}**\n```\n{}```", msg.title, msg.text);
            if text.chars().count() > DISCORD_MAX {
                let cut: String = text.chars().take(DISCORD_MAX - 8).collect();
                text = format!("{cut}\n...```");
            }
            (
                "application/json",
                json!({ "content": text, "username": "cairn" })
                    .to_string()
                    .into_bytes(),
                Vec::new(),
            )
        }
        WebhookFormat::Ntfy => {
            let (priority, tags) = match msg.kind {
                NotifyEvent::Success | NotifyEvent::Recovered => ("default", "white_check_mark"),
                NotifyEvent::Storage | NotifyEvent::Health => ("high", "warning"),
                NotifyEvent::Failure | NotifyEvent::Error => ("urgent", "rotating_light"),
            };
            // Header values must be ASCII: the title is, but for a host or job name.
            let title: String = msg
                .title
                .chars()
                .map(|c| {
                    if c.is_ascii() && !c.is_ascii_control() {
                        c
                    } else {
                        '?'
                    }
                })
                .collect();
            (
                "text/plain; charset=utf-8",
                msg.text.clone().into_bytes(),
                vec![
                    ("Title", title),
                    ("Priority", priority.into()),
                    ("Tags", tags.into()),
                ],
            )
        }
    }
}

async fn send_webhook(w: &WebhookConfig, msg: &Message) -> Result<()> {
    let host = webhook_host(w);
    let err = |e: &dyn std::fmt::Display| Error::Other(format!("POST to {host}: {e}"));
    let url = w.url.reveal("notify.webhook.url")?;
    let timeout = w.timeout.map_or(DEFAULT_WEBHOOK_TIMEOUT, |d| d.0);
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| err(&e.without_url()))?;
    let (content_type, body, headers) = webhook_body(w.format, msg);
    let mut req = client
        .post(url.as_str())
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if let Some(t) = &w.token {
        req = req.bearer_auth(t.reveal("notify.webhook.token")?.as_str());
    }
    let resp = req.send().await.map_err(|e| err(&e.without_url()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(err(&format!("the server answered {status}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;
    use crate::job::health::Check;

    fn notifier(events: Option<Vec<NotifyEvent>>) -> Notifier {
        Notifier::new(&NotifyConfig {
            events,
            repeat_after: Some(Dur(Duration::from_secs(3600))),
            host: Some("web-1".into()),
            mail: None,
            webhook: vec![WebhookConfig {
                url: crate::config::Secret::new("http://127.0.0.1:9/hook"),
                format: WebhookFormat::Json,
                token: None,
                timeout: None,
                events: None,
            }],
        })
        .unwrap()
    }

    fn health(checks: &[(&str, bool)]) -> HealthReport {
        HealthReport {
            healthy: checks.iter().all(|c| c.1),
            checks: checks
                .iter()
                .map(|(name, ok)| Check {
                    name: name.to_string(),
                    ok: *ok,
                    detail: format!("{name} detail"),
                    fix: (!ok).then(|| format!("fix {name}")),
                })
                .collect(),
        }
    }

    fn at(h: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + h * 3600).unwrap()
    }

    #[test]
    fn a_problem_is_said_once_per_repeat_after_and_its_recovery_once() {
        let d = tempfile::tempdir().unwrap();
        let mut h = History::open(d.path()).unwrap();
        let n = notifier(None);
        let bad = health(&[
            ("freshness db@local", false),
            ("disk local", false),
            ("repository local", true),
        ]);
        let sent = n.triage(&mut h, at(0), n.health_findings(&bad)).unwrap();
        let kinds: Vec<_> = sent.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [NotifyEvent::Health, NotifyEvent::Storage]);
        assert!(
            sent[0].title.contains("freshness db@local"),
            "{}",
            sent[0].title
        );
        assert!(
            sent[0].text.contains("fix freshness db@local"),
            "{}",
            sent[0].text
        );
        assert!(
            sent[1]
                .title
                .starts_with("cairn on web-1: storage warning: disk local")
        );
        // Within the hour: held back, counted.
        for k in 1..=3 {
            let again = n
                .triage(
                    &mut h,
                    at(0) + jiff::SignedDuration::from_mins(k * 10),
                    n.health_findings(&bad),
                )
                .unwrap();
            assert!(again.is_empty(), "{again:?}");
        }
        assert_eq!(h.notice("health disk local").unwrap().unwrap().held, 3);
        // An hour after it was told: said again, with the count and the first time.
        let again = n.triage(&mut h, at(1), n.health_findings(&bad)).unwrap();
        assert_eq!(again.len(), 2);
        assert!(
            again[1].text.contains("seen 3 more times"),
            "{}",
            again[1].text
        );
        assert!(
            again[1].text.contains(&at(0).to_string()),
            "{}",
            again[1].text
        );
        // Fine again: one recovery naming both, then nothing more.
        let good = health(&[
            ("freshness db@local", true),
            ("disk local", true),
            ("repository local", true),
        ]);
        let rec = n.triage(&mut h, at(2), n.health_findings(&good)).unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].kind, NotifyEvent::Recovered);
        assert!(
            rec[0].title.contains("health freshness db@local")
                && rec[0].title.contains("health disk local"),
            "{}",
            rec[0].title
        );
        assert!(
            n.triage(&mut h, at(3), n.health_findings(&good))
                .unwrap()
                .is_empty()
        );
        assert!(h.notices().unwrap().is_empty());
    }

    #[test]
    fn events_a_channel_does_not_take_are_neither_sent_nor_remembered() {
        let d = tempfile::tempdir().unwrap();
        let mut h = History::open(d.path()).unwrap();
        let n = notifier(Some(vec![NotifyEvent::Storage]));
        assert!(n.wants(NotifyEvent::Storage) && !n.wants(NotifyEvent::Health));
        let bad = health(&[("freshness db@local", false), ("size local", false)]);
        let sent = n.triage(&mut h, at(0), n.health_findings(&bad)).unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].kind, NotifyEvent::Storage);
        assert_eq!(h.notices().unwrap(), ["health size local"]);
        // No recovery message without `recovered`, but the notice is cleared.
        let good = health(&[("freshness db@local", true), ("size local", true)]);
        assert!(
            n.triage(&mut h, at(1), n.health_findings(&good))
                .unwrap()
                .is_empty()
        );
        assert!(h.notices().unwrap().is_empty());
    }

    #[test]
    fn a_service_error_is_throttled_by_what_failed() {
        let d = tempfile::tempdir().unwrap();
        let mut h = History::open(d.path()).unwrap();
        let n = notifier(None);
        let e = || n.error_findings("job nightly", "the lock is held", "cairn runs");
        assert_eq!(n.triage(&mut h, at(0), e()).unwrap().len(), 1);
        assert!(n.triage(&mut h, at(0), e()).unwrap().is_empty());
        let other = n.error_findings("health", "no configuration", "cairn health");
        assert_eq!(n.triage(&mut h, at(0), other).unwrap().len(), 1);
        let rec = n
            .triage(&mut h, at(0), n.error_fine("job nightly"))
            .unwrap();
        assert_eq!(rec.len(), 1);
        assert!(rec[0].text.contains("error job nightly"), "{}", rec[0].text);
    }

    #[test]
    fn bodies_for_each_webhook_format() {
        let n = notifier(None);
        let m = &n
            .error_findings("job nightly", "boom", "cairn runs")
            .messages[0];
        let (ct, body, _) = webhook_body(WebhookFormat::Json, m);
        assert_eq!(ct, "application/json");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["event"], "error");
        assert_eq!(v["host"], "web-1");
        assert_eq!(v["error"], "boom");
        let (_, body, _) = webhook_body(WebhookFormat::Slack, m);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["text"].as_str().unwrap().contains("boom"));
        let mut long = m.clone();
        long.text = "x".repeat(5000);
        let (_, body, _) = webhook_body(WebhookFormat::Discord, &long);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["content"].as_str().unwrap().chars().count() <= DISCORD_MAX);
        let (ct, body, headers) = webhook_body(WebhookFormat::Ntfy, m);
        assert!(ct.starts_with("text/plain"));
        assert!(String::from_utf8(body).unwrap().contains("boom"));
        assert!(
            headers
                .iter()
                .any(|(k, v)| *k == "Title" && v.contains("job nightly failed"))
        );
        assert!(
            headers
                .iter()
                .any(|(k, v)| *k == "Priority" && v == "urgent")
        );
    }
}
