//! `forget`: choose snapshots (named by id, or by a retention policy applied to each group) and
//! delete their snapshot objects under the repository's exclusive lease
//! (format-spec/ordering.md, "Deletion"). The decisions come from [`super::forget`], which is
//! pure; this module adds the repository: the lease, the listing, the deletes and the catalog.
//!
//! Deleting a snapshot object is the whole of forgetting it (format-spec/snapshot.md: a snapshot
//! exists if and only if its object exists). The data it alone referenced stays until prune.

use std::sync::Arc;

use jiff::tz::TimeZone;

use super::forget::{Counters, Filter, GroupBy, GroupKey, Policy, SnapshotInfo, plan};
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::id::Id;
use crate::repo::lease::{LeaseHandle, LeaseMode};
use crate::repo::{Repository, keys};

/// What to forget.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Exactly these snapshots (id prefixes or `latest`).
    Ids(Vec<String>),
    /// What `policy` does not keep, in each group of `group_by`.
    Policy { policy: Policy, group_by: GroupBy },
    /// Every snapshot the filter selects (restic's `--unsafe-allow-remove-all`). Refused with
    /// an empty filter.
    AllMatching,
}

#[derive(Debug, Clone)]
pub struct ForgetOptions {
    pub selection: Selection,
    /// Which snapshots are considered at all.
    pub filter: Filter,
    /// Decide and report, but take no lease and delete nothing.
    pub dry_run: bool,
    /// How long to wait for a conflicting lease.
    pub lease_wait: std::time::Duration,
    /// The time zone whose calendar defines hours, days, weeks, months and years.
    pub tz: TimeZone,
}

/// A snapshot the policy keeps.
#[derive(Debug, Clone)]
pub struct KeptSnapshot {
    pub id: Id,
    pub snapshot: Snapshot,
    pub matches: Vec<String>,
    pub counters: Counters,
}

/// The decision for one group, newest first.
#[derive(Debug, Clone)]
pub struct ForgetGroup {
    pub key: GroupKey,
    pub keep: Vec<KeptSnapshot>,
    pub remove: Vec<(Id, Snapshot)>,
}

#[derive(Debug, Clone, Default)]
pub struct ForgetOutcome {
    /// Per group (policy selections only).
    pub groups: Vec<ForgetGroup>,
    /// Every snapshot selected for removal, oldest first.
    pub remove: Vec<(Id, Snapshot)>,
    /// The snapshots actually deleted (none on a dry run).
    pub removed: Vec<Id>,
}

/// The refusal for an empty policy, worded like restic's.
pub const EMPTY_POLICY: &str = "no policy was specified, no snapshots will be removed \
     (give --keep-* options or snapshot ids; --unsafe-allow-remove-all with a --host, --tag or \
     --path filter removes every matching snapshot)";

