//! Training a model spread over processes, with `ModelCheckpoint` saving sharded
//! checkpoints: shared by `examples/sharded_training.rs` and `tests/sharded_training.rs`.
//!
//! The model is a linear map `y = (x * scale) · W + b` from 16 inputs to 8 outputs. `W` and
//! `b` are sliced by output columns across the ranks, so each rank trains its own columns
//! without talking to the others (its outputs' loss depends on its columns only); `scale`,
//! the inputs' normalisation, is replicated; SGD's velocities are sliced like their
//! parameters; and each rank keeps its own generator (per-rank state), whose noise it adds
//! to its gradients, so that resuming exactly needs every rank's own state back.
#![allow(dead_code)]

use model_checkpoint::store::Name;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use model_checkpoint::restore::restore_sharded;
use model_checkpoint::sharded::Ranks;
use model_checkpoint::store::Storage;
use model_checkpoint::TensorSource;
use model_checkpoint::{
    Callback, Checkpointable, Context, Dtype, Error, HostTensor, Logs, ModelCheckpoint,
    NamedTensor, Placement, Slice, TrainingState,
};

pub const INPUTS: usize = 16;
pub const OUTPUTS: usize = 8;
const BATCHES: u64 = 5;

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn uniform(state: &mut u64) -> f32 {
    (next(state) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

/// This rank's part of the model, and its training state.
pub struct LinearSlice {
    ranks: Ranks,
    cols: usize,
    w: Vec<f32>,
    b: Vec<f32>,
    scale: Vec<f32>,
    w_velocity: Vec<f32>,
    b_velocity: Vec<f32>,
    rng: u64,
    epoch: u64,
    step: u64,
}

impl LinearSlice {
    /// The starting model: every rank builds the global weights alike and keeps its columns.
    pub fn new(ranks: Ranks) -> Self {
        let cols = OUTPUTS / ranks.world_size;
        let mut init = 0x5eed_u64;
        let global: Vec<f32> = (0..INPUTS * OUTPUTS).map(|_| uniform(&mut init)).collect();
        let first = ranks.rank * cols;
        let w = (0..INPUTS)
            .flat_map(|i| global[i * OUTPUTS + first..i * OUTPUTS + first + cols].to_vec())
            .collect();
        LinearSlice {
            ranks,
            cols,
            w,
            b: vec![0.0; cols],
            scale: (0..INPUTS).map(|i| 1.0 / (1.0 + i as f32)).collect(),
            w_velocity: vec![0.0; INPUTS * cols],
            b_velocity: vec![0.0; cols],
            rng: 0x9e37_79b9 + ranks.rank as u64,
            epoch: 0,
            step: 0,
        }
    }

    fn slice(&self, global_shape: Vec<usize>, col_dim: usize) -> Placement {
        let mut offsets = vec![0; global_shape.len()];
        offsets[col_dim] = self.ranks.rank * self.cols;
        Placement::Sliced(Slice {
            global_shape,
            offsets,
        })
    }

    /// One step of SGD with momentum on a batch every rank draws alike, plus this rank's
    /// noise; returns this rank's loss.
    fn step(&mut self, batch: u64) -> f32 {
        let mut data = 0xda7a_u64 ^ (self.epoch << 20) ^ batch;
        let x: Vec<f32> = (0..INPUTS)
            .map(|i| uniform(&mut data) * self.scale[i])
            .collect();
        let first = self.ranks.rank * self.cols;
        let mut loss = 0.0;
        for c in 0..self.cols {
            let target = ((first + c) as f32 * 0.1).sin();
            let y: f32 = (0..INPUTS)
                .map(|i| x[i] * self.w[i * self.cols + c])
                .sum::<f32>()
                + self.b[c];
            let err = y - target;
            loss += err * err;
            let noise = uniform(&mut self.rng) * 1e-3;
            for (i, xi) in x.iter().enumerate() {
                let g = 2.0 * err * xi + noise;
                let v = &mut self.w_velocity[i * self.cols + c];
                *v = 0.9 * *v + g;
                self.w[i * self.cols + c] -= 0.05 * *v;
            }
            self.b_velocity[c] = 0.9 * self.b_velocity[c] + 2.0 * err;
            self.b[c] -= 0.05 * self.b_velocity[c];
        }
        self.step += 1;
        loss / self.cols as f32
    }

    pub fn weights_vec(&self) -> &[f32] {
        &self.w
    }
}

fn f32s(stored: &dyn TensorSource, name: &str, shape: &[usize]) -> Result<Vec<f32>, Error> {
    let bytes = stored.read(name, Dtype::F32, shape)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

impl Checkpointable for LinearSlice {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        Ok(vec![
            NamedTensor::new("W", HostTensor::from_f32(vec![INPUTS, self.cols], &self.w)),
            NamedTensor::new("b", HostTensor::from_f32(vec![self.cols], &self.b)),
            NamedTensor::new("scale", HostTensor::from_f32(vec![INPUTS], &self.scale)),
        ])
    }

    fn training_state(&self) -> Result<TrainingState<'_>, Error> {
        let mut state = TrainingState {
            tensors: vec![
                NamedTensor::new(
                    "optimizer/W/velocity",
                    HostTensor::from_f32(vec![INPUTS, self.cols], &self.w_velocity),
                ),
                NamedTensor::new(
                    "optimizer/b/velocity",
                    HostTensor::from_f32(vec![self.cols], &self.b_velocity),
                ),
                NamedTensor::new(
                    "rng",
                    HostTensor::new(Dtype::U64, vec![1], self.rng.to_le_bytes().to_vec())?,
                ),
            ],
            ..TrainingState::default()
        };
        state.document.loop_state = Some(model_checkpoint::store::LoopState {
            epoch: self.epoch,
            step: self.step,
            ..Default::default()
        });
        Ok(state)
    }

    fn shard_layout(&self) -> BTreeMap<String, Placement> {
        BTreeMap::from([
            ("W".to_owned(), self.slice(vec![INPUTS, OUTPUTS], 1)),
            ("b".to_owned(), self.slice(vec![OUTPUTS], 0)),
            (
                "optimizer/W/velocity".to_owned(),
                self.slice(vec![INPUTS, OUTPUTS], 1),
            ),
            (
                "optimizer/b/velocity".to_owned(),
                self.slice(vec![OUTPUTS], 0),
            ),
            ("rng".to_owned(), Placement::PerRank),
        ])
    }

    fn restore_weights(&mut self, stored: &dyn TensorSource) -> Result<(), Error> {
        self.w = f32s(stored, "W", &[INPUTS, self.cols])?;
        self.b = f32s(stored, "b", &[self.cols])?;
        self.scale = f32s(stored, "scale", &[INPUTS])?;
        Ok(())
    }

    fn restore_training_state(
        &mut self,
        stored: &dyn TensorSource,
        document: &model_checkpoint::store::TrainingDocument,
    ) -> Result<(), Error> {
        self.w_velocity = f32s(stored, "optimizer/W/velocity", &[INPUTS, self.cols])?;
        self.b_velocity = f32s(stored, "optimizer/b/velocity", &[self.cols])?;
        let rng = stored.read("rng", Dtype::U64, &[1])?;
        self.rng = u64::from_le_bytes(rng.try_into().unwrap_or([0; 8]));
        let state = document.loop_state.clone().unwrap_or_default();
        self.epoch = state.epoch;
        self.step = state.step;
        Ok(())
    }
}

/// One rank's training: `epochs` epochs in all (resuming from the newest sharded checkpoint
/// under `dir` with `resume`), saving a sharded full checkpoint every epoch and keeping the
/// last two. Returns the model.
pub fn train(
    storage: Arc<dyn Storage>,
    dir: &str,
    ranks: Ranks,
    run_id: &str,
    epochs: u64,
    resume: bool,
    barrier: Option<Arc<dyn model_checkpoint::sharded::Barrier>>,
) -> Result<LinearSlice, Error> {
    let template = format!("{dir}/step-{{epoch:03d}}");
    let settings = Settings {
        storage,
        template: &template,
        ranks,
        run_id,
        barrier,
    };
    train_with(settings, epochs, resume, &|cb| cb)
}

/// Where and how [`train_with`] saves.
pub struct Settings<'a> {
    pub storage: Arc<dyn Storage>,
    pub template: &'a str,
    pub ranks: Ranks,
    pub run_id: &'a str,
    pub barrier: Option<Arc<dyn model_checkpoint::sharded::Barrier>>,
}

