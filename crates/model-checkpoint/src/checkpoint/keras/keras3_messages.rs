//! Every text Keras 3's `ModelCheckpoint` (`keras` 3.15.1) prints, warns or raises, byte for
//! byte (`SPEC.md` §18). The Keras 3 oracle traces check each one.

use crate::template::format_value;
use crate::Value;

/// Keras 3's `best_str` and `{current:.5f}`: `None` while `best` is unset, else as tf.keras
/// 2 writes it (`inf`, `nan`, an int threshold as `1.00000`).
fn five_places(value: Value) -> String {
    match value {
        Value::None => "None".to_owned(),
        value => format_value(&value, ".5f").unwrap_or_else(|_| value.to_string()),
    }
}

/// `verbose > 0`, `save_best_only=False`.
pub(crate) fn saving(epoch: i64, path: &str) -> String {
    format!("\nEpoch {}: saving model to {path}", epoch + 1)
}

/// `verbose > 0`, the monitored value improved (from `None` the first time).
pub(crate) fn improved(epoch: i64, monitor: &str, from: Value, to: Value, path: &str) -> String {
    format!(
        "\nEpoch {}: {monitor} improved from {} to {}, saving model to {path}",
        epoch + 1,
        five_places(from),
        five_places(to)
    )
}

/// `verbose > 0`, no improvement.
pub(crate) fn not_improved(epoch: i64, monitor: &str, best: Value) -> String {
    format!(
        "\nEpoch {}: {monitor} did not improve from {}",
        epoch + 1,
        five_places(best)
    )
}

/// `verbose > 0`, after every save that happened (Keras 3 only).
pub(crate) fn finished_saving(epoch: i64, path: &str) -> String {
    format!("\nEpoch {}: finished saving model to {path}", epoch + 1)
}

/// Python warning (`UserWarning`): `save_best_only` and the monitor is not in the logs; Keras
/// 3 then saves anyway.
pub(crate) fn monitor_missing(monitor: &str) -> String {
    format!("Can save best model only with {monitor} available.")
}

/// Python warning (`UserWarning`): a mode Keras does not know (constructor); the mode is
/// quoted, unlike tf.keras 2's.
pub(crate) fn unknown_mode(mode: &str) -> String {
    format!("ModelCheckpoint mode '{mode}' is unknown, fallback to auto mode.")
}

/// `TypeError`: a keyword the constructor does not take.
pub(crate) fn unexpected_keyword(name: &str) -> String {
    format!("ModelCheckpoint.__init__() got an unexpected keyword argument '{name}'")
}

/// `ValueError`: `save_freq` neither `"epoch"` nor an int (single quotes, "values").
pub(crate) fn invalid_save_freq(value: &str) -> String {
    format!("Unrecognized save_freq: {value}. Expected save_freq are 'epoch' or integer values")
}

/// `ValueError`: weights only, and the filepath does not end in `.weights.h5`.
pub(crate) fn weights_extension(filepath: &str) -> String {
    format!(
        "When using `save_weights_only=True` in `ModelCheckpoint`, the filepath provided must end in `.weights.h5` (Keras weights format). Received: filepath={filepath}"
    )
}

/// `ValueError`: a full model, and the filepath ends in neither `.keras` nor `.h5`.
pub(crate) fn model_extension(filepath: &str) -> String {
    format!(
        "The filepath provided must end in `.keras` (Keras model format). Received: filepath={filepath}"
    )
}

/// `ValueError`, at every epoch end: `mode="auto"` and no rule gives the monitor's direction.
pub(crate) fn unknown_direction(monitor: &str) -> String {
    format!(
        "ModelCheckpoint callback received monitor={monitor}, but Keras isn't able to automatically determine whether that metric should be maximized or minimized. Pass `mode='max'` in order to monitor based on the highest metric value, or pass `mode='min'` in order to use the lowest value."
    )
}

/// `TypeError`: Python calling the unset `monitor_op` (Keras 3's batch-level
/// `save_best_only` bug).
pub(crate) fn monitor_op_not_set() -> String {
    "'NoneType' object is not callable".to_owned()
}

/// `TypeError`: an epoch-level save formatting the path with `logs=None` (`**None`).
pub(crate) fn no_logs_at_epoch() -> String {
    "str.format() argument after ** must be a mapping, not NoneType".to_owned()
}

/// `TypeError`: a batch-level save testing `"batch" in None`.
pub(crate) fn no_logs_at_batch() -> String {
    "argument of type 'NoneType' is not iterable".to_owned()
}
