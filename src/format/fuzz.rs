//! Fuzz targets for every decoder of repository data (`fuzz/`, `tests/fuzz_seeds.rs`).
//!
//! One function per target, each taking arbitrary bytes. A function must return on every
//! input: a panic (including a failed assertion) is a bug, in the decoder or in an invariant
//! stated here. Keys are fixed (master key `[7; 32]`), and every input is tried in both
//! encryption modes. Authentication rejects nearly all arbitrary bytes, so for sealed objects
//! each input is also taken as the *plaintext*, sealed with the fixed key and decoded: that is
//! what lets the fuzzer reach the bincode decoders and the validation behind the seal.
//!
//! Invariants checked on whatever decodes: re-encoding and decoding again gives the same value,
//! validated structures satisfy their validation, and errors are of the kinds a caller expects
//! from damaged data (`Corrupt`, `UnsupportedVersion`, and `WrongPassword` from a key file).

use std::io::{self, Read};
use std::sync::OnceLock;

use super::condemned::Condemned;
use super::config::Config;
use super::index::IndexObject;
use super::keyfile::KeyFile;
use super::lease::Lease;
use super::pack::{self, PackHeader};
use super::snapshot::Snapshot;
use super::tree::{NodeKind, Tree};
use super::{Kind, Timestamp, decode, encode};
use crate::chunker::{Chunker, ChunkerParams};
use crate::crypto::{Encryption, KdfParams, Keys, MasterKey, NONCE_LEN, Sealer};
use crate::error::{ErrorKind, Result};
use crate::id::Id;

/// The master key of every fuzz target.
pub const MASTER: [u8; 32] = [7; 32];

/// The nonce of every seal the targets make: fixed, so a run is reproducible. (Nonce reuse is
/// harmless here: nothing is secret.)
const NONCE: [u8; NONCE_LEN] = [9; NONCE_LEN];

/// The largest master-key cost a fuzzed key file may make [`KeyFile::unlock`] spend. The
/// decoders accept up to 4 GiB / 64 passes (`KdfParams::validate`); running that per input
/// would stall the fuzzer, so larger parameters are decoded but not run.
pub const MAX_FUZZ_KDF_M_COST_KIB: u32 = 1024;
pub const MAX_FUZZ_KDF_T_COST: u32 = 2;

/// The password the seed key files are made with.
pub const PASSWORD: &[u8] = b"fuzz password";

/// Associated data of the master-key seal in a key file (format-spec/keyfile.md).
const MASTER_AD: &[u8] = b"CRNK\x01master";

/// The derived keys of [`MASTER`] in both modes: `[repokey, none]`.
pub fn keys() -> &'static [Keys; 2] {
    static KEYS: OnceLock<[Keys; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let m = MasterKey::from_bytes(MASTER);
        [
            Keys::derive(&m, Encryption::Repokey),
            Keys::derive(&m, Encryption::None),
        ]
    })
}

/// `header || seal(ad = header, body)` with the fixed nonce: the layout of config, snapshot,
/// index and lease objects (`format::seal_object`), reproducibly.
pub fn seal_object_fixed(kind: Kind, sealer: &Sealer, body: &[u8]) -> Vec<u8> {
    let header = kind.header();
    let mut out = header.to_vec();
    sealer.seal_into_with_nonce(&header, body, NONCE, &mut out);
    out
}

/// A seal with the fixed nonce.
pub fn seal_fixed(sealer: &Sealer, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    sealer.seal_into_with_nonce(ad, plaintext, NONCE, &mut out);
    out
}

/// A decoder's error must say the data is damaged, nothing else.
fn expect_damage<T>(r: &Result<T>, what: &str) {
    if let Err(e) = r {
        assert!(
            matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::UnsupportedVersion),
            "{what}: unexpected error kind {:?}: {e}",
            e.kind()
        );
    }
}

/// Decode `data` as a stored sealed object in both modes, and as the plaintext body of one
/// sealed with the fixed key; call `check` on everything that decodes.
fn sealed_object<T>(
    kind: Kind,
    data: &[u8],
    dec: impl Fn(&Sealer, &[u8]) -> Result<T>,
    check: impl Fn(&Sealer, &T),
) {
    for keys in keys() {
        let sealer = keys.sealer();
        let r = dec(sealer, data);
        expect_damage(&r, kind.name());
        if let Ok(v) = r {
            check(sealer, &v);
        }
        let sealed = seal_object_fixed(kind, sealer, data);
        let r = dec(sealer, &sealed);
        expect_damage(&r, kind.name());
        if let Ok(v) = r {
            // The plaintext decodes: it is a value, with no trailing bytes.
            check(sealer, &v);
        }
    }
}

