//! candle's side of `fit`: the train and test steps of a [`Model`] with an [`Optimizer`], a
//! [`Loss`] and [`Metric`]s. The loop itself, callbacks and exact resume are
//! `model-checkpoint-fit`'s, shared with every framework.

mod compile;
mod metrics;

pub use compile::{Loss, LossFn, Metric};

use std::path::Path;

use candle_core::{Device, Tensor};
use model_checkpoint::store::CheckpointFile;
use model_checkpoint::TensorSource;
use model_checkpoint::{Callback, Checkpointable, Logs, NamedTensor, SnapshotFence, TrainingState};
use model_checkpoint_fit::{Batch, BatchLogs, Dataset, FitOptions, History, Resumed, Targets};

use crate::optim::Optimizer;
use crate::{Error, Model};

/// A compiled model: a [`Model`], an [`Optimizer`], a [`Loss`] and [`Metric`]s (Keras's
/// `compile`). By default, sparse categorical cross-entropy on logits and accuracy
/// (`compile(optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])`);
/// [`Trainer::compile`] takes others (mean squared or absolute error for regression, or a
/// loss of your own).
pub struct Trainer {
    inner: model_checkpoint_fit::Trainer<CandleStep>,
}

/// The model, optimizer, loss and metrics, as `fit` steps them.
struct CandleStep {
    model: Model,
    optimizer: Box<dyn Optimizer>,
    loss: Loss,
    metrics: Vec<Metric>,
}

impl Trainer {
    /// Compiles `model` with `optimizer`.
    pub fn new(model: Model, optimizer: impl Optimizer + 'static) -> Self {
        Trainer {
            inner: model_checkpoint_fit::Trainer::new(CandleStep {
                model,
                optimizer: Box::new(optimizer),
                loss: Loss::default(),
                metrics: vec![Metric::Accuracy],
            }),
        }
    }

    /// Sets the loss and the metrics (Keras's `compile(loss=..., metrics=[...])`).
    ///
    /// ```
    /// use model_checkpoint_candle::{Adam, Loss, Metric, Model, ParamsAdam, Trainer};
    ///
    /// let model = Model::mlp(&[1, 8, 1], 0)?;
    /// let optimizer = Adam::new(model.named_vars(), ParamsAdam::default())?;
    /// let trainer = Trainer::new(model, optimizer)
    ///     .compile(Loss::MeanSquaredError, &[Metric::MeanAbsoluteError]);
    /// # Ok::<(), model_checkpoint_candle::Error>(())
    /// ```
    pub fn compile(mut self, loss: Loss, metrics: &[Metric]) -> Self {
        let step = self.inner.step_mut();
        step.loss = loss;
        step.metrics = metrics.to_vec();
        self
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.inner.step().model
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.inner.step().optimizer.as_ref()
    }

    /// Sets the optimizer's learning rate, for example after [`Trainer::resume`] (which
    /// restores the checkpoint's): from then on the new rate is used, and saved.
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.inner.step_mut().optimizer.set_learning_rate(lr);
    }

    /// Optimizer steps taken so far (across `fit` calls and resumes).
    pub fn global_step(&self) -> u64 {
        self.inner.global_step()
    }

    /// Trains on `train` for `options.epochs` epochs, calling `callbacks` in Keras's order
    /// (see [`model_checkpoint_fit::Trainer::fit`]). After [`Trainer::resume`], training
    /// continues exactly where the checkpoint was taken.
    ///
    /// # Errors
    ///
    /// The first callback error (a failed save, say: training stops, as in Keras), candle's
    /// failures, or invalid options.
    pub fn fit(
        &mut self,
        train: &Dataset,
        options: &FitOptions<'_>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History, Error> {
        Ok(self.inner.fit(train, options, callbacks)?)
    }

    /// The loss and metrics on `data` (Keras's `evaluate`), in batches of `batch_size`.
    ///
    /// # Errors
    ///
    /// candle's failure, or a zero batch size.
    pub fn evaluate(&self, data: &Dataset, batch_size: usize) -> Result<Logs, Error> {
        Ok(self.inner.evaluate(data, batch_size)?)
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
        let model = &self.inner.step().model;
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

    /// Restores the model, the optimizer, the counters, the generator, and the state of every
    /// callback in `callbacks` that the checkpoint holds, so that the next [`Trainer::fit`]
    /// continues exactly where the checkpoint was taken. Verifies every checksum first.
    ///
    /// # Errors
    ///
    /// As [`model_checkpoint_fit::Trainer::resume`]. The trainer must not be used after an
    /// error: some variables may already have changed.
    pub fn resume(
        &mut self,
        path: impl AsRef<Path>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<Resumed, Error> {
        Ok(self.inner.resume(path, callbacks)?)
    }

    /// Like [`Trainer::resume`], from a file already open (from any
    /// [`model_checkpoint::store::Storage`]).
    ///
    /// # Errors
    ///
    /// As [`Trainer::resume`].
    pub fn resume_from(
        &mut self,
        file: &CheckpointFile,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<Resumed, Error> {
        Ok(self.inner.resume_from(file, callbacks)?)
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
        let (x, y) = batch_tensors(batch, self.model.device())?;
        let outputs = self.model.forward(&x)?;
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
        let (x, _) = batch_tensors(&data.batch(&[0]), self.model.device())?;
        let outputs = self.model.forward(&x)?;
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
        self.optimizer.step(&grads)?;
        Ok(logs)
    }

    fn test_step(&self, batch: &Batch) -> Result<BatchLogs, model_checkpoint_fit::Error> {
        Ok(self.run(batch)?.1)
    }
}

impl Checkpointable for CandleStep {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        self.model.weights()
    }

    fn training_state(&self) -> Result<TrainingState<'_>, model_checkpoint::Error> {
        Ok(crate::optim::optimizer_state(self.optimizer.as_ref())?)
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
        document: &model_checkpoint::store::TrainingDocument,
    ) -> Result<(), model_checkpoint::Error> {
        Ok(crate::optim::restore_optimizer(
            self.optimizer.as_mut(),
            tensors,
            document,
        )?)
    }
}
