//! Golden test vectors (format-spec/vectors/, described in its README.md).
//!
//! Each test decodes a vector file with the library's decoders, checks field values, then
//! re-encodes the decoded value and compares the result with the file byte for byte. Sealed
//! objects are re-sealed with the nonce found in the file. The normal run only reads files;
//!
//! ```text
//! cargo test --test format_vectors -- --ignored regenerate
//! ```
//!
//! rewrites them from the fixed inputs below (master key, salt, password, nonces, times).

use std::path::PathBuf;

use cairn::ErrorKind;
use cairn::chunker::{Chunker, ChunkerParams};
use cairn::compress::{self, Compression};
use cairn::crypto::{Encryption, KdfParams, Keys, MasterKey, NONCE_LEN, Sealer, TAG_LEN};
use cairn::format::condemned::{Condemned, CondemnedPack};
use cairn::format::config::Config;
use cairn::format::index::{IndexObject, IndexPack};
use cairn::format::keyfile::KeyFile;
use cairn::format::lease::{Lease, LeaseKind};
use cairn::format::pack::{
    self, BLOB_STORED, BLOB_ZSTD, BLOB_ZSTD_DELTA, BlobKind, PACK_PREFIX, PACK_TRAILER,
    PackBuilder, PackEntry, PackHeader,
};
use cairn::format::snapshot::{Snapshot, Summary};
use cairn::format::tree::{Extent, Node, NodeKind, Tree, Xattr};
use cairn::format::{self as fmt, Kind, Timestamp};
use cairn::id::Id;

// ---------------------------------------------------------------------------------------------
// Fixed inputs
// ---------------------------------------------------------------------------------------------

/// The master key of every vector: bytes 0x01..=0x20.
fn master_bytes() -> [u8; 32] {
    std::array::from_fn(|i| i as u8 + 1)
}

const PASSWORD: &[u8] = b"cairn-test-vector";
const KDF: KdfParams = KdfParams::INSECURE_FOR_TESTS;
/// Associated data of the master-key seal in a key file (format-spec/keyfile.md).
const MASTER_AD: &[u8] = b"CRNK\x01master";

/// The key file salt: bytes 0xa0..=0xbf.
fn salt() -> [u8; 32] {
    std::array::from_fn(|i| 0xa0 + i as u8)
}

/// The nonce of one sealed object: 24 copies of an ASCII letter.
fn nonce(tag: u8) -> [u8; NONCE_LEN] {
    [tag; NONCE_LEN]
}
const N_KEYFILE: u8 = b'K';
const N_CONFIG: u8 = b'C';
const N_SNAPSHOT: u8 = b'S';
const N_INDEX: u8 = b'I';
const N_LEASE: u8 = b'L';
const N_CONDEMNED: u8 = b'D';
const N_PACK_HEADER: u8 = b'H';
const N_BLOB_ZSTD: u8 = b'1';
const N_BLOB_STORED: u8 = b'2';
const N_BLOB_TREE: u8 = b'3';
const N_BLOB_BASE: u8 = b'4';
const N_BLOB_DELTA: u8 = b'5';
const N_DELTA_HEADER: u8 = b'G';

/// 2026-11-02T03:04:05.123456789Z
const T0: Timestamp = Timestamp {
    secs: 1_793_588_645,
    nanos: 123_456_789,
};

fn t(offset_secs: i64, nanos: u32) -> Timestamp {
    Timestamp::new(T0.secs + offset_secs, nanos)
}

const HOST: &str = "vector-host";
const USER: &str = "vector-user";

/// Permutation of the three blobs in the pack (added as zstd, stored, tree).
const PACK_ORDER: [usize; 3] = [2, 0, 1];

fn keys(mode: Encryption) -> Keys {
    Keys::derive(&MasterKey::from_bytes(master_bytes()), mode)
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors")
}

fn read(name: &str) -> Vec<u8> {
    let p = vectors_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with `cargo test --test format_vectors -- --ignored regenerate`)",
            p.display()
        )
    })
}

fn read_text(name: &str) -> String {
    String::from_utf8(read(name)).expect("UTF-8 text vector")
}

/// `header || seal(ad = header, body)` with a chosen nonce: `format::seal_object`'s layout.
fn seal_body(kind: Kind, sealer: &Sealer, body: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
    let header = kind.header();
    let mut out = header.to_vec();
    sealer.seal_into_with_nonce(&header, body, nonce, &mut out);
    out
}

/// The nonce of an encrypted seal that starts at `data[at..]`.
fn nonce_at(data: &[u8], at: usize) -> [u8; NONCE_LEN] {
    data[at..at + NONCE_LEN].try_into().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The values the vectors hold
// ---------------------------------------------------------------------------------------------

/// Plaintext of the compressible data blob: SQL rows.
fn data_zstd_plain() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..40 {
        out.extend_from_slice(
            format!("INSERT INTO `users` VALUES ({i},'user{i}','user{i}@example.com');\n")
                .as_bytes(),
        );
    }
    out
}

/// Plaintext of the delta blob: the zstd blob's rows with one changed and one appended.
fn data_delta_plain() -> Vec<u8> {
    let text = String::from_utf8(data_zstd_plain()).unwrap();
    let mut out = text.replace("'user7@example.com'", "'seven@example.org'");
    out.push_str("INSERT INTO `users` VALUES (40,'user40','user40@example.com');\n");
    out.into_bytes()
}

/// `pack-delta.bin`: the zstd data blob as a base, then a delta blob against it (in that
/// order), with its sealed header. Returns the pack and its header.
fn delta_pack(k: &Keys) -> (Vec<u8>, PackHeader) {
    let (base, plain) = (data_zstd_plain(), data_delta_plain());
    let (base_id, id) = (k.blob_id(&base), k.blob_id(&plain));
    let mut b = PackBuilder::new();
    let mut inner = vec![BLOB_ZSTD];
    inner.extend_from_slice(&compress::compress(&base, Compression::Auto).unwrap());
    let mut sealed = Vec::new();
    k.sealer()
        .seal_into_with_nonce(base_id.as_bytes(), &inner, nonce(N_BLOB_BASE), &mut sealed);
    b.add(BlobKind::Data, base_id, sealed, base.len() as u32);
    let mut inner = vec![BLOB_ZSTD_DELTA];
    assert!(compress::compress_delta_append(
        &plain,
        &base,
        Compression::Auto,
        &mut inner
    ));
    let mut sealed = Vec::new();
    k.sealer()
        .seal_into_with_nonce(id.as_bytes(), &inner, nonce(N_BLOB_DELTA), &mut sealed);
    b.add_entry(
        BlobKind::Data,
        id,
        sealed,
        plain.len() as u32,
        Some(base_id),
    );
    let (bytes, entries) = b.finish_with_nonce(k.sealer(), &[0, 1], nonce(N_DELTA_HEADER));
    (bytes, PackHeader { entries })
}

