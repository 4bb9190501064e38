//! candle's side of `fit`: the train and test steps of a [`Model`] with an [`Optimizer`], a
//! [`Loss`] and [`Metric`]s. The loop itself, callbacks and exact resume are
//! `model-checkpoint-fit`'s, shared with every framework.

mod compile;
mod metrics;

pub use compile::{Loss, LossFn, Metric};

use candle_core::{Device, Tensor};
use model_checkpoint::TensorSource;
use model_checkpoint::{Checkpointable, NamedTensor, SnapshotFence, TrainingState};
use model_checkpoint_fit::{Batch, BatchLogs, Dataset, Targets};

use crate::optim::Optimizer;
use crate::{Error, Model, TrainingParts};

/// A compiled model, as `fit` steps it: a [`Model`], an [`Optimizer`], a [`Loss`] and
/// [`Metric`]s (Keras's `compile`). By default, sparse categorical cross-entropy on logits
/// and accuracy (`compile(optimizer, loss="sparse_categorical_crossentropy",
/// metrics=["accuracy"])`); [`CandleStep::compile`] takes others (mean squared or absolute
/// error for regression, or a loss of your own). [`Trainer`] trains it, as it trains burn's
/// `BurnStep`.
///
/// ```
/// use model_checkpoint_candle::{Adam, CandleStep, Dataset, FitOptions, Model, ParamsAdam, Trainer};
///
/// let model = Model::mlp(&[64, 32, 10], 0)?;
/// let optimizer = Adam::new(model.named_vars(), ParamsAdam::default().lr(1e-2))?;
/// let mut trainer = Trainer::new(CandleStep::new(model, optimizer));
/// let history = trainer.fit(&Dataset::digits().scaled(), &FitOptions::new(2).verbose(0), &mut [])?;
/// assert!(history.metric("accuracy")[1].is_some_and(|a| a > 0.5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CandleStep {
    parts: TrainingParts,
    loss: Loss,
    metrics: Vec<Metric>,
}

/// `fit` over candle: `model-checkpoint-fit`'s trainer of a [`CandleStep`] (`fit`,
/// `evaluate`, `resume`, `resume_latest`; [`CandleStep::predict`] through
/// [`model_checkpoint_fit::Trainer::step`]).
pub type Trainer = model_checkpoint_fit::Trainer<CandleStep>;

impl CandleStep {
    /// Compiles `model` with `optimizer`.
    pub fn new(model: Model, optimizer: impl Optimizer + 'static) -> Self {
        CandleStep {
            parts: TrainingParts::new(model, optimizer),
            loss: Loss::default(),
            metrics: vec![Metric::Accuracy],
        }
    }

    /// Sets the loss and the metrics (Keras's `compile(loss=..., metrics=[...])`).
    ///
    /// ```
    /// use model_checkpoint_candle::{Adam, CandleStep, Loss, Metric, Model, ParamsAdam};
    ///
    /// let model = Model::mlp(&[1, 8, 1], 0)?;
    /// let optimizer = Adam::new(model.named_vars(), ParamsAdam::default())?;
    /// let step = CandleStep::new(model, optimizer)
    ///     .compile(Loss::MeanSquaredError, &[Metric::MeanAbsoluteError]);
    /// # Ok::<(), model_checkpoint_candle::Error>(())
    /// ```
    pub fn compile(mut self, loss: Loss, metrics: &[Metric]) -> Self {
        self.loss = loss;
        self.metrics = metrics.to_vec();
        self
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.parts.model
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.parts.optimizer.as_ref()
    }

    /// The model and optimizer.
    pub fn parts(&self) -> &TrainingParts {
        &self.parts
    }

    /// The optimizer's learning rate (saved in full checkpoints and restored with them).
    pub fn learning_rate(&self) -> f64 {
        self.parts.optimizer.learning_rate()
    }

