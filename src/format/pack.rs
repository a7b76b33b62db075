//! Packs and sealed blobs (format-spec/pack.md).
//!
//! A pack is `"CRNP" 0x01 || blob... || sealed header || header length (u32 LE)`. Each blob is
//! `seal(ad = blob id, compression byte || payload)`. The sealed header lists every blob, so
//! the index can be rebuilt from packs alone. A pack's name is BLAKE3 of all its bytes.

use bytes::Bytes;

use super::{Kind, decode, encode};
use crate::compress::{self, Compression};
use crate::crypto::{Keys, NONCE_LEN, Sealer};
use crate::error::{Error, Result};
use crate::id::Id;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode,
)]
pub enum BlobKind {
    Data,
    Tree,
}

impl BlobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }

    pub fn from_u8(v: u8) -> Option<BlobKind> {
        match v {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

/// Where one blob sits in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackEntry {
    pub kind: BlobKind,
    pub id: Id,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the blob's plaintext (after decompression).
    pub raw_len: u32,
    /// For a delta blob (compression `BLOB_ZSTD_DELTA`): the data blob whose plaintext it was
    /// compressed against, which must be read first. Only data blobs have a base; a base may
    /// be a delta blob itself, up to [`MAX_DELTA_CHAIN`] deltas from a blob stored whole.
    pub base: Option<Id>,
}

/// How a [`PackEntry`] is stored (format-spec/pack.md §4): the kind is an enum whose third
/// variant, a delta data blob, carries its base. Entries without a base encode exactly as
/// before the variant existed.
#[derive(bincode::Encode, bincode::Decode)]
enum WireKind {
    Data,
    Tree,
    DataDelta(Id),
}

#[derive(bincode::Encode, bincode::Decode)]
struct WireEntry {
    kind: WireKind,
    id: Id,
    offset: u32,
    length: u32,
    raw_len: u32,
}

impl bincode::Encode for PackEntry {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        let kind = match (self.kind, self.base) {
            (BlobKind::Data, Some(b)) => WireKind::DataDelta(b),
            (BlobKind::Data, None) => WireKind::Data,
            (BlobKind::Tree, _) => WireKind::Tree,
        };
        WireEntry {
            kind,
            id: self.id,
            offset: self.offset,
            length: self.length,
            raw_len: self.raw_len,
        }
        .encode(encoder)
    }
}

impl<C> bincode::Decode<C> for PackEntry {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let w = WireEntry::decode(decoder)?;
        let (kind, base) = match w.kind {
            WireKind::Data => (BlobKind::Data, None),
            WireKind::Tree => (BlobKind::Tree, None),
            WireKind::DataDelta(b) => (BlobKind::Data, Some(b)),
        };
        Ok(PackEntry {
            kind,
            id: w.id,
            offset: w.offset,
            length: w.length,
            raw_len: w.raw_len,
            base,
        })
    }
}

bincode::impl_borrow_decode!(PackEntry);

#[derive(Debug, Clone, PartialEq, Eq, Default, bincode::Encode, bincode::Decode)]
pub struct PackHeader {
    pub entries: Vec<PackEntry>,
}

/// Compression byte values inside a sealed blob.
pub const BLOB_STORED: u8 = 0;
pub const BLOB_ZSTD: u8 = 1;
/// zstd against a base: the frame was compressed with the base blob's plaintext as its prefix.
pub const BLOB_ZSTD_DELTA: u8 = 2;
/// The most delta blobs a reader opens to read one blob: following bases from any blob reaches
/// a blob stored whole after at most this many deltas (the blob itself counted), or the chain
/// is corrupt (format-spec/pack.md §3). Also what ends a cycle in a damaged index.
pub const MAX_DELTA_CHAIN: usize = 16;

/// Length of the pack's leading magic and version.
pub const PACK_PREFIX: usize = 5;
/// Length of the trailing header-length field.
pub const PACK_TRAILER: usize = 4;

