//! A repository in an S3 bucket (or an S3-compatible server), through opendal's S3 service.
//!
//! `s3://BUCKET/PREFIX` (also `s3:BUCKET/PREFIX`): every key of the repository lives under
//! `PREFIX/`. Configuration comes from the usual AWS environment: credentials from
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN` or `AWS_PROFILE` and the
//! shared credentials file (loaded by opendal's signer, never copied into cairn's own structs
//! unless a library caller passes them explicitly), the region from `AWS_REGION` or
//! `AWS_DEFAULT_REGION` (default `us-east-1`), the endpoint from `AWS_ENDPOINT_URL`.
//!
//! How the contract of [`Backend`] is kept:
//! - `put` is a single `PutObject` with `If-None-Match: *` (opendal's `if_not_exists`): S3 puts
//!   are atomic and the condition makes "never overwrite" hold even between two racing writers.
//!   A put whose response was lost and that is retried sees `AlreadyExists`; cairn's objects are
//!   content-addressed (config aside), so callers treat that as success.
//! - Packs (`data/`) may be written with another storage class (`STANDARD_IA` for example),
//!   so a lifecycle rule or a cheaper class can target data alone; metadata keeps the default.
//! - Transient failures (5xx, throttling, timeouts, connection resets and refusals) are
//!   retried with exponential backoff and jitter by opendal's retry layer; permanent ones (403,
//!   404, a missing bucket) are not. Every attempt is bounded by a timeout, and the number of
//!   requests in flight by a semaphore.
//! - Messages name the bucket, the endpoint and the operation, never a credential.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};
use opendal::{Buffer, ErrorKind as OK, Operator};

use super::{BResult, Backend, BackendError, BackendErrorKind, Entry};

/// How virtual-hosted-style (`bucket.host`) or path-style (`host/bucket`) requests are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Addressing {
    /// Path style with a custom endpoint (what S3-compatible servers expect), virtual-hosted
    /// style on AWS.
    #[default]
    Auto,
    Path,
    Virtual,
}

/// Static credentials for library callers that do not use the environment. Never printed.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticCredentials(<redacted>)")
    }
}

/// Options of an S3 repository.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// `http(s)://host:port` of an S3-compatible server; `None` for AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `None`: opendal loads credentials from the environment and the shared files.
    pub credentials: Option<StaticCredentials>,
    pub addressing: Addressing,
    /// Storage class of packs (`data/`); `None` keeps the bucket's default.
    pub data_storage_class: Option<String>,
    /// Requests in flight at once.
    pub connections: usize,
    /// Bound on each attempt of each request.
    pub timeout: Duration,
    /// Retries of a transient failure (0: try once).
    pub retries: usize,
    /// First backoff delay; doubles with every retry (with jitter), up to 10 s.
    pub retry_min_delay: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            region: None,
            credentials: None,
            addressing: Addressing::Auto,
            data_storage_class: None,
            connections: 8,
            timeout: Duration::from_secs(60),
            retries: 4,
            retry_min_delay: Duration::from_millis(500),
        }
    }
}

impl S3Options {
    /// Defaults, with the endpoint and region taken from the AWS environment variables.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        S3Options {
            endpoint: var("AWS_ENDPOINT_URL").or_else(|| var("AWS_ENDPOINT_URL_S3")),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            ..S3Options::default()
        }
    }
}

