//! Sharded-checkpoint measurements, with ranks as real processes (`ckpt bench-rank`, a
//! hidden subcommand this module runs): aggregate save throughput of 1, 2 and 4 ranks
//! writing the same total bytes to one disk; a resharded load against a plain load of the
//! consolidated file; and, toward many machines, the commit of 8, 64 and 256 rank processes
//! through an S3 server (latency from the last shard to the index, and storage operations),
//! and of 1,024 and 4,096 ranks as threads of one process.

use model_checkpoint::store::Name;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use model_checkpoint::sharded::{
    self, CommitOptions, Ranks, ShardTensor, ShardedCheckpoint, Slice,
};
use model_checkpoint::store::{
    CheckpointFile, Commit, Kind, ObjectMeta, ObjectReader, PendingObject, Storage, Verify,
};
use model_checkpoint::{Error, NamedTensor, Placement};
use serde_json::json;

use super::disk::synthetic;
use super::{median, ratio, secs};
use crate::location::storage_for;
use crate::Failure;

/// One rank of a sharded-save benchmark (run by `ckpt bench`, not by hand).
#[derive(Args, Debug)]
pub(crate) struct RankArgs {
    /// The checkpoint's folder (or s3:// prefix).
    #[arg(long)]
    dir: String,
    /// Total bytes of the model (every rank writes its share).
    #[arg(long)]
    bytes: u64,
    /// Tensors the model is split into (each sliced by rows across the ranks).
    #[arg(long)]
    tensors: u64,
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A storage that counts the operations made through it (each is one or more requests to
/// an object store).
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Storage>,
    ops: AtomicU64,
}

impl Counting {
    fn tick(&self) {
        self.ops.fetch_add(1, Ordering::Relaxed);
    }
}

impl Storage for Counting {
    fn create(
        &self,
        name: &Name,
        head_len: u64,
        commit: Commit,
    ) -> Result<Box<dyn PendingObject>, Error> {
        self.tick();
        self.inner.create(name, head_len, commit)
    }
    fn put_if_absent(&self, name: &Name, bytes: &[u8]) -> Result<bool, Error> {
        self.tick();
        self.inner.put_if_absent(name, bytes)
    }
    fn open(&self, name: &Name) -> Result<Box<dyn ObjectReader>, Error> {
        self.tick();
        self.inner.open(name)
    }
    fn list(&self, dir: &Name, depth: usize) -> Result<Vec<ObjectMeta>, Error> {
        self.tick();
        self.inner.list(dir, depth)
    }
    fn exists(&self, name: &Name) -> Result<bool, Error> {
        self.tick();
        self.inner.exists(name)
    }
    // Not counted: an object store answers it without a request.
    fn is_link(&self, name: &Name) -> Result<bool, Error> {
        self.inner.is_link(name)
    }
    fn delete(&self, name: &Name) -> Result<(), Error> {
        self.tick();
        self.inner.delete(name)
    }
    fn copy(&self, from: &Name, to: &Name, durable: bool) -> Result<(), Error> {
        self.tick();
        self.inner.copy(from, to, durable)
    }
    fn prepare_dir(&self, dir: &Name) -> Result<(), Error> {
        self.inner.prepare_dir(dir)
    }
    fn contains(&self, dir: &Name, name: &Name) -> bool {
        self.inner.contains(dir, name)
    }
    fn lock(&self, dir: &Name) -> Result<Option<Box<dyn std::any::Any + Send>>, Error> {
        self.inner.lock(dir)
    }
}

/// The body of `ckpt bench-rank`: writes this rank's shard (rows of every tensor), rank 0
/// commits; prints one JSON line with its timings and operation count.
pub(crate) fn rank(args: RankArgs) -> Result<(), Failure> {
    let ranks = Ranks::from_env()?.ok_or("bench-rank runs under RANK and WORLD_SIZE")?;
    let storage = Counting {
        inner: storage_for(&args.dir)?,
        ops: AtomicU64::new(0),
    };
    let model = synthetic(args.bytes, args.tensors);
    let tensors: Vec<ShardTensor<'_>> = model
        .iter()
        .map(|(name, t)| {
            let rows = t.data().len() / 4;
            let per = rows / ranks.world_size;
            let first = ranks.rank * per;
            let slice = &t.data()[first * 4..(first + per) * 4];
            let piece = model_checkpoint::HostTensor::new(
                model_checkpoint::Dtype::F32,
                vec![per],
                slice.to_vec(),
            )
            .map_err(|e| e.to_string());
            piece.map(|piece| ShardTensor {
                tensor: NamedTensor::new(name.clone(), piece),
                placement: Placement::Sliced(Slice {
                    global_shape: vec![per * ranks.world_size],
                    offsets: vec![first],
                }),
            })
        })
        .collect::<Result<_, _>>()?;
    let save_id = "bench";
    let dir = Name::new(&args.dir)?;
    sharded::save_shard(
        &storage,
        &dir,
        ranks,
        save_id,
        Kind::Weights,
        tensors,
        &BTreeMap::new(),
    )?;
    let shard_done = unix_nanos();
    let mut index_visible = None;
    if ranks.rank == 0 {
        let options = CommitOptions {
            timeout: Duration::from_secs(600),
            poll: Duration::from_millis(5),
        };
        sharded::commit(
            &storage,
            &dir,
            ranks.world_size,
            save_id,
            &BTreeMap::new(),
            options,
        )?;
        index_visible = Some(unix_nanos());
    }
    out!(
        "{}",
        json!({"rank": ranks.rank, "shard_done_ns": shard_done.to_string(),
               "index_visible_ns": index_visible.map(|t| t.to_string()),
               "ops": storage.ops.load(Ordering::Relaxed)})
    );
    Ok(())
}

/// What a run of `world` rank processes reported: wall time, commit latency, operations.
struct Run {
    wall: Duration,
    commit_latency: Duration,
    ops: u64,
}

fn run_ranks(dir: &str, world: usize, bytes: u64, tensors: u64) -> Result<Run, Failure> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let children: Vec<_> = (0..world)
        .map(|rank| {
            Command::new(&exe)
                .args(["bench-rank", "--dir", dir, "--bytes", &bytes.to_string()])
                .args(["--tensors", &tensors.to_string()])
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot start a rank: {e}"))?;
    let mut last_shard = 0u128;
    let mut visible = 0u128;
    let mut ops = 0u64;
    for child in children {
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err("a rank failed".into());
        }
        let line: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let nanos = |k: &str| line[k].as_str().and_then(|s| s.parse::<u128>().ok());
        last_shard = last_shard.max(nanos("shard_done_ns").unwrap_or(0));
        visible = visible.max(nanos("index_visible_ns").unwrap_or(0));
        ops += line["ops"].as_u64().unwrap_or(0);
    }
    let wall = started.elapsed();
    let latency = u64::try_from(visible.saturating_sub(last_shard)).unwrap_or(u64::MAX);
    Ok(Run {
        wall,
        commit_latency: Duration::from_nanos(latency),
        ops,
    })
}

fn remove_folder(storage: &dyn Storage, dir: &Name) -> Result<(), Failure> {
    for object in storage.list(dir, 0)? {
        storage.delete(&object.name)?;
    }
    if dir.scheme().is_none() {
        let _ = std::fs::remove_dir(dir.as_path());
    }
    Ok(())
}

/// Aggregate save throughput of 1, 2 and 4 ranks writing `bytes` in all to `dir` (interleaved
/// runs), and a resharded load (the 4-rank checkpoint read as 2 ranks' boxes) against a
/// plain load of the consolidated file.
pub(super) fn throughput(
    runs: u32,
    dir: &Path,
    bytes: u64,
    count: u64,
) -> Result<serde_json::Value, Failure> {
    let storage = storage_for(&dir.to_string_lossy())?;
    let worlds = [1usize, 2, 4];
    let mut walls: Vec<Vec<Duration>> = vec![Vec::new(); worlds.len()];
    for _ in 0..runs {
        for (i, &world) in worlds.iter().enumerate() {
            let folder = Name::from(dir.join(format!("sharded-{world}")));
            walls[i].push(run_ranks(folder.as_str(), world, bytes, count)?.wall);
            // The last 4-rank checkpoint stays for the load measurement below.
            if world != 4 || walls[i].len() < runs as usize {
                remove_folder(&*storage, &folder)?;
            }
        }
    }
    let medians: Vec<Duration> = walls.into_iter().map(median).collect();
    // The 4-rank checkpoint, consolidated; then loaded both ways, interleaved.
    let folder = Name::from(dir.join("sharded-4"));
    let checkpoint = ShardedCheckpoint::open(&*storage, &folder)?;
    let plain = dir.join("consolidated.safetensors");
    checkpoint.consolidate(&*storage, &Name::from(plain.as_path()))?;
    let (mut resharded, mut whole) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        for (name, g) in checkpoint.tensors() {
            let rows = g.global_shape[0];
            for rank in 0..2 {
                checkpoint.read_region(name, &[rank * rows / 2], &[rows / 2])?;
            }
        }
        resharded.push(t.elapsed());
        let t = Instant::now();
        let file = CheckpointFile::open(&plain, Verify::HeaderOnly)?;
        for name in checkpoint.tensors().keys() {
            file.read(name)?;
        }
        whole.push(t.elapsed());
    }
    remove_folder(&*storage, &folder)?;
    let _ = std::fs::remove_file(&plain);
    let (r, w) = (median(resharded), median(whole));
    let gib = bytes as f64 / (1u64 << 30) as f64;
    Ok(json!({
        "bench": "sharded", "mib": bytes >> 20, "tensors": count, "runs": runs,
        "save_s_1_2_4_ranks": medians.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
        "aggregate_gib_per_s_1_2_4_ranks": medians.iter().map(|d| (gib / d.as_secs_f64() * 1e3).round() / 1e3).collect::<Vec<_>>(),
        "ratio_2_ranks": ratio(medians[1], medians[0]), "ratio_4_ranks": ratio(medians[2], medians[0]),
        "resharded_load_4_to_2_s": secs(r), "plain_load_s": secs(w), "load_ratio": ratio(r, w),
    }))
}

