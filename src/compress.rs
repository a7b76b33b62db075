//! Compression of blob payloads with zstd (format-spec/pack.md §3).
//!
//! Owns the choice of whether a blob is stored compressed: a blob stays uncompressed when that
//! is smaller. Pure: no I/O. Must never: expand a blob, or decompress beyond a caller's bound.

use std::cell::RefCell;
use std::str::FromStr;

use zstd::zstd_safe::{CCtx, CParameter};

use crate::error::Error;

/// What to do with blob payloads on backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Store every blob as is.
    Off,
    /// zstd level 3, skipping data that a sample shows to be incompressible.
    #[default]
    Auto,
    /// zstd level 19: small repositories, slow backups.
    Max,
    /// An explicit zstd level (1..=22).
    Level(i32),
}

impl Compression {
    fn level(self) -> Option<i32> {
        match self {
            Compression::Off => None,
            Compression::Auto => Some(3),
            Compression::Max => Some(19),
            Compression::Level(l) => Some(l),
        }
    }
}

impl FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "off" | "none" => Ok(Compression::Off),
            "auto" => Ok(Compression::Auto),
            "max" => Ok(Compression::Max),
            n => match n.parse::<i32>() {
                Ok(l) if (1..=22).contains(&l) => Ok(Compression::Level(l)),
                _ => Err(Error::invalid(format!(
                    "compression {s:?}: expected off, auto, max or a zstd level 1-22"
                ))),
            },
        }
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, CCtx<'static>)>> = const { RefCell::new(None) };
    static PROBE: RefCell<Option<(i32, CCtx<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Size of the sample `Auto` compresses first to decide whether a large blob is worth it.
const SAMPLE: usize = 16 * 1024;
/// Blobs larger than this are sampled first.
const SAMPLE_ABOVE: usize = 256 * 1024;
/// The sample's zstd level: it only has to tell data that shrinks from data that does not,
/// and level 1 does that at about twice the speed of level 3.
const SAMPLE_LEVEL: i32 = 1;

/// Compress `data`; `None` means "store it uncompressed" (compression is off, or would not
/// make it smaller).
pub fn compress(data: &[u8], mode: Compression) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    compress_append(data, mode, &mut out).then_some(out)
}

/// Compress `data` into `out` (from `start`) with `level` on this thread's context, returning
/// the frame's length if it fits in `out`'s capacity.
fn compress_with(
    slot: &mut Option<(i32, CCtx<'static>)>,
    level: i32,
    data: &[u8],
    out: &mut Vec<u8>,
    start: usize,
) -> Option<usize> {
    if slot.as_ref().map(|(l, _)| *l) != Some(level) {
        let mut c = CCtx::try_create()?;
        c.set_parameter(CParameter::CompressionLevel(level)).ok()?;
        *slot = Some((level, c));
    }
    let (_, c) = slot.as_mut()?;
    let mut cursor = std::io::Cursor::new(&mut *out);
    cursor.set_position(start as u64);
    // Each call starts a new frame, so a failed one (output did not fit) leaves nothing behind.
    c.compress2(&mut cursor, data).ok()
}

/// Whether a sample from the middle of `data` shrinks by at least 3%: already-compressed data
/// (archives, media) does not, and a sample tells cheaply.
fn sample_shrinks(data: &[u8]) -> bool {
    let mid = data.len() / 2;
    let sample = &data[mid - SAMPLE / 2..mid + SAMPLE / 2];
    let mut out = Vec::with_capacity(SAMPLE);
    let n =
        PROBE.with(|cell| compress_with(&mut cell.borrow_mut(), SAMPLE_LEVEL, sample, &mut out, 0));
    matches!(n, Some(n) if n * 100 <= sample.len() * 97)
}

/// Append `data`, compressed, to `out` if that is smaller than `data` and return `true`;
/// otherwise leave `out` as it was and return `false`. Writing into the caller's buffer lets a
/// blob be compressed and sealed in a single allocation.
pub fn compress_append(data: &[u8], mode: Compression, out: &mut Vec<u8>) -> bool {
    let Some(level) = mode.level() else {
        return false;
    };
    if data.len() < 64 {
        return false;
    }
    if mode == Compression::Auto && data.len() > SAMPLE_ABOVE && !sample_shrinks(data) {
        return false;
    }
    let start = out.len();
    // With room for about `data.len()` bytes, output that would not be smaller does not fit,
    // and zstd stops with an error instead of finishing it.
    out.reserve(data.len());
    let n = COMPRESSOR.with(|cell| compress_with(&mut cell.borrow_mut(), level, data, out, start));
    match n {
        Some(n) if n < data.len() => true,
        _ => {
            out.truncate(start);
            false
        }
    }
}

/// [`decompress`] into a caller's buffer (replacing its contents), reusing its allocation.
pub fn decompress_into(data: &[u8], max_len: usize, out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    out.reserve(max_len);
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let d = slot.as_mut().ok_or("zstd decompressor")?;
        d.decompress_to_buffer(data, out)
            .map(|_| ())
            .map_err(|e| format!("zstd: {e}"))
    })
}

