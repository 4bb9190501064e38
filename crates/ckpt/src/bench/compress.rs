//! Compression of trained weights (`--from`, a checkpoint file or folder): the codec of
//! compressed blobs (byte planes, then zstd) against zstd alone on the same float32 tensors
//! and on the same tensors rounded to bfloat16; a deduplicated checkpoint of them saved and
//! loaded plain and compressed; and, with `--previous` (an earlier checkpoint of the same
//! run), what an XOR delta against it would add.

use std::path::Path;
use std::time::{Duration, Instant};

use model_checkpoint::sharded::codec;
use model_checkpoint::sharded::{ShardedCheckpoint, INDEX_FILE};
use model_checkpoint::store::{CheckpointFile, LocalFolder, Name, Storage, Verify};
use model_checkpoint::{
    Callback, Context, Dtype, HostTensor, Logs, ModelCheckpoint, TensorData as _,
};
use serde_json::{json, Value};

use super::disk::Synthetic;
use super::{median, ratio, secs};
use crate::Failure;

/// The float tensors of the checkpoint at `path` (a file, or a folder with an index).
fn float_tensors(path: &Path) -> Result<Vec<(String, HostTensor)>, Failure> {
    let storage = LocalFolder::default();
    let name = Name::from(path);
    let mut out = Vec::new();
    if storage.exists(&name.join(INDEX_FILE))? {
        let checkpoint = ShardedCheckpoint::open(&storage, &name)?;
        for tensor in checkpoint.tensors().keys() {
            out.push((tensor.clone(), checkpoint.read(tensor)?));
        }
    } else {
        let file = CheckpointFile::open(path, Verify::Full)?;
        for t in file.tensors() {
            let data = file.read(t.name)?;
            out.push((
                t.name.to_owned(),
                HostTensor::new(t.dtype, t.shape.to_vec(), data)?,
            ));
        }
    }
    out.retain(|(_, t)| matches!(t.dtype(), Dtype::F32 | Dtype::BF16 | Dtype::F16));
    if out.is_empty() {
        return Err(format!("{} holds no float tensor", path.display()).into());
    }
    Ok(out)
}

/// `t` (float32) rounded to bfloat16, to the nearest even.
fn to_bf16(t: &HostTensor) -> Result<HostTensor, Failure> {
    let data: Vec<u8> = t
        .data()
        .chunks_exact(4)
        .flat_map(|c| {
            let bits = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
            (rounded as u16).to_le_bytes()
        })
        .collect();
    Ok(HostTensor::new(Dtype::BF16, t.shape().to_vec(), data)?)
}

/// Ratio and speeds of compressing `tensors` with byte planes of `elem` bytes (1: zstd
/// alone), medians of `runs`.
fn codec_figures(
    tensors: &[&HostTensor],
    elem_of: &dyn Fn(&HostTensor) -> usize,
    runs: u32,
) -> Result<Value, Failure> {
    let raw: usize = tensors.iter().map(|t| t.data().len()).sum();
    let (mut packed, mut t_c, mut t_d) = (0usize, Vec::new(), Vec::new());
    for _ in 0..runs {
        packed = 0;
        let (mut c, mut d) = (Duration::ZERO, Duration::ZERO);
        for t in tensors {
            let elem = elem_of(t);
            let started = Instant::now();
            let stored = codec::compress(t.data(), elem)?;
            c += started.elapsed();
            packed += stored.len();
            let started = Instant::now();
            let back = codec::decompress(&stored, elem, t.data().len())
                .map_err(|e| format!("does not decode: {e:?}"))?;
            d += started.elapsed();
            if back != t.data() {
                return Err("compression is not lossless".into());
            }
        }
        t_c.push(c);
        t_d.push(d);
    }
    let mb_s = |d: Duration| (raw as f64 / d.as_secs_f64() / 1e6).round();
    Ok(json!({
        "ratio": (raw as f64 / packed.max(1) as f64 * 1e4).round() / 1e4,
        "compressed_over_raw": (packed as f64 / raw.max(1) as f64 * 1e4).round() / 1e4,
        "compress_mb_s": mb_s(median(t_c)),
        "decompress_mb_s": mb_s(median(t_d)),
    }))
}

/// Saves `model` once with `cb` (on its train begin) and returns how long the save took.
fn save(cb: &mut ModelCheckpoint, model: &Synthetic) -> Result<Duration, Failure> {
    let mut ctx = Context::new(model);
    cb.on_train_begin(&Logs::new(), &mut ctx)?;
    cb.on_epoch_begin(0, &Logs::new(), &mut ctx)?;
    let started = Instant::now();
    cb.on_epoch_end(0, &Logs::from([("loss", 1.0)]), &mut ctx)?;
    let took = started.elapsed();
    cb.on_train_end(&Logs::new(), &mut ctx)?;
    Ok(took)
}

/// Opens the folder checkpoint `dir` and reads every tensor (checked, and decoded).
fn load(storage: &dyn Storage, dir: &Name) -> Result<Duration, Failure> {
    let started = Instant::now();
    let checkpoint = ShardedCheckpoint::open(storage, dir)?;
    for tensor in checkpoint.tensors().keys() {
        checkpoint.read(tensor)?;
    }
    Ok(started.elapsed())
}

