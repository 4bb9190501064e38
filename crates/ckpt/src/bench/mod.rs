//! `ckpt bench`: measurements as JSON lines, each the median of interleaved runs (A B A B …)
//! so that a noisy disk or a busy neighbour hits both sides alike.

mod compress;
mod dedup;
mod disk;
mod s3;
mod sharded;
#[cfg(feature = "train")]
mod training;
#[cfg(not(feature = "train"))]
mod training {
    //! The measurements that train, in a build without the frameworks: refused by name.
    use std::path::Path;

    use crate::Failure;

    fn refused(what: &str) -> Result<serde_json::Value, Failure> {
        Err(crate::without_training(&format!("ckpt bench --only {what}")).into())
    }
    pub(super) fn train_throughput(_: u32, _: &Path) -> Result<serde_json::Value, Failure> {
        refused("train-throughput")
    }
    pub(super) fn async_stall_vs_sync(
        _: u32,
        _: &Path,
        _: u64,
        _: u64,
    ) -> Result<serde_json::Value, Failure> {
        refused("async-stall-vs-sync")
    }
    pub(super) fn sharded_stall_vs_sync(
        _: u32,
        _: &Path,
        _: u64,
    ) -> Result<serde_json::Value, Failure> {
        refused("sharded-stall-vs-sync")
    }
}

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::Failure;
use disk::{hook_overhead, load_vs_read, peers_python, save_once, save_vs_raw, size_sweep};
pub(crate) use sharded::{rank, RankArgs};
use training::{async_stall_vs_sync, sharded_stall_vs_sync, train_throughput};

/// Measure training and checkpoint speed; one JSON line per measurement.
///
/// Every figure is a median over interleaved runs of the things compared, written in --dir
/// (the disk under test). The default model is 1024 MiB in 64 float32 tensors.
#[derive(Args, Debug)]
#[command(after_help = r#"Examples:
  ckpt bench
  ckpt bench --only save-vs-raw --only load-vs-read --runs 9
  ckpt bench --size-mib 256 --dir /mnt/fast-disk
  ckpt bench --only s3 --size-mib 256 --s3 s3://bucket/bench   (bench/s3.sh: a local server)"#)]
pub(crate) struct BenchArgs {
    /// Run only these measurements (repeatable). By default: train-throughput, save-vs-raw,
    /// async-stall-vs-sync, load-vs-read, hook-overhead and size-sweep.
    #[arg(long, value_enum)]
    only: Vec<Measurement>,
    /// Interleaved runs per side.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Checkpoint size in MiB (per rank for sharded-stall-vs-sync) for every measurement but
    /// train-throughput, hook-overhead, size-sweep, compress and sharded-commit-s3.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    size_mib: u64,
    /// Number of tensors the checkpoint is split into (sharded-stall-vs-sync's model has
    /// 4096-wide layers instead).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    tensors: u64,
    /// Folder to write in (a temporary folder inside it is used and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The Python with safetensors and numpy, for peers-python (bench/peers.sh sets it up).
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Where the s3 measurements write: s3://bucket/prefix (the server from the AWS_*
    /// variables: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP).
    #[arg(long)]
    s3: Option<String>,
    /// The checkpoint (file or folder) whose trained weights the compress measurement
    /// compresses.
    #[arg(long, value_name = "CHECKPOINT")]
    from: Option<PathBuf>,
    /// An earlier checkpoint of the same run: compress also measures an XOR delta against it.
    #[arg(long, value_name = "CHECKPOINT")]
    previous: Option<PathBuf>,
}

