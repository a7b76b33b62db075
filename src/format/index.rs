//! Index objects (format-spec/index.md): sealed, `index/<id>`; each maps the blobs of some packs
//! to their locations. Written only after every pack it names has been stored.

use super::pack::PackEntry;
use super::{Kind, open_object, seal_object};
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::id::Id;

#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct IndexPack {
    pub id: Id,
    /// Total length of the pack in bytes.
    pub size: u64,
    pub entries: Vec<PackEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, bincode::Encode, bincode::Decode)]
pub struct IndexObject {
    /// Index objects this one replaces (written by prune and repair); readers ignore those.
    pub supersedes: Vec<Id>,
    pub packs: Vec<IndexPack>,
}

impl IndexObject {
    pub fn encode(&self, sealer: &Sealer) -> Vec<u8> {
        seal_object(Kind::Index, sealer, self)
    }

    pub fn decode(sealer: &Sealer, data: &[u8], object: &str) -> Result<IndexObject> {
        let idx: IndexObject = open_object(Kind::Index, sealer, data, object)?;
        for p in &idx.packs {
            // The same rules as a pack header: blobs lie after the pack's prefix, within the
            // pack, are not empty and do not overlap.
            let mut spans: Vec<(u64, u64)> = p
                .entries
                .iter()
                .map(|e| (e.offset as u64, e.offset as u64 + e.length as u64))
                .collect();
            spans.sort_unstable();
            let mut end = super::pack::PACK_PREFIX as u64;
            for (s, e) in spans {
                if s < end || e > p.size || s == e {
                    return Err(Error::corrupt(
                        object,
                        format!("entries of pack {} overlap or lie outside it", p.id),
                    ));
                }
                end = e;
            }
        }
        Ok(idx)
    }
}
