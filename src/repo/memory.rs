//! What the local cache remembers about the repositories it has opened, so that a repository
//! replaced behind its owner's back is refused rather than written to (threat-model.md,
//! "Repository replaced").
//!
//! Anyone who can write to the storage can replace `config` and `keys/` with those of a
//! repository of their own, unencrypted for instance; the owner's next backup would then store
//! file names and contents in clear. The replacement necessarily has other key files (a key
//! file's name is the hash of its bytes, which hold a random salt) and, being a new repository,
//! another repository id, so another cache directory: a memory kept only per repository id
//! would know nothing of it. So the same record is kept twice:
//!
//! - per location (`<cache>/locations/<BLAKE3 of the location>.json`): "this path or bucket
//!   held repository R, encrypted, with key files K";
//! - per repository id (`<cache>/<repo id>/repository.json`): "R was encrypted, with key
//!   files K", wherever it is reached from.
//!
//! On open, before any password is asked for, the mode and the key files found are compared
//! with the record of the location, and once the config is open, the repository id too and
//! the record of that id. Any difference is refused ([`Error::RepositoryChanged`]) unless the
//! caller accepts it (`--accept-repository-change`), which records the new state. No record
//! (a first open, a fresh cache, another host) means no check. `init` records what it creates.
//! A record that cannot be read is ignored with a warning and written anew.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::crypto::Encryption;
use crate::error::{Error, Result};
use crate::id::Id;

/// What is remembered of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `None` before the config is open (the repository id is sealed in it).
    pub repo_id: Option<Id>,
    pub encryption: Encryption,
    /// The ids of the key files under `keys/` (those whose bytes hash to their name).
    pub keys: BTreeSet<Id>,
}

/// The stored form (format version 1).
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    version: u32,
    /// For people reading the file; the file's name is what finds it.
    location: String,
    repo_id: String,
    encryption: String,
    keys: Vec<String>,
}

/// The file remembering the repository at `location`.
pub fn by_location(cache_dir: &Path, location: &str) -> PathBuf {
    let name = blake3::hash(location.as_bytes()).to_hex();
    cache_dir.join("locations").join(format!("{name}.json"))
}

/// The file remembering repository `repo_id`.
pub fn by_repo(cache_dir: &Path, repo_id: &Id) -> PathBuf {
    cache_dir.join(repo_id.to_hex()).join("repository.json")
}

/// The record in `path`, if there is a readable one.
pub fn load(path: &Path) -> Option<Record> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!("{}: {e}; ignoring it", path.display());
            return None;
        }
    };
    match decode(&data) {
        Some(r) => Some(r),
        None => {
            tracing::warn!(
                "{}: not a record of a repository; ignoring it",
                path.display()
            );
            None
        }
    }
}

fn decode(data: &[u8]) -> Option<Record> {
    let s: Stored = serde_json::from_slice(data).ok()?;
    if s.version != 1 {
        return None;
    }
    let id = |h: &str| -> Option<Id> {
        let id: Id = h.parse().ok()?;
        (id.to_hex() == h).then_some(id)
    };
    Some(Record {
        repo_id: Some(id(&s.repo_id)?),
        encryption: match s.encryption.as_str() {
            "repokey" => Encryption::Repokey,
            "none" => Encryption::None,
            _ => return None,
        },
        keys: s.keys.iter().map(|k| id(k)).collect::<Option<_>>()?,
    })
}

/// Write `record` (which must have its repository id) to `path`, atomically and private.
pub fn save(path: &Path, location: &str, record: &Record) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Some(repo_id) = record.repo_id else {
        return Err(Error::Other("a repository record without its id".into()));
    };
    let stored = Stored {
        version: 1,
        location: location.to_string(),
        repo_id: repo_id.to_hex(),
        encryption: record.encryption.as_str().to_string(),
        keys: record.keys.iter().map(Id::to_hex).collect(),
    };
    let data = serde_json::to_vec_pretty(&stored).map_err(|e| Error::Other(e.to_string()))?;
    let dir = path
        .parent()
        .ok_or_else(|| Error::Other(format!("{}: no directory", path.display())))?;
    super::create_private_dir(dir)?;
    let tmp = dir.join(format!(".tmp-{}", hex::encode(crate::crypto::random_32())));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// How `now` differs from what was remembered, in words (empty: no difference). Repository
/// ids are compared only when both are known.
pub fn changes(was: &Record, now: &Record) -> Vec<String> {
    let mut out = Vec::new();
    match (was.encryption, now.encryption) {
        (Encryption::Repokey, Encryption::None) => out.push(
            "it was encrypted (repokey) and is now unencrypted (integrity only): what is \
             backed up into it would be stored in clear"
                .to_string(),
        ),
        (Encryption::None, Encryption::Repokey) => {
            out.push("it was unencrypted and is now encrypted".to_string())
        }
        _ => {}
    }
    if let (Some(a), Some(b)) = (was.repo_id, now.repo_id)
        && a != b
    {
        out.push(format!(
            "it held repository {} and now holds repository {}",
            a.short(),
            b.short()
        ));
    }
    if was.keys != now.keys {
        let added: Vec<String> = now.keys.difference(&was.keys).map(Id::short).collect();
        let removed: Vec<String> = was.keys.difference(&now.keys).map(Id::short).collect();
        let list = |v: &[String]| {
            if v.len() <= 3 {
                v.join(", ")
            } else {
                format!("{}, ... ({} in all)", v[..3].join(", "), v.len())
            }
        };
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("added {}", list(&added)));
        }
        if !removed.is_empty() {
            parts.push(format!("removed {}", list(&removed)));
        }
        out.push(format!("its key files changed ({})", parts.join("; ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u8, enc: Encryption, keys: &[u8]) -> Record {
        Record {
            repo_id: Some(Id([id; 32])),
            encryption: enc,
            keys: keys.iter().map(|k| Id([*k; 32])).collect(),
        }
    }

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = by_location(dir.path(), "/srv/backup");
        assert!(load(&p).is_none());
        let r = rec(1, Encryption::Repokey, &[2, 3]);
        save(&p, "/srv/backup", &r).unwrap();
        assert_eq!(load(&p), Some(r.clone()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Overwritten in place, and nothing left beside it.
        let r2 = rec(1, Encryption::None, &[4]);
        save(&p, "/srv/backup", &r2).unwrap();
        assert_eq!(load(&p), Some(r2));
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        for bad in [&b"{"[..], b"{}", b"null", b"{\"version\":2}"] {
            std::fs::write(&p, bad).unwrap();
            assert!(load(&p).is_none());
        }
        assert_ne!(by_location(dir.path(), "/a"), by_location(dir.path(), "/b"));
    }

    #[test]
    fn what_counts_as_a_change() {
        let was = rec(1, Encryption::Repokey, &[2, 3]);
        assert!(changes(&was, &was).is_empty());
        let mut unknown_id = was.clone();
        unknown_id.repo_id = None;
        assert!(changes(&was, &unknown_id).is_empty());
        let c = changes(&was, &rec(9, Encryption::None, &[7])).join("; ");
        assert!(c.contains("now unencrypted"), "{c}");
        assert!(c.contains("now holds repository"), "{c}");
        assert!(c.contains("added") && c.contains("removed"), "{c}");
        let c = changes(&was, &rec(1, Encryption::Repokey, &[2, 3, 4])).join("; ");
        assert!(c.contains("added") && !c.contains("removed"), "{c}");
        assert!(
            !changes(
                &rec(1, Encryption::None, &[2]),
                &rec(1, Encryption::Repokey, &[2])
            )
            .is_empty()
        );
    }
}
