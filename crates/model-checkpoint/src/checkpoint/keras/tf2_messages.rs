//! Every text Keras's `ModelCheckpoint` prints or warns, byte for byte (KERAS-SPEC.md §7). The
//! oracle traces check each one.

use crate::template::format_value;
use crate::Value;

/// Keras's `{value:.5f}`; `inf`, `-inf` and `nan` print as such, an int threshold as
/// `1.00000`.
fn five_places(value: Value) -> String {
    format_value(&value, ".5f").unwrap_or_else(|_| value.to_string())
}

/// `verbose > 0`, `save_best_only=False`.
pub(crate) fn saving(epoch: i64, path: &str) -> String {
    format!("\nEpoch {}: saving model to {path}", epoch + 1)
}

/// `verbose > 0`, the monitored value improved.
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

/// Warning: `save_best_only` and the monitor is not in the logs.
pub(crate) fn monitor_missing(monitor: &str) -> String {
    format!("Can save best model only with {monitor} available, skipping.")
}

/// Warning: a mode Keras does not know (constructor).
pub(crate) fn unknown_mode(mode: &str) -> String {
    format!("ModelCheckpoint mode {mode} is unknown, fallback to auto mode.")
}

/// Warning: the deprecated `period` argument (constructor).
pub(crate) fn period_deprecated() -> String {
    "`period` argument is deprecated. Please use `save_freq` to specify the frequency in number of batches seen."
        .to_owned()
}
