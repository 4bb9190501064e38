//! `ModelCheckpoint` inside burn's own `Learner`: Keras's decisions (best only on
//! `val_loss`) driving burn's epoch-level checkpointing, one verified file per save, Keras's
//! messages on standard output; and a resume through the `Learner` that continues exactly.
#![cfg(feature = "burn-learner")]

use model_checkpoint::store::Name;
use std::path::Path;
use std::process::Command;

use burn::optim::AdamConfig;
use burn::train::logger::InMemoryMetricLogger;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, LearningResult, SupervisedTraining};
use model_checkpoint::restore::restore;
use model_checkpoint::store::{CheckpointFile, LocalFolder, Meta, Verify};
use model_checkpoint::ModelCheckpoint;
use model_checkpoint_burn::{
    cpu, cpu_autodiff, data_loader, LearnerCheckpoint, Mlp, Quiet, TrainingParts,
};
use model_checkpoint_fit::Dataset;

mod common;

const CHILD: &str = "MODEL_CHECKPOINT_BURN_LEARNER_CHILD";
/// Only a val_loss below this is saved: the first epochs do not reach it.
const THRESHOLD: f64 = 0.5;

fn split() -> (Dataset, Dataset) {
    Dataset::digits()
        .scaled()
        .shuffled(1)
        .split_last(0.2)
        .expect("split")
}

/// burn's training of the digits MLP, with `checkpoint` installed; no shuffling, so that a
/// resumed run sees the batches a straight one does.
fn launch(
    dir: &Path,
    checkpoint: &LearnerCheckpoint,
    learner: Learner<Mlp>,
    epochs: usize,
    from: Option<usize>,
) -> LearningResult<Mlp> {
    let (train, val) = split();
    let training = SupervisedTraining::new(
        dir.join("burn"),
        data_loader(&train, 32, None).expect("train loader"),
        data_loader(&val, 64, None).expect("valid loader"),
    )
    .num_epochs(epochs)
    .metrics((AccuracyMetric::new(), LossMetric::new()))
    .with_metric_logger(InMemoryMetricLogger::new())
    .with_application_logger(None)
    .renderer(Box::new(Quiet));
    let training = match from {
        Some(epoch) => training.checkpoint(epoch),
        None => training,
    };
    checkpoint
        .install(training)
        .expect("install")
        .launch(learner)
}

fn learner(seed: u64) -> Learner<Mlp> {
    let model = Mlp::new(&[64, 32, 10], seed, &cpu_autodiff()).expect("model");
    Learner::new(model, AdamConfig::new().init(), 3e-3)
}

/// The child: trains under the `Learner` with best-only saving on `val_loss`, printing
/// Keras's messages; then reports the best value and the reloaded model's accuracy.
#[test]
fn learner_child() {
    let Ok(dir) = std::env::var(CHILD) else {
        return; // run by learner_saves_best_only_with_keras_messages
    };
    let dir = Path::new(&dir);
    let checkpoint = LearnerCheckpoint::new(
        ModelCheckpoint::new(dir.join("best.safetensors"))
            .monitor("val_loss")
            .save_best_only(true)
            .initial_value_threshold(THRESHOLD)
            .verbose(1),
    )
    .expect("an epoch-level callback");
    let result = launch(dir, &checkpoint, learner(0), 6, None);
    assert!(result.error.is_none(), "{:?}", result.error);
    let best = checkpoint
        .with_callback(|cb| cb.best().as_f64())
        .expect("best");
    println!("\nBEST {best}");
}

#[test]
fn learner_saves_best_only_with_keras_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "learner_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD, dir.path())
        .output()
        .expect("child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Keras's messages, one per epoch: nothing saved until val_loss beats the initial
    // threshold, then every improvement saved.
    let saves: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(": val_loss improved from "))
        .collect();
    let skips: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(": val_loss did not improve from "))
        .collect();
    assert!(
        skips
            .first()
            .is_some_and(|l| *l == "Epoch 1: val_loss did not improve from 0.50000"),
        "{stdout}"
    );
    assert!(
        saves
            .first()
            .is_some_and(|l| l.contains(": val_loss improved from 0.50000 to ")),
        "{stdout}"
    );
    assert_eq!(
        saves.len() + skips.len(),
        6,
        "one message per epoch:\n{stdout}"
    );
    let best_path = dir.path().join("best.safetensors");
    assert!(
        saves
            .iter()
            .all(|l| l.ends_with(&format!("saving model to {}", best_path.display()))),
        "{stdout}"
    );

    // One verified file, with the best val_loss in it, its weights and optimizer state.
    let best: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BEST "))
        .and_then(|v| v.parse().ok())
        .expect("best printed");
    let file = CheckpointFile::open(&best_path, Verify::Full).expect("verifies");
    let names: Vec<&str> = file.tensors().map(|t| t.name).collect();
    assert!(
        names.contains(&"dense_0.weight") && names.contains(&"dense_1.bias"),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("__training__/optimizer/dense_0.weight/")),
        "one file holds the optimizer's state too: {names:?}"
    );
    let meta = Meta::from_info(file.info()).expect("metadata");
    assert_eq!(
        meta.logs.get("val_loss").and_then(|v| v.as_f64()),
        Some(best)
    );
    assert!(best < THRESHOLD);
    let entries = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .count();
    assert_eq!(entries, 1, "best only: one file");

    // The best weights reload into a fresh model and classify the held-out digits.
    let mut parts = TrainingParts::new(
        Mlp::new(&[64, 32, 10], 9, &cpu()).expect("model"),
        AdamConfig::new().init(),
    );
    restore(&file, &mut parts, &mut []).expect("restore");
    let (_, val) = split();
    let accuracy = accuracy(&parts.model, &val);
    println!("reloaded best: val_accuracy {accuracy:.4}");
    assert!(accuracy >= 0.9, "{accuracy}");
}

