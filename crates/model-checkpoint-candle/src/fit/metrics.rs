use super::compile::{Loss, Metric};
use crate::Error;
use candle_core::Tensor;
use model_checkpoint_fit::BatchLogs;

/// One batch's mean loss and each metric's sum over its samples.
pub(super) fn batch_logs(
    loss: &Tensor,
    predictions: &Tensor,
    targets: &Tensor,
    metrics: &[Metric],
) -> Result<BatchLogs, Error> {
    let samples = targets.dims().first().copied().unwrap_or(0);
    let loss = f64::from(loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?);
    let sums = metrics
        .iter()
        .map(|&metric| Ok((metric.name(), metric.batch_sum(predictions, targets)?)))
        .collect::<Result<_, Error>>()?;
    Ok(BatchLogs {
        loss,
        samples,
        sums,
    })
}

/// Refuses a model whose outputs cannot meet the targets, before any training: with
/// class labels, one output per class; with float targets, one per target value.
pub(super) fn check_outputs(
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
