//! Snapshot objects (format-spec/snapshot.md): sealed, `snapshots/<id>`. Writing one commits a
//! backup.

use super::{Kind, Timestamp, open_object, seal_object};
use crate::crypto::Sealer;
use crate::error::Result;
use crate::id::Id;

#[derive(
    Debug, Clone, PartialEq, Eq, Default, serde::Serialize, bincode::Encode, bincode::Decode,
)]
pub struct Summary {
    pub backup_start: Timestamp,
    pub backup_end: Timestamp,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    pub other_nodes: u64,
    /// Source entries that could not be read (and are missing from the snapshot).
    pub errors: u64,
    /// Regular files in the snapshot, and the sum of their sizes.
    pub total_files: u64,
    pub total_bytes: u64,
    /// Bytes read from the source during this backup.
    pub bytes_read: u64,
    pub data_blobs_added: u64,
    pub tree_blobs_added: u64,
    /// Logical (plaintext) size of the blobs this backup added, data and tree, before
    /// compression, and counting a chunk stored as a delta at its full size: how much *new
    /// content* the source had, not what it cost. (Formerly `bytes_added`; the stored bytes
    /// are positional, so only the name changed.)
    pub new_data_bytes: u64,
    /// Bytes of the packs this backup uploaded (compressed, delta-encoded, sealed, with pack
    /// headers): what the repository's data grew by. (Formerly `bytes_added_stored`.)
    pub stored_bytes_added: u64,
    pub packs_added: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, bincode::Encode, bincode::Decode)]
pub struct Snapshot {
    pub time: Timestamp,
    /// The root tree.
    pub tree: Id,
    /// The source paths as given (absolute), or the stdin name.
    pub paths: Vec<String>,
    pub host: String,
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    pub tags: Vec<String>,
    pub parent: Option<Id>,
    /// "files", "stdin" or "mysql".
    pub source: String,
    /// The program that wrote it, e.g. "cairn 0.1.0".
    pub program: String,
    pub summary: Summary,
    /// Source-specific facts, e.g. a database's binlog position.
    pub meta: Vec<(String, String)>,
}

impl Snapshot {
    /// Whether the snapshot is from `host` (any host if `None`) and carries every tag of `tags`.
    pub fn matches(&self, host: Option<&str>, tags: &[String]) -> bool {
        host.is_none_or(|h| self.host == h) && tags.iter().all(|t| self.tags.contains(t))
    }

    pub fn encode(&self, sealer: &Sealer) -> Vec<u8> {
        seal_object(Kind::Snapshot, sealer, self)
    }

    pub fn decode(sealer: &Sealer, data: &[u8], object: &str) -> Result<Snapshot> {
        open_object(Kind::Snapshot, sealer, data, object)
    }
}