fn check_timestamp(t: Timestamp) {
    let _ = t.to_rfc3339();
    let _ = t.as_nanos();
    if let Some(j) = t.to_jiff() {
        let _ = Timestamp::from_jiff(j);
    }
}

/// The config object: `Config::decode`.
pub fn config(data: &[u8]) {
    sealed_object(Kind::Config, data, Config::decode, |sealer, c| {
        assert!(c.validate().is_ok());
        let body = encode(c);
        let again = Config::decode(sealer, &seal_object_fixed(Kind::Config, sealer, &body))
            .expect("config round trip");
        assert_eq!(&again, c);
        // A valid config yields working chunkers and a sane blob bound.
        let gear = keys()[0].gear_table();
        for p in [c.chunker_files, c.chunker_dumps] {
            let chunker = Chunker::new(p, gear).expect("validated chunker parameters");
            let sample = [b'x'; 256];
            assert_eq!(chunker.chunk_all(&sample).concat(), sample);
            assert!(c.max_blob_size() >= p.max_size);
        }
        check_timestamp(c.created);
    });
}

/// Is the key file's KDF cheap enough to run in a fuzz run?
fn cheap_kdf(k: &KeyFile) -> bool {
    k.kdf_m_cost_kib <= MAX_FUZZ_KDF_M_COST_KIB && k.kdf_t_cost <= MAX_FUZZ_KDF_T_COST
}

fn check_unlock(k: &KeyFile) {
    if k.encryption == 1 && !cheap_kdf(k) {
        return;
    }
    match k.unlock(PASSWORD) {
        Ok(m) => {
            if k.encryption == 0 {
                assert_eq!(&m.as_bytes()[..], &k.master[..]);
            }
        }
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::WrongPassword),
            "unlock: unexpected error kind {:?}: {e}",
            e.kind()
        ),
    }
}

/// The key-encryption key of the seed key files: `KdfParams::INSECURE_FOR_TESTS`, salt
/// `[5; 32]`, [`PASSWORD`].
pub const KEYFILE_SALT: [u8; 32] = [5; 32];

fn kek() -> &'static [u8; 32] {
    static KEK: OnceLock<[u8; 32]> = OnceLock::new();
    KEK.get_or_init(|| {
        *KdfParams::INSECURE_FOR_TESTS
            .derive(PASSWORD, &KEYFILE_SALT)
            .expect("test KDF")
    })
}

/// A repokey key file (KDF `INSECURE_FOR_TESTS`, salt [`KEYFILE_SALT`], [`PASSWORD`]) whose
/// sealed master key is `master` (32 bytes for a valid one), sealed with the fixed nonce.
pub fn keyfile_sealing(master: &[u8]) -> KeyFile {
    KeyFile {
        encryption: 1,
        kdf_m_cost_kib: KdfParams::INSECURE_FOR_TESTS.m_cost_kib,
        kdf_t_cost: KdfParams::INSECURE_FOR_TESTS.t_cost,
        kdf_p_cost: KdfParams::INSECURE_FOR_TESTS.p_cost,
        salt: KEYFILE_SALT,
        created: Timestamp::new(1_800_000_000, 0),
        host: "fuzz".to_string(),
        username: "cairn".to_string(),
        master: seal_fixed(&Sealer::encrypting(kek()), MASTER_AD, master),
    }
}

/// Key files: `KeyFile::decode`, then `KeyFile::unlock` when its KDF is cheap; and the input
/// as the plaintext of the master-key seal of an otherwise valid key file.
pub fn keyfile(data: &[u8]) {
    let r = KeyFile::decode(data, "key file");
    expect_damage(&r, "key file");
    if let Ok(k) = r {
        assert!(k.encryption().is_ok());
        let again = KeyFile::decode(&k.encode(), "key file").expect("key file round trip");
        assert_eq!(again, k);
        check_timestamp(k.created);
        check_unlock(&k);
    }
    // The input as the body after the header: straight to bincode.
    let mut whole = Kind::Key.header().to_vec();
    whole.extend_from_slice(data);
    if let Ok(k) = KeyFile::decode(&whole, "key file") {
        check_unlock(&k);
    }
    // The input as the sealed master key.
    let k = keyfile_sealing(data);
    match k.unlock(PASSWORD) {
        Ok(m) => assert_eq!(&m.as_bytes()[..], data),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
            assert_ne!(data.len(), 32);
        }
    }
}

