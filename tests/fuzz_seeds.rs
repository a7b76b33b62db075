//! The fuzz targets' seed corpora (`fuzz/corpus/<target>/`) run as ordinary tests, so every
//! `cargo test` exercises each decoder on them (fuzz/README.md).
//!
//! The seeds are made by the library: `cargo test --test fuzz_seeds -- --ignored write_seeds`
//! rewrites the generated ones reproducibly (fixed keys and nonces). Regression seeds, inputs
//! that once crashed a decoder, sit beside them as `regression-*` and are never rewritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn::Id;
use cairn::chunker::ChunkerParams;
use cairn::compress::{self, Compression};
use cairn::crypto::{Encryption, KdfParams};
use cairn::format::condemned::{Condemned, CondemnedPack};
use cairn::format::config::Config;
use cairn::format::fuzz::{self, MASTER, TARGETS, keys, seal_fixed, seal_object_fixed};
use cairn::format::index::{IndexObject, IndexPack};
use cairn::format::keyfile::KeyFile;
use cairn::format::lease::{Lease, LeaseKind};
use cairn::format::pack::{
    self, BLOB_STORED, BLOB_ZSTD, BLOB_ZSTD_DELTA, BlobKind, PackEntry, PackHeader,
};
use cairn::format::snapshot::{Snapshot, Summary};
use cairn::format::tree::{Extent, Node, NodeKind, Tree, Xattr};
use cairn::format::{Kind, Timestamp, encode};
use cairn::ops::model_fuzz::{self, Change, ForgetSpec, Scenario, Step};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
}

/// Run `f` on one input, naming the input if it panics.
fn run(target: &str, name: &str, f: fn(&[u8]), data: &[u8]) {
    if std::panic::catch_unwind(|| f(data)).is_err() {
        panic!("fuzz target {target} panicked on seed {name}");
    }
}

#[test]
fn every_target_runs_on_its_seed_corpus() {
    for (target, f) in TARGETS {
        let dir = corpus_dir().join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("seed corpus {} missing: {e}", dir.display()));
        let mut n = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            if !path.is_file() {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            run(target, &path.display().to_string(), *f, &data);
            n += 1;
        }
        assert!(n > 0, "seed corpus {} is empty", dir.display());
    }
}

/// The model target (fuzz/corpus/model/): every seed runs, and every fault a generated seed
/// arms is injected (so the seeds go on testing what their names say).
#[test]
fn model_target_runs_on_its_seed_corpus() {
    let dir = corpus_dir().join("model");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_file() {
            run(
                "model",
                &path.display().to_string(),
                model_fuzz::model,
                &std::fs::read(&path).unwrap(),
            );
            n += 1;
        }
    }
    assert!(n > 0, "seed corpus {} is empty", dir.display());
}

#[test]
fn generated_model_seeds_run_and_fire_their_faults() {
    for (name, scenario) in model_seeds() {
        let data = scenario.encode();
        assert_eq!(Scenario::decode(&data), scenario, "{name}");
        let ran = std::panic::catch_unwind(|| model_fuzz::model_report(&data))
            .unwrap_or_else(|_| panic!("the model target panicked on seed {name}"));
        for r in ran.iter().filter(|r| r.fault.is_some()) {
            assert!(r.fired, "{name}: the fault of {r:?} does not fire");
        }
        if std::env::var_os("CAIRN_SHOW_MODEL_RUNS").is_some() {
            eprintln!("{name}:");
            for r in &ran {
                eprintln!("  {r:?}");
            }
        }
    }
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("fuzz_targets");
    for (target, _) in TARGETS {
        let src = std::fs::read_to_string(dir.join(format!("{target}.rs")))
            .unwrap_or_else(|e| panic!("fuzz/fuzz_targets/{target}.rs: {e}"));
        assert!(
            src.contains(&format!("cairn::format::fuzz::{target}(")),
            "{target}.rs"
        );
    }
    let src = std::fs::read_to_string(dir.join("model.rs")).expect("fuzz/fuzz_targets/model.rs");
    assert!(src.contains("cairn::ops::model_fuzz::model("), "model.rs");
}

