//! tf.keras 2.x's rules (`tf-keras` 2.21): the `acc`/`fmeasure` name rule of `mode="auto"`,
//! `best` from ±inf, a strict comparison that NaN never passes, the folder made before the
//! monitor is looked at, a missing monitor skipping the save, and its texts
//! (`tf2_messages.rs`). The recorded traces in `traces/` check each.

use super::tf2_messages as messages;
use super::{KerasVersion, Rules};
use crate::policy::{judge, Direction, Mode, Verdict};
use crate::Value;

/// tf.keras 2.x.
#[derive(Debug)]
pub(crate) struct Tf2;

impl Rules for Tf2 {
    fn version(&self) -> KerasVersion {
        KerasVersion::Tf2
    }

    fn direction(&self, mode: Mode, monitor: &str) -> Direction {
        mode.direction_for(monitor)
    }

    fn initial_best(&self, direction: Direction, threshold: Option<Value>) -> Value {
        threshold.unwrap_or(Value::Float(direction.initial_best()))
    }

    fn judge(
        &self,
        save_best_only: bool,
        direction: Direction,
        current: Option<Value>,
        best: Value,
    ) -> Verdict {
        judge(save_best_only, direction, current, best)
    }

    fn folder_before_monitor(&self) -> bool {
        true
    }

    fn missing_monitor_saves(&self) -> bool {
        false
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
