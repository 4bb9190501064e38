//! `ModelCheckpoint` in a burn training loop of your own: two callbacks (full checkpoints
//! with retention: weights and Adam's moments, under the parameters' paths; and the best
//! weights) in one `CallbackList`, whose hooks the loop calls per batch and per epoch with
//! the global step, then an exact resume into a freshly built model and optimizer with one
//! call (`restore_latest`).
//!
//! One list, not each callback's hooks one by one: the list lets every callback see a hook
//! before any saves, so each full checkpoint holds every callback's state as of the end of
//! that hook, whatever their order.
//!
//! Run with `cargo run --release -p model-checkpoint-burn --example burn_hand_written_loop`.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Int, Tensor, TensorData};
use model_checkpoint::restore::restore_latest;
use model_checkpoint::{Callback, CallbackList, Context, Logs, Mode, ModelCheckpoint};
use model_checkpoint_burn::{cpu_autodiff, Classifier, Mlp, TrainingParts};
use model_checkpoint_fit::{Batch, Dataset, Targets};

const EPOCHS: usize = 6;
const BATCH: usize = 64;

/// Full checkpoints every epoch, the last two kept.
fn every_epoch(dir: &std::path::Path) -> ModelCheckpoint {
    ModelCheckpoint::new(dir.join("loop.{epoch:02d}-{val_accuracy:.4f}.safetensors"))
        .monitor("val_accuracy")
        .mode(Mode::Max)
        .keep_last(2)
        .verbose(1)
}

/// The best weights so far, by validation accuracy.
fn best_weights(dir: &std::path::Path) -> ModelCheckpoint {
    ModelCheckpoint::new(dir.join("best.safetensors"))
        .monitor("val_accuracy")
        .mode(Mode::Max)
        .save_best_only(true)
        .save_weights_only(true)
        .verbose(1)
}

/// The loop's step counter, kept in the checkpoints with the rest.
fn step(parts: &TrainingParts<Mlp>) -> u64 {
    parts.loop_state.step
}

fn fresh_parts(seed: u64) -> Result<TrainingParts<Mlp>, Box<dyn std::error::Error>> {
    let model = Mlp::new(&[64, 32, 10], seed, &cpu_autodiff())?;
    Ok(TrainingParts::new(model, AdamConfig::new().init()))
}

/// A batch as burn tensors.
fn tensors(batch: &Batch) -> (Tensor<2>, Tensor<1, Int>) {
    let device = cpu_autodiff();
    let x = Tensor::from_data(
        TensorData::new(batch.features.clone(), [batch.rows, batch.width]),
        &device,
    );
    let labels: Vec<i64> = match &batch.targets {
        Targets::Labels(l) => l.iter().map(|&v| i64::from(v)).collect(),
        Targets::Values { .. } => unreachable!("the digits have labels"),
    };
    (
        x,
        Tensor::from_data(TensorData::new(labels, [batch.rows]), &device),
    )
}

/// One epoch of plain burn training, with the callbacks' hooks where Keras calls them, each
/// given the global step.
fn train_epoch(
    parts: &mut TrainingParts<Mlp>,
    callbacks: &mut CallbackList<'_>,
    train: &Dataset,
    validation: &Dataset,
    epoch: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut ctx = Context::new(&*parts).with_global_step(step(parts));
    callbacks.on_epoch_begin(epoch, &Logs::new(), &mut ctx)?;
    let order: Vec<usize> = (0..train.len()).collect();
    let loss_fn = CrossEntropyLossConfig::new().init(&cpu_autodiff());
    let mut loss_sum = 0.0;
    for (batch, indices) in order.chunks(BATCH).enumerate() {
        let (x, y) = tensors(&train.batch(indices));
        let loss = loss_fn.forward(parts.model.forward(x), y);
        loss_sum += f64::from(loss.clone().into_scalar::<f32>()) * indices.len() as f64;
        let grads = GradientsParams::from_grads(loss.backward(), &parts.model);
        parts.model = parts.optimizer.step(0.01, parts.model.clone(), grads);
        parts.loop_state.step += 1;
        let logs = Logs::from([(
            "loss",
            loss_sum / ((batch + 1) * BATCH).min(train.len()) as f64,
        )]);
        let mut ctx = Context::new(&*parts).with_global_step(step(parts));
        callbacks.on_train_batch_end(batch, &logs, &mut ctx)?;
    }
    let accuracy = accuracy(&parts.model, validation);
    let logs = Logs::from([
        ("loss", loss_sum / train.len() as f64),
        ("val_accuracy", accuracy),
    ]);
    let mut ctx = Context::new(&*parts).with_global_step(step(parts));
    callbacks.on_epoch_end(epoch, &logs, &mut ctx)?;
    Ok(accuracy)
}