/// [`train`] with any template, and the callback's options changed by `configure`.
pub fn train_with(
    settings: Settings<'_>,
    epochs: u64,
    resume: bool,
    configure: &dyn Fn(ModelCheckpoint) -> ModelCheckpoint,
) -> Result<LinearSlice, Error> {
    let Settings {
        storage,
        template,
        ranks,
        run_id,
        barrier,
    } = settings;
    let model = RefCell::new(LinearSlice::new(ranks));
    let mut checkpoint = ModelCheckpoint::new(template)
        .storage(storage.clone())
        .sharded(ranks)
        .with_run_id(run_id)
        .monitor("loss")
        .keep_last(2)
        .verbose(1);
    if let Some(barrier) = barrier {
        checkpoint = checkpoint.shard_barrier(barrier);
    }
    let mut checkpoint = configure(checkpoint);
    if resume {
        let latest = checkpoint.latest()?;
        restore_sharded(
            &*storage,
            &latest,
            ranks,
            &mut *model.borrow_mut(),
            &mut [&mut checkpoint],
        )?;
    }
    {
        let view = model.borrow();
        checkpoint.on_train_begin(&Logs::new(), &mut Context::new(&*view))?;
    }
    let start = model.borrow().epoch;
    for epoch in start..epochs {
        {
            let view = model.borrow();
            checkpoint.on_epoch_begin(epoch as usize, &Logs::new(), &mut Context::new(&*view))?;
        }
        let mut loss = 0.0;
        for batch in 0..BATCHES {
            loss += model.borrow_mut().step(batch);
        }
        model.borrow_mut().epoch = epoch + 1;
        let logs = Logs::from([("loss", f64::from(loss / BATCHES as f32))]);
        let view = model.borrow();
        let step = view.step;
        checkpoint.on_epoch_end(
            epoch as usize,
            &logs,
            &mut Context::new(&*view).with_global_step(step),
        )?;
    }
    {
        let view = model.borrow();
        checkpoint.on_train_end(&Logs::new(), &mut Context::new(&*view))?;
    }
    Ok(model.into_inner())
}

