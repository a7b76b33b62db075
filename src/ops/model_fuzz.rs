//! The model-based fuzz target (`fuzz/fuzz_targets/model.rs`, `tests/fuzz_seeds.rs`): random
//! short sequences of backup, forget, prune and check against an in-memory repository, with
//! faults injected by [`FaultBackend`], compared after every step with a plain model of what the
//! repository must hold.
//!
//! The input is decoded by a small hand-rolled reader ([`Scenario::decode`]), not the
//! `arbitrary` crate: every byte string is a valid scenario, and [`Scenario::encode`] is its
//! exact inverse, so the seeds in `fuzz/corpus/model/` are written from readable scenarios and
//! stay meaningful for as long as this format does (arbitrary's encoding has no inverse and may
//! change between its versions).
//!
//! Each operation runs like one run of the command line: a fresh repository handle over a
//! [`FaultBackend`] (armed by a preceding `Fault` step; operations are numbered from the open),
//! a catalog that persists in a cache directory between runs, and a fake clock moved past the
//! lease lifetime first, so a crashed run's lease is stale. The model: every snapshot a backup
//! committed, with the files it was given, and the set of those that must still exist.
//!
//! After every operation, a healthy view of the same storage (a fresh cache, no faults) checks:
//! 1. nothing panicked (the harness itself panics only on a broken invariant);
//! 2. unless a lying fault (dropped or truncated write) has fired in this run, every snapshot of
//!    the model exists and restores byte for byte, and `check --read-data` finds no error;
//! 3. whenever `check --read-data` finds no error, every listed snapshot restores exactly to
//!    what its backup was given ("check tells the truth"), lying faults or not;
//! 4. after a fault that fired and does not lie, the same operation run again without a fault
//!    succeeds (recovery); and until a lying fault fires, every operation without a fault
//!    succeeds.
//!
//! An operation that failed may still have committed (a backup that crashed after writing its
//! snapshot): a listed snapshot that the model does not know is accepted only after a backup,
//! as that backup's, and must then restore to what it was given. Forget may only remove what
//! its selection names (exactly that, when no fault fired).
//!
//! The harness runs on a current-thread tokio runtime of its own, one per thread, built once:
//! it is a test harness, not part of the library's API (hidden from the docs).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use zeroize::Zeroizing;

use super::backup::BackupOptions;
use super::check::{self, CheckOptions, ReadData};
use super::forget::{Count, GroupBy, Policy};
use super::forget_run::{self, ForgetOptions, Selection};
use super::prune::{self, PruneOptions};
use super::restore::{self, RestoreOptions};
use super::streams::{self, Produced, StreamFile};
use crate::backend::{Backend, Fault, FaultBackend, FaultKind, MemoryBackend};
use crate::chunker::ChunkerParams;
use crate::clock::FakeClock;
use crate::crypto::{Encryption, KdfParams};
use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::id::Id;
use crate::repo::{InitOptions, OpenOptions, Repository, keys, lease};

/// At most this many steps are taken from an input.
pub const MAX_STEPS: usize = 12;
/// The files a backup may hold (a few in subdirectories, so trees nest).
pub const NAMES: [&str; 6] = ["a", "b", "c", "d/e", "d/f", "g/h/i"];
/// The largest file a step writes or appends.
pub const MAX_LEN: u16 = 24 * 1024;
/// Changes in one backup step.
pub const MAX_CHANGES: u8 = 4;
pub const PASSWORD: &[u8] = b"model fuzz password";
/// Small chunks, so files of a few KiB have several and snapshots share some.
pub const CHUNKER: ChunkerParams = ChunkerParams {
    min_size: 512,
    avg_size: 1024,
    max_size: 4096,
    normalization: 1,
    align_lines: false,
};
/// The smallest pack size a config allows, so prune has packs to repack.
pub const PACK_SIZE: u32 = 64 * 1024;
const KINDS: [FaultKind; 5] = [
    FaultKind::Crash,
    FaultKind::Transient,
    FaultKind::DropWrite,
    FaultKind::TruncateWrite,
    FaultKind::FlipRead,
];
const MAX_UNUSED_PCT: [u8; 4] = [0, 5, 50, 100];

