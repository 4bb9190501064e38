//! Keras's rules behind one seam: everything that depends on which Keras `ModelCheckpoint`
//! imitates (how `mode="auto"` reads a monitor, what `best` starts at, what counts as an
//! improvement, when a missing monitor saves, when the folder is made, every text printed
//! or warned) is a method of [`Rules`], and each Keras is one module implementing it.
//! [`Decisions`](super::decisions::Decisions) and the saving order
//! (`model_checkpoint/saving.rs`) ask the rules; nothing else spells a Keras text.
//!
//! - `tf2.rs`: tf.keras 2.x (`tf-keras` 2.21), the behaviour the recorded traces in
//!   `traces/` check (`docs/KERAS-SPEC.md`).
//!
//! A second behaviour (Keras 3, `SPEC.md` §18) is a module implementing [`Rules`] and a
//! variant of [`KerasVersion`].

mod tf2;
mod tf2_messages;

use crate::policy::{Direction, Mode, Verdict};
use crate::Value;

/// Which Keras's `ModelCheckpoint` a callback imitates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KerasVersion {
    /// tf.keras 2.x (`tf-keras` 2.21), the default.
    #[default]
    Tf2,
}

impl KerasVersion {
    /// The rules of this Keras.
    pub(crate) fn rules(self) -> &'static dyn Rules {
        match self {
            KerasVersion::Tf2 => &tf2::Tf2,
        }
    }
}

/// Everything in `ModelCheckpoint` that one Keras does differently from another.
pub(crate) trait Rules: Sync + std::fmt::Debug {
    /// Which Keras this is.
    fn version(&self) -> KerasVersion;

    /// The direction `mode` gives `monitor` (Keras's `monitor_op`).
    fn direction(&self, mode: Mode, monitor: &str) -> Direction;

    /// `best` before any value: the threshold if given, else what this Keras starts from.
    fn initial_best(&self, direction: Direction, threshold: Option<Value>) -> Value;

    /// The verdict on a due save attempt's monitored value.
    fn judge(
        &self,
        save_best_only: bool,
        direction: Direction,
        current: Option<Value>,
        best: Value,
    ) -> Verdict;

    /// Whether the folder of a due save is made before the monitor is looked at (so that a
    /// skipped epoch can leave an empty folder), or only when a file is written.
    fn folder_before_monitor(&self) -> bool;

    /// Whether `save_best_only` with the monitor missing from the logs saves anyway (after
    /// the warning), rather than skipping.
    fn missing_monitor_saves(&self) -> bool;

    /// The line printed (verbose) for a save without `save_best_only`.
    fn saving(&self, epoch: i64, path: &str) -> String;

    /// The line printed (verbose) for an improvement.
    fn improved(&self, epoch: i64, monitor: &str, from: Value, to: Value, path: &str) -> String;

    /// The line printed (verbose) for no improvement.
    fn not_improved(&self, epoch: i64, monitor: &str, best: Value) -> String;

    /// The warning for a monitor missing from the logs.
    fn monitor_missing(&self, monitor: &str) -> String;

    /// The warning for an unknown `mode`.
    fn unknown_mode(&self, mode: &str) -> String;

    /// The warning for the deprecated `period` (tf.keras 2 has it).
    fn period_deprecated(&self) -> String;
}