fn accuracy(model: &Mlp, data: &Dataset) -> f64 {
    use model_checkpoint_burn::Classifier;
    let indices: Vec<usize> = (0..data.len()).collect();
    let batch = data.batch(&indices);
    let x = burn::tensor::Tensor::<2>::from_data(
        burn::tensor::TensorData::new(batch.features, [batch.rows, batch.width]),
        &cpu(),
    );
    // The backend picks argmax's integer type (Flex: I32): read it as i64 whichever.
    let predicted: Vec<i64> = model
        .forward(x)
        .argmax(1)
        .into_data()
        .iter::<i64>()
        .collect();
    let model_checkpoint_fit::Targets::Labels(labels) = batch.targets else {
        panic!("labels")
    };
    let correct = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| **p == i64::from(**l))
        .count();
    correct as f64 / labels.len() as f64
}

fn weights(model: &Mlp) -> Vec<(String, Vec<u8>)> {
    use model_checkpoint::Checkpointable;
    let parts = TrainingParts::new(model.clone(), AdamConfig::new().init());
    parts
        .weights()
        .expect("weights")
        .into_iter()
        .map(|t| (t.name.clone(), common::bytes_of(&t)))
        .collect()
}

#[test]
fn learner_resume_continues_exactly() {
    let full = |dir: &Path| {
        LearnerCheckpoint::new(
            ModelCheckpoint::new(dir.join("full.{epoch:02d}.safetensors")).with_run_id("b1"),
        )
        .expect("an epoch-level callback")
    };
    let a = tempfile::tempdir().expect("tempdir");
    let straight = launch(a.path(), &full(a.path()), learner(0), 4, None);
    assert!(straight.error.is_none(), "{:?}", straight.error);

    let b = tempfile::tempdir().expect("tempdir");
    let first = launch(b.path(), &full(b.path()), learner(0), 2, None);
    assert!(first.error.is_none(), "{:?}", first.error);
    // A new process: fresh model (other weights, other parameter ids) and optimizer.
    let checkpoint = full(b.path());
    let model = Mlp::new(&[64, 32, 10], 5, &cpu_autodiff()).expect("model");
    let (model, optimizer, epoch) = checkpoint
        .resume(
            &LocalFolder::new(b.path()),
            &Name::top(),
            model,
            AdamConfig::new().init(),
        )
        .expect("resume");
    assert_eq!(epoch, 2);
    let resumed = launch(
        b.path(),
        &checkpoint,
        Learner::new(model, optimizer, 3e-3),
        4,
        Some(epoch),
    );
    assert!(resumed.error.is_none(), "{:?}", resumed.error);
    assert_eq!(
        weights(&resumed.model),
        weights(&straight.model),
        "final weights identical"
    );
    for name in ["full.03.safetensors", "full.04.safetensors"] {
        let x = CheckpointFile::open(&a.path().join(name), Verify::Full).expect("straight");
        let y = CheckpointFile::open(&b.path().join(name), Verify::Full).expect("resumed");
        for t in x.tensors() {
            assert_eq!(
                x.read(t.name).expect("x"),
                y.read(t.name).expect("y"),
                "{name}: {}",
                t.name
            );
        }
    }
}

#[test]
fn a_callback_that_acts_per_batch_is_refused() {
    for cb in [
        ModelCheckpoint::new("w.safetensors").save_freq(model_checkpoint::SaveFreq::Batches(10)),
        ModelCheckpoint::new("w.safetensors").every_n_steps(100),
    ] {
        let err = LearnerCheckpoint::new(cb).err().expect("refused");
        assert!(err.to_string().contains("once per epoch"), "{err}");
    }
}

#[test]
fn a_second_install_of_one_learner_checkpoint_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (train, val) = split();
    let training = || {
        SupervisedTraining::<Mlp>::new(
            dir.path().join("burn"),
            data_loader(&train, 32, None).expect("train loader"),
            data_loader(&val, 64, None).expect("valid loader"),
        )
    };
    let checkpoint = LearnerCheckpoint::new(ModelCheckpoint::new(dir.path().join("w.safetensors")))
        .expect("callback");
    assert!(checkpoint.install(training()).is_ok());
    // A clone shares the callback, so it is the same checkpointing.
    for again in [checkpoint.clone(), checkpoint] {
        let Err(err) = again.install(training()) else {
            panic!("a second install was accepted");
        };
        assert!(
            err.to_string().contains("already installed")
                && err
                    .to_string()
                    .contains("one LearnerCheckpoint per Learner"),
            "{err}"
        );
    }
}
