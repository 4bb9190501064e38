//! Keras's running means over an epoch, from the batches' results.

use serde::{Deserialize, Serialize};

use crate::step::BatchLogs;

/// Running loss and metrics over an epoch, each weighted by batch size as Keras's `Mean`
/// metrics weight them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Running {
    /// Sum of per-sample losses (batch mean × batch size).
    loss_sum: f64,
    /// Samples predicted correctly (the accuracy metric's sum), counted exactly.
    correct: u64,
    /// Samples seen.
    seen: u64,
    /// The other metrics' sums, by name.
    #[serde(default)]
    sums: std::collections::BTreeMap<String, f64>,
}

impl Running {
    /// Adds one batch.
    pub(crate) fn add(&mut self, batch: &BatchLogs) {
        let n = batch.samples;
        for &(name, sum) in &batch.sums {
            if name == "accuracy" {
                self.correct += sum as u64;
            } else {
                *self.sums.entry(name.to_owned()).or_default() += sum;
            }
        }
        self.loss_sum += batch.loss * n as f64;
        self.seen += n as u64;
    }

    /// The counters a resume range-checks (they are only ever added to).
    pub(crate) fn counters(&self) -> [(&'static str, u64); 2] {
        [
            ("running.correct", self.correct),
            ("running.seen", self.seen),
        ]
    }

    /// `loss` and every metric of `metrics`, as logged.
    pub(crate) fn logs(&self, metrics: &[&str]) -> model_checkpoint::Logs {
        let mut logs = model_checkpoint::Logs::new();
        let seen = self.seen.max(1) as f64;
        logs.insert("loss", self.loss_sum / seen);
        for &metric in metrics {
            let value = if metric == "accuracy" {
                self.correct as f64 / seen
            } else {
                self.sums.get(metric).copied().unwrap_or(0.0) / seen
            };
            logs.insert(metric, value);
        }
        logs
    }
}