/// A change to the source files before a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Replace (or create) `NAMES[name]` with `len` bytes generated from `seed`.
    Write {
        name: u8,
        seed: u8,
        len: u16,
    },
    /// Append `len` bytes generated from `seed` (creating the file if needed).
    Append {
        name: u8,
        seed: u8,
        len: u16,
    },
    Delete {
        name: u8,
    },
}

/// Which snapshots a forget step removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgetSpec {
    /// The snapshot at this position (modulo their number) in time order, by id; with no
    /// snapshot, `KeepLast(1)`.
    Nth(u8),
    /// `--keep-last n`, n in 1..=4.
    KeepLast(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Apply the changes to the source files, then back them up.
    Backup(Vec<Change>),
    Forget(ForgetSpec),
    /// `max_unused` is `MAX_UNUSED_PCT[max_unused]` percent; grace one hour or none.
    Prune {
        max_unused: u8,
        grace: bool,
    },
    Check {
        read_data: bool,
    },
    /// Arm a fault for the next backup, forget, prune or check (operations counted from the
    /// open of the repository).
    Fault {
        at: u8,
        kind: FaultKind,
    },
    /// Move the clock on by `tens_of_minutes` × 10 minutes (besides the lease lifetime every
    /// operation moves it on by).
    Wait {
        tens_of_minutes: u8,
    },
    /// Lose the local catalog (a new machine, a wiped cache).
    DropCache,
}

/// A decoded fuzz input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scenario {
    pub unencrypted: bool,
    pub steps: Vec<Step>,
}

/// Reads bytes; past the end, zeros.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
}

impl Scenario {
    /// Byte 0: flags (bit 0: an unencrypted repository). Then steps, each a tag byte (modulo
    /// 7: backup, forget, prune, check, fault, wait, drop-cache) and its fields, until the
    /// input or [`MAX_STEPS`] runs out. Every input decodes.
    pub fn decode(data: &[u8]) -> Scenario {
        let mut r = Reader { data, pos: 0 };
        let unencrypted = r.u8() & 1 == 1;
        let mut steps = Vec::new();
        while !r.done() && steps.len() < MAX_STEPS {
            let step = match r.u8() % 7 {
                0 => {
                    let n = r.u8() % (MAX_CHANGES + 1);
                    let changes = (0..n)
                        .map(|_| {
                            let kind = r.u8() % 3;
                            let name = r.u8() % NAMES.len() as u8;
                            if kind == 2 {
                                return Change::Delete { name };
                            }
                            let seed = r.u8();
                            let len = r.u16() % (MAX_LEN + 1);
                            if kind == 0 {
                                Change::Write { name, seed, len }
                            } else {
                                Change::Append { name, seed, len }
                            }
                        })
                        .collect();
                    Step::Backup(changes)
                }
                1 => {
                    let b = r.u8();
                    Step::Forget(if b & 0x80 != 0 {
                        ForgetSpec::KeepLast(1 + (b & 3))
                    } else {
                        ForgetSpec::Nth(b)
                    })
                }
                2 => {
                    let b = r.u8();
                    Step::Prune {
                        max_unused: b & 3,
                        grace: b & 4 != 0,
                    }
                }
                3 => Step::Check {
                    read_data: r.u8() & 1 == 1,
                },
                4 => {
                    let kind = KINDS[(r.u8() % 5) as usize];
                    Step::Fault { at: r.u8(), kind }
                }
                5 => Step::Wait {
                    tens_of_minutes: r.u8(),
                },
                _ => Step::DropCache,
            };
            steps.push(step);
        }
        Scenario { unencrypted, steps }
    }

