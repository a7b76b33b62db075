//! Verification (DESIGN.md §5): does every snapshot still restore?
//!
//! `check` rebuilds the catalog's index from the repository's index objects (it trusts no
//! cache), then checks, in order: key files; index objects; that every indexed pack exists with
//! its indexed size; each pack's header against the index (a ranged read of the header), or,
//! for the packs chosen by `--read-data*`, the whole pack (its name, its header and every blob:
//! decrypt, decompress, keyed hash); and finally every snapshot, walking its trees and looking
//! up every blob it needs. What it finds is split into errors (a snapshot needs something
//! missing or corrupt; the report names the snapshot and the paths) and warnings (wasted space:
//! unreferenced packs and blobs, extra copies), so a nightly check can page someone only when
//! data is at risk.
//!
//! Full reads are remembered in the catalog (`verified`), and `--read-data-subset P%` reads the
//! packs verified longest ago first, so repeated subset checks cover the whole repository in
//! turn.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::Timestamp;
use crate::format::keyfile::KeyFile;
use crate::format::pack::{MAX_DELTA_CHAIN, PackEntry, decode_pack, verify_blob};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Extent, NodeKind};
use crate::id::Id;
use crate::ops::progress::Progress;
use crate::ops::walk::{Step, TreeWalk};
use crate::repo::lease::LeaseMode;
use crate::repo::{Repository, keys};

/// Which packs to read in full.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    /// Only headers (structure).
    None,
    All,
    /// Subset `n` of `m` (1-based): the packs whose id, as a number, is `n - 1` modulo `m`.
    Subset {
        n: u32,
        m: u32,
    },
    /// This percentage of the packs, those verified longest ago (or never) first.
    Percent(f64),
}

impl ReadData {
    /// Parse `--read-data-subset`: `N/M` or `P%`.
    pub fn parse_subset(s: &str) -> Result<ReadData> {
        let bad = || {
            Error::invalid(format!(
                "--read-data-subset {s:?}: use N/M (e.g. 2/7) or a percentage (e.g. 10%)"
            ))
        };
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(ReadData::Percent(p));
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let m: u32 = m.trim().parse().map_err(|_| bad())?;
        if m == 0 || n == 0 || n > m {
            return Err(bad());
        }
        Ok(ReadData::Subset { n, m })
    }
}

#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub read_data: ReadData,
    pub progress: Option<Arc<Progress>>,
    /// How long to wait for a prune's lease (check reads under a shared one).
    pub lease_wait: std::time::Duration,
}

/// Something wrong with one object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub object: String,
    pub message: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DamagedPath {
    /// Path inside the snapshot (`/` = the snapshot itself).
    pub path: String,
    pub reason: String,
}

/// A snapshot that cannot be restored in full.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DamagedSnapshot {
    pub id: String,
    /// `None` when the snapshot object itself is unreadable.
    pub time: Option<Timestamp>,
    pub paths: Vec<DamagedPath>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckStats {
    pub snapshots: u64,
    pub index_objects: u64,
    pub packs: u64,
    pub pack_bytes: u64,
    pub packs_read: u64,
    /// The packs read in full, by name.
    pub read_packs: Vec<String>,
    pub bytes_read: u64,
    pub blobs_verified: u64,
    pub trees: u64,
    pub blobs_referenced: u64,
    pub unreferenced_blobs: u64,
    pub unreferenced_bytes: u64,
    pub condemned_packs: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    /// Damage: something a snapshot needs is missing or corrupt, or repository metadata is.
    pub errors: Vec<Problem>,
    /// Which snapshots and paths the errors affect.
    pub damaged_snapshots: Vec<DamagedSnapshot>,
    /// Wasted space or harmless leftovers.
    pub warnings: Vec<Problem>,
    pub stats: CheckStats,
}

impl CheckReport {
    /// No errors: every snapshot restores.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.damaged_snapshots.is_empty()
    }
}

/// A problem with a pack, an error or a warning depending on whether a snapshot needs one of
/// the blobs it concerns.
struct PackProblem {
    problem: Problem,
    blobs: Vec<Id>,
}

#[derive(Default)]
struct PackOutcome {
    problems: Vec<PackProblem>,
    /// Locations (blob in this pack) that cannot be read, with why.
    bad: Vec<(Id, String)>,
    bytes_read: u64,
    blobs_verified: u64,
    verified_clean: bool,
}

