//! `fit` on its own, over a step that uses no tensor framework: a linear model in plain
//! `f32` trained by SGD with momentum, whose velocity is optimizer state. What every adapter
//! relies on is checked here once: training, Keras's hook order, full checkpoints, exact
//! resume (from a file and from a folder's newest), and the refusals.

use std::sync::{Arc, Mutex};

use model_checkpoint::store::{TrainingDocument, OPTIMIZER_TENSORS};
use model_checkpoint::{
    Callback, Checkpointable, Context, Dtype, HookResult, HostTensor, Logs, ModelCheckpoint,
    NamedTensor, SnapshotFence, TensorSource, TrainingState,
};
use model_checkpoint_fit::{Batch, BatchLogs, Dataset, Error, FitOptions, Step, Targets, Trainer};

/// `y = w·x + b`, mean squared error, SGD with momentum.
#[derive(Clone, Debug, PartialEq)]
struct Linear {
    w: Vec<f32>,
    b: f32,
    velocity: Vec<f32>,
    learning_rate: f32,
}

impl Linear {
    fn new(width: usize) -> Self {
        Linear {
            w: vec![0.0; width],
            b: 0.0,
            velocity: vec![0.0; width + 1],
            learning_rate: 0.05,
        }
    }

    fn predict(&self, x: &[f32]) -> f32 {
        self.w.iter().zip(x).map(|(w, x)| w * x).sum::<f32>() + self.b
    }

    fn bits(&self) -> Vec<u32> {
        self.w
            .iter()
            .chain([&self.b])
            .chain(&self.velocity)
            .map(|v| v.to_bits())
            .collect()
    }
}

thread_local! {
    /// How many times this thread built a `Linear`'s training state.
    static STATES_BUILT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Checkpointable for Linear {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        Ok(vec![
            NamedTensor::new("w", HostTensor::from_f32(vec![self.w.len()], &self.w)),
            NamedTensor::new("b", HostTensor::from_f32(vec![1], &[self.b])),
        ])
    }

    fn training_state(&self) -> Result<TrainingState<'_>, model_checkpoint::Error> {
        STATES_BUILT.with(|n| n.set(n.get() + 1));
        let mut state = TrainingState {
            tensors: vec![NamedTensor::new(
                format!("{OPTIMIZER_TENSORS}velocity"),
                HostTensor::from_f32(vec![self.velocity.len()], &self.velocity),
            )],
            ..Default::default()
        };
        state.document.optimizer = Some(serde_json::json!({
            "kind": "sgd-momentum",
            "learning_rate": self.learning_rate,
        }));
        Ok(state)
    }

    fn restore_weights(
        &mut self,
        stored: &dyn TensorSource,
    ) -> Result<(), model_checkpoint::Error> {
        self.w = f32s(&stored.read("w", Dtype::F32, &[self.w.len()])?);
        self.b = f32s(&stored.read("b", Dtype::F32, &[1])?)[0];
        Ok(())
    }

    fn restore_training_state(
        &mut self,
        tensors: &dyn TensorSource,
        document: &TrainingDocument,
    ) -> Result<(), model_checkpoint::Error> {
        let kind = document.optimizer.as_ref().and_then(|o| o["kind"].as_str());
        if kind != Some("sgd-momentum") {
            return Err(model_checkpoint::Error::BadTrainingState {
                path: tensors.path().clone(),
                reason: format!("written by optimizer {kind:?}"),
            });
        }
        let n = self.velocity.len();
        self.velocity =
            f32s(&tensors.read(&format!("{OPTIMIZER_TENSORS}velocity"), Dtype::F32, &[n])?);
        Ok(())
    }
}