fn validate(opts: &ForgetOptions) -> Result<()> {
    match &opts.selection {
        Selection::Ids(ids) if ids.is_empty() => Err(Error::InvalidInput(EMPTY_POLICY.into())),
        Selection::Policy { policy, .. } if policy.is_empty() => {
            Err(Error::InvalidInput(EMPTY_POLICY.into()))
        }
        Selection::AllMatching if opts.filter.is_empty() => Err(Error::InvalidInput(
            "--unsafe-allow-remove-all needs a --host, --tag or --path filter; refusing to \
             remove every snapshot of the repository"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// Decide what to forget, and (unless a dry run) delete it.
pub async fn run(repo: &Arc<Repository>, opts: &ForgetOptions) -> Result<ForgetOutcome> {
    validate(opts)?;
    if opts.dry_run {
        return decide(repo, opts);
    }
    // The lease's catalog refresh makes every snapshot committed before it visible to the
    // decision.
    repo.with_lease(LeaseMode::Exclusive, "forget", opts.lease_wait, |lease| {
        decide_and_delete(repo, opts, lease)
    })
    .await
}

async fn decide_and_delete(
    repo: &Arc<Repository>,
    opts: &ForgetOptions,
    lease: LeaseHandle,
) -> Result<ForgetOutcome> {
    let mut out = decide(repo, opts)?;
    if !out.remove.is_empty() {
        lease.verify().await?;
    }
    for (id, _) in &out.remove {
        // Never delete on a lease others may already consider gone.
        lease.check()?;
        repo.backend().delete(&keys::snapshot(id)).await?;
        repo.catalog().remove_snapshot(id)?;
        tracing::info!("removed snapshot {id}");
        out.removed.push(*id);
    }
    Ok(out)
}

fn decide(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetOutcome> {
    let all = repo.snapshots()?;
    let mut out = ForgetOutcome::default();
    match &opts.selection {
        Selection::Ids(specs) => {
            // Resolve every id before deleting anything: one unknown id removes nothing.
            let host = match opts.filter.hosts.as_slice() {
                [h] => Some(h.as_str()),
                _ => None,
            };
            for spec in specs {
                let (id, snap) = repo.find_snapshot(spec, host, &opts.filter.tags)?;
                if !out.remove.iter().any(|(i, _)| *i == id) {
                    out.remove.push((id, snap));
                }
            }
        }
        Selection::AllMatching => {
            let infos: Vec<SnapshotInfo> = all.iter().map(info).collect();
            out.remove = all
                .iter()
                .zip(&infos)
                .filter(|(_, i)| opts.filter.matches(i))
                .map(|(s, _)| s.clone())
                .collect();
        }
        Selection::Policy { policy, group_by } => {
            let infos: Vec<SnapshotInfo> = all.iter().map(info).collect();
            let plans = plan(
                &infos,
                &opts.filter,
                *group_by,
                policy,
                &opts.tz,
                repo.now(),
            );
            for p in plans {
                let group = ForgetGroup {
                    key: p.key,
                    keep: p
                        .keep
                        .into_iter()
                        .map(|k| KeptSnapshot {
                            id: all[k.index].0,
                            snapshot: all[k.index].1.clone(),
                            matches: k.matches,
                            counters: k.counters,
                        })
                        .collect(),
                    remove: p.remove.iter().map(|&i| all[i].clone()).collect(),
                };
                out.remove.extend(group.remove.iter().cloned());
                out.groups.push(group);
            }
        }
    }
    out.remove
        .sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    Ok(out)
}

fn info((id, s): &(Id, Snapshot)) -> SnapshotInfo {
    SnapshotInfo {
        id: *id,
        time: s.time,
        host: s.host.clone(),
        paths: s.paths.clone(),
        tags: s.tags.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::backend::MemoryBackend;
    use crate::clock::FakeClock;
    use crate::crypto::KdfParams;
    use crate::format::Timestamp;
    use crate::format::snapshot::Summary;
    use crate::ops::forget::Count;
    use crate::repo::{InitOptions, OpenOptions};

    const DAY: i64 = 86_400;
    /// 2026-01-01T00:00:00Z
    const T0: i64 = 1_767_225_600;

    async fn repo_with_days(
        days: &[i64],
    ) -> (tempfile::TempDir, Arc<MemoryBackend>, Arc<Repository>) {
        let cache = tempfile::tempdir().unwrap();
        let backend = Arc::new(MemoryBackend::new());
        let mut open = OpenOptions::new(cache.path());
        open.clock = FakeClock::new(T0 + 365 * DAY);
        let init = InitOptions {
            kdf: KdfParams::INSECURE_FOR_TESTS,
            ..Default::default()
        };
        let repo = Repository::init(backend.clone(), b"pw", &init, &open)
            .await
            .unwrap();
        for d in days {
            let snap = Snapshot {
                time: Timestamp::new(T0 + d * DAY, 0),
                tree: Id([0; 32]),
                paths: vec!["/p".into()],
                host: "h".into(),
                username: "u".into(),
                uid: 0,
                gid: 0,
                tags: vec![],
                parent: None,
                source: "files".into(),
                program: "test".into(),
                summary: Summary::default(),
                meta: vec![],
            };
            repo.save_snapshot(&snap).await.unwrap();
        }
        (cache, backend, Arc::new(repo))
    }

    fn opts(selection: Selection, dry_run: bool) -> ForgetOptions {
        ForgetOptions {
            selection,
            filter: Filter::default(),
            dry_run,
            lease_wait: std::time::Duration::ZERO,
            tz: TimeZone::UTC,
        }
    }

    fn last(n: u32) -> Selection {
        Selection::Policy {
            policy: Policy {
                last: Count::N(n),
                ..Policy::default()
            },
            group_by: GroupBy::default(),
        }
    }

    #[tokio::test]
    async fn deletes_snapshot_objects_and_catalog_rows_under_the_lease() {
        let (_c, backend, repo) = repo_with_days(&[0, 1, 2, 3]).await;
        let dry = run(&repo, &opts(last(2), true)).await.unwrap();
        assert_eq!(dry.remove.len(), 2);
        assert!(dry.removed.is_empty());
        assert_eq!(backend.list("snapshots/").await.unwrap().len(), 4);
        assert!(backend.list("locks/").await.unwrap().is_empty());

        let done = run(&repo, &opts(last(2), false)).await.unwrap();
        let want: Vec<Id> = dry.remove.iter().map(|(id, _)| *id).collect();
        assert_eq!(done.removed, want);
        assert_eq!(backend.list("snapshots/").await.unwrap().len(), 2);
        assert_eq!(repo.snapshots().unwrap().len(), 2);
        for id in &want {
            assert!(repo.find_snapshot(&id.to_hex(), None, &[]).is_err());
        }
        // The oldest two went; the lease was released.
        assert!(
            repo.snapshots()
                .unwrap()
                .iter()
                .all(|(_, s)| s.time.secs >= T0 + 2 * DAY)
        );
        assert!(backend.list("locks/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn refuses_empty_selections_and_conflicting_leases() {
        let (_c, backend, repo) = repo_with_days(&[0, 1]).await;
        let empty = Selection::Policy {
            policy: Policy::default(),
            group_by: GroupBy::default(),
        };
        let e = run(&repo, &opts(empty, false)).await.unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidInput);
        let e = run(&repo, &opts(Selection::AllMatching, false))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidInput);
        let e = run(&repo, &opts(Selection::Ids(vec![]), false))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidInput);

        let last_one = opts(last(1), false);
        let e = repo
            .with_lease(
                LeaseMode::Write,
                "backup",
                std::time::Duration::ZERO,
                |_| run(&repo, &last_one),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Locked);
        assert_eq!(backend.list("snapshots/").await.unwrap().len(), 2);
        assert_eq!(backend.list("locks/").await.unwrap().len(), 0);
        let done = run(&repo, &opts(last(1), false)).await.unwrap();
        assert_eq!(done.removed.len(), 1);
    }
}
