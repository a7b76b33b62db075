//! Content-defined chunking: FastCDC 2020 (normalized) with a keyed gear table
//! (format-spec/chunking.md).
//!
//! The scanning loop is the `fastcdc` crate's `cut_gear`; this module owns the keyed gear table
//! (derived from the repository's chunker key, so cut points depend on a secret, which blunts
//! chunk-size fingerprinting of known files) and the streaming, batch-producing reader that the
//! backup pipeline feeds to its parallel stages. Optional line alignment moves each cut to the
//! end of a line, which SQL dumps need for row-level dedup. Pure apart from reading its source.

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};
use fastcdc::v2020::{Normalization, cut_gear, select_masks};

/// Chunker parameters, stored in the repository config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    /// FastCDC normalization level (0-3).
    pub normalization: u8,
    /// Move each cut forward to just after the next b'\n' (when there is one before `max_size`).
    pub align_lines: bool,
}

impl ChunkerParams {
    /// The default for files: 512 KiB / 1 MiB / 8 MiB.
    pub const FILES: ChunkerParams = ChunkerParams {
        min_size: 512 * 1024,
        avg_size: 1024 * 1024,
        max_size: 8 * 1024 * 1024,
        normalization: 1,
        align_lines: false,
    };

    /// The default for database dump streams: smaller chunks, cut at line ends, 64 KiB on
    /// average. Chosen by `benches/dumps.sh`: before delta blobs, 16 KiB chunks (the default
    /// for a while: 0.28x restic's nightly growth against 0.72x at 64 KiB) paid off, because a
    /// changed row cost its whole chunk. With deltas a changed chunk costs about its changed
    /// rows whatever its size, and the per-chunk costs (extent lists in trees, index entries)
    /// favour larger chunks: over ten web-app nights 2.65x the changed rows' compressed SQL at
    /// 64 KiB against 3.13x at 16 KiB.
    pub const DUMPS: ChunkerParams = ChunkerParams::DUMPS_64K;

    /// 16 KiB / 64 KiB / 1 MiB, line aligned: the dump parameters of the test vectors (and the
    /// default, except in repositories made on 2026-11-26 between e061942 and delta blobs,
    /// which have 4 KiB / 16 KiB / 256 KiB in their config).
    pub const DUMPS_64K: ChunkerParams = ChunkerParams {
        min_size: 16 * 1024,
        avg_size: 64 * 1024,
        max_size: 1024 * 1024,
        normalization: 1,
        align_lines: true,
    };

    pub fn validate(&self) -> Result<(), String> {
        let ok = self.min_size >= 64
            && self.min_size < self.avg_size
            && self.avg_size < self.max_size
            && self.max_size <= 64 * 1024 * 1024
            && self.min_size.is_multiple_of(2)
            && self.avg_size.is_multiple_of(2)
            && self.max_size.is_multiple_of(2)
            && self.avg_size.is_power_of_two()
            // The mask table covers 2^(bits ± normalization) for bits 8..=22 with level <= 3.
            && (256..=4 * 1024 * 1024).contains(&self.avg_size)
            && self.normalization <= 3;
        if ok {
            Ok(())
        } else {
            Err(format!("invalid chunker parameters {self:?}"))
        }
    }
}

/// A chunker with its masks and keyed gear tables prepared.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    pub fn new(params: ChunkerParams, gear: [u64; 256]) -> Result<Chunker, String> {
        params.validate()?;
        let level = match params.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        };
        let (mask_s, mask_l) = select_masks(params.avg_size as usize, level);
        let mut gear_ls = [0u64; 256];
        for (ls, g) in gear_ls.iter_mut().zip(gear.iter()) {
            *ls = g << 1;
        }
        Ok(Chunker {
            params,
            gear: Box::new(gear),
            gear_ls: Box::new(gear_ls),
            mask_s,
            mask_l,
        })
    }

    pub fn params(&self) -> &ChunkerParams {
        &self.params
    }

    /// The length of the first chunk of `data`, or `None` when more input is needed to decide
    /// (fewer than `max_size` bytes and not at the end of the stream).
    pub fn cut(&self, data: &[u8], eof: bool) -> Option<usize> {
        let max = self.params.max_size as usize;
        if data.is_empty() || (!eof && data.len() < max) {
            return None;
        }
        let (_, n) = cut_gear(
            data,
            self.params.min_size as usize,
            self.params.avg_size as usize,
            max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear[..],
            &self.gear_ls[..],
        );
        if self.params.align_lines && n > 0 && data[n - 1] != b'\n' {
            let limit = data.len().min(max);
            if let Some(p) = memchr::memchr(b'\n', &data[n..limit]) {
                return Some(n + p + 1);
            }
        }
        Some(n)
    }

    /// Chunk all of `data` (a whole stream in memory).
    pub fn chunk_all<'a>(&self, data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = data;
        while let Some(n) = self.cut(rest, true) {
            out.push(&rest[..n]);
            rest = &rest[n..];
        }
        out
    }

    /// Chunk a stream, yielding batches of whole chunks of about `batch_size` bytes.
    pub fn stream<R: Read>(
        &self,
        reader: R,
        batch_size: usize,
        size_hint: u64,
    ) -> ChunkStream<'_, R> {
        let batch_size = batch_size.max(self.params.max_size as usize * 2);
        let first = (size_hint as usize).saturating_add(1).min(batch_size);
        ChunkStream {
            chunker: self,
            reader,
            buf: BytesMut::with_capacity(first),
            batch_size,
            eof: false,
        }
    }
}

/// Batches of chunks from a reader; see [`Chunker::stream`].
pub struct ChunkStream<'a, R> {
    chunker: &'a Chunker,
    reader: R,
    buf: BytesMut,
    batch_size: usize,
    eof: bool,
}

