//! Deduplicated (and compressed) checkpoints in a bucket, killed with SIGKILL during saves
//! and retention: after every kill, every committed checkpoint opens and every tensor it
//! names reads back and verifies.

#[path = "seaweed/mod.rs"]
mod seaweed;

use std::cell::Cell;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use model_checkpoint::sharded::{ShardedCheckpoint, INDEX_FILE};
use model_checkpoint::store::{Name, Storage};
use model_checkpoint::{
    Callback, Checkpointable, Context, Error, HostTensor, Logs, ModelCheckpoint, NamedTensor,
};
use model_checkpoint_object_store::ObjectStorage;
use seaweed::Seaweed;

/// A frozen 1 MiB backbone and a head that changes every epoch.
struct FineTune {
    epoch: Cell<u32>,
}

impl Checkpointable for FineTune {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        let backbone: Vec<f32> = (0..1 << 18).map(|i| (i % 977) as f32 * 0.01).collect();
        let head: Vec<f32> = (0..4096)
            .map(|i| self.epoch.get() as f32 + i as f32 * 1e-3)
            .collect();
        Ok(vec![
            NamedTensor::new("backbone", HostTensor::from_f32(vec![1 << 18], &backbone)),
            NamedTensor::new("head", HostTensor::from_f32(vec![4096], &head)),
        ])
    }
}

const CHILD_ENDPOINT: &str = "CKPT_S3_DEDUP_CHILD_ENDPOINT";
const PREFIX: &str = "s3://ckpt/dedup";

fn storage_at(endpoint: &str) -> ObjectStorage {
    ObjectStorage::from_env_with(
        "s3://ckpt",
        &[
            ("AWS_ACCESS_KEY_ID", seaweed::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", seaweed::SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ALLOW_HTTP", "true"),
        ],
    )
    .expect("storage")
}

/// The committed checkpoints below the prefix (folders holding an index).
fn committed(storage: &ObjectStorage) -> Vec<Name> {
    storage
        .list(&Name::from(PREFIX), 1)
        .expect("list")
        .into_iter()
        .filter(|o| o.name.file_name() == Some(INDEX_FILE))
        .map(|o| o.name.parent())
        .collect()
}

#[test]
#[ignore = "helper: the SIGKILL test runs it as a child process"]
fn child_saves_deduplicated_to_s3_forever() {
    let endpoint = std::env::var(CHILD_ENDPOINT).expect("run by the SIGKILL test");
    let storage = storage_at(&endpoint);
    let start = committed(&storage).len() as u32 * 1000 + std::process::id() % 1000;
    // One run across restarts, keeping two: every save deletes an index and collects.
    let mut cb = ModelCheckpoint::new(format!("{PREFIX}/e{{epoch:06d}}.safetensors"))
        .storage(Arc::new(storage))
        .monitor("loss")
        .save_weights_only(true)
        .dedup(true)
        .compress(std::process::id().is_multiple_of(2))
        .with_run_id("c0ffee")
        .keep_last(2)
        .overwrite(false);
    let model = FineTune {
        epoch: Cell::new(0),
    };
    cb.on_train_begin(&Logs::new(), &mut Context::new(&model))
        .expect("begin");
    for e in start.. {
        model.epoch.set(e + 1);
        let mut ctx = Context::new(&model);
        cb.on_epoch_begin(e as usize, &Logs::new(), &mut ctx)
            .expect("epoch begin");
        cb.on_epoch_end(e as usize, &Logs::from([("loss", 1.0)]), &mut ctx)
            .expect("save");
    }
}

#[test]
fn sigkill_during_deduplicated_saves_to_s3_never_loses_a_blob() {
    let Some(server) = Seaweed::start("sigkill_during_deduplicated_saves_to_s3") else {
        return;
    };
    let storage = server.storage();
    let kills: u64 = std::env::var("CKPT_S3_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(20);
    let spawn = || {
        Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--ignored",
                "--exact",
                "child_saves_deduplicated_to_s3_forever",
                "--nocapture",
            ])
            .env(CHILD_ENDPOINT, server.endpoint())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("child")
    };
    // A killed trainer leaves its locks (S3 has no leases): broken as `ckpt unlock --force`.
    let unlock = || {
        for dir in [PREFIX.to_owned(), format!("{PREFIX}/blobs")] {
            storage.force_break_lock(&dir).expect("unlock");
        }
    };
    // How long the first save takes here: the kills land between a fifth of that and twice
    // it after a start.
    let started = Instant::now();
    let mut child = spawn();
    while committed(&storage).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no save completed in 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let one_save = started.elapsed();
    child.kill().expect("kill");
    child.wait().expect("reaped");
    unlock();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let (mut checked, mut most) = (0usize, 0usize);
    for kill in 0..kills {
        let mut child = spawn();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = one_save / 5 + one_save.mul_f64((state % 1000) as f64 / 500.0);
        std::thread::sleep(delay);
        // Stopped by its process id, with SIGKILL: no destructor runs.
        child.kill().expect("kill");
        child.wait().expect("reaped");
        unlock();
        let folders = committed(&storage);
        most = most.max(folders.len());
        for folder in folders {
            let checkpoint = ShardedCheckpoint::open(&storage, &folder)
                .unwrap_or_else(|e| panic!("kill {kill}: {folder} does not open: {e}"));
            for name in checkpoint.tensors().keys() {
                checkpoint
                    .read(name)
                    .unwrap_or_else(|e| panic!("kill {kill}: {folder}: {name}: {e}"));
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no checkpoint was ever committed");
    println!(
        "{kills} kills (first save took {one_save:?}); {checked} tensors read back, up to {most} checkpoints at once"
    );
}
