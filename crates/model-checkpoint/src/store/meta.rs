//! What a checkpoint says about itself beyond the format's own keys: one typed owner of the
//! metadata keys that saving writes and every reader (listing, `latest`, the CLI) parses.

use std::collections::BTreeMap;

use crate::{Direction, Logs, Value};

pub use crate::document::MAX_COUNTER;

pub(crate) const KEY_EPOCH: &str = "epoch";
pub(crate) const KEY_BATCH: &str = "batch";
pub(crate) const KEY_STEP: &str = "global_step";
pub(crate) const KEY_LOGS: &str = "logs";
pub(crate) const KEY_MONITOR: &str = "monitor";
pub(crate) const KEY_MODE: &str = "monitor_mode";
pub(crate) const KEY_RUN_ID: &str = "run_id";
pub(crate) const KEY_SIGNAL: &str = "signal";
/// The training state (JSON) of a full checkpoint.
pub const KEY_TRAINING_STATE: &str = "training_state";

/// Where in training a save was taken, for ordering: (epoch, step, batch), see
/// [`Meta::position`].
pub type Position = (u64, u64, u64);

/// The metadata `ModelCheckpoint` writes into every file: where in training it was taken,
/// the logs at that point, the monitored metric, and the run that wrote it.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Meta {
    /// The 1-based epoch of the save.
    pub epoch: Option<u64>,
    /// The 1-based batch of a batch-level save.
    pub batch: Option<u64>,
    /// Optimizer steps taken when the save happened.
    pub global_step: Option<u64>,
    /// The logs at the save.
    pub logs: Logs,
    /// The metric the saving callback monitored.
    pub monitor: Option<String>,
    /// Which way the monitor improves, as the saving callback resolved it (`monitor_mode`,
    /// `"min"` or `"max"`, in the file; another value is not read): what ranks the files by
    /// the monitor, where the name alone would not tell (Keras 3's `auto` maximises
    /// `val_auc`; `mode="max"` anything).
    pub mode: Option<Direction>,
    /// The identity of the run that saved the file (kept across resumes).
    pub run_id: Option<String>,
    /// The signal a save on a signal was taken for (`SIGTERM`, `SIGINT`); none for every
    /// other save. It also keeps such a save's header, and so its marker, apart from a
    /// regular save's taken at the same point.
    pub signal: Option<String>,
}

/// The metadata fields as the file spells them, unparsed (what `ckpt show` prints, even when
/// a field is malformed).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct RawMeta<'a> {
    /// The epoch field.
    pub epoch: Option<&'a str>,
    /// The batch field.
    pub batch: Option<&'a str>,
    /// The global step field.
    pub global_step: Option<&'a str>,
    /// The logs field (JSON).
    pub logs: Option<&'a str>,
    /// The monitor field.
    pub monitor: Option<&'a str>,
    /// The monitor's mode field.
    pub mode: Option<&'a str>,
    /// The run id field.
    pub run_id: Option<&'a str>,
    /// The signal field.
    pub signal: Option<&'a str>,
}