/// Check the repository under a shared lease, so that no prune deletes what it reads.
pub async fn check(repo: &Arc<Repository>, opts: &CheckOptions) -> Result<CheckReport> {
    repo.with_lease(LeaseMode::Read, "check", opts.lease_wait, |_| {
        check_leased(repo, opts)
    })
    .await
}

/// [`check`] for a caller that already holds a lease (repair).
pub(crate) async fn check_leased(
    repo: &Arc<Repository>,
    opts: &CheckOptions,
) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    check_keys(repo, &mut report).await?;
    for n in repo.lease_notices().await? {
        report.warnings.push(Problem {
            object: n.key,
            message: n.reason,
        });
    }

    // The index, from the repository alone.
    let mut objects = Vec::new();
    for (id, r) in repo.load_index_objects().await? {
        match r {
            Ok(idx) => objects.push((id, idx)),
            Err(e) => report.errors.push(Problem {
                object: keys::index(&id),
                message: format!(
                    "{e}; the blobs it lists are missing from the index (run `cairn repair index`)"
                ),
            }),
        }
    }
    report.stats.index_objects = objects.len() as u64;
    repo.install_index(&objects)?;
    drop(objects);
    repo.refresh().await?;
    report.stats.condemned_packs = repo.catalog().condemned_packs()?.len() as u64;

    // Everything in the repository, listed once: the packs, and what is not cairn's.
    let listing = repo.backend().list("").await?;
    report
        .warnings
        .extend(unexpected_objects(&listing, repo.backend().hidden().await?));
    // Packs: present, with the indexed size?
    let stored: HashMap<Id, u64> = listing
        .iter()
        .filter_map(|e| keys::pack_id_of(&e.key).map(|id| (id, e.size)))
        .collect();
    drop(listing);
    let indexed = repo.catalog().packs()?;
    report.stats.packs = indexed.len() as u64;
    report.stats.pack_bytes = indexed.iter().map(|p| p.2).sum();
    let indexed_ids: HashSet<Id> = indexed.iter().map(|p| p.0).collect();
    let mut pack_problems: Vec<PackProblem> = Vec::new();
    let mut bad: HashMap<Id, Vec<(Id, String)>> = HashMap::new();
    let mut present: Vec<(Id, u64)> = Vec::new();
    for (id, _, size) in &indexed {
        let reason = match stored.get(id) {
            None => Some("missing".to_string()),
            Some(s) if s != size => Some(format!("{s} bytes, but the index says {size}")),
            Some(_) => None,
        };
        match reason {
            Some(r) => {
                let blobs: Vec<Id> = repo
                    .catalog()
                    .pack_entries(id)?
                    .iter()
                    .map(|e| e.id)
                    .collect();
                for b in &blobs {
                    bad.entry(*b)
                        .or_default()
                        .push((*id, format!("blob {b}: its pack {id} is {r}")));
                }
                pack_problems.push(PackProblem {
                    problem: Problem {
                        object: keys::pack(id),
                        message: format!("pack {r} ({} blobs)", blobs.len()),
                    },
                    blobs,
                });
            }
            None => present.push((*id, *size)),
        }
    }
    let mut unindexed: Vec<(&Id, &u64)> = stored
        .iter()
        .filter(|(id, _)| !indexed_ids.contains(id))
        .collect();
    unindexed.sort();
    if !unindexed.is_empty() {
        let bytes: u64 = unindexed.iter().map(|(_, s)| **s).sum();
        report.warnings.push(Problem {
            object: "data/".into(),
            message: format!(
                "{} packs ({bytes} bytes) are not in the index (left by an interrupted backup, \
                 or by a damaged index: `cairn repair index` recovers them, `cairn prune` \
                 deletes them): {}",
                unindexed.len(),
                list_some(unindexed.iter().map(|(id, _)| keys::pack(id)))
            ),
        });
    }

    // Headers, or whole packs.
    let to_read = choose_packs(repo, &present, opts.read_data)?;
    let now = repo.now().secs;
    let conns = repo.connections().max(2);
    let progress = opts.progress.clone();
    if let Some(p) = &progress {
        let total: u64 = present
            .iter()
            .filter(|(id, _)| to_read.contains(id))
            .map(|p| p.1)
            .sum();
        p.add_total(to_read.len() as u64, total);
    }
    let outcomes: Vec<(Id, PackOutcome)> = futures::stream::iter(present.iter().copied())
        .map(|(id, size)| {
            let full = to_read.contains(&id);
            let progress = progress.clone();
            async move {
                let out = if full {
                    read_pack(repo, &id, size).await?
                } else {
                    check_header(repo, &id, size).await?
                };
                if let Some(p) = &progress
                    && full
                {
                    p.add(1, size);
                }
                Ok::<_, Error>((id, out))
            }
        })
        .buffer_unordered(if to_read.is_empty() {
            conns * 4
        } else {
            conns * 2
        })
        .try_collect()
        .await?;
    for (id, out) in outcomes {
        report.stats.bytes_read += out.bytes_read;
        report.stats.blobs_verified += out.blobs_verified;
        if to_read.contains(&id) {
            report.stats.packs_read += 1;
            report.stats.read_packs.push(id.to_hex());
        }
        if out.verified_clean {
            repo.catalog().set_verified(&id, now)?;
        }
        pack_problems.extend(out.problems);
        for (blob, why) in out.bad {
            bad.entry(blob).or_default().push((id, why));
        }
    }

    // Snapshots.
    repo.catalog().mark_clear()?;
    let snap_ids: Vec<Id> = repo.list_ids(keys::SNAPSHOTS).await?.into_iter().collect();
    let mut snaps: Vec<(Id, Snapshot)> = Vec::new();
    for id in snap_ids {
        let key = keys::snapshot(&id);
        let r = match repo.get_verified(&key).await {
            Ok(data) => Snapshot::decode(repo.keys().sealer(), &data, &key),
            Err(e) => Err(e),
        };
        match r {
            Ok(s) => snaps.push((id, s)),
            Err(e)
                if matches!(
                    e.kind(),
                    crate::error::ErrorKind::Corrupt | crate::error::ErrorKind::UnsupportedVersion
                ) =>
            {
                report.errors.push(Problem {
                    object: key,
                    message: e.to_string(),
                });
                report.damaged_snapshots.push(DamagedSnapshot {
                    id: id.to_hex(),
                    time: None,
                    paths: vec![DamagedPath {
                        path: "/".into(),
                        reason: format!("the snapshot object is unreadable: {e}"),
                    }],
                });
            }
            Err(e) => return Err(e),
        }
    }
    snaps.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    report.stats.snapshots = snaps.len() as u64;
    let indexed_blobs = repo.catalog().blob_ids_sorted()?;
    let delta_bases = repo.catalog().delta_bases()?;
    let mut walker = Walker {
        repo,
        indexed: &indexed_blobs,
        delta_bases: &delta_bases,
        bad: &bad,
        memo: HashMap::new(),
        pending_marks: Vec::new(),
        trees: 0,
    };
    for (id, snap) in &snaps {
        walker.mark(snap.tree)?;
        let damage = walker.tree(snap.tree).await?;
        if !damage.is_empty() {
            report.damaged_snapshots.push(DamagedSnapshot {
                id: id.to_hex(),
                time: Some(snap.time),
                paths: damage
                    .iter()
                    .map(|d| DamagedPath {
                        path: format!("/{}", d.path),
                        reason: d.reason.clone(),
                    })
                    .collect(),
            });
        }
    }
    walker.flush_marks()?;
    repo.catalog().mark_bases()?;
    report.stats.trees = walker.trees;
    drop(walker);

    // Classify pack problems by whether a snapshot needs what they concern.
    let cat = repo.catalog();
    for pp in pack_problems {
        let mut needed = false;
        for b in &pp.blobs {
            if cat.is_marked(b)? {
                needed = true;
                break;
            }
        }
        if needed {
            report.errors.push(pp.problem);
        } else {
            let mut p = pp.problem;
            p.message.push_str(" (no snapshot needs what it concerns)");
            report.warnings.push(p);
        }
    }
    let (unref, unref_bytes) = cat.unmarked_totals()?;
    report.stats.unreferenced_blobs = unref;
    report.stats.unreferenced_bytes = unref_bytes;
    report.stats.blobs_referenced = cat.blob_totals()?.0.saturating_sub(unref);
    if unref > 0 {
        report.warnings.push(Problem {
            object: "index/".into(),
            message: format!(
                "{unref} blobs ({unref_bytes} bytes stored) are not used by any snapshot \
                 (`cairn prune` removes them)"
            ),
        });
    }
    let (dups, dup_bytes) = cat.duplicate_totals()?;
    if dups > 0 {
        report.warnings.push(Problem {
            object: "index/".into(),
            message: format!(
                "{dups} blobs are stored more than once ({dup_bytes} bytes of extra copies)"
            ),
        });
    }
    Ok(report)
}