/// Plaintext of the incompressible data blob: 300 bytes of BLAKE3 output.
fn data_stored_plain() -> Vec<u8> {
    let mut out = vec![0u8; 300];
    blake3::Hasher::new()
        .update(b"cairn stored blob")
        .finalize_xof()
        .fill(&mut out);
    out
}

/// The chunker input: 4 MiB of BLAKE3 extendable output of a fixed string.
fn chunker_input() -> Vec<u8> {
    let mut out = vec![0u8; 4 * 1024 * 1024];
    blake3::Hasher::new()
        .update(b"cairn chunker test vector")
        .finalize_xof()
        .fill(&mut out);
    out
}

fn empty_tree_plain() -> Vec<u8> {
    Tree::default().encode()
}

fn expected_tree(k: &Keys) -> Tree {
    let z = data_zstd_plain();
    let s = data_stored_plain();
    let mut dir = Node::new(b"a-dir".to_vec(), NodeKind::Dir);
    dir.mode = 0o755;
    dir.uid = 33;
    dir.gid = 33;
    dir.user = "www-data".into();
    dir.group = "www-data".into();
    dir.mtime = t(-3600, 1);
    dir.atime = t(-60, 2);
    dir.ctime = t(-3600, 3);
    dir.dev = 2049;
    dir.inode = 131;
    dir.links = 3;
    dir.subtree = Some(k.blob_id(&empty_tree_plain()));

    let mut file = Node::new(b"b-file".to_vec(), NodeKind::File);
    file.mode = 0o640;
    file.uid = 1000;
    file.gid = 1001;
    file.user = "deploy".into();
    file.group = "deploy".into();
    file.mtime = t(-7200, 500_000_000);
    file.atime = t(-7200, 500_000_001);
    file.ctime = t(-7100, 0);
    file.dev = 2049;
    file.inode = 132;
    file.links = 1;
    file.content = vec![
        Extent::Data {
            id: k.blob_id(&z),
            len: z.len() as u32,
        },
        Extent::Hole(4096),
        Extent::Data {
            id: k.blob_id(&s),
            len: s.len() as u32,
        },
    ];
    file.size = z.len() as u64 + 4096 + s.len() as u64;
    file.xattrs = vec![
        Xattr {
            name: b"user.comment".to_vec(),
            value: b"golden".to_vec(),
        },
        Xattr {
            name: b"user.mime_type".to_vec(),
            value: b"text/x-sql".to_vec(),
        },
    ];

    let mut link = Node::new(b"c-link".to_vec(), NodeKind::Symlink);
    link.mode = 0o777;
    link.uid = 1000;
    link.gid = 1001;
    link.user = "deploy".into();
    link.group = "deploy".into();
    link.mtime = t(-10, 0);
    link.atime = t(-10, 0);
    link.ctime = t(-10, 0);
    link.dev = 2049;
    link.inode = 133;
    link.links = 1;
    link.target = b"b-file".to_vec();

    let mut fifo = Node::new(b"d-fifo".to_vec(), NodeKind::Fifo);
    fifo.mode = 0o600;
    fifo.mtime = t(-20, 0);
    fifo.atime = t(-20, 0);
    fifo.ctime = t(-20, 0);
    fifo.dev = 2049;
    fifo.inode = 134;
    fifo.links = 1;

    let mut tty = Node::new(b"e-tty".to_vec(), NodeKind::CharDev);
    tty.mode = 0o620;
    tty.gid = 5;
    tty.user = "root".into();
    tty.group = "tty".into();
    tty.mtime = t(-30, 0);
    tty.atime = t(-30, 0);
    tty.ctime = t(-30, 0);
    tty.dev = 5;
    tty.inode = 5_000_000_000;
    tty.links = 1;
    tty.rdev = 0x0401;

    // "\xff\xfe-caf\xe9": not UTF-8 (Latin-1), an empty file dated before the epoch.
    let mut odd = Node::new(b"\xff\xfe-caf\xe9".to_vec(), NodeKind::File);
    odd.mode = 0o4755;
    odd.uid = 65534;
    odd.gid = 65534;
    odd.user = "nobody".into();
    odd.group = "nogroup".into();
    odd.mtime = Timestamp::new(-86_400, 0);
    odd.atime = Timestamp::new(-1, 999_999_999);
    odd.ctime = t(0, 0);
    odd.dev = 2049;
    odd.inode = 135;
    odd.links = 2;

    Tree {
        nodes: vec![dir, file, link, fifo, tty, odd],
    }
}

fn expected_config() -> Config {
    Config {
        repo_id: Id(std::array::from_fn(|i| 0x30 + i as u8)),
        created: T0,
        chunker_files: ChunkerParams::FILES,
        chunker_dumps: ChunkerParams::DUMPS_64K,
        pack_size: Config::DEFAULT_PACK_SIZE,
    }
}

fn expected_snapshot(k: &Keys) -> Snapshot {
    Snapshot {
        time: T0,
        tree: k.blob_id(&expected_tree(k).encode()),
        paths: vec!["/srv/app".into(), "/var/backups/mysql".into()],
        host: HOST.into(),
        username: USER.into(),
        uid: 1000,
        gid: 1001,
        tags: vec!["nightly".into(), "laravel".into()],
        parent: Some(Id([0x9a; 32])),
        source: "files".into(),
        program: "cairn 0.1.0".into(),
        summary: Summary {
            backup_start: t(-95, 1),
            backup_end: t(-5, 2),
            files_new: 1,
            files_changed: 250,
            files_unmodified: 251,
            dirs: 65_535,
            other_nodes: 65_536,
            errors: 3,
            total_files: 4_294_967_295,
            total_bytes: 4_294_967_296,
            bytes_read: 12_345_678,
            data_blobs_added: 17,
            tree_blobs_added: 4,
            new_data_bytes: 987_654_321,
            stored_bytes_added: 123_456_789_012,
            packs_added: 2,
        },
        meta: vec![
            ("binlog_file".into(), "mysql-bin.000042".into()),
            ("binlog_pos".into(), "1337".into()),
        ],
    }
}

/// The second, made-up pack of the index vector.
fn other_index_pack() -> IndexPack {
    IndexPack {
        id: Id([0x77; 32]),
        size: 20_000_000,
        entries: vec![
            PackEntry {
                kind: BlobKind::Data,
                id: Id([0x88; 32]),
                offset: 5,
                length: 1_048_616,
                raw_len: 1_048_576,
                base: None,
            },
            PackEntry {
                kind: BlobKind::Tree,
                id: Id([0x99; 32]),
                offset: 1_048_621,
                length: 300,
                raw_len: 700,
                base: None,
            },
        ],
    }
}

