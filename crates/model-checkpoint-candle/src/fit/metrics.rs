use serde::{Deserialize, Serialize};

use super::compile::{Loss, Metric};
use crate::Error;
use candle_core::Tensor;

/// Running loss and metrics over an epoch, each weighted by batch size as Keras's `Mean`
/// metrics weight them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Running {
    /// Sum of per-sample losses (batch mean × batch size).
    loss_sum: f64,
    /// Samples predicted correctly (the accuracy metric's sum).
    correct: u64,
    /// Samples seen.
    seen: u64,
    /// The other metrics' sums, by name.
    #[serde(default)]
    sums: std::collections::BTreeMap<String, f64>,
}

impl Running {
    /// Adds one batch: its mean loss, and each metric of its predictions against its
    /// targets.
    pub(crate) fn add(
        &mut self,
        loss: &Tensor,
        predictions: &Tensor,
        targets: &Tensor,
        metrics: &[Metric],
    ) -> Result<(), Error> {
        let n = targets.dims().first().copied().unwrap_or(0);
        let loss = f64::from(loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?);
        for &metric in metrics {
            let sum = metric.batch_sum(predictions, targets)?;
            if metric == Metric::Accuracy {
                self.correct += sum as u64;
            } else {
                *self.sums.entry(metric.name().to_owned()).or_default() += sum;
            }
        }
        self.loss_sum += loss * n as f64;
        self.seen += n as u64;
        Ok(())
    }

    pub(crate) fn loss(&self) -> f64 {
        self.loss_sum / self.seen.max(1) as f64
    }

    /// `loss` and every metric, as logged.
    pub(crate) fn logs(&self, metrics: &[Metric]) -> model_checkpoint::Logs {
        let mut logs = model_checkpoint::Logs::new();
        logs.insert("loss", self.loss());
        let seen = self.seen.max(1) as f64;
        for &metric in metrics {
            let value = if metric == Metric::Accuracy {
                self.correct as f64 / seen
            } else {
                self.sums.get(metric.name()).copied().unwrap_or(0.0) / seen
            };
            logs.insert(metric.name(), value);
        }
        logs
    }
}

/// Refuses a model whose outputs cannot meet the targets, before any training: with
/// class labels, one output per class; with float targets, one per target value.
pub(crate) fn check_outputs(
    loss: &Loss,
    outputs: usize,
    classes: usize,
    targets: usize,
) -> Result<(), Error> {
    if loss.takes_classes() {
        if classes == 0 {
            return Err(Error::options(format!(
                "the loss {loss:?} takes class labels, but the data has float targets"
            )));
        }
        if outputs < classes {
            return Err(Error::options(format!(
                "the model gives {outputs} outputs per sample, but the data has {classes} classes"
            )));
        }
    } else if matches!(loss, Loss::MeanSquaredError | Loss::MeanAbsoluteError) {
        if classes > 0 {
            return Err(Error::options(format!(
                "the loss {loss:?} takes float targets, but the data has class labels"
            )));
        }
        if outputs != targets {
            return Err(Error::options(format!(
                "the model gives {outputs} outputs per sample, but the data has {targets} target values"
            )));
        }
    }
    Ok(())
}