    /// Sets the optimizer's learning rate, for example after a resume (which restores the
    /// checkpoint's): from then on the new rate is used, and saved.
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.parts.optimizer.set_learning_rate(lr);
    }

    /// The model's outputs (logits) for every sample of `data` (Keras's `predict`).
    ///
    /// # Errors
    ///
    /// candle's failure, or a zero batch size.
    pub fn predict(&self, data: &Dataset, batch_size: usize) -> Result<Tensor, Error> {
        if batch_size == 0 {
            return Err(Error::options("batch_size must be at least 1"));
        }
        let model = &self.parts.model;
        let order: Vec<usize> = (0..data.len()).collect();
        let outputs = order
            .chunks(batch_size)
            .map(|indices| {
                let (x, _) = batch_tensors(&data.batch(indices), model.device())?;
                model.forward(&x)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Tensor::cat(&outputs, 0)?)
    }
}

/// A batch as candle tensors: features (`n × width`, f32) and labels (`n`, u32) or float
/// targets (`n × width`, f32), for hand-written loops.
///
/// ```
/// use model_checkpoint_candle::{batch_tensors, Dataset};
///
/// let (x, y) = batch_tensors(&Dataset::digits().batch(&[0, 1]), &candle_core::Device::Cpu)?;
/// assert_eq!((x.dims(), y.dims()), (&[2, 64][..], &[2][..]));
/// # Ok::<(), model_checkpoint_candle::Error>(())
/// ```
///
/// # Errors
///
/// candle's failure to build the tensors.
pub fn batch_tensors(batch: &Batch, device: &Device) -> Result<(Tensor, Tensor), Error> {
    let x = Tensor::from_slice(&batch.features, (batch.rows, batch.width), device)?;
    let y = match &batch.targets {
        Targets::Labels(labels) => Tensor::from_slice(labels, batch.rows, device)?,
        Targets::Values { values, width } => {
            Tensor::from_slice(values, (batch.rows, *width), device)?
        }
    };
    Ok((x, y))
}

impl CandleStep {
    /// The batch's loss and metrics, and the loss tensor to differentiate.
    fn run(&self, batch: &Batch) -> Result<(Tensor, BatchLogs), Error> {
        let model = &self.parts.model;
        let (x, y) = batch_tensors(batch, model.device())?;
        let outputs = model.forward(&x)?;
        let loss = self.loss.compute(&outputs, &y)?;
        let logs = metrics::batch_logs(&loss, &outputs, &y, &self.metrics)?;
        Ok((loss, logs))
    }
}

impl model_checkpoint_fit::Step for CandleStep {
    fn metrics(&self) -> Vec<&'static str> {
        self.metrics.iter().map(|m| m.name()).collect()
    }

    fn check(&self, data: &Dataset) -> Result<(), model_checkpoint_fit::Error> {
        if data.is_empty() {
            return Ok(());
        }
        let model = &self.parts.model;
        let (x, _) = batch_tensors(&data.batch(&[0]), model.device())?;
        let outputs = model.forward(&x)?;
        let width = outputs.dims().get(1).copied().unwrap_or(1);
        Ok(metrics::check_outputs(
            &self.loss,
            width,
            data.classes(),
            data.target_width(),
        )?)
    }

    fn train_step(
        &mut self,
        batch: &Batch,
        fence: &SnapshotFence,
    ) -> Result<BatchLogs, model_checkpoint_fit::Error> {
        let (loss, logs) = self.run(batch)?;
        let grads = loss.backward().map_err(Error::from)?;
        fence.wait();
        self.parts.optimizer.step(&grads)?;
        Ok(logs)
    }

    fn test_step(&self, batch: &Batch) -> Result<BatchLogs, model_checkpoint_fit::Error> {
        Ok(self.run(batch)?.1)
    }
}

impl Checkpointable for CandleStep {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        self.parts.weights()
    }

    fn training_state(&self) -> Result<TrainingState<'_>, model_checkpoint::Error> {
        self.parts.training_state()
    }

    fn has_training_state(&self) -> Result<bool, model_checkpoint::Error> {
        self.parts.has_training_state()
    }

    fn restore_weights(
        &mut self,
        stored: &dyn TensorSource,
    ) -> Result<(), model_checkpoint::Error> {
        self.parts.restore_weights(stored)
    }

    fn restore_training_state(
        &mut self,
        tensors: &dyn TensorSource,
        document: &model_checkpoint::store::TrainingDocument,
    ) -> Result<(), model_checkpoint::Error> {
        self.parts.restore_training_state(tensors, document)
    }
}
