//! Lossless compression of a blob's tensor: its bytes regrouped in byte planes (every
//! element's first byte, then every second byte …: the sign and exponent bytes of floats
//! apart from the mantissa's), then zstd.
//!
//! A compressed blob is still a plain, verified file of this format: it holds one `U8`
//! tensor under the tensor's own name (the compressed bytes, whose CRC-32 the header
//! carries as for any tensor), and its `__metadata__` key `encoding` says how to decode it:
//! the codec, the tensor's dtype and shape, and the CRC-32 of the decoded bytes. So the
//! bytes are checked before decoding (the file's checksum) and after (the decoded one).

use serde::{Deserialize, Serialize};

use crate::model::{Dtype, NamedTensor};
use crate::store::CheckpointFile;
use crate::Error;

/// The most a zstd frame expands: an RLE block is 4 bytes for up to 128 KiB.
const MAX_EXPANSION: usize = 32_768;

/// The `__metadata__` key of a compressed blob's encoding.
pub const KEY_ENCODING: &str = "encoding";
/// The one codec: byte planes, then a zstd frame.
const CODEC: &str = "zstd-byte-planes";
/// zstd's level: on the byte planes of a trained checkpoint (the digits MLP at 4096-4096
/// with Adam, 205 MB of float32) level 1 gave 0.837 of the bytes at 707 MB/s, level 3
/// 0.842 at 288 MB/s (the mantissa planes do not compress at any level).
const LEVEL: i32 = 1;
/// A tensor is stored compressed only if that saves at least this part of its bytes
/// (1/64): otherwise decoding would cost each load for nothing.
const MIN_SAVING_SHIFT: u32 = 6;

/// How a compressed blob's tensor decodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encoding {
    /// `zstd-byte-planes`.
    pub codec: String,
    /// The decoded tensor's dtype.
    pub dtype: Dtype,
    /// The decoded tensor's shape.
    pub shape: Vec<usize>,
    /// CRC-32 of the decoded bytes, 8 lowercase hex digits.
    pub crc32: String,
}

impl Encoding {
    /// The decoded tensor's size in bytes (`None` on overflow or a sub-byte dtype).
    pub fn decoded_len(&self) -> Option<usize> {
        let elem = self.dtype.bitsize();
        if !elem.is_multiple_of(8) {
            return None;
        }
        self.shape
            .iter()
            .try_fold(elem / 8, |n, d| n.checked_mul(*d))
    }

    /// The encoding of `file`, a blob: `None` for a plain one.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for an encoding that does not parse, names another codec, or
    /// does not describe the file's one `U8` tensor.
    pub fn of(file: &CheckpointFile) -> Result<Option<Encoding>, Error> {
        let Some(text) = file.info().get(KEY_ENCODING) else {
            return Ok(None);
        };
        let corrupt = |reason: String| Error::Corrupt {
            path: file.path().clone(),
            reason,
        };
        let encoding: Encoding = serde_json::from_str(text)
            .map_err(|e| corrupt(format!("its encoding does not parse: {e}")))?;
        if encoding.codec != CODEC {
            return Err(corrupt(format!(
                "its encoding {:?} is not {CODEC}",
                crate::text::shorten(&encoding.codec, 100)
            )));
        }
        let mut tensors = file.tensors();
        let one = tensors.next();
        // No zstd frame decodes to more than 32,768 times its size (an RLE block: 4 bytes
        // for 128 KiB): a larger claim is refused before anything is allocated, so memory
        // stays proportional to the file, as for a plain tensor.
        let bound = one.map_or(0, |t| t.len).saturating_mul(MAX_EXPANSION);
        if encoding
            .decoded_len()
            .is_none_or(|n| n > bound.saturating_add(1 << 17))
        {
            return Err(corrupt(
                "its encoding's shape is too large for its compressed bytes".to_owned(),
            ));
        }
        if tensors.next().is_some()
            || one.is_none_or(|t| t.dtype != Dtype::U8 || t.shape.len() != 1)
        {
            return Err(corrupt(
                "an encoded blob holds one U8 tensor of one dimension".to_owned(),
            ));
        }
        Ok(Some(encoding))
    }

