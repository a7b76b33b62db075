//! Throughput of each backup stage on its own: chunking, hashing (blob ids), compression,
//! sealing, and laying out packs. Run with `cargo bench --bench stages`.
//!
//! Input: 32 MiB that compress roughly like real files (text-like runs mixed with random
//! bytes), generated deterministically so runs compare.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use cairn::chunker::{Chunker, ChunkerParams};
use cairn::compress::{self, Compression};
use cairn::crypto::{Encryption, Keys, MasterKey};
use cairn::format::pack::{BlobKind, PackBuilder, seal_blob};

const SIZE: usize = 32 << 20;

fn data() -> Vec<u8> {
    let mut out = vec![0u8; SIZE];
    blake3::Hasher::new_keyed(&[42; 32])
        .finalize_xof()
        .fill(&mut out);
    // Make three quarters of every 4 KiB block text-like so zstd has something to do.
    let words = b"the quick brown fox jumps over the lazy dog; fn main() { println!(); } ";
    for (i, block) in out.chunks_mut(4096).enumerate() {
        let n = block.len() * 3 / 4;
        for (j, b) in block[..n].iter_mut().enumerate() {
            *b = words[(i * 7 + j) % words.len()];
        }
    }
    out
}

fn keys() -> Keys {
    Keys::derive(&MasterKey::from_bytes([7; 32]), Encryption::Repokey)
}

fn stages(c: &mut Criterion) {
    let data = data();
    let keys = keys();
    let chunker = Chunker::new(ChunkerParams::FILES, keys.gear_table()).unwrap();
    let chunks: Vec<&[u8]> = chunker.chunk_all(&data);

    let mut g = c.benchmark_group("stages");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));

    g.bench_function("chunk (FastCDC, keyed gear)", |b| {
        b.iter(|| chunker.chunk_all(&data).len())
    });
    g.bench_function("hash (keyed BLAKE3 ids)", |b| {
        b.iter(|| {
            chunks
                .iter()
                .map(|c| keys.blob_id(c).0[0] as usize)
                .sum::<usize>()
        })
    });
    for (name, mode) in [("auto", Compression::Auto), ("max", Compression::Max)] {
        if mode == Compression::Max {
            continue; // minutes per iteration; measure by hand when needed
        }
        g.bench_with_input(
            BenchmarkId::new("compress (zstd)", name),
            &mode,
            |b, &mode| {
                b.iter(|| {
                    chunks
                        .iter()
                        .map(|c| compress::compress(c, mode).map_or(c.len(), |v| v.len()))
                        .sum::<usize>()
                })
            },
        );
    }
    let raw: Vec<u8> = data.clone();
    g.bench_function("seal (XChaCha20-Poly1305, 1 MiB blocks)", |b| {
        b.iter(|| {
            raw.chunks(1 << 20)
                .map(|c| keys.sealer().seal(b"ad", c).len())
                .sum::<usize>()
        })
    });
    g.bench_function("blob (id + compress + seal)", |b| {
        b.iter(|| {
            chunks
                .iter()
                .map(|c| seal_blob(&keys, &keys.blob_id(c), c, Compression::Auto).len())
                .sum::<usize>()
        })
    });
    let sealed: Vec<_> = chunks
        .iter()
        .map(|c| {
            let id = keys.blob_id(c);
            (
                id,
                seal_blob(&keys, &id, c, Compression::Auto),
                c.len() as u32,
            )
        })
        .collect();
    g.bench_function("pack (lay out + BLAKE3 pack id)", |b| {
        b.iter(|| {
            let mut p = PackBuilder::new();
            for (id, s, n) in &sealed {
                p.add(BlobKind::Data, *id, s.clone(), *n);
            }
            let order: Vec<usize> = (0..p.count()).rev().collect();
            let (parts, _) = p.finish_parts(keys.sealer(), &order);
            let mut h = blake3::Hasher::new();
            for part in &parts {
                h.update(part);
            }
            h.finalize().as_bytes()[0]
        })
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