/// A warning for each listed key that is not an object of the layout (format-spec/layout.md)
/// and for each entry the backend hides from listings (`hidden`: temporary files of
/// interrupted writes on local disk). Readers ignore all of them; they only take space, and
/// may be a sign that something else writes into the repository.
fn unexpected_objects(
    listing: &[crate::backend::Entry],
    hidden: Vec<(String, String)>,
) -> Vec<Problem> {
    let mut out: Vec<Problem> = listing
        .iter()
        .filter(|e| !keys::is_layout_key(&e.key))
        .map(|e| Problem {
            object: e.key.clone(),
            message: format!(
                "not an object of the repository: {}; cairn ignores it",
                why_unexpected(&e.key)
            ),
        })
        .collect();
    out.extend(hidden.into_iter().map(|(key, what)| Problem {
        object: key,
        message: format!("not an object of the repository: {what}"),
    }));
    out.sort_by(|a, b| a.object.cmp(&b.object));
    out
}

/// Why [`keys::is_layout_key`] rejects `key`, in words.
fn why_unexpected(key: &str) -> String {
    if let Some(rest) = key.strip_prefix(keys::DATA) {
        return match keys::id_of(key) {
            Some(id) => format!(
                "a pack name in the wrong place (pack {} belongs at {})",
                id.short(),
                keys::pack(&id)
            ),
            None if rest.contains('/') => "its name is not a pack id".into(),
            None => "packs are stored at data/<xx>/<id>".into(),
        };
    }
    let dirs = [
        keys::KEYS,
        keys::SNAPSHOTS,
        keys::INDEX,
        keys::LOCKS,
        keys::CONDEMNED,
    ];
    match dirs.iter().find(|d| key.starts_with(**d)) {
        Some(d) => format!("its name is not an id (objects under {d} are named by their id)"),
        None => "no such key in the repository layout".into(),
    }
}

