//! Sharded saves by real processes, shared by the backends that run them (a local folder
//! here, the S3 server in the object-store crate): the model, the child process's body, and
//! the checks a parent makes after each save or kill.
#![allow(dead_code)]

use model_checkpoint::store::Name;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use model_checkpoint::sharded::{
    self, latest_sharded, owners, save_shard, wait_for_index, CommitOptions, Ranks, ShardTensor,
    ShardedCheckpoint, Slice,
};
use model_checkpoint::store::{Kind, Storage};
use model_checkpoint::{Dtype, HostTensor, NamedTensor, Placement};

/// The child's settings, passed in its environment.
pub const DIR: &str = "CKPT_SHARD_DIR";
pub const SAVE_ID: &str = "CKPT_SHARD_SAVE_ID";
pub const PAUSE_AT: &str = "CKPT_SHARD_PAUSE_AT";
pub const SEED: &str = "CKPT_SHARD_SEED";
/// How long the coordinator waits for shards, and the others for the index.
pub const TIMEOUT_MS: &str = "CKPT_SHARD_TIMEOUT_MS";

/// Where a child may be stopped (it prints `at STAGE` and waits to be killed).
pub const STAGES: [&str; 3] = ["before-shard", "after-shard", "before-index"];

/// The global model of seed `seed`: (name, dtype, shape, bytes). `dense.weight` is sliced
/// by rows, `embed` by columns, the others replicated.
pub fn global(seed: u64) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let f32s = |n: usize, salt: u64| -> Vec<u8> {
        (0..n)
            .flat_map(|i| ((seed * 31 + salt * 7 + i as u64) as f32 * 0.25).to_le_bytes())
            .collect()
    };
    let f64s = |n: usize, salt: u64| -> Vec<u8> {
        (0..n)
            .flat_map(|i| ((seed * 17 + salt + i as u64) as f64 / 3.0).to_le_bytes())
            .collect()
    };
    vec![
        ("dense.weight".into(), Dtype::F32, vec![12, 8], f32s(96, 1)),
        ("embed".into(), Dtype::F32, vec![6, 16], f32s(96, 2)),
        ("dense.bias".into(), Dtype::F32, vec![8], f32s(8, 3)),
        ("head.weight".into(), Dtype::F64, vec![8, 3], f64s(24, 4)),
    ]
}

/// How tensor `name` is cut across `world` ranks: the dimension, or `None` (replicated).
fn sliced_dim(name: &str) -> Option<usize> {
    match name {
        "dense.weight" => Some(0),
        "embed" => Some(1),
        _ => None,
    }
}

/// Rank `rank`'s box of a tensor of `shape` in a world of `world`: (offsets, shape).
pub fn box_of(name: &str, shape: &[usize], rank: usize, world: usize) -> (Vec<usize>, Vec<usize>) {
    let mut offsets = vec![0; shape.len()];
    let mut part = shape.to_vec();
    if let Some(d) = sliced_dim(name) {
        let n = shape[d] / world;
        offsets[d] = rank * n;
        part[d] = n;
    }
    (offsets, part)
}

/// The bytes of the box (offsets, shape) of a row-major tensor of `global_shape`.
pub fn cut(
    bytes: &[u8],
    elem: usize,
    global_shape: &[usize],
    offsets: &[usize],
    shape: &[usize],
) -> Vec<u8> {
    let dims = global_shape.len();
    let mut out = Vec::new();
    let total: usize = shape.iter().product();
    for flat in 0..total {
        let mut rest = flat;
        let mut at = 0;
        let mut stride = 1;
        let mut idx = vec![0; dims];
        for d in (0..dims).rev() {
            idx[d] = rest % shape[d];
            rest /= shape[d];
        }
        for d in (0..dims).rev() {
            at += (offsets[d] + idx[d]) * stride;
            stride *= global_shape[d];
        }
        out.extend_from_slice(&bytes[at * elem..(at + 1) * elem]);
    }
    out
}