fn superseded_index() -> Id {
    Id([0x5e; 32])
}

fn expected_condemned() -> Condemned {
    Condemned {
        supersedes: vec![superseded_index()],
        packs: vec![
            CondemnedPack {
                id: Id([0xc1; 32]),
                since: T0,
            },
            CondemnedPack {
                id: Id([0xc2; 32]),
                since: t(3600, 0),
            },
        ],
    }
}

fn expected_lease() -> Lease {
    Lease {
        kind: LeaseKind::Exclusive,
        operation: "prune".into(),
        host: HOST.into(),
        username: USER.into(),
        pid: 4242,
        pid_space: "0123456789abcdef0123456789abcdef/pid:[4026531836]".into(),
        created: T0,
        refreshed: t(60, 0),
        ttl_secs: 300,
        nonce: std::array::from_fn(|i| 0xf0 + i as u8),
    }
}

fn chunk_lengths(params: ChunkerParams, k: &Keys, data: &[u8]) -> String {
    let c = Chunker::new(params, k.gear_table()).unwrap();
    let mut s = String::new();
    for ch in c.chunk_all(data) {
        s.push_str(&format!("{}\n", ch.len()));
    }
    s
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

/// Every vector file, built from the fixed inputs.
fn build_all() -> Vec<(String, Vec<u8>)> {
    let k = keys(Encryption::Repokey);
    let kn = keys(Encryption::None);
    let master = master_bytes();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut put = |name: &str, data: Vec<u8>| files.push((name.to_string(), data));

    put("master-key.hex", format!("{}\n", hex(&master)).into_bytes());

    // Key files.
    let kek = KDF.derive(PASSWORD, &salt()).unwrap();
    let mut sealed_master = Vec::new();
    Sealer::encrypting(&kek).seal_into_with_nonce(
        MASTER_AD,
        &master,
        nonce(N_KEYFILE),
        &mut sealed_master,
    );
    let keyfile = KeyFile {
        encryption: 1,
        kdf_m_cost_kib: KDF.m_cost_kib,
        kdf_t_cost: KDF.t_cost,
        kdf_p_cost: KDF.p_cost,
        salt: salt(),
        created: T0,
        host: HOST.into(),
        username: USER.into(),
        master: sealed_master,
    };
    put("keyfile-repokey.bin", keyfile.encode());
    let keyfile_none = KeyFile::create(
        &MasterKey::from_bytes(master),
        Encryption::None,
        b"",
        KDF,
        salt(),
        T0,
        HOST.into(),
        USER.into(),
    )
    .unwrap();
    put("keyfile-none.bin", keyfile_none.encode());

    // Config.
    let config = expected_config();
    put("config.plain.bin", fmt::encode(&config));
    put(
        "config-repokey.bin",
        seal_body(
            Kind::Config,
            k.sealer(),
            &fmt::encode(&config),
            nonce(N_CONFIG),
        ),
    );
    put("config-none.bin", config.encode(kn.sealer()));

    // Tree.
    let tree = expected_tree(&k).encode();
    put("tree.bin", tree.clone());

    // Pack: a zstd data blob, a stored data blob and the tree blob.
    let mut b = PackBuilder::new();
    for (kind, plain, n) in [
        (BlobKind::Data, data_zstd_plain(), N_BLOB_ZSTD),
        (BlobKind::Data, data_stored_plain(), N_BLOB_STORED),
        (BlobKind::Tree, tree.clone(), N_BLOB_TREE),
    ] {
        let id = k.blob_id(&plain);
        let mut inner = Vec::new();
        match compress::compress(&plain, Compression::Auto) {
            Some(c) => {
                inner.push(BLOB_ZSTD);
                inner.extend_from_slice(&c);
            }
            None => {
                inner.push(BLOB_STORED);
                inner.extend_from_slice(&plain);
            }
        }
        let mut sealed = Vec::new();
        k.sealer()
            .seal_into_with_nonce(id.as_bytes(), &inner, nonce(n), &mut sealed);
        b.add(kind, id, sealed, plain.len() as u32);
    }
    let (pack_bytes, entries) = b.finish_with_nonce(k.sealer(), &PACK_ORDER, nonce(N_PACK_HEADER));
    let header = PackHeader {
        entries: entries.clone(),
    };
    let (hoff, hlen) = pack::header_range(
        pack_bytes.len() as u64,
        &pack_bytes[pack_bytes.len() - PACK_TRAILER..],
        "pack",
    )
    .unwrap();
    put("pack.bin", pack_bytes.clone());
    put(
        "pack-header.bin",
        pack_bytes[hoff as usize..(hoff + hlen) as usize].to_vec(),
    );
    put("pack-header.plain.bin", fmt::encode(&header));
    let (delta_bytes, delta_header) = delta_pack(&k);
    put("pack-delta.bin", delta_bytes);
    put("pack-delta-header.plain.bin", fmt::encode(&delta_header));

    // Index.
    let index = IndexObject {
        supersedes: vec![superseded_index()],
        packs: vec![
            IndexPack {
                id: Id::of_bytes(&pack_bytes),
                size: pack_bytes.len() as u64,
                entries,
            },
            other_index_pack(),
        ],
    };
    put("index.plain.bin", fmt::encode(&index));
    put(
        "index.bin",
        seal_body(
            Kind::Index,
            k.sealer(),
            &fmt::encode(&index),
            nonce(N_INDEX),
        ),
    );

    // Snapshot.
    let snap = expected_snapshot(&k);
    put("snapshot.plain.bin", fmt::encode(&snap));
    put(
        "snapshot.bin",
        seal_body(
            Kind::Snapshot,
            k.sealer(),
            &fmt::encode(&snap),
            nonce(N_SNAPSHOT),
        ),
    );

    // Lease.
    let lease = expected_lease();
    put("lease.plain.bin", fmt::encode(&lease));
    put(
        "lease.bin",
        seal_body(
            Kind::Lease,
            k.sealer(),
            &fmt::encode(&lease),
            nonce(N_LEASE),
        ),
    );

    // Condemnation record.
    let cond = expected_condemned();
    put("condemned.plain.bin", fmt::encode(&cond));
    put(
        "condemned.bin",
        seal_body(
            Kind::Condemned,
            k.sealer(),
            &fmt::encode(&cond),
            nonce(N_CONDEMNED),
        ),
    );

    // Chunker.
    let input = chunker_input();
    put(
        "chunks-files.txt",
        chunk_lengths(ChunkerParams::FILES, &k, &input).into_bytes(),
    );
    put(
        "chunks-dumps.txt",
        chunk_lengths(ChunkerParams::DUMPS_64K, &k, &input).into_bytes(),
    );
    let mut gear = String::new();
    for v in k.gear_table() {
        gear.push_str(&format!("{v:016x}\n"));
    }
    put("gear-table.txt", gear.into_bytes());

    // Derived values: subkeys, the password key, blob ids and object names.
    let mut d = String::new();
    d.push_str("# Derived from master-key.hex; checked by tests/format_vectors.rs.\n");
    d.push_str(&format!("kek {}\n", hex(&kek[..])));
    for (name, ctx) in SUBKEY_CONTEXTS {
        d.push_str(&format!(
            "{name} {}\n",
            hex(&blake3::derive_key(ctx, &master))
        ));
    }
    for (name, plain) in [
        ("blob-id.data-zstd", data_zstd_plain()),
        ("blob-id.data-stored", data_stored_plain()),
        ("blob-id.tree", tree),
        ("blob-id.empty-tree", empty_tree_plain()),
    ] {
        d.push_str(&format!("{name} {}\n", k.blob_id(&plain)));
    }
    let mut names = String::new();
    for (name, data) in &files {
        if name.ends_with(".bin") && !name.ends_with(".plain.bin") && name != "pack-header.bin" {
            names.push_str(&format!("name.{name} {}\n", Id::of_bytes(data)));
        }
    }
    d.push_str(&names);
    files.push(("derived.txt".into(), d.into_bytes()));
    files
}

/// The `blake3::derive_key` context of each subkey (format-spec/crypto.md §2).
const SUBKEY_CONTEXTS: [(&str, &str); 4] = [
    ("enc-key", "cairn 2026-11 v1 encryption key"),
    ("id-key", "cairn 2026-11 v1 blob id key"),
    ("mac-key", "cairn 2026-11 v1 integrity mac key"),
    ("chunker-key", "cairn 2026-11 v1 chunker gear key"),
];

#[test]
#[ignore = "rewrites format-spec/vectors/; run explicitly after a deliberate format change"]
fn regenerate() {
    let dir = vectors_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data) in build_all() {
        std::fs::write(dir.join(&name), data).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

/// `derived.txt` as (name, hex value) pairs.
fn derived(name: &str) -> String {
    for line in read_text("derived.txt").lines() {
        if let Some((k, v)) = line.split_once(' ')
            && k == name
        {
            return v.to_string();
        }
    }
    panic!("derived.txt has no {name}")
}

fn derived_key(name: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(derived(name), &mut out).unwrap();
    out
}

fn derived_id(name: &str) -> Id {
    derived(name).parse().unwrap()
}

/// A reader must refuse the object when its version byte is unknown.
fn assert_rejects_version_2(data: &[u8], decode: impl Fn(&[u8]) -> cairn::Result<()>) {
    let mut bad = data.to_vec();
    bad[4] = 2;
    let e = decode(&bad).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnsupportedVersion, "{e}");
    let mut bad = data.to_vec();
    bad[0] ^= 0x20;
    assert_eq!(decode(&bad).unwrap_err().kind(), ErrorKind::Corrupt);
}

#[test]
fn master_key_and_subkeys() {
    assert_eq!(read_text("master-key.hex").trim(), hex(&master_bytes()));
    // The subkeys in derived.txt are what the library uses: each opens or reproduces
    // something made through `Keys`.
    let enc = derived_key("enc-key");
    let mac = derived_key("mac-key");
    let id = derived_key("id-key");
    let chunker = derived_key("chunker-key");
    for (name, ctx) in SUBKEY_CONTEXTS {
        assert_eq!(
            derived_key(name),
            blake3::derive_key(ctx, &master_bytes()),
            "{name}"
        );
    }
    let config = read("config-repokey.bin");
    Config::decode(&Sealer::encrypting(&enc), &config).unwrap();
    let config = read("config-none.bin");
    Config::decode(&Sealer::integrity_only(&mac), &config).unwrap();
    let k = keys(Encryption::Repokey);
    assert_eq!(
        k.blob_id(b"abc"),
        Id(*blake3::keyed_hash(&id, b"abc").as_bytes())
    );
    let mut gear = [0u8; 2048];
    blake3::Hasher::new_keyed(&chunker)
        .update(b"gear")
        .finalize_xof()
        .fill(&mut gear);
    let table: Vec<u64> = gear
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(table, k.gear_table().to_vec());
    let text: Vec<u64> = read_text("gear-table.txt")
        .lines()
        .map(|l| u64::from_str_radix(l, 16).unwrap())
        .collect();
    assert_eq!(text, table);
    // The password key: Argon2id v0x13 over the password and salt.
    let kek = KDF.derive(PASSWORD, &salt()).unwrap();
    assert_eq!(derived_key("kek"), *kek);
}

#[test]
fn object_names() {
    for line in read_text("derived.txt").lines() {
        let Some((k, v)) = line.split_once(' ') else {
            continue;
        };
        if let Some(file) = k.strip_prefix("name.") {
            assert_eq!(Id::of_bytes(&read(file)).to_string(), v, "{file}");
        }
    }
    // Every object vector is named.
    for f in [
        "keyfile-repokey.bin",
        "keyfile-none.bin",
        "config-repokey.bin",
        "config-none.bin",
        "snapshot.bin",
        "index.bin",
        "lease.bin",
        "pack.bin",
        "tree.bin",
    ] {
        derived(&format!("name.{f}"));
    }
}

#[test]
fn keyfile_repokey() {
    let data = read("keyfile-repokey.bin");
    assert_eq!(&data[..5], b"CRNK\x01");
    let kf = KeyFile::decode(&data, "keys/v").unwrap();
    assert_eq!(kf.encryption, 1);
    assert_eq!(kf.encryption().unwrap(), Encryption::Repokey);
    assert_eq!(
        (kf.kdf_m_cost_kib, kf.kdf_t_cost, kf.kdf_p_cost),
        (64, 1, 1)
    );
    assert_eq!(kf.salt, salt());
    assert_eq!(kf.created, Timestamp::new(1_793_588_645, 123_456_789));
    assert_eq!(kf.host, "vector-host");
    assert_eq!(kf.username, "vector-user");
    assert_eq!(kf.master.len(), NONCE_LEN + 32 + TAG_LEN);
    assert_eq!(nonce_at(&kf.master, 0), nonce(N_KEYFILE));

    let master = kf.unlock(PASSWORD).unwrap();
    assert_eq!(*master.as_bytes(), master_bytes());
    assert_eq!(
        kf.unlock(b"not the password").unwrap_err().kind(),
        ErrorKind::WrongPassword
    );

    // Re-encode: the sealed master key, then the whole file.
    let kek = kf.kdf().derive(PASSWORD, &kf.salt).unwrap();
    let mut resealed = Vec::new();
    Sealer::encrypting(&kek).seal_into_with_nonce(
        MASTER_AD,
        master.as_bytes(),
        nonce_at(&kf.master, 0),
        &mut resealed,
    );
    assert_eq!(resealed, kf.master);
    assert_eq!(kf.encode(), data);
    assert_rejects_version_2(&data, |d| KeyFile::decode(d, "k").map(|_| ()));
}

#[test]
fn keyfile_none() {
    let data = read("keyfile-none.bin");
    let kf = KeyFile::decode(&data, "keys/v").unwrap();
    assert_eq!(kf.encryption, 0);
    assert_eq!(kf.encryption().unwrap(), Encryption::None);
    assert_eq!(kf.salt, salt());
    assert_eq!(kf.created, T0);
    assert_eq!(kf.host, "vector-host");
    // The bare master key: integrity-only repositories do not protect it.
    assert_eq!(kf.master, master_bytes().to_vec());
    assert_eq!(*kf.unlock(b"ignored").unwrap().as_bytes(), master_bytes());
    let again = KeyFile::create(
        &MasterKey::from_bytes(master_bytes()),
        Encryption::None,
        b"",
        kf.kdf(),
        kf.salt,
        kf.created,
        kf.host.clone(),
        kf.username.clone(),
    )
    .unwrap();
    assert_eq!(again, kf);
    assert_eq!(kf.encode(), data);
}

fn check_config_fields(c: &Config) {
    assert_eq!(&c.repo_id.to_string()[..8], "30313233");
    assert_eq!(c.created, T0);
    let f = c.chunker_files;
    assert_eq!(
        (
            f.min_size,
            f.avg_size,
            f.max_size,
            f.normalization,
            f.align_lines
        ),
        (524_288, 1_048_576, 8_388_608, 1, false)
    );
    let d = c.chunker_dumps;
    assert_eq!(
        (
            d.min_size,
            d.avg_size,
            d.max_size,
            d.normalization,
            d.align_lines
        ),
        (16_384, 65_536, 1_048_576, 1, true)
    );
    assert_eq!(c.pack_size, 16_777_216);
    assert_eq!(*c, expected_config());
}

#[test]
fn config_repokey() {
    let k = keys(Encryption::Repokey);
    let data = read("config-repokey.bin");
    assert_eq!(&data[..5], b"CRNC\x01");
    let c = Config::decode(k.sealer(), &data).unwrap();
    check_config_fields(&c);
    let plain = read("config.plain.bin");
    assert_eq!(fmt::decode::<Config>(&plain, "config").unwrap(), c);
    assert_eq!(fmt::encode(&c), plain);
    assert_eq!(data.len(), 5 + NONCE_LEN + plain.len() + TAG_LEN);
    assert_eq!(
        seal_body(Kind::Config, k.sealer(), &plain, nonce_at(&data, 5)),
        data
    );
    assert_eq!(nonce_at(&data, 5), nonce(N_CONFIG));
    // The seal is bound to its associated data (the 5-byte header).
    assert!(k.sealer().open(b"CRNS\x01", &data[5..]).is_err());
    assert_rejects_version_2(&data, |d| Config::decode(k.sealer(), d).map(|_| ()));
    // The integrity-only key cannot open it, and vice versa.
    assert!(Config::decode(keys(Encryption::None).sealer(), &data).is_err());
}

#[test]
fn config_none() {
    let k = keys(Encryption::None);
    let data = read("config-none.bin");
    let c = Config::decode(k.sealer(), &data).unwrap();
    check_config_fields(&c);
    // Integrity only: the body is in the clear, followed by a 16-byte MAC.
    let plain = read("config.plain.bin");
    assert_eq!(&data[..5], b"CRNC\x01");
    assert_eq!(&data[5..data.len() - TAG_LEN], &plain[..]);
    let mut mac_input = 5u64.to_le_bytes().to_vec();
    mac_input.extend_from_slice(b"CRNC\x01");
    mac_input.extend_from_slice(&plain);
    let mac = blake3::keyed_hash(&derived_key("mac-key"), &mac_input);
    assert_eq!(&data[data.len() - TAG_LEN..], &mac.as_bytes()[..TAG_LEN]);
    assert_eq!(c.encode(k.sealer()), data);
    assert!(Config::decode(keys(Encryption::Repokey).sealer(), &data).is_err());
    assert_rejects_version_2(&data, |d| Config::decode(k.sealer(), d).map(|_| ()));
}

#[test]
fn snapshot() {
    let k = keys(Encryption::Repokey);
    let data = read("snapshot.bin");
    assert_eq!(&data[..5], b"CRNS\x01");
    let s = Snapshot::decode(k.sealer(), &data, "snapshots/v").unwrap();
    assert_eq!(s.time, T0);
    assert_eq!(s.tree, derived_id("blob-id.tree"));
    assert_eq!(s.paths, ["/srv/app", "/var/backups/mysql"]);
    assert_eq!(s.host, "vector-host");
    assert_eq!(s.username, "vector-user");
    assert_eq!((s.uid, s.gid), (1000, 1001));
    assert_eq!(s.tags, ["nightly", "laravel"]);
    assert_eq!(s.parent, Some(Id([0x9a; 32])));
    assert_eq!(s.source, "files");
    assert_eq!(s.program, "cairn 0.1.0");
    let m = &s.summary;
    assert_eq!(m.backup_start, Timestamp::new(1_793_588_550, 1));
    assert_eq!(m.backup_end, Timestamp::new(1_793_588_640, 2));
    assert_eq!(
        [
            m.files_new,
            m.files_changed,
            m.files_unmodified,
            m.dirs,
            m.other_nodes,
            m.errors,
            m.total_files,
            m.total_bytes,
            m.bytes_read,
            m.data_blobs_added,
            m.tree_blobs_added,
            m.new_data_bytes,
            m.stored_bytes_added,
            m.packs_added,
        ],
        [
            1,
            250,
            251,
            65_535,
            65_536,
            3,
            4_294_967_295,
            4_294_967_296,
            12_345_678,
            17,
            4,
            987_654_321,
            123_456_789_012,
            2
        ]
    );
    assert_eq!(
        s.meta,
        [
            ("binlog_file".to_string(), "mysql-bin.000042".to_string()),
            ("binlog_pos".to_string(), "1337".to_string()),
        ]
    );
    assert_eq!(s, expected_snapshot(&k));
    let plain = read("snapshot.plain.bin");
    assert_eq!(fmt::encode(&s), plain);
    assert_eq!(fmt::decode::<Snapshot>(&plain, "s").unwrap(), s);
    assert_eq!(nonce_at(&data, 5), nonce(N_SNAPSHOT));
    assert_eq!(
        seal_body(Kind::Snapshot, k.sealer(), &plain, nonce_at(&data, 5)),
        data
    );
    assert_rejects_version_2(&data, |d| Snapshot::decode(k.sealer(), d, "s").map(|_| ()));
}

#[test]
fn index() {
    let k = keys(Encryption::Repokey);
    let data = read("index.bin");
    assert_eq!(&data[..5], b"CRNI\x01");
    let idx = IndexObject::decode(k.sealer(), &data, "index/v").unwrap();
    assert_eq!(idx.supersedes, [Id([0x5e; 32])]);
    assert_eq!(idx.packs.len(), 2);
    let pack = read("pack.bin");
    let p0 = &idx.packs[0];
    assert_eq!(p0.id, Id::of_bytes(&pack));
    assert_eq!(p0.id, derived_id("name.pack.bin"));
    assert_eq!(p0.size, pack.len() as u64);
    let header = pack::decode_pack(k.sealer(), &pack, "pack").unwrap();
    assert_eq!(p0.entries, header.entries);
    let p1 = &idx.packs[1];
    assert_eq!(p1.id, Id([0x77; 32]));
    assert_eq!(p1.size, 20_000_000);
    assert_eq!(p1.entries[0].kind, BlobKind::Data);
    assert_eq!(p1.entries[0].id, Id([0x88; 32]));
    assert_eq!(
        (
            p1.entries[0].offset,
            p1.entries[0].length,
            p1.entries[0].raw_len
        ),
        (5, 1_048_616, 1_048_576)
    );
    assert_eq!(p1.entries[1].kind, BlobKind::Tree);
    assert_eq!(
        (
            p1.entries[1].offset,
            p1.entries[1].length,
            p1.entries[1].raw_len
        ),
        (1_048_621, 300, 700)
    );
    assert_eq!(*p1, other_index_pack());
    let plain = read("index.plain.bin");
    assert_eq!(fmt::encode(&idx), plain);
    assert_eq!(nonce_at(&data, 5), nonce(N_INDEX));
    assert_eq!(
        seal_body(Kind::Index, k.sealer(), &plain, nonce_at(&data, 5)),
        data
    );
    assert_rejects_version_2(&data, |d| {
        IndexObject::decode(k.sealer(), d, "i").map(|_| ())
    });
}

#[test]
fn lease() {
    let k = keys(Encryption::Repokey);
    let data = read("lease.bin");
    assert_eq!(&data[..5], b"CRNL\x01");
    let l = Lease::decode(k.sealer(), &data, "locks/v").unwrap();
    assert_eq!(l.kind, LeaseKind::Exclusive);
    assert_eq!(l.operation, "prune");
    assert_eq!(l.host, "vector-host");
    assert_eq!(l.username, "vector-user");
    assert_eq!(l.pid, 4242);
    assert_eq!(l.created, T0);
    assert_eq!(l.refreshed, Timestamp::new(1_793_588_705, 0));
    assert_eq!(l.ttl_secs, 300);
    assert_eq!(l.nonce[0], 0xf0);
    assert_eq!(l.nonce[15], 0xff);
    assert_eq!(l, expected_lease());
    // Stale strictly after refreshed + ttl (whole seconds).
    assert!(!l.is_stale(Timestamp::new(1_793_588_705 + 300, 999_999_999)));
    assert!(l.is_stale(Timestamp::new(1_793_588_705 + 301, 0)));
    let plain = read("lease.plain.bin");
    assert_eq!(fmt::encode(&l), plain);
    assert_eq!(nonce_at(&data, 5), nonce(N_LEASE));
    assert_eq!(
        seal_body(Kind::Lease, k.sealer(), &plain, nonce_at(&data, 5)),
        data
    );
    assert_rejects_version_2(&data, |d| Lease::decode(k.sealer(), d, "l").map(|_| ()));
}

#[test]
fn condemned() {
    let k = keys(Encryption::Repokey);
    let data = read("condemned.bin");
    assert_eq!(&data[..5], b"CRND\x01");
    let c = Condemned::decode(k.sealer(), &data, "condemned/v").unwrap();
    assert_eq!(c, expected_condemned());
    let plain = read("condemned.plain.bin");
    assert_eq!(fmt::encode(&c), plain);
    // supersedes: one id; packs: two (id, since).
    assert_eq!(plain[0], 1);
    assert_eq!(&plain[1..33], &[0x5e; 32]);
    assert_eq!(plain[33], 2);
    assert_eq!(&plain[34..66], &[0xc1; 32]);
    assert_eq!(nonce_at(&data, 5), nonce(N_CONDEMNED));
    assert_eq!(
        seal_body(Kind::Condemned, k.sealer(), &plain, nonce_at(&data, 5)),
        data
    );
    assert_rejects_version_2(&data, |d| Condemned::decode(k.sealer(), d, "c").map(|_| ()));
}

#[test]
fn tree() {
    let k = keys(Encryption::Repokey);
    let data = read("tree.bin");
    assert_eq!(&data[..5], b"CRNT\x01");
    let t = Tree::decode(&data, "tree").unwrap();
    let names: Vec<&[u8]> = t.nodes.iter().map(|n| n.name.as_slice()).collect();
    assert_eq!(
        names,
        [
            &b"a-dir"[..],
            b"b-file",
            b"c-link",
            b"d-fifo",
            b"e-tty",
            b"\xff\xfe-caf\xe9"
        ]
    );
    let kinds: Vec<NodeKind> = t.nodes.iter().map(|n| n.kind).collect();
    assert_eq!(
        kinds,
        [
            NodeKind::Dir,
            NodeKind::File,
            NodeKind::Symlink,
            NodeKind::Fifo,
            NodeKind::CharDev,
            NodeKind::File
        ]
    );
    let [dir, file, link, fifo, tty, odd] = &t.nodes[..] else {
        panic!("six nodes")
    };
    assert_eq!(dir.mode, 0o755);
    assert_eq!((dir.uid, dir.gid), (33, 33));
    assert_eq!(dir.user, "www-data");
    assert_eq!(dir.subtree, Some(derived_id("blob-id.empty-tree")));
    assert_eq!(dir.links, 3);
    assert_eq!(dir.mtime, Timestamp::new(1_793_585_045, 1));
    assert!(dir.content.is_empty());

    assert_eq!(file.mode, 0o640);
    assert_eq!(file.user, "deploy");
    assert_eq!(file.group, "deploy");
    assert_eq!(file.subtree, None);
    let zl = data_zstd_plain().len() as u32;
    let sl = data_stored_plain().len() as u32;
    assert_eq!(
        file.content,
        [
            Extent::Data {
                id: derived_id("blob-id.data-zstd"),
                len: zl
            },
            Extent::Hole(4096),
            Extent::Data {
                id: derived_id("blob-id.data-stored"),
                len: sl
            },
        ]
    );
    assert_eq!(file.size, zl as u64 + 4096 + sl as u64);
    assert_eq!(file.xattrs.len(), 2);
    assert_eq!(file.xattrs[0].name, b"user.comment");
    assert_eq!(file.xattrs[0].value, b"golden");
    assert_eq!(file.xattrs[1].name, b"user.mime_type");
    assert_eq!(file.inode, 132);
    assert_eq!(file.dev, 2049);

    assert_eq!(link.target, b"b-file");
    assert_eq!(link.mode, 0o777);
    assert_eq!(fifo.mode, 0o600);
    assert_eq!(fifo.inode, 134);
    assert_eq!(tty.rdev, 0x0401);
    assert_eq!(tty.inode, 5_000_000_000);
    assert_eq!(tty.group, "tty");
    assert_eq!(odd.mode, 0o4755);
    assert_eq!(odd.size, 0);
    assert_eq!(odd.mtime, Timestamp::new(-86_400, 0));
    assert_eq!(odd.atime, Timestamp::new(-1, 999_999_999));
    assert_eq!((odd.uid, odd.user.as_str()), (65534, "nobody"));

    assert_eq!(t, expected_tree(&k));
    assert_eq!(t.encode(), data);
    assert_eq!(k.blob_id(&data), derived_id("blob-id.tree"));
    assert_rejects_version_2(&data, |d| Tree::decode(d, "t").map(|_| ()));
}

#[test]
fn pack() {
    let k = keys(Encryption::Repokey);
    let data = read("pack.bin");
    assert_eq!(&data[..5], b"CRNP\x01");
    let h = pack::decode_pack(k.sealer(), &data, "pack").unwrap();
    assert_eq!(h.entries.len(), 3);

    // The trailer gives the sealed header's length; it ends just before the trailer.
    let trailer = &data[data.len() - PACK_TRAILER..];
    let (hoff, hlen) = pack::header_range(data.len() as u64, trailer, "pack").unwrap();
    assert_eq!(u32::from_le_bytes(trailer.try_into().unwrap()) as u64, hlen);
    assert_eq!(hoff + hlen + PACK_TRAILER as u64, data.len() as u64);
    let sealed_header = read("pack-header.bin");
    assert_eq!(
        &data[hoff as usize..(hoff + hlen) as usize],
        &sealed_header[..]
    );
    assert_eq!(
        pack::decode_header(k.sealer(), &sealed_header, hoff, "pack").unwrap(),
        h
    );
    let plain_header = read("pack-header.plain.bin");
    assert_eq!(fmt::encode(&h), plain_header);
    assert_eq!(
        sealed_header.len(),
        NONCE_LEN + plain_header.len() + TAG_LEN
    );
    assert_eq!(nonce_at(&sealed_header, 0), nonce(N_PACK_HEADER));
    let mut resealed = Vec::new();
    k.sealer().seal_into_with_nonce(
        b"CRNH\x01",
        &plain_header,
        nonce_at(&sealed_header, 0),
        &mut resealed,
    );
    assert_eq!(resealed, sealed_header);

    // Entries in pack order: tree (zstd), data (zstd), data (stored); contiguous from offset 5.
    let tree = read("tree.bin");
    let expect = [
        (
            BlobKind::Tree,
            "blob-id.tree",
            tree.clone(),
            BLOB_ZSTD,
            N_BLOB_TREE,
        ),
        (
            BlobKind::Data,
            "blob-id.data-zstd",
            data_zstd_plain(),
            BLOB_ZSTD,
            N_BLOB_ZSTD,
        ),
        (
            BlobKind::Data,
            "blob-id.data-stored",
            data_stored_plain(),
            BLOB_STORED,
            N_BLOB_STORED,
        ),
    ];
    let mut offset = PACK_PREFIX as u32;
    let mut rebuilt = PackBuilder::new();
    for (e, (kind, id_name, plain, flag, n)) in h.entries.iter().zip(expect) {
        assert_eq!(e.kind, kind);
        assert_eq!(e.id, derived_id(id_name));
        assert_eq!(e.offset, offset);
        assert_eq!(e.raw_len as usize, plain.len());
        offset += e.length;
        let sealed = &data[e.offset as usize..(e.offset + e.length) as usize];
        assert_eq!(nonce_at(sealed, 0), nonce(n));
        assert_eq!(
            pack::open_blob(&k, &e.id, sealed, e.raw_len, None).unwrap(),
            plain
        );
        // Inside the seal: the compression byte, then the payload.
        let inner = k.sealer().open(e.id.as_bytes(), sealed).unwrap();
        assert_eq!(inner[0], flag, "{id_name}");
        match flag {
            BLOB_ZSTD => {
                assert!(inner.len() - 1 < plain.len());
                assert_eq!(&inner[1..5], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frame magic");
                assert_eq!(
                    compress::decompress(&inner[1..], plain.len()).unwrap(),
                    plain
                );
            }
            _ => assert_eq!(&inner[1..], &plain[..]),
        }
        // A blob cannot pass for another id.
        assert!(pack::open_blob(&k, &Id([0; 32]), sealed, e.raw_len, None).is_err());
        let mut resealed = Vec::new();
        k.sealer().seal_into_with_nonce(
            e.id.as_bytes(),
            &inner,
            nonce_at(sealed, 0),
            &mut resealed,
        );
        assert_eq!(resealed, sealed);
        rebuilt.add(e.kind, e.id, sealed.to_vec(), e.raw_len);
    }
    assert_eq!(offset as u64, hoff);
    let (again, entries) =
        rebuilt.finish_with_nonce(k.sealer(), &[0, 1, 2], nonce_at(&sealed_header, 0));
    assert_eq!(entries, h.entries);
    assert_eq!(again, data);
    assert_rejects_version_2(&data, |d| pack::decode_pack(k.sealer(), d, "p").map(|_| ()));
}

/// A delta blob: its entry names its base (kind variant 2), its compression byte is 2, and it
/// opens only against the base's plaintext.
#[test]
fn pack_with_a_delta_blob() {
    let k = keys(Encryption::Repokey);
    let data = read("pack-delta.bin");
    let h = pack::decode_pack(k.sealer(), &data, "pack").unwrap();
    let plain_header = read("pack-delta-header.plain.bin");
    assert_eq!(fmt::encode(&h), plain_header);
    let (base, plain) = (data_zstd_plain(), data_delta_plain());
    let base_id = k.blob_id(&base);
    assert_eq!(h.entries.len(), 2);
    assert_eq!((h.entries[0].id, h.entries[0].base), (base_id, None));
    assert_eq!(
        (h.entries[1].id, h.entries[1].base),
        (k.blob_id(&plain), Some(base_id))
    );
    // The header's first entry starts with kind 0 (Data); the second with kind 2 and the base.
    assert_eq!(plain_header[0], 2, "two entries");
    assert_eq!(plain_header[1], 0);
    let second = 1 + fmt::encode(&h.entries[0]).len();
    assert_eq!(plain_header[second], 2);
    assert_eq!(&plain_header[second + 1..second + 33], base_id.as_bytes());
    let e = &h.entries[1];
    let sealed = &data[e.offset as usize..(e.offset + e.length) as usize];
    assert_eq!(nonce_at(sealed, 0), nonce(N_BLOB_DELTA));
    let inner = k.sealer().open(e.id.as_bytes(), sealed).unwrap();
    assert_eq!(inner[0], BLOB_ZSTD_DELTA);
    assert_eq!(&inner[1..5], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frame magic");
    // Much smaller than the blob compressed alone.
    let alone = compress::compress(&plain, Compression::Auto).unwrap();
    assert!(
        inner.len() * 4 < alone.len(),
        "{} vs {}",
        inner.len(),
        alone.len()
    );
    assert_eq!(
        pack::open_blob(&k, &e.id, sealed, e.raw_len, Some(&base)).unwrap(),
        plain
    );
    assert!(pack::open_blob(&k, &e.id, sealed, e.raw_len, None).is_err());
    assert!(pack::open_blob(&k, &e.id, sealed, e.raw_len, Some(&data_stored_plain())).is_err());
    // Rebuilt from the same inputs, byte for byte.
    assert_eq!(delta_pack(&k).0, data);
}

#[test]
fn chunker() {
    let k = keys(Encryption::Repokey);
    let input = chunker_input();
    for (file, params) in [
        ("chunks-files.txt", ChunkerParams::FILES),
        ("chunks-dumps.txt", ChunkerParams::DUMPS_64K),
    ] {
        let want: Vec<usize> = read_text(file)
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(want.iter().sum::<usize>(), input.len(), "{file}");
        let c = Chunker::new(params, k.gear_table()).unwrap();
        let got: Vec<usize> = c.chunk_all(&input).iter().map(|c| c.len()).collect();
        assert_eq!(got, want, "{file}");
        // Streaming in batches cuts at the same places.
        let mut s = c.stream(&input[..], 3 * params.max_size as usize, 0);
        let mut streamed = Vec::new();
        while let Some(batch) = s.next_batch().unwrap() {
            streamed.extend(batch.iter().map(|b| b.len()));
        }
        assert_eq!(streamed, want, "{file} streamed");
        if params.align_lines {
            // Every cut follows a newline, unless no newline lies between the FastCDC cut
            // and the chunk's limit (max_size from its start, or the end of the input).
            let mut start = 0;
            let mut unaligned = 0;
            for n in &want[..want.len() - 1] {
                let end = start + n;
                if input[end - 1] != b'\n' {
                    let limit = input.len().min(start + params.max_size as usize);
                    assert!(!input[end..limit].contains(&b'\n'), "{file}: cut at {end}");
                    unaligned += 1;
                }
                start = end;
            }
            assert!(unaligned <= 1, "{file}: {unaligned} unaligned cuts");
        }
    }
}

/// The worked examples of format-spec/encoding.md.
#[test]
fn encoding_examples() {
    assert_eq!(fmt::encode(&0u64), [0]);
    assert_eq!(fmt::encode(&250u32), [250]);
    assert_eq!(fmt::encode(&251u32), [251, 251, 0]);
    assert_eq!(fmt::encode(&4096u64), [251, 0x00, 0x10]);
    assert_eq!(fmt::encode(&65_536u64), [252, 0x00, 0x00, 0x01, 0x00]);
    assert_eq!(
        fmt::encode(&5_000_000_000u64),
        [253, 0x00, 0xf2, 0x05, 0x2a, 0x01, 0x00, 0x00, 0x00]
    );
    assert_eq!(fmt::encode(&-1i64), [1]);
    assert_eq!(fmt::encode(&1i64), [2]);
    assert_eq!(fmt::encode(&-86_400i64), [252, 0xff, 0xa2, 0x02, 0x00]);
    assert_eq!(fmt::encode(&7u8), [7]);
    assert_eq!(fmt::encode(&255u8), [255]);
    assert_eq!(fmt::encode(&true), [1]);
    assert_eq!(fmt::encode(&[0xaau8; 3]), [0xaa, 0xaa, 0xaa]);
    assert_eq!(fmt::encode(&b"ab".to_vec()), [2, b'a', b'b']);
    assert_eq!(fmt::encode(&"é".to_string()), [2, 0xc3, 0xa9]);
    assert_eq!(fmt::encode(&None::<Id>), [0]);
    assert_eq!(fmt::encode(&Timestamp::new(1, 2)), [2, 2]);
    assert_eq!(fmt::encode(&Extent::Hole(4096)), [1, 251, 0x00, 0x10]);
    assert_eq!(fmt::encode(&LeaseKind::Exclusive), [1]);
    assert_eq!(
        fmt::encode(&("k".to_string(), "v".to_string())),
        [1, b'k', 1, b'v']
    );
    let mut some = vec![1u8];
    some.extend_from_slice(&[0x9a; 32]);
    assert_eq!(fmt::encode(&Some(Id([0x9a; 32]))), some);
    // Decoders refuse trailing bytes, unknown variants, bad booleans and bad UTF-8.
    assert!(fmt::decode::<u64>(&[1, 0], "x").is_err());
    assert!(fmt::decode::<LeaseKind>(&[2], "x").is_err());
    assert!(fmt::decode::<bool>(&[2], "x").is_err());
    assert!(fmt::decode::<String>(&[1, 0xff], "x").is_err());
    assert!(fmt::decode::<Option<u8>>(&[2, 0], "x").is_err());
    // A u32 field cannot hold the 8-byte form, and a length may not exceed the limit.
    assert!(fmt::decode::<u32>(&[253, 0, 0, 0, 0, 0, 0, 0, 0], "x").is_err());
    assert!(fmt::decode::<Vec<u8>>(&[253, 0, 0, 0, 0x10, 1, 0, 0, 0], "x").is_err());
    // The reference decoder accepts a longer-than-needed form; writers never produce one.
    assert_eq!(fmt::decode::<u32>(&[251, 5, 0], "x").unwrap(), 5);
}