fn list_some(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.len() <= 5 {
        v.join(", ")
    } else {
        format!("{}, ... ({} more)", v[..5].join(", "), v.len() - 5)
    }
}

async fn check_keys(repo: &Repository, report: &mut CheckReport) -> Result<()> {
    for e in repo.backend().list(keys::KEYS).await? {
        if keys::id_of(&e.key).is_none() {
            continue;
        }
        match repo.get_verified(&e.key).await {
            Ok(data) => {
                if let Err(err) = KeyFile::decode(&data, &e.key) {
                    report.warnings.push(Problem {
                        object: e.key.clone(),
                        message: format!("{err} (another key opened the repository)"),
                    });
                }
            }
            Err(err) if err.kind() == crate::error::ErrorKind::Corrupt => {
                report.warnings.push(Problem {
                    object: e.key.clone(),
                    message: format!("{err} (another key opened the repository)"),
                });
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

fn choose_packs(repo: &Repository, present: &[(Id, u64)], rd: ReadData) -> Result<HashSet<Id>> {
    Ok(match rd {
        ReadData::None => HashSet::new(),
        ReadData::All => present.iter().map(|p| p.0).collect(),
        ReadData::Subset { n, m } => present
            .iter()
            .filter(|(id, _)| u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]) % m == n - 1)
            .map(|p| p.0)
            .collect(),
        ReadData::Percent(p) => {
            let verified = repo.catalog().verified_times()?;
            let mut v: Vec<(i64, Id)> = present
                .iter()
                .map(|(id, _)| (verified.get(id).copied().unwrap_or(i64::MIN), *id))
                .collect();
            v.sort();
            let n = ((present.len() as f64) * p / 100.0).ceil() as usize;
            v.into_iter().take(n).map(|(_, id)| id).collect()
        }
    })
}

/// Compare a pack's header with what the index says of it.
fn compare_header(
    id: &Id,
    header: &[PackEntry],
    indexed: &[PackEntry],
    out: &mut PackOutcome,
) -> HashSet<Id> {
    let in_header: HashSet<PackEntry> = header.iter().copied().collect();
    let mut wrong = HashSet::new();
    for e in indexed {
        if !in_header.contains(e) {
            wrong.insert(e.id);
            out.bad.push((
                e.id,
                format!(
                    "blob {}: the index places it in pack {id} where the pack header does not",
                    e.id
                ),
            ));
        }
    }
    if !wrong.is_empty() {
        out.problems.push(PackProblem {
            problem: Problem {
                object: keys::pack(id),
                message: format!(
                    "{} index entries disagree with the pack header (run `cairn repair index`)",
                    wrong.len()
                ),
            },
            blobs: wrong.iter().copied().collect(),
        });
    }
    wrong
}

async fn check_header(repo: &Repository, id: &Id, size: u64) -> Result<PackOutcome> {
    let mut out = PackOutcome::default();
    let indexed = repo.catalog().pack_entries(id)?;
    match repo.read_pack_header(id, size).await {
        Ok(h) => {
            compare_header(id, &h.entries, &indexed, &mut out);
        }
        Err(e) if e.kind() == crate::error::ErrorKind::Corrupt => {
            // The blobs may still be fine (a full read tells); the header is what repair
            // needs, so this is reported either way.
            out.problems.push(PackProblem {
                problem: Problem {
                    object: keys::pack(id),
                    message: format!("{e} (`cairn check --read-data` tells which blobs survive)"),
                },
                blobs: indexed.iter().map(|e| e.id).collect(),
            });
        }
        Err(e) => return Err(e),
    }
    Ok(out)
}

async fn read_pack(repo: &Repository, id: &Id, size: u64) -> Result<PackOutcome> {
    let mut out = PackOutcome::default();
    let key = keys::pack(id);
    let data = repo.backend().get(&key).await?;
    out.bytes_read = data.len() as u64;
    let indexed = repo.catalog().pack_entries(id)?;
    // A delta blob is verified by opening it against its base, read (and verified) first.
    let mut bases: HashMap<Id, std::result::Result<Vec<u8>, String>> = HashMap::new();
    for e in &indexed {
        if let Some(b) = e.base
            && !bases.contains_key(&b)
        {
            let r = repo.read_base(&b, &e.id).await;
            if let Err(err) = &r
                && !matches!(
                    err.kind(),
                    crate::error::ErrorKind::Corrupt | crate::error::ErrorKind::NotFound
                )
            {
                return Err(r.unwrap_err());
            }
            bases.insert(
                b,
                r.map_err(|err| format!("its base cannot be read: {err}")),
            );
        }
    }
    let keys = repo.keys().clone();
    let id = *id;
    tokio::task::spawn_blocking(move || {
        let mut problems = 0;
        if Id::of_bytes(&data) != id || data.len() as u64 != size {
            problems += 1;
            out.problems.push(PackProblem {
                problem: Problem {
                    object: key.clone(),
                    message: "contents do not match the pack's name (bytes changed)".into(),
                },
                blobs: Vec::new(),
            });
        }
        match decode_pack(keys.sealer(), &data, &key) {
            Ok(h) => {
                if !compare_header(&id, &h.entries, &indexed, &mut out).is_empty() {
                    problems += 1;
                }
            }
            Err(e) => {
                problems += 1;
                out.problems.push(PackProblem {
                    problem: Problem {
                        object: key.clone(),
                        message: format!("{e} (its blobs are checked one by one below)"),
                    },
                    blobs: Vec::new(),
                });
            }
        }
        let verified = AtomicU64::new(0);
        let bad: Vec<(Id, String)> = indexed
            .par_iter()
            .filter_map(|e| {
                let start = e.offset as usize;
                let end = start + e.length as usize;
                let r = match (data.get(start..end), e.base.map(|b| &bases[&b])) {
                    (None, _) => Err(Error::corrupt(&key, "blob beyond the end of the pack")),
                    (Some(_), Some(Err(why))) => Err(Error::corrupt(format!("blob {}", e.id), why)),
                    (Some(sealed), base) => verify_blob(
                        &keys,
                        &e.id,
                        sealed,
                        e.raw_len,
                        base.and_then(|b| b.as_ref().ok()).map(|b| b.as_slice()),
                    ),
                };
                verified.fetch_add(1, Ordering::Relaxed);
                r.err().map(|err| (e.id, format!("{err} (in {key})")))
            })
            .collect();
        out.blobs_verified = verified.into_inner();
        if !bad.is_empty() {
            problems += 1;
            out.problems.push(PackProblem {
                problem: Problem {
                    object: key.clone(),
                    message: format!(
                        "{} blobs fail verification: {}",
                        bad.len(),
                        list_some(bad.iter().map(|b| b.0.to_hex()))
                    ),
                },
                blobs: bad.iter().map(|b| b.0).collect(),
            });
            out.bad.extend(bad);
        }
        // A damaged pack is reported but its readable blobs are usable. Damage found in blobs
        // is attributed to them; damage we cannot attribute names every blob of the pack, so
        // it counts as an error if any is needed.
        let bad_ids: Vec<Id> = out.bad.iter().map(|b| b.0).collect();
        if !bad_ids.is_empty() && out.problems.len() == 2 {
            // Only the name mismatch and the failing blobs: the blobs explain the mismatch.
            out.problems[0].blobs = bad_ids;
        }
        let all: Vec<Id> = indexed.iter().map(|e| e.id).collect();
        for p in &mut out.problems {
            if p.blobs.is_empty() {
                p.blobs = all.clone();
            }
        }
        out.verified_clean = problems == 0;
        Ok(out)
    })
    .await
    .map_err(|e| Error::Other(e.to_string()))?
}

#[derive(Clone)]
struct RelDamage {
    path: String,
    reason: String,
}

struct Walker<'a> {
    repo: &'a Repository,
    /// Every indexed blob id, sorted.
    indexed: &'a [Id],
    /// The base of every delta blob.
    delta_bases: &'a HashMap<Id, Id>,
    /// Blob locations known to be unreadable.
    bad: &'a HashMap<Id, Vec<(Id, String)>>,
    memo: HashMap<Id, Arc<Vec<RelDamage>>>,
    pending_marks: Vec<Id>,
    trees: u64,
}

impl Walker<'_> {
    fn mark(&mut self, id: Id) -> Result<()> {
        self.pending_marks.push(id);
        if self.pending_marks.len() >= 8192 {
            self.flush_marks()?;
        }
        Ok(())
    }

    fn flush_marks(&mut self) -> Result<()> {
        if !self.pending_marks.is_empty() {
            self.repo.catalog().mark(&self.pending_marks)?;
            self.pending_marks.clear();
        }
        Ok(())
    }

    /// Why a blob cannot be read, if it cannot: its own problem, or one of its bases'.
    fn blob_problem(&self, id: &Id) -> Result<Option<String>> {
        if let Some(p) = self.own_blob_problem(id)? {
            return Ok(Some(p));
        }
        let mut next = id;
        for _ in 0..MAX_DELTA_CHAIN {
            let Some(base) = self.delta_bases.get(next) else {
                return Ok(None);
            };
            if let Some(p) = self.own_blob_problem(base)? {
                return Ok(Some(format!("blob {id} is a delta against {base}: {p}")));
            }
            next = base;
        }
        Ok(match self.delta_bases.contains_key(next) {
            true => Some(format!(
                "blob {id} opens only through more than {MAX_DELTA_CHAIN} delta blobs"
            )),
            false => None,
        })
    }

    fn own_blob_problem(&self, id: &Id) -> Result<Option<String>> {
        let Some(bad) = self.bad.get(id) else {
            return Ok(match self.indexed.binary_search(id) {
                Ok(_) => None,
                Err(_) => Some(format!("blob {id} is not in the index")),
            });
        };
        let locations = self.repo.catalog().locations(id)?;
        if locations
            .iter()
            .any(|l| !bad.iter().any(|(pack, _)| *pack == l.pack))
        {
            return Ok(None);
        }
        Ok(Some(bad.first().map(|b| b.1.clone()).unwrap_or_default()))
    }

    /// Damage below a tree, with paths relative to it; computed once per tree.
    async fn tree(&mut self, root: Id) -> Result<Arc<Vec<RelDamage>>> {
        if let Some(d) = self.memo.get(&root) {
            return Ok(d.clone());
        }
        // Damage of each tree being walked, in its own entries, until its subtrees are done.
        let mut own: HashMap<Id, Vec<RelDamage>> = HashMap::new();
        let mut walk = TreeWalk::new(root);
        loop {
            let memo = &self.memo;
            let step = walk
                .step(self.repo, |_, n| {
                    n.subtree.is_some_and(|t| memo.contains_key(&t))
                })
                .await;
            match step {
                None => break,
                Some(Step::Enter(e)) => {
                    let id = e.id;
                    let mut out = Vec::new();
                    let readable = match (self.blob_problem(&id)?, e.tree) {
                        (Some(reason), _) => {
                            out.push(RelDamage {
                                path: String::new(),
                                reason: format!("directory listing: {reason}"),
                            });
                            false
                        }
                        (None, Err(err))
                            if matches!(
                                err.kind(),
                                crate::error::ErrorKind::Corrupt
                                    | crate::error::ErrorKind::NotFound
                            ) =>
                        {
                            out.push(RelDamage {
                                path: String::new(),
                                reason: format!("directory listing (tree {id}): {err}"),
                            });
                            false
                        }
                        (None, Err(err)) => return Err(err),
                        (None, Ok(tree)) => {
                            self.trees += 1;
                            for n in &tree.nodes {
                                if n.kind == NodeKind::File {
                                    let mut reported = false;
                                    for e in &n.content {
                                        if let Extent::Data { id: b, .. } = e {
                                            self.mark(*b)?;
                                            if !reported
                                                && let Some(reason) = self.blob_problem(b)?
                                            {
                                                out.push(RelDamage {
                                                    path: n.name_lossy(),
                                                    reason,
                                                });
                                                reported = true;
                                            }
                                        }
                                    }
                                }
                                if let Some(sub) = n.subtree {
                                    self.mark(sub)?;
                                }
                            }
                            true
                        }
                    };
                    own.insert(id, out);
                    if !readable {
                        walk.skip_children();
                    }
                }
                Some(Step::Leave(l)) => {
                    let mut out = own.remove(&l.id).unwrap_or_default();
                    for n in l.tree.iter().flat_map(|t| &t.nodes) {
                        let Some(below) = n.subtree.and_then(|t| self.memo.get(&t)) else {
                            continue;
                        };
                        let name = n.name_lossy();
                        for d in below.iter() {
                            out.push(RelDamage {
                                path: if d.path.is_empty() {
                                    name.clone()
                                } else {
                                    format!("{name}/{}", d.path)
                                },
                                reason: d.reason.clone(),
                            });
                        }
                    }
                    self.memo.insert(l.id, Arc::new(out));
                }
            }
        }
        Ok(self.memo.get(&root).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_parsing() {
        assert_eq!(
            ReadData::parse_subset("2/7").unwrap(),
            ReadData::Subset { n: 2, m: 7 }
        );
        assert_eq!(
            ReadData::parse_subset("12.5%").unwrap(),
            ReadData::Percent(12.5)
        );
        for bad in ["0/3", "4/3", "1/0", "x/2", "0%", "101%", "", "5"] {
            assert!(ReadData::parse_subset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layout_keys() {
        let id = Id::of_bytes(b"x");
        let h = id.to_hex();
        for ok in [
            "config".to_string(),
            keys::pack(&id),
            keys::snapshot(&id),
            keys::index(&id),
            keys::key(&id),
            keys::lock(&id),
            keys::condemned(&id),
        ] {
            assert!(keys::is_layout_key(&ok), "{ok}");
        }
        let wrong_dir = if h.starts_with("00") { "01" } else { "00" };
        for bad in [
            format!("data/{wrong_dir}/{h}"),
            format!("data/{h}"),
            format!("data/{}/{h}/x", &h[..2]),
            format!("index/{}", h.to_uppercase()),
            format!("index/{h}.bak"),
            format!("snapshots/{}", &h[..63]),
            format!("snapshots/x/{h}"),
            format!("other/{h}"),
            "config.old".into(),
            "keys/".into(),
            "".into(),
        ] {
            assert!(!keys::is_layout_key(&bad), "{bad}");
            assert!(!why_unexpected(&bad).is_empty());
        }
        assert!(why_unexpected(&format!("data/{wrong_dir}/{h}")).contains(&keys::pack(&id)));
    }
}