/// `s3://bucket/prefix` or `s3:bucket/prefix` into (bucket, prefix without slashes at either end).
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .or_else(|| url.strip_prefix("s3:"))
        .ok_or_else(|| format!("{url}: not an s3:// URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    // Bucket names: 3-63 of lowercase letters, digits, dots and hyphens (AWS); accept upper case
    // and underscores too, as some S3-compatible servers do, but nothing that could change the
    // meaning of a URL.
    if bucket.is_empty()
        || !bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!(
            "{url}: invalid bucket name {bucket:?} (expected s3://BUCKET/PREFIX)"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|c| c == "." || c == "..") || prefix.contains("//") {
        return Err(format!("{url}: invalid prefix {prefix:?}"));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// An endpoint for messages: without any `user:password@` part.
fn redact_endpoint(e: &str) -> String {
    match e.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => e.rsplit('@').next().unwrap_or(e).to_string(),
    }
}

#[derive(Debug)]
pub struct S3Backend {
    op: Operator,
    /// The same bucket, with the storage class of packs.
    data_op: Operator,
    bucket: String,
    prefix: String,
    endpoint: String,
}

impl S3Backend {
    pub fn new(url: &str, o: &S3Options) -> Result<S3Backend, String> {
        let (bucket, prefix) = parse_url(url)?;
        // The process-wide HTTP client (reqwest); idempotent. (opendal's automatic
        // registration is off: it would run a constructor before main.)
        opendal::install_default();
        let endpoint = o
            .endpoint
            .clone()
            .map(|e| e.trim_end_matches('/').to_string());
        let shown_endpoint = endpoint
            .as_deref()
            .map(redact_endpoint)
            .unwrap_or_else(|| "https://s3.amazonaws.com".into());
        let virtual_host = match o.addressing {
            Addressing::Path => false,
            Addressing::Virtual => true,
            Addressing::Auto => endpoint.is_none(),
        };
        let build = |storage_class: Option<&str>| -> Result<Operator, String> {
            let mut b = opendal::services::S3::default()
                .bucket(&bucket)
                .root(&format!("/{prefix}"))
                .region(o.region.as_deref().unwrap_or("us-east-1"));
            if let Some(e) = &endpoint {
                b = b.endpoint(e);
            }
            if virtual_host {
                b = b.enable_virtual_host_style();
            }
            if let Some(c) = &o.credentials {
                b = b
                    .access_key_id(&c.access_key_id)
                    .secret_access_key(&c.secret_access_key)
                    .disable_config_load();
                if let Some(t) = &c.session_token {
                    b = b.session_token(t);
                }
            }
            if let Some(sc) = storage_class {
                b = b.default_storage_class(sc);
            }
            let op = Operator::new(b)
                .map_err(|e| format!("s3://{bucket}/{prefix}: {}", e.message()))?
                // Order matters (see TimeoutLayer's docs): the timeout bounds each attempt,
                // the semaphore is held for one attempt only (not during a backoff), and the
                // retry layer is outermost.
                .layer(
                    TimeoutLayer::new()
                        .with_timeout(o.timeout)
                        .with_io_timeout(o.timeout),
                )
                .layer(ConcurrentLimitLayer::new(o.connections.max(1)))
                .layer(
                    RetryLayer::new()
                        .with_notify(RetryNotice {
                            endpoint: shown_endpoint.clone(),
                        })
                        .with_jitter()
                        .with_factor(2.0)
                        .with_min_delay(o.retry_min_delay)
                        .with_max_delay(Duration::from_secs(10).max(o.retry_min_delay))
                        .with_max_times(o.retries),
                );
            Ok(op)
        };
        let op = build(None)?;
        let data_op = match o.data_storage_class.as_deref().filter(|s| !s.is_empty()) {
            Some(sc) => build(Some(sc))?,
            None => op.clone(),
        };
        Ok(S3Backend {
            op,
            data_op,
            bucket,
            prefix,
            endpoint: shown_endpoint,
        })
    }

    fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn op_for(&self, key: &str) -> &Operator {
        if key.starts_with("data/") {
            &self.data_op
        } else {
            &self.op
        }
    }

    fn check_key(op: &'static str, key: &str) -> BResult<()> {
        if key.is_empty()
            || key.starts_with('/')
            || key.ends_with('/')
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(BackendError::new(
                BackendErrorKind::Permanent,
                op,
                key,
                "invalid key",
            ));
        }
        Ok(())
    }

    /// An opendal error as a [`BackendError`] whose message says what happened in words an
    /// operator can act on, and never contains a credential (opendal's context, which holds
    /// response headers, is left out on purpose).
    fn error(&self, op: &'static str, key: &str, e: opendal::Error) -> BackendError {
        let detail = e.message().trim().to_string();
        let causes = causes(&e);
        let all = format!("{detail} {causes}");
        let (kind, message) = match e.kind() {
            OK::NotFound => (BackendErrorKind::NotFound, "not found".to_string()),
            OK::ConditionNotMatch | OK::AlreadyExists => {
                (BackendErrorKind::AlreadyExists, "object exists".to_string())
            }
            // No credential provider (environment, shared files, container, EC2 metadata)
            // had any: reqsign's own words for it say nothing an operator can act on.
            _ if all.contains("failed to load signing credential") => {
                (BackendErrorKind::Permanent, missing_credentials())
            }
            OK::ConfigInvalid if all.contains("NoSuchBucket") => (
                BackendErrorKind::Permanent,
                format!(
                    "bucket '{}' does not exist at {} (create it first)",
                    self.bucket, self.endpoint
                ),
            ),
            OK::PermissionDenied => (
                BackendErrorKind::Permanent,
                format!(
                    "access denied by {} to bucket '{}': the credentials were rejected or lack \
                     permission (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE){}",
                    self.endpoint,
                    self.bucket,
                    s3_code(&detail)
                        .map(|c| format!(" [{c}]"))
                        .unwrap_or_default()
                ),
            ),
            OK::RangeNotSatisfied => (
                BackendErrorKind::Permanent,
                "range beyond the end of the object".to_string(),
            ),
            _ if all.contains("Connection refused")
                || all.contains("connection refused")
                || all.contains("error trying to connect")
                || all.contains("dns error") =>
            {
                (
                    BackendErrorKind::Transient,
                    format!(
                        "cannot connect to {} ({}){}",
                        self.endpoint,
                        short(&causes, &detail),
                        retried(&e)
                    ),
                )
            }
            OK::RateLimited => (
                BackendErrorKind::Transient,
                format!("throttled by {}{}", self.endpoint, retried(&e)),
            ),
            _ if e.is_temporary() || e.is_persistent() => (
                BackendErrorKind::Transient,
                format!(
                    "{} failed: {}{}",
                    self.endpoint,
                    short(&causes, &detail),
                    retried(&e)
                ),
            ),
            k => (
                BackendErrorKind::Permanent,
                format!("{} ({k}): {}", self.endpoint, short(&causes, &detail)),
            ),
        };
        BackendError::new(kind, op, key, message)
    }
}

/// What is missing when no AWS credential could be loaded, from which variables are set (their
/// names only; values are never looked at beyond being empty or not).
fn missing_credentials() -> String {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let id = set("AWS_ACCESS_KEY_ID");
    let secret = set("AWS_SECRET_ACCESS_KEY");
    if id && !secret {
        "no S3 credentials: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into()
    } else if secret && !id {
        "no S3 credentials: AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into()
    } else if let Some(p) = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()) {
        format!(
            "no S3 credentials: profile '{p}' (AWS_PROFILE) has none in the shared credentials \
             file (~/.aws/credentials, or AWS_SHARED_CREDENTIALS_FILE); or set \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    } else {
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE \
         with a shared credentials file)"
            .into()
    }
}