impl Step for Linear {
    fn metrics(&self) -> Vec<&'static str> {
        vec![]
    }

    fn train_step(&mut self, batch: &Batch, fence: &SnapshotFence) -> Result<BatchLogs, Error> {
        let logs = self.test_step(batch)?;
        let Targets::Values { values, .. } = &batch.targets else {
            return Err(Error::options("a regression step needs values"));
        };
        let mut grad = vec![0.0f32; self.w.len() + 1];
        for (row, t) in batch.features.chunks(batch.width).zip(values) {
            let e = 2.0 * (self.predict(row) - t) / batch.rows as f32;
            for (g, x) in grad.iter_mut().zip(row) {
                *g += e * x;
            }
            grad[self.w.len()] += e;
        }
        fence.wait();
        for (v, g) in self.velocity.iter_mut().zip(&grad) {
            *v = 0.9 * *v + g;
        }
        for (w, v) in self.w.iter_mut().zip(&self.velocity) {
            *w -= self.learning_rate * v;
        }
        self.b -= self.learning_rate * self.velocity[self.w.len()];
        Ok(logs)
    }

    fn test_step(&self, batch: &Batch) -> Result<BatchLogs, Error> {
        let Targets::Values { values, .. } = &batch.targets else {
            return Err(Error::options("a regression step needs values"));
        };
        let loss: f64 = batch
            .features
            .chunks(batch.width)
            .zip(values)
            .map(|(row, t)| f64::from(self.predict(row) - t).powi(2))
            .sum();
        Ok(BatchLogs {
            loss: loss / batch.rows as f64,
            samples: batch.rows,
            sums: vec![],
        })
    }
}

/// 64 samples of `y = 2·x0 − x1 + 0.5`.
fn data() -> Dataset {
    let mut features = Vec::new();
    let mut targets = Vec::new();
    for i in 0..64 {
        let (x0, x1) = ((i % 8) as f32 / 8.0, (i / 8) as f32 / 8.0);
        features.extend([x0, x1]);
        targets.push(2.0 * x0 - x1 + 0.5);
    }
    Dataset::regression(features, 2, targets, 1).expect("data")
}

fn options(epochs: usize) -> FitOptions<'static> {
    FitOptions::new(epochs)
        .batch_size(8)
        .validation_split(0.25)
        .seed(11)
        .verbose(0)
}

#[test]
fn fit_trains_a_framework_free_step_and_saves_what_it_learned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut trainer = Trainer::new(Linear::new(2));
    let mut checkpoint = ModelCheckpoint::new(dir.path().join("e{epoch:02d}.safetensors"));
    let history = trainer
        .fit(&data(), &options(30), &mut [&mut checkpoint])
        .expect("fit");
    let losses = history.metric("loss");
    let (first, last) = (losses[0].expect("loss"), losses[29].expect("loss"));
    assert!(last < first / 10.0, "loss went from {first} to {last}");
    assert!(history.metric("val_loss")[29].is_some());
    // 48 training samples in batches of 8: six optimizer steps an epoch.
    assert_eq!(trainer.global_step(), 30 * 6);
    let file = model_checkpoint::store::CheckpointFile::open(
        &dir.path().join("e30.safetensors"),
        model_checkpoint::store::Verify::Full,
    )
    .expect("open");
    assert_eq!(f32s(&file.read("w").expect("w")), trainer.step().w);
    let document = file
        .training_state()
        .expect("state")
        .expect("a full checkpoint");
    assert!(document.fit.is_some() && document.optimizer.is_some());
    assert!(document
        .callbacks
        .contains_key(&checkpoint.state_key().expect("key")));
}

#[test]
fn a_full_save_builds_the_training_state_once_and_the_check_before_it_does_not() {
    // Checking that a model has training state must not build it: for burn that is a round
    // trip of the whole optimizer through its record format.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut trainer = Trainer::new(Linear::new(2));
    let mut checkpoint = ModelCheckpoint::new(dir.path().join("e{epoch:02d}.safetensors"));
    STATES_BUILT.with(|n| n.set(0));
    trainer
        .fit(&data(), &options(3), &mut [&mut checkpoint])
        .expect("fit");
    assert_eq!(STATES_BUILT.with(std::cell::Cell::get), 3, "one per save");
    assert!(dir.path().join("e03.safetensors").exists());
}