/// A measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Measurement {
    /// Training samples/s on digits (10 epochs, MLP 64-64-10, Adam, batch 32), candle and
    /// burn (burn where ckpt is built with `--features burn`): no callback, a full
    /// checkpoint every epoch, weights every epoch, full checkpoints saved in the
    /// background, and the same with a journal, save_last, keep_last 2 and a history written
    /// in the background; and the callbacks' time on the training thread (per save, at
    /// on_train_begin, at on_train_end).
    TrainThroughput,
    /// A synchronous save against write_all + sync_all of the same bytes.
    SaveVsRaw,
    /// Time the training thread is blocked by a background save, against a synchronous
    /// save; and the peak memory of a background save.
    AsyncStallVsSync,
    /// Loading with every checksum checked (and with a verification pass first), against reading the file.
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
    /// The three S3 measurements (needs --s3): s3-save-vs-multipart, s3-stall-vs-sync and
    /// s3-load-vs-download.
    S3,
    /// A save to S3 against object_store's own multipart upload of the same bytes.
    S3SaveVsMultipart,
    /// The training thread's stall for a background save to S3 against a synchronous one.
    S3StallVsSync,
    /// A verified load from S3 (every tensor's checksum checked) against object_store's
    /// own parallel download of the same object.
    S3LoadVsDownload,
    /// The training thread's stall for a background sharded save against a synchronous one:
    /// 4 ranks (threads) each holding a --size-mib model and writing a quarter of it.
    ShardedStallVsSync,
    /// Sharded saves by 1, 2 and 4 rank processes of the same total bytes to --dir, and a
    /// resharded load against a plain load of the consolidated file.
    Sharded,
    /// The commit of 8, 64 and 256 rank processes with small shards through --s3, and of
    /// 1,024 and 4,096 ranks as threads of one process.
    ShardedCommitS3,
    /// Deduplicated saves against plain ones of --size-mib in --tensors tensors (at least
    /// 10): a fine-tune with 90% of the tensors frozen (time, and bytes written per
    /// checkpoint), and saves where every tensor changed (nothing to share).
    Dedup,
    /// Compression of the trained weights in --from: byte planes + zstd against zstd alone,
    /// float32 and rounded to bfloat16 (ratio, MB/s); a deduplicated checkpoint of them
    /// saved and loaded plain and compressed; with --previous, an XOR delta against it.
    Compress,
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// One untimed run of each side, then `runs` interleaved runs (A B A B …): the medians of
/// A's and B's times.
fn interleaved(
    runs: u32,
    mut a: impl FnMut() -> Result<Duration, Failure>,
    mut b: impl FnMut() -> Result<Duration, Failure>,
) -> Result<(Duration, Duration), Failure> {
    a()?;
    b()?;
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        first.push(a()?);
        second.push(b()?);
    }
    Ok((median(first), median(second)))
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
        // A build without the frameworks measures what it can.
        let trains = [Measurement::TrainThroughput, Measurement::AsyncStallVsSync];
        all.into_iter()
            .filter(|m| cfg!(feature = "train") || !trains.contains(m))
            .collect()
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
    let chosen: Vec<Measurement> = chosen
        .into_iter()
        .flat_map(|m| match m {
            Measurement::S3 => vec![
                Measurement::S3SaveVsMultipart,
                Measurement::S3StallVsSync,
                Measurement::S3LoadVsDownload,
            ],
            m => vec![m],
        })
        .collect();
    let s3 = || -> Result<String, Failure> {
        let prefix = args.s3.clone().ok_or_else(|| {
            Failure::from("the s3 measurements need --s3 s3://bucket/prefix (bench/s3.sh starts a local server)")
        })?;
        if !model_checkpoint_object_store::is_remote(&prefix) {
            return Err(format!("--s3 {prefix:?} is not an s3:// URL").into());
        }
        Ok(prefix.trim_end_matches('/').to_owned())
    };
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
            Measurement::S3SaveVsMultipart => {
                s3::save_vs_multipart(args.runs, &s3()?, bytes, args.tensors)?
            }
            Measurement::S3StallVsSync => {
                s3::stall_vs_sync(args.runs, &s3()?, bytes, args.tensors)?
            }
            Measurement::S3LoadVsDownload => {
                s3::load_vs_download(args.runs, &s3()?, bytes, args.tensors)?
            }
            Measurement::S3 => continue,
            Measurement::ShardedStallVsSync => sharded_stall_vs_sync(args.runs, dir, bytes)?,
            Measurement::Sharded => sharded::throughput(args.runs, dir, bytes, args.tensors)?,
            Measurement::ShardedCommitS3 => sharded::commit_at_scale(&s3()?)?,
            Measurement::Dedup => dedup::dedup(args.runs, dir, bytes, args.tensors)?,
            Measurement::Compress => compress::compress(
                args.runs,
                dir,
                args.from.as_deref(),
                args.previous.as_deref(),
            )?,
        };
        out!("{line}");
    }
    Ok(())
}