/// Snapshot objects: `Snapshot::decode`.
pub fn snapshot(data: &[u8]) {
    let dec = |s: &Sealer, d: &[u8]| Snapshot::decode(s, d, "snapshot");
    sealed_object(Kind::Snapshot, data, dec, |sealer, snap| {
        let again = dec(
            sealer,
            &seal_object_fixed(Kind::Snapshot, sealer, &encode(snap)),
        )
        .expect("snapshot round trip");
        assert_eq!(&again, snap);
        // What `snapshots --json` and the tables do with one.
        let _ = serde_json::to_string(snap).expect("snapshot to JSON");
        check_timestamp(snap.time);
        check_timestamp(snap.summary.backup_start);
        check_timestamp(snap.summary.backup_end);
    });
}

/// Index objects: `IndexObject::decode`.
pub fn index(data: &[u8]) {
    let dec = |s: &Sealer, d: &[u8]| IndexObject::decode(s, d, "index");
    sealed_object(Kind::Index, data, dec, |sealer, idx| {
        for p in &idx.packs {
            for e in &p.entries {
                assert!(e.offset as u64 + e.length as u64 <= p.size);
            }
        }
        let again = dec(
            sealer,
            &seal_object_fixed(Kind::Index, sealer, &encode(idx)),
        )
        .expect("index round trip");
        assert_eq!(&again, idx);
    });
}

fn check_tree(t: &Tree) {
    assert!(t.validate().is_ok());
    assert_eq!(
        &Tree::decode(&t.encode(), "tree").expect("tree round trip"),
        t
    );
    for n in &t.nodes {
        assert!(super::tree::valid_name(&n.name));
        // Sorted and unique: every name is found, as itself.
        assert_eq!(t.find(&n.name).map(|f| &f.name), Some(&n.name));
        if n.kind == NodeKind::File {
            assert_eq!(
                n.content.iter().map(|e| e.len() as u128).sum::<u128>(),
                n.size as u128
            );
        }
        let _ = n.name_lossy();
        let _ = serde_json::to_string(&n.kind);
        check_timestamp(n.mtime);
    }
}

/// Tree blobs: `Tree::decode` on the input, and on the input behind a valid header.
pub fn tree(data: &[u8]) {
    let r = Tree::decode(data, "tree");
    expect_damage(&r, "tree");
    if let Ok(t) = r {
        check_tree(&t);
    }
    let mut whole = Kind::Tree.header().to_vec();
    whole.extend_from_slice(data);
    let r = Tree::decode(&whole, "tree");
    expect_damage(&r, "tree");
    if let Ok(t) = r {
        check_tree(&t);
    }
}

/// Condemnation records: `Condemned::decode`.
pub fn condemned(data: &[u8]) {
    let dec = |s: &Sealer, d: &[u8]| Condemned::decode(s, d, "condemned");
    sealed_object(Kind::Condemned, data, dec, |sealer, c| {
        let again = dec(
            sealer,
            &seal_object_fixed(Kind::Condemned, sealer, &encode(c)),
        )
        .expect("condemnation record round trip");
        assert_eq!(&again, c);
        for p in &c.packs {
            check_timestamp(p.since);
        }
    });
}

/// Leases: `Lease::decode`.
pub fn lease(data: &[u8]) {
    let dec = |s: &Sealer, d: &[u8]| Lease::decode(s, d, "lease");
    sealed_object(Kind::Lease, data, dec, |sealer, l| {
        let again = dec(sealer, &seal_object_fixed(Kind::Lease, sealer, &encode(l)))
            .expect("lease round trip");
        assert_eq!(&again, l);
        for now in [
            l.refreshed,
            Timestamp::new(i64::MIN, 0),
            Timestamp::new(i64::MAX, 999_999_999),
        ] {
            let _ = l.is_stale(now);
        }
        check_timestamp(l.created);
        check_timestamp(l.refreshed);
    });
}

/// What every decoded pack header must satisfy in a pack whose header starts at `header_offset`.
fn check_pack_header(h: &PackHeader, header_offset: u64) {
    let mut spans: Vec<(u64, u64)> = h
        .entries
        .iter()
        .map(|e| (e.offset as u64, e.offset as u64 + e.length as u64))
        .collect();
    spans.sort_unstable();
    let mut end = pack::PACK_PREFIX as u64;
    for (s, e) in spans {
        assert!(s >= end && e <= header_offset && s < e, "bad span {s}..{e}");
        end = e;
    }
    assert_eq!(
        &decode::<PackHeader>(&encode(h), "pack header").expect("pack header round trip"),
        h
    );
}