/// Seal one blob's plaintext, compressing it when that makes it smaller. One allocation: the
/// nonce, compression byte and (compressed) payload are laid out in place and sealed there.
pub fn seal_blob(keys: &Keys, id: &Id, plaintext: &[u8], compression: Compression) -> Vec<u8> {
    let sealer = keys.sealer();
    let head = sealer.headroom();
    let mut buf = Vec::with_capacity(head + 1 + plaintext.len() + crate::crypto::TAG_LEN);
    buf.resize(head, 0);
    buf.push(BLOB_ZSTD);
    if !compress::compress_append(plaintext, compression, &mut buf) {
        buf.truncate(head);
        buf.push(BLOB_STORED);
        buf.extend_from_slice(plaintext);
    }
    sealer.seal_in_place(id.as_bytes(), &mut buf);
    // The buffer was sized for the uncompressed blob; a pack holds thousands of these, so give
    // back what compression saved (otherwise a 16 MiB pack of compressed blobs pins ~50 MiB).
    if buf.capacity() - buf.len() > buf.len() / 8 {
        buf.shrink_to_fit();
    }
    buf
}

/// Seal a data blob as a delta against `base` (the plaintext of the blob its entry will name
/// as base), if that is smaller than `limit` bytes of sealed blob; `None` otherwise.
pub fn seal_blob_delta(
    keys: &Keys,
    id: &Id,
    plaintext: &[u8],
    base: &[u8],
    level: Compression,
    limit: usize,
) -> Option<Vec<u8>> {
    let sealer = keys.sealer();
    let head = sealer.headroom();
    let mut buf = Vec::with_capacity(head + 1 + plaintext.len() / 4 + crate::crypto::TAG_LEN);
    buf.resize(head, 0);
    buf.push(BLOB_ZSTD_DELTA);
    if !compress::compress_delta_append(plaintext, base, level, &mut buf) {
        return None;
    }
    if buf.len() + crate::crypto::TAG_LEN >= limit {
        return None;
    }
    sealer.seal_in_place(id.as_bytes(), &mut buf);
    buf.shrink_to_fit();
    Some(buf)
}

/// No blob's plaintext is larger than this (chunks are at most 64 MiB, trees 128 MiB), so no
/// index entry can make a reader allocate more.
pub const MAX_BLOB_RAW: u32 = 128 * 1024 * 1024;

/// Open a sealed blob and check that its plaintext hashes to `id`.
///
/// A delta blob (compression `BLOB_ZSTD_DELTA`) needs `base`, the plaintext of the base its
/// entry names; other blobs ignore it.
pub fn open_blob(
    keys: &Keys,
    id: &Id,
    sealed: &[u8],
    raw_len: u32,
    base: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let (mut inner, mut plain) = (Vec::new(), Vec::new());
    open_blob_with(keys, id, sealed, raw_len, base, &mut inner, &mut plain)?;
    Ok(plain)
}

