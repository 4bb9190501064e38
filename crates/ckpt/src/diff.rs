//! `ckpt diff`: two checkpoints, tensor by tensor.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Args;
use model_checkpoint::store::{CheckpointFile, TensorRef, Verify};
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

/// The values of a tensor as doubles, for the float and integer dtypes; `None` for others.
fn values(t: &TensorRef<'_>) -> Option<Vec<f64>> {
    let d = t.data;
    Some(match t.dtype {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| f16_to_f64(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| {
                f64::from(f32::from_bits(
                    u32::from(u16::from_le_bytes([c[0], c[1]])) << 16,
                ))
            })
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64)
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::U32 => d
            .chunks_exact(4)
            .map(|c| f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::I16 => d
            .chunks_exact(2)
            .map(|c| f64::from(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::U8 => d.iter().map(|&b| f64::from(b)).collect(),
        Dtype::I8 => d.iter().map(|&b| f64::from(b as i8)).collect(),
        _ => return None,
    })
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
    let a = CheckpointFile::open(&args.a, Verify::Full)?;
    let b = CheckpointFile::open(&args.b, Verify::Full)?;
    let names: BTreeSet<&str> = a
        .tensors()
        .map(|t| t.name)
        .chain(b.tensors().map(|t| t.name))
        .collect();
    let mut differences = 0usize;
    for name in names {
        let line = match (a.tensor(name), b.tensor(name)) {
            (Some(_), None) => format!("only in A   {name}"),
            (None, Some(_)) => format!("only in B   {name}"),
            (Some(x), Some(y)) if x.dtype != y.dtype => {
                format!("dtype       {name}: {:?} -> {:?}", x.dtype, y.dtype)
            }
            (Some(x), Some(y)) if x.shape != y.shape => {
                format!("shape       {name}: {:?} -> {:?}", x.shape, y.shape)
            }
            (Some(x), Some(y)) if x.data == y.data => {
                if !args.changed_only {
                    out!("same        {name}");
                }
                continue;
            }
            (Some(x), Some(y)) => match (values(&x), values(&y)) {
                (Some(vx), Some(vy)) => {
                    let max = vx
                        .iter()
                        .zip(&vy)
                        .map(|(p, q)| (p - q).abs())
                        .fold(0.0f64, |m, d| if d.is_nan() || d > m { d } else { m });
                    format!("changed     {name}: max abs diff {max:.6e}")
                }
                _ => format!("changed     {name}: bytes differ"),
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
