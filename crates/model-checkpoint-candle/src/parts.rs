//! candle as a [`Framework`] of `model-checkpoint-fit`: a [`Model`] and a boxed
//! [`Optimizer`], and how each hands its tensors over and takes them back. The layout in a
//! checkpoint (the optimizer's section, the loop's state) is fit's [`TrainingParts`]',
//! the same as burn's.

use model_checkpoint::{Checkpointable, NamedTensor, TensorSource};
use model_checkpoint_fit::Framework;

use crate::{Model, Optimizer};

/// What a hand-written loop checkpoints: the model, its optimizer (moments, step, learning
/// rate), and the loop's own state (its step, epoch, generator and any values of its own) in
/// `loop_state`.
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
pub type TrainingParts = model_checkpoint_fit::TrainingParts<Candle>;

/// candle, for `model-checkpoint-fit`'s [`TrainingParts`] and `fit`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Candle;

impl Framework for Candle {
    type Model = Model;
    type Optimizer = Box<dyn Optimizer>;

    fn weights(model: &Model) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        model.weights()
    }

    fn restore_weights(
        model: &mut Model,
        stored: &dyn TensorSource,
    ) -> Result<(), model_checkpoint::Error> {
        model.restore_weights(stored)
    }

    fn optimizer_state<'a>(
        optimizer: &'a Box<dyn Optimizer>,
        _model: &'a Model,
    ) -> Result<(Vec<NamedTensor<'a>>, serde_json::Value), model_checkpoint::Error> {
        Ok(optimizer.state()?)
    }

    fn restore_optimizer(
        optimizer: &mut Box<dyn Optimizer>,
        _model: &Model,
        tensors: &dyn TensorSource,
        values: Option<&serde_json::Value>,
    ) -> Result<(), model_checkpoint::Error> {
        let values = values.cloned().unwrap_or_default();
        Ok(optimizer.load_state(tensors, &values)?)
    }
}

/// Any optimizer boxes into the one `TrainingParts` and `CandleStep` hold.
impl<O: Optimizer + 'static> From<O> for Box<dyn Optimizer> {
    fn from(optimizer: O) -> Self {
        Box::new(optimizer)
    }
}
