//! Keras's ModelCheckpoint example, in Rust:
//!
//! ```python
//! model.compile(loss=..., optimizer=..., metrics=["accuracy"])
//! checkpoint_filepath = "/tmp/ckpt/checkpoint.model.keras"
//! model_checkpoint_callback = keras.callbacks.ModelCheckpoint(
//!     filepath=checkpoint_filepath,
//!     monitor="val_accuracy",
//!     mode="max",
//!     save_best_only=True)
//! model.fit(epochs=EPOCHS, callbacks=[model_checkpoint_callback])
//! model.load_weights(checkpoint_filepath)
//! ```
//!
//! Run with `cargo run --release -p model-checkpoint-candle --example keras_example`.

use model_checkpoint::{Mode, ModelCheckpoint};
use model_checkpoint_candle::{Adam, CandleStep, Dataset, FitOptions, Model, ParamsAdam, Trainer};

const EPOCHS: usize = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join("ckpt-keras-example");
    let checkpoint_filepath = dir.join("checkpoint.weights.safetensors");

    // The bundled digits, shuffled once so that the held-out 20% is a fair sample.
    let data = Dataset::digits().scaled().shuffled(0);
    let model = Model::mlp(&[64, 64, 10], 0)?;
    let optimizer = Adam::new(model.named_vars(), ParamsAdam::default())?;
    let mut trainer = Trainer::new(CandleStep::new(model, optimizer));

    let mut model_checkpoint_callback = ModelCheckpoint::new(&checkpoint_filepath)
        .monitor("val_accuracy")
        .mode(Mode::Max)
        .save_best_only(true)
        .save_weights_only(true)
        .verbose(1);
    let options = FitOptions::new(EPOCHS).validation_split(0.2).verbose(2);
    let history = trainer.fit(&data, &options, &mut [&mut model_checkpoint_callback])?;

    // The model's weights (that are considered the best) are loaded into the model.
    trainer.step().model().load_weights(&checkpoint_filepath)?;
    let (_, validation) = data.split_last(0.2)?;
    let logs = trainer.evaluate(&validation, 32)?;
    println!(
        "\nbest val_accuracy during training: {:?}; after load_weights: {:?}",
        history
            .best("val_accuracy", model_checkpoint::Direction::Maximize)
            .map(|(_, v)| v),
        logs.get("accuracy").and_then(|v| v.as_f64()),
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