/// Decompress a zstd frame, refusing output longer than `max_len`.
pub fn decompress(data: &[u8], max_len: usize) -> Result<Vec<u8>, String> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let d = slot.as_mut().ok_or("zstd decompressor")?;
        d.decompress(data, max_len)
            .map_err(|e| format!("zstd: {e}"))
    })
}

/// Compress `data` with `base` as zstd's prefix (a raw-content dictionary: matches may point
/// into it), appending one frame to `out`. Returns `false`, leaving `out` as it was, when
/// compression is off or the frame would not be smaller than `data`.
pub fn compress_delta_append(
    data: &[u8],
    base: &[u8],
    mode: Compression,
    out: &mut Vec<u8>,
) -> bool {
    let Some(level) = mode.level() else {
        return false;
    };
    let start = out.len();
    let mut c = CCtx::create();
    let done = c.set_parameter(CParameter::CompressionLevel(level)).is_ok()
        && c.set_parameter(CParameter::ContentSizeFlag(true)).is_ok()
        && c.set_pledged_src_size(Some(data.len() as u64)).is_ok()
        && c.ref_prefix(base).is_ok()
        && {
            out.reserve(data.len());
            let mut cursor = std::io::Cursor::new(&mut *out);
            cursor.set_position(start as u64);
            matches!(c.compress2(&mut cursor, data), Ok(n) if n < data.len())
        };
    if !done {
        out.truncate(start);
    }
    done
}