/// The bytes the folder checkpoint `dir` names.
fn stored_bytes(storage: &dyn Storage, dir: &Name) -> Result<u64, Failure> {
    let checkpoint = ShardedCheckpoint::open(storage, dir)?;
    Ok(checkpoint.files().map(|(_, f)| f.len()).sum())
}

pub(super) fn compress(
    runs: u32,
    dir: &Path,
    from: Option<&Path>,
    previous: Option<&Path>,
) -> Result<Value, Failure> {
    let from = from.ok_or(
        "--only compress needs --from CHECKPOINT (trained weights, e.g. from `ckpt train --hidden 1024,1024 --epochs 3`)",
    )?;
    let tensors = float_tensors(from)?;
    let f32s: Vec<&HostTensor> = tensors
        .iter()
        .map(|(_, t)| t)
        .filter(|t| t.dtype() == Dtype::F32)
        .collect();
    let bf16s: Vec<HostTensor> = f32s.iter().map(|t| to_bf16(t)).collect::<Result<_, _>>()?;
    let bf16s: Vec<&HostTensor> = bf16s.iter().collect();
    let elem = |t: &HostTensor| t.dtype().bitsize() / 8;
    let one = |_: &HostTensor| 1;
    let raw: usize = f32s.iter().map(|t| t.data().len()).sum();

    // Saved and loaded: a deduplicated checkpoint plain against compressed, interleaved.
    let storage = LocalFolder::default();
    // Every tensor as a weight (optimizer moments renamed out of the reserved prefix).
    let model = Synthetic(
        tensors
            .iter()
            .map(|(n, t)| (n.replace("__training__/", "training."), t.clone()))
            .collect(),
    );
    let (mut s_plain, mut s_packed, mut l_plain, mut l_packed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut bytes_plain, mut bytes_packed) = (0, 0);
    for run in 0..runs {
        for compressed in [run % 2 == 0, run % 2 != 0] {
            let side = dir.join(format!(
                "{}-{run}",
                if compressed { "packed" } else { "plain" }
            ));
            let mut cb = ModelCheckpoint::new(side.join("e{epoch}.safetensors"))
                .save_weights_only(true)
                .dedup(true)
                .compress(compressed);
            let took = save(&mut cb, &model)?;
            let folder = Name::from(side.join("e1.safetensors"));
            let loaded = load(&storage, &folder)?;
            let bytes = stored_bytes(&storage, &folder)?;
            let (saves, loads, size) = if compressed {
                (&mut s_packed, &mut l_packed, &mut bytes_packed)
            } else {
                (&mut s_plain, &mut l_plain, &mut bytes_plain)
            };
            saves.push(took);
            loads.push(loaded);
            *size = bytes;
            std::fs::remove_dir_all(&side).map_err(|e| format!("{}: {e}", side.display()))?;
        }
    }
    let (sp, sc, lp, lc) = (
        median(s_plain),
        median(s_packed),
        median(l_plain),
        median(l_packed),
    );

    // An XOR delta against the previous checkpoint, compressed the same way.
    let delta = match previous {
        None => Value::Null,
        Some(previous) => {
            let before: std::collections::BTreeMap<String, HostTensor> =
                float_tensors(previous)?.into_iter().collect();
            let (mut alone, mut against) = (0usize, 0usize);
            for (name, t) in tensors.iter().filter(|(_, t)| t.dtype() == Dtype::F32) {
                let e = elem(t);
                alone += codec::compress(t.data(), e)?.len();
                against += match before
                    .get(name)
                    .filter(|b| b.shape() == t.shape() && b.dtype() == t.dtype())
                {
                    Some(b) => {
                        let xor: Vec<u8> =
                            t.data().iter().zip(b.data()).map(|(x, y)| x ^ y).collect();
                        codec::compress(&xor, e)?.len()
                    }
                    None => codec::compress(t.data(), e)?.len(),
                };
            }
            json!({
                "previous": previous.display().to_string(),
                "planes_zstd_over_raw": (alone as f64 / raw.max(1) as f64 * 1e4).round() / 1e4,
                "xor_delta_planes_zstd_over_raw": (against as f64 / raw.max(1) as f64 * 1e4).round() / 1e4,
            })
        }
    };

    Ok(json!({
        "bench": "compress", "from": from.display().to_string(), "runs": runs,
        "float32_tensors": f32s.len(), "float32_bytes": raw,
        "float32": {
            "zstd_alone": codec_figures(&f32s, &one, runs)?,
            "planes_zstd": codec_figures(&f32s, &elem, runs)?,
        },
        "bfloat16_rounded": {
            "zstd_alone": codec_figures(&bf16s, &one, runs)?,
            "planes_zstd": codec_figures(&bf16s, &elem, runs)?,
        },
        "dedup_checkpoint": {
            "plain_bytes": bytes_plain, "compressed_bytes": bytes_packed,
            "save_plain_s": secs(sp), "save_compressed_s": secs(sc),
            "save_compressed_over_plain": ratio(sc, sp),
            "load_plain_s": secs(lp), "load_compressed_s": secs(lc),
            "load_compressed_over_plain": ratio(lc, lp),
        },
        "delta": delta,
    }))
}
