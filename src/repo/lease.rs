//! Leases (DESIGN.md §6, format-spec/lease.md): shared for backups, exclusive for prune.
//!
//! A lease is an immutable object under `locks/`, replaced by a fresh one every
//! [`REFRESH_SECS`] while the operation runs. One that has not been refreshed for its
//! time-to-live, or whose process is known to be dead (same host, no such pid), is stale: it is
//! ignored and removed, so a crashed run never blocks the next one and nobody needs `unlock`.
//! Taking a lease writes it first and then looks for conflicts, backing off if there are any,
//! so two writers racing for incompatible leases cannot both win.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::{Repository, hostname, keys, username};
use crate::error::{Error, Result};
use crate::format::Timestamp;
use crate::format::lease::{Lease, LeaseKind};
use crate::id::Id;

pub const TTL_SECS: u32 = 300;
pub const REFRESH_SECS: u64 = 60;

/// Holds a lease until [`LeaseGuard::release`] (or until dropped, when refreshing stops and the
/// lease goes stale on its own).
pub struct LeaseGuard {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<Option<String>>>,
    repo: Arc<Repository>,
    /// Unix seconds of the last successful write of our lease.
    last_ok: Arc<std::sync::atomic::AtomicI64>,
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This process's pid space: the machine id and the pid namespace. Empty when unknown, in which
/// case no lease is ever judged by its pid.
pub fn pid_space() -> String {
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if machine.trim().is_empty() || ns.is_empty() {
        return String::new();
    }
    format!("{}/{ns}", machine.trim())
}

fn is_stale(l: &Lease, now: Timestamp, space: &str) -> bool {
    l.is_stale(now)
        || (!space.is_empty()
            && l.pid_space == space
            && l.pid != std::process::id()
            && !pid_alive(l.pid))
}

fn describe(l: &Lease) -> String {
    format!(
        "{} lease of `{}` by {}@{} (pid {}) since {}",
        match l.kind {
            LeaseKind::Shared => "a shared",
            LeaseKind::Exclusive => "an exclusive",
        },
        l.operation,
        l.username,
        l.host,
        l.pid,
        l.created.to_rfc3339()
    )
}

async fn write_lease(repo: &Repository, lease: &Lease) -> Result<String> {
    let data = lease.encode(repo.keys().sealer());
    let key = keys::lock(&Id::of_bytes(&data));
    repo.backend().put(&key, Bytes::from(data)).await?;
    Ok(key)
}

/// Live leases other than `own_key`, removing stale ones on the way.
async fn others(repo: &Repository, own_key: &str) -> Result<Vec<Lease>> {
    let now = repo.now();
    let space = pid_space();
    let mut out = Vec::new();
    for e in repo.backend().list(keys::LOCKS).await? {
        if e.key == own_key {
            continue;
        }
        let data = match repo.backend().get(&e.key).await {
            Ok(d) => d,
            Err(err) if err.is_not_found() => continue,
            Err(err) => return Err(err.into()),
        };
        match Lease::decode(repo.keys().sealer(), &data, &e.key) {
            Ok(l) if is_stale(&l, now, &space) => {
                tracing::info!("removing stale {}", describe(&l));
                let _ = repo.backend().delete(&e.key).await;
            }
            Ok(l) => out.push(l),
            // A lease from a newer cairn is obeyed as exclusive: we cannot tell what it allows.
            Err(err) if err.kind() == crate::error::ErrorKind::UnsupportedVersion => {
                out.push(Lease {
                    kind: LeaseKind::Exclusive,
                    operation: "an operation of a newer cairn".into(),
                    host: "?".into(),
                    username: "?".into(),
                    pid: 0,
                    pid_space: String::new(),
                    created: now,
                    refreshed: now,
                    ttl_secs: 0,
                    nonce: [0; 16],
                })
            }
            // A damaged lease can never be judged stale, so obeying it would block forever.
            Err(err) => tracing::warn!("ignoring unreadable lease {}: {err}", e.key),
        }
    }
    Ok(out)
}

impl Repository {
    /// Take a lease, waiting up to `wait` for conflicting ones to go away.
    pub async fn acquire_lease(
        self: &Arc<Self>,
        kind: LeaseKind,
        operation: &str,
        wait: Duration,
    ) -> Result<LeaseGuard> {
        let started = std::time::Instant::now();
        let mut nonce = [0u8; 16];
        crate::crypto::fill_random(&mut nonce);
        let created = self.now();
        let mut lease = Lease {
            kind,
            operation: operation.to_string(),
            host: hostname(),
            username: username(),
            pid: std::process::id(),
            pid_space: pid_space(),
            created,
            refreshed: created,
            ttl_secs: TTL_SECS,
            nonce,
        };
        loop {
            lease.refreshed = self.now();
            let key = write_lease(self, &lease).await?;
            let live = others(self, &key).await?;
            let conflict = live
                .iter()
                .find(|l| kind == LeaseKind::Exclusive || l.kind == LeaseKind::Exclusive);
            let Some(holder) = conflict else {
                return Ok(self.start_refresh(lease, key));
            };
            let what = describe(holder);
            self.backend().delete(&key).await?;
            if started.elapsed() >= wait {
                return Err(Error::Locked(format!(
                    "{} holds {what}; waited {}s (see --lease-wait)",
                    self.backend().location(),
                    wait.as_secs()
                )));
            }
            let mut jitter = [0u8; 1];
            crate::crypto::fill_random(&mut jitter);
            tokio::time::sleep(Duration::from_millis(500 + 4 * jitter[0] as u64)).await;
        }
    }

    fn start_refresh(self: &Arc<Self>, mut lease: Lease, key: String) -> LeaseGuard {
        let (stop, mut stopped) = watch::channel(false);
        let repo = self.clone();
        let last_ok = Arc::new(std::sync::atomic::AtomicI64::new(lease.refreshed.secs));
        let last = last_ok.clone();
        let task = tokio::spawn(async move {
            let mut key = key;
            loop {
                tokio::select! {
                    _ = stopped.changed() => return Some(key),
                    _ = tokio::time::sleep(Duration::from_secs(REFRESH_SECS)) => {}
                }
                lease.refreshed = repo.now();
                match write_lease(&repo, &lease).await {
                    Ok(new_key) => {
                        last.store(lease.refreshed.secs, std::sync::atomic::Ordering::SeqCst);
                        let _ = repo.backend().delete(&key).await;
                        key = new_key;
                    }
                    Err(e) => tracing::warn!("could not refresh the lease: {e}"),
                }
            }
        });
        LeaseGuard {
            stop,
            task: Some(task),
            repo: self.clone(),
            last_ok,
        }
    }
}

impl LeaseGuard {
    /// Fail if the lease may have gone stale (it could not be refreshed for most of its
    /// lifetime), so that others may have treated it as gone: an operation must not commit then.
    pub fn check(&self) -> Result<()> {
        let last = self.last_ok.load(std::sync::atomic::Ordering::SeqCst);
        let age = self.repo.now().secs - last;
        if age > (TTL_SECS as i64) * 4 / 5 {
            return Err(Error::Locked(format!(
                "our lease on {} could not be refreshed for {age}s and may have expired",
                self.repo.backend().location()
            )));
        }
        Ok(())
    }

    /// Stop refreshing and delete the lease.
    pub async fn release(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take()
            && let Ok(Some(key)) = task.await
        {
            self.repo.backend().delete(&key).await?;
        }
        Ok(())
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
