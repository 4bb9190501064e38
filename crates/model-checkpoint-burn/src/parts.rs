//! A burn model and its optimizer as one [`Checkpointable`]: what a hand-written loop hands
//! to `ModelCheckpoint`, and what `fit`'s step checkpoints.

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use model_checkpoint::store::{LoopState, TrainingDocument};
use model_checkpoint::TensorSource;
use model_checkpoint::{Checkpointable, NamedTensor, TrainingState};

use crate::{names, optimizer};

/// A model, its optimizer (state saved under the parameters' module paths, not burn's
/// random ids), and the loop's own state (its step, epoch, generator and any values of its
/// own) in [`TrainingParts::loop_state`].
///
/// ```
/// use burn::optim::AdamConfig;
/// use model_checkpoint::restore::restore;
/// use model_checkpoint::store::{CheckpointFile, Verify};
/// use model_checkpoint::{Callback, Context, Logs, ModelCheckpoint};
/// use model_checkpoint_burn::{cpu, Mlp, TrainingParts};
///
/// let mut parts = TrainingParts::new(Mlp::new(&[4, 3], 0, &cpu())?, AdamConfig::new().init());
/// parts.loop_state.step = 42;
///
/// let dir = tempfile::tempdir()?;
/// let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors"));
/// let mut ctx = Context::new(&parts);
/// cb.on_epoch_begin(0, &Logs::new(), &mut ctx)?;
/// cb.on_epoch_end(0, &Logs::from([("val_loss", 0.5)]), &mut ctx)?;
///
/// let mut fresh = TrainingParts::new(Mlp::new(&[4, 3], 1, &cpu())?, AdamConfig::new().init());
/// let file = CheckpointFile::open(&dir.path().join("w1.safetensors"), Verify::Full)?;
/// restore(&file, &mut fresh, &mut [&mut cb])?;
/// assert_eq!(fresh.loop_state.step, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TrainingParts<M> {
    /// The model.
    pub model: M,
    /// Its optimizer.
    pub optimizer: ModuleOptimizer,
    /// The loop's own state, saved and restored with the rest.
    pub loop_state: LoopState,
}

impl<M: Module> TrainingParts<M> {
    /// A model and the optimizer that trains it.
    pub fn new(model: M, optimizer: ModuleOptimizer) -> Self {
        TrainingParts {
            model,
            optimizer,
            loop_state: LoopState::default(),
        }
    }
}

impl<M: Module> Checkpointable for TrainingParts<M> {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        Ok(names::collect(&self.model)?
            .into_iter()
            .map(|n| NamedTensor::new(n.name, n.tensor))
            .collect())
    }

    fn training_state(&self) -> Result<TrainingState<'_>, model_checkpoint::Error> {
        let (tensors, section) = optimizer::state(&self.optimizer, &self.model)?;
        let mut state = TrainingState {
            tensors,
            ..TrainingState::default()
        };
        state.document.optimizer = Some(section);
        state.document.loop_state = Some(self.loop_state.clone());
        Ok(state)
    }

    fn restore_weights(
        &mut self,
        stored: &dyn TensorSource,
    ) -> Result<(), model_checkpoint::Error> {
        self.model = names::restore(self.model.clone(), stored)?;
        Ok(())
    }

    fn restore_training_state(
        &mut self,
        tensors: &dyn TensorSource,
        document: &TrainingDocument,
    ) -> Result<(), model_checkpoint::Error> {
        self.optimizer = optimizer::restore(&self.optimizer, &self.model, tensors, document)?;
        self.loop_state = document.loop_state.clone().unwrap_or_default();
        Ok(())
    }
}
