//! burn as a [`Framework`] of `model-checkpoint-fit`: a `Module` and its
//! `ModuleOptimizer`, and how each hands its tensors over and takes them back (the
//! optimizer's state under the parameters' module paths, not burn's random ids). The layout
//! in a checkpoint is fit's [`TrainingParts`]', the same as candle's.

use std::marker::PhantomData;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use model_checkpoint::{NamedTensor, TensorSource};
use model_checkpoint_fit::Framework;

use crate::{names, optimizer};

/// A model, its optimizer (state saved under the parameters' module paths, not burn's
/// random ids), and the loop's own state (its step, epoch, generator and any values of its
/// own) in `loop_state`.
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
pub type TrainingParts<M> = model_checkpoint_fit::TrainingParts<Burn<M>>;

/// burn with model type `M`, for `model-checkpoint-fit`'s [`TrainingParts`] and `fit`.
pub struct Burn<M>(PhantomData<M>);

impl<M: Module> Framework for Burn<M> {
    type Model = M;
    type Optimizer = ModuleOptimizer;

    fn weights(model: &M) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        Ok(names::collect(model)?
            .into_iter()
            .map(|n| NamedTensor::new(n.name, n.tensor))
            .collect())
    }

    fn restore_weights(
        model: &mut M,
        stored: &dyn TensorSource,
    ) -> Result<(), model_checkpoint::Error> {
        *model = names::restore(model.clone(), stored)?;
        Ok(())
    }

    fn optimizer_state<'a>(
        optimizer: &'a ModuleOptimizer,
        model: &'a M,
    ) -> Result<(Vec<NamedTensor<'a>>, serde_json::Value), model_checkpoint::Error> {
        Ok(optimizer::state(optimizer, model)?)
    }

    fn restore_optimizer(
        optimizer: &mut ModuleOptimizer,
        model: &M,
        tensors: &dyn TensorSource,
        values: Option<&serde_json::Value>,
    ) -> Result<(), model_checkpoint::Error> {
        *optimizer = optimizer::restore(optimizer, model, tensors, values)?;
        Ok(())
    }
}