thread_local! {
    static VERIFY_BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

/// Check a sealed blob exactly as [`open_blob`] does, without keeping its plaintext. The
/// buffers are per thread and reused: verifying a repository's blobs (`check --read-data`)
/// otherwise allocated, page-faulted and freed two fresh buffers per blob.
pub fn verify_blob(
    keys: &Keys,
    id: &Id,
    sealed: &[u8],
    raw_len: u32,
    base: Option<&[u8]>,
) -> Result<()> {
    VERIFY_BUFFERS.with(|b| {
        let (inner, plain) = &mut *b.borrow_mut();
        let r = open_blob_with(keys, id, sealed, raw_len, base, inner, plain);
        // Keep the buffers for the next blob, but not a pathological one's 128 MiB.
        if inner.capacity() > 32 << 20 {
            *inner = Vec::new();
        }
        if plain.capacity() > 32 << 20 {
            *plain = Vec::new();
        }
        r
    })
}

fn open_blob_with(
    keys: &Keys,
    id: &Id,
    sealed: &[u8],
    raw_len: u32,
    base: Option<&[u8]>,
    inner: &mut Vec<u8>,
    plain: &mut Vec<u8>,
) -> Result<()> {
    let object = || format!("blob {id}");
    if raw_len > MAX_BLOB_RAW {
        return Err(Error::corrupt(
            object(),
            format!("claimed length {raw_len} is too large"),
        ));
    }
    keys.sealer()
        .open_into(id.as_bytes(), sealed, inner)
        .map_err(|_| Error::corrupt(object(), "authentication failed"))?;
    match inner.first() {
        Some(&BLOB_STORED) => {
            plain.clear();
            plain.extend_from_slice(&inner[1..]);
        }
        Some(&BLOB_ZSTD) => compress::decompress_into(&inner[1..], raw_len as usize, plain)
            .map_err(|e| Error::corrupt(object(), e))?,
        Some(&BLOB_ZSTD_DELTA) => {
            let base = base.ok_or_else(|| {
                Error::corrupt(object(), "a delta blob, but its entry names no base")
            })?;
            compress::decompress_delta_into(&inner[1..], base, raw_len as usize, plain)
                .map_err(|e| Error::corrupt(object(), e))?
        }
        _ => return Err(Error::corrupt(object(), "unknown compression")),
    };
    if plain.len() != raw_len as usize {
        return Err(Error::corrupt(
            object(),
            format!("length {} but the index says {raw_len}", plain.len()),
        ));
    }
    if keys.blob_id(plain) != *id {
        return Err(Error::corrupt(object(), "contents do not match the id"));
    }
    Ok(())
}

/// Collects sealed blobs and lays them out as a pack.
#[derive(Default)]
pub struct PackBuilder {
    blobs: Vec<(PackEntry, Vec<u8>)>,
    size: usize,
}

impl PackBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, kind: BlobKind, id: Id, sealed: Vec<u8>, raw_len: u32) {
        self.add_entry(kind, id, sealed, raw_len, None)
    }

    /// [`PackBuilder::add`] for a blob that may be a delta against `base`.
    pub fn add_entry(
        &mut self,
        kind: BlobKind,
        id: Id,
        sealed: Vec<u8>,
        raw_len: u32,
        base: Option<Id>,
    ) {
        self.size += sealed.len();
        let entry = PackEntry {
            kind,
            id,
            offset: 0,
            length: sealed.len() as u32,
            raw_len,
            base,
        };
        self.blobs.push((entry, sealed));
    }

    /// Bytes of sealed blobs so far.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    pub fn count(&self) -> usize {
        self.blobs.len()
    }

    /// Lay out the pack: blobs in the order given by `order` (a permutation of 0..count, which
    /// the caller makes random so blob order leaks nothing), then the sealed header.
    pub fn finish(self, sealer: &Sealer, order: &[usize]) -> (Vec<u8>, Vec<PackEntry>) {
        let (parts, entries) = self.lay_out(sealer, order, None);
        (parts.concat(), entries)
    }

    /// [`PackBuilder::finish`] without joining the pieces: the pack is the concatenation of
    /// the returned parts (prefix, blobs, header and trailer), so no pack-sized copy is made.
    pub fn finish_parts(self, sealer: &Sealer, order: &[usize]) -> (Vec<Bytes>, Vec<PackEntry>) {
        let (parts, entries) = self.lay_out(sealer, order, None);
        (parts.into_iter().map(Bytes::from).collect(), entries)
    }

    /// [`PackBuilder::finish`] with a caller-chosen nonce for the header seal. Only for
    /// reproducible test vectors (format-spec/vectors/): reusing a nonce under one key destroys
    /// confidentiality.
    #[cfg(any(test, feature = "testing"))]
    pub fn finish_with_nonce(
        self,
        sealer: &Sealer,
        order: &[usize],
        nonce: [u8; NONCE_LEN],
    ) -> (Vec<u8>, Vec<PackEntry>) {
        let (parts, entries) = self.lay_out(sealer, order, Some(nonce));
        (parts.concat(), entries)
    }

    fn lay_out(
        self,
        sealer: &Sealer,
        order: &[usize],
        nonce: Option<[u8; NONCE_LEN]>,
    ) -> (Vec<Vec<u8>>, Vec<PackEntry>) {
        debug_assert_eq!(order.len(), self.blobs.len());
        let mut slots: Vec<Option<(PackEntry, Vec<u8>)>> =
            self.blobs.into_iter().map(Some).collect();
        let mut parts = Vec::with_capacity(slots.len() + 2);
        parts.push(Kind::Pack.header().to_vec());
        let mut offset = PACK_PREFIX;
        let mut entries = Vec::with_capacity(slots.len());
        for &i in order {
            if let Some((mut e, data)) = slots[i].take() {
                e.offset = offset as u32;
                offset += data.len();
                parts.push(data);
                entries.push(e);
            }
        }
        let header = encode(&PackHeader {
            entries: entries.clone(),
        });
        let mut tail = Vec::with_capacity(header.len() + 64);
        match nonce {
            Some(n) => sealer.seal_with(&Kind::PackHeader.header(), &header, n, &mut tail),
            None => sealer.seal_into(&Kind::PackHeader.header(), &header, &mut tail),
        }
        let hlen = tail.len() as u32;
        tail.extend_from_slice(&hlen.to_le_bytes());
        parts.push(tail);
        (parts, entries)
    }
}

