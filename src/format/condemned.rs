//! Condemnation records (format-spec/condemned.md): sealed, `condemned/<id>`. Prune writes one
//! to name the packs it has made obsolete; a later prune deletes them once a grace period has
//! passed, unless something has come to need them again (DESIGN.md §6, two-phase deletion).

use super::{Kind, Timestamp, open_object, seal_object};
use crate::crypto::Sealer;
use crate::error::Result;
use crate::id::Id;

/// One condemned pack and when it was first condemned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct CondemnedPack {
    pub id: Id,
    pub since: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, bincode::Encode, bincode::Decode)]
pub struct Condemned {
    /// Records this one replaces; readers ignore those (as with index objects).
    pub supersedes: Vec<Id>,
    pub packs: Vec<CondemnedPack>,
}

impl Condemned {
    pub fn encode(&self, sealer: &Sealer) -> Vec<u8> {
        seal_object(Kind::Condemned, sealer, self)
    }

    pub fn decode(sealer: &Sealer, data: &[u8], object: &str) -> Result<Condemned> {
        open_object(Kind::Condemned, sealer, data, object)
    }
}
