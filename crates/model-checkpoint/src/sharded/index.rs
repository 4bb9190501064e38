//! The index a sharded checkpoint is committed by, `model.safetensors.index.json`: Hugging
//! Face's `weight_map` (every tensor name to a shard file, so that `transformers`-style
//! readers find each name) and this project's section: the shards with their sizes and
//! header digests, the world size, the save's identity, and where each piece of each tensor
//! lies in its global shape. An index is untrusted input: everything is checked on reading.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ranks::MAX_WORLD_SIZE;
pub use crate::model::Slice;
use crate::Error;

/// The index's name in a sharded checkpoint's folder.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The largest index read, in bytes.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;
/// The version of this project's section.
pub const SHARDED_FORMAT_VERSION: u32 = 1;
/// The version of a deduplicated checkpoint's index (`blobs` instead of `shards`): a
/// reader of version 1 refuses it by its version rather than misreading it.
pub const DEDUP_FORMAT_VERSION: u32 = 2;

/// The folder of a run's blobs (deduplicated checkpoints), in the run's folder.
pub const BLOBS_DIR: &str = "blobs";
/// The length of a blob's id: SHA-256 in hex.
const ID_LEN: usize = 64;
/// The most `../` a blob reference may climb (a template's folders are fewer).
pub(crate) const MAX_UP: usize = 64;

/// Whether `file`, as an index names it, is a blob: `../` at least once, then
/// `blobs/<64 lowercase hex digits>.safetensors`.
pub fn is_blob_reference(file: &str) -> bool {
    let mut rest = file;
    let mut up = 0;
    while let Some(r) = rest.strip_prefix("../") {
        rest = r;
        up += 1;
    }
    (1..=MAX_UP).contains(&up)
        && rest
            .strip_prefix(BLOBS_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.strip_suffix(".safetensors"))
            .is_some_and(is_blob_id)
}