/// A trainer after `epochs` epochs in one `fit`, saving full checkpoints every epoch: what a
/// resumed run must end with.
fn straight_run(epochs: usize) -> Trainer<Linear> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut straight = Trainer::new(Linear::new(2));
    let mut cb = ModelCheckpoint::new(dir.path().join("e{epoch}.safetensors"));
    straight
        .fit(&data(), &options(epochs), &mut [&mut cb])
        .expect("fit");
    straight
}

#[test]
fn a_resumed_fit_ends_bit_for_bit_where_a_straight_one_does() {
    let straight = straight_run(6);

    // Stopped after 3 epochs; a new process (a fresh trainer and callback) resumes.
    let dir = tempfile::tempdir().expect("tempdir");
    let template = dir.path().join("e{epoch}.safetensors");
    {
        let mut first = Trainer::new(Linear::new(2));
        let mut cb = ModelCheckpoint::new(&template);
        first
            .fit(&data(), &options(3), &mut [&mut cb])
            .expect("fit");
    }
    let mut resumed = Trainer::new(Linear::new(2));
    let mut cb = ModelCheckpoint::new(&template);
    let at = resumed
        .resume(dir.path().join("e3.safetensors"), &mut [&mut cb])
        .expect("resume");
    assert_eq!((at.epoch, at.batches_done, at.global_step), (3, 0, 18));
    assert!(at
        .restored_callbacks
        .contains(&cb.state_key().expect("key")));
    resumed
        .fit(&data(), &options(6), &mut [&mut cb])
        .expect("fit");
    assert_eq!(resumed.step().bits(), straight.step().bits());
    assert_eq!(resumed.global_step(), straight.global_step());
}

#[test]
fn resume_latest_starts_fresh_on_an_empty_folder_and_takes_the_newest_that_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("ck");
    let mut trainer = Trainer::new(Linear::new(2));
    let mut cb = ModelCheckpoint::new(folder.join("e{epoch}.safetensors"));
    assert_eq!(
        trainer
            .resume_latest(&folder, &mut [&mut cb])
            .expect("none"),
        None
    );
    trainer
        .fit(&data(), &options(3), &mut [&mut cb])
        .expect("fit");

    // The newest is damaged: the one before it is taken, with a warning.
    let newest = folder.join("e3.safetensors");
    let mut bytes = std::fs::read(&newest).expect("read");
    let n = bytes.len();
    bytes[n - 2] ^= 0xff;
    std::fs::write(&newest, bytes).expect("write");
    let mut again = Trainer::new(Linear::new(2));
    let mut cb = ModelCheckpoint::new(folder.join("e{epoch}.safetensors"));
    let at = again
        .resume_latest(&folder, &mut [&mut cb])
        .expect("resume")
        .expect("a checkpoint");
    assert_eq!(at.path, folder.join("e2.safetensors"));
    assert_eq!(at.epoch, 2);
}

#[test]
fn a_requeued_job_resumes_deduplicated_checkpoints_as_it_does_files() {
    let straight = straight_run(6);

    // Three jobs, each a new process that resumes from whatever the last one left (a
    // deduplicated checkpoint is a folder), trains two more epochs, and stops.
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("ck");
    let mut last = None;
    for (job, epochs) in [2, 4, 6].into_iter().enumerate() {
        let mut trainer = Trainer::new(Linear::new(2));
        let mut cb = ModelCheckpoint::new(folder.join("e{epoch:02d}"))
            .dedup(true)
            .keep_last(2);
        let at = trainer
            .resume_latest(&folder, &mut [&mut cb])
            .expect("resume");
        assert_eq!(
            at.as_ref().map(|r| (r.path.clone(), r.epoch)),
            (job > 0).then(|| (folder.join(format!("e{:02}", 2 * job)).into(), 2 * job)),
            "job {job}"
        );
        trainer
            .fit(&data(), &options(epochs), &mut [&mut cb])
            .expect("fit");
        last = Some(trainer);
    }
    let last = last.expect("three jobs");
    assert_eq!(last.step().bits(), straight.step().bits());
    assert_eq!(last.global_step(), straight.global_step());
    // `resume` of the folder by name takes it as `resume_latest` did.
    let mut named = Trainer::new(Linear::new(2));
    let resumed = named
        .resume(folder.join("e06"), &mut [])
        .expect("a deduplicated checkpoint's folder resumes");
    assert_eq!(
        (resumed.epoch, resumed.global_step),
        (6, straight.global_step())
    );
    assert_eq!(named.step().bits(), straight.step().bits());
    // A folder that is no checkpoint is said to be one (not in Keras's words for a save
    // into a folder).
    let err = Trainer::new(Linear::new(2))
        .resume(&folder, &mut [])
        .expect_err("a folder");
    assert!(
        err.to_string()
            .contains("ck is a folder, not a checkpoint file"),
        "{err}"
    );
}

