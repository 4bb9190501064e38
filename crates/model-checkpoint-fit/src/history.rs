use model_checkpoint::{Direction, Logs};
use serde::{Deserialize, Serialize};

/// What `fit` returns: the epoch logs, as Keras's `History` records them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The 0-based index of each recorded epoch.
    pub epochs: Vec<usize>,
    /// The logs of each recorded epoch (training metrics, then `val_` metrics).
    pub logs: Vec<Logs>,
    /// Whether a callback interrupted training (a signal, with a resumable checkpoint saved)
    /// rather than training running to its last epoch or stopping early.
    #[serde(default)]
    pub interrupted: bool,
}

impl History {
    pub(crate) fn record(&mut self, epoch: usize, logs: &Logs) {
        self.epochs.push(epoch);
        self.logs.push(logs.clone());
    }

    /// The values of `metric`, one per epoch (Keras's `history.history[metric]`), `None`
    /// where an epoch did not log it.
    pub fn metric(&self, metric: &str) -> Vec<Option<f64>> {
        self.logs
            .iter()
            .map(|l| l.get(metric).and_then(|v| v.as_f64()))
            .collect()
    }

    /// The epoch with the best value of `metric` and that value; the first on ties, never
    /// NaN.
    pub fn best(&self, metric: &str, direction: Direction) -> Option<(usize, f64)> {
        let values = self.metric(metric);
        let i = model_checkpoint::policy::best_index(direction, values.iter().copied())?;
        Some((self.epochs[i], values[i]?))
    }

    /// The last epoch's logs.
    pub fn last(&self) -> Option<&Logs> {
        self.logs.last()
    }

    /// Number of recorded epochs.
    pub fn len(&self) -> usize {
        self.epochs.len()
    }

    /// Whether no epoch was recorded.
    pub fn is_empty(&self) -> bool {
        self.epochs.is_empty()
    }
}