    /// The metadata value of this encoding.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decodes `stored` (the blob's tensor bytes, already checked against the file's
    /// checksum) into the tensor's bytes, checked against the decoded checksum.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] naming `file` for bytes that do not decode to exactly the
    /// tensor's size or checksum; [`Error::TooLarge`] for memory that cannot be had.
    pub fn decode(&self, file: &CheckpointFile, stored: &[u8]) -> Result<Vec<u8>, Error> {
        let corrupt = |reason: String| Error::Corrupt {
            path: file.path().clone(),
            reason,
        };
        let len = self
            .decoded_len()
            .ok_or_else(|| corrupt("its encoding's shape is too large".to_owned()))?;
        let bytes = decompress(stored, self.dtype.bitsize() / 8, len).map_err(|e| match e {
            Decompress::Memory => Error::TooLarge {
                what: file.path().to_string(),
                reason: format!("{len} decoded bytes cannot be allocated"),
            },
            Decompress::Bytes(reason) => corrupt(reason),
        })?;
        let crc = crate::store::crc_hex(crc32fast::hash(&bytes));
        if crc != self.crc32 {
            return Err(corrupt(format!(
                "its decoded bytes fail their checksum (crc32 {crc}, expected {})",
                crate::text::shorten(&self.crc32, 20)
            )));
        }
        Ok(bytes)
    }
}

/// `tensor` compressed: its stored bytes and encoding, or `None` when compression would
/// not save 1/64 of its bytes (it is then stored plain).
///
/// # Errors
///
/// The tensor's own error while its bytes are read.
pub fn encode(tensor: &NamedTensor<'_>) -> Result<Option<(Vec<u8>, Encoding)>, Error> {
    let dtype = tensor.data.dtype();
    if !dtype.bitsize().is_multiple_of(8) {
        return Ok(None);
    }
    let len = tensor.data.byte_len();
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len).map_err(|_| Error::TooLarge {
        what: crate::text::shorten(&tensor.name, 200),
        reason: format!("{len} bytes cannot be allocated to compress it"),
    })?;
    tensor
        .data
        .write_to(&mut |b| {
            bytes.extend_from_slice(b);
            Ok(())
        })
        .map_err(|_| Error::TensorName {
            name: crate::text::shorten(&tensor.name, 200),
            reason: "its bytes could not be read to compress it",
        })?;
    if bytes.len() != len {
        return Err(Error::TensorSize {
            dtype,
            shape: tensor.data.shape().to_vec(),
            expected: len,
            actual: bytes.len(),
        });
    }
    let crc32 = crate::store::crc_hex(crc32fast::hash(&bytes));
    let Ok(stored) = compress(&bytes, dtype.bitsize() / 8) else {
        return Ok(None);
    };
    drop(bytes);
    if stored.len() > len - (len >> MIN_SAVING_SHIFT) || len == 0 {
        return Ok(None);
    }
    Ok(Some((
        stored,
        Encoding {
            codec: CODEC.to_owned(),
            dtype,
            shape: tensor.data.shape().to_vec(),
            crc32,
        },
    )))
}

/// `bytes` (elements of `elem` bytes) in byte planes, compressed: the stored bytes of a
/// compressed blob (`elem` 1 is zstd alone).
///
/// # Errors
///
/// zstd's error (its context cannot be had).
pub fn compress(bytes: &[u8], elem: usize) -> std::io::Result<Vec<u8>> {
    if elem <= 1 {
        return zstd::bulk::compress(bytes, LEVEL);
    }
    let planes = to_planes(bytes, elem).ok_or(std::io::ErrorKind::OutOfMemory)?;
    zstd::bulk::compress(&planes, LEVEL)
}

/// Why [`decompress`] failed.
#[derive(Debug)]
pub enum Decompress {
    /// The decoded bytes' memory cannot be had.
    Memory,
    /// The bytes do not decode to exactly the size expected: why, in words.
    Bytes(String),
}

/// The inverse of [`compress`]: exactly `len` bytes, never more allocated whatever the
/// frame claims.
///
/// # Errors
///
/// [`Decompress`].
pub fn decompress(stored: &[u8], elem: usize, len: usize) -> Result<Vec<u8>, Decompress> {
    let mut planes = Vec::new();
    planes
        .try_reserve_exact(len)
        .map_err(|_| Decompress::Memory)?;
    // zstd writes into the capacity reserved, and fails rather than grow it.
    let n = zstd::bulk::Decompressor::new()
        .and_then(|mut d| d.decompress_to_buffer(stored, &mut planes))
        .map_err(|e| Decompress::Bytes(format!("its compressed bytes do not decode: {e}")))?;
    if n != len {
        return Err(Decompress::Bytes(format!(
            "its compressed bytes decode to {n} bytes, not the {len} of its shape"
        )));
    }
    if elem <= 1 {
        return Ok(planes);
    }
    from_planes(&planes, elem).ok_or(Decompress::Memory)
}

