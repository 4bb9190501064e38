//! A model and its optimizer as one [`Checkpointable`], in any framework: what a
//! hand-written loop hands to `ModelCheckpoint`, and what each adapter's `fit` step
//! checkpoints. The framework says how its model's weights and its optimizer's state go out
//! and back in ([`Framework`]); this module owns where they go in a checkpoint (the
//! optimizer's tensors under [`OPTIMIZER_TENSORS`], its values in the document's optimizer
//! section, the loop's own [`LoopState`]), so that every adapter writes the same layout.

use model_checkpoint::load::within;
use model_checkpoint::store::{LoopState, TrainingDocument, OPTIMIZER_TENSORS};
use model_checkpoint::{Checkpointable, Error, NamedTensor, TensorSource, TrainingState};

/// What a tensor framework supplies to [`TrainingParts`]: its model and optimizer types,
/// and how each hands over and takes back its tensors. Implemented once per adapter
/// (`model_checkpoint_candle::Candle`, `model_checkpoint_burn::Burn`).
pub trait Framework {
    /// The model.
    type Model;
    /// The optimizer that trains it.
    type Optimizer;

    /// The model's weights, by stable name.
    ///
    /// # Errors
    ///
    /// The framework's failure to hand them over.
    fn weights(model: &Self::Model) -> Result<Vec<NamedTensor<'_>>, Error>;

    /// Loads stored weights into the model.
    ///
    /// # Errors
    ///
    /// The load errors (every missing, unexpected or mismatched tensor).
    fn restore_weights(model: &mut Self::Model, stored: &dyn TensorSource) -> Result<(), Error>;

    /// The optimizer's tensors, named relative to the optimizer (`dense_0.weight/m`:
    /// [`TrainingParts`] places them under [`OPTIMIZER_TENSORS`]), and its plain values
    /// (kind, step count, hyperparameters).
    ///
    /// # Errors
    ///
    /// The framework's failure to hand them over.
    fn optimizer_state<'a>(
        optimizer: &'a Self::Optimizer,
        model: &'a Self::Model,
    ) -> Result<(Vec<NamedTensor<'a>>, serde_json::Value), Error>;

    /// Restores what [`Framework::optimizer_state`] returned: `tensors` holds the
    /// optimizer's tensors under the names it gave, `values` its values (absent in a
    /// checkpoint written without an optimizer section).
    ///
    /// # Errors
    ///
    /// [`Error::BadTrainingState`] for values of another optimizer; the load errors.
    fn restore_optimizer(
        optimizer: &mut Self::Optimizer,
        model: &Self::Model,
        tensors: &dyn TensorSource,
        values: Option<&serde_json::Value>,
    ) -> Result<(), Error>;
}

/// What a training loop checkpoints: the model, its optimizer, and the loop's own state
/// (its step, epoch, generator and any values of its own) in [`TrainingParts::loop_state`].
/// Each adapter names it for its framework (`model_checkpoint_candle::TrainingParts`,
/// `model_checkpoint_burn::TrainingParts<M>`).
pub struct TrainingParts<F: Framework> {
    /// The model.
    pub model: F::Model,
    /// Its optimizer.
    pub optimizer: F::Optimizer,
    /// The loop's own state, saved and restored with the rest.
    pub loop_state: LoopState,
}

impl<F: Framework> TrainingParts<F> {
    /// A model and the optimizer that trains it.
    pub fn new(model: F::Model, optimizer: impl Into<F::Optimizer>) -> Self {
        TrainingParts {
            model,
            optimizer: optimizer.into(),
            loop_state: LoopState::default(),
        }
    }
}

impl<F: Framework> Clone for TrainingParts<F>
where
    F::Model: Clone,
    F::Optimizer: Clone,
{
    fn clone(&self) -> Self {
        TrainingParts {
            model: self.model.clone(),
            optimizer: self.optimizer.clone(),
            loop_state: self.loop_state.clone(),
        }
    }
}

impl<F: Framework> Checkpointable for TrainingParts<F> {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        F::weights(&self.model)
    }

    fn training_state(&self) -> Result<TrainingState<'_>, Error> {
        let (tensors, values) = F::optimizer_state(&self.optimizer, &self.model)?;
        let mut state = TrainingState {
            tensors: tensors
                .into_iter()
                .map(|mut t| {
                    t.name = format!("{OPTIMIZER_TENSORS}{}", t.name);
                    t
                })
                .collect(),
            ..TrainingState::default()
        };
        state.document.optimizer = Some(values);
        state.document.loop_state = Some(self.loop_state.clone());
        Ok(state)
    }

    /// Always: the loop's state is a section of its own.
    fn has_training_state(&self) -> Result<bool, Error> {
        Ok(true)
    }

    fn restore_weights(&mut self, stored: &dyn TensorSource) -> Result<(), Error> {
        F::restore_weights(&mut self.model, stored)
    }

    fn restore_training_state(
        &mut self,
        tensors: &dyn TensorSource,
        document: &TrainingDocument,
    ) -> Result<(), Error> {
        F::restore_optimizer(
            &mut self.optimizer,
            &self.model,
            &within(tensors, OPTIMIZER_TENSORS),
            document.optimizer.as_ref(),
        )?;
        self.loop_state = document.loop_state.clone().unwrap_or_default();
        Ok(())
    }
}
