//! `ModelCheckpoint` in a training loop of your own, without `fit`: the callback's hooks
//! called per batch and per epoch, full checkpoints with retention, then an exact resume in
//! a fresh process-like state with one call (`restore_latest`).
//!
//! Run with `cargo run --release -p model-checkpoint-candle --example hand_written_loop`.

use candle_core::backprop::GradStore;
use model_checkpoint::restore::restore_latest;
use model_checkpoint::{Callback, Context, Logs, Mode, ModelCheckpoint};
use model_checkpoint_candle::{batch_tensors, Adam, Dataset, Model, ParamsAdam, TrainingParts};

const EPOCHS: usize = 6;
const BATCH: usize = 64;

fn checkpoint(dir: &std::path::Path) -> ModelCheckpoint {
    ModelCheckpoint::new(dir.join("loop.{epoch:02d}-{val_accuracy:.4f}.safetensors"))
        .monitor("val_accuracy")
        .mode(Mode::Max)
        .keep_last(2)
        .verbose(1)
}

fn fresh_parts(seed: u64) -> Result<TrainingParts, Box<dyn std::error::Error>> {
    let model = Model::mlp(&[64, 32, 10], seed)?;
    let optimizer = Adam::new(model.named_vars(), ParamsAdam::default().lr(0.01))?;
    Ok(TrainingParts::new(model, optimizer))
}

/// One epoch of plain candle training, with the callback's hooks where Keras calls them.
fn train_epoch(
    parts: &mut TrainingParts,
    cb: &mut ModelCheckpoint,
    train: &Dataset,
    validation: &Dataset,
    epoch: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    cb.on_epoch_begin(epoch, &Logs::new(), &mut Context::new(&*parts))?;
    let order: Vec<usize> = (0..train.len()).collect();
    let mut loss_sum = 0.0;
    for (batch, indices) in order.chunks(BATCH).enumerate() {
        let (x, y) = batch_tensors(&train.batch(indices), parts.model.device())?;
        let logits = parts.model.forward(&x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let grads: GradStore = loss.backward()?;
        parts.optimizer.step(&grads)?;
        let step = parts
            .values
            .get("step")
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
            + 1;
        parts.values.insert("step".into(), step.into());
        loss_sum += f64::from(loss.to_scalar::<f32>()?) * indices.len() as f64;
        let logs = Logs::from([(
            "loss",
            loss_sum / ((batch + 1) * BATCH).min(train.len()) as f64,
        )]);
        let mut ctx = Context::new(&*parts);
        ctx.global_step = step;
        cb.on_train_batch_end(batch, &logs, &mut ctx)?;
    }
    let accuracy = accuracy(&parts.model, validation)?;
    let logs = Logs::from([
        ("loss", loss_sum / train.len() as f64),
        ("val_accuracy", accuracy),
    ]);
    cb.on_epoch_end(epoch, &logs, &mut Context::new(&*parts))?;
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
        let mut cb = checkpoint(&dir);
        cb.on_train_begin(&Logs::new(), &mut Context::new(&parts))?;
        for epoch in 0..EPOCHS / 2 {
            train_epoch(&mut parts, &mut cb, &train, &validation, epoch)?;
        }
        cb.on_train_end(&Logs::new(), &mut Context::new(&parts))?;
    }

    // A fresh start: one call restores the model, the optimizer, the loop's step counter and
    // the callback's best value, counters and run.
    let mut parts = fresh_parts(99)?;
    let mut cb = checkpoint(&dir);
    let restored = restore_latest(&dir, &mut parts, &mut [&mut cb])?;
    let epoch = restored.meta.epoch.unwrap_or(0) as usize;
    println!(
        "\nresumed from {} at epoch {} (step {})",
        restored.path.display(),
        epoch + 1,
        parts.values["step"]
    );
    cb.on_train_begin(&Logs::new(), &mut Context::new(&parts))?;
    let mut last = 0.0;
    for e in epoch..EPOCHS {
        last = train_epoch(&mut parts, &mut cb, &train, &validation, e)?;
    }
    cb.on_train_end(&Logs::new(), &mut Context::new(&parts))?;
    println!("final val_accuracy {last:.4}");
    let kept = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .count();
    println!("checkpoints kept (keep_last 2, plus the best): {kept}");
    std::fs::remove_dir_all(&dir)?;
    if last < 0.85 {
        return Err(format!("val_accuracy {last:.4} is below 0.85").into());
    }
    Ok(())
}
