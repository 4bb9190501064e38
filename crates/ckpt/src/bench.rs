//! `ckpt bench`: measurements as JSON lines, each the median of interleaved runs (A B A B …)
//! so that a noisy disk or a busy neighbour hits both sides alike.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use model_checkpoint::store::{self, CheckpointFile, Kind, SaveOptions, Verify};
use model_checkpoint::{
    Callback, Checkpointable, Context, Dtype, HostTensor, Logs, ModelCheckpoint, NamedTensor,
    SaveFreq,
};
use model_checkpoint_candle::{Adam, Dataset, FitOptions, Model, ParamsAdam, Trainer};
use serde_json::json;

use crate::Failure;

/// Measure training and checkpoint speed; one JSON line per measurement.
///
/// Every figure is a median over interleaved runs of the things compared, written in --dir
/// (the disk under test). The default model is 1024 MiB in 64 float32 tensors.
///
/// Examples:
///   ckpt bench
///   ckpt bench --only save-vs-raw --only load-vs-read --runs 9
///   ckpt bench --size-mib 256 --dir /mnt/fast-disk
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// Run only these measurements (repeatable); all but save-once by default.
    #[arg(long, value_enum)]
    only: Vec<Measurement>,
    /// Interleaved runs per side.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Checkpoint size in MiB for save-vs-raw, async-stall-vs-sync, load-vs-read, save-once.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    size_mib: u64,
    /// Number of tensors the checkpoint is split into.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    tensors: u64,
    /// Folder to write in (a temporary folder inside it is used and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The Python with safetensors and numpy, for peers-python (bench/peers.sh sets it up).
    #[arg(long, default_value = "python3")]
    python: PathBuf,
}

/// A measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Measurement {
    /// Training samples/s on digits (10 epochs, MLP 64-64-10, Adam, batch 32): no callback,
    /// a full checkpoint every epoch, weights every epoch, and full checkpoints saved in the
    /// background.
    TrainThroughput,
    /// A synchronous save against write_all + sync_all of the same bytes.
    SaveVsRaw,
    /// Time the training thread is blocked by a background save, against a synchronous
    /// save; and the peak memory of a background save.
    AsyncStallVsSync,
    /// Loading with and without checksum verification, against reading the file.
    LoadVsRead,
    /// Nanoseconds per on_train_batch_end that does not save.
    HookOverhead,
    /// Save time for 1, 16, 256 and 1024 MiB, and for 10,000 small tensors.
    SizeSweep,
    /// One synchronous save of --size-mib in --tensors tensors, timed.
    SaveOnce,
    /// Python's safetensors.numpy.save_file + fsync against a synchronous save of the same
    /// shapes, interleaved, each side in a warm process (needs --python; see bench/peers.sh).
    PeersPython,
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e6
}

fn ratio(a: Duration, b: Duration) -> f64 {
    (a.as_secs_f64() / b.as_secs_f64() * 1e4).round() / 1e4
}