/// The generated seeds stay meaningful: the valid ones decode with the library as it is, and
/// every target runs on all of them (whether or not the files in fuzz/corpus are current).
#[test]
fn generated_seeds_decode_and_run() {
    let seeds = seeds();
    for (target, f) in TARGETS {
        let set = seeds
            .get(target)
            .unwrap_or_else(|| panic!("no seeds for {target}"));
        for (name, data) in set {
            run(target, name, *f, data);
        }
    }
    let [rk, none] = keys();
    let get = |t: &str, n: &str| {
        seeds[t]
            .iter()
            .find(|(name, _)| name == n)
            .unwrap()
            .1
            .clone()
    };
    Config::decode(rk.sealer(), &get("config", "valid-repokey")).unwrap();
    Config::decode(none.sealer(), &get("config", "valid-none")).unwrap();
    let k = KeyFile::decode(&get("keyfile", "valid-repokey"), "k").unwrap();
    assert_eq!(k.unlock(fuzz::PASSWORD).unwrap().as_bytes(), &MASTER);
    let k = KeyFile::decode(&get("keyfile", "valid-none"), "k").unwrap();
    assert_eq!(k.unlock(b"").unwrap().as_bytes(), &MASTER);
    Snapshot::decode(rk.sealer(), &get("snapshot", "valid-repokey"), "s").unwrap();
    Snapshot::decode(none.sealer(), &get("snapshot", "valid-none"), "s").unwrap();
    IndexObject::decode(rk.sealer(), &get("index", "valid-repokey"), "i").unwrap();
    IndexObject::decode(none.sealer(), &get("index", "valid-none"), "i").unwrap();
    Tree::decode(&get("tree", "valid"), "t").unwrap();
    Lease::decode(rk.sealer(), &get("lease", "valid-repokey"), "l").unwrap();
    Lease::decode(none.sealer(), &get("lease", "valid-none"), "l").unwrap();
    Condemned::decode(rk.sealer(), &get("condemned", "valid-repokey"), "c").unwrap();
    Condemned::decode(none.sealer(), &get("condemned", "valid-none"), "c").unwrap();
    for (name, keys) in [("valid-repokey", rk), ("valid-none", none)] {
        let p = get("pack", name);
        let h = pack::decode_pack(keys.sealer(), &p, "p").unwrap();
        assert_eq!(h.entries.len(), 3);
        for e in &h.entries {
            let sealed = &p[e.offset as usize..(e.offset + e.length) as usize];
            pack::open_blob(keys, &e.id, sealed, e.raw_len, None).unwrap();
        }
    }
}

/// Rewrite the generated seeds in fuzz/corpus (regression seeds are left alone).
#[test]
#[ignore = "writes fuzz/corpus; run by hand after a format change"]
fn write_seeds() {
    for (target, set) in seeds() {
        let dir = corpus_dir().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in set {
            std::fs::write(dir.join(format!("{name}.bin")), data).unwrap();
        }
    }
    let dir = corpus_dir().join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, scenario) in model_seeds() {
        std::fs::write(dir.join(format!("{name}.bin")), scenario.encode()).unwrap();
    }
}

/// Scenarios for the model target, each named for what it exercises. Faults are numbered from
/// the open of the repository; `CAIRN_SHOW_MODEL_RUNS=1 cargo test --test fuzz_seeds
/// generated_model_seeds` prints how many backend operations each run makes.
fn model_seeds() -> Vec<(&'static str, Scenario)> {
    use cairn::backend::FaultKind::*;
    let write = |name, seed, len| Change::Write { name, seed, len };
    let append = |name, seed, len| Change::Append { name, seed, len };
    let first = || {
        Step::Backup(vec![
            write(0, 1, 9000),
            write(1, 2, 3000),
            write(3, 1, 5000),
            write(5, 3, 20000),
        ])
    };
    let second = || {
        Step::Backup(vec![
            append(0, 4, 2000),
            write(2, 5, 12000),
            Change::Delete { name: 1 },
        ])
    };
    let fault = |at, kind| Step::Fault { at, kind };
    let scenario = |steps| Scenario {
        unencrypted: false,
        steps,
    };
    let prune = |grace| Step::Prune {
        max_unused: 0,
        grace,
    };
    let check = Step::Check { read_data: true };
    vec![
        (
            "backup-backup-forget-prune",
            scenario(vec![
                first(),
                second(),
                Step::Forget(ForgetSpec::Nth(0)),
                prune(false),
                check.clone(),
            ]),
        ),
        (
            "crash-mid-backup-then-backup",
            scenario(vec![
                first(),
                fault(CRASH_BACKUP, Crash),
                second(),
                Step::Backup(vec![]),
            ]),
        ),
        (
            "crash-mid-prune-then-prune",
            scenario(vec![
                first(),
                second(),
                Step::Forget(ForgetSpec::Nth(0)),
                fault(CRASH_PRUNE, Crash),
                prune(false),
                prune(false),
            ]),
        ),
        (
            "crash-after-the-snapshot-is-written",
            scenario(vec![
                first(),
                fault(CRASH_AFTER_COMMIT, Crash),
                second(),
                check.clone(),
            ]),
        ),
        (
            "flip-read-during-check",
            scenario(vec![
                first(),
                second(),
                fault(FLIP_CHECK, FlipRead),
                check.clone(),
            ]),
        ),
        (
            "drop-write-then-check",
            scenario(vec![
                first(),
                fault(DROP_BACKUP, DropWrite),
                second(),
                check.clone(),
            ]),
        ),
        (
            "truncate-write-then-prune",
            scenario(vec![
                first(),
                fault(DROP_BACKUP, TruncateWrite),
                second(),
                Step::Forget(ForgetSpec::KeepLast(1)),
                prune(false),
                check.clone(),
            ]),
        ),
        (
            "transient-in-forget-grace-wait-prune",
            Scenario {
                unencrypted: true,
                steps: vec![
                    first(),
                    second(),
                    fault(TRANSIENT_FORGET, Transient),
                    Step::Forget(ForgetSpec::KeepLast(1)),
                    prune(true),
                    Step::Wait { tens_of_minutes: 7 },
                    Step::DropCache,
                    first(),
                    prune(true),
                    check,
                ],
            },
        ),
    ]
}

