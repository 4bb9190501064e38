//! `ModelCheckpoint` in a training loop of your own, without `fit`: two callbacks (full
//! checkpoints with retention, and the best weights) in one `CallbackList`, whose hooks the
//! loop calls per batch and per epoch with the global step, then an exact resume in a fresh
//! process-like state with one call (`restore_latest`).
//!
//! One list, not each callback's hooks one by one: the list lets every callback see a hook
//! before any saves, so each full checkpoint holds every callback's state as of the end of
//! that hook (the best value of the best-only callback included), whatever their order.
//!
//! Run with `cargo run --release -p model-checkpoint-candle --example hand_written_loop`.

use candle_core::backprop::GradStore;
use model_checkpoint::restore::restore_latest;
use model_checkpoint::{Callback, CallbackList, Context, Logs, Mode, ModelCheckpoint};
use model_checkpoint_candle::{batch_tensors, Adam, Dataset, Model, ParamsAdam, TrainingParts};

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
fn step(parts: &TrainingParts) -> u64 {
    parts.loop_state.step
}

fn fresh_parts(seed: u64) -> Result<TrainingParts, Box<dyn std::error::Error>> {
    let model = Model::mlp(&[64, 32, 10], seed)?;
    let optimizer = Adam::new(model.named_vars(), ParamsAdam::default().lr(0.01))?;
    Ok(TrainingParts::new(model, optimizer))
}

/// One epoch of plain candle training, with the callbacks' hooks where Keras calls them,
/// each given the global step.
fn train_epoch(
    parts: &mut TrainingParts,
    callbacks: &mut CallbackList<'_>,
    train: &Dataset,
    validation: &Dataset,
    epoch: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    callbacks.on_epoch_begin(
        epoch,
        &Logs::new(),
        &mut Context::new(&*parts).with_global_step(step(parts)),
    )?;
    let order: Vec<usize> = (0..train.len()).collect();
    let mut loss_sum = 0.0;
    for (batch, indices) in order.chunks(BATCH).enumerate() {
        let (x, y) = batch_tensors(&train.batch(indices), parts.model.device())?;
        let logits = parts.model.forward(&x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let grads: GradStore = loss.backward()?;
        parts.optimizer.step(&grads)?;
        parts.loop_state.step += 1;
        loss_sum += f64::from(loss.to_scalar::<f32>()?) * indices.len() as f64;
        let logs = Logs::from([(
            "loss",
            loss_sum / ((batch + 1) * BATCH).min(train.len()) as f64,
        )]);
        let mut ctx = Context::new(&*parts).with_global_step(step(parts));
        callbacks.on_train_batch_end(batch, &logs, &mut ctx)?;
    }
    let accuracy = accuracy(&parts.model, validation)?;
    let logs = Logs::from([
        ("loss", loss_sum / train.len() as f64),
        ("val_accuracy", accuracy),
    ]);
    let mut ctx = Context::new(&*parts).with_global_step(step(parts));
    callbacks.on_epoch_end(epoch, &logs, &mut ctx)?;
    Ok(accuracy)
}

fn accuracy(model: &Model, data: &Dataset) -> Result<f64, Box<dyn std::error::Error>> {
    let indices: Vec<usize> = (0..data.len()).collect();
    let (x, y) = batch_tensors(&data.batch(&indices), model.device())?;
    let predicted = model.forward(&x)?.argmax(1)?;
    let correct = predicted
        .eq(&y)?
        .to_dtype(candle_core::DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(f64::from(correct) / data.len() as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("ckpt-hand-written-loop-{}", std::process::id()));
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

    // A fresh start: one call restores the model, the optimizer, the loop's step counter and
    // both callbacks' best values, counters and run.
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
    let kept = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .count();
    println!("files kept (keep_last 2, and the best weights): {kept}");
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
