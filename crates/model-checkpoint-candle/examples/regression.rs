//! A regression model with `fit` and `ModelCheckpoint(monitor="val_loss")`: mean squared
//! error as the loss, mean absolute error as a metric, the best weights kept and reloaded.
//!
//! ```python
//! model.compile(optimizer="adam", loss="mse", metrics=["mae"])
//! model.fit(x, y, epochs=40, validation_split=0.2,
//!           callbacks=[keras.callbacks.ModelCheckpoint("best.weights.h5", monitor="val_loss",
//!                                                      save_best_only=True, save_weights_only=True)])
//! ```
//!
//! Run with `cargo run --release -p model-checkpoint-candle --example regression`.

use model_checkpoint::{Direction, ModelCheckpoint};
use model_checkpoint_candle::{
    Adam, CandleStep, Dataset, FitOptions, Loss, Metric, Model, ParamsAdam, Trainer,
};

const EPOCHS: usize = 40;

/// y = sin(2x) + x/2 on x in [-2, 2], with a little deterministic noise.
fn data() -> Result<Dataset, Box<dyn std::error::Error>> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let n = 1000;
    let (mut x, mut y) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let v = uniform() * 4.0 - 2.0;
        x.push(v as f32);
        y.push(((2.0 * v).sin() + v / 2.0 + (uniform() - 0.5) * 0.05) as f32);
    }
    Ok(Dataset::regression(x, 1, y, 1)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("ckpt-regression-{}", std::process::id()));
    let best = dir.join("best.weights.safetensors");
    let data = data()?;

    let model = Model::mlp(&[1, 32, 32, 1], 0)?;
    let optimizer = Adam::new(model.named_vars(), ParamsAdam::default().lr(0.01))?;
    let mut trainer = Trainer::new(
        CandleStep::new(model, optimizer)
            .compile(Loss::MeanSquaredError, &[Metric::MeanAbsoluteError]),
    );
    let mut checkpoint = ModelCheckpoint::new(&best)
        .monitor("val_loss")
        .save_best_only(true)
        .save_weights_only(true)
        .verbose(1);
    let options = FitOptions::new(EPOCHS).validation_split(0.2).verbose(0);
    let history = trainer.fit(&data, &options, &mut [&mut checkpoint])?;

    let (recorded_epoch, recorded) = history
        .best("val_loss", Direction::Minimize)
        .ok_or("no val_loss was logged")?;
    let fresh = Model::mlp(&[1, 32, 32, 1], 1)?;
    fresh.load_weights(&best)?;
    let evaluator = Trainer::new(
        CandleStep::new(fresh, Adam::new(vec![], ParamsAdam::default())?)
            .compile(Loss::MeanSquaredError, &[Metric::MeanAbsoluteError]),
    );
    let (_, validation) = data.split_last(0.2)?;
    let logs = evaluator.evaluate(&validation, 32)?;
    let reloaded = logs
        .get("loss")
        .and_then(|v| v.as_f64())
        .unwrap_or(f64::NAN);
    println!(
        "\nbest val_loss {recorded:.5} (epoch {}); reloaded best weights: val_loss {reloaded:.5}, val_mae {:.5}",
        recorded_epoch + 1,
        logs.get("mae").and_then(|v| v.as_f64()).unwrap_or(f64::NAN)
    );
    std::fs::remove_dir_all(&dir)?;
    // The reloaded file is the best epoch's: it scores what that epoch logged.
    if (reloaded - recorded).abs() > 1e-5 * recorded.abs().max(1e-3) {
        return Err(
            format!("reloaded {reloaded} differs from the recorded best {recorded}").into(),
        );
    }
    if recorded > 0.02 {
        return Err(format!("val_loss {recorded} did not go below 0.02").into());
    }
    Ok(())
}