/// From a pack's length and its last four bytes, where its sealed header lies.
pub fn header_range(pack_len: u64, trailer: &[u8], object: &str) -> Result<(u64, u64)> {
    let t: [u8; 4] = trailer
        .try_into()
        .map_err(|_| Error::corrupt(object, "short trailer"))?;
    let hlen = u32::from_le_bytes(t) as u64;
    let min = (PACK_PREFIX + PACK_TRAILER) as u64;
    if pack_len < min || hlen > pack_len - min {
        return Err(Error::corrupt(object, "header length out of range"));
    }
    Ok((pack_len - PACK_TRAILER as u64 - hlen, hlen))
}

/// Open a pack's sealed header (`data` = exactly the header bytes) and check the entries fit
/// in a pack of `pack_len` bytes whose header starts at `header_offset`.
pub fn decode_header(
    sealer: &Sealer,
    data: &[u8],
    header_offset: u64,
    object: &str,
) -> Result<PackHeader> {
    let plain = sealer
        .open(&Kind::PackHeader.header(), data)
        .map_err(|_| Error::corrupt(object, "pack header authentication failed"))?;
    let h: PackHeader = decode(&plain, object)?;
    let mut spans: Vec<(u64, u64)> = h
        .entries
        .iter()
        .map(|e| (e.offset as u64, e.offset as u64 + e.length as u64))
        .collect();
    spans.sort_unstable();
    let mut end = PACK_PREFIX as u64;
    for (s, e) in spans {
        if s < end || e > header_offset || s == e {
            return Err(Error::corrupt(
                object,
                "pack header entries overlap or overflow",
            ));
        }
        end = e;
    }
    Ok(h)
}