impl<'a> RawMeta<'a> {
    /// The fields of `info`, as written.
    pub fn of(info: &'a BTreeMap<String, String>) -> RawMeta<'a> {
        let get = |k: &str| info.get(k).map(String::as_str);
        RawMeta {
            epoch: get(KEY_EPOCH),
            batch: get(KEY_BATCH),
            global_step: get(KEY_STEP),
            logs: get(KEY_LOGS),
            monitor: get(KEY_MONITOR),
            mode: get(KEY_MODE),
            run_id: get(KEY_RUN_ID),
            signal: get(KEY_SIGNAL),
        }
    }
}

impl Meta {
    /// Reads the metadata from a file's `__metadata__` entries. Files from other tools have
    /// none of these keys and give an empty `Meta`.
    ///
    /// # Errors
    ///
    /// A reason naming the field for a counter that is not a whole number up to
    /// [`MAX_COUNTER`], or logs that are not a JSON object of numbers.
    pub fn from_info(info: &BTreeMap<String, String>) -> Result<Meta, String> {
        let counter = |key: &str| -> Result<Option<u64>, String> {
            let Some(text) = info.get(key) else {
                return Ok(None);
            };
            // One spelling: decimal digits, no sign, no leading zero, no space.
            let canonical = !text.is_empty()
                && text.bytes().all(|b| b.is_ascii_digit())
                && (text == "0" || !text.starts_with('0'));
            match text.parse::<u64>() {
                Ok(n) if canonical && n <= MAX_COUNTER => Ok(Some(n)),
                _ => Err(format!(
                    "{key} {:?} is not a whole number from 0 to {MAX_COUNTER}",
                    crate::text::shorten(text, 40)
                )),
            }
        };
        let logs = match info.get(KEY_LOGS) {
            None => Logs::new(),
            Some(text) => {
                serde_json::from_str(text).map_err(|e| format!("logs unreadable: {e}"))?
            }
        };
        Ok(Meta {
            epoch: counter(KEY_EPOCH)?,
            batch: counter(KEY_BATCH)?,
            global_step: counter(KEY_STEP)?,
            logs,
            monitor: info.get(KEY_MONITOR).cloned(),
            mode: match info.get(KEY_MODE).map(String::as_str) {
                Some("min") => Some(Direction::Minimize),
                Some("max") => Some(Direction::Maximize),
                _ => None,
            },
            run_id: info.get(KEY_RUN_ID).cloned(),
            signal: info.get(KEY_SIGNAL).cloned(),
        })
    }

    /// The entries to write.
    pub(crate) fn to_info(&self) -> BTreeMap<String, String> {
        let mut info = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            info.insert(k.to_owned(), v);
        };
        if let Some(e) = self.epoch {
            put(KEY_EPOCH, e.to_string());
        }
        if let Some(b) = self.batch {
            put(KEY_BATCH, b.to_string());
        }
        if let Some(s) = self.global_step {
            put(KEY_STEP, s.to_string());
        }
        put(
            KEY_LOGS,
            serde_json::to_string(&self.logs).unwrap_or_else(|_| "{}".to_owned()),
        );
        if let Some(m) = &self.monitor {
            put(KEY_MONITOR, m.clone());
        }
        if let Some(d) = self.mode {
            let mode = match d {
                Direction::Minimize => "min",
                Direction::Maximize => "max",
            };
            put(KEY_MODE, mode.to_owned());
        }
        if let Some(r) = &self.run_id {
            put(KEY_RUN_ID, r.clone());
        }
        if let Some(s) = &self.signal {
            put(KEY_SIGNAL, s.clone());
        }
        info
    }

    /// The value of `metric` (default: the monitored one) at the save, if it is a number.
    pub fn value(&self, metric: Option<&str>) -> Option<(String, Value)> {
        let name = metric.map(str::to_owned).or_else(|| self.monitor.clone())?;
        let value = self.logs.get(&name)?;
        value.as_f64().map(|_| (name, value))
    }

    /// Where in training the save was taken, for ordering: epoch, then step, then batch (a
    /// save at an epoch's end after every save inside it, which matters to loops that do
    /// not count steps).
    pub fn position(&self) -> Position {
        (
            self.epoch.unwrap_or(0),
            self.global_step.unwrap_or(0),
            self.batch.unwrap_or(u64::MAX),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_range_checked() {
        let info = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(Meta::from_info(&info("epoch", "18446744073709551615")).is_err());
        assert!(Meta::from_info(&info("global_step", "-1")).is_err());
        assert!(Meta::from_info(&info("batch", "1e3")).is_err());
        for odd in ["+5", "05", " 5", "５", ""] {
            assert!(Meta::from_info(&info("epoch", odd)).is_err(), "{odd:?}");
        }
        assert_eq!(
            Meta::from_info(&info("epoch", "9007199254740992"))
                .expect("2^53")
                .epoch,
            Some(MAX_COUNTER)
        );
    }
}