/// Open every blob a decoded pack lists (authentication fails for fuzzed ones; what matters
/// is that slicing the pack by its header is safe).
fn open_pack_blobs(keys: &Keys, pack_bytes: &[u8], h: &PackHeader) {
    for e in &h.entries {
        let Some(sealed) =
            pack_bytes.get(e.offset as usize..(e.offset as usize + e.length as usize))
        else {
            panic!("entry beyond the pack");
        };
        let r = pack::open_blob(keys, &e.id, sealed, e.raw_len, e.base.map(|_| FUZZ_BASE));
        expect_damage(&r, "blob");
    }
}

fn decode_whole_pack(keys: &Keys, data: &[u8]) {
    let r = pack::decode_pack(keys.sealer(), data, "pack");
    expect_damage(&r, "pack");
    if let Ok(h) = r {
        let (off, _) = pack::header_range(data.len() as u64, &data[data.len() - 4..], "pack")
            .expect("header range");
        check_pack_header(&h, off);
        open_pack_blobs(keys, data, &h);
    }
}

/// Packs: `decode_pack` on the input; `header_range` + `decode_header` on the input as a pack
/// without its prefix checked (as a ranged read does); and the input as the plaintext of a
/// pack header (first 4 bytes: filler length before it) sealed into a pack.
pub fn pack(data: &[u8]) {
    for keys in keys() {
        let sealer = keys.sealer();
        decode_whole_pack(keys, data);
        // Ranged read: the trailer, then the header bytes it points at.
        if data.len() >= 4 {
            let r = pack::header_range(data.len() as u64, &data[data.len() - 4..], "pack");
            expect_damage(&r, "pack");
            if let Ok((off, len)) = r {
                assert!(off >= pack::PACK_PREFIX as u64 && off + len + 4 == data.len() as u64);
                let hdr = &data[off as usize..(off + len) as usize];
                let r = pack::decode_header(sealer, hdr, off, "pack");
                expect_damage(&r, "pack");
                if let Ok(h) = r {
                    check_pack_header(&h, off);
                }
            }
        }
        // Sealed plaintext header in a pack of filler.
        let (filler, body) = match data.split_first_chunk::<4>() {
            Some((f, rest)) => ((u32::from_le_bytes(*f) % (64 * 1024)) as usize, rest),
            None => (0, data),
        };
        let mut p = Kind::Pack.header().to_vec();
        p.resize(p.len() + filler, 0xAB);
        let start = p.len();
        sealer.seal_into_with_nonce(&Kind::PackHeader.header(), body, NONCE, &mut p);
        let hlen = (p.len() - start) as u32;
        p.extend_from_slice(&hlen.to_le_bytes());
        decode_whole_pack(keys, &p);
        let r = pack::decode_header(sealer, &p[start..p.len() - 4], start as u64, "pack");
        expect_damage(&r, "pack");
    }
}

/// The base plaintext every fuzzed delta blob is opened against (the seeds' delta blobs were
/// made against it).
pub const FUZZ_BASE: &[u8] =
    b"INSERT INTO `t` VALUES (1,'alpha',NULL),\n(2,'beta',0x00ff),\n(3,'gamma','\xc3\xa9'),\n";

/// Sealed blobs: `open_blob`. Input: `raw_len` (u32 LE), then the bytes. They are tried as a
/// sealed blob, and as the plaintext inside the seal (compression byte, payload): then the
/// blob is sealed under the id of what it should open to, and must open to exactly that.
pub fn blob(data: &[u8]) {
    let (raw_len, rest) = match data.split_first_chunk::<4>() {
        Some((l, rest)) => (u32::from_le_bytes(*l), rest),
        None => (0, data),
    };
    for keys in keys() {
        let id = Id([0x42; 32]);
        let r = pack::open_blob(keys, &id, rest, raw_len, Some(FUZZ_BASE));
        expect_damage(&r, "blob");
        if let Ok(p) = r {
            assert_eq!(keys.blob_id(&p), id);
        }
        // `rest` as the sealed plaintext. What it should open to, computed independently:
        // (No blob is longer than `MAX_BLOB_RAW`: `open_blob` refuses before decompressing.)
        let expected: Option<Vec<u8>> = match rest.split_first() {
            _ if raw_len > pack::MAX_BLOB_RAW => None,
            Some((&pack::BLOB_STORED, p)) => Some(p.to_vec()),
            Some((&pack::BLOB_ZSTD, z)) => crate::compress::decompress(z, raw_len as usize).ok(),
            Some((&pack::BLOB_ZSTD_DELTA, z)) => {
                let mut p = Vec::new();
                crate::compress::decompress_delta_into(z, FUZZ_BASE, raw_len as usize, &mut p)
                    .ok()
                    .map(|_| p)
            }
            _ => None,
        }
        .filter(|p| p.len() == raw_len as usize);
        let id = match &expected {
            Some(p) => keys.blob_id(p),
            None => id,
        };
        let sealed = seal_fixed(keys.sealer(), id.as_bytes(), rest);
        let r = pack::open_blob(keys, &id, &sealed, raw_len, Some(FUZZ_BASE));
        expect_damage(&r, "blob");
        match (&expected, r) {
            (Some(p), Ok(q)) => assert_eq!(p, &q),
            (None, Err(_)) => {}
            (Some(_), Err(e)) => panic!("a valid blob did not open: {e}"),
            (None, Ok(_)) => panic!("an invalid blob opened"),
        }
    }
}

