use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// When `ModelCheckpoint` saves (Keras's `save_freq`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveFreq {
    /// At the end of every epoch (subject to the legacy `period`).
    #[default]
    Epoch,
    /// After this many training batches, counted across epoch boundaries. As in Keras, zero
    /// and negative counts are accepted and save after every batch.
    Batches(i64),
}

impl FromStr for SaveFreq {
    type Err = Error;

    /// `"epoch"` or an integer, as the command line takes it. (Keras itself rejects the
    /// string `"3"`; [`crate::KerasArgs`] keeps that behaviour.)
    fn from_str(s: &str) -> Result<Self, Error> {
        if s == "epoch" {
            return Ok(SaveFreq::Epoch);
        }
        s.trim()
            .parse()
            .map(SaveFreq::Batches)
            .map_err(|_| Error::InvalidSaveFreq {
                value: s.to_owned(),
            })
    }
}

impl fmt::Display for SaveFreq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaveFreq::Epoch => f.write_str("epoch"),
            SaveFreq::Batches(n) => write!(f, "{n}"),
        }
    }
}

/// The counters that decide when a save is due, with Keras's names and starting values.
/// Keras never resets them between `fit()` calls (KERAS-SPEC.md §16), and neither does this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveSchedule {
    /// Epochs ended since the last save attempt (the legacy `period` counter).
    pub epochs_since_last_save: i64,
    /// Batches counted since the last batch-level save.
    pub batches_seen_since_last_saving: i64,
    /// The last batch index seen; a smaller or equal index means a new epoch began.
    pub last_batch_seen: i64,
}

impl Default for SaveSchedule {
    fn default() -> Self {
        SaveSchedule {
            epochs_since_last_save: 0,
            batches_seen_since_last_saving: 0,
            last_batch_seen: -1,
        }
    }
}

impl SaveSchedule {
    /// Counts one training batch and says whether a batch-level save is due now
    /// (`_should_save_on_batch`, KERAS-SPEC.md §3). The count carries across epochs; overshoot is
    /// dropped, not carried.
    ///
    /// ```
    /// use model_checkpoint::{SaveFreq, SaveSchedule};
    ///
    /// // save_freq=3 with 4, then 2 batches per epoch: due at epoch 1 index 2, epoch 2 index 1.
    /// let mut s = SaveSchedule::default();
    /// let due: Vec<bool> = [0, 1, 2, 3, 0, 1].iter().map(|&b| s.batch_due(b, SaveFreq::Batches(3))).collect();
    /// assert_eq!(due, [false, false, true, false, false, true]);
    /// ```
    pub fn batch_due(&mut self, batch: i64, freq: SaveFreq) -> bool {
        let SaveFreq::Batches(every) = freq else {
            return false;
        };
        let added = if batch <= self.last_batch_seen {
            batch + 1
        } else {
            batch - self.last_batch_seen
        };
        self.batches_seen_since_last_saving =
            self.batches_seen_since_last_saving.saturating_add(added);
        self.last_batch_seen = batch;
        if self.batches_seen_since_last_saving >= every {
            self.batches_seen_since_last_saving = 0;
            return true;
        }
        false
    }

    /// Counts one ended epoch. Keras counts it whatever `save_freq` is.
    pub fn epoch_ended(&mut self) {
        self.epochs_since_last_save = self.epochs_since_last_save.saturating_add(1);
    }

    /// Whether a save attempt is due, given how it was triggered: batch-level saves always
    /// are, epoch-level ones once `period` epochs have ended. A due attempt resets the epoch
    /// counter whatever happens next, even a formatting error (KERAS-SPEC.md §4, §9).
    pub fn attempt_due(&mut self, freq: SaveFreq, period: i64) -> bool {
        let due = matches!(freq, SaveFreq::Batches(_)) || self.epochs_since_last_save >= period;
        if due {
            self.epochs_since_last_save = 0;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due_batches(freq: i64, epochs: &[&[i64]]) -> Vec<(usize, i64)> {
        let mut s = SaveSchedule::default();
        let mut out = Vec::new();
        for (e, batches) in epochs.iter().enumerate() {
            for &b in *batches {
                if s.batch_due(b, SaveFreq::Batches(freq)) {
                    out.push((e, b));
                }
            }
        }
        out
    }

    #[test]
    fn counting_carries_across_uneven_epochs() {
        let epochs: [&[i64]; 3] = [&[0, 1, 2, 3], &[0, 1], &[0, 1, 2, 3, 4]];
        assert_eq!(due_batches(3, &epochs), [(0, 2), (1, 1), (2, 2)]);
    }

    #[test]
    fn overshoot_is_dropped_with_steps_per_execution() {
        let epochs: [&[i64]; 2] = [&[1, 3, 5], &[1, 3, 5]];
        assert_eq!(due_batches(3, &epochs), [(0, 3), (1, 1), (1, 5)]);
    }

    #[test]
    fn zero_and_negative_save_every_batch() {
        let epochs: [&[i64]; 1] = [&[0, 1, 2]];
        assert_eq!(due_batches(0, &epochs).len(), 3);
        assert_eq!(due_batches(-2, &epochs).len(), 3);
    }

    #[test]
    fn period_counts_epochs_and_resets_on_every_attempt() {
        let mut s = SaveSchedule::default();
        let due: Vec<bool> = (0..6)
            .map(|_| {
                s.epoch_ended();
                s.attempt_due(SaveFreq::Epoch, 3)
            })
            .collect();
        assert_eq!(due, [false, false, true, false, false, true]);
    }

    #[test]
    fn save_freq_parses_epoch_or_integer() {
        assert_eq!("epoch".parse::<SaveFreq>().ok(), Some(SaveFreq::Epoch));
        assert_eq!("12".parse::<SaveFreq>().ok(), Some(SaveFreq::Batches(12)));
        let err = "banana".parse::<SaveFreq>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"Unrecognized save_freq: banana. Expected save_freq are "epoch" or integer"#
        );
    }
}