/// `bytes` (elements of `elem` bytes) as byte planes: every element's byte 0, then byte 1
/// …; bytes past the last whole element stay last. `None` when the memory cannot be had.
pub fn to_planes(bytes: &[u8], elem: usize) -> Option<Vec<u8>> {
    let mut out = zeroed(bytes.len())?;
    match elem {
        2 => split::<2>(bytes, &mut out),
        4 => split::<4>(bytes, &mut out),
        8 => split::<8>(bytes, &mut out),
        _ => out.copy_from_slice(bytes),
    }
    Some(out)
}

/// The inverse of [`to_planes`] (`None` when the memory cannot be had).
pub fn from_planes(planes: &[u8], elem: usize) -> Option<Vec<u8>> {
    let mut out = zeroed(planes.len())?;
    match elem {
        2 => join::<2>(planes, &mut out),
        4 => join::<4>(planes, &mut out),
        8 => join::<8>(planes, &mut out),
        _ => out.copy_from_slice(planes),
    }
    Some(out)
}

/// `len` zero bytes, or `None` when the memory cannot be had.
fn zeroed(len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    out.try_reserve_exact(len).ok()?;
    out.resize(len, 0);
    Some(out)
}

/// The N planes of `out` (N equal parts, then the tail).
fn planes_of<const N: usize>(out: &mut [u8]) -> ([&mut [u8]; N], &mut [u8]) {
    let n = out.len() / N;
    let (body, tail) = out.split_at_mut(n * N);
    let mut parts = body.chunks_exact_mut(n.max(1));
    let planes = std::array::from_fn(|_| parts.next().unwrap_or_default());
    (planes, tail)
}

/// One pass over the elements, each byte to its plane (the compiler keeps N planes' cursors
/// in registers, several times faster than a pass per plane).
fn split<const N: usize>(bytes: &[u8], out: &mut [u8]) {
    let whole = bytes.len() / N * N;
    let n = whole / N;
    let (mut planes, tail) = planes_of::<N>(out);
    // Blocks of 64 elements, every plane's slice of the block taken first: the inner loops
    // then run without bounds checks.
    for (b, block) in bytes[..whole].chunks(64 * N).enumerate() {
        let start = b * 64;
        let count = block.len() / N;
        for (k, plane) in planes.iter_mut().enumerate() {
            let dst = &mut plane[start..start + count];
            for (d, element) in dst.iter_mut().zip(block.chunks_exact(N)) {
                *d = element[k];
            }
        }
    }
    debug_assert!(planes.iter().all(|p| p.len() == n));
    tail.copy_from_slice(&bytes[whole..]);
}

fn join<const N: usize>(planes: &[u8], out: &mut [u8]) {
    let n = planes.len() / N;
    let whole = n * N;
    let (body, tail) = planes.split_at(whole);
    let parts: Vec<&[u8]> = body.chunks_exact(n.max(1)).collect();
    if n > 0 {
        for (b, block) in out[..whole].chunks_mut(64 * N).enumerate() {
            let start = b * 64;
            let count = block.len() / N;
            for (k, part) in parts.iter().enumerate() {
                let src = &part[start..start + count];
                for (element, s) in block.chunks_exact_mut(N).zip(src) {
                    element[k] = *s;
                }
            }
        }
    }
    out[whole..].copy_from_slice(tail);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_round_trip() {
        for elem in [1, 2, 4, 8] {
            for n in [0, 1, 3, 1000] {
                let bytes: Vec<u8> = (0..n * elem).map(|i| (i * 7 + i / 3) as u8).collect();
                let packed = compress(&bytes, elem).expect("compress");
                match decompress(&packed, elem, bytes.len()) {
                    Ok(back) => assert_eq!(back, bytes),
                    Err(e) => panic!("{e:?}"),
                }
                assert!(decompress(&packed, elem, bytes.len() + 1).is_err());
                let planes = to_planes(&bytes, elem).expect("memory");
                assert_eq!(
                    from_planes(&planes, elem),
                    Some(bytes.clone()),
                    "elem {elem} n {n}"
                );
                if elem == 4 && n == 3 {
                    assert_eq!(planes[..3], [bytes[0], bytes[4], bytes[8]]);
                }
            }
        }
    }
}
