//! What `fit` optimises and reports, given the way Keras's `compile` takes them: a loss and
//! a list of metrics.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::Error;

/// A user's loss: `(predictions, targets) -> scalar`.
pub type LossFn = dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor> + Send + Sync;

/// The loss `fit` minimises (Keras's `compile(loss=...)`). Default: sparse categorical
/// cross-entropy on logits.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Loss {
    /// Class labels against logits (`"sparse_categorical_crossentropy"` with
    /// `from_logits=True`).
    #[default]
    SparseCategoricalCrossentropy,
    /// The mean of squared differences (`"mse"`), for float targets.
    MeanSquaredError,
    /// The mean of absolute differences (`"mae"`), for float targets.
    MeanAbsoluteError,
    /// A loss of your own, returning the batch's mean as a scalar.
    Custom(Arc<LossFn>),
}

impl std::fmt::Debug for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Loss::SparseCategoricalCrossentropy => "SparseCategoricalCrossentropy",
            Loss::MeanSquaredError => "MeanSquaredError",
            Loss::MeanAbsoluteError => "MeanAbsoluteError",
            Loss::Custom(_) => "Custom",
        })
    }
}

impl Loss {
    /// A loss from a closure.
    pub fn custom(
        f: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static,
    ) -> Self {
        Loss::Custom(Arc::new(f))
    }

    /// Whether it takes class labels (else float targets).
    pub(crate) fn takes_classes(&self) -> bool {
        matches!(self, Loss::SparseCategoricalCrossentropy)
    }

    pub(crate) fn compute(&self, predictions: &Tensor, targets: &Tensor) -> Result<Tensor, Error> {
        Ok(match self {
            Loss::SparseCategoricalCrossentropy => {
                candle_nn::loss::cross_entropy(predictions, targets)?
            }
            Loss::MeanSquaredError => candle_nn::loss::mse(predictions, targets)?,
            Loss::MeanAbsoluteError => (predictions - targets)?.abs()?.mean_all()?,
            Loss::Custom(f) => f(predictions, targets)?,
        })
    }
}

/// A metric `fit` reports (Keras's `compile(metrics=[...])`), averaged over the samples of
/// an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Metric {
    /// The share of samples whose largest logit is their label (`"accuracy"`).
    Accuracy,
    /// The mean squared difference (`"mse"`).
    MeanSquaredError,
    /// The mean absolute difference (`"mae"`).
    MeanAbsoluteError,
}

impl Metric {
    /// The name it is logged under (Keras's).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::MeanSquaredError => "mse",
            Metric::MeanAbsoluteError => "mae",
        }
    }

    /// The sum over the batch's samples of the per-sample metric.
    pub(crate) fn batch_sum(self, predictions: &Tensor, targets: &Tensor) -> Result<f64, Error> {
        let per_sample = |t: Tensor| -> Result<f64, Error> {
            let width = t.dims().get(1).copied().unwrap_or(1).max(1);
            Ok(t.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()? / width as f64)
        };
        match self {
            Metric::Accuracy => Ok(f64::from(
                predictions
                    .argmax(1)?
                    .eq(targets)?
                    .to_dtype(DType::U32)?
                    .sum_all()?
                    .to_scalar::<u32>()?,
            )),
            Metric::MeanSquaredError => per_sample((predictions - targets)?.sqr()?),
            Metric::MeanAbsoluteError => per_sample((predictions - targets)?.abs()?),
        }
    }
}