/// Decompress a frame written by [`compress_delta_append`] against the same `base`, into
/// `out` (replacing its contents), refusing output longer than `max_len`.
pub fn decompress_delta_into(
    data: &[u8],
    base: &[u8],
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    use zstd::zstd_safe::DCtx;
    out.clear();
    out.reserve(max_len);
    let mut d = DCtx::create();
    d.ref_prefix(base)
        .map_err(|c| format!("zstd: {}", zstd::zstd_safe::get_error_name(c)))?;
    d.decompress(out, data)
        .map_err(|c| format!("zstd: {}", zstd::zstd_safe::get_error_name(c)))?;
    if out.len() > max_len {
        return Err(format!("zstd: more than {max_len} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` incompressible bytes.
    fn noise(len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(b"noise")
            .finalize_xof()
            .fill(&mut out);
        out
    }

    #[test]
    fn compressible_data_shrinks_and_round_trips() {
        let data: Vec<u8> = b"cairn ".iter().cycle().take(1 << 20).copied().collect();
        for mode in [Compression::Auto, Compression::Max, Compression::Level(1)] {
            let c = compress(&data, mode).expect("compressible");
            assert!(c.len() < data.len() / 10);
            assert_eq!(decompress(&c, data.len()).unwrap(), data);
            assert!(decompress(&c, data.len() - 1).is_err());
        }
        assert!(compress(&data, Compression::Off).is_none());
    }

    #[test]
    fn incompressible_data_is_stored() {
        let data = noise(1 << 20);
        assert!(compress(&data, Compression::Auto).is_none());
        assert!(compress(&data, Compression::Level(3)).is_none());
    }

    #[test]
    fn large_blobs_are_sampled_and_refusals_do_not_stick() {
        // Large blobs are sampled first; a frame that does not fit fails inside zstd, and the
        // next blob on this thread's context must still compress.
        let noise = noise(1 << 20);
        let text: Vec<u8> = (0..40_000u32)
            .flat_map(|i| format!("line {i} of {}\n", i % 97).into_bytes())
            .collect();
        assert!(text.len() > SAMPLE_ABOVE);
        // Incompressible but for a compressible middle: the sample says compress, and the
        // frame is smaller.
        let mut mixed = noise.clone();
        mixed.splice(
            mixed.len() / 2 - SAMPLE..mixed.len() / 2 + SAMPLE,
            text[..2 * SAMPLE].iter().copied(),
        );
        for _ in 0..2 {
            assert!(compress(&noise, Compression::Auto).is_none());
            assert!(compress(&mixed, Compression::Auto).is_some_and(|c| c.len() < mixed.len()));
            let c = compress(&text, Compression::Auto).expect("text shrinks");
            assert!(c.len() < text.len() / 3);
            assert_eq!(decompress(&c, text.len()).unwrap(), text);
            assert!(compress(&noise, Compression::Level(3)).is_none());
        }
        // Room for the frame is bounded by the input's length, whatever `out` held before.
        let mut out = vec![5u8; 1 << 20];
        assert!(!compress_append(&noise, Compression::Auto, &mut out));
        assert_eq!(out.len(), 1 << 20);
        assert!(compress_append(&text, Compression::Auto, &mut out));
        assert_eq!(decompress(&out[1 << 20..], text.len()).unwrap(), text);
    }

    #[test]
    fn appends_after_existing_bytes() {
        let data: Vec<u8> = b"abcdefgh".iter().cycle().take(100_000).copied().collect();
        let mut out = vec![9u8; 25];
        assert!(compress_append(&data, Compression::Auto, &mut out));
        assert_eq!(&out[..25], &[9u8; 25]);
        assert_eq!(decompress(&out[25..], data.len()).unwrap(), data);
        let random = noise(100_000);
        let mut out = vec![1u8; 3];
        assert!(!compress_append(&random, Compression::Level(3), &mut out));
        assert_eq!(out, vec![1u8; 3]);
    }

    #[test]
    fn delta_against_a_similar_base_is_small_and_round_trips() {
        let base: Vec<u8> = (0..2000u32)
            .flat_map(|i| format!("({i},'row {i}',{}),\n", i * 7919 % 1000).into_bytes())
            .collect();
        let mut data = base.clone();
        data[5000..5010].copy_from_slice(b"CHANGED!!!");
        let mut plain = Vec::new();
        let mut out = vec![7u8; 3];
        assert!(compress_delta_append(
            &data,
            &base,
            Compression::Auto,
            &mut out
        ));
        let alone = compress(&data, Compression::Auto).unwrap();
        assert!(
            out.len() - 3 < alone.len() / 10,
            "{} vs {}",
            out.len(),
            alone.len()
        );
        decompress_delta_into(&out[3..], &base, data.len(), &mut plain).unwrap();
        assert_eq!(plain, data);
        // Another base, a shorter bound, or no base at all: refused, never wrong bytes.
        let mut other = base.clone();
        other[100] ^= 1;
        assert!(
            decompress_delta_into(&out[3..], &other, data.len(), &mut plain).is_err()
                || plain != data
        );
        assert!(decompress_delta_into(&out[3..], &base, data.len() - 1, &mut plain).is_err());
        assert!(decompress(&out[3..], data.len()).is_err());
        assert!(!compress_delta_append(
            &data,
            &base,
            Compression::Off,
            &mut out
        ));
    }

    #[test]
    fn parses_modes() {
        assert_eq!("off".parse::<Compression>().unwrap(), Compression::Off);
        assert_eq!("max".parse::<Compression>().unwrap(), Compression::Max);
        assert_eq!("7".parse::<Compression>().unwrap(), Compression::Level(7));
        assert!("99".parse::<Compression>().is_err());
        assert!(decompress(b"not zstd", 100).is_err());
    }
}
