//! Disk measurements: saving against raw writes and against Python's safetensors, loading
//! against reading, and how save time grows with size.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use model_checkpoint::store::{self, CheckpointFile, Kind, SaveOptions, Verify};
use model_checkpoint::{
    Callback, Checkpointable, Context, Dtype, HostTensor, Logs, ModelCheckpoint, NamedTensor,
    SaveFreq,
};
use serde_json::json;

use super::{median, ratio, secs};
use crate::Failure;

// ---------------------------------------------------------------------------------------
// Models of a given size.

/// `total` bytes of float32 in `count` tensors of equal size, filled with noise (so that no
/// layer below can compress or deduplicate them).
pub(super) fn synthetic(total: u64, count: u64) -> Vec<(String, HostTensor)> {
    let per = (total / count / 4).max(1) as usize;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|i| {
            let mut data = vec![0u8; per * 4];
            for chunk in data.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            let t = HostTensor::new(Dtype::F32, vec![per], data).expect("sizes agree");
            (format!("layer{i:04}.weight"), t)
        })
        .collect()
}

pub(super) struct Synthetic(pub(super) Vec<(String, HostTensor)>);

impl Checkpointable for Synthetic {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        Ok(self
            .0
            .iter()
            .map(|(n, t)| NamedTensor::new(n.clone(), t.clone_ref()))
            .collect())
    }
}

pub(super) fn named(model: &[(String, HostTensor)]) -> Vec<NamedTensor<'_>> {
    model
        .iter()
        .map(|(n, t)| NamedTensor::new(n.clone(), t.clone_ref()))
        .collect()
}

fn timed_save(path: &Path, model: &[(String, HostTensor)]) -> Result<Duration, Failure> {
    let tensors = named(model);
    let started = Instant::now();
    store::save(
        path,
        Kind::Weights,
        &tensors,
        &BTreeMap::new(),
        &SaveOptions::default(),
    )?;
    let elapsed = started.elapsed();
    std::fs::remove_file(path).map_err(|e| format!("remove {}: {e}", path.display()))?;
    Ok(elapsed)
}

