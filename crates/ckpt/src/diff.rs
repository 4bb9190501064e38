//! `ckpt diff`: two checkpoints, tensor by tensor.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;

use clap::Args;
use model_checkpoint::sharded::ShardedCheckpoint;
use model_checkpoint::store::{CheckpointFile, Verify};
use model_checkpoint::Dtype;

use crate::Failure;

/// Compare two checkpoints tensor by tensor: tensors only in one, dtype and shape changes,
/// and the largest absolute difference of each shared tensor.
///
/// Either may be a folder checkpoint (deduplicated or sharded): two tensors of
/// deduplicated checkpoints in the same blob are the same without a read.
///
/// Exits with status 0 when every tensor is identical, 1 when anything differs.
#[derive(Args, Debug)]
#[command(after_help = r#"Examples:
  ckpt diff ck/e04.safetensors ck/e05.safetensors   (deduplicated: folders)
  ckpt diff checkpoints/digits.01-0.6472.safetensors checkpoints/digits.10-0.9528.safetensors
  ckpt diff --changed-only a.safetensors b.safetensors"#)]
pub(crate) struct DiffArgs {
    /// The first checkpoint.
    a: PathBuf,
    /// The second checkpoint.
    b: PathBuf,
    /// Show only tensors that differ.
    #[arg(long)]
    changed_only: bool,
}

/// How many bytes of each tensor are compared at a time: memory stays bounded whatever the
/// tensors' sizes.
const CHUNK: usize = 1 << 20;

/// The byte size of one element of the dtypes whose values can be compared as numbers.
fn numeric_width(dtype: Dtype) -> Option<usize> {
    Some(match dtype {
        Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
        Dtype::F16 | Dtype::BF16 | Dtype::I16 | Dtype::U16 => 2,
        Dtype::U8 | Dtype::I8 => 1,
        _ => return None,
    })
}

/// One element of an integer dtype, exactly (`c` holds exactly `numeric_width(dtype)`
/// bytes); `None` for the others.
fn integer(dtype: Dtype, c: &[u8]) -> Option<i128> {
    let mut le = [0u8; 8];
    let n = c.len().min(8);
    le[..n].copy_from_slice(&c[..n]);
    let signed = |bits: u32| {
        let shift = 64 - bits;
        i128::from((i64::from_le_bytes(le) << shift) >> shift)
    };
    Some(match dtype {
        Dtype::I64 => signed(64),
        Dtype::I32 => signed(32),
        Dtype::I16 => signed(16),
        Dtype::I8 => signed(8),
        Dtype::U64 | Dtype::U32 | Dtype::U16 | Dtype::U8 => i128::from(u64::from_le_bytes(le)),
        _ => return None,
    })
}

/// The absolute difference of two elements: exact for integers (as a double, rounded
/// only when it is past 2^53), and of the values as doubles for floats.
fn difference(dtype: Dtype, p: &[u8], q: &[u8]) -> f64 {
    match (integer(dtype, p), integer(dtype, q)) {
        (Some(a), Some(b)) => a.abs_diff(b) as f64,
        _ => (value(dtype, p) - value(dtype, q)).abs(),
    }
}

/// One element of a float dtype as a double (`c` holds exactly `numeric_width(dtype)`
/// bytes).
fn value(dtype: Dtype, c: &[u8]) -> f64 {
    let b = |n: usize| c.get(n).copied().unwrap_or(0);
    match dtype {
        Dtype::F32 => f64::from(f32::from_le_bytes([b(0), b(1), b(2), b(3)])),
        Dtype::F64 => f64::from_le_bytes([b(0), b(1), b(2), b(3), b(4), b(5), b(6), b(7)]),
        Dtype::F16 => f16_to_f64(u16::from_le_bytes([b(0), b(1)])),
        Dtype::BF16 => f64::from(f32::from_bits(
            u32::from(u16::from_le_bytes([b(0), b(1)])) << 16,
        )),
        // Integers are compared by `integer`.
        _ => f64::NAN,
    }
}

/// The running comparison of two tensors' bytes, chunk by chunk.
struct Comparison {
    width: Option<usize>,
    dtype: Dtype,
    differ: bool,
    max: f64,
}

