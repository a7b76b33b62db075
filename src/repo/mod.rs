//! The repository handle: keys, config, the catalog, and typed access to stored objects.
//!
//! Owns the key space layout (format-spec/layout.md), opening and creating repositories,
//! keeping the catalog in step with the repository, and reading and writing objects by id with
//! verification. Uses `format` for bytes and `backend` for storage; knows nothing of file trees.

pub mod blobcache;
pub mod catalog;
pub mod lease;
pub mod memory;
pub mod packer;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use zeroize::Zeroizing;

use crate::backend::Backend;
use crate::chunker::{Chunker, ChunkerParams};
use crate::clock::{Clock, SystemClock};
use crate::crypto::{Encryption, KdfParams, Keys, MasterKey, random_32};
use crate::error::{Error, ErrorKind, Result};
use crate::format::Timestamp;
use crate::format::condemned::Condemned;
use crate::format::config::Config;
use crate::format::index::IndexObject;
use crate::format::keyfile::KeyFile;
use crate::format::pack::{BlobKind, MAX_DELTA_CHAIN, PackHeader, open_blob};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::id::Id;
use blobcache::BlobCache;
use catalog::{BlobLocation, Catalog};

/// Keys of the key space (format-spec/layout.md).
pub mod keys {
    use crate::id::Id;
    pub const CONFIG: &str = "config";
    pub const KEYS: &str = "keys/";
    pub const SNAPSHOTS: &str = "snapshots/";
    pub const INDEX: &str = "index/";
    pub const DATA: &str = "data/";
    pub const LOCKS: &str = "locks/";
    pub const CONDEMNED: &str = "condemned/";

    pub fn pack(id: &Id) -> String {
        let h = id.to_hex();
        format!("data/{}/{}", &h[..2], h)
    }
    pub fn snapshot(id: &Id) -> String {
        format!("snapshots/{id}")
    }
    pub fn index(id: &Id) -> String {
        format!("index/{id}")
    }
    pub fn key(id: &Id) -> String {
        format!("keys/{id}")
    }
    pub fn condemned(id: &Id) -> String {
        format!("condemned/{id}")
    }
    pub fn lock(id: &Id) -> String {
        format!("locks/{id}")
    }
    /// The id at the end of a key such as `snapshots/<id>` or `data/ab/<id>`: 64 lowercase
    /// hex digits (format-spec/ids.md), since that is the name an object of this id is read
    /// from (an upper-case spelling would parse, and then not be found).
    pub fn id_of(key: &str) -> Option<Id> {
        let name = key.rsplit('/').next()?;
        let id: Id = name.parse().ok()?;
        (id.to_hex() == name).then_some(id)
    }
    /// The id of the pack at `key` if `key` is where that pack is stored (`data/<xx>/<id>`).
    pub fn pack_id_of(key: &str) -> Option<Id> {
        let id = id_of(key)?;
        (pack(&id) == key).then_some(id)
    }
    /// Whether `key` names an object of the layout: `config`, `<dir>/<id>` for the
    /// directories above, `data/<xx>/<id>` for packs. Anything else is not cairn's.
    pub fn is_layout_key(key: &str) -> bool {
        if key == CONFIG {
            return true;
        }
        if key.starts_with(DATA) {
            return pack_id_of(key).is_some();
        }
        [KEYS, SNAPSHOTS, INDEX, LOCKS, CONDEMNED]
            .iter()
            .any(|dir| {
                key.strip_prefix(dir)
                    .is_some_and(|name| !name.contains('/') && id_of(name).is_some())
            })
    }
}

/// Options for creating a repository.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub encryption: Encryption,
    pub kdf: KdfParams,
    pub chunker_files: ChunkerParams,
    pub chunker_dumps: ChunkerParams,
    pub pack_size: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            encryption: Encryption::Repokey,
            kdf: KdfParams::DEFAULT,
            chunker_files: ChunkerParams::FILES,
            chunker_dumps: ChunkerParams::DUMPS,
            pack_size: Config::DEFAULT_PACK_SIZE,
        }
    }
}

/// Options for opening a repository.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Base directory of catalogs; the catalog lives in `<cache_dir>/<repo id>/`.
    pub cache_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
    /// Packs uploaded at once.
    pub connections: usize,
    /// Size limit of the local tree-blob cache in bytes (0: no cache). See [`blobcache`].
    pub cache_size: u64,
    /// The caller's way to stop operations under a lease cleanly (see [`lease::Shutdown`]).
    pub shutdown: lease::Shutdown,
    /// Open the repository even if it is not what the cache remembers of its location or id
    /// (encrypted before and not now, other key files), and remember it as it is now. See
    /// [`memory`].
    pub accept_repository_change: bool,
}

