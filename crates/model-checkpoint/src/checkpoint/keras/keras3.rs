//! Keras 3's rules (`keras` 3.15.1, `SPEC.md` §18). The Keras 3 traces in
//! `tests/fixtures/keras-traces-keras3/` check each.
//!
//! What differs from tf.keras 2, and why it is a rule here rather than a choice of ours:
//!
//! - `best` starts at `initial_value_threshold`, `None` by default (not ±inf), and
//!   `_is_improvement(current, None)` is true: the first value always improves, even NaN;
//!   once `best` is NaN nothing improves again (trace `nan_metric`).
//! - `monitor_op` is chosen in the first `on_epoch_end`, not by the constructor. In
//!   `mode="auto"` the name loses one `val_` prefix; `loss` minimises, and a compiled metric
//!   of that name with a known direction decides; there is no `acc`/`fmeasure` name rule.
//!   Otherwise a `ValueError` at every epoch end (traces `auto_acc`, `auto_auc`).
//! - Because of that, `save_best_only` with an integer `save_freq` compares against a `best`
//!   before any epoch end has chosen `monitor_op`: Python calls `None`, a `TypeError` (traces
//!   `fit_best_only_batch`, `save_freq_best_only`). This is reproduced, as an error.
//! - A monitor missing from the logs warns and then saves anyway.
//! - The folder is made only for a save, after the message; a missing model fails at the
//!   save, after the message; a second line follows every save.
//! - The constructor takes no `period`, `options` or other keyword (`TypeError`), spells its
//!   `save_freq` error differently, and wants `.weights.h5` (weights only) or `.keras`/`.h5`.
//! - The path is formatted before `logs or {}`, so a hook without logs fails.

use std::collections::BTreeMap;

use super::args::{KerasArgs, KerasValue};
use super::keras3_messages as messages;
use super::{KerasVersion, Rules};
use crate::error::KerasError;
use crate::policy::{Direction, Mode, Verdict};
use crate::{Error, Value};

/// Keras 3.
#[derive(Debug)]
pub(crate) struct Keras3;

fn refused(error: KerasError, message: String) -> Error {
    Error::Keras { error, message }
}

impl Rules for Keras3 {
    fn version(&self) -> KerasVersion {
        KerasVersion::Keras3
    }

    /// `MonitorCallback._set_monitor_op`: `min`/`max` as given; `auto` strips one `val_`
    /// prefix, takes `loss` as minimised, then lets a compiled metric of that exact name
    /// decide; anything else cannot be told.
    fn direction(
        &self,
        mode: Mode,
        monitor: &str,
        metrics: &BTreeMap<String, Direction>,
    ) -> Result<Direction, Error> {
        match mode {
            Mode::Min => Ok(Direction::Minimize),
            Mode::Max => Ok(Direction::Maximize),
            Mode::Auto => {
                let name = monitor.strip_prefix("val_").unwrap_or(monitor);
                let by_name = (name == "loss").then_some(Direction::Minimize);
                metrics.get(name).copied().or(by_name).ok_or_else(|| {
                    refused(
                        KerasError::UnknownDirection,
                        messages::unknown_direction(monitor),
                    )
                })
            }
        }
    }

    /// Chosen in `on_epoch_end` ("delay setup until the model's metrics are all built").
    fn lazy_monitor_op(&self) -> bool {
        true
    }

    /// `MonitorCallback(baseline=initial_value_threshold)`: `None` unless given.
    fn initial_best(&self, _direction: Direction, threshold: Option<Value>) -> Value {
        threshold.unwrap_or(Value::None)
    }

    /// `_should_save_model` with `_is_improvement`: a missing (or `None`) monitor saves; a
    /// `best` of `None` is always improved on; otherwise a strict comparison (`min_delta`
    /// is 0), which NaN never passes, or the `TypeError` of an unset `monitor_op`.
    fn judge(
        &self,
        save_best_only: bool,
        monitor_op: Option<Direction>,
        current: Option<Value>,
        best: Value,
        float64_scalars: bool,
    ) -> Result<Verdict, Error> {
        if !save_best_only {
            return Ok(Verdict::Save);
        }
        let Some(current) = current.filter(|v| *v != Value::None) else {
            return Ok(Verdict::MonitorMissing);
        };
        if best == Value::None {
            return Ok(Verdict::Improved {
                from: best,
                to: current,
            });
        }
        let Some(direction) = monitor_op else {
            return Err(refused(
                KerasError::MonitorOpNotSet,
                messages::monitor_op_not_set(),
            ));
        };
        // `ops.less` / `ops.greater` turn the Python floats into tensors first: float32
        // ones (unless the backend makes them float64, as JAX with x64 does), where values
        // equal in float32 tie, and a tie never improves.
        let scalar = |v: f64| if float64_scalars { v } else { as_float32(v) };
        let improves = match (current.as_f64(), best.as_f64()) {
            (Some(c), Some(b)) => direction.improves(scalar(c), scalar(b)),
            _ => false,
        };
        Ok(if improves {
            Verdict::Improved {
                from: best,
                to: current,
            }
        } else {
            Verdict::NotImproved { best }
        })
    }

