//! Optimizers whose whole state (moments, step count, hyperparameters) can be saved and
//! restored, for exact resume. candle-nn's `AdamW` keeps its moments and step private, so
//! these reimplement SGD and Adam/AdamW with candle-nn's arithmetic, operation for
//! operation: on the same inputs they give the same bits.

mod adam;
mod sgd;

pub use adam::{Adam, ParamsAdam};
pub use sgd::{ParamsSgd, Sgd};

use candle_core::backprop::GradStore;
use candle_core::Var;
use model_checkpoint::load::LoadOptions;
use model_checkpoint::Error as CoreError;
use model_checkpoint::{NamedTensor, TensorSource};

use crate::adapter::{load_vars, CandleTensor};
use crate::Error;

/// An optimizer `fit` can drive and checkpoint.
pub trait Optimizer {
    /// Applies one update from `grads`.
    ///
    /// # Errors
    ///
    /// candle's failure.
    fn step(&mut self, grads: &GradStore) -> Result<(), Error>;

    /// The learning rate.
    fn learning_rate(&self) -> f64;

    /// Changes the learning rate.
    fn set_learning_rate(&mut self, lr: f64);

    /// The state tensors, named `VAR/SLOT` (`dense_0.weight/m`), and the plain values
    /// (`kind`, step count, hyperparameters).
    ///
    /// # Errors
    ///
    /// [`model_checkpoint::Error::DtypeMismatch`] for a state dtype safetensors cannot hold.
    fn state(&self) -> Result<(Vec<NamedTensor<'_>>, serde_json::Value), Error>;

    /// Restores what [`Optimizer::state`] returned, from the optimizer's tensors in `tensors`
    /// (named `VAR/SLOT`, as [`Optimizer::state`] names them).
    ///
    /// # Errors
    ///
    /// [`model_checkpoint::Error::BadTrainingState`] when the values are for another optimizer or malformed;
    /// the tensor errors of loading (missing, shape, dtype).
    fn load_state(
        &mut self,
        tensors: &dyn TensorSource,
        values: &serde_json::Value,
    ) -> Result<(), Error>;
}

/// The trainable variables: candle's optimizers train float variables only.
pub(crate) fn float_vars(vars: Vec<(String, Var)>) -> Vec<(String, Var)> {
    vars.into_iter()
        .filter(|(_, v)| v.dtype().is_float())
        .collect()
}

/// One zero slot variable per variable, of its shape, dtype and device.
pub(crate) fn zero_slots(vars: &[(String, Var)]) -> Result<Vec<Var>, Error> {
    Ok(vars
        .iter()
        .map(|(_, v)| Var::zeros(v.shape(), v.dtype(), v.device()))
        .collect::<candle_core::Result<_>>()?)
}

/// Slot variables (one per model variable) named `VAR/SLOT`, as state tensors.
pub(crate) fn slot_tensors<'a>(
    vars: &'a [(String, Var)],
    slots: &[(&str, &'a [Var])],
) -> Result<Vec<NamedTensor<'a>>, Error> {
    let mut out = Vec::new();
    for (slot, values) in slots {
        for ((name, _), v) in vars.iter().zip(values.iter()) {
            out.push(NamedTensor::new(
                format!("{name}/{slot}"),
                CandleTensor::new(v.as_tensor())?,
            ));
        }
    }
    Ok(out)
}

/// Loads slot variables saved by [`slot_tensors`].
pub(crate) fn load_slots(
    source: &dyn TensorSource,
    vars: &[(String, Var)],
    slots: &[(&str, &[Var])],
) -> Result<(), Error> {
    let named: Vec<(String, Var)> = slots
        .iter()
        .flat_map(|(slot, values)| {
            vars.iter()
                .zip(values.iter())
                .map(move |((name, _), v)| (format!("{name}/{slot}"), v.clone()))
        })
        .collect();
    // Strict: every slot of every variable, and nothing else of the optimizer's.
    load_vars(source, &named, LoadOptions::default()).map(drop)
}

/// Reads the saved values back into `T`, checking the optimizer kind.
pub(crate) fn read_values<T: serde::de::DeserializeOwned>(
    path: &model_checkpoint::store::Name,
    kind: &str,
    values: &serde_json::Value,
) -> Result<T, Error> {
    let saved_kind = values
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("none");
    if saved_kind != kind {
        return Err(Error::Checkpoint(CoreError::BadTrainingState {
            path: path.clone(),
            reason: format!(
                "the checkpoint holds {saved_kind} optimizer state, this run uses {kind}"
            ),
        }));
    }
    serde_json::from_value(values.clone()).map_err(|e| {
        Error::Checkpoint(CoreError::BadTrainingState {
            path: path.clone(),
            reason: format!("{kind} optimizer state is malformed: {e}"),
        })
    })
}

#[cfg(test)]
mod tests;
