//! Keras's `ModelCheckpoint` inside burn's own `Learner`: best-only saving on `val_loss`,
//! decided as Keras decides and printed as Keras prints, one verified file per save holding
//! the weights and the optimizer's state; then the best weights reloaded into a fresh model.
//!
//! Run with `cargo run --release -p model-checkpoint-burn --example burn_learner`.

use burn::optim::AdamConfig;
use burn::train::logger::InMemoryMetricLogger;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};
use model_checkpoint::store::{CheckpointFile, Verify};
use model_checkpoint::ModelCheckpoint;
use model_checkpoint_burn::{
    cpu, cpu_autodiff, data_loader, load_weights, BurnStep, LearnerCheckpoint, Mlp, Quiet,
};
use model_checkpoint_fit::{Dataset, Trainer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("ckpt-burn-learner-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (train, validation) = Dataset::digits().scaled().shuffled(0).split_last(0.2)?;

    let checkpoint = LearnerCheckpoint::new(
        ModelCheckpoint::new(dir.join("best.safetensors"))
            .monitor("val_loss")
            .save_best_only(true)
            .verbose(1),
    )?;
    let training = SupervisedTraining::new(
        dir.join("burn"),
        data_loader(&train, 32, Some(0))?,
        data_loader(&validation, 64, None)?,
    )
    .num_epochs(8)
    // LossMetric gives val_loss (and loss); AccuracyMetric val_accuracy, as a fraction.
    .metrics((AccuracyMetric::new(), LossMetric::new()))
    .with_metric_logger(InMemoryMetricLogger::new())
    .with_application_logger(None)
    .renderer(Box::new(Quiet));
    let model = Mlp::new(&[64, 32, 10], 0, &cpu_autodiff())?;
    let result =
        checkpoint
            .install(training)?
            .launch(Learner::new(model, AdamConfig::new().init(), 3e-3));
    if let Some(error) = result.error {
        return Err(format!("training failed: {error}").into());
    }

    let best = checkpoint
        .with_callback(|cb| cb.best().as_f64())
        .unwrap_or(f64::NAN);
    let file = CheckpointFile::open(&dir.join("best.safetensors"), Verify::Full)?;
    let model = load_weights(Mlp::new(&[64, 32, 10], 1, &cpu())?, &file)?;
    let step = BurnStep::new(model, AdamConfig::new().init(), 0.0, cpu());
    let logs = Trainer::new(step).evaluate(&validation, 64)?;
    let accuracy = logs.get("accuracy").and_then(|v| v.as_f64()).unwrap_or(0.0);
    println!("\nbest val_loss {best:.4}; reloaded best weights: val_accuracy {accuracy:.4}");
    std::fs::remove_dir_all(&dir)?;
    if accuracy < 0.9 {
        return Err(format!("val_accuracy {accuracy:.4} is below 0.9").into());
    }
    Ok(())
}