/// Check a whole pack's prefix and return its header.
pub fn decode_pack(sealer: &Sealer, pack: &[u8], object: &str) -> Result<PackHeader> {
    super::strip_header(Kind::Pack, pack, object)?;
    if pack.len() < PACK_PREFIX + PACK_TRAILER {
        return Err(Error::corrupt(object, "too short"));
    }
    let (off, len) = header_range(
        pack.len() as u64,
        &pack[pack.len() - PACK_TRAILER..],
        object,
    )?;
    decode_header(
        sealer,
        &pack[off as usize..(off + len) as usize],
        off,
        object,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Encryption, MasterKey};

    #[test]
    fn verify_blob_agrees_with_open_blob_across_reused_buffers() {
        for mode in [Encryption::Repokey, Encryption::None] {
            let keys = Keys::derive(&MasterKey::from_bytes([5; 32]), mode);
            // Large then small, compressible then not: the reused buffers must not leak
            // bytes from one blob into the next.
            let blobs: Vec<Vec<u8>> = vec![
                b"abc".repeat(400_000),
                b"tiny".to_vec(),
                (0..70_000u32)
                    .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
                    .collect(),
                Vec::new(),
            ];
            for plain in &blobs {
                let id = keys.blob_id(plain);
                let sealed = seal_blob(&keys, &id, plain, Compression::Auto);
                let n = plain.len() as u32;
                verify_blob(&keys, &id, &sealed, n, None).unwrap();
                assert_eq!(&open_blob(&keys, &id, &sealed, n, None).unwrap(), plain);
                assert!(verify_blob(&keys, &id, &sealed, n + 1, None).is_err());
                let mut bad = sealed.clone();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                assert!(verify_blob(&keys, &id, &bad, n, None).is_err());
                let other = keys.blob_id(b"something else");
                assert!(verify_blob(&keys, &other, &sealed, n, None).is_err());
            }
        }
    }

    #[test]
    fn pack_round_trip_any_order() {
        for mode in [Encryption::Repokey, Encryption::None] {
            let keys = Keys::derive(&MasterKey::from_bytes([3; 32]), mode);
            let mut b = PackBuilder::new();
            let mut blobs = Vec::new();
            for i in 0..5u8 {
                let plain = vec![i; 1000 + i as usize];
                let id = keys.blob_id(&plain);
                b.add(
                    BlobKind::Data,
                    id,
                    seal_blob(&keys, &id, &plain, Compression::Auto),
                    plain.len() as u32,
                );
                blobs.push((id, plain));
            }
            let (pack, entries) = b.finish(keys.sealer(), &[3, 1, 4, 0, 2]);
            assert_eq!(entries[0].id, blobs[3].0);
            let h = decode_pack(keys.sealer(), &pack, "p").unwrap();
            assert_eq!(h.entries, entries);
            for e in &h.entries {
                let sealed = &pack[e.offset as usize..(e.offset + e.length) as usize];
                let plain = open_blob(&keys, &e.id, sealed, e.raw_len, None).unwrap();
                assert!(blobs.iter().any(|(id, p)| *id == e.id && *p == plain));
                // A blob cannot be passed off under another id.
                let other = blobs.iter().find(|(id, _)| *id != e.id).unwrap().0;
                assert!(open_blob(&keys, &other, sealed, e.raw_len, None).is_err());
            }
            let mut bad = pack.clone();
            let n = bad.len();
            bad[n - 10] ^= 1;
            assert!(decode_pack(keys.sealer(), &bad, "p").is_err());
            assert!(decode_pack(keys.sealer(), &pack[..3], "p").is_err());
        }
    }

    #[test]
    fn delta_blobs_open_only_against_their_base_and_entries_keep_it() {
        for mode in [Encryption::Repokey, Encryption::None] {
            let keys = Keys::derive(&MasterKey::from_bytes([6; 32]), mode);
            let base: Vec<u8> = (0..3000u32)
                .flat_map(|i| format!("({i},'name {i}',{}),\n", i % 97).into_bytes())
                .collect();
            let mut plain = base.clone();
            plain[20_000..20_008].copy_from_slice(b"(1,'x'),");
            let (id, base_id) = (keys.blob_id(&plain), keys.blob_id(&base));
            let alone = seal_blob(&keys, &id, &plain, Compression::Auto);
            let delta = seal_blob_delta(&keys, &id, &plain, &base, Compression::Auto, alone.len())
                .expect("a delta against a near copy is smaller");
            assert!(
                delta.len() * 20 < alone.len(),
                "{} vs {}",
                delta.len(),
                alone.len()
            );
            let n = plain.len() as u32;
            assert_eq!(
                open_blob(&keys, &id, &delta, n, Some(&base)).unwrap(),
                plain
            );
            verify_blob(&keys, &id, &delta, n, Some(&base)).unwrap();
            assert!(open_blob(&keys, &id, &delta, n, None).is_err());
            // Against anything else it fails (or could only give bytes with the right id).
            assert!(open_blob(&keys, &id, &delta, n, Some(&base[..base.len() / 2])).is_err());
            assert!(open_blob(&keys, &id, &delta, n, Some(b"unrelated")).is_err());
            // A limit the delta does not beat: no delta.
            assert!(seal_blob_delta(&keys, &id, &plain, &base, Compression::Auto, 20).is_none());
            assert!(
                seal_blob_delta(&keys, &id, &plain, &base, Compression::Off, 1 << 20).is_none()
            );
            // In a pack, the entry carries the base through the header.
            let mut b = PackBuilder::new();
            b.add_entry(BlobKind::Data, id, delta, n, Some(base_id));
            b.add(
                BlobKind::Data,
                base_id,
                seal_blob(&keys, &base_id, &base, Compression::Auto),
                base.len() as u32,
            );
            let (pack, entries) = b.finish(keys.sealer(), &[0, 1]);
            let h = decode_pack(keys.sealer(), &pack, "p").unwrap();
            assert_eq!(h.entries, entries);
            assert_eq!(h.entries[0].base, Some(base_id));
            assert_eq!(h.entries[1].base, None);
        }
    }

    #[test]
    fn entry_encoding_without_a_base_is_unchanged_and_with_one_is_variant_two() {
        let mut e = PackEntry {
            kind: BlobKind::Data,
            id: Id([0xAA; 32]),
            offset: 5,
            length: 300,
            raw_len: 251,
            base: None,
        };
        let plain = encode(&e);
        assert_eq!(plain[0], 0); // Data
        assert_eq!(&plain[33..], &[5, 251, 44, 1, 251, 251, 0]);
        e.base = Some(Id([0xBB; 32]));
        let delta = encode(&e);
        assert_eq!(delta[0], 2); // DataDelta(base)
        assert_eq!(&delta[1..33], &[0xBB; 32]);
        assert_eq!(&delta[33..], &plain[1..]);
        let back: PackEntry = decode(&delta, "entry").unwrap();
        assert_eq!(back, e);
        // A tree entry has no base, whatever the struct says.
        e.kind = BlobKind::Tree;
        assert_eq!(encode(&e)[0], 1);
        let mut bad = delta.clone();
        bad[0] = 3;
        assert!(decode::<PackEntry>(&bad, "entry").is_err());
    }
}
