//! `ModelCheckpoint::from_keras`: the callback built from Keras's loose arguments
//! ([`KerasArgs`]), in the order and with the checks of the chosen Keras's constructor (the
//! rules of `checkpoint/keras/` say which).

use super::ModelCheckpoint;
use crate::checkpoint::keras::{KerasArgs, KerasValue};
use crate::policy::{Mode, SaveFreq};
use crate::Error;

impl ModelCheckpoint {
    /// Builds the callback as the constructor of [`KerasArgs::keras`] does, in its order.
    ///
    /// tf.keras 2 (KERAS-SPEC.md §1.1): the `period` warning, then the unknown-mode warning,
    /// then `save_freq` validation; other keywords are ignored.
    ///
    /// Keras 3 (`SPEC.md` §18): a keyword it does not take (`period`, `options`,
    /// [`KerasArgs::other_keywords`]) first, then the unknown-mode warning (mode quoted),
    /// then `save_freq`, then the filepath's extension (`.weights.h5` for weights only,
    /// `.keras` or `.h5` for a full model).
    ///
    /// ```
    /// use model_checkpoint::{KerasArgs, KerasVersion, ModelCheckpoint, Value};
    ///
    /// let mut args = KerasArgs::new("best.weights.h5");
    /// args.keras = KerasVersion::Keras3;
    /// args.save_weights_only = true;
    /// let checkpoint = ModelCheckpoint::from_keras(args)?;
    /// assert_eq!(checkpoint.best(), Value::None); // Keras 3 starts from None
    ///
    /// let mut bad = KerasArgs::new("best.h5");
    /// bad.keras = KerasVersion::Keras3;
    /// bad.period = Some(2);
    /// let err = ModelCheckpoint::from_keras(bad).unwrap_err();
    /// assert_eq!(err.keras_exception(), Some("TypeError"));
    /// # Ok::<(), model_checkpoint::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSaveFreq`] (tf.keras 2) with Keras's text for a `save_freq` that is
    /// not `"epoch"`, an int or a bool (`"3"` and `2.0` are rejected, as in Keras); under
    /// Keras 3, [`Error::Keras`] for that and for each refusal above.
    pub fn from_keras(args: KerasArgs) -> Result<Self, Error> {
        let rules = args.keras.rules();
        rules.check_keywords(&args)?;
        let mut cb = ModelCheckpoint::new(&args.filepath)
            .keras(args.keras)
            .monitor(args.monitor)
            .verbose(args.verbose)
            .save_best_only(args.save_best_only)
            .save_weights_only(args.save_weights_only)
            .options(args.options.unwrap_or_default());
        cb = cb.float64_scalars(args.float64_scalars);
        for (name, direction) in args.compiled_metrics {
            cb = cb.compiled_metric(name, direction);
        }
        if let Some(threshold) = args.initial_value_threshold {
            cb = cb.initial_value_threshold(threshold);
        }
        if let Some(period) = args.period {
            log::warn!(target: "model_checkpoint", "{}", rules.period_deprecated());
            cb.set_period(period);
        }
        let (mode, warning) = match &args.mode {
            // Keras's lenient reading (KERAS-SPEC.md §1.1 step 6): anything but "auto", "min"
            // or "max" (case sensitive) becomes auto, with a warning; never an error.
            KerasValue::Str(s) => match s.parse::<Mode>() {
                Ok(mode) => (mode, None),
                Err(_) => (Mode::Auto, Some(rules.unknown_mode(s))),
            },
            other => (Mode::Auto, Some(rules.unknown_mode(&other.to_string()))),
        };
        if let Some(warning) = warning {
            log::warn!(target: "model_checkpoint", "{warning}");
        }
        let save_freq = match &args.save_freq {
            KerasValue::Str(s) if s == "epoch" => SaveFreq::Epoch,
            KerasValue::Int(n) => SaveFreq::Batches(*n),
            // bool is a subclass of int in Python: True saves every batch, as does False.
            KerasValue::Bool(b) => SaveFreq::Batches(i64::from(*b)),
            other => return Err(rules.invalid_save_freq(other)),
        };
        rules.check_filepath(&args.filepath, args.save_weights_only)?;
        cb.set_mode_and_freq(mode, save_freq);
        Ok(cb)
    }
}