impl OpenOptions {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        OpenOptions {
            cache_dir: cache_dir.into(),
            clock: Arc::new(SystemClock),
            connections: 4,
            cache_size: blobcache::DEFAULT_LIMIT,
            shutdown: lease::Shutdown::default(),
            accept_repository_change: false,
        }
    }
}

/// `$XDG_CACHE_HOME/cairn`, or `~/.cache/cairn`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("cairn");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache").join("cairn");
    }
    std::env::temp_dir().join("cairn-cache")
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub fn username() -> String {
    uzers::get_current_username()
        .map(|u| u.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn create_private_dir(p: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(|e| Error::io(p, e))
}

/// The key files under `keys/`: `(id, key, bytes)` of each whose bytes hash to its name. Names
/// that are not ids are not cairn's (`check` reports them); a file under an id it does not hash
/// to is skipped with a warning.
async fn key_files(backend: &dyn Backend) -> Result<Vec<(Id, String, Bytes)>> {
    let mut out = Vec::new();
    for entry in backend.list(keys::KEYS).await? {
        let Some(id) = keys::id_of(&entry.key) else {
            continue;
        };
        let data = backend.get(&entry.key).await?;
        if Id::of_bytes(&data) != id {
            tracing::warn!("{}: contents do not match the name; skipping it", entry.key);
            continue;
        }
        out.push((id, entry.key, data));
    }
    Ok(out)
}

/// Refuse to go on with a repository that differs from what was remembered of it (`was`),
/// unless the caller accepts the change; accepted changes are collected for one warning.
fn refuse_changes(
    location: &str,
    was: &memory::Record,
    now: &memory::Record,
    open: &OpenOptions,
    accepted: &mut Vec<String>,
) -> Result<()> {
    let changes = memory::changes(was, now);
    if changes.is_empty() {
        return Ok(());
    }
    if !open.accept_repository_change {
        return Err(Error::RepositoryChanged {
            location: location.to_string(),
            changes: changes.join("; "),
        });
    }
    for c in changes {
        if !accepted.contains(&c) {
            accepted.push(c);
        }
    }
    Ok(())
}

/// Remember `record` for its location and its repository id (where it differs from what was
/// remembered). A cache that cannot be written only weakens the check: warn and go on.
fn remember(
    location: &str,
    cache_dir: &Path,
    record: &memory::Record,
    at_location: Option<&memory::Record>,
    of_repo: Option<&memory::Record>,
) {
    let Some(repo_id) = record.repo_id else {
        return;
    };
    for (path, was) in [
        (memory::by_location(cache_dir, location), at_location),
        (memory::by_repo(cache_dir, &repo_id), of_repo),
    ] {
        if was != Some(record)
            && let Err(e) = memory::save(&path, location, record)
        {
            tracing::warn!(
                "could not remember the repository at {location} ({e}); a replacement of it \
                 would not be noticed"
            );
        }
    }
}

/// A damaged or unreadable-by-this-version object must not make the whole repository unusable
/// (new backups included): warn and go on without it; `check` reports it. An object listed a
/// moment ago and gone now was deleted meanwhile (a forget or prune on another host, which
/// needs no lease from a mere reader of the listing): go on without it too. Other failures (the
/// backend being unreachable, say) still stop the operation.
fn skip_damaged<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::UnsupportedVersion) => {
            tracing::warn!("{e}; ignoring it (run `cairn check`)");
            Ok(None)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::debug!("{e}: deleted since it was listed");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// An open repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    keys: Arc<Keys>,
    config: Config,
    catalog: Mutex<Catalog>,
    blob_cache: BlobCache,
    clock: Arc<dyn Clock>,
    connections: usize,
    shutdown: lease::Shutdown,
    /// Set once the catalog's index has been loaded afresh from the repository's index
    /// objects during this handle's life (see [`Repository::rebuild_index_once`]).
    index_fresh: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({})", self.backend.location())
    }
}