/// The commit of 8, 64 and 256 rank processes with small shards through an S3 prefix:
/// latency from the last shard's commit to the index's, and storage operations per
/// checkpoint (each one or more requests).
pub(super) fn commit_at_scale(prefix: &str) -> Result<serde_json::Value, Failure> {
    let storage = storage_for(prefix)?;
    let mut rows = Vec::new();
    for world in [8usize, 64, 256] {
        let dir = Name::new(&format!("{prefix}/commit-{world}"))?;
        // 64 KiB per rank, in 4 tensors.
        let run = run_ranks(dir.as_str(), world, (64 << 10) * world as u64, 4)?;
        remove_folder(&*storage, &dir)?;
        rows.push(json!({
            "ranks": world, "commit_latency_s": secs(run.commit_latency),
            "storage_ops": run.ops, "ops_per_rank": (run.ops as f64 / world as f64 * 100.0).round() / 100.0,
            "wall_s": secs(run.wall),
        }));
    }
    let mut simulated = Vec::new();
    for world in [1024usize, 4096] {
        let dir = Name::new(&format!("{prefix}/simulated-{world}"))?;
        let run = commit_by_threads(prefix, &dir, world)?;
        remove_folder(&*storage, &dir)?;
        simulated.push(json!({
            "ranks": world, "commit_latency_s": secs(run.commit_latency),
            "storage_ops": run.ops, "ops_per_rank": (run.ops as f64 / world as f64 * 100.0).round() / 100.0,
            "wall_s": secs(run.wall),
        }));
    }
    Ok(json!({
        "bench": "sharded_commit_s3", "shard_kib": 64, "by_ranks": rows,
        "threads_standing_for_ranks": {"writer_threads": SIMULATED_WRITERS, "shard_kib": 4, "by_ranks": simulated},
    }))
}

