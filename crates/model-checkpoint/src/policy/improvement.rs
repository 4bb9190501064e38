use super::Direction;
use crate::Value;

/// What a due save does, given `save_best_only` and the monitored value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// `save_best_only` is off: save without looking at the monitor.
    Save,
    /// The monitored value improves on `best`: save, and `current` becomes the new best.
    Improved {
        /// The best value before this one.
        from: Value,
        /// The new best.
        to: Value,
    },
    /// No improvement: no save; `best` stays.
    NotImproved {
        /// The best value, unchanged.
        best: Value,
    },
    /// The monitor is missing from the logs (or logged as `None`): tf.keras 2 warns and
    /// skips (KERAS-SPEC.md §13). Keras 3 would save instead.
    MonitorMissing,
}

/// Decides what a due save does (Keras's `_save_model` after formatting the path). This only
/// decides; the caller applies the new best.
///
/// ```
/// use model_checkpoint::{judge, Direction, Value, Verdict};
///
/// let best = Value::Float(0.5);
/// let verdict = judge(true, Direction::Minimize, Some(Value::Float(0.4)), best);
/// assert_eq!(verdict, Verdict::Improved { from: best, to: Value::Float(0.4) });
/// assert_eq!(judge(true, Direction::Minimize, None, best), Verdict::MonitorMissing);
/// assert_eq!(judge(false, Direction::Minimize, None, best), Verdict::Save);
/// ```
pub fn judge(
    save_best_only: bool,
    direction: Direction,
    current: Option<Value>,
    best: Value,
) -> Verdict {
    if !save_best_only {
        return Verdict::Save;
    }
    let Some(current) = current.filter(|v| *v != Value::None) else {
        return Verdict::MonitorMissing;
    };
    // Both sides compare as doubles, as numpy compares a Python int with a float. A `best`
    // of None (no threshold and no comparison yet) cannot occur: it starts at ±inf.
    let improves = match (current.as_f64(), best.as_f64()) {
        (Some(c), Some(b)) => direction.improves(c, b),
        _ => false,
    };
    if improves {
        Verdict::Improved {
            from: best,
            to: current,
        }
    } else {
        Verdict::NotImproved { best }
    }
}