impl Comparison {
    fn new(dtype: Dtype) -> Self {
        Comparison {
            width: numeric_width(dtype),
            dtype,
            differ: false,
            max: 0.0,
        }
    }

    /// Two chunks at the same place of both tensors (whole elements).
    fn chunk(&mut self, xa: &[u8], xb: &[u8]) {
        if xa == xb {
            return;
        }
        self.differ = true;
        if let Some(w) = self.width {
            for (p, q) in xa.chunks_exact(w).zip(xb.chunks_exact(w)) {
                let d = difference(self.dtype, p, q);
                // A NaN difference, once seen, is the answer.
                if !self.max.is_nan() && (d.is_nan() || d > self.max) {
                    self.max = d;
                }
            }
        }
    }

    /// `None` when the bytes are equal, else the largest absolute difference of the values
    /// (`None` inside for dtypes that are not numbers here).
    fn result(&self) -> Option<Option<f64>> {
        self.differ.then_some(self.width.map(|_| self.max))
    }
}

/// How two tensors of the same dtype and shape in two files compare ([`Comparison::result`]):
/// both are streamed chunk by chunk, each checked against its checksum.
fn compare(
    a: &CheckpointFile,
    b: &CheckpointFile,
    name: &str,
    dtype: Dtype,
) -> Result<Option<Option<f64>>, Failure> {
    let (Some(mut ra), Some(mut rb)) = (a.reader(name), b.reader(name)) else {
        return Ok(None);
    };
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut comparison = Comparison::new(dtype);
    loop {
        let na = fill(&mut ra, &mut ba).map_err(|e| read_failure(a, name, e))?;
        let nb = fill(&mut rb, &mut bb).map_err(|e| read_failure(b, name, e))?;
        if na == 0 && nb == 0 {
            break;
        }
        comparison.chunk(&ba[..na], &bb[..nb]);
    }
    Ok(comparison.result())
}

/// One side of a diff: a file, or a folder checkpoint read through its index.
enum Side {
    File(CheckpointFile),
    Folder(ShardedCheckpoint),
}

impl Side {
    fn open(path: &std::path::Path) -> Result<Side, Failure> {
        let location = crate::location::Location::of(path)?.resolve_latest()?;
        if crate::sharded::is_sharded(&*location.storage, &location.name) {
            let checkpoint = ShardedCheckpoint::open(&*location.storage, &location.name)?;
            return Ok(Side::Folder(checkpoint));
        }
        // Each tensor's checksum is checked as it is streamed; the header now.
        Ok(Side::File(location.open(Verify::HeaderOnly)?))
    }

    fn names(&self) -> Vec<&str> {
        match self {
            Side::File(f) => f.tensors().map(|t| t.name).collect(),
            Side::Folder(c) => c.tensors().keys().map(String::as_str).collect(),
        }
    }

    /// The dtype and shape of tensor `name`, if it has it (`None` for the dtype of a folder's
    /// tensor that this build does not know: compared as bytes).
    fn tensor(&self, name: &str) -> Option<(Option<Dtype>, Vec<usize>)> {
        match self {
            Side::File(f) => f.tensor(name).map(|t| (Some(t.dtype), t.shape.to_vec())),
            Side::Folder(c) => c.tensors().get(name).map(|t| {
                let dtype = serde_json::from_value(serde_json::json!(t.dtype)).ok();
                (dtype, t.global_shape.clone())
            }),
        }
    }

    /// The content-addressed blob holding tensor `name` whole (a deduplicated checkpoint).
    fn blob(&self, name: &str) -> Option<&str> {
        let Side::Folder(c) = self else { return None };
        let t = c.tensors().get(name)?;
        let [piece] = t.pieces.as_slice() else {
            return None;
        };
        let file = piece.file.rsplit('/').next()?;
        (c.is_dedup() && model_checkpoint::sharded::blobs::is_blob_reference(&piece.file))
            .then_some(file)
    }
}