    /// The input that [`Scenario::decode`]s to this scenario (for fields in their ranges).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.unencrypted)];
        for s in &self.steps {
            match s {
                Step::Backup(changes) => {
                    out.extend([0, changes.len() as u8]);
                    for c in changes {
                        match *c {
                            Change::Write { name, seed, len } => {
                                out.extend([0, name, seed]);
                                out.extend(len.to_le_bytes());
                            }
                            Change::Append { name, seed, len } => {
                                out.extend([1, name, seed]);
                                out.extend(len.to_le_bytes());
                            }
                            Change::Delete { name } => out.extend([2, name]),
                        }
                    }
                }
                Step::Forget(ForgetSpec::Nth(n)) => out.extend([1, n & 0x7f]),
                Step::Forget(ForgetSpec::KeepLast(n)) => out.extend([1, 0x80 | (n - 1)]),
                Step::Prune { max_unused, grace } => {
                    out.extend([2, max_unused | if *grace { 4 } else { 0 }])
                }
                Step::Check { read_data } => out.extend([3, u8::from(*read_data)]),
                Step::Fault { at, kind } => {
                    let k = KINDS.iter().position(|x| x == kind).unwrap_or(0) as u8;
                    out.extend([4, k, *at]);
                }
                Step::Wait { tens_of_minutes } => out.extend([5, *tens_of_minutes]),
                Step::DropCache => out.push(6),
            }
        }
        out
    }
}

/// One operation of a run, as it went (for tests and for choosing where seeds put faults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub step: usize,
    pub op: &'static str,
    pub fault: Option<Fault>,
    /// Whether the fault was injected.
    pub fired: bool,
    /// Backend operations the run made, the open included.
    pub backend_ops: u64,
    pub ok: bool,
    /// A run again without a fault, after a fault that fired and does not lie.
    pub rerun: bool,
}

/// The fuzz target: decode `data` into a scenario and run it; panics on a broken invariant.
pub fn model(data: &[u8]) {
    let _ = model_report(data);
}

/// [`model`], returning what ran.
pub fn model_report(data: &[u8]) -> Vec<Ran> {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
    }
    let scenario = Scenario::decode(data);
    RT.with(|rt| rt.block_on(run(&scenario)))
}

/// Run a scenario (on the caller's runtime).
pub async fn run(scenario: &Scenario) -> Vec<Ran> {
    let mut h = Harness::new(scenario.unencrypted).await;
    for (i, step) in scenario.steps.iter().enumerate() {
        h.context = format!("step {i} {step:?} of {scenario:?}");
        h.step_no = i;
        h.step(step).await;
    }
    h.ran
}

/// Relative path (with `/`) -> contents.
type Files = BTreeMap<String, Vec<u8>>;

