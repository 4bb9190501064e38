//! `ckpt bench`: measurements as JSON lines, each the median of interleaved runs (A B A B …)
//! so that a noisy disk or a busy neighbour hits both sides alike.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use model_checkpoint::ModelCheckpoint;
use model_checkpoint_candle::{Adam, Dataset, FitOptions, Model, ParamsAdam, Trainer};
use serde_json::json;

use crate::Failure;

/// Measure training and checkpoint speed; one JSON line per measurement.
///
/// Every figure is a median over interleaved runs of the things compared.
///
/// Examples:
///   ckpt bench
///   ckpt bench --only train-throughput --runs 9
///   ckpt bench --dir /mnt/fast-disk
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// Run only these measurements (repeatable); all by default.
    #[arg(long, value_enum)]
    only: Vec<Measurement>,
    /// Interleaved runs per side.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Folder to write checkpoints in (a temporary folder inside it is used and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// A measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Measurement {
    /// Training samples/s on digits (10 epochs, MLP 64-64-10, Adam, batch 32) without a
    /// checkpoint callback, with one saving a full checkpoint every epoch, and with one
    /// saving weights every epoch.
    TrainThroughput,
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

pub(crate) fn run(args: BenchArgs) -> Result<(), Failure> {
    let all = [Measurement::TrainThroughput];
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
    for m in chosen {
        let line = match m {
            Measurement::TrainThroughput => train_throughput(args.runs, scratch.path())?,
        };
        println!("{line}");
    }
    Ok(())
}

/// One timed 10-epoch fit; `save` picks the callback: none, full, or weights only.
fn timed_fit(data: &Dataset, save: Option<(bool, &std::path::Path)>) -> Result<Duration, Failure> {
    let model = Model::mlp(&[64, 64, 10], 0)?;
    let optimizer = Adam::new(model.named_vars(), ParamsAdam::default())?;
    let mut trainer = Trainer::new(model, optimizer);
    let options = FitOptions::new(10).validation_split(0.2).verbose(0);
    let started = Instant::now();
    match save {
        None => {
            trainer.fit(data, &options, &mut [])?;
        }
        Some((weights_only, dir)) => {
            let mut cb = ModelCheckpoint::new(dir.join("bench.{epoch:02d}.safetensors"))
                .save_weights_only(weights_only);
            trainer.fit(data, &options, &mut [&mut cb])?;
        }
    }
    Ok(started.elapsed())
}

fn train_throughput(runs: u32, dir: &std::path::Path) -> Result<serde_json::Value, Failure> {
    let data = Dataset::digits().scaled().shuffled(0);
    let samples = (data.len() as f64 * 0.8) as usize * 10;
    let (mut plain, mut full, mut weights) = (Vec::new(), Vec::new(), Vec::new());
    // One untimed round warms caches and the allocator.
    timed_fit(&data, None)?;
    for _ in 0..runs {
        plain.push(timed_fit(&data, None)?);
        full.push(timed_fit(&data, Some((false, dir)))?);
        weights.push(timed_fit(&data, Some((true, dir)))?);
    }
    let rate = |d: Duration| samples as f64 / d.as_secs_f64();
    let (p, f, w) = (median(plain), median(full), median(weights));
    Ok(json!({
        "bench": "train_throughput",
        "epochs": 10,
        "train_samples": samples / 10,
        "runs": runs,
        "plain_samples_per_s": rate(p).round(),
        "full_checkpoint_every_epoch_samples_per_s": rate(f).round(),
        "weights_checkpoint_every_epoch_samples_per_s": rate(w).round(),
        "full_checkpoint_overhead": (f.as_secs_f64() / p.as_secs_f64() - 1.0),
        "weights_checkpoint_overhead": (w.as_secs_f64() / p.as_secs_f64() - 1.0),
        "plain_seconds": p.as_secs_f64(),
    }))
}
