//! Pure encoding and decoding of every stored object (format-spec/).
//!
//! Owns the byte layout of the config, key files, packs and their headers, sealed blobs, index
//! objects, tree blobs, snapshots and leases. Everything here is a pure function of its inputs:
//! no I/O, no async, no clock. Every decoder is fuzzed (`fuzz/`), and golden vectors in
//! `format-spec/vectors/` pin the bytes.
//!
//! Every object starts with a 4-byte magic and a version byte; readers reject versions they do
//! not know. Structured bodies are bincode 2 "standard" encoding (little-endian, varint
//! integers), specified byte by byte in format-spec/encoding.md.

pub mod condemned;
pub mod config;
#[cfg(any(test, feature = "testing"))]
pub mod fuzz;
pub mod index;
pub mod keyfile;
pub mod lease;
pub mod pack;
pub mod snapshot;
pub mod tree;

use crate::crypto::Sealer;
use crate::error::{Error, Result};

/// The format version this build writes and the only one it reads.
pub const VERSION: u8 = 1;

/// Upper bound on the decoded size of any structured object, so hostile input cannot make a
/// decoder allocate without limit.
pub const DECODE_LIMIT: usize = 256 * 1024 * 1024;

/// The kinds of stored object, each with its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Config,
    Key,
    Snapshot,
    Index,
    Lease,
    Pack,
    PackHeader,
    Tree,
    Condemned,
}

impl Kind {
    pub fn magic(self) -> &'static [u8; 4] {
        match self {
            Kind::Config => b"CRNC",
            Kind::Key => b"CRNK",
            Kind::Snapshot => b"CRNS",
            Kind::Index => b"CRNI",
            Kind::Lease => b"CRNL",
            Kind::Pack => b"CRNP",
            Kind::PackHeader => b"CRNH",
            Kind::Tree => b"CRNT",
            Kind::Condemned => b"CRND",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::Key => "key file",
            Kind::Snapshot => "snapshot",
            Kind::Index => "index object",
            Kind::Lease => "lease",
            Kind::Pack => "pack",
            Kind::PackHeader => "pack header",
            Kind::Tree => "tree",
            Kind::Condemned => "condemnation record",
        }
    }

    /// The 5-byte header: magic followed by the version.
    pub fn header(self) -> [u8; 5] {
        let m = self.magic();
        [m[0], m[1], m[2], m[3], VERSION]
    }
}

/// Check the magic and version of `data`, returning the bytes after them.
pub fn strip_header<'a>(kind: Kind, data: &'a [u8], object: &str) -> Result<&'a [u8]> {
    if data.len() < 5 || &data[..4] != kind.magic() {
        return Err(Error::corrupt(
            object,
            format!("not a cairn {} (bad magic)", kind.name()),
        ));
    }
    if data[4] != VERSION {
        return Err(Error::UnsupportedVersion {
            object: object.to_string(),
            version: data[4],
        });
    }
    Ok(&data[5..])
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// bincode-encode a structure (format-spec/encoding.md).
pub fn encode<T: bincode::Encode>(value: &T) -> Vec<u8> {
    // Encoding into a Vec cannot fail for our types (no custom encoders that error).
    bincode::encode_to_vec(value, config()).expect("bincode encoding into a Vec")
}

/// bincode-decode a structure that must occupy all of `data`.
pub fn decode<T: bincode::Decode<()>>(data: &[u8], object: &str) -> Result<T> {
    let (v, used) = bincode::decode_from_slice(data, config())
        .map_err(|e| Error::corrupt(object, format!("undecodable: {e}")))?;
    if used != data.len() {
        return Err(Error::corrupt(
            object,
            format!("{} trailing bytes", data.len() - used),
        ));
    }
    Ok(v)
}

/// `header || seal(ad = header, bincode(value))`: the layout of config, snapshot, index and
/// lease objects.
pub fn seal_object<T: bincode::Encode>(kind: Kind, sealer: &Sealer, value: &T) -> Vec<u8> {
    let header = kind.header();
    let mut out = header.to_vec();
    sealer.seal_into(&header, &encode(value), &mut out);
    out
}

/// Inverse of [`seal_object`].
pub fn open_object<T: bincode::Decode<()>>(
    kind: Kind,
    sealer: &Sealer,
    data: &[u8],
    object: &str,
) -> Result<T> {
    let body = strip_header(kind, data, object)?;
    let plain = sealer
        .open(&kind.header(), body)
        .map_err(|_| Error::corrupt(object, "authentication failed"))?;
    decode(&plain, object)
}

/// A point in time: seconds and nanoseconds since the Unix epoch (UTC).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    bincode::Encode,
    bincode::Decode,
)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn new(secs: i64, nanos: u32) -> Timestamp {
        Timestamp { secs, nanos }
    }

    pub fn to_jiff(self) -> Option<jiff::Timestamp> {
        jiff::Timestamp::new(self.secs, self.nanos.min(999_999_999) as i32).ok()
    }

    pub fn from_jiff(t: jiff::Timestamp) -> Timestamp {
        let secs = t.as_second();
        let nanos = t.subsec_nanosecond();
        if nanos < 0 {
            Timestamp::new(secs - 1, (nanos + 1_000_000_000) as u32)
        } else {
            Timestamp::new(secs, nanos as u32)
        }
    }

    pub fn from_system(t: std::time::SystemTime) -> Timestamp {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp::new(d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    Timestamp::new(-(d.as_secs() as i64), 0)
                } else {
                    Timestamp::new(-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
                }
            }
        }
    }

    /// Nanoseconds since the epoch, saturating (for sorting and SQLite).
    pub fn as_nanos(self) -> i64 {
        self.secs
            .saturating_mul(1_000_000_000)
            .saturating_add(self.nanos as i64)
    }

    /// RFC 3339 in UTC, for JSON and tables.
    pub fn to_rfc3339(self) -> String {
        match self.to_jiff() {
            Some(t) => t.to_string(),
            None => format!("{}s", self.secs),
        }
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        let data = [b'C', b'R', b'N', b'S', 1, 9];
        assert_eq!(strip_header(Kind::Snapshot, &data, "s").unwrap(), &[9]);
        let e = strip_header(Kind::Index, &data, "s").unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt);
        let data = [b'C', b'R', b'N', b'S', 2, 9];
        let e = strip_header(Kind::Snapshot, &data, "s").unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::UnsupportedVersion);
        assert!(strip_header(Kind::Snapshot, b"CR", "s").is_err());
    }

    #[test]
    fn timestamps_convert() {
        let t = Timestamp::from_system(std::time::UNIX_EPOCH - std::time::Duration::new(1, 5));
        assert_eq!(t, Timestamp::new(-2, 999_999_995));
        assert_eq!(Timestamp::from_jiff(t.to_jiff().unwrap()), t);
        assert_eq!(Timestamp::new(0, 0).to_rfc3339(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn decode_rejects_trailing_bytes() {
        let mut v = encode(&7u32);
        assert_eq!(decode::<u32>(&v, "x").unwrap(), 7);
        v.push(0);
        assert!(decode::<u32>(&v, "x").is_err());
    }
}