impl<R: Read> ChunkStream<'_, R> {
    /// The next batch of chunks; `Ok(None)` at the end of the stream. Every batch but the last
    /// holds at least one chunk.
    pub fn next_batch(&mut self) -> io::Result<Option<Vec<Bytes>>> {
        loop {
            self.fill()?;
            let mut chunks = Vec::new();
            while let Some(n) = self.chunker.cut(&self.buf, self.eof) {
                chunks.push(self.buf.split_to(n).freeze());
            }
            if !chunks.is_empty() {
                return Ok(Some(chunks));
            }
            if self.eof {
                return Ok(None);
            }
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        while !self.eof && self.buf.len() < self.batch_size {
            // Read into the room already allocated (sized from the caller's size hint, so a small
            // file is read into a buffer of its own size, and nothing larger is zeroed); grow
            // geometrically up to the batch size when it is full.
            let len = self.buf.len();
            let spare = self.buf.capacity() - len;
            let room = if spare > 0 { spare } else { len.max(64 * 1024) };
            let room = room.min(self.batch_size - len);
            self.buf.resize(len + room, 0);
            match self.reader.read(&mut self.buf[len..]) {
                Ok(0) => {
                    self.buf.truncate(len);
                    self.eof = true;
                }
                Ok(n) => self.buf.truncate(len + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf.truncate(len),
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gear(seed: u8) -> [u64; 256] {
        let mut t = [0u64; 256];
        let mut bytes = [0u8; 2048];
        blake3::Hasher::new_keyed(&[seed; 32])
            .finalize_xof()
            .fill(&mut bytes);
        for (i, v) in t.iter_mut().enumerate() {
            *v = u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        }
        t
    }

    fn pseudo_random(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new_keyed(&[seed; 32])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    const SMALL: ChunkerParams = ChunkerParams {
        min_size: 2048,
        avg_size: 8192,
        max_size: 65536,
        normalization: 1,
        align_lines: false,
    };

    #[test]
    fn stream_matches_whole_and_respects_bounds() {
        let c = Chunker::new(SMALL, gear(1)).unwrap();
        let data = pseudo_random(1_000_000, 9);
        let whole: Vec<usize> = c.chunk_all(&data).iter().map(|c| c.len()).collect();
        let mut streamed = Vec::new();
        let mut s = c.stream(&data[..], 3 * 65536, data.len() as u64);
        while let Some(batch) = s.next_batch().unwrap() {
            streamed.extend(batch.iter().map(|b| b.len()));
        }
        assert_eq!(whole, streamed);
        assert_eq!(whole.iter().sum::<usize>(), data.len());
        for n in &whole[..whole.len() - 1] {
            assert!(*n >= 2048 && *n <= 65536, "{n}");
        }
        let avg = data.len() / whole.len();
        assert!((4096..16384).contains(&avg), "average {avg}");
    }

    #[test]
    fn cut_points_depend_on_key_and_resync_after_insert() {
        let data = pseudo_random(500_000, 3);
        let a = Chunker::new(SMALL, gear(1)).unwrap();
        let b = Chunker::new(SMALL, gear(2)).unwrap();
        let ca: Vec<usize> = a.chunk_all(&data).iter().map(|c| c.len()).collect();
        let cb: Vec<usize> = b.chunk_all(&data).iter().map(|c| c.len()).collect();
        assert_ne!(ca, cb);
        // Insert bytes near the start: most chunks after it are unchanged.
        let mut edited = data[..1000].to_vec();
        edited.extend_from_slice(b"inserted bytes");
        edited.extend_from_slice(&data[1000..]);
        let before: std::collections::HashSet<&[u8]> = a.chunk_all(&data).into_iter().collect();
        let after = a.chunk_all(&edited);
        let shared = after.iter().filter(|c| before.contains(*c)).count();
        assert!(shared + 3 >= after.len(), "{shared} of {}", after.len());
    }

    #[test]
    fn line_alignment_cuts_after_newlines() {
        let mut p = SMALL;
        p.align_lines = true;
        let c = Chunker::new(p, gear(5)).unwrap();
        let mut data = Vec::new();
        let mut i = 0u64;
        while data.len() < 400_000 {
            data.extend_from_slice(
                format!("INSERT INTO t VALUES ({i},'{}');\n", i * 7919).as_bytes(),
            );
            i += 1;
        }
        let chunks = c.chunk_all(&data);
        assert!(chunks.len() > 10);
        for ch in &chunks {
            assert_eq!(*ch.last().unwrap(), b'\n');
        }
        assert_eq!(chunks.concat(), data);
    }

    #[test]
    fn empty_and_tiny_streams() {
        let c = Chunker::new(SMALL, gear(1)).unwrap();
        let mut s = c.stream(&b""[..], 0, 0);
        assert!(s.next_batch().unwrap().is_none());
        let mut s = c.stream(&b"abc"[..], 0, 3);
        assert_eq!(
            s.next_batch().unwrap().unwrap(),
            vec![Bytes::from_static(b"abc")]
        );
        assert!(s.next_batch().unwrap().is_none());
        assert!(
            ChunkerParams {
                avg_size: 1000,
                ..SMALL
            }
            .validate()
            .is_err()
        );
        // Averages outside the mask table would panic in the scan loop.
        let huge = ChunkerParams {
            min_size: 1 << 20,
            avg_size: 32 << 20,
            max_size: 64 << 20,
            normalization: 3,
            align_lines: false,
        };
        assert!(huge.validate().is_err());
        assert!(Chunker::new(huge, [1; 256]).is_err());
    }
}