/// Threads writing the shards of a simulated world, through one client.
const SIMULATED_WRITERS: usize = 32;

/// A commit of `world` ranks whose shards (4 KiB each) are written by threads standing for
/// the ranks, [`SIMULATED_WRITERS`] at a time through one client, while rank 0's commit
/// runs alongside from the start (as it does in a run, once its own shard is written):
/// latency from the last shard written to the index visible, and operations per rank.
fn commit_by_threads(prefix: &str, dir: &Name, world: usize) -> Result<Run, Failure> {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    let storage = Counting {
        inner: storage_for(prefix)?,
        ops: AtomicU64::new(0),
    };
    let save_id = "bench";
    let per = 1024usize;
    let next = AtomicUsize::new(0);
    let last_shard = Mutex::new(None::<Instant>);
    let started = Instant::now();
    let write = |rank: usize| -> Result<(), Failure> {
        let ranks = Ranks::new(rank, world)?;
        let values: Vec<f32> = (0..per).map(|i| (rank * per + i) as f32).collect();
        let piece = model_checkpoint::HostTensor::from_f32(vec![per], &values);
        let tensor = ShardTensor {
            tensor: NamedTensor::new("w", piece),
            placement: Placement::Sliced(Slice {
                global_shape: vec![per * world],
                offsets: vec![rank * per],
            }),
        };
        sharded::save_shard(
            &storage,
            dir,
            ranks,
            save_id,
            Kind::Weights,
            vec![tensor],
            &BTreeMap::new(),
        )?;
        let done = Instant::now();
        let mut last = last_shard.lock().map_err(|_| "a writer panicked")?;
        *last = Some(last.map_or(done, |t: Instant| t.max(done)));
        Ok(())
    };
    let visible = std::thread::scope(|scope| -> Result<Instant, Failure> {
        let coordinator = scope.spawn(|| -> Result<Instant, Failure> {
            let options = CommitOptions {
                timeout: Duration::from_secs(600),
                poll: Duration::from_millis(5),
            };
            sharded::commit(&storage, dir, world, save_id, &BTreeMap::new(), options)?;
            Ok(Instant::now())
        });
        let writers: Vec<_> = (0..SIMULATED_WRITERS)
            .map(|_| {
                scope.spawn(|| -> Result<(), Failure> {
                    loop {
                        let rank = next.fetch_add(1, Ordering::Relaxed);
                        if rank >= world {
                            return Ok(());
                        }
                        write(rank)?;
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().map_err(|_| "a writer panicked")??;
        }
        coordinator.join().map_err(|_| "the coordinator panicked")?
    })?;
    let last = last_shard
        .into_inner()
        .map_err(|_| "a writer panicked")?
        .ok_or("no shard written")?;
    Ok(Run {
        wall: started.elapsed(),
        commit_latency: visible.saturating_duration_since(last),
        ops: storage.ops.load(Ordering::Relaxed),
    })
}