    /// The folder is made only once `_should_save_model` said yes.
    fn folder_before_monitor(&self) -> bool {
        false
    }

    /// `self.model.save…` meets a missing model after the message.
    fn model_before_message(&self) -> bool {
        false
    }

    fn missing_monitor_saves(&self) -> bool {
        true
    }

    /// Keras 3 has no `period`.
    fn has_period(&self) -> bool {
        false
    }

    /// `file_utils.makedirs(dirname)` for any folder that does not exist.
    fn makes_folder(&self, _dir: &crate::store::Name) -> bool {
        true
    }

    /// `_get_file_path` runs before `logs or {}`.
    fn no_logs(&self, batch: Option<i64>) -> Option<Error> {
        let message = match batch {
            None => messages::no_logs_at_epoch(),
            Some(_) => messages::no_logs_at_batch(),
        };
        Some(refused(KerasError::NoLogs, message))
    }

    /// No `**kwargs`: `period`, `options` and any other keyword are a `TypeError`, before
    /// the constructor's body runs (so before the mode warning). Checked in this order:
    /// `period`, `options`, then [`KerasArgs::other_keywords`] as listed.
    fn check_keywords(&self, args: &KerasArgs) -> Result<(), Error> {
        let period = args.period.map(|_| "period");
        let options = args.options.as_ref().map(|_| "options");
        let others = args.other_keywords.iter().map(String::as_str);
        match period.into_iter().chain(options).chain(others).next() {
            Some(name) => Err(refused(
                KerasError::UnexpectedKeyword,
                messages::unexpected_keyword(name),
            )),
            None => Ok(()),
        }
    }

    fn invalid_save_freq(&self, value: &KerasValue) -> Error {
        refused(
            KerasError::InvalidSaveFreq,
            messages::invalid_save_freq(&value.to_string()),
        )
    }

    /// `.weights.h5` for weights only, `.keras` or `.h5` for a full model, whatever this
    /// crate then writes (safetensors) under that name.
    /// Keras's extension rule, with this engine's own format beside Keras's: a name
    /// ending in `.safetensors` is taken for weights and for full checkpoints alike (the
    /// file is safetensors whatever the name; on purpose, so that a port need not name a
    /// safetensors file `.weights.h5`).
    fn check_filepath(&self, filepath: &str, weights_only: bool) -> Result<(), Error> {
        if filepath.ends_with(".safetensors") {
            return Ok(());
        }
        let full_model_ext = filepath.ends_with(".keras") || filepath.ends_with(".h5");
        match weights_only {
            true if !filepath.ends_with(".weights.h5") => Err(refused(
                KerasError::FilepathExtension,
                messages::weights_extension(filepath),
            )),
            false if !full_model_ext => Err(refused(
                KerasError::FilepathExtension,
                messages::model_extension(filepath),
            )),
            _ => Ok(()),
        }
    }

    fn saving(&self, epoch: i64, path: &str) -> String {
        messages::saving(epoch, path)
    }

    fn improved(&self, epoch: i64, monitor: &str, from: Value, to: Value, path: &str) -> String {
        messages::improved(epoch, monitor, from, to, path)
    }

    fn not_improved(&self, epoch: i64, monitor: &str, best: Value) -> String {
        messages::not_improved(epoch, monitor, best)
    }

    fn finished_saving(&self, epoch: i64, path: &str) -> Option<String> {
        Some(messages::finished_saving(epoch, path))
    }

    fn monitor_missing(&self, monitor: &str) -> String {
        messages::monitor_missing(monitor)
    }

    fn unknown_mode(&self, mode: &str) -> String {
        messages::unknown_mode(mode)
    }

    /// Keras 3 has no `period`: [`Rules::check_keywords`] refuses it; the Rust builder's
    /// `period` is ignored under Keras 3, and says so.
    fn period_deprecated(&self) -> String {
        "`period` is not an argument of Keras 3's ModelCheckpoint: it is ignored".to_owned()
    }
}

