//! `ckpt diff`: two checkpoints, tensor by tensor.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;

use clap::Args;
use model_checkpoint::store::{CheckpointFile, Verify};
use model_checkpoint::Dtype;

use crate::Failure;

/// Compare two checkpoints tensor by tensor: tensors only in one, dtype and shape changes,
/// and the largest absolute difference of each shared tensor.
///
/// Exits with status 0 when every tensor is identical, 1 when anything differs.
///
/// Examples:
///   ckpt diff checkpoints/digits.01-0.6472.safetensors checkpoints/digits.10-0.9528.safetensors
///   ckpt diff --changed-only a.safetensors b.safetensors
#[derive(Args, Debug)]
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
        Dtype::F64 | Dtype::I64 => 8,
        Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
        Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
        Dtype::U8 | Dtype::I8 => 1,
        _ => return None,
    })
}

/// One element as a double (`c` holds exactly `numeric_width(dtype)` bytes).
fn value(dtype: Dtype, c: &[u8]) -> f64 {
    let b = |n: usize| c.get(n).copied().unwrap_or(0);
    match dtype {
        Dtype::F32 => f64::from(f32::from_le_bytes([b(0), b(1), b(2), b(3)])),
        Dtype::F64 => f64::from_le_bytes([b(0), b(1), b(2), b(3), b(4), b(5), b(6), b(7)]),
        Dtype::F16 => f16_to_f64(u16::from_le_bytes([b(0), b(1)])),
        Dtype::BF16 => f64::from(f32::from_bits(
            u32::from(u16::from_le_bytes([b(0), b(1)])) << 16,
        )),
        Dtype::I64 => i64::from_le_bytes([b(0), b(1), b(2), b(3), b(4), b(5), b(6), b(7)]) as f64,
        Dtype::I32 => f64::from(i32::from_le_bytes([b(0), b(1), b(2), b(3)])),
        Dtype::U32 => f64::from(u32::from_le_bytes([b(0), b(1), b(2), b(3)])),
        Dtype::I16 => f64::from(i16::from_le_bytes([b(0), b(1)])),
        Dtype::U8 => f64::from(b(0)),
        Dtype::I8 => f64::from(b(0) as i8),
        _ => f64::NAN,
    }
}

/// How two tensors of the same dtype and shape compare: `None` when their bytes are equal,
/// else the largest absolute difference of their values (`None` inside for dtypes that are
/// not numbers here). Both are streamed chunk by chunk, each checked against its checksum.
fn compare(
    a: &CheckpointFile,
    b: &CheckpointFile,
    name: &str,
    dtype: Dtype,
) -> Result<Option<Option<f64>>, Failure> {
    let (Some(mut ra), Some(mut rb)) = (a.reader(name), b.reader(name)) else {
        return Ok(None);
    };
    let width = numeric_width(dtype);
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut differ = false;
    let mut max = 0.0f64;
    loop {
        let na = fill(&mut ra, &mut ba).map_err(|e| read_failure(a, name, e))?;
        let nb = fill(&mut rb, &mut bb).map_err(|e| read_failure(b, name, e))?;
        if na == 0 && nb == 0 {
            break;
        }
        let (xa, xb) = (&ba[..na], &bb[..nb]);
        if xa == xb {
            continue;
        }
        differ = true;
        if let Some(w) = width {
            for (p, q) in xa.chunks_exact(w).zip(xb.chunks_exact(w)) {
                let d = (value(dtype, p) - value(dtype, q)).abs();
                // A NaN difference, once seen, is the answer.
                if !max.is_nan() && (d.is_nan() || d > max) {
                    max = d;
                }
            }
        }
    }
    Ok(differ.then_some(width.map(|_| max)))
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
    // Each tensor's checksum is checked as it is streamed below; the header now.
    let a = crate::location::Location::of(&args.a)?.open(Verify::HeaderOnly)?;
    let b = crate::location::Location::of(&args.b)?.open(Verify::HeaderOnly)?;
    let names: BTreeSet<&str> = a
        .tensors()
        .map(|t| t.name)
        .chain(b.tensors().map(|t| t.name))
        .collect();
    let mut differences = 0usize;
    for full_name in names {
        // Names come from the files: printed shortened.
        let name = crate::shorten(full_name, 200);
        let name = name.as_str();
        let line = match (a.tensor(full_name), b.tensor(full_name)) {
            (Some(_), None) => format!("only in A   {name}"),
            (None, Some(_)) => format!("only in B   {name}"),
            (Some(x), Some(y)) if x.dtype != y.dtype => {
                format!("dtype       {name}: {:?} -> {:?}", x.dtype, y.dtype)
            }
            (Some(x), Some(y)) if x.shape != y.shape => {
                format!("shape       {name}: {:?} -> {:?}", x.shape, y.shape)
            }
            (Some(x), Some(_)) => match compare(&a, &b, full_name, x.dtype)? {
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