fn accuracy(model: &Mlp, data: &Dataset) -> f64 {
    let indices: Vec<usize> = (0..data.len()).collect();
    let (x, y) = tensors(&data.batch(&indices));
    let correct: i64 = model
        .forward(x)
        .argmax(1)
        .reshape([data.len()])
        .equal(y)
        .int()
        .sum()
        .into_scalar();
    correct as f64 / data.len() as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("ckpt-burn-loop-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let data = Dataset::digits().scaled().shuffled(0);
    let (train, validation) = data.split_last(0.2)?;

    // Train half the epochs, as if the machine went away then.
    {
        let mut parts = fresh_parts(0)?;
        let (mut every, mut best) = (every_epoch(&dir), best_weights(&dir));
        let mut list: [&mut dyn Callback; 2] = [&mut every, &mut best];
        let mut callbacks = CallbackList::borrowed(&mut list);
        callbacks.on_train_begin(&Logs::new(), &mut Context::new(&parts))?;
        for epoch in 0..EPOCHS / 2 {
            train_epoch(&mut parts, &mut callbacks, &train, &validation, epoch)?;
        }
        callbacks.on_train_end(&Logs::new(), &mut Context::new(&parts))?;
    }

    // A fresh start (new parameter ids, other weights): one call restores the model, Adam's
    // moments by parameter path, the loop's step counter and both callbacks' best values.
    let mut parts = fresh_parts(99)?;
    let (mut every, mut best) = (every_epoch(&dir), best_weights(&dir));
    let restored = restore_latest(&dir, &mut parts, &mut [&mut every, &mut best])?;
    let epoch = restored.meta.epoch.unwrap_or(0) as usize;
    println!(
        "\nresumed from {} at epoch {} (step {}), best val_accuracy so far {:.4}",
        restored.path.display(),
        epoch + 1,
        step(&parts),
        best.best().as_f64().unwrap_or(f64::NAN)
    );
    let mut list: [&mut dyn Callback; 2] = [&mut every, &mut best];
    let mut callbacks = CallbackList::borrowed(&mut list);
    let mut ctx = Context::new(&parts).with_global_step(step(&parts));
    callbacks.on_train_begin(&Logs::new(), &mut ctx)?;
    let mut last = 0.0;
    for e in epoch..EPOCHS {
        last = train_epoch(&mut parts, &mut callbacks, &train, &validation, e)?;
    }
    let mut ctx = Context::new(&parts).with_global_step(step(&parts));
    callbacks.on_train_end(&Logs::new(), &mut ctx)?;
    println!("final val_accuracy {last:.4}");
    // Every checkpoint records where training stood: the newest one, the loop's final step.
    let newest = model_checkpoint::store::latest_full(&dir)?;
    let file = model_checkpoint::store::CheckpointFile::open(newest.as_path(), Default::default())?;
    let recorded = model_checkpoint::store::Meta::from_info(file.info())?.global_step;
    if recorded != Some(step(&parts)) {
        return Err(format!(
            "{} records step {recorded:?}, not {}",
            newest.display(),
            step(&parts)
        )
        .into());
    }
    std::fs::remove_dir_all(&dir)?;
    if last < 0.85 {
        return Err(format!("val_accuracy {last:.4} is below 0.85").into());
    }
    Ok(())
}