// Operation numbers within the second backup (18 operations since trees come from the local
// tree cache: opening and refreshing (0-5), the lease (6) and the refresh under it (7-10), two
// packs (11, 12), the index (13), the lease's verification (14, 15), the snapshot (16), the
// lease's release (17)). `generated_model_seeds_run_and_fire_their_faults` fails when a change of
// the sequence leaves one of them past the end; print the counts with CAIRN_SHOW_MODEL_RUNS=1.
/// A pack upload of the second backup.
const CRASH_BACKUP: u8 = 11;
const CRASH_PRUNE: u8 = 20;
/// The last operation of the second backup: the lease's release.
const CRASH_AFTER_COMMIT: u8 = 17;
/// A pack read of `check --read-data` (its last reads, 27 and 28, before the release).
const FLIP_CHECK: u8 = 27;
/// A pack upload of the second backup.
const DROP_BACKUP: u8 = 11;
const TRANSIENT_FORGET: u8 = 8;

type Seeds = BTreeMap<&'static str, Vec<(String, Vec<u8>)>>;

fn add(seeds: &mut Seeds, target: &'static str, name: &str, data: Vec<u8>) {
    seeds
        .entry(target)
        .or_default()
        .push((name.to_string(), data));
}

/// Valid, truncated, wrong-magic and wrong-version variants of a stored object.
fn variants(seeds: &mut Seeds, target: &'static str, valid_repokey: Vec<u8>, valid_none: Vec<u8>) {
    let mut magic = valid_repokey.clone();
    magic[0] ^= 0x20;
    let mut version = valid_repokey.clone();
    version[4] = 2;
    add(
        seeds,
        target,
        "truncated-repokey",
        valid_repokey[..valid_repokey.len() / 2].to_vec(),
    );
    add(
        seeds,
        target,
        "truncated-none",
        valid_none[..valid_none.len() - 1].to_vec(),
    );
    add(seeds, target, "header-only", valid_repokey[..5].to_vec());
    add(seeds, target, "wrong-magic", magic);
    add(seeds, target, "wrong-version", version);
    add(seeds, target, "valid-repokey", valid_repokey);
    add(seeds, target, "valid-none", valid_none);
}

/// A sealed object in both modes plus its variants, and its plaintext body (the input of the
/// targets' plaintext mode).
fn sealed_seeds(seeds: &mut Seeds, target: &'static str, kind: Kind, body: Vec<u8>) {
    let [rk, none] = keys();
    let a = seal_object_fixed(kind, rk.sealer(), &body);
    let b = seal_object_fixed(kind, none.sealer(), &body);
    variants(seeds, target, a, b);
    add(
        seeds,
        target,
        "body-truncated",
        body[..body.len() - 1].to_vec(),
    );
    add(seeds, target, "body", body);
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::new(secs, 123_456_789)
}

fn id(b: u8) -> Id {
    Id([b; 32])
}

