//! tf.keras 2.x's rules (`tf-keras` 2.21): the `acc`/`fmeasure` name rule of `mode="auto"`,
//! `best` from ±inf, a strict comparison that NaN never passes, the folder made before the
//! monitor is looked at, a missing monitor skipping the save, and its texts
//! (`tf2_messages.rs`). The recorded traces in `traces/` check each.

use std::collections::BTreeMap;

use super::args::{KerasArgs, KerasValue};
use super::tf2_messages as messages;
use super::{KerasVersion, Rules};
use crate::policy::{judge, Direction, Mode, Verdict};
use crate::{Error, Value};

/// tf.keras 2.x.
#[derive(Debug)]
pub(crate) struct Tf2;

impl Rules for Tf2 {
    fn version(&self) -> KerasVersion {
        KerasVersion::Tf2
    }

    /// The name rule (`acc` anywhere, or a `fmeasure` prefix); compiled metrics play no
    /// part, and it never fails.
    fn direction(
        &self,
        mode: Mode,
        monitor: &str,
        _metrics: &BTreeMap<String, Direction>,
    ) -> Result<Direction, Error> {
        Ok(mode.direction_for(monitor))
    }

    /// The constructor chooses `monitor_op`.
    fn lazy_monitor_op(&self) -> bool {
        false
    }

    fn initial_best(&self, direction: Direction, threshold: Option<Value>) -> Value {
        threshold.unwrap_or(Value::Float(direction.initial_best()))
    }

    fn judge(
        &self,
        save_best_only: bool,
        monitor_op: Option<Direction>,
        current: Option<Value>,
        best: Value,
        _float64_scalars: bool,
    ) -> Result<Verdict, Error> {
        // numpy compares the doubles whatever a backend does. The constructor chose
        // `monitor_op`, so it is always there.
        let direction = monitor_op.unwrap_or(Direction::Minimize);
        Ok(judge(save_best_only, direction, current, best))
    }

    fn folder_before_monitor(&self) -> bool {
        true
    }

    /// `self.model` is read right after formatting, before any message.
    fn model_before_message(&self) -> bool {
        true
    }

    fn missing_monitor_saves(&self) -> bool {
        false
    }

    fn has_period(&self) -> bool {
        true
    }

    /// `if dirname and not dirname.startswith("gs://")`: tf.keras makes no folders in
    /// Google Cloud Storage, which has none.
    fn makes_folder(&self, dir: &crate::store::Name) -> bool {
        dir.scheme() != Some("gs")
    }

    /// `logs = logs or {}` comes first: no logs are empty logs.
    fn no_logs(&self, _batch: Option<i64>) -> Option<Error> {
        None
    }

    /// `period` and `options` are arguments, and `**kwargs` swallows any other keyword.
    fn check_keywords(&self, _args: &KerasArgs) -> Result<(), Error> {
        Ok(())
    }

    fn invalid_save_freq(&self, value: &KerasValue) -> Error {
        Error::InvalidSaveFreq {
            value: value.to_string(),
        }
    }

    /// Any extension: it chooses the format (HDF5, SavedModel, TF checkpoint).
    fn check_filepath(&self, _filepath: &str, _weights_only: bool) -> Result<(), Error> {
        Ok(())
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

    fn finished_saving(&self, _epoch: i64, _path: &str) -> Option<String> {
        None
    }

    fn monitor_missing(&self, monitor: &str) -> String {
        messages::monitor_missing(monitor)
    }

    fn unknown_mode(&self, mode: &str) -> String {
        messages::unknown_mode(mode)
    }

    fn period_deprecated(&self) -> String {
        messages::period_deprecated()
    }
}