/// Whether `id` is a blob id: 64 lowercase hex digits.
pub(crate) fn is_blob_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `file` is named as [`shard_file`] names shards.
pub fn is_shard_file(file: &str) -> bool {
    let Some(rest) = file
        .strip_prefix("shard-")
        .and_then(|r| r.strip_suffix(".safetensors"))
    else {
        return false;
    };
    rest.split_once("-of-").is_some_and(|(rank, world)| {
        [rank, world]
            .iter()
            .all(|n| n.len() >= 5 && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The shard file rank `rank` of `world_size` writes.
pub fn shard_file(rank: usize, world_size: usize) -> String {
    format!("shard-{rank:05}-of-{world_size:05}.safetensors")
}

/// One piece of a tensor, in one shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// The shard file holding it (under the tensor's own name).
    pub file: String,
    /// Where it starts in the global tensor, per dimension.
    pub offsets: Vec<usize>,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// A tensor of the checkpoint: its global shape and dtype, and its pieces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalTensor {
    /// safetensors' dtype name (`F32`, `BF16` …).
    pub dtype: String,
    /// The whole tensor's shape.
    pub global_shape: Vec<usize>,
    /// The pieces, which tile the global shape exactly.
    pub pieces: Vec<Piece>,
}

/// A shard as the coordinator found it when it committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Its file name in the folder.
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of its head (length prefix and header), in hex: the exact version committed.
    pub header_sha256: String,
    /// For a compressed blob, its size were its tensor stored plain (what `ckpt du` counts
    /// as logical bytes); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_bytes: Option<u64>,
}

/// This project's section of the index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sharded {
    /// [`SHARDED_FORMAT_VERSION`].
    pub format_version: u32,
    /// The number of processes that saved.
    pub world_size: usize,
    /// The save's identity, which every shard carries (a shard of another save is refused).
    pub save_id: String,
    /// The shards, by rank (in a deduplicated checkpoint one, its head: a blob holding the
    /// save's metadata and no tensor).
    pub shards: Vec<ShardEntry>,
    /// A deduplicated checkpoint's blobs (`crate::sharded::blobs`): content-addressed
    /// files, each named relative to the index's folder, shared between checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobs: Option<Vec<ShardEntry>>,
    /// Every tensor, by name.
    pub tensors: BTreeMap<String, GlobalTensor>,
    /// What the coordinator adds: epoch, step, logs, the global training state.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The index file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// Hugging Face's: `total_size`, the bytes of all tensors.
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Hugging Face's: every tensor name to the shard that holds it (its first piece).
    pub weight_map: BTreeMap<String, String>,
    /// This project's section.
    pub model_checkpoint: Sharded,
}

impl Index {
    /// Parses and checks an index read from `location`.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] naming what is wrong.
    pub fn parse(location: &str, bytes: &[u8]) -> Result<Index, Error> {
        let bad = |reason: String| Error::Corrupt {
            path: location.into(),
            reason,
        };
        let index: Index = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("the index is malformed: {e}")))?;
        let s = &index.model_checkpoint;
        let expected = match s.blobs {
            None => SHARDED_FORMAT_VERSION,
            Some(_) => DEDUP_FORMAT_VERSION,
        };
        if s.format_version != expected {
            return Err(bad(format!(
                "sharded format version {} (this build reads {SHARDED_FORMAT_VERSION}, and {DEDUP_FORMAT_VERSION} with blobs)",
                s.format_version
            )));
        }
        if let Some(blobs) = &s.blobs {
            let head = s.shards.first().map(|sh| sh.file.as_str());
            if s.world_size != 1 || s.shards.len() != 1 || !head.is_some_and(is_blob_reference) {
                return Err(bad(
                    "a deduplicated checkpoint has one shard, its head, which is a blob".to_owned(),
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for blob in blobs {
                if !is_blob_reference(&blob.file) {
                    return Err(bad(format!(
                        "blob {:?} is not named as a blob",
                        crate::text::shorten(&blob.file, 100)
                    )));
                }
                if !seen.insert(blob.file.as_str()) {
                    return Err(bad(format!(
                        "blob {:?} is listed twice",
                        crate::text::shorten(&blob.file, 100)
                    )));
                }
            }
        } else if s.world_size == 0
            || s.world_size > MAX_WORLD_SIZE
            || s.shards.len() != s.world_size
        {
            return Err(bad(format!(
                "{} shards for a world size of {}",
                s.shards.len(),
                s.world_size
            )));
        }
        for (rank, shard) in s.shards.iter().enumerate() {
            if s.blobs.is_none() && shard.file != shard_file(rank, s.world_size) {
                return Err(bad(format!(
                    "shard {rank} is named {:?}",
                    crate::text::shorten(&shard.file, 100)
                )));
            }
        }
        let files: std::collections::BTreeSet<&str> = s
            .shards
            .iter()
            .chain(s.blobs.iter().flatten())
            .map(|sh| sh.file.as_str())
            .collect();
        // Pairs of pieces checked one against the other, over the whole index.
        let mut pairs = 0usize;
        for (name, t) in &s.tensors {
            let named = |reason: &str| {
                bad(format!(
                    "tensor {:?}: {reason}",
                    crate::text::shorten(name, 100)
                ))
            };
            if t.global_shape.len() > crate::store::MAX_DIMS {
                return Err(named(&format!(
                    "{} dimensions, beyond {}",
                    t.global_shape.len(),
                    crate::store::MAX_DIMS
                )));
            }
            // A shard holds one tensor of a name: at most one piece per shard.
            let mut seen = std::collections::BTreeSet::new();
            for p in &t.pieces {
                if !files.contains(p.file.as_str()) {
                    return Err(named("a piece names a shard that is not in the index"));
                }
                if !seen.insert(p.file.as_str()) {
                    return Err(named("two pieces in one shard"));
                }
            }
            check_tiling(t, &mut pairs).map_err(|reason| named(&reason))?;
            // Hugging Face's readers follow `weight_map`, this one `tensors`: they must
            // agree, or a file that verifies here would load other bytes there. The map
            // names the piece at the tensor's origin, as a save writes it.
            let at_origin = |p: &&Piece| p.offsets.iter().all(|&o| o == 0);
            let mapped = index.weight_map.get(name);
            let agrees = match (mapped, t.pieces.iter().any(|p| at_origin(&p))) {
                (Some(file), true) => t.pieces.iter().filter(at_origin).any(|p| &p.file == file),
                (Some(file), false) => t.pieces.iter().any(|p| &p.file == file),
                (None, has_origin) => !has_origin,
            };
            if !agrees {
                return Err(named(
                    "weight_map does not name the shard holding its first piece",
                ));
            }
        }
        if let Some(name) = index
            .weight_map
            .keys()
            .find(|n| !s.tensors.contains_key(*n))
        {
            return Err(bad(format!(
                "weight_map names tensor {:?}, which the index does not hold",
                crate::text::shorten(name, 100)
            )));
        }
        Ok(index)
    }
}

/// The number of elements of `shape`, or `None` on overflow.
pub(crate) fn volume(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// The most pieces of one tensor checked pair by pair (a tensor cut along one dimension,
/// the usual case, is checked in `n log n` whatever its number of pieces).
const MAX_PAIRWISE_PIECES: usize = 1024;

/// The most pairs of pieces checked one against the other in one index, over all its
/// tensors (a thousand tensors each cut in a grid of 64 pieces is 2 million): an index is
/// untrusted, and a thousand tensors of 1,024 pieces would be half a billion.
const MAX_PAIRS_PER_INDEX: usize = 1 << 24;

/// Checks that the pieces lie inside the global shape, do not overlap, and cover it;
/// `pairs` counts the pairs of pieces checked one against the other in the index so far.
fn check_tiling(t: &GlobalTensor, pairs: &mut usize) -> Result<(), String> {
    if let Some(result) = check_cut_along_one_dimension(t) {
        return result;
    }
    if let Some(result) = check_grid(t) {
        return result;
    }
    if t.pieces.len() > MAX_PAIRWISE_PIECES {
        return Err(format!(
            "{} pieces not cut along one dimension (at most {MAX_PAIRWISE_PIECES} are checked)",
            t.pieces.len()
        ));
    }
    let n = t.pieces.len();
    *pairs = pairs.saturating_add(n * n.saturating_sub(1) / 2);
    if *pairs > MAX_PAIRS_PER_INDEX {
        return Err(format!(
            "its pieces, not cut along one dimension, bring the index past \
             {MAX_PAIRS_PER_INDEX} pairs of pieces to check"
        ));
    }
    let global = volume(&t.global_shape).ok_or("its global shape overflows")?;
    let mut covered = 0usize;
    for (i, p) in t.pieces.iter().enumerate() {
        if p.offsets.len() != t.global_shape.len() || p.shape.len() != t.global_shape.len() {
            return Err("a piece has another number of dimensions".to_owned());
        }
        if !lies_inside(p, &t.global_shape) {
            return Err("a piece lies outside the global shape".to_owned());
        }
        for q in &t.pieces[..i] {
            if overlap(&p.offsets, &p.shape, &q.offsets, &q.shape).is_some() {
                return Err("two pieces overlap".to_owned());
            }
        }
        covered = covered
            .checked_add(volume(&p.shape).ok_or("a piece's shape overflows")?)
            .ok_or("the pieces overflow")?;
    }
    if covered != global {
        return Err(format!("the pieces cover {covered} of {global} elements"));
    }
    Ok(())
}

/// Whether piece `p` lies inside a tensor of shape `global`, dimension by dimension (a
/// piece of another number of dimensions is checked by the caller).
fn lies_inside(p: &Piece, global: &[usize]) -> bool {
    p.offsets
        .iter()
        .zip(&p.shape)
        .zip(global)
        .all(|((&o, &n), &g)| o.checked_add(n).is_some_and(|end| end <= g))
}

/// Where the pieces are the cells of a grid (the cuts of each dimension, as tensor
/// parallelism along one and data parallelism along another make): each piece is one cell
/// of the grid that all pieces' boundaries draw, no cell twice and none missing. Checked
/// in `n log n`, so that a large model cut in two dimensions is not checked pair by pair.
/// `None` when the pieces are not cells of one grid (or a dimension is empty).
fn check_grid(t: &GlobalTensor) -> Option<Result<(), String>> {
    let dims = t.global_shape.len();
    let well_formed = |p: &Piece| {
        p.offsets.len() == dims
            && p.shape.len() == dims
            && p.shape.iter().all(|&n| n > 0)
            && lies_inside(p, &t.global_shape)
    };
    if dims == 0 || t.global_shape.contains(&0) || !t.pieces.iter().all(well_formed) {
        return None;
    }
    // Each dimension's boundaries: 0, its end, and every piece's start and end.
    let bounds: Vec<Vec<usize>> = (0..dims)
        .map(|d| {
            let mut b: Vec<usize> = t
                .pieces
                .iter()
                .flat_map(|p| [p.offsets[d], p.offsets[d] + p.shape[d]])
                .chain([0, t.global_shape[d]])
                .collect();
            b.sort_unstable();
            b.dedup();
            b
        })
        .collect();
    let mut cells = std::collections::HashSet::with_capacity(t.pieces.len());
    for p in &t.pieces {
        let mut cell = Vec::with_capacity(dims);
        for (d, b) in bounds.iter().enumerate() {
            let i = b.binary_search(&p.offsets[d]).ok()?;
            // A piece spanning more than one cell: not a grid of single cells.
            if b.get(i + 1) != Some(&(p.offsets[d] + p.shape[d])) {
                return None;
            }
            cell.push(i);
        }
        if !cells.insert(cell) {
            return Some(Err("two pieces overlap".to_owned()));
        }
    }
    let grid = bounds
        .iter()
        .try_fold(1usize, |n, b| n.checked_mul(b.len() - 1));
    Some(if grid == Some(cells.len()) {
        Ok(())
    } else {
        Err(format!(
            "the pieces are {} cells of a grid of {}",
            cells.len(),
            grid.map_or("more".to_owned(), |g| g.to_string())
        ))
    })
}

/// Where every piece spans the whole tensor in every dimension but one, the same for all:
/// sorted along it, the pieces must follow each other from 0 to its end. `None` when the
/// pieces are not cut so.
fn check_cut_along_one_dimension(t: &GlobalTensor) -> Option<Result<(), String>> {
    let dims = t.global_shape.len();
    let well_formed = |p: &Piece| p.offsets.len() == dims && p.shape.len() == dims;
    if dims == 0 || !t.pieces.iter().all(well_formed) {
        return None;
    }
    let full = |p: &Piece, d: usize| p.offsets[d] == 0 && p.shape[d] == t.global_shape[d];
    let cut = (0..dims).find(|&d| t.pieces.iter().any(|p| !full(p, d)))?;
    if !t
        .pieces
        .iter()
        .all(|p| (0..dims).all(|d| d == cut || full(p, d)))
    {
        return None;
    }
    let mut spans: Vec<(usize, usize)> = t
        .pieces
        .iter()
        .map(|p| (p.offsets[cut], p.shape[cut]))
        .collect();
    spans.sort_unstable();
    let mut at = 0usize;
    for (start, len) in spans {
        if start != at {
            return Some(Err(if start < at {
                "two pieces overlap".to_owned()
            } else {
                format!("the pieces leave {at} to {start} of dimension {cut} uncovered")
            }));
        }
        at = match start.checked_add(len) {
            Some(end) => end,
            None => return Some(Err("a piece's extent overflows".to_owned())),
        };
    }
    Some(if at == t.global_shape[cut] {
        Ok(())
    } else {
        Err(format!(
            "the pieces cover {at} of {} along dimension {cut}",
            t.global_shape[cut]
        ))
    })
}

/// The overlap of two boxes (offsets and shapes), as offsets and a shape; `None` if empty.
pub(crate) fn overlap(
    a_off: &[usize],
    a_shape: &[usize],
    b_off: &[usize],
    b_shape: &[usize],
) -> Option<(Vec<usize>, Vec<usize>)> {
    let mut off = Vec::with_capacity(a_off.len());
    let mut shape = Vec::with_capacity(a_off.len());
    for d in 0..a_off.len() {
        let lo = a_off[d].max(b_off[d]);
        let hi = (a_off[d] + a_shape[d]).min(b_off[d] + b_shape[d]);
        if hi <= lo {
            return None;
        }
        off.push(lo);
        shape.push(hi - lo);
    }
    Some((off, shape))
}

/// A box of a tensor: where it starts in the global tensor, and its shape.
#[derive(Clone, Copy)]
pub(crate) struct Region<'a> {
    pub off: &'a [usize],
    pub shape: &'a [usize],
}

/// Copies `region` (which lies inside both) from `src`, the bytes of the box `src_box`,
/// into `dst`, the bytes of the box `dst_box`; `elem` bytes an element, row-major.
pub(crate) fn copy_box(
    elem: usize,
    (src, src_box): (&[u8], Region<'_>),
    (dst, dst_box): (&mut [u8], Region<'_>),
    region: Region<'_>,
) {
    let dims = region.shape.len();
    if dims == 0 {
        dst[..elem].copy_from_slice(&src[..elem]);
        return;
    }
    let strides = |shape: &[usize]| {
        let mut s = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            s[d] = s[d + 1] * shape[d + 1];
        }
        s
    };
    let (s_str, d_str) = (strides(src_box.shape), strides(dst_box.shape));
    let run = region.shape[dims - 1] * elem;
    let mut idx = vec![0usize; dims - 1];
    loop {
        let (mut s_at, mut d_at) = (0usize, 0usize);
        for d in 0..dims {
            let at = region.off[d] + if d < dims - 1 { idx[d] } else { 0 };
            s_at += (at - src_box.off[d]) * s_str[d];
            d_at += (at - dst_box.off[d]) * d_str[d];
        }
        let (s_at, d_at) = (s_at * elem, d_at * elem);
        dst[d_at..d_at + run].copy_from_slice(&src[s_at..s_at + run]);
        // The next row of the region, the last dimension fastest.
        let mut d = dims - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < region.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_tiling_alone(t: &GlobalTensor) -> Result<(), String> {
        check_tiling(t, &mut 0)
    }

    #[test]
    fn boxes_copy_between_pieces() {
        // A 4×3 tensor of bytes 0..12; the piece rows 1..3, columns 1..3.
        let global: Vec<u8> = (0..12).collect();
        let whole = Region {
            off: &[0, 0],
            shape: &[4, 3],
        };
        let inner = Region {
            off: &[1, 1],
            shape: &[2, 2],
        };
        let mut piece = vec![0u8; 4];
        copy_box(1, (&global, whole), (&mut piece, inner), inner);
        assert_eq!(piece, [4, 5, 7, 8]);
        let mut back = vec![0u8; 12];
        copy_box(1, (&piece, inner), (&mut back, whole), inner);
        assert_eq!(back, [0, 0, 0, 0, 4, 5, 0, 7, 8, 0, 0, 0]);
        assert_eq!(
            overlap(&[0, 0], &[2, 3], &[1, 1], &[2, 2]),
            Some((vec![1, 1], vec![1, 2]))
        );
        assert_eq!(overlap(&[0], &[2], &[2], &[2]), None);
    }

    #[test]
    fn tilings_must_cover_without_overlap() {
        let piece = |o: usize, n: usize| Piece {
            file: shard_file(0, 1),
            offsets: vec![o, 0],
            shape: vec![n, 3],
        };
        let t = |pieces| GlobalTensor {
            dtype: "F32".into(),
            global_shape: vec![4, 3],
            pieces,
        };
        assert!(check_tiling_alone(&t(vec![piece(0, 2), piece(2, 2)])).is_ok());
        assert!(check_tiling_alone(&t(vec![piece(0, 2), piece(1, 2)])).is_err());
        assert!(check_tiling_alone(&t(vec![piece(0, 2)])).is_err());
        assert!(check_tiling_alone(&t(vec![piece(0, 2), piece(3, 2)])).is_err());
    }

    #[test]
    fn pieces_checked_pair_by_pair_are_bounded_over_the_whole_index() {
        // A 2×2 grid: not cut along one dimension, so its pieces are checked in pairs (6).
        let piece = |r: usize, c: usize| Piece {
            file: shard_file(r * 2 + c, 4),
            offsets: vec![r * 2, c * 2],
            shape: vec![2, 2],
        };
        let grid = GlobalTensor {
            dtype: "F32".into(),
            global_shape: vec![4, 4],
            pieces: vec![piece(0, 0), piece(0, 1), piece(1, 0), piece(1, 1)],
        };
        // A grid is checked cell by cell: no pairs.
        let mut pairs = 0;
        assert!(check_tiling(&grid, &mut pairs).is_ok());
        assert_eq!(pairs, 0);
        // Not a grid (one piece spans two cells of the others' grid): pair by pair.
        let odd = GlobalTensor {
            dtype: "F32".into(),
            global_shape: vec![4, 4],
            pieces: vec![
                Piece {
                    file: shard_file(0, 3),
                    offsets: vec![0, 0],
                    shape: vec![2, 4],
                },
                piece(1, 0),
                piece(1, 1),
            ],
        };
        let mut pairs = 0;
        assert!(check_tiling(&odd, &mut pairs).is_ok());
        assert_eq!(pairs, 3);
        // The index's earlier tensors used the budget up: this one is refused.
        let mut pairs = MAX_PAIRS_PER_INDEX - 2;
        let err = check_tiling(&odd, &mut pairs).expect_err("past the budget");
        assert!(err.contains("pairs of pieces"), "{err}");
    }

    #[test]
    fn a_grid_of_pieces_tiles_only_if_every_cell_is_there_once() {
        let cell = |r: usize, c: usize, rows: usize, cols: usize| Piece {
            file: shard_file(r * 100 + c, 10_000),
            offsets: vec![r * rows, c * cols],
            shape: vec![rows, cols],
        };
        // 64 × 64 pieces of a 640 × 1280 matrix (4,096 pieces, past the pairwise cap).
        let mut pieces: Vec<Piece> = (0..64)
            .flat_map(|r| (0..64).map(move |c| cell(r, c, 10, 20)))
            .collect();
        let big = |pieces: Vec<Piece>| GlobalTensor {
            dtype: "F32".into(),
            global_shape: vec![640, 1280],
            pieces,
        };
        assert!(check_tiling(&big(pieces.clone()), &mut 0).is_ok());
        let last = pieces.pop().expect("a piece");
        let err = check_tiling(&big(pieces.clone()), &mut 0).expect_err("a cell missing");
        assert!(err.contains("4095 cells of a grid of 4096"), "{err}");
        pieces.push(pieces[0].clone());
        let err = check_tiling(&big(pieces.clone()), &mut 0).expect_err("a cell twice");
        assert!(err.contains("overlap"), "{err}");
        pieces.pop();
        pieces.push(last);
        assert!(check_tiling(&big(pieces), &mut 0).is_ok());
    }
}
