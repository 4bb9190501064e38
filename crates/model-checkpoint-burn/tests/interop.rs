//! Files interchange between frameworks: the same MLP built in burn and in candle from the
//! same seed has the same names, layouts and initial values; weights trained in burn load
//! into candle's model and score the same, and the other way round; Python's `safetensors`
//! reads burn's files.

use std::path::Path;

use burn::optim::AdamConfig;
use model_checkpoint::store::{CheckpointFile, Verify};
use model_checkpoint::{Checkpointable, ModelCheckpoint};
use model_checkpoint_burn::{cpu, cpu_autodiff, load_weights, BurnStep, Mlp, TrainingParts};
use model_checkpoint_candle::{Adam, CandleStep, Model, ParamsAdam};
use model_checkpoint_fit::{Dataset, FitOptions, Trainer};

mod common;
#[path = "../../model-checkpoint-candle/tests/python/mod.rs"]
mod python;

const SIZES: [usize; 3] = [64, 32, 10];

fn split() -> (Dataset, Dataset) {
    Dataset::digits()
        .scaled()
        .shuffled(2)
        .split_last(0.2)
        .expect("split")
}

/// Name → bytes of every tensor of a checkpointable.
fn tensors(model: &dyn Checkpointable) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = model
        .weights()
        .expect("weights")
        .into_iter()
        .map(|t| (t.name.clone(), common::bytes_of(&t)))
        .collect();
    out.sort();
    out
}

fn burn_parts(model: Mlp) -> TrainingParts<Mlp> {
    TrainingParts::new(model, AdamConfig::new().init())
}

fn candle_accuracy(model: Model, data: &Dataset) -> f64 {
    let optimizer = Adam::new(model.named_vars(), ParamsAdam::default()).expect("adam");
    let logs = Trainer::new(CandleStep::new(model, optimizer))
        .evaluate(data, 64)
        .expect("evaluate");
    logs.get("accuracy")
        .and_then(|v| v.as_f64())
        .expect("accuracy")
}

fn burn_accuracy(model: Mlp, data: &Dataset) -> f64 {
    let step = BurnStep::new(model, AdamConfig::new().init(), 1e-3, cpu());
    let logs = Trainer::new(step).evaluate(data, 64).expect("evaluate");
    logs.get("accuracy")
        .and_then(|v| v.as_f64())
        .expect("accuracy")
}

fn weights_only(dir: &Path) -> ModelCheckpoint {
    ModelCheckpoint::new(dir.join("w.{epoch:02d}.safetensors")).save_weights_only(true)
}

#[test]
fn the_same_seed_builds_the_same_mlp_in_both_frameworks() {
    let burn = Mlp::new(&SIZES, 7, &cpu()).expect("burn mlp");
    let candle = Model::mlp(&SIZES, 7).expect("candle mlp");
    assert_eq!(tensors(&burn_parts(burn)), tensors(&candle));
}

#[test]
fn burn_weights_load_into_candle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (train, val) = split();
    let device = cpu_autodiff();
    let model = Mlp::new(&SIZES, 1, &device).expect("mlp");
    let mut trainer = Trainer::new(BurnStep::new(model, AdamConfig::new().init(), 3e-3, device));
    trainer
        .fit(
            &train,
            &FitOptions::new(3).verbose(0),
            &mut [&mut weights_only(dir.path())],
        )
        .expect("fit");
    let path = dir.path().join("w.03.safetensors");

    let candle = Model::mlp(&SIZES, 99).expect("candle mlp");
    candle
        .load_weights(&path)
        .expect("candle loads burn's file");
    assert_eq!(tensors(&candle), tensors(trainer.step().parts()));
    let (b, c) = (
        burn_accuracy(trainer.step().model().clone(), &val),
        candle_accuracy(candle, &val),
    );
    println!("burn-trained weights: val_accuracy {b:.4} in burn, {c:.4} in candle");
    assert!((b - c).abs() <= 1.0 / val.len() as f64, "{b} vs {c}");
    assert!(b > 0.8, "{b}");
}

#[test]
fn candle_weights_load_into_burn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (train, val) = split();
    let model = Model::mlp(&SIZES, 1).expect("mlp");
    let optimizer = Adam::new(model.named_vars(), ParamsAdam::default().lr(3e-3)).expect("adam");
    let mut trainer = Trainer::new(CandleStep::new(model, optimizer));
    trainer
        .fit(
            &train,
            &FitOptions::new(3).verbose(0),
            &mut [&mut weights_only(dir.path())],
        )
        .expect("fit");
    let file =
        CheckpointFile::open(&dir.path().join("w.03.safetensors"), Verify::Full).expect("open");

    let burn = load_weights(Mlp::new(&SIZES, 99, &cpu()).expect("mlp"), &file)
        .expect("burn loads candle's file");
    assert_eq!(
        tensors(&burn_parts(burn.clone())),
        tensors(trainer.step().model())
    );
    let c = trainer
        .evaluate(&val, 64)
        .expect("evaluate")
        .get("accuracy")
        .and_then(|v| v.as_f64())
        .expect("accuracy");
    let b = burn_accuracy(burn, &val);
    println!("candle-trained weights: val_accuracy {c:.4} in candle, {b:.4} in burn");
    assert!((b - c).abs() <= 1.0 / val.len() as f64, "{b} vs {c}");
}

#[test]
fn python_reads_burn_files() {
    let Some(python) = python::python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (train, _) = split();
    let device = cpu_autodiff();
    let model = Mlp::new(&SIZES, 1, &device).expect("mlp");
    let mut trainer = Trainer::new(BurnStep::new(model, AdamConfig::new().init(), 3e-3, device));
    let mut full = ModelCheckpoint::new(dir.path().join("full.safetensors"));
    trainer
        .fit(
            &train,
            &FitOptions::new(1).verbose(0),
            &mut [&mut weights_only(dir.path()), &mut full],
        )
        .expect("fit");
    python::assert_same_as_python(&python, &dir.path().join("w.01.safetensors"));
    // The full checkpoint too: the optimizer's moments under their parameters' paths.
    python::assert_same_as_python(&python, &dir.path().join("full.safetensors"));
    let theirs = python::read_in_python(&python, &dir.path().join("full.safetensors"));
    assert!(
        theirs["tensors"]
            .as_object()
            .expect("tensors")
            .contains_key("__training__/optimizer/dense_0.weight/momentum.moment_1"),
        "{theirs}"
    );
}
