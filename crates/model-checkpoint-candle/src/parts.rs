//! A model and its optimizer as one [`Checkpointable`], for hand-written training loops:
//! hand it to `ModelCheckpoint` through a `Context` to save everything, and to
//! `model_checkpoint::restore::restore_latest` to get everything back.

use model_checkpoint::store::{LoopState, TrainingDocument};
use model_checkpoint::TensorSource;
use model_checkpoint::{Checkpointable, NamedTensor, TrainingState};

use crate::{Model, Optimizer};

/// What a hand-written loop checkpoints: the model, its optimizer (moments, step, learning
/// rate), and the loop's own state (its step, epoch, generator and any values of its own) in
/// [`TrainingParts::loop_state`].
///
/// ```
/// use model_checkpoint::restore::restore;
/// use model_checkpoint::store::{CheckpointFile, Verify};
/// use model_checkpoint::{Callback, Context, Logs, ModelCheckpoint};
/// use model_checkpoint_candle::{Adam, Model, ParamsAdam, TrainingParts};
///
/// let model = Model::mlp(&[4, 3], 0)?;
/// let optimizer = Adam::new(model.named_vars(), ParamsAdam::default())?;
/// let mut parts = TrainingParts::new(model, optimizer);
/// parts.loop_state.step = 42;
///
/// let dir = tempfile::tempdir()?;
/// let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors"));
/// let mut ctx = Context::new(&parts);
/// cb.on_epoch_begin(0, &Logs::new(), &mut ctx)?;
/// cb.on_epoch_end(0, &Logs::from([("val_loss", 0.5)]), &mut ctx)?;
///
/// let model = Model::mlp(&[4, 3], 1)?;
/// let optimizer = Adam::new(model.named_vars(), ParamsAdam::default())?;
/// let mut fresh = TrainingParts::new(model, optimizer);
/// let file = CheckpointFile::open(&dir.path().join("w1.safetensors"), Verify::Full)?;
/// restore(&file, &mut fresh, &mut [&mut cb])?;
/// assert_eq!(fresh.loop_state.step, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TrainingParts {
    /// The model.
    pub model: Model,
    /// Its optimizer.
    pub optimizer: Box<dyn Optimizer>,
    /// The loop's own state, saved and restored with the rest.
    pub loop_state: LoopState,
}

impl TrainingParts {
    /// A model and the optimizer that trains it.
    pub fn new(model: Model, optimizer: impl Optimizer + 'static) -> Self {
        TrainingParts {
            model,
            optimizer: Box::new(optimizer),
            loop_state: LoopState::default(),
        }
    }
}

impl Checkpointable for TrainingParts {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        self.model.weights()
    }

    fn training_state(&self) -> Result<TrainingState<'_>, model_checkpoint::Error> {
        let mut state = crate::optim::optimizer_state(self.optimizer.as_ref())?;
        state.document.loop_state = Some(self.loop_state.clone());
        Ok(state)
    }

    fn restore_weights(
        &mut self,
        stored: &dyn TensorSource,
    ) -> Result<(), model_checkpoint::Error> {
        self.model.restore_weights(stored)
    }

    fn restore_training_state(
        &mut self,
        tensors: &dyn TensorSource,
        document: &TrainingDocument,
    ) -> Result<(), model_checkpoint::Error> {
        crate::optim::restore_optimizer(self.optimizer.as_mut(), tensors, document)?;
        self.loop_state = document.loop_state.clone().unwrap_or_default();
        Ok(())
    }
}