/// Says (once per retry, in one line) that a request failed and will be retried; opendal's
/// default prints the whole error with response headers.
struct RetryNotice {
    endpoint: String,
}

impl opendal::layers::RetryInterceptor for RetryNotice {
    fn intercept(&self, event: opendal::layers::RetryEvent<'_>) {
        tracing::warn!(
            "S3 {} at {} failed ({}); retry {} in {:.1}s",
            event.op,
            self.endpoint,
            short(&causes(event.err), event.err.message()),
            event.attempt,
            event.retry_after.as_secs_f64()
        );
    }
}

/// The chain of an error's sources, `: `-separated.
fn causes(e: &opendal::Error) -> String {
    let mut v = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        v.push(s.to_string());
        src = s.source();
    }
    v.join(": ")
}

/// The `Code` of an S3 error body as opendal renders it (`S3Error { code: "...", ... }`).
fn s3_code(detail: &str) -> Option<&str> {
    let rest = &detail[detail.find("code: \"")? + 7..];
    Some(&rest[..rest.find('"')?])
}

/// A failure's cause, kept to one line of reasonable length.
fn short(causes: &str, detail: &str) -> String {
    let s = if let Some(code) = s3_code(detail) {
        code.to_string()
    } else if !causes.is_empty() {
        causes.to_string()
    } else {
        detail.to_string()
    };
    let s = s.replace('\n', " ");
    if s.chars().count() > 300 {
        format!("{}...", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

fn retried(e: &opendal::Error) -> &'static str {
    if e.is_persistent() {
        "; gave up after retries"
    } else {
        ""
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn location(&self) -> String {
        if self.endpoint.starts_with("https://s3.amazonaws.com") {
            self.url()
        } else {
            format!("{} at {}", self.url(), self.endpoint)
        }
    }

    async fn check(&self) -> BResult<()> {
        // One ListObjectsV2 of at most one key: fails on a missing bucket, rejected
        // credentials or an unreachable endpoint, and costs nothing on an empty prefix.
        let mut l = self
            .op
            .lister_with("/")
            .limit(1)
            .await
            .map_err(|e| self.error("open", &self.url(), e))?;
        use futures::TryStreamExt;
        l.try_next()
            .await
            .map_err(|e| self.error("open", &self.url(), e))?;
        Ok(())
    }

    async fn put(&self, key: &str, data: Bytes) -> BResult<()> {
        self.put_parts(key, vec![data]).await
    }

    async fn put_parts(&self, key: &str, parts: Vec<Bytes>) -> BResult<()> {
        Self::check_key("put", key)?;
        self.op_for(key)
            .write_with(key, Buffer::from(parts))
            .if_not_exists(true)
            .await
            .map(|_| ())
            .map_err(|e| self.error("put", key, e))
    }

    async fn get(&self, key: &str) -> BResult<Bytes> {
        Self::check_key("get", key)?;
        self.op
            .read(key)
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| self.error("get", key, e))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> BResult<Bytes> {
        Self::check_key("get_range", key)?;
        let beyond = || {
            BackendError::new(
                BackendErrorKind::Permanent,
                "get_range",
                key,
                "range beyond the end of the object",
            )
        };
        let end = offset.checked_add(len).ok_or_else(beyond)?;
        if len == 0 {
            // No HTTP range can say "zero bytes"; check the object exists and is long enough.
            return match self.stat(key).await? {
                None => Err(BackendError::new(
                    BackendErrorKind::NotFound,
                    "get_range",
                    key,
                    "not found",
                )),
                Some(size) if size < end => Err(beyond()),
                Some(_) => Ok(Bytes::new()),
            };
        }
        let b = self
            .op
            .read_with(key)
            .range(offset..end)
            .await
            .map_err(|e| self.error("get_range", key, e))?;
        // A server answers a range that runs past the end with what it has.
        if b.len() as u64 != len {
            return Err(beyond());
        }
        Ok(b.to_bytes())
    }

    async fn list(&self, prefix: &str) -> BResult<Vec<Entry>> {
        // opendal lists by key prefix (`ListObjectsV2` with `prefix=`, every page); keys that
        // end in '/' (directory markers some tools create) are not objects of ours.
        let path = if prefix.is_empty() { "/" } else { prefix };
        let entries = self
            .op
            .list_with(path)
            .recursive(true)
            .await
            .map_err(|e| self.error("list", prefix, e))?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.path().ends_with('/') && e.path().starts_with(prefix))
            .map(|e| Entry {
                key: e.path().to_string(),
                size: e.metadata().content_length(),
                modified: e
                    .metadata()
                    .last_modified()
                    .map(std::time::SystemTime::from),
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> BResult<()> {
        Self::check_key("delete", key)?;
        match self.op.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == OK::NotFound => Ok(()),
            Err(e) => Err(self.error("delete", key, e)),
        }
    }

    async fn stat(&self, key: &str) -> BResult<Option<u64>> {
        Self::check_key("stat", key)?;
        match self.op.stat(key).await {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == OK::NotFound => Ok(None),
            Err(e) => Err(self.error("stat", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("s3://bkt/a/b/").unwrap(),
            ("bkt".into(), "a/b".into())
        );
        assert_eq!(parse_url("s3:bkt/x").unwrap(), ("bkt".into(), "x".into()));
        assert_eq!(parse_url("s3://bkt").unwrap(), ("bkt".into(), "".into()));
        assert!(parse_url("s3://").is_err());
        assert!(parse_url("s3://user:pw@host/x").is_err());
        assert!(parse_url("s3://b/../x").is_err());
        assert!(parse_url("s3://b/a//x").is_err());
    }

    #[test]
    fn endpoints_never_show_userinfo() {
        assert_eq!(
            redact_endpoint("http://user:secret@127.0.0.1:9000/"),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(
            redact_endpoint("https://s3.example.com"),
            "https://s3.example.com"
        );
    }

    #[test]
    fn credentials_are_not_printed() {
        let o = S3Options {
            credentials: Some(StaticCredentials {
                access_key_id: "AKIDSECRETID".into(),
                secret_access_key: "VERYSECRET".into(),
                session_token: Some("TOKENSECRET".into()),
            }),
            ..S3Options::default()
        };
        let s = format!("{o:?}");
        assert!(!s.contains("SECRETID") && !s.contains("VERYSECRET"), "{s}");
        let b = S3Backend::new("s3://bkt/pre", &o).unwrap();
        let s = format!("{b:?} {}", b.location());
        assert!(
            !s.contains("SECRETID") && !s.contains("VERYSECRET") && !s.contains("TOKENSECRET"),
            "{s}"
        );
    }
}

#[cfg(test)]
#[path = "../../tests/common/s3server.rs"]
pub(crate) mod test_server;

#[cfg(test)]
mod server_tests {
    //! The backend contract and the failure messages, against a real S3 server (s3s-fs).
    use super::test_server::{self, S3Server};
    use super::*;

    pub(crate) fn options(server: &S3Server) -> S3Options {
        S3Options {
            endpoint: Some(server.endpoint()),
            region: Some(test_server::REGION.into()),
            credentials: Some(StaticCredentials {
                access_key_id: test_server::ACCESS_KEY.into(),
                secret_access_key: test_server::SECRET_KEY.into(),
                session_token: None,
            }),
            timeout: Duration::from_secs(20),
            retries: 2,
            retry_min_delay: Duration::from_millis(100),
            ..S3Options::default()
        }
    }

    #[tokio::test]
    async fn conformance() {
        let Some(server) = S3Server::start("backend::s3 conformance") else {
            return;
        };
        let o = S3Options {
            // s3s-fs accepts STANDARD and REDUCED_REDUNDANCY only.
            data_storage_class: Some("REDUCED_REDUNDANCY".into()),
            ..options(&server)
        };
        let url = format!("s3://{}/repos/one", test_server::BUCKET);
        let b = S3Backend::new(&url, &o).unwrap();
        b.check().await.unwrap();
        crate::backend::conformance::run(&b).await;
        crate::backend::conformance::run_large(&b).await;
        // Keys live under the prefix, as the server stores them.
        assert!(
            server
                .bucket_dir(test_server::BUCKET)
                .join("repos/one/data/ab/abcd")
                .is_file()
        );
        // Another prefix of the same bucket is another key space.
        let other = S3Backend::new(&format!("{url}-other"), &o).unwrap();
        assert!(other.list("").await.unwrap().is_empty());
        assert_eq!(other.stat("data/ab/abcd").await.unwrap(), None);
    }

    /// The storage class goes to packs (`data/`) only: s3s-fs refuses STANDARD_IA, so a put
    /// of a pack fails and a put of metadata does not.
    #[tokio::test]
    async fn storage_class_applies_to_packs_only() {
        let Some(server) = S3Server::start("backend::s3 storage class") else {
            return;
        };
        let o = S3Options {
            data_storage_class: Some("STANDARD_IA".into()),
            ..options(&server)
        };
        let b = S3Backend::new(&format!("s3://{}/sc", test_server::BUCKET), &o).unwrap();
        b.put("index/one", Bytes::from_static(b"x")).await.unwrap();
        let e = b
            .put("data/00/pack", Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("InvalidStorageClass"), "{e}");
    }

    #[tokio::test]
    async fn failures_are_distinct_and_clear() {
        let Some(server) = S3Server::start("backend::s3 failures") else {
            return;
        };
        let url = format!("s3://{}/r", test_server::BUCKET);

        // Wrong credentials: permanent, says access denied, never shows the secret.
        let mut o = options(&server);
        o.credentials = Some(StaticCredentials {
            access_key_id: test_server::ACCESS_KEY.into(),
            secret_access_key: "wrong-SECRET-value".into(),
            session_token: None,
        });
        let b = S3Backend::new(&url, &o).unwrap();
        let e = b.check().await.unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::Permanent, "{e}");
        assert!(e.to_string().contains("access denied"), "{e}");
        assert!(!e.to_string().contains("wrong-SECRET-value"), "{e}");
        let e = b.get("config").await.unwrap_err();
        assert!(e.to_string().contains("access denied"), "{e}");

        // A missing bucket: named.
        let b = S3Backend::new("s3://no-such-bucket/r", &options(&server)).unwrap();
        let e = b.check().await.unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::Permanent, "{e}");
        assert!(
            e.to_string()
                .contains("bucket 'no-such-bucket' does not exist"),
            "{e}"
        );

        // An unreachable endpoint: transient, names the endpoint, gives up quickly.
        let mut o = options(&server);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        o.endpoint = Some(format!("http://127.0.0.1:{port}"));
        let b = S3Backend::new(&url, &o).unwrap();
        let t = std::time::Instant::now();
        let e = b.check().await.unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::Transient, "{e}");
        assert!(
            e.to_string()
                .contains(&format!("cannot connect to http://127.0.0.1:{port}")),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        let e = b
            .put("index/x", Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::Transient, "{e}");
    }
}