/// A reader that hands out its data in pieces of varying size, with interruptions.
struct Trickle<'a> {
    data: &'a [u8],
    pattern: &'a [u8],
    step: usize,
    interrupted: bool,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let p = self
            .pattern
            .get(self.step % self.pattern.len().max(1))
            .copied()
            .unwrap_or(0);
        self.step += 1;
        if p == 0xFF && !self.interrupted {
            self.interrupted = true;
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        self.interrupted = false;
        let n = (p as usize * 37 + 1).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The chunker: `Chunker::chunk_all` and the streaming `ChunkStream`. Input: 8 bytes choosing
/// small valid parameters, the size hint and the read pattern, then the data. Chunks must
/// concatenate to the data, respect the size bounds, and be the same whole or streamed.
pub fn chunker(data: &[u8]) {
    let Some((head, input)) = data.split_first_chunk::<8>() else {
        return;
    };
    let avg = 1u32 << (8 + head[0] % 3); // 256 ..= 1024 (the smallest average the config allows)
    let min = 64 + 2 * (head[1] as u32 % ((avg - 64) / 2)); // 64 ..= avg - 2, even
    let max = avg + 2 + 2 * (head[2] as u32 * 4); // avg + 2 ..= avg + 2042, even
    let params = ChunkerParams {
        min_size: min,
        avg_size: avg,
        max_size: max,
        normalization: head[3] % 4,
        align_lines: head[3] & 4 != 0,
    };
    let chunker = Chunker::new(params, keys()[(head[3] >> 7) as usize].gear_table())
        .expect("valid chunker parameters");
    let whole = chunker.chunk_all(input);
    assert_eq!(whole.concat(), input);
    let mut start = 0;
    for (i, c) in whole.iter().enumerate() {
        assert!(
            !c.is_empty() && c.len() <= max as usize,
            "chunk of {} bytes",
            c.len()
        );
        if i + 1 < whole.len() {
            assert!(c.len() >= min as usize, "chunk of {} bytes", c.len());
        }
        let end = start + c.len();
        if params.align_lines && c.last() != Some(&b'\n') {
            // A cut is moved to just after the next newline within the maximum size.
            let reach = &input[end..input.len().min(start + max as usize)];
            assert!(!reach.contains(&b'\n'), "unaligned cut at {end}");
        }
        start = end;
    }
    let size_hint = match head[4] {
        0 => input.len() as u64,
        h => u64::from(h) * 97,
    };
    let batch_size = head[5] as usize * 64;
    let reader = Trickle {
        data: input,
        pattern: &head[6..],
        step: 0,
        interrupted: false,
    };
    let mut stream = chunker.stream(reader, batch_size, size_hint);
    let mut streamed = Vec::new();
    let mut batches = 0usize;
    while let Some(batch) = stream.next_batch().expect("reading from memory") {
        assert!(!batch.is_empty());
        streamed.extend(batch);
        batches += 1;
        assert!(batches <= input.len() + 1, "stream does not end");
    }
    assert_eq!(streamed.len(), whole.len());
    for (a, b) in streamed.iter().zip(&whole) {
        assert_eq!(&a[..], *b);
    }
}

/// A fuzz target: takes any bytes, returns or panics on a bug.
pub type Target = fn(&[u8]);

/// Every target by name, for the seed tests and tools.
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("keyfile", keyfile),
    ("snapshot", snapshot),
    ("index", index),
    ("tree", tree),
    ("lease", lease),
    ("condemned", condemned),
    ("pack", pack),
    ("blob", blob),
    ("chunker", chunker),
];
