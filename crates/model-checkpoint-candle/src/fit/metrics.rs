use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Running loss and accuracy over an epoch, each weighted by batch size as Keras's `Mean`
/// metrics weight them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Running {
    /// Sum of per-sample losses (batch mean × batch size).
    loss_sum: f64,
    /// Samples predicted correctly.
    correct: u64,
    /// Samples seen.
    seen: u64,
}

impl Running {
    /// Adds one batch: its mean loss and its logits against its labels.
    pub(crate) fn add(
        &mut self,
        loss: &Tensor,
        logits: &Tensor,
        labels: &Tensor,
    ) -> Result<(), Error> {
        let n = labels.dims1()?;
        let loss = f64::from(loss.to_scalar::<f32>()?);
        let correct = logits
            .argmax(1)?
            .eq(labels)?
            .to_dtype(DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()?;
        self.loss_sum += loss * n as f64;
        self.correct += u64::from(correct);
        self.seen += n as u64;
        Ok(())
    }

    pub(crate) fn loss(&self) -> f64 {
        self.loss_sum / self.seen.max(1) as f64
    }

    pub(crate) fn accuracy(&self) -> f64 {
        self.correct as f64 / self.seen.max(1) as f64
    }
}
