//! Keras's rules behind one seam: everything that depends on which Keras `ModelCheckpoint`
//! imitates (how `mode="auto"` reads a monitor, what `best` starts at, what counts as an
//! improvement, when a missing monitor saves, when the folder is made, every text printed
//! or warned) is a method of [`Rules`], and each Keras is one module implementing it.
//! [`Decisions`](super::decisions::Decisions) and the saving order
//! (`model_checkpoint/saving.rs`) ask the rules; nothing else spells a Keras text.
//!
//! - `tf2.rs`: tf.keras 2.x (`tf-keras` 2.21), the behaviour the recorded traces in
//!   `traces/` check (`docs/KERAS-SPEC.md`), and the default.
//! - `keras3.rs`: Keras 3 (`keras` 3.15.1), the behaviour the recorded traces in
//!   `traces-keras3/` check (`SPEC.md` §18): `best` starts at `None`, `mode="auto"` is
//!   decided at the first epoch end from the compiled metrics, a missing monitor saves
//!   anyway, the folder is made only for a save, a second line after each save, and the
//!   constructor refuses what Keras 3 refuses.

mod args;
mod keras3;
mod keras3_messages;
mod tf2;
mod tf2_messages;

use std::collections::BTreeMap;

use crate::policy::{Direction, Mode, Verdict};
use crate::Error;
use crate::Value;
pub use args::{KerasArgs, KerasValue};

/// Which Keras's `ModelCheckpoint` a callback imitates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KerasVersion {
    /// tf.keras 2.x (`tf-keras` 2.21), the default.
    #[default]
    Tf2,
    /// Keras 3 (`keras` 3.15.1).
    Keras3,
}

impl KerasVersion {
    /// The rules of this Keras.
    pub(crate) fn rules(self) -> &'static dyn Rules {
        match self {
            KerasVersion::Tf2 => &tf2::Tf2,
            KerasVersion::Keras3 => &keras3::Keras3,
        }
    }

    /// The name a callback's state records it by (`"2"`, `"3"`), so that a resume under
    /// another Keras is refused: their `best` values and rules differ.
    pub(crate) fn token(self) -> &'static str {
        match self {
            KerasVersion::Tf2 => "2",
            KerasVersion::Keras3 => "3",
        }
    }

    /// The Keras a recorded token names (a state without one is tf.keras 2's: the only one
    /// before Keras 3 was added).
    pub(crate) fn from_token(token: Option<&str>) -> Option<Self> {
        match token {
            None | Some("2") => Some(KerasVersion::Tf2),
            Some("3") => Some(KerasVersion::Keras3),
            Some(_) => None,
        }
    }

    /// How messages name it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            KerasVersion::Tf2 => "tf.keras 2",
            KerasVersion::Keras3 => "Keras 3",
        }
    }
}

/// Everything in `ModelCheckpoint` that one Keras does differently from another.
pub(crate) trait Rules: Sync + std::fmt::Debug {
    /// Which Keras this is.
    fn version(&self) -> KerasVersion;

    /// The direction `mode` gives `monitor` (Keras's `monitor_op`), knowing the directions
    /// of the model's compiled metrics; an error where this Keras cannot tell.
    fn direction(
        &self,
        mode: Mode,
        monitor: &str,
        metrics: &BTreeMap<String, Direction>,
    ) -> Result<Direction, Error>;

    /// Whether `monitor_op` is chosen only at the first epoch end (and again at every epoch
    /// end while it cannot be), rather than by the constructor.
    fn lazy_monitor_op(&self) -> bool;

    /// `best` before any value: the threshold if given, else what this Keras starts from.
    fn initial_best(&self, direction: Direction, threshold: Option<Value>) -> Value;

    /// The verdict on a due save attempt's monitored value; `monitor_op` is `None` while a
    /// lazy Keras has not chosen it yet. `float64_scalars`: the backend gives a Python
    /// float as a float64 tensor (see [`crate::ModelCheckpoint::float64_scalars`]).
    fn judge(
        &self,
        save_best_only: bool,
        monitor_op: Option<Direction>,
        current: Option<Value>,
        best: Value,
        float64_scalars: bool,
    ) -> Result<Verdict, Error>;

    /// Whether the folder of a due save is made before the monitor is looked at (so that a
    /// skipped epoch can leave an empty folder), or only when a file is written.
    fn folder_before_monitor(&self) -> bool;

    /// Whether a missing model fails a due save before its message (right after the path
    /// is formatted), rather than at the save itself, after the message.
    fn model_before_message(&self) -> bool;

    /// Whether `save_best_only` with the monitor missing from the logs saves anyway (after
    /// the warning), rather than skipping.
    fn missing_monitor_saves(&self) -> bool;

    /// Whether the deprecated `period` counts epochs between attempts.
    fn has_period(&self) -> bool;

    /// Whether a due save makes its folder `dir` (the storage decides how).
    fn makes_folder(&self, dir: &crate::store::Name) -> bool;

    /// What a hook called with no logs at all (Python's `logs=None`) does: `None` reads it
    /// as empty logs, an error is what formatting the path raises first. `batch` is the
    /// batch of a batch-level save.
    fn no_logs(&self, batch: Option<i64>) -> Option<Error>;

    /// The constructor's refusals of its keywords, before anything else: the deprecated
    /// `period`, `options`, and the keywords [`KerasArgs::other_keywords`] names.
    fn check_keywords(&self, args: &KerasArgs) -> Result<(), Error>;

    /// The error for a `save_freq` that is neither `"epoch"` nor an integer.
    fn invalid_save_freq(&self, value: &KerasValue) -> Error;

    /// The constructor's check of the filepath (after `save_freq`'s).
    fn check_filepath(&self, filepath: &str, weights_only: bool) -> Result<(), Error>;

    /// The line printed (verbose) for a save without `save_best_only`.
    fn saving(&self, epoch: i64, path: &str) -> String;

    /// The line printed (verbose) for an improvement.
    fn improved(&self, epoch: i64, monitor: &str, from: Value, to: Value, path: &str) -> String;

    /// The line printed (verbose) for no improvement.
    fn not_improved(&self, epoch: i64, monitor: &str, best: Value) -> String;

    /// The line printed (verbose) once a save is done, if this Keras prints one.
    fn finished_saving(&self, epoch: i64, path: &str) -> Option<String>;

    /// The warning for a monitor missing from the logs.
    fn monitor_missing(&self, monitor: &str) -> String;

    /// The warning for an unknown `mode`.
    fn unknown_mode(&self, mode: &str) -> String;

    /// The warning for the deprecated `period` (tf.keras 2 has it).
    fn period_deprecated(&self) -> String;
}