/// `v` as Keras 3's `ops` see a Python float: rounded to float32 (to the nearest, ties to
/// even, as numpy casts; past float32's range, infinite).
fn as_float32(v: f64) -> f64 {
    f64::from(v as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(pairs: &[(&str, Direction)]) -> BTreeMap<String, Direction> {
        pairs.iter().map(|(n, d)| ((*n).to_owned(), *d)).collect()
    }

    #[test]
    fn auto_mode_knows_loss_and_compiled_metrics_only() {
        // Why: Keras 3 dropped tf.keras 2's name rule; only `loss` and the compiled
        // metrics' `_direction` decide (traces auto_loss, auto_val_accuracy, auto_acc).
        let compiled = metrics(&[("accuracy", Direction::Maximize)]);
        let d = |m: &str| Keras3.direction(Mode::Auto, m, &compiled);
        assert_eq!(d("loss").ok(), Some(Direction::Minimize));
        assert_eq!(d("val_loss").ok(), Some(Direction::Minimize));
        assert_eq!(d("val_accuracy").ok(), Some(Direction::Maximize));
        assert_eq!(d("accuracy").ok(), Some(Direction::Maximize));
        for unknown in [
            "acc",
            "val_acc",
            "auc",
            "fmeasure_x",
            "val_fmeasure",
            "val_ACC",
        ] {
            assert!(d(unknown).is_err(), "{unknown}");
        }
        // One prefix only, as `removeprefix`.
        assert!(d("val_val_loss").is_err());
        // A compiled metric named `loss` going up overrides the name rule, as in Keras.
        let odd = metrics(&[("loss", Direction::Maximize)]);
        assert_eq!(
            Keras3.direction(Mode::Auto, "val_loss", &odd).ok(),
            Some(Direction::Maximize)
        );
        // min and max need nothing.
        assert_eq!(
            Keras3.direction(Mode::Max, "auc", &BTreeMap::new()).ok(),
            Some(Direction::Maximize)
        );
        assert_eq!(
            Keras3
                .direction(Mode::Min, "val_acc", &BTreeMap::new())
                .ok(),
            Some(Direction::Minimize)
        );
    }

    #[test]
    fn unknown_direction_is_keras_value_error() {
        let err = Keras3
            .direction(Mode::Auto, "auc", &BTreeMap::new())
            .unwrap_err();
        assert_eq!(err.keras_exception(), Some("ValueError"));
        assert_eq!(
            err.to_string(),
            "ModelCheckpoint callback received monitor=auc, but Keras isn't able to automatically determine whether that metric should be maximized or minimized. Pass `mode='max'` in order to monitor based on the highest metric value, or pass `mode='min'` in order to use the lowest value."
        );
    }

    #[test]
    fn best_starts_at_none_and_the_first_value_improves_even_nan() {
        // Why: `best = baseline` (None) and `_is_improvement(x, None)` is True.
        let best = Keras3.initial_best(Direction::Minimize, None);
        assert_eq!(best, Value::None);
        assert_eq!(
            Keras3.initial_best(Direction::Minimize, Some(Value::Float(0.3))),
            Value::Float(0.3)
        );
        let nan = Value::Float(f64::NAN);
        let first = Keras3
            .judge(true, Some(Direction::Minimize), Some(nan), best, false)
            .ok();
        assert!(
            matches!(first, Some(Verdict::Improved { from: Value::None, to }) if to.as_f64().is_some_and(f64::is_nan))
        );
        // Once best is NaN, nothing improves (NaN compares false).
        for d in [Direction::Minimize, Direction::Maximize] {
            let v = Keras3
                .judge(true, Some(d), Some(Value::Float(0.1)), nan, false)
                .ok();
            assert!(matches!(v, Some(Verdict::NotImproved { .. })), "{d:?}");
        }
        // Ties do not improve.
        let tie = Keras3
            .judge(
                true,
                Some(Direction::Minimize),
                Some(Value::Float(0.5)),
                Value::Float(0.5),
                false,
            )
            .ok();
        assert_eq!(
            tie,
            Some(Verdict::NotImproved {
                best: Value::Float(0.5)
            })
        );
    }

    #[test]
    fn an_unset_monitor_op_fails_once_best_is_set() {
        // Why: Keras 3's bug with save_best_only and an integer save_freq: before the first
        // epoch end `monitor_op` is None, which the first comparison calls.
        let first = Keras3.judge(true, None, Some(Value::Float(0.4)), Value::None, false);
        assert!(matches!(first, Ok(Verdict::Improved { .. })));
        let err = Keras3
            .judge(
                true,
                None,
                Some(Value::Float(0.3)),
                Value::Float(0.4),
                false,
            )
            .unwrap_err();
        assert_eq!(err.keras_exception(), Some("TypeError"));
        assert_eq!(err.to_string(), "'NoneType' object is not callable");
        // Without save_best_only nothing is compared.
        assert_eq!(
            Keras3
                .judge(false, None, None, Value::Float(0.4), false)
                .ok(),
            Some(Verdict::Save)
        );
    }

    #[test]
    fn a_missing_monitor_saves_anyway() {
        assert_eq!(
            Keras3.judge(true, None, None, Value::None, false).ok(),
            Some(Verdict::MonitorMissing)
        );
        assert_eq!(
            Keras3
                .judge(true, None, Some(Value::None), Value::Float(1.0), false)
                .ok(),
            Some(Verdict::MonitorMissing)
        );
        assert!(Keras3.missing_monitor_saves());
        assert_eq!(
            Keras3.monitor_missing("val_loss"),
            "Can save best model only with val_loss available."
        );
    }

    #[test]
    fn messages_print_none_and_the_finished_line() {
        assert_eq!(
            Keras3.improved(
                0,
                "val_loss",
                Value::None,
                Value::Float(0.5),
                "b.weights.h5"
            ),
            "\nEpoch 1: val_loss improved from None to 0.50000, saving model to b.weights.h5"
        );
        assert_eq!(
            Keras3.not_improved(2, "val_loss", Value::Float(f64::NAN)),
            "\nEpoch 3: val_loss did not improve from nan"
        );
        assert_eq!(
            Keras3.finished_saving(1, "m.keras").as_deref(),
            Some("\nEpoch 2: finished saving model to m.keras")
        );
        assert_eq!(
            Keras3.unknown_mode("bogus"),
            "ModelCheckpoint mode 'bogus' is unknown, fallback to auto mode."
        );
    }

    #[test]
    fn constructor_refusals_use_keras_3_texts() {
        let mut args = KerasArgs::new("w.weights.h5");
        args.period = Some(2);
        let err = Keras3.check_keywords(&args).unwrap_err();
        assert_eq!(err.keras_exception(), Some("TypeError"));
        assert_eq!(
            err.to_string(),
            "ModelCheckpoint.__init__() got an unexpected keyword argument 'period'"
        );
        let mut args = KerasArgs::new("w.weights.h5");
        args.other_keywords.push("foo".into());
        assert!(Keras3
            .check_keywords(&args)
            .is_err_and(|e| e.to_string().ends_with("argument 'foo'")));
        assert!(Keras3.check_keywords(&KerasArgs::new("w.keras")).is_ok());

        let err = Keras3.invalid_save_freq(&KerasValue::Float(2.0));
        assert_eq!(err.keras_exception(), Some("ValueError"));
        assert_eq!(
            err.to_string(),
            "Unrecognized save_freq: 2.0. Expected save_freq are 'epoch' or integer values"
        );

        assert!(Keras3.check_filepath("w.weights.h5", true).is_ok());
        assert!(Keras3.check_filepath("m.keras", false).is_ok());
        assert!(Keras3.check_filepath("m.h5", false).is_ok());
        let err = Keras3.check_filepath("w.h5", true).unwrap_err();
        assert_eq!(err.to_string(), "When using `save_weights_only=True` in `ModelCheckpoint`, the filepath provided must end in `.weights.h5` (Keras weights format). Received: filepath=w.h5");
        let err = Keras3.check_filepath("m", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "The filepath provided must end in `.keras` (Keras model format). Received: filepath=m"
        );
    }

    #[test]
    fn no_logs_fail_formatting() {
        let at_epoch = Keras3.no_logs(None).map(|e| e.to_string());
        assert_eq!(
            at_epoch.as_deref(),
            Some("str.format() argument after ** must be a mapping, not NoneType")
        );
        assert!(Keras3.no_logs(Some(3)).is_some());
    }

    #[test]
    fn values_equal_in_float32_tie_as_keras_3_compares_them_unless_its_backend_uses_float64() {
        // A float32 accuracy of 36/60, widened, against a threshold of 0.6: tf.keras 2's
        // numpy compares the doubles (it improves); Keras 3's ops the float32 values.
        let widened = f64::from(0.6f32);
        assert!(widened > 0.6);
        let verdict = |rules: &dyn Rules, current: f64, best: f64, direction| {
            rules
                .judge(
                    true,
                    Some(direction),
                    Some(Value::Float(current)),
                    Value::Float(best),
                    false,
                )
                .expect("judged")
        };
        assert!(matches!(
            verdict(&Keras3, widened, 0.6, Direction::Maximize),
            Verdict::NotImproved { .. }
        ));
        assert!(matches!(
            verdict(&Keras3, 0.6, widened, Direction::Minimize),
            Verdict::NotImproved { .. }
        ));
        assert!(matches!(
            verdict(&super::super::tf2::Tf2, widened, 0.6, Direction::Maximize),
            Verdict::Improved { .. }
        ));
        // Apart in float32, apart still.
        assert!(matches!(
            verdict(&Keras3, 0.61, 0.6, Direction::Maximize),
            Verdict::Improved { .. }
        ));
        // A backend that gives Python floats as float64 compares the doubles.
        assert!(matches!(
            Keras3
                .judge(
                    true,
                    Some(Direction::Maximize),
                    Some(Value::Float(widened)),
                    Value::Float(0.6),
                    true
                )
                .expect("judged"),
            Verdict::Improved { .. }
        ));
    }
}