fn seeds() -> Seeds {
    let mut s = Seeds::new();
    let [rk, none] = keys();

    // config
    let config = Config {
        repo_id: id(1),
        created: ts(1_800_000_000),
        chunker_files: ChunkerParams::FILES,
        chunker_dumps: ChunkerParams::DUMPS_64K,
        pack_size: Config::DEFAULT_PACK_SIZE,
    };
    sealed_seeds(&mut s, "config", Kind::Config, encode(&config));
    let mut bad = config.clone();
    bad.chunker_dumps.avg_size = 1000;
    add(&mut s, "config", "body-bad-chunker", encode(&bad));

    // keyfile
    let valid = fuzz::keyfile_sealing(&MASTER);
    let plain = KeyFile::create(
        &cairn::crypto::MasterKey::from_bytes(MASTER),
        Encryption::None,
        b"",
        KdfParams::INSECURE_FOR_TESTS,
        fuzz::KEYFILE_SALT,
        ts(1_800_000_000),
        "host".into(),
        "user".into(),
    )
    .unwrap();
    variants(&mut s, "keyfile", valid.encode(), plain.encode());
    let mut hostile = valid.clone();
    hostile.kdf_m_cost_kib = u32::MAX;
    add(&mut s, "keyfile", "hostile-kdf", hostile.encode());
    let mut cheap = valid.clone();
    cheap.kdf_m_cost_kib = 1024;
    cheap.kdf_t_cost = 2;
    cheap.kdf_p_cost = 4;
    add(&mut s, "keyfile", "other-kdf", cheap.encode());
    let mut unknown = valid.clone();
    unknown.encryption = 2;
    add(&mut s, "keyfile", "unknown-encryption", unknown.encode());
    add(&mut s, "keyfile", "body", encode(&valid));
    add(&mut s, "keyfile", "master-plaintext", MASTER.to_vec());

    // snapshot
    let snap = Snapshot {
        time: ts(1_800_000_100),
        tree: id(2),
        paths: vec!["/srv/app/storage".into(), "/etc".into()],
        host: "web1".into(),
        username: "root".into(),
        uid: 0,
        gid: 0,
        tags: vec!["nightly".into()],
        parent: Some(id(3)),
        source: "files".into(),
        program: "cairn 0.1.0".into(),
        summary: Summary {
            backup_start: ts(1_800_000_000),
            backup_end: ts(1_800_000_100),
            files_new: 3,
            total_files: 3,
            total_bytes: 12345,
            ..Summary::default()
        },
        meta: vec![("binlog".into(), "mysql-bin.000042:1234".into())],
    };
    sealed_seeds(&mut s, "snapshot", Kind::Snapshot, encode(&snap));

    // index
    let entry = |k, b, offset, length| PackEntry {
        kind: k,
        id: id(b),
        offset,
        length,
        raw_len: length * 2,
        base: None,
    };
    let idx = IndexObject {
        supersedes: vec![id(9)],
        packs: vec![
            IndexPack {
                id: id(4),
                size: 1000,
                entries: vec![
                    entry(BlobKind::Data, 5, 5, 100),
                    entry(BlobKind::Tree, 6, 105, 50),
                ],
            },
            IndexPack {
                id: id(7),
                size: 200,
                entries: vec![entry(BlobKind::Data, 8, 5, 150)],
            },
        ],
    };
    sealed_seeds(&mut s, "index", Kind::Index, encode(&idx));
    let mut beyond = idx.clone();
    beyond.packs[1].size = 100;
    add(&mut s, "index", "body-entry-beyond-pack", encode(&beyond));
    let mut delta = idx.clone();
    delta.packs[0].entries[0].base = Some(id(3));
    add(&mut s, "index", "body-delta-entry", encode(&delta));

    // tree
    let mut file = Node::new(b"data.sql".to_vec(), NodeKind::File);
    file.mode = 0o644;
    file.user = "www-data".into();
    file.mtime = ts(1_800_000_000);
    file.size = 5000;
    file.content = vec![
        Extent::Data {
            id: id(10),
            len: 1000,
        },
        Extent::Hole(3000),
        Extent::Data {
            id: id(11),
            len: 1000,
        },
    ];
    file.xattrs = vec![Xattr {
        name: b"user.note".to_vec(),
        value: b"x".to_vec(),
    }];
    let mut dir = Node::new(b"logs".to_vec(), NodeKind::Dir);
    dir.subtree = Some(id(12));
    let mut link = Node::new(b"current".to_vec(), NodeKind::Symlink);
    link.target = b"../releases/42".to_vec();
    let mut tree = Tree {
        nodes: vec![
            file,
            dir,
            link,
            Node::new(b"\xffodd name".to_vec(), NodeKind::Fifo),
        ],
    };
    tree.sort();
    let t = tree.encode();
    let mut magic = t.clone();
    magic[0] ^= 0x20;
    let mut version = t.clone();
    version[4] = 0;
    add(&mut s, "tree", "truncated", t[..t.len() - 3].to_vec());
    add(&mut s, "tree", "wrong-magic", magic);
    add(&mut s, "tree", "wrong-version", version);
    add(&mut s, "tree", "body", t[5..].to_vec());
    add(&mut s, "tree", "valid", t);
    add(&mut s, "tree", "empty", Tree::default().encode());
    let mut unsorted = tree.clone();
    unsorted.nodes.reverse();
    add(&mut s, "tree", "unsorted", unsorted.encode());
    let dotdot = Tree {
        nodes: vec![Node::new(b"..".to_vec(), NodeKind::Dir)],
    };
    add(&mut s, "tree", "dotdot", dotdot.encode());

    // lease
    let lease = Lease {
        kind: LeaseKind::Exclusive,
        operation: "prune".into(),
        host: "web1".into(),
        username: "root".into(),
        pid: 4242,
        pid_space: "machine/pid:[1]".into(),
        created: ts(1_800_000_000),
        refreshed: ts(1_800_000_060),
        ttl_secs: 300,
        nonce: [3; 16],
    };
    sealed_seeds(&mut s, "lease", Kind::Lease, encode(&lease));

    // condemnation record
    let cond = Condemned {
        supersedes: vec![id(0x5e)],
        packs: vec![
            CondemnedPack {
                id: id(0xc1),
                since: ts(1_800_000_000),
            },
            CondemnedPack {
                id: id(0xc2),
                since: ts(1_800_003_600),
            },
        ],
    };
    sealed_seeds(&mut s, "condemned", Kind::Condemned, encode(&cond));

    // pack, and blob seeds from its blobs
    let text: Vec<u8> = b"INSERT INTO t VALUES (1,'cairn');\n".repeat(40);
    let packs = [rk, none].map(|keys| {
        let sealer = keys.sealer();
        let blobs: [(BlobKind, Vec<u8>); 3] = [
            (BlobKind::Data, text.clone()),
            (BlobKind::Data, b"tiny".to_vec()),
            (BlobKind::Tree, tree.encode()),
        ];
        let mut p = Kind::Pack.header().to_vec();
        let mut entries = Vec::new();
        for (kind, plain) in &blobs {
            let bid = keys.blob_id(plain);
            let mut inner = vec![BLOB_STORED];
            if let Some(z) = compress::compress(plain, Compression::Auto) {
                inner = vec![BLOB_ZSTD];
                inner.extend_from_slice(&z);
            } else {
                inner.extend_from_slice(plain);
            }
            let sealed = seal_fixed(sealer, bid.as_bytes(), &inner);
            entries.push(PackEntry {
                kind: *kind,
                id: bid,
                offset: p.len() as u32,
                length: sealed.len() as u32,
                raw_len: plain.len() as u32,
                base: None,
            });
            p.extend_from_slice(&sealed);
        }
        let header = PackHeader { entries };
        let start = p.len();
        p.extend_from_slice(&seal_fixed(
            sealer,
            &Kind::PackHeader.header(),
            &encode(&header),
        ));
        let hlen = (p.len() - start) as u32;
        p.extend_from_slice(&hlen.to_le_bytes());
        (p, header)
    });
    let [(pack_rk, header_rk), (pack_none, _)] = packs;
    let mut long_header = pack_rk.clone();
    let n = long_header.len();
    long_header[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    add(&mut s, "pack", "header-length-out-of-range", long_header);
    variants(&mut s, "pack", pack_rk.clone(), pack_none);
    // Plaintext mode: 4 bytes of filler length, then the header body.
    let with_filler = |filler: u32, h: &PackHeader| {
        let mut v = filler.to_le_bytes().to_vec();
        v.extend_from_slice(&encode(h));
        v
    };
    let fits = PackHeader {
        entries: vec![
            entry(BlobKind::Data, 1, 5, 10),
            entry(BlobKind::Tree, 2, 15, 20),
        ],
    };
    add(&mut s, "pack", "plain-header", with_filler(30, &fits));
    let mut with_delta = fits.clone();
    with_delta.entries[0].base = Some(id(3));
    add(
        &mut s,
        "pack",
        "plain-header-delta",
        with_filler(30, &with_delta),
    );
    let mut overlap = fits.clone();
    overlap.entries[1].offset = 10;
    add(
        &mut s,
        "pack",
        "plain-header-overlap",
        with_filler(30, &overlap),
    );
    add(
        &mut s,
        "pack",
        "plain-header-overflow",
        with_filler(20, &fits),
    );
    add(
        &mut s,
        "pack",
        "plain-header-real",
        with_filler(0, &header_rk),
    );

    // blob: raw_len (u32 LE), then a sealed blob or the plaintext inside one.
    let blob = |raw_len: usize, body: &[u8]| {
        let mut v = (raw_len as u32).to_le_bytes().to_vec();
        v.extend_from_slice(body);
        v
    };
    let e = &header_rk.entries[0];
    add(
        &mut s,
        "blob",
        "sealed-repokey",
        blob(
            e.raw_len as usize,
            &pack_rk[e.offset as usize..(e.offset + e.length) as usize],
        ),
    );
    let mut stored = vec![BLOB_STORED];
    stored.extend_from_slice(b"tiny");
    add(&mut s, "blob", "plain-stored", blob(4, &stored));
    add(
        &mut s,
        "blob",
        "plain-stored-wrong-length",
        blob(5, &stored),
    );
    let mut zstd = vec![BLOB_ZSTD];
    zstd.extend_from_slice(&compress::compress(&text, Compression::Max).unwrap());
    add(&mut s, "blob", "plain-zstd", blob(text.len(), &zstd));
    add(
        &mut s,
        "blob",
        "plain-zstd-short",
        blob(text.len() - 1, &zstd),
    );
    add(
        &mut s,
        "blob",
        "plain-zstd-truncated",
        blob(text.len(), &zstd[..zstd.len() - 4]),
    );
    // A frame that does not record its size, in two blocks.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_contentsize(false).unwrap();
    std::io::Write::write_all(&mut enc, &text[..600]).unwrap();
    std::io::Write::flush(&mut enc).unwrap();
    std::io::Write::write_all(&mut enc, &text[600..]).unwrap();
    let mut zstd_nosize = vec![BLOB_ZSTD];
    zstd_nosize.extend_from_slice(&enc.finish().unwrap());
    add(
        &mut s,
        "blob",
        "plain-zstd-no-size",
        blob(text.len(), &zstd_nosize),
    );
    add(
        &mut s,
        "blob",
        "plain-unknown-compression",
        blob(4, b"\x07tiny"),
    );
    add(&mut s, "blob", "empty", Vec::new());
    // A delta blob: zstd against the base every fuzzed delta blob is opened against.
    let mut changed = fuzz::FUZZ_BASE.to_vec();
    changed.extend_from_slice(b"(4,'delta',NULL),\n");
    let mut delta = vec![BLOB_ZSTD_DELTA];
    assert!(compress::compress_delta_append(
        &changed,
        fuzz::FUZZ_BASE,
        Compression::Max,
        &mut delta
    ));
    add(
        &mut s,
        "blob",
        "plain-zstd-delta",
        blob(changed.len(), &delta),
    );
    add(
        &mut s,
        "blob",
        "plain-zstd-delta-short",
        blob(changed.len() - 1, &delta),
    );

    // chunker: 8 bytes of parameters and read pattern, then the data.
    let chunk = |head: [u8; 8], data: &[u8]| {
        let mut v = head.to_vec();
        v.extend_from_slice(data);
        v
    };
    let mut noise = vec![0u8; 3000];
    blake3::Hasher::new()
        .update(b"noise")
        .finalize_xof()
        .fill(&mut noise);
    add(
        &mut s,
        "chunker",
        "lines-aligned",
        chunk([1, 10, 20, 4, 0, 0, 3, 0xFF], &text),
    );
    add(
        &mut s,
        "chunker",
        "lines",
        chunk([2, 3, 50, 1, 7, 9, 0, 40], &text),
    );
    add(
        &mut s,
        "chunker",
        "noise",
        chunk([0, 0, 0, 2, 0, 1, 1, 2], &noise),
    );
    add(
        &mut s,
        "chunker",
        "noise-level3-other-key",
        chunk([3, 200, 255, 0x83, 255, 255, 200, 7], &noise),
    );
    add(
        &mut s,
        "chunker",
        "zeros",
        chunk([0, 0, 0, 0, 0, 0, 0, 0], &[0u8; 2000]),
    );
    add(
        &mut s,
        "chunker",
        "empty",
        chunk([1, 1, 1, 1, 1, 1, 1, 1], b""),
    );
    s
}