fn timed_raw(path: &Path, model: &[(String, HostTensor)]) -> Result<Duration, Failure> {
    let started = Instant::now();
    let mut f = File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    for (_, t) in model {
        f.write_all(t.data())
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    f.sync_all()
        .map_err(|e| format!("sync {}: {e}", path.display()))?;
    let elapsed = started.elapsed();
    drop(f);
    std::fs::remove_file(path).map_err(|e| format!("remove {}: {e}", path.display()))?;
    Ok(elapsed)
}

// ---------------------------------------------------------------------------------------

pub(super) fn save_vs_raw(
    runs: u32,
    dir: &Path,
    bytes: u64,
    count: u64,
) -> Result<serde_json::Value, Failure> {
    let model = synthetic(bytes, count);
    let (mut save, mut raw) = (Vec::new(), Vec::new());
    timed_save(&dir.join("warm.safetensors"), &model)?;
    for _ in 0..runs {
        save.push(timed_save(&dir.join("save.safetensors"), &model)?);
        raw.push(timed_raw(&dir.join("raw.bin"), &model)?);
    }
    let (s, r) = (median(save), median(raw));
    Ok(json!({
        "bench": "save_vs_raw", "mib": bytes >> 20, "tensors": count, "runs": runs,
        "save_s": secs(s), "raw_write_sync_s": secs(r), "ratio": ratio(s, r),
        "save_gib_per_s": ((bytes as f64 / (1u64 << 30) as f64) / s.as_secs_f64() * 1e3).round() / 1e3,
    }))
}

pub(super) fn save_once(dir: &Path, bytes: u64, count: u64) -> Result<serde_json::Value, Failure> {
    let model = synthetic(bytes, count);
    let t = timed_save(&dir.join("once.safetensors"), &model)?;
    Ok(json!({"bench": "save_once", "mib": bytes >> 20, "tensors": count, "save_s": secs(t)}))
}

/// A Python process that saves the same shapes with safetensors on request: one line in
/// ("save"), one line out (the seconds save_file + fsync took).
const PYTHON_PEER: &str = r#"
import os, sys, time
import numpy as np
from safetensors.numpy import save_file
size, count, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
per = size // count // 4
rng = np.random.default_rng(0)
tensors = {f"layer{i:04d}.weight": rng.random(per, dtype=np.float32) for i in range(count)}
print("ready", flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    save_file(tensors, path)
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    elapsed = time.perf_counter() - t
    os.remove(path)
    print(elapsed, flush=True)
"#;

pub(super) fn peers_python(
    python: &Path,
    runs: u32,
    dir: &Path,
    bytes: u64,
    count: u64,
) -> Result<serde_json::Value, Failure> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(python)
        .args(["-c", PYTHON_PEER, &bytes.to_string(), &count.to_string()])
        .arg(dir.join("python.safetensors"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
    let (Some(mut input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("cannot talk to the Python process".into());
    };
    let mut lines = BufReader::new(output).lines();
    let mut next_line = || -> Result<String, Failure> {
        lines.next().and_then(Result::ok).ok_or_else(|| {
            Failure::from(format!(
                "{} failed: does it have safetensors and numpy? (bench/peers.sh installs them)",
                python.display()
            ))
        })
    };
    if next_line()? != "ready" {
        return Err("the Python process did not start as expected".into());
    }
    let mut python_save = || -> Result<Duration, Failure> {
        writeln!(input, "save").map_err(|e| format!("cannot talk to Python: {e}"))?;
        let secs: f64 = next_line()?
            .trim()
            .parse()
            .map_err(|e| format!("bad reply from Python: {e}"))?;
        Ok(Duration::from_secs_f64(secs))
    };
    let model = synthetic(bytes, count);
    python_save()?;
    timed_save(&dir.join("warm.safetensors"), &model)?;
    let (mut py, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        py.push(python_save()?);
        ours.push(timed_save(&dir.join("ckpt.safetensors"), &model)?);
    }
    drop(input);
    let _ = child.kill();
    let _ = child.wait();
    let (p, o) = (median(py), median(ours));
    Ok(json!({
        "bench": "peers_python_safetensors", "mib": bytes >> 20, "tensors": count, "runs": runs,
        "python_save_file_fsync_s": secs(p), "ckpt_save_s": secs(o), "ratio_ckpt_to_python": ratio(o, p),
        "note": "ckpt's save also writes under a temporary name, renames, and syncs the folder; Python's writes in place",
    }))
}

pub(super) fn load_vs_read(
    runs: u32,
    dir: &Path,
    bytes: u64,
    count: u64,
) -> Result<serde_json::Value, Failure> {
    let path = dir.join("load.safetensors");
    {
        let model = synthetic(bytes, count);
        store::save(
            &path,
            Kind::Weights,
            &named(&model),
            &BTreeMap::new(),
            &SaveOptions::default(),
        )?;
    }
    // Loading builds owned tensors, as a framework does: one copy out of the page cache,
    // by positioned reads, each tensor's checksum checked on the bytes read (what
    // `Model::load_weights` does). `Verify::Full` adds a verification pass over the whole
    // file before loading (what a resume does).
    let load = |verify: Verify| -> Result<Duration, Failure> {
        let t = Instant::now();
        let file = CheckpointFile::open(&path, verify)?;
        let tensors = file
            .tensors()
            .map(|t| file.read(t.name))
            .collect::<Result<Vec<Vec<u8>>, _>>()?;
        let elapsed = t.elapsed();
        drop(tensors);
        Ok(elapsed)
    };
    let read = || -> Result<Duration, Failure> {
        let t = Instant::now();
        let data = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let elapsed = t.elapsed();
        drop(data);
        Ok(elapsed)
    };
    read()?;
    let (mut verified, mut twice, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        verified.push(load(Verify::HeaderOnly)?);
        twice.push(load(Verify::Full)?);
        plain.push(read()?);
    }
    let (v, w, r) = (median(verified), median(twice), median(plain));
    Ok(json!({
        "bench": "load_vs_read", "mib": bytes >> 20, "tensors": count, "runs": runs,
        "load_verified_s": secs(v), "verify_then_load_s": secs(w), "read_s": secs(r),
        "ratio_verified": ratio(v, r), "ratio_verify_then_load": ratio(w, r),
        "note": "load_verified checks every tensor's checksum on the bytes it reads; verify_then_load adds a whole-file verification pass first",
    }))
}

pub(super) fn size_sweep(runs: u32, dir: &Path) -> Result<serde_json::Value, Failure> {
    let sizes = [1u64, 16, 256, 1024];
    let models: Vec<_> = sizes.iter().map(|&m| synthetic(m << 20, 64)).collect();
    let small_total = 10_000u64 * 1024;
    let small = synthetic(small_total, 10_000);
    let same_bytes = synthetic(small_total, 64);
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); sizes.len() + 2];
    timed_save(&dir.join("warm.safetensors"), &models[1])?;
    for _ in 0..runs {
        for (i, m) in models.iter().enumerate() {
            times[i].push(timed_save(&dir.join("sweep.safetensors"), m)?);
        }
        times[sizes.len()].push(timed_save(&dir.join("small.safetensors"), &small)?);
        times[sizes.len() + 1].push(timed_save(&dir.join("same.safetensors"), &same_bytes)?);
    }
    let med: Vec<Duration> = times.into_iter().map(median).collect();
    let points: Vec<_> = sizes
        .iter()
        .zip(&med)
        .map(|(&m, &t)| json!({"mib": m, "save_s": secs(t)}))
        .collect();
    let linearity = med[3].as_secs_f64() / (64.0 * med[1].as_secs_f64());
    let per_tensor_us = (med[4].as_secs_f64() - med[5].as_secs_f64()) / 10_000.0 * 1e6;
    Ok(json!({
        "bench": "size_sweep", "runs": runs, "tensors": 64, "points": points,
        "ratio_1024_to_64x16": (linearity * 1e4).round() / 1e4,
        "small_tensors": {"count": 10_000, "bytes_each": 1024, "save_s": secs(med[4]),
                          "same_bytes_in_64_tensors_s": secs(med[5]),
                          "overhead_us_per_tensor": (per_tensor_us * 100.0).round() / 100.0},
    }))
}

/// Nanoseconds per `on_train_batch_end` that does not save (no training: a synthetic model).
pub(super) fn hook_overhead() -> Result<serde_json::Value, Failure> {
    let model = Synthetic(synthetic(1 << 12, 1));
    let mut ctx = Context::new(&model);
    let logs = Logs::from([("loss", 0.5), ("accuracy", 0.9)]);
    let calls = 2_000_000usize;
    let mut per_call = |mut cb: ModelCheckpoint| -> Result<f64, Failure> {
        cb.on_epoch_begin(0, &logs, &mut ctx)?;
        let t = Instant::now();
        for batch in 0..calls {
            cb.on_train_batch_end(batch % 1000, &logs, &mut ctx)?;
        }
        Ok((t.elapsed().as_nanos() as f64 / calls as f64 * 10.0).round() / 10.0)
    };
    let epoch_mode = per_call(ModelCheckpoint::new("unused.safetensors"))?;
    let counting = per_call(
        ModelCheckpoint::new("unused.safetensors").save_freq(SaveFreq::Batches(i64::MAX)),
    )?;
    Ok(json!({
        "bench": "hook_overhead", "calls": calls,
        "ns_per_batch_end_epoch_mode": epoch_mode, "ns_per_batch_end_counting_batches": counting,
    }))
}