impl Repository {
    /// Create a repository in an empty location.
    pub async fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        init: &InitOptions,
        open: &OpenOptions,
    ) -> Result<Repository> {
        backend.check().await?;
        // A location with a config is a repository. Key files without a config are what an
        // interrupted `init` leaves; they cannot open anything, so a new init may proceed (open
        // skips keys that do not open the config).
        let occupied = backend.stat(keys::CONFIG).await?.is_some()
            || !backend.list(keys::SNAPSHOTS).await?.is_empty()
            || !backend.list(keys::INDEX).await?.is_empty()
            || !backend.list(keys::DATA).await?.is_empty();
        if occupied {
            return Err(Error::AlreadyExists {
                key: format!("a repository at {}", backend.location()),
            });
        }
        let master = MasterKey::generate();
        let now = open.clock.now();
        let kdf = init.kdf;
        let enc = init.encryption;
        let pw = Zeroizing::new(password.to_vec());
        let master_bytes = Zeroizing::new(*master.as_bytes());
        let keyfile = tokio::task::spawn_blocking(move || {
            KeyFile::create(
                &MasterKey::from_bytes(*master_bytes),
                enc,
                &pw,
                kdf,
                random_32(),
                now,
                hostname(),
                username(),
            )
        })
        .await
        .map_err(|e| Error::Other(e.to_string()))??;
        let kbytes = keyfile.encode();
        let key_id = Id::of_bytes(&kbytes);
        let keys = Keys::derive(&master, init.encryption);
        let config = Config {
            repo_id: Id(random_32()),
            created: now,
            chunker_files: init.chunker_files,
            chunker_dumps: init.chunker_dumps,
            pack_size: init.pack_size,
        };
        config.validate().map_err(Error::invalid)?;
        // Key first, config last: a location with a config always has a key to open it.
        backend
            .put(&keys::key(&key_id), Bytes::from(kbytes))
            .await?;
        backend
            .put(keys::CONFIG, Bytes::from(config.encode(keys.sealer())))
            .await?;
        // A new repository here: whatever this cache knew of the location no longer holds.
        // (keys/ may also hold orphans of an interrupted init, which open lists too.)
        let mut key_ids: BTreeSet<Id> = key_files(&*backend)
            .await?
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        key_ids.insert(key_id);
        let record = memory::Record {
            repo_id: Some(config.repo_id),
            encryption: init.encryption,
            keys: key_ids,
        };
        remember(&backend.location(), &open.cache_dir, &record, None, None);
        Self::finish_open(backend, keys, config, open).await
    }

    /// Open an existing repository. `password` is called at most once, and only if the
    /// repository is encrypted.
    pub async fn open(
        backend: Arc<dyn Backend>,
        password: impl FnOnce() -> Result<Zeroizing<Vec<u8>>>,
        open: &OpenOptions,
    ) -> Result<Repository> {
        backend.check().await?;
        let config_bytes = match backend.get(keys::CONFIG).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(Error::RepoNotFound {
                    location: backend.location(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let mut keyfiles = Vec::new();
        let mut key_ids = BTreeSet::new();
        for (key_id, name, data) in key_files(&*backend).await? {
            key_ids.insert(key_id);
            match KeyFile::decode(&data, &name) {
                Ok(k) => keyfiles.push(k),
                Err(e) => tracing::warn!("{e}; skipping it"),
            }
        }
        if keyfiles.is_empty() {
            return Err(Error::corrupt(
                format!("repository at {}", backend.location()),
                "no readable key file under keys/",
            ));
        }
        // An unencrypted key beside encrypted ones can only come from tampering (someone
        // trying to make us write unencrypted data into an encrypted repository): refuse.
        let plain = keyfiles.iter().filter(|k| k.encryption == 0).count();
        if plain > 0 && plain < keyfiles.len() {
            return Err(Error::corrupt(
                format!("repository at {}", backend.location()),
                "it has both encrypted and unencrypted key files; refusing to open it \
                 (possible tampering; inspect keys/)",
            ));
        }
        let mode = if plain > 0 {
            Encryption::None
        } else {
            Encryption::Repokey
        };
        // Is this what the cache knows of the location? Asked before any password is: a
        // replaced repository gets no chance to see one, nor data written into it.
        let location = backend.location();
        let mut observed = memory::Record {
            repo_id: None,
            encryption: mode,
            keys: key_ids,
        };
        let at_location = memory::load(&memory::by_location(&open.cache_dir, &location));
        let mut accepted = Vec::new();
        if let Some(was) = &at_location {
            refuse_changes(&location, was, &observed, open, &mut accepted)?;
        }
        let pw = match mode {
            Encryption::None => Zeroizing::new(Vec::new()),
            Encryption::Repokey => password()?,
        };
        let cfg = config_bytes.clone();
        let (keys, config) = tokio::task::spawn_blocking(move || {
            // Try every key; one that opens but does not authenticate the config is an orphan
            // of an interrupted init, and one with unusable parameters is skipped.
            let mut config_error = None;
            for k in &keyfiles {
                let master = match k.unlock(&pw) {
                    Ok(m) => m,
                    Err(e) if e.kind() == ErrorKind::WrongPassword => continue,
                    Err(e) => {
                        tracing::warn!("skipping a key file: {e}");
                        continue;
                    }
                };
                let keys = Keys::derive(&master, mode);
                match Config::decode(keys.sealer(), &cfg) {
                    Ok(c) => return Ok((keys, c)),
                    Err(e) => config_error = Some(e),
                }
            }
            Err(config_error.unwrap_or(Error::WrongPassword))
        })
        .await
        .map_err(|e| Error::Other(e.to_string()))??;
        // And of the repository id, here or wherever else this cache met it.
        observed.repo_id = Some(config.repo_id);
        let of_repo = memory::load(&memory::by_repo(&open.cache_dir, &config.repo_id));
        for was in at_location.iter().chain(of_repo.iter()) {
            refuse_changes(&location, was, &observed, open, &mut accepted)?;
        }
        if !accepted.is_empty() {
            tracing::warn!(
                "accepting, as asked, that the repository at {location} changed: {}",
                accepted.join("; ")
            );
        }
        remember(
            &location,
            &open.cache_dir,
            &observed,
            at_location.as_ref(),
            of_repo.as_ref(),
        );
        Self::finish_open(backend, keys, config, open).await
    }

    async fn finish_open(
        backend: Arc<dyn Backend>,
        keys: Keys,
        config: Config,
        open: &OpenOptions,
    ) -> Result<Repository> {
        create_private_dir(&open.cache_dir)?;
        let dir = open.cache_dir.join(config.repo_id.to_hex());
        create_private_dir(&dir)?;
        let catalog = Catalog::open(&dir.join("catalog.sqlite"))?;
        let blob_cache = BlobCache::open(&dir.join("blobs.sqlite"), open.cache_size);
        let repo = Repository {
            backend,
            keys: Arc::new(keys),
            config,
            catalog: Mutex::new(catalog),
            blob_cache,
            clock: open.clock.clone(),
            connections: open.connections.max(1),
            shutdown: open.shutdown.clone(),
            index_fresh: tokio::sync::OnceCell::new(),
        };
        repo.refresh().await?;
        Ok(repo)
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
    pub fn connections(&self) -> usize {
        self.connections
    }
    pub fn shutdown(&self) -> &lease::Shutdown {
        &self.shutdown
    }

    pub fn catalog(&self) -> MutexGuard<'_, Catalog> {
        // The catalog is a cache; a panic elsewhere cannot leave it inconsistent beyond what a
        // rebuild repairs, so a poisoned lock is still usable.
        self.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The chunker for file contents, keyed for this repository.
    pub fn file_chunker(&self) -> Chunker {
        Chunker::new(self.config.chunker_files, self.keys.gear_table())
            .expect("validated chunker parameters")
    }

    /// The chunker for dump streams.
    pub fn dump_chunker(&self) -> Chunker {
        Chunker::new(self.config.chunker_dumps, self.keys.gear_table())
            .expect("validated chunker parameters")
    }

    /// Fetch an object named by the hash of its bytes, and check it against its name.
    pub async fn get_verified(&self, key: &str) -> Result<Bytes> {
        let data = self.backend.get(key).await?;
        match keys::id_of(key) {
            Some(id) if id == Id::of_bytes(&data) => Ok(data),
            _ => Err(Error::corrupt(
                key,
                "contents do not match the object's name",
            )),
        }
    }

    /// The ids of the objects under a key prefix (keys that are not ids are ignored).
    pub async fn list_ids(&self, prefix: &str) -> Result<Vec<Id>> {
        Ok(self
            .backend
            .list(prefix)
            .await?
            .iter()
            .filter_map(|e| keys::id_of(&e.key))
            .collect())
    }

    /// Bring the catalog in step with the repository's index objects and snapshots.
    ///
    /// It reads without a lease, so another host's prune may delete an object between the
    /// listing and the read (it replaces index objects and condemnation records, and deletes
    /// forgotten snapshots): an object that vanished that way means "list again", a few times.
    pub async fn refresh(&self) -> Result<()> {
        let mut attempt = 0u32;
        loop {
            let r = async {
                self.refresh_index().await?;
                self.refresh_condemned().await?;
                self.refresh_snapshots().await
            }
            .await;
            match r {
                Err(e) if e.kind() == ErrorKind::NotFound && attempt < 5 => {
                    attempt += 1;
                    tracing::debug!(
                        "{e}: the repository changed while it was read (a prune?); reading it \
                         again"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                }
                r => return r,
            }
        }
    }

    /// Every index object in the repository, each decoded or with the reason it could not be.
    /// Failures of the backend itself (unreachable, ...) stop the whole operation.
    pub async fn load_index_objects(&self) -> Result<Vec<(Id, Result<IndexObject>)>> {
        let ids: Vec<Id> = self.list_ids(keys::INDEX).await?.into_iter().collect();
        futures::stream::iter(ids)
            .map(|id| async move {
                let key = keys::index(&id);
                let r = match self.get_verified(&key).await {
                    Ok(data) => {
                        let keys = self.keys.clone();
                        tokio::task::spawn_blocking(move || {
                            IndexObject::decode(keys.sealer(), &data, &key)
                        })
                        .await
                        .map_err(|e| Error::Other(e.to_string()))?
                    }
                    Err(e) => Err(e),
                };
                match r {
                    Err(e)
                        if !matches!(
                            e.kind(),
                            ErrorKind::Corrupt | ErrorKind::UnsupportedVersion
                        ) =>
                    {
                        Err(e)
                    }
                    r => Ok((id, r)),
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await
    }

    /// Replace the catalog's index with the effective index of these objects.
    pub fn install_index(&self, objects: &[(Id, IndexObject)]) -> Result<()> {
        let superseded: HashSet<Id> = objects
            .iter()
            .flat_map(|(_, i)| i.supersedes.iter().copied())
            .collect();
        let mut cat = self.catalog();
        cat.clear_index()?;
        for (id, idx) in objects {
            if !superseded.contains(id) {
                cat.add_index(Some(id), &idx.packs)?;
            }
        }
        // The index now says what the repository says: a failed read is not the catalog's doing.
        let _ = self.index_fresh.set(());
        Ok(())
    }

    /// Whether a read through the catalog's locations may have failed because the catalog is
    /// wrong (damaged, or out of step with the repository) rather than the data: the blob was
    /// not in it, not where it said (the pack or the range missing), or did not open there.
    pub fn catalog_may_explain(e: &Error) -> bool {
        matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound)
            || matches!(
                e,
                Error::Backend {
                    transient: false,
                    ..
                }
            )
    }

    /// After a read through the catalog failed (`failure` says how, for the warning): rebuild
    /// the catalog's index from the repository's index objects, unless this handle has already
    /// loaded it afresh, so that the caller can look the blob up and read it once more. Readers
    /// call this only on failures [`Self::catalog_may_explain`] allows, so the normal path costs
    /// nothing; concurrent callers wait for one rebuild.
    pub async fn rebuild_index_once(&self, failure: &str) -> Result<()> {
        self.index_fresh
            .get_or_try_init(|| async {
                tracing::warn!(
                    "{failure}; the local catalog may be out of step with the repository: \
                     rebuilding its index from the repository and reading again"
                );
                self.rebuild_index().await
            })
            .await?;
        Ok(())
    }

    /// Every condemnation record, decoded (damaged ones are skipped with a warning).
    pub async fn load_condemned(&self) -> Result<Vec<(Id, Condemned)>> {
        let ids: Vec<Id> = self.list_ids(keys::CONDEMNED).await?.into_iter().collect();
        futures::stream::iter(ids)
            .map(|id| async move {
                let key = keys::condemned(&id);
                let data = self.get_verified(&key).await?;
                Ok::<_, Error>((id, Condemned::decode(self.keys.sealer(), &data, &key)?))
            })
            .buffer_unordered(8)
            .filter_map(|r| async move { skip_damaged(r).transpose() })
            .try_collect()
            .await
    }

    async fn refresh_condemned(&self) -> Result<()> {
        let in_repo: HashSet<Id> = self.list_ids(keys::CONDEMNED).await?.into_iter().collect();
        let known: HashSet<Id> = self.catalog().condemned_object_ids()?.into_iter().collect();
        if in_repo == known {
            return Ok(());
        }
        let records = self.load_condemned().await?;
        let superseded: HashSet<Id> = records
            .iter()
            .flat_map(|(_, c)| c.supersedes.iter().copied())
            .collect();
        let effective: Vec<&(Id, Condemned)> = records
            .iter()
            .filter(|(id, _)| !superseded.contains(id))
            .collect();
        let packs: Vec<(Id, i64)> = effective
            .iter()
            .flat_map(|(_, c)| c.packs.iter().map(|p| (p.id, p.since.as_nanos())))
            .collect();
        // Superseded records count as known too: they are leftovers a prune will delete.
        let names: Vec<Id> = records.iter().map(|(id, _)| *id).collect();
        self.catalog().set_condemned(&names, &packs)
    }

    /// Read and open a pack's header with two ranged reads.
    pub async fn read_pack_header(&self, pack: &Id, size: u64) -> Result<PackHeader> {
        use crate::format::pack::{PACK_TRAILER, decode_header, header_range};
        let key = keys::pack(pack);
        if size < PACK_TRAILER as u64 {
            return Err(Error::corrupt(&key, "too short"));
        }
        let trailer = self
            .backend
            .get_range(&key, size - PACK_TRAILER as u64, PACK_TRAILER as u64)
            .await?;
        let (off, len) = header_range(size, &trailer, &key)?;
        let data = self.backend.get_range(&key, off, len).await?;
        if data.len() as u64 != len {
            return Err(Error::corrupt(&key, "shorter than its listed size"));
        }
        decode_header(self.keys.sealer(), &data, off, &key)
    }

    async fn fetch_indexes(&self, ids: Vec<Id>) -> Result<Vec<(Id, IndexObject)>> {
        futures::stream::iter(ids)
            .map(|id| async move {
                let key = keys::index(&id);
                let data = self.get_verified(&key).await?;
                let keys = self.keys.clone();
                let idx = tokio::task::spawn_blocking(move || {
                    IndexObject::decode(keys.sealer(), &data, &key)
                })
                .await
                .map_err(|e| Error::Other(e.to_string()))??;
                Ok::<_, Error>((id, idx))
            })
            .buffer_unordered(8)
            .filter_map(|r| async move { skip_damaged(r).transpose() })
            .try_collect()
            .await
    }

    async fn refresh_index(&self) -> Result<()> {
        let in_repo: HashSet<Id> = self.list_ids(keys::INDEX).await?.into_iter().collect();
        let known: HashSet<Id> = self.catalog().index_ids()?.into_iter().collect();
        let gone = known.iter().any(|id| !in_repo.contains(id));
        let to_fetch: Vec<Id> = if gone {
            in_repo.iter().copied().collect()
        } else {
            in_repo.difference(&known).copied().collect()
        };
        if to_fetch.is_empty() {
            return Ok(());
        }
        let fetched = self.fetch_indexes(to_fetch).await?;
        let superseded: HashSet<Id> = fetched
            .iter()
            .flat_map(|(_, i)| i.supersedes.iter().copied())
            .collect();
        let rebuild = gone || superseded.iter().any(|id| known.contains(id));
        if rebuild && !gone {
            // A newly seen index object replaces ones we merged: start again from everything.
            return Box::pin(self.rebuild_index()).await;
        }
        let mut cat = self.catalog();
        if rebuild {
            cat.clear_index()?;
        }
        for (id, idx) in &fetched {
            if !superseded.contains(id) {
                cat.add_index(Some(id), &idx.packs)?;
            }
        }
        Ok(())
    }

    /// Forget the catalog's index and load every index object again.
    pub async fn rebuild_index(&self) -> Result<()> {
        let mut objects = Vec::new();
        for (id, r) in self.load_index_objects().await? {
            match r {
                Ok(idx) => objects.push((id, idx)),
                Err(e) => tracing::warn!("{e}; ignoring it (run `cairn check`)"),
            }
        }
        self.install_index(&objects)
    }

    async fn refresh_snapshots(&self) -> Result<()> {
        let in_repo: HashSet<Id> = self.list_ids(keys::SNAPSHOTS).await?.into_iter().collect();
        let known: HashSet<Id> = self.catalog().snapshot_ids()?.into_iter().collect();
        for id in known.difference(&in_repo) {
            self.catalog().remove_snapshot(id)?;
        }
        let new: Vec<Id> = in_repo.difference(&known).copied().collect();
        let fetched: Vec<(Id, Bytes, Snapshot)> = futures::stream::iter(new)
            .map(|id| async move {
                let key = keys::snapshot(&id);
                let data = self.get_verified(&key).await?;
                let snap = Snapshot::decode(self.keys.sealer(), &data, &key)?;
                Ok::<_, Error>((id, data, snap))
            })
            .buffer_unordered(8)
            .filter_map(|r| async move { skip_damaged(r).transpose() })
            .try_collect()
            .await?;
        let cat = self.catalog();
        for (id, data, snap) in fetched {
            cat.add_snapshot(&id, snap.time.as_nanos(), &data)?;
        }
        Ok(())
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let sealed = self.catalog().sealed_snapshots()?;
        let mut out = Vec::with_capacity(sealed.len());
        for (id, data) in sealed {
            let key = keys::snapshot(&id);
            out.push((id, Snapshot::decode(self.keys.sealer(), &data, &key)?));
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Resolve a snapshot reference: `latest`, or a hex prefix of at least 4 digits. `host`
    /// and `tags` filter which snapshots `latest` may be.
    pub fn find_snapshot(
        &self,
        spec: &str,
        host: Option<&str>,
        tags: &[String],
    ) -> Result<(Id, Snapshot)> {
        let all = self.snapshots()?;
        if spec == "latest" {
            return all
                .into_iter()
                .rfind(|(_, s)| s.matches(host, tags))
                .ok_or_else(|| {
                    Error::not_found(
                        "snapshot \"latest\" (the repository has no matching snapshot)",
                    )
                });
        }
        if spec.len() < 4 || spec.len() > 64 || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "{spec:?} is not a snapshot id (use 4 or more hex digits, or \"latest\")"
            )));
        }
        let spec_l = spec.to_ascii_lowercase();
        let mut matches: Vec<(Id, Snapshot)> = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec_l))
            .collect();
        match matches.len() {
            0 => Err(Error::not_found(format!("snapshot {spec}"))),
            1 => Ok(matches.remove(0)),
            n => Err(Error::invalid(format!(
                "snapshot prefix {spec} is ambiguous ({n} snapshots match)"
            ))),
        }
    }

    /// Commit a snapshot: this is the last write of a backup.
    pub async fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        let data = snap.encode(self.keys.sealer());
        let id = Id::of_bytes(&data);
        match self
            .backend
            .put(&keys::snapshot(&id), Bytes::from(data.clone()))
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind == crate::backend::BackendErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        self.catalog()
            .add_snapshot(&id, snap.time.as_nanos(), &data)?;
        Ok(id)
    }

    /// Upload an index object and merge it into the catalog.
    pub async fn save_index(&self, idx: &IndexObject) -> Result<Id> {
        let id = self.put_index(idx).await?;
        self.catalog().add_index(Some(&id), &idx.packs)?;
        Ok(id)
    }

    /// Upload an index object without touching the catalog (for callers that bring the
    /// catalog in step themselves afterwards, such as prune and repair).
    pub async fn put_index(&self, idx: &IndexObject) -> Result<Id> {
        let data = idx.encode(self.keys.sealer());
        let id = Id::of_bytes(&data);
        match self.backend.put(&keys::index(&id), Bytes::from(data)).await {
            Ok(()) => {}
            Err(e) if e.kind == crate::backend::BackendErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        Ok(id)
    }

    pub fn lookup_blob(&self, id: &Id) -> Result<Option<BlobLocation>> {
        self.catalog().lookup(id)
    }

    /// Read, verify and return one blob's plaintext. Tree blobs come from the local blob cache
    /// when it has them (verified like a download), and go into it when downloaded. A delta
    /// blob's base is read first.
    ///
    /// The blob is read where the catalog says. If that fails in a way a wrong catalog can
    /// explain, the catalog's index is rebuilt from the repository (once per handle, with a
    /// warning) and the blob read again; only then is the failure returned.
    pub async fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        Ok(self.read_through_catalog(id, None).await?.0)
    }

    /// The plaintext of `base`, the base of delta blob `of`, read through its own bases if it
    /// is a delta blob too (and read again like [`Self::read_blob`]).
    pub async fn read_base(&self, base: &Id, of: &Id) -> Result<Vec<u8>> {
        Ok(self.read_through_catalog(base, Some(of)).await?.0)
    }

    /// [`Self::read_blob`] (or [`Self::read_base`] with `of`) and the chain's root and depth.
    async fn read_through_catalog(&self, id: &Id, of: Option<&Id>) -> Result<(Vec<u8>, Id, usize)> {
        let read = || async {
            let chain = self.delta_chain(id, of)?;
            let (root, depth) = chain_root(&chain);
            Ok::<_, Error>((self.read_chain(chain).await?, root, depth))
        };
        match read().await {
            Err(e) if Self::catalog_may_explain(&e) => {
                self.rebuild_index_once(&e.to_string()).await?;
                read().await
            }
            r => r,
        }
    }

    /// The end of blob `id`'s chain of bases (the blob stored whole that reading `id` starts
    /// from: `id` itself unless it is a delta blob), and how many delta blobs reading `id` opens.
    pub fn delta_root(&self, id: &Id) -> Result<(Id, usize)> {
        Ok(chain_root(&self.delta_chain(id, None)?))
    }

    /// [`Self::read_blob`] and [`Self::delta_root`] together, following the chain once.
    pub async fn read_blob_with_root(&self, id: &Id) -> Result<(Vec<u8>, Id, usize)> {
        self.read_through_catalog(id, None).await
    }

    /// The blobs read to read blob `id` (format-spec/pack.md §3): `id` first, then its base,
    /// and so on to a blob stored whole. `of`, when given, is the delta blob whose base `id` is;
    /// it counts towards [`MAX_DELTA_CHAIN`] and errors name it.
    fn delta_chain(&self, id: &Id, of: Option<&Id>) -> Result<Vec<(Id, BlobLocation)>> {
        let start = of.unwrap_or(id);
        let mut deltas = usize::from(of.is_some());
        let mut chain: Vec<(Id, BlobLocation)> = Vec::new();
        let mut next = *id;
        loop {
            let loc = self.lookup_blob(&next)?.ok_or_else(|| {
                Error::not_found(match (chain.is_empty(), of) {
                    (true, None) => format!("blob {next} (not in the index)"),
                    (true, Some(of)) => {
                        format!("blob {next}, the base of delta blob {of} (not in the index)")
                    }
                    (false, _) => format!(
                        "blob {next}, the base of delta blob {} that delta blob {start} is \
                         read through (not in the index)",
                        chain[chain.len() - 1].0
                    ),
                })
            })?;
            let base = loc.base;
            chain.push((next, loc));
            let Some(base) = base else {
                return Ok(chain);
            };
            deltas += 1;
            if deltas > MAX_DELTA_CHAIN {
                return Err(Error::corrupt(
                    format!("blob {start}"),
                    format!(
                        "reading it opens more than {MAX_DELTA_CHAIN} delta blobs (a chain of \
                         bases too long, or a cycle)"
                    ),
                ));
            }
            next = base;
        }
    }

    /// Read a chain from [`Self::delta_chain`]: its last blob (stored whole) first, then each
    /// delta against the plaintext before it.
    async fn read_chain(&self, mut chain: Vec<(Id, BlobLocation)>) -> Result<Vec<u8>> {
        let Some((id, loc)) = chain.pop() else {
            return Err(Error::Other("an empty chain of blobs".into()));
        };
        let mut plain = self.read_blob_at(&id, loc, None).await?;
        while let Some((id, loc)) = chain.pop() {
            plain = self.read_blob_at(&id, loc, Some(plain)).await?;
        }
        Ok(plain)
    }

    async fn read_blob_at(
        &self,
        id: &Id,
        loc: BlobLocation,
        base: Option<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        // Trees and delta blobs are small and read again and again (a delta by every later
        // version of its chunk, through the chain), so they are cached.
        let cached = loc.kind == BlobKind::Tree || loc.base.is_some();
        if cached && let Some(sealed) = self.blob_cache.get(id) {
            match open_blob(&self.keys, id, &sealed, loc.raw_len, base.as_deref()) {
                Ok(plain) => return Ok(plain),
                Err(e) => {
                    tracing::warn!("cached copy of blob {id} unusable ({e}); downloading it");
                    self.blob_cache.remove(id);
                }
            }
        }
        let sealed = self
            .backend
            .get_range(&keys::pack(&loc.pack), loc.offset as u64, loc.length as u64)
            .await
            .map_err(|e| -> Error {
                if e.is_not_found() {
                    Error::not_found(format!("pack {} holding blob {id}", loc.pack))
                } else {
                    e.into()
                }
            })?;
        let plain = if sealed.len() < 256 * 1024 {
            open_blob(&self.keys, id, &sealed, loc.raw_len, base.as_deref())?
        } else {
            let (keys, id, sealed) = (self.keys.clone(), *id, sealed.clone());
            tokio::task::spawn_blocking(move || {
                open_blob(&keys, &id, &sealed, loc.raw_len, base.as_deref())
            })
            .await
            .map_err(|e| Error::Other(e.to_string()))??
        };
        if cached {
            self.blob_cache.put(id, &sealed);
        }
        Ok(plain)
    }

    /// Keep the sealed form of a tree or delta blob this process wrote in the blob cache, so
    /// the next incremental backup, `ls` or delta read need not download it.
    pub fn cache_written_blob(&self, id: &Id, sealed: &[u8]) {
        self.blob_cache.put(id, sealed);
    }

    /// The blob cache's total size in bytes and number of entries.
    pub fn blob_cache_usage(&self) -> (u64, u64) {
        self.blob_cache.usage()
    }

    pub async fn load_tree(&self, id: &Id) -> Result<Tree> {
        let data = self.read_blob(id).await?;
        Tree::decode(&data, &format!("tree {id}"))
    }

    /// Whether a blob of this kind is indexed.
    pub fn has_blob(&self, id: &Id, _kind: BlobKind) -> Result<bool> {
        self.catalog().has_blob(id)
    }
}

/// The root of a chain from [`Repository::delta_chain`] (its last blob, never empty) and how
/// many delta blobs it has.
fn chain_root(chain: &[(Id, BlobLocation)]) -> (Id, usize) {
    (chain[chain.len() - 1].0, chain.len() - 1)
}
