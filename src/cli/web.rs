//! The daemon's listener (`[daemon] listen`, default 127.0.0.1:9187): `/metrics` (Prometheus
//! text), `/health` (the last health report as JSON, 200 when healthy, 503 otherwise) and `/`
//! (the status page). Read-only; with `[daemon] token` set, every request needs
//! `Authorization: Bearer TOKEN`. It listens where the configuration says, loopback unless it
//! says otherwise.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use cairn::job::health::HealthReport;
use cairn::job::history::History;

use super::settings::Settings;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";

/// What the handlers read: the settings in force (replaced on SIGHUP).
pub type Shared = Arc<RwLock<Arc<Settings>>>;

/// The last health report the daemon wrote, if any.
pub fn last_health(g: &Settings) -> Option<HealthReport> {
    let text = std::fs::read(g.state_dir.join("health.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Bind `addr` and serve until the process ends.
pub async fn serve(addr: SocketAddr, shared: Shared) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tracing::info!("status page, /metrics and /health on http://{addr}/");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(())
}

fn reply(status: StatusCode, kind: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = kind.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(
    shared: Shared,
    req: Request<hyper::body::Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let g = match shared.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    if let Some(token) = token(&g) {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes())) {
            let mut r = reply(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "a bearer token is required\n",
            );
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            return Ok(r);
        }
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "read-only\n",
        ));
    }
    let health = last_health(&g);
    let r = match req.uri().path() {
        "/metrics" => match History::open(&g.state_dir)
            .and_then(|h| cairn::job::metrics::render(&h, health.as_ref()))
        {
            Ok(text) => reply(StatusCode::OK, "text/plain; version=0.0.4", text),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        "/health" => {
            let (status, body) = match &health {
                Some(h) => (
                    if h.healthy {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    },
                    serde_json::to_string(h).unwrap_or_default(),
                ),
                None => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "{\"healthy\":false,\"checks\":[],\"error\":\"no health check has run yet\"}"
                        .to_string(),
                ),
            };
            reply(status, "application/json", body)
        }
        "/" => {
            let host = cairn::repo::hostname();
            match History::open(&g.state_dir).and_then(|h| {
                cairn::job::status::render(&h, health.as_ref(), &host, jiff::Timestamp::now())
            }) {
                Ok(page) => reply(StatusCode::OK, "text/html; charset=utf-8", page),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n"),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    Ok(r)
}

fn token(g: &Settings) -> Option<String> {
    let c = g.config.as_ref()?;
    let t = c.config.daemon.token.as_ref()?;
    t.reveal("daemon.token").ok().map(|t| t.to_string())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