/// A directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "cairn-model-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("a scratch directory");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `len` bytes from `seed` (xorshift): files with the same seed share a prefix, so they dedup.
pub fn bytes(seed: u8, len: usize) -> Vec<u8> {
    let mut x = (u64::from(seed) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn lies(kind: FaultKind) -> bool {
    matches!(kind, FaultKind::DropWrite | FaultKind::TruncateWrite)
}

/// An operation on the repository.
#[derive(Debug, Clone)]
enum Op {
    Backup(Files),
    /// The step, its selection, and the snapshots it must remove (given what is listed).
    Forget(ForgetSpec, Selection, BTreeSet<Id>),
    Prune(PruneOptions),
    Check(ReadData),
}

#[derive(Debug)]
enum Done {
    Backup(Id),
    Forget(Vec<Id>),
    Prune,
    Check(Box<check::CheckReport>),
}

/// What a healthy view of the storage lists.
struct View {
    repo: Arc<Repository>,
    /// Every key under `snapshots/`.
    listed: BTreeSet<Id>,
    /// The readable snapshots, oldest first.
    snaps: Vec<(Id, Snapshot)>,
    _cache: Scratch,
}

struct Harness {
    mem: Arc<MemoryBackend>,
    clock: Arc<FakeClock>,
    /// The catalog cache of the "command line" runs, and restore targets.
    dir: Scratch,
    source: Files,
    /// Every snapshot a backup committed, with what it was given.
    known: HashMap<Id, Files>,
    /// The snapshots that must exist.
    model: BTreeSet<Id>,
    /// What the last healthy view listed.
    listed: BTreeSet<Id>,
    snaps: Vec<(Id, Snapshot)>,
    armed: Option<Fault>,
    /// Whether a lying fault has fired: from then on, data may be lost (but check must say so).
    lied: bool,
    restores: u64,
    context: String,
    step_no: usize,
    ran: Vec<Ran>,
}

impl Harness {
    async fn new(unencrypted: bool) -> Harness {
        let mem = Arc::new(MemoryBackend::new());
        let clock = FakeClock::new(1_800_000_000);
        let dir = Scratch::new();
        let init = InitOptions {
            encryption: if unencrypted {
                Encryption::None
            } else {
                Encryption::Repokey
            },
            kdf: KdfParams::INSECURE_FOR_TESTS,
            chunker_files: CHUNKER,
            chunker_dumps: ChunkerParams::DUMPS,
            pack_size: PACK_SIZE,
        };
        let mut o = OpenOptions::new(dir.0.join("cache"));
        o.clock = clock.clone();
        o.connections = 2;
        let backend: Arc<dyn Backend> = mem.clone();
        Repository::init(backend, PASSWORD, &init, &o)
            .await
            .expect("init of an in-memory repository");
        Harness {
            mem,
            clock,
            dir,
            source: Files::new(),
            known: HashMap::new(),
            model: BTreeSet::new(),
            listed: BTreeSet::new(),
            snaps: Vec::new(),
            armed: None,
            lied: false,
            restores: 0,
            context: String::new(),
            step_no: 0,
            ran: Vec::new(),
        }
    }

    fn open_options(&self, cache: &Path) -> OpenOptions {
        let mut o = OpenOptions::new(cache);
        o.clock = self.clock.clone();
        o.connections = 2;
        o
    }

    async fn open(&self, backend: Arc<dyn Backend>, cache: &Path) -> Result<Arc<Repository>> {
        let r = Repository::open(
            backend,
            || Ok(Zeroizing::new(PASSWORD.to_vec())),
            &self.open_options(cache),
        )
        .await?;
        Ok(Arc::new(r))
    }

    async fn step(&mut self, step: &Step) {
        match step {
            Step::Backup(changes) => {
                for c in changes {
                    self.apply(*c);
                }
                let op = Op::Backup(self.source.clone());
                self.operation(op).await;
            }
            Step::Forget(spec) => {
                let op = self.forget_op(*spec);
                self.operation(op).await;
            }
            Step::Prune { max_unused, grace } => {
                let op = Op::Prune(PruneOptions {
                    max_unused: f64::from(MAX_UNUSED_PCT[(*max_unused & 3) as usize]) / 100.0,
                    grace: if *grace {
                        Duration::from_secs(3600)
                    } else {
                        Duration::ZERO
                    },
                    ..PruneOptions::default()
                });
                self.operation(op).await;
            }
            Step::Check { read_data } => {
                let rd = if *read_data {
                    ReadData::All
                } else {
                    ReadData::None
                };
                self.operation(Op::Check(rd)).await;
            }
            Step::Fault { at, kind } => {
                self.armed = Some(Fault {
                    at: u64::from(*at),
                    kind: *kind,
                });
            }
            Step::Wait { tens_of_minutes } => {
                self.clock.advance(i64::from(*tens_of_minutes) * 600);
            }
            Step::DropCache => {
                let _ = std::fs::remove_dir_all(self.dir.0.join("cache"));
            }
        }
    }

    fn apply(&mut self, c: Change) {
        let name = |n: u8| NAMES[n as usize % NAMES.len()].to_string();
        match c {
            Change::Write { name: n, seed, len } => {
                self.source.insert(name(n), bytes(seed, len as usize));
            }
            Change::Append { name: n, seed, len } => {
                self.source
                    .entry(name(n))
                    .or_default()
                    .extend(bytes(seed, len as usize));
            }
            Change::Delete { name: n } => {
                self.source.remove(&name(n));
            }
        }
    }

    /// The forget selection for `spec` and what it must remove, from the last healthy view.
    fn forget_op(&self, spec: ForgetSpec) -> Op {
        let keep_last = |n: u8| {
            let policy = Policy {
                last: Count::N(u32::from(n)),
                ..Policy::default()
            };
            let keep = self.snaps.len().saturating_sub(n as usize);
            let remove = self.snaps[..keep].iter().map(|(id, _)| *id).collect();
            (
                Selection::Policy {
                    policy,
                    group_by: GroupBy::default(),
                },
                remove,
            )
        };
        let (sel, remove) = match spec {
            ForgetSpec::Nth(_) if self.snaps.is_empty() => keep_last(1),
            ForgetSpec::Nth(n) => {
                let id = self.snaps[n as usize % self.snaps.len()].0;
                (Selection::Ids(vec![id.to_hex()]), BTreeSet::from([id]))
            }
            ForgetSpec::KeepLast(n) => keep_last(n.clamp(1, 4)),
        };
        Op::Forget(spec, sel, remove)
    }

    /// Run one operation (armed with the pending fault), reconcile the model and check the
    /// invariants; after a fault that fired and does not lie, run it again without one.
    async fn operation(&mut self, op: Op) {
        let fault = self.armed.take();
        let (result, fired) = self.attempt(&op, fault, false).await;
        let lying = fired && fault.is_some_and(|f| lies(f.kind));
        self.lied |= lying;
        let ctx = format!(
            "{}: {} under {fault:?} (fired: {fired})",
            self.context,
            op_name(&op)
        );
        if !fired && !self.lied {
            assert!(
                result.is_ok(),
                "{ctx}: an operation without a fault failed: {result:?}"
            );
        }
        self.settle(&op, &result, fired, &ctx).await;
        if fired && !lying {
            // The same operation again (a forget chooses again from what is left).
            let op = match op {
                Op::Forget(spec, ..) => self.forget_op(spec),
                op => op,
            };
            let (again, _) = self.attempt(&op, None, true).await;
            let ctx = format!("{ctx}, then run again without a fault");
            if !self.lied {
                assert!(
                    again.is_ok(),
                    "{ctx}: it fails after a fault that loses nothing: {again:?}"
                );
            }
            self.settle(&op, &again, false, &ctx).await;
        }
    }

    /// One run of `op`, like one command: open (through the fault wrapper), run, drop.
    async fn attempt(
        &mut self,
        op: &Op,
        fault: Option<Fault>,
        rerun: bool,
    ) -> (Result<Done>, bool) {
        // Past the lease lifetime: a crashed run's lease is stale now.
        self.clock.advance(i64::from(lease::TTL_SECS) + 1);
        let fb = Arc::new(FaultBackend::new(self.mem.clone(), fault));
        let result = async {
            let repo = self.open(fb.clone(), &self.dir.0.join("cache")).await?;
            match op {
                Op::Backup(files) => {
                    let opts = BackupOptions {
                        host: Some("model".into()),
                        ..BackupOptions::default()
                    };
                    let files = files.clone();
                    let out = streams::backup_streams(
                        &repo,
                        &opts,
                        "model",
                        vec!["model".into()],
                        repo.file_chunker(),
                        move |w| {
                            let mut produced = Produced::default();
                            for (name, data) in &files {
                                let (content, size) = w.store_bytes(data)?;
                                produced.files.push(StreamFile {
                                    path: name.split('/').map(String::from).collect(),
                                    content,
                                    size,
                                });
                            }
                            Ok(produced)
                        },
                    )
                    .await?;
                    let id = out.snapshot_id.unwrap_or_else(|| {
                        panic!("{}: a backup without a snapshot id", self.context)
                    });
                    Ok(Done::Backup(id))
                }
                Op::Forget(_, sel, _) => {
                    let opts = ForgetOptions {
                        selection: sel.clone(),
                        filter: Default::default(),
                        dry_run: false,
                        lease_wait: Duration::ZERO,
                        tz: jiff::tz::TimeZone::UTC,
                    };
                    let out = forget_run::run(&repo, &opts).await?;
                    Ok(Done::Forget(out.removed))
                }
                Op::Prune(o) => {
                    prune::prune(&repo, o).await?;
                    Ok(Done::Prune)
                }
                Op::Check(rd) => {
                    let r = check::check(
                        &repo,
                        &CheckOptions {
                            read_data: *rd,
                            progress: None,
                            lease_wait: std::time::Duration::ZERO,
                        },
                    )
                    .await?;
                    Ok(Done::Check(Box::new(r)))
                }
            }
        }
        .await;
        self.ran.push(Ran {
            step: self.step_no,
            op: op_name(op),
            fault,
            fired: fb.fired(),
            backend_ops: fb.ops(),
            ok: result.is_ok(),
            rerun,
        });
        (result, fb.fired())
    }

    /// A healthy view: the storage without faults, through a fresh catalog.
    async fn view(&self) -> View {
        let cache = Scratch::new();
        let backend: Arc<dyn Backend> = self.mem.clone();
        let repo = self
            .open(backend, &cache.0)
            .await
            .unwrap_or_else(|e| panic!("{}: the repository does not open: {e}", self.context));
        let listed = repo
            .list_ids(keys::SNAPSHOTS)
            .await
            .unwrap_or_else(|e| panic!("{}: listing snapshots: {e}", self.context))
            .into_iter()
            .collect();
        let snaps = repo
            .snapshots()
            .unwrap_or_else(|e| panic!("{}: snapshots: {e}", self.context));
        View {
            repo,
            listed,
            snaps,
            _cache: cache,
        }
    }

    /// Restore a snapshot into a scratch directory and read it back.
    async fn restore(&mut self, repo: &Arc<Repository>, snap: &Snapshot) -> Result<Files> {
        self.restores += 1;
        let target = self.dir.0.join(format!("restore-{}", self.restores));
        // An observer of the storage: no lease (a crashed run's may still be there).
        let r = restore::restore_leased(repo, snap, "", &target, &RestoreOptions::default()).await;
        let files = read_dir(&target);
        let _ = std::fs::remove_dir_all(&target);
        let out = r?;
        if !out.errors.is_empty() {
            return Err(crate::error::Error::Other(out.errors.join("; ")));
        }
        Ok(files)
    }

    /// Reconcile the model with what the storage now lists, and check the invariants.
    async fn settle(&mut self, op: &Op, result: &Result<Done>, fired: bool, ctx: &str) {
        let view = self.view().await;
        let before = std::mem::take(&mut self.listed);
        let gone: BTreeSet<Id> = before.difference(&view.listed).copied().collect();
        if let (Op::Backup(files), Ok(Done::Backup(id))) = (op, result) {
            self.known.insert(*id, files.clone());
            if view.listed.contains(id) || !self.lied {
                self.model.insert(*id);
            }
        }
        let new: Vec<Id> = view
            .listed
            .iter()
            .filter(|id| !self.known.contains_key(id))
            .copied()
            .collect();
        match (op, result) {
            (Op::Backup(files), r) => {
                // A failed backup may have committed: that snapshot is its.
                assert!(new.len() <= 1, "{ctx}: one backup, snapshots {new:?}");
                for id in &new {
                    assert!(
                        r.is_err(),
                        "{ctx}: snapshot {id} appeared besides the backup's own ({r:?})"
                    );
                    self.known.insert(*id, files.clone());
                    self.model.insert(*id);
                }
            }
            (Op::Forget(_, _, remove), r) => {
                if !self.lied {
                    assert!(
                        gone.is_subset(remove),
                        "{ctx}: forget removed {gone:?}, but only {remove:?} were selected"
                    );
                    if let Ok(Done::Forget(removed)) = r {
                        let removed: BTreeSet<Id> = removed.iter().copied().collect();
                        assert!(
                            removed.is_subset(remove),
                            "{ctx}: forget says it removed {removed:?}; selected {remove:?}"
                        );
                        if !fired {
                            assert_eq!(&removed, remove, "{ctx}: forget removed");
                            assert_eq!(&gone, remove, "{ctx}: forget removed");
                        }
                    }
                }
                for id in &gone {
                    self.model.remove(id);
                }
                assert!(new.is_empty(), "{ctx}: forget made snapshots {new:?}");
            }
            (Op::Prune(_), _) => {
                assert!(new.is_empty(), "{ctx}: prune made snapshots {new:?}");
            }
            (Op::Check(_), r) => {
                assert!(new.is_empty(), "{ctx}: check made snapshots {new:?}");
                if let Ok(Done::Check(report)) = r
                    && !fired
                    && !self.lied
                {
                    assert!(report.ok(), "{ctx}: check finds errors: {report:#?}");
                }
            }
        }
        // What the model holds and what is listed agree, unless storage lied.
        let missing: Vec<Id> = self.model.difference(&view.listed).copied().collect();
        let extra: Vec<Id> = view.listed.difference(&self.model).copied().collect();
        if !self.lied {
            assert!(missing.is_empty(), "{ctx}: snapshots lost: {missing:?}");
            assert!(extra.is_empty(), "{ctx}: snapshots back: {extra:?}");
        }
        for id in missing {
            self.model.remove(&id);
        }
        // A forget whose delete was dropped: the snapshot is still there.
        self.model.extend(extra);

        // Check tells the truth; and without lying faults, it finds nothing wrong. (The view
        // observes the storage; it does not compete for a lease with the crashed run's.)
        let report = check::check_leased(
            &view.repo,
            &CheckOptions {
                read_data: ReadData::All,
                progress: None,
                lease_wait: std::time::Duration::ZERO,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{ctx}: check does not run on healthy storage: {e}"));
        if !self.lied {
            assert!(
                report.ok(),
                "{ctx}: a fault that loses nothing lost data: {report:#?}"
            );
        }
        if report.ok() || !self.lied {
            let readable: BTreeSet<Id> = view.snaps.iter().map(|(id, _)| *id).collect();
            assert_eq!(
                readable, view.listed,
                "{ctx}: check passes, but not every snapshot is readable"
            );
            for (id, snap) in &view.snaps {
                let got = self.restore(&view.repo, snap).await;
                let want = &self.known[id];
                match got {
                    Ok(got) if got == *want => {}
                    Ok(got) => panic!(
                        "{ctx}: snapshot {id} restores to {:?}, not {:?} (check: {report:#?})",
                        summary(&got),
                        summary(want)
                    ),
                    Err(e) => {
                        panic!("{ctx}: snapshot {id} does not restore: {e} (check: {report:#?})")
                    }
                }
            }
        }
        self.listed = view.listed;
        self.snaps = view.snaps;
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Backup(_) => "backup",
        Op::Forget(..) => "forget",
        Op::Prune(_) => "prune",
        Op::Check(_) => "check",
    }
}

/// Names and sizes, for messages.
fn summary(f: &Files) -> Vec<(String, usize)> {
    f.iter().map(|(k, v)| (k.clone(), v.len())).collect()
}

/// Every regular file below `dir`, by relative path.
fn read_dir(dir: &Path) -> Files {
    let mut out = Files::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let (Ok(rel), Ok(data)) = (p.strip_prefix(dir), std::fs::read(&p)) {
                out.insert(rel.to_string_lossy().into_owned(), data);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_is_the_inverse_of_decode() {
        let s = Scenario {
            unencrypted: true,
            steps: vec![
                Step::Backup(vec![
                    Change::Write {
                        name: 3,
                        seed: 9,
                        len: MAX_LEN,
                    },
                    Change::Append {
                        name: 0,
                        seed: 1,
                        len: 7,
                    },
                    Change::Delete { name: 5 },
                ]),
                Step::Forget(ForgetSpec::Nth(3)),
                Step::Forget(ForgetSpec::KeepLast(4)),
                Step::Prune {
                    max_unused: 2,
                    grace: true,
                },
                Step::Check { read_data: true },
                Step::Fault {
                    at: 200,
                    kind: FaultKind::FlipRead,
                },
                Step::Wait { tens_of_minutes: 6 },
                Step::DropCache,
            ],
        };
        assert_eq!(Scenario::decode(&s.encode()), s);
        // Anything decodes, to at most MAX_STEPS steps.
        assert!(Scenario::decode(&[0xff; 100]).steps.len() <= MAX_STEPS);
        assert_eq!(Scenario::decode(&[]), Scenario::default());
    }
}
