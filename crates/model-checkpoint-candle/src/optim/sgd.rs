use candle_core::backprop::GradStore;
use candle_core::Var;
use model_checkpoint::Error as CoreError;
use model_checkpoint::NamedTensor;
use model_checkpoint::TensorSource;
use serde::{Deserialize, Serialize};

use super::{float_vars, load_slots, read_values, slot_tensors, zero_slots, Optimizer};
use crate::Error;

/// SGD hyperparameters (PyTorch's, with dampening 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamsSgd {
    /// Learning rate. Default: 0.01 (Keras's).
    pub lr: f64,
    /// Momentum; 0 is plain SGD. Default: 0.
    pub momentum: f64,
    /// Nesterov momentum. Default: false.
    pub nesterov: bool,
}

impl Default for ParamsSgd {
    fn default() -> Self {
        ParamsSgd {
            lr: 0.01,
            momentum: 0.0,
            nesterov: false,
        }
    }
}

/// Stochastic gradient descent with optional (Nesterov) momentum, as PyTorch defines it:
/// `v = momentum * v + g`, `p -= lr * v` (or `lr * (g + momentum * v)` with Nesterov).
/// Without momentum it is candle-nn's `SGD`, bit for bit.
pub struct Sgd {
    vars: Vec<(String, Var)>,
    velocity: Vec<Var>,
    params: ParamsSgd,
}

#[derive(Serialize, Deserialize)]
struct SavedSgd {
    kind: String,
    #[serde(flatten)]
    params: ParamsSgd,
}

impl Sgd {
    /// An optimizer for the float variables among `vars` (others are not trained).
    ///
    /// # Errors
    ///
    /// candle's failure to allocate the velocity buffers.
    pub fn new(vars: Vec<(String, Var)>, params: ParamsSgd) -> Result<Self, Error> {
        let vars = float_vars(vars);
        let velocity = zero_slots(&vars)?;
        Ok(Sgd {
            vars,
            velocity,
            params,
        })
    }

    /// The hyperparameters.
    pub fn params(&self) -> &ParamsSgd {
        &self.params
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<(), Error> {
        let lr = self.params.lr;
        let momentum = self.params.momentum;
        for ((_, var), velocity) in self.vars.iter().zip(&self.velocity) {
            let Some(grad) = grads.get(var) else { continue };
            if momentum == 0.0 {
                // candle-nn's SGD, operation for operation.
                var.set(&var.sub(&(grad * lr)?)?)?;
                continue;
            }
            let v = ((velocity.as_tensor() * momentum)? + grad)?;
            let update = if self.params.nesterov {
                (grad + (&v * momentum)?)?
            } else {
                v.clone()
            };
            velocity.set(&v)?;
            var.set(&var.sub(&(update * lr)?)?)?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    fn state(&self) -> Result<(Vec<NamedTensor<'_>>, serde_json::Value), Error> {
        let values = serde_json::to_value(SavedSgd {
            kind: "sgd".into(),
            params: self.params.clone(),
        })
        .unwrap_or_default();
        Ok((
            slot_tensors(&self.vars, &[("velocity", &self.velocity)])?,
            values,
        ))
    }

    fn load_state(
        &mut self,
        tensors: &dyn TensorSource,
        values: &serde_json::Value,
    ) -> Result<(), Error> {
        let saved: SavedSgd = read_values(tensors.path(), "sgd", values)?;
        let p = &saved.params;
        if !(p.lr > 0.0 && p.lr.is_finite() && p.momentum >= 0.0 && p.momentum.is_finite()) {
            return Err(Error::Checkpoint(CoreError::BadTrainingState {
                path: tensors.path().clone(),
                reason: "sgd optimizer state: lr or momentum is out of range".into(),
            }));
        }
        load_slots(tensors, &self.vars, &[("velocity", &self.velocity)])?;
        self.params = saved.params;
        Ok(())
    }
}
