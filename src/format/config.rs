//! The repository config object (format-spec/config.md): sealed, stored at `config`.

use super::{Kind, Timestamp, open_object, seal_object};
use crate::chunker::ChunkerParams;
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::id::Id;

/// Repository-wide parameters fixed at `init`.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Config {
    /// Random; names the local cache directory. Not secret.
    pub repo_id: Id,
    pub created: Timestamp,
    /// Chunking of file contents.
    pub chunker_files: ChunkerParams,
    /// Chunking of database dump streams.
    pub chunker_dumps: ChunkerParams,
    /// Target size of a pack in bytes.
    pub pack_size: u32,
}

impl Config {
    pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;

    pub fn validate(&self) -> std::result::Result<(), String> {
        self.chunker_files.validate()?;
        self.chunker_dumps.validate()?;
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&self.pack_size) {
            return Err(format!("pack size {} out of range", self.pack_size));
        }
        Ok(())
    }

    /// The largest plaintext a blob of this repository can have.
    pub fn max_blob_size(&self) -> u32 {
        self.chunker_files
            .max_size
            .max(self.chunker_dumps.max_size)
            .max(crate::format::tree::MAX_TREE_BLOB)
    }

    pub fn encode(&self, sealer: &Sealer) -> Vec<u8> {
        seal_object(Kind::Config, sealer, self)
    }

    pub fn decode(sealer: &Sealer, data: &[u8]) -> Result<Config> {
        let c: Config = open_object(Kind::Config, sealer, data, "config")?;
        c.validate().map_err(|e| Error::corrupt("config", e))?;
        Ok(c)
    }
}