#[test]
fn a_resume_with_other_options_or_another_optimizer_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("e{epoch}.safetensors");
    let mut trainer = Trainer::new(Linear::new(2));
    let mut cb = ModelCheckpoint::new(&path);
    trainer
        .fit(&data(), &options(1), &mut [&mut cb])
        .expect("fit");

    let mut other = Trainer::new(Linear::new(2));
    other
        .resume(dir.path().join("e1.safetensors"), &mut [])
        .expect("resume");
    let err = other
        .fit(&data(), &options(2).batch_size(4), &mut [])
        .expect_err("another batch size");
    assert!(err.to_string().contains("batch size 8 (now 4)"), "{err}");

    // A weights-only file does not resume.
    let weights = dir.path().join("w.safetensors");
    let mut cb = ModelCheckpoint::new(&weights).save_weights_only(true);
    trainer
        .fit(&data(), &options(1), &mut [&mut cb])
        .expect("fit");
    let err = Trainer::new(Linear::new(2))
        .resume(&weights, &mut [])
        .expect_err("weights only");
    assert!(err.to_string().contains("full"), "{err}");
}

/// Records every hook it sees.
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Callback for Recorder {
    fn on_train_begin(&mut self, _: &Logs, _: &mut Context<'_>) -> HookResult {
        self.push("train_begin".into())
    }
    fn on_epoch_begin(&mut self, epoch: usize, _: &Logs, _: &mut Context<'_>) -> HookResult {
        self.push(format!("epoch_begin {epoch}"))
    }
    fn on_train_batch_end(&mut self, batch: usize, _: &Logs, _: &mut Context<'_>) -> HookResult {
        self.push(format!("batch_end {batch}"))
    }
    fn on_test_begin(&mut self, _: &Logs, _: &mut Context<'_>) -> HookResult {
        self.push("test_begin".into())
    }
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, _: &mut Context<'_>) -> HookResult {
        let keys: Vec<&str> = logs.keys().collect();
        self.push(format!("epoch_end {epoch} {}", keys.join(",")))
    }
    fn on_train_end(&mut self, _: &Logs, _: &mut Context<'_>) -> HookResult {
        self.push("train_end".into())
    }
}

impl Recorder {
    fn push(&mut self, event: String) -> HookResult {
        self.0.lock().expect("lock").push(event);
        Ok(Default::default())
    }
}

#[test]
fn hooks_come_in_keras_order_with_keras_logs() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut recorder = Recorder(seen.clone());
    let mut trainer = Trainer::new(Linear::new(2));
    trainer
        .fit(&data(), &options(1), &mut [&mut recorder])
        .expect("fit");
    let seen = seen.lock().expect("lock").clone();
    let mut expected = vec!["train_begin".to_owned(), "epoch_begin 0".to_owned()];
    expected.extend((0..6).map(|b| format!("batch_end {b}")));
    expected.push("test_begin".into());
    expected.push("epoch_end 0 loss,val_loss".into());
    expected.push("train_end".into());
    assert_eq!(seen, expected);
}