/// How tensor `name` compares between two sides of the same dtype and shape.
fn compare_sides(
    a: &Side,
    b: &Side,
    name: &str,
    dtype: Option<Dtype>,
) -> Result<Option<Option<f64>>, Failure> {
    // A blob is named by the hash of the tensor's name, dtype, shape and bytes.
    if let (Some(x), Some(y)) = (a.blob(name), b.blob(name)) {
        if x == y {
            return Ok(None);
        }
    }
    let dtype = dtype.unwrap_or(Dtype::U8);
    if let (Side::File(x), Side::File(y)) = (a, b) {
        return compare(x, y, name, dtype);
    }
    // A folder's tensor is read whole (assembled from its pieces, or decoded), each piece
    // checked: memory holds one tensor of each side.
    let read = |side: &Side| -> Result<Vec<u8>, Failure> {
        Ok(match side {
            Side::File(f) => f.read(name)?,
            Side::Folder(c) => c.read(name)?.data().to_vec(),
        })
    };
    let (xa, xb) = (read(a)?, read(b)?);
    let mut comparison = Comparison::new(dtype);
    for (p, q) in xa.chunks(CHUNK).zip(xb.chunks(CHUNK)) {
        comparison.chunk(p, q);
    }
    if xa.len() != xb.len() {
        comparison.differ = true;
    }
    Ok(comparison.result())
}

/// Reads until `buf` is full or the tensor ends (CHUNK is a multiple of every width, so
/// elements never straddle two chunks).
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn read_failure(file: &CheckpointFile, name: &str, e: std::io::Error) -> Failure {
    Failure::verify(format!("{}: tensor {name:?}: {e}", file.path().display()))
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

pub(crate) fn diff(args: DiffArgs) -> Result<(), Failure> {
    let a = Side::open(&args.a)?;
    let b = Side::open(&args.b)?;
    let names: BTreeSet<&str> = a.names().into_iter().chain(b.names()).collect();
    let mut differences = 0usize;
    for full_name in names {
        // Names come from the files: printed shortened.
        let name = crate::shorten(full_name, 200);
        let name = name.as_str();
        let line = match (a.tensor(full_name), b.tensor(full_name)) {
            (Some(_), None) => format!("only in A   {name}"),
            (None, Some(_)) => format!("only in B   {name}"),
            (Some(x), Some(y)) if x.0 != y.0 => {
                let shown = |d: Option<Dtype>| d.map_or("?".to_owned(), |d| format!("{d:?}"));
                format!("dtype       {name}: {} -> {}", shown(x.0), shown(y.0))
            }
            (Some(x), Some(y)) if x.1 != y.1 => {
                format!("shape       {name}: {:?} -> {:?}", x.1, y.1)
            }
            (Some(x), Some(_)) => match compare_sides(&a, &b, full_name, x.0)? {
                None => {
                    if !args.changed_only {
                        out!("same        {name}");
                    }
                    continue;
                }
                Some(Some(max)) => format!("changed     {name}: max abs diff {max:.6e}"),
                Some(None) => format!("changed     {name}: bytes differ"),
            },
            (None, None) => continue,
        };
        differences += 1;
        out!("{line}");
    }
    if differences > 0 {
        return Err(Failure::verify(format!("{differences} tensor(s) differ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_differ_exactly_and_floats_as_doubles() {
        let d = |dtype, a: &[u8], b: &[u8]| difference(dtype, a, b);
        let big = 1i64 << 60;
        assert_eq!(
            d(Dtype::I64, &big.to_le_bytes(), &(big + 1).to_le_bytes()),
            1.0
        );
        assert_eq!(
            d(Dtype::U64, &u64::MAX.to_le_bytes(), &0u64.to_le_bytes()),
            u64::MAX as f64
        );
        assert_eq!(d(Dtype::I8, &[0x80], &[0x7f]), 255.0);
        assert_eq!(
            d(Dtype::I16, &(-2i16).to_le_bytes(), &3i16.to_le_bytes()),
            5.0
        );
        assert_eq!(
            d(Dtype::U16, &65535u16.to_le_bytes(), &0u16.to_le_bytes()),
            65535.0
        );
        assert_eq!(
            d(Dtype::F32, &1.5f32.to_le_bytes(), &(-0.5f32).to_le_bytes()),
            2.0
        );
        assert!(d(Dtype::F64, &f64::NAN.to_le_bytes(), &0f64.to_le_bytes()).is_nan());
    }
}