/// The body of a child process: rank `RANK` of `WORLD_SIZE` saves its shard of seed `SEED`
/// into `DIR` as save `SAVE_ID`; rank 0 commits, the others wait for the index.
pub fn child_main(storage: &dyn Storage) {
    let dir = std::env::var(DIR).expect("dir");
    let save_id = std::env::var(SAVE_ID).expect("save id");
    let seed: u64 = std::env::var(SEED).expect("seed").parse().expect("seed");
    let pause = std::env::var(PAUSE_AT).ok();
    let ranks = Ranks::from_env()
        .expect("ranks")
        .expect("launched with RANK");
    let stop_at = |stage: &str| {
        if pause.as_deref() == Some(stage) {
            println!("at {stage}");
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
    };
    let model = global(seed);
    let replicated: Vec<(&str, usize)> = model
        .iter()
        .filter(|(n, ..)| sliced_dim(n).is_none())
        .map(|(n, _, _, b)| (n.as_str(), b.len()))
        .collect();
    let owner = owners(&replicated, ranks.world_size);
    let mut tensors = Vec::new();
    for (name, dtype, shape, bytes) in &model {
        let elem = dtype.bitsize() / 8;
        if sliced_dim(name).is_some() {
            let (offsets, part) = box_of(name, shape, ranks.rank, ranks.world_size);
            let data = cut(bytes, elem, shape, &offsets, &part);
            tensors.push(ShardTensor {
                tensor: NamedTensor::new(
                    name.clone(),
                    HostTensor::new(*dtype, part, data).expect("tensor"),
                ),
                placement: Placement::Sliced(Slice {
                    global_shape: shape.clone(),
                    offsets,
                }),
            });
        } else if replicated
            .iter()
            .position(|(n, _)| n == name)
            .is_some_and(|i| owner[i] == ranks.rank)
        {
            tensors.push(ShardTensor {
                tensor: NamedTensor::new(
                    name.clone(),
                    HostTensor::new(*dtype, shape.clone(), bytes.clone()).expect("tensor"),
                ),
                placement: Placement::Replicated,
            });
        }
    }
    // Per-rank state (a data cursor) lives in that rank's shard, under a name every rank
    // uses.
    let cursor = (seed * 1000 + ranks.rank as u64).to_le_bytes().to_vec();
    tensors.push(ShardTensor {
        tensor: NamedTensor::new(
            "cursor",
            HostTensor::new(Dtype::U64, vec![1], cursor).expect("tensor"),
        ),
        placement: Placement::PerRank,
    });
    stop_at("before-shard");
    save_shard(
        storage,
        &Name::from(&dir),
        ranks,
        &save_id,
        Kind::Full,
        tensors,
        &BTreeMap::new(),
    )
    .expect("save shard");
    stop_at("after-shard");
    let timeout = Duration::from_millis(
        std::env::var(TIMEOUT_MS)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(20_000),
    );
    if ranks.rank == 0 {
        let meta = BTreeMap::from([("global_step".to_owned(), seed.to_string())]);
        let options = CommitOptions {
            timeout,
            ..CommitOptions::default()
        };
        let pending = sharded::gather(
            storage,
            &Name::from(&dir),
            ranks.world_size,
            &save_id,
            &meta,
            options,
        )
        .expect("all shards");
        stop_at("before-index");
        pending.publish(storage).expect("publish");
    } else {
        assert!(
            wait_for_index(storage, &Name::from(&dir), timeout).expect("wait"),
            "no index"
        );
    }
}

/// Starts `world` children (this test binary running `test`), rank `pause_rank` told to
/// stop at `pause`.
pub fn spawn(
    test: &str,
    env: &[(&str, String)],
    world: usize,
    dir: &str,
    seed: u64,
    pause: Option<(usize, &str)>,
) -> Vec<Child> {
    (0..world)
        .map(|rank| {
            let mut cmd = Command::new(std::env::current_exe().expect("exe"));
            cmd.args(["--ignored", "--exact", test, "--nocapture", "--quiet"])
                .envs(env.iter().map(|(k, v)| (*k, v)))
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env(DIR, dir)
                .env(SAVE_ID, format!("save-{seed}"))
                .env(SEED, seed.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            if let Some((r, stage)) = pause {
                if r == rank {
                    cmd.env(PAUSE_AT, stage);
                }
            }
            cmd.spawn().expect("child")
        })
        .collect()
}

/// Waits until `child` prints `at STAGE`, then kills it with SIGKILL by its process id;
/// returns false if it ended first (the stage is not reached by that rank).
pub fn kill_at(child: &mut Child, stage: &str) -> bool {
    let Some(out) = child.stdout.take() else {
        return false;
    };
    let reached = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.trim() == format!("at {stage}"));
    let _ = child.kill();
    let _ = child.wait();
    reached
}

/// Checks that the sharded checkpoint in `dir` holds the global model of `seed`, and that
/// every rank of worlds of 1, 2 and 4 reads exactly its box.
pub fn check_loads(storage: &dyn Storage, dir: &str, seed: u64) {
    let checkpoint = ShardedCheckpoint::open(storage, &Name::from(dir)).expect("open");
    for (name, dtype, shape, bytes) in global(seed) {
        let whole = checkpoint.read(&name).expect("read");
        assert_eq!(whole.data(), bytes.as_slice(), "{name}");
        assert_eq!(model_checkpoint::TensorData::dtype(&whole), dtype);
        for world in [1, 2, 4] {
            for rank in 0..world {
                let (offsets, part) = box_of(&name, &shape, rank, world);
                let mine = checkpoint
                    .read_region(&name, &offsets, &part)
                    .expect("region");
                assert_eq!(
                    mine.data(),
                    cut(&bytes, dtype.bitsize() / 8, &shape, &offsets, &part).as_slice(),
                    "{name}: rank {rank} of {world}"
                );
            }
        }
    }
    for rank in 0..checkpoint.world_size() {
        let shard = checkpoint.shard(rank).expect("shard");
        let cursor = shard.read("cursor").expect("cursor");
        assert_eq!(cursor, (seed * 1000 + rank as u64).to_le_bytes());
    }
}

/// After a kill: every folder under `root` with an index opens and reads back (never an
/// index naming a missing or unverifiable shard), and `latest` is a complete checkpoint.
pub fn check_after_kill(storage: &dyn Storage, root: &str) -> String {
    for object in storage.list(&Name::from(root), 1).expect("list") {
        if let Some(dir) = object
            .name
            .as_str()
            .strip_suffix(&format!("/{}", sharded::INDEX_FILE))
        {
            let checkpoint = ShardedCheckpoint::open(storage, &Name::from(dir))
                .unwrap_or_else(|e| panic!("an index names a bad shard: {e}"));
            for name in checkpoint.tensors().keys() {
                checkpoint.read(name).expect("every piece verifies");
            }
        }
    }
    let latest = latest_sharded(storage, &Name::from(root)).expect("latest resolves");
    ShardedCheckpoint::open(storage, &latest).expect("latest opens");
    latest.to_string()
}

/// Saves of `test`'s children into `root/step-NNN`, `kills` times, each with one rank
/// killed with SIGKILL at a stage (cycling through [`STAGES`], worlds of 2 and 4); after
/// each kill, [`check_after_kill`], and the killed save is a checkpoint only where the
/// coordinator could commit without the killed rank (killed after its shard).
pub fn kill_at_every_stage(
    test: &str,
    env: &[(&str, String)],
    storage: &dyn Storage,
    root: &str,
    kills: usize,
) {
    let mut env = env.to_vec();
    env.push((TIMEOUT_MS, "800".to_owned()));
    for i in 1..=kills {
        let world = [2, 4][i % 2];
        let stage = STAGES[i % 3];
        // Only the coordinator reaches the last stage.
        let rank = if stage == "before-index" {
            0
        } else {
            (i / 3) % world
        };
        let dir = format!("{root}/step-{i:03}");
        let mut children = spawn(test, &env, world, &dir, i as u64, Some((rank, stage)));
        assert!(
            kill_at(&mut children[rank], stage),
            "kill {i} missed {stage}"
        );
        for child in &mut children {
            let _ = child.wait();
        }
        let latest = check_after_kill(storage, root);
        if stage == "after-shard" && rank != 0 {
            // Its shard was in place: the coordinator committed without it running.
            assert_eq!(latest, dir, "kill {i}: {stage} of rank {rank}");
        } else {
            // No index: the killed save is not a checkpoint, and latest is an earlier one.
            assert_ne!(latest, dir, "kill {i}: {stage} of rank {rank}");
        }
    }
}