pub(crate) fn run(args: BenchArgs) -> Result<(), Failure> {
    let all = [
        Measurement::TrainThroughput,
        Measurement::SaveVsRaw,
        Measurement::AsyncStallVsSync,
        Measurement::LoadVsRead,
        Measurement::HookOverhead,
        Measurement::SizeSweep,
    ];
    let chosen: Vec<Measurement> = if args.only.is_empty() {
        all.to_vec()
    } else {
        args.only.clone()
    };
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create folder {}: {e}", args.dir.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("ckpt-bench-")
        .tempdir_in(&args.dir)
        .map_err(|e| format!("cannot create a folder in {}: {e}", args.dir.display()))?;
    let dir = scratch.path();
    let bytes = args.size_mib << 20;
    for m in chosen {
        let line = match m {
            Measurement::TrainThroughput => train_throughput(args.runs, dir)?,
            Measurement::SaveVsRaw => save_vs_raw(args.runs, dir, bytes, args.tensors)?,
            Measurement::AsyncStallVsSync => {
                async_stall_vs_sync(args.runs, dir, bytes, args.tensors)?
            }
            Measurement::LoadVsRead => load_vs_read(args.runs, dir, bytes, args.tensors)?,
            Measurement::HookOverhead => hook_overhead()?,
            Measurement::SizeSweep => size_sweep(args.runs, dir)?,
            Measurement::SaveOnce => save_once(dir, bytes, args.tensors)?,
            Measurement::PeersPython => {
                peers_python(&args.python, args.runs, dir, bytes, args.tensors)?
            }
        };
        out!("{line}");
        let _ = std::io::stdout().flush();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Models of a given size.

/// `total` bytes of float32 in `count` tensors of equal size, filled with noise (so that no
/// layer below can compress or deduplicate them).
fn synthetic(total: u64, count: u64) -> Vec<(String, HostTensor)> {
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

struct Synthetic(Vec<(String, HostTensor)>);

impl Checkpointable for Synthetic {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        Ok(self
            .0
            .iter()
            .map(|(n, t)| NamedTensor::new(n.clone(), t.clone_ref()))
            .collect())
    }
}

fn named(model: &[(String, HostTensor)]) -> Vec<NamedTensor<'_>> {
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

fn save_vs_raw(
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

fn save_once(dir: &Path, bytes: u64, count: u64) -> Result<serde_json::Value, Failure> {
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

fn peers_python(
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

/// Resident memory now, in bytes (Linux; `None` elsewhere).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A candle MLP of about `bytes` (square 4096-wide layers) and one sample to train it on.
struct BigModel {
    trainer_model: Model,
    optimizer: model_checkpoint_candle::Sgd,
    x: candle_core::Tensor,
    y: candle_core::Tensor,
}

impl BigModel {
    fn new(bytes: u64) -> Result<Self, Failure> {
        let width = 4096usize;
        let layers = (bytes / (width * width * 4) as u64).max(1) as usize;
        let model = Model::mlp(&vec![width; layers + 1], 0)?;
        let optimizer = model_checkpoint_candle::Sgd::new(
            model.named_vars(),
            model_checkpoint_candle::ParamsSgd {
                lr: 1e-6,
                ..Default::default()
            },
        )?;
        let x = candle_core::Tensor::ones((1, width), candle_core::DType::F32, model.device())
            .map_err(|e| e.to_string())?;
        let y = candle_core::Tensor::new(&[3u32], model.device()).map_err(|e| e.to_string())?;
        Ok(BigModel {
            trainer_model: model,
            optimizer,
            x,
            y,
        })
    }

    /// Forward and backward: reads the weights, changes nothing.
    fn compute(&self) -> Result<candle_core::backprop::GradStore, Failure> {
        let logits = self.trainer_model.forward(&self.x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &self.y).map_err(|e| e.to_string())?;
        Ok(loss.backward().map_err(|e| e.to_string())?)
    }

    fn apply(&mut self, grads: &candle_core::backprop::GradStore) -> Result<(), Failure> {
        use model_checkpoint_candle::Optimizer as _;
        self.optimizer.step(grads)?;
        Ok(())
    }
}

fn async_stall_vs_sync(
    runs: u32,
    dir: &Path,
    bytes: u64,
    _count: u64,
) -> Result<serde_json::Value, Failure> {
    let mut big = BigModel::new(bytes)?;
    let size: u64 = big
        .trainer_model
        .named_vars()
        .iter()
        .map(|(_, v)| v.elem_count() as u64 * 4)
        .sum();
    let fence = model_checkpoint::SnapshotFence::new();
    let logs = Logs::new();

    // Peak memory of a background save beyond the model (and beyond a training step's
    // gradients, which are freed by now): buffers allocated at on_train_begin, one save.
    let grads = big.compute()?;
    big.apply(&grads)?;
    drop(grads);
    let baseline = rss();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(r) = rss() {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let mut async_cb = ModelCheckpoint::new(dir.join("async.safetensors"))
        .save_weights_only(true)
        .background(true);
    {
        let mut ctx = Context::new(&big.trainer_model).with_fence(&fence);
        async_cb.on_train_begin(&logs, &mut ctx)?;
        async_cb.flush()?;
        async_cb.on_epoch_end(0, &logs, &mut ctx)?;
    }
    async_cb.flush()?;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let extra = match (baseline, peak.load(Ordering::Relaxed)) {
        (Some(base), p) if p > 0 => {
            Some((p.saturating_sub(base) as f64 / size as f64 * 1e3).round() / 1e3)
        }
        _ => None,
    };

    // The stall: the save's hook, plus waiting before the next optimizer step (for a
    // background copy still running after that step's forward and backward).
    let mut sync_cb = ModelCheckpoint::new(dir.join("sync.safetensors")).save_weights_only(true);
    // One save, then what a training loop does next: the next step's forward and backward
    // (only where a background copy could overlap it), then the optimizer step, which first
    // waits on the fence.
    let mut grads = big.compute()?;
    let mut one = |cb: &mut ModelCheckpoint,
                   big: &mut BigModel,
                   fenced: bool,
                   epoch: usize|
     -> Result<(Duration, Option<Duration>), Failure> {
        let t = Instant::now();
        {
            let ctx = Context::new(&big.trainer_model);
            let mut ctx = if fenced { ctx.with_fence(&fence) } else { ctx };
            cb.on_epoch_end(epoch, &logs, &mut ctx)?;
        }
        let hook = t.elapsed();
        let mut compute = None;
        if cb.in_background() && fenced {
            let c = Instant::now();
            grads = big.compute()?;
            compute = Some(c.elapsed());
        }
        let t = Instant::now();
        fence.wait();
        let waited = t.elapsed();
        big.apply(&grads)?;
        cb.flush()?;
        Ok((hook + waited, compute))
    };
    let (mut sync_stall, mut async_stall, mut unfenced_stall, mut compute) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for epoch in 1..=runs as usize {
        sync_stall.push(one(&mut sync_cb, &mut big, true, epoch)?.0);
        let (stall, step) = one(&mut async_cb, &mut big, true, epoch)?;
        async_stall.push(stall);
        compute.extend(step);
        unfenced_stall.push(one(&mut async_cb, &mut big, false, epoch)?.0);
    }
    let (s, a) = (median(sync_stall), median(async_stall));
    Ok(json!({
        "bench": "async_stall_vs_sync", "mib": size >> 20, "model": "candle MLP, 4096-wide layers, SGD, batch 1", "runs": runs,
        "sync_stall_s": secs(s), "async_stall_s": secs(a), "ratio": ratio(a, s),
        "async_stall_without_fence_s": secs(median(unfenced_stall)),
        "forward_backward_s": secs(median(compute)),
        "async_peak_extra_memory_x_checkpoint": extra,
    }))
}

fn load_vs_read(
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
    // Loading builds owned tensors, as a framework does: one copy out of the page cache.
    let load = |verify: Verify| -> Result<Duration, Failure> {
        let t = Instant::now();
        let file = CheckpointFile::open(&path, verify)?;
        let tensors: Vec<Vec<u8>> = file.tensors().map(|t| t.data.to_vec()).collect();
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
    let (mut verified, mut unverified, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        verified.push(load(Verify::Full)?);
        unverified.push(load(Verify::HeaderOnly)?);
        plain.push(read()?);
    }
    let (v, u, r) = (median(verified), median(unverified), median(plain));
    Ok(json!({
        "bench": "load_vs_read", "mib": bytes >> 20, "tensors": count, "runs": runs,
        "load_verified_s": secs(v), "load_unverified_s": secs(u), "read_s": secs(r),
        "ratio_verified": ratio(v, r), "ratio_unverified": ratio(u, r),
    }))
}

fn hook_overhead() -> Result<serde_json::Value, Failure> {
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

fn size_sweep(runs: u32, dir: &Path) -> Result<serde_json::Value, Failure> {
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

// ---------------------------------------------------------------------------------------

/// One timed 10-epoch fit on digits with the given callback setup.
fn timed_fit(data: &Dataset, setup: Setup, dir: &Path) -> Result<Duration, Failure> {
    let model = Model::mlp(&[64, 64, 10], 0)?;
    let optimizer = Adam::new(model.named_vars(), ParamsAdam::default())?;
    let mut trainer = Trainer::new(model, optimizer);
    let options = FitOptions::new(10).validation_split(0.2).verbose(0);
    let template = dir.join("bench.{epoch:02d}.safetensors");
    let started = Instant::now();
    match setup {
        Setup::Plain => {
            trainer.fit(data, &options, &mut [])?;
        }
        Setup::Full | Setup::Weights | Setup::Background => {
            let mut cb = ModelCheckpoint::new(template)
                .save_weights_only(setup == Setup::Weights)
                .background(setup == Setup::Background);
            trainer.fit(data, &options, &mut [&mut cb])?;
        }
    }
    Ok(started.elapsed())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Plain,
    Full,
    Weights,
    Background,
}

fn train_throughput(runs: u32, dir: &Path) -> Result<serde_json::Value, Failure> {
    let data = Dataset::digits().scaled().shuffled(0);
    let train_samples = (data.len() as f64 * 0.8) as usize;
    let setups = [Setup::Plain, Setup::Full, Setup::Weights, Setup::Background];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); setups.len()];
    timed_fit(&data, Setup::Plain, dir)?;
    // The order rotates every round, so that no side always follows the same other one.
    for round in 0..runs as usize {
        for k in 0..setups.len() {
            let i = (round + k) % setups.len();
            times[i].push(timed_fit(&data, setups[i], dir)?);
        }
    }
    let med: Vec<Duration> = times.into_iter().map(median).collect();
    let rate = |d: Duration| (train_samples as f64 * 10.0 / d.as_secs_f64()).round();
    let overhead =
        |d: Duration| ((d.as_secs_f64() / med[0].as_secs_f64() - 1.0) * 1e4).round() / 1e4;
    Ok(json!({
        "bench": "train_throughput", "epochs": 10, "train_samples": train_samples, "runs": runs,
        "plain_samples_per_s": rate(med[0]),
        "full_checkpoint_every_epoch_samples_per_s": rate(med[1]),
        "weights_checkpoint_every_epoch_samples_per_s": rate(med[2]),
        "background_full_checkpoint_every_epoch_samples_per_s": rate(med[3]),
        "overhead_full": overhead(med[1]), "overhead_weights": overhead(med[2]), "overhead_background_full": overhead(med[3]),
        "plain_s": secs(med[0]),
    }))
}
