//! Leases (format-spec/lease.md): sealed objects under `locks/<id>`.

use super::{Kind, Timestamp, open_object, seal_object};
use crate::crypto::Sealer;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum LeaseKind {
    /// Backups and other writers that only add data.
    Shared,
    /// Prune and repair: nothing else may run.
    Exclusive,
}

#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Lease {
    pub kind: LeaseKind,
    pub operation: String,
    pub host: String,
    pub username: String,
    pub pid: u32,
    /// Identifies the process-id space `pid` belongs to (machine id and pid namespace), so a
    /// lease is only judged dead by its pid where that pid means the same process.
    pub pid_space: String,
    /// When the operation first took the lease.
    pub created: Timestamp,
    /// When this lease object was written; a lease is stale once `refreshed + ttl_secs` passed.
    pub refreshed: Timestamp,
    pub ttl_secs: u32,
    /// Random, so two leases written in the same instant differ.
    pub nonce: [u8; 16],
}

impl Lease {
    pub fn encode(&self, sealer: &Sealer) -> Vec<u8> {
        seal_object(Kind::Lease, sealer, self)
    }

    pub fn decode(sealer: &Sealer, data: &[u8], object: &str) -> Result<Lease> {
        open_object(Kind::Lease, sealer, data, object)
    }

    pub fn is_stale(&self, now: Timestamp) -> bool {
        now.secs > self.refreshed.secs.saturating_add(self.ttl_secs as i64)
    }
}