/// Runs `world` ranks of this test binary's child test `test` (which calls [`train`] with
/// the `CKPT_TRAIN_*` settings), with `env` added; whether all succeeded.
pub fn run_ranks(
    test: &str,
    env: &[(&str, String)],
    dir: &str,
    world: usize,
    epochs: u64,
    resume: bool,
) -> bool {
    run_ranks_each(test, env, dir, world, epochs, resume)
        .iter()
        .all(|ok| *ok)
}

/// [`run_ranks`], with whether each rank succeeded, in rank order.
pub fn run_ranks_each(
    test: &str,
    env: &[(&str, String)],
    dir: &str,
    world: usize,
    epochs: u64,
    resume: bool,
) -> Vec<bool> {
    spawn_ranks(test, env, dir, world, epochs, resume)
        .into_iter()
        .map(|mut child| child.wait().expect("wait").success())
        .collect()
}

/// Starts the ranks of [`run_ranks`] and returns them running.
pub fn spawn_ranks(
    test: &str,
    env: &[(&str, String)],
    dir: &str,
    world: usize,
    epochs: u64,
    resume: bool,
) -> Vec<std::process::Child> {
    (0..world)
        .map(|rank| {
            let mut cmd = std::process::Command::new(std::env::current_exe().expect("exe"));
            cmd.args(["--ignored", "--exact", test, "--quiet"])
                .envs(env.iter().map(|(k, v)| (*k, v)))
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("CKPT_TRAIN_DIR", dir)
                .env("CKPT_TRAIN_EPOCHS", epochs.to_string())
                .stdout(std::process::Stdio::null());
            if resume {
                cmd.env("CKPT_TRAIN_RESUME", "1");
            }
            cmd.spawn().expect("child")
        })
        .collect()
}

/// The child's side of [`run_ranks`]: trains as its settings say, in `storage`.
pub fn child(storage: Arc<dyn Storage>) {
    let dir = std::env::var("CKPT_TRAIN_DIR").expect("dir");
    let epochs: u64 = std::env::var("CKPT_TRAIN_EPOCHS")
        .expect("epochs")
        .parse()
        .expect("epochs");
    let resume = std::env::var_os("CKPT_TRAIN_RESUME").is_some();
    let ranks = Ranks::from_env().expect("ranks").expect("RANK");
    // Background saves, and how long the commit waits, when the parent asks.
    let background = std::env::var_os("CKPT_TRAIN_BACKGROUND").is_some();
    let timeout = std::env::var("CKPT_TRAIN_COMMIT_TIMEOUT_MS")
        .ok()
        .map(|ms| std::time::Duration::from_millis(ms.parse().expect("timeout")));
    let template = format!("{dir}/step-{{epoch:03d}}");
    let settings = Settings {
        storage,
        template: &template,
        ranks,
        run_id: "5eed",
        barrier: None,
    };
    train_with(settings, epochs, resume, &|cb| {
        let cb = cb.background(background);
        match timeout {
            Some(t) => cb.shard_commit_timeout(t),
            None => cb,
        }
    })
    .expect("train");
}

/// Every global tensor of the sharded checkpoint in `dir`, and every rank's own generator.
pub fn contents(storage: &dyn Storage, dir: &str) -> Vec<(String, Vec<u8>)> {
    let checkpoint = model_checkpoint::sharded::ShardedCheckpoint::open(storage, &Name::from(dir))
        .expect("open");
    let mut out: Vec<(String, Vec<u8>)> = checkpoint
        .tensors()
        .keys()
        .map(|name| {
            (
                name.clone(),
                checkpoint.read(name).expect("read").into_data(),
            )
        })
        .collect();
    for rank in 0..checkpoint.world_size() {
        let shard = checkpoint.shard(rank).expect("shard");
        out.push((
            format!("rank {rank} rng"),
            shard.read("__training__/rng").expect("rng"),
        ));
    }
    out
}

/// A barrier of threads standing in for an MPI or NCCL one (whose names every rank passes
/// in the same order).
pub struct Threads(pub std::sync::Barrier);

impl model_checkpoint::sharded::Barrier for Threads {
    fn wait(&self, _name: &str, _timeout: std::time::Duration) -> Result<(), Error> {
        self.0.wait();
        Ok(())
    }
}
