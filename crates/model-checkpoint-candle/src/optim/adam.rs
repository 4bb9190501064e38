use candle_core::backprop::GradStore;
use candle_core::Var;
use model_checkpoint::Error as CoreError;
use model_checkpoint::NamedTensor;
use model_checkpoint::TensorSource;
use serde::{Deserialize, Serialize};

use super::{float_vars, load_slots, read_values, slot_tensors, zero_slots, Optimizer};
use crate::Error;

/// Adam hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamsAdam {
    /// Learning rate. Default: 0.001.
    pub lr: f64,
    /// Decay of the first moment. Default: 0.9.
    pub beta1: f64,
    /// Decay of the second moment. Default: 0.999.
    pub beta2: f64,
    /// Added to the root of the second moment. Default: 1e-8 (PyTorch's and candle's;
    /// Keras uses 1e-7).
    pub eps: f64,
    /// Weight decay. Default: 0.
    pub weight_decay: f64,
    /// Decoupled weight decay (AdamW) rather than an L2 term added to the gradient (Adam).
    /// Default: false.
    pub decoupled: bool,
}

impl Default for ParamsAdam {
    fn default() -> Self {
        ParamsAdam {
            lr: 0.001,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }
}

impl ParamsAdam {
    /// AdamW with candle-nn's `ParamsAdamW` defaults (weight decay 0.01, decoupled).
    pub fn adamw() -> Self {
        ParamsAdam {
            weight_decay: 0.01,
            decoupled: true,
            ..ParamsAdam::default()
        }
    }

    /// Sets the learning rate.
    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }
}

/// Adam, or AdamW with [`ParamsAdam::adamw`]. With decoupled decay it computes exactly what
/// candle-nn's `AdamW` computes (and with no decay, what Adam computes), in the same order.
pub struct Adam {
    vars: Vec<(String, Var)>,
    first_moment: Vec<Var>,
    second_moment: Vec<Var>,
    step_t: u64,
    params: ParamsAdam,
}

#[derive(Serialize, Deserialize)]
struct SavedAdam {
    kind: String,
    step: u64,
    #[serde(flatten)]
    params: ParamsAdam,
}

impl Adam {
    /// An optimizer for the float variables among `vars`.
    ///
    /// # Errors
    ///
    /// candle's failure to allocate the moments.
    pub fn new(vars: Vec<(String, Var)>, params: ParamsAdam) -> Result<Self, Error> {
        let vars = float_vars(vars);
        Ok(Adam {
            first_moment: zero_slots(&vars)?,
            second_moment: zero_slots(&vars)?,
            vars,
            step_t: 0,
            params,
        })
    }

    /// The hyperparameters.
    pub fn params(&self) -> &ParamsAdam {
        &self.params
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.step_t
    }

    fn kind(&self) -> &'static str {
        if self.params.decoupled {
            "adamw"
        } else {
            "adam"
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &GradStore) -> Result<(), Error> {
        self.step_t += 1;
        let p = &self.params;
        let t = i32::try_from(self.step_t).unwrap_or(i32::MAX);
        let scale_m = 1f64 / (1f64 - p.beta1.powi(t));
        let scale_v = 1f64 / (1f64 - p.beta2.powi(t));
        let lr_lambda = p.lr * p.weight_decay;
        for (((_, theta), m), v) in self
            .vars
            .iter()
            .zip(&self.first_moment)
            .zip(&self.second_moment)
        {
            let Some(g) = grads.get(theta) else { continue };
            let coupled;
            let g = if p.weight_decay != 0.0 && !p.decoupled {
                coupled = (g + (theta.as_tensor() * p.weight_decay)?)?;
                &coupled
            } else {
                g
            };
            let next_m = ((m.as_tensor() * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            let next_v = ((v.as_tensor() * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let next_theta = if p.decoupled {
                (theta.as_tensor() * (1f64 - lr_lambda))?
            } else {
                theta.as_tensor().clone()
            };
            let adjusted = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            let next_theta = (next_theta - (adjusted * p.lr)?)?;
            m.set(&next_m)?;
            v.set(&next_v)?;
            theta.set(&next_theta)?;
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
        let values = serde_json::to_value(SavedAdam {
            kind: self.kind().into(),
            step: self.step_t,
            params: self.params.clone(),
        })
        .unwrap_or_default();
        let slots = [
            ("m", self.first_moment.as_slice()),
            ("v", self.second_moment.as_slice()),
        ];
        Ok((slot_tensors(&self.vars, &slots)?, values))
    }

    fn load_state(
        &mut self,
        tensors: &dyn TensorSource,
        values: &serde_json::Value,
    ) -> Result<(), Error> {
        let saved: SavedAdam = read_values(tensors.path(), self.kind(), values)?;
        // Hyperparameters read from a file are range-checked like counters: a forged
        // negative rate or a step past 2^53 would train garbage without a word.
        let p = &saved.params;
        let checks = [
            ("lr", p.lr > 0.0 && p.lr.is_finite()),
            ("beta1", (0.0..1.0).contains(&p.beta1)),
            ("beta2", (0.0..1.0).contains(&p.beta2)),
            ("eps", p.eps > 0.0 && p.eps.is_finite()),
            (
                "weight_decay",
                p.weight_decay >= 0.0 && p.weight_decay.is_finite(),
            ),
            ("step", saved.step <= model_checkpoint::store::MAX_COUNTER),
        ];
        if let Some((name, _)) = checks.iter().find(|(_, ok)| !ok) {
            return Err(Error::Checkpoint(CoreError::BadTrainingState {
                path: tensors.path().clone(),
                reason: format!("adam optimizer state: {name} is out of range"),
            }));
        }
        load_slots(
            tensors,
            &self.vars,
            &[("m", &self.first_moment), ("v", &self.second_moment)],
        )?;
        self.step_t = saved.step;
        self.params = saved.params;
        Ok(())
    }
}
