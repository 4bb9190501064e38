//! A Keras-like training loop: `fit`, `evaluate` and `predict` on a classification model,
//! with callbacks called in Keras's order, and exact resume from full checkpoints.

mod compile;
mod history;
mod metrics;
mod progress;
mod resume;
mod state;

pub use compile::{Loss, LossFn, Metric};
pub use history::History;
pub use resume::Resumed;

use candle_core::Tensor;
use model_checkpoint::{Callback, CallbackList, Context, Control, Logs, SnapshotFence};

use crate::data::Dataset;
use crate::optim::Optimizer;
use crate::rng::TrainRng;
use crate::{Error, Model};
use metrics::Running;
use progress::Progress;
use state::{FitRecord, FitState, TrainingView};

/// Options of one `fit` call, with Keras's names and defaults.
///
/// ```
/// use model_checkpoint_candle::FitOptions;
///
/// let options = FitOptions::new(10).batch_size(64).validation_split(0.2).verbose(0);
/// assert_eq!(options.epochs, 10);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FitOptions<'a> {
    /// The epoch to stop before (a total, not a count: resuming at epoch 3 with `epochs` 10
    /// runs epochs 3–9, as in Keras).
    pub epochs: usize,
    /// Samples per training batch. Default: 32.
    pub batch_size: usize,
    /// Shuffle the training samples every epoch. Default: true.
    pub shuffle: bool,
    /// Hold out this last fraction of the training data for validation. Default: none.
    pub validation_split: Option<f64>,
    /// Validate on this data instead. Default: none.
    pub validation_data: Option<&'a Dataset>,
    /// The epoch to start at when not resuming. Default: 0.
    pub initial_epoch: usize,
    /// 0 silent, 1 progress bar, 2 one line per epoch. Default: 1.
    pub verbose: u8,
    /// Seed of the shuffling generator, used when the trainer has none yet. Default: 0.
    pub seed: u64,
}

impl<'a> FitOptions<'a> {
    /// Options for `epochs` epochs, the rest Keras's defaults.
    pub fn new(epochs: usize) -> Self {
        FitOptions {
            epochs,
            batch_size: 32,
            shuffle: true,
            validation_split: None,
            validation_data: None,
            initial_epoch: 0,
            verbose: 1,
            seed: 0,
        }
    }
    /// Sets [`FitOptions::batch_size`].
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }
    /// Sets [`FitOptions::shuffle`].
    pub fn shuffle(mut self, yes: bool) -> Self {
        self.shuffle = yes;
        self
    }
    /// Sets [`FitOptions::validation_split`].
    pub fn validation_split(mut self, fraction: f64) -> Self {
        self.validation_split = Some(fraction);
        self
    }
    /// Sets [`FitOptions::validation_data`].
    pub fn validation_data(mut self, data: &'a Dataset) -> Self {
        self.validation_data = Some(data);
        self
    }
    /// Sets [`FitOptions::initial_epoch`].
    pub fn initial_epoch(mut self, epoch: usize) -> Self {
        self.initial_epoch = epoch;
        self
    }
    /// Sets [`FitOptions::verbose`].
    pub fn verbose(mut self, verbose: u8) -> Self {
        self.verbose = verbose;
        self
    }
    /// Sets [`FitOptions::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    fn record(&self) -> FitRecord {
        FitRecord {
            epochs: self.epochs,
            batch_size: self.batch_size,
            shuffle: self.shuffle,
            validation_split: self.validation_split,
            seed: self.seed,
        }
    }
}

/// A compiled model: a [`Model`], an [`Optimizer`], a [`Loss`] and [`Metric`]s (Keras's
/// `compile`). By default, sparse categorical cross-entropy on logits and accuracy
/// (`compile(optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])`);
/// [`Trainer::compile`] takes others (mean squared or absolute error for regression, or a
/// loss of your own).
pub struct Trainer {
    model: Model,
    optimizer: Box<dyn Optimizer>,
    loss: Loss,
    metrics: Vec<Metric>,
    rng: Option<TrainRng>,
    global_step: u64,
    resume: Option<FitState>,
}

impl Trainer {
    /// Compiles `model` with `optimizer`.
    pub fn new(model: Model, optimizer: impl Optimizer + 'static) -> Self {
        Trainer {
            model,
            optimizer: Box::new(optimizer),
            loss: Loss::default(),
            metrics: vec![Metric::Accuracy],
            rng: None,
            global_step: 0,
            resume: None,
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
        self.loss = loss;
        self.metrics = metrics.to_vec();
        self
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.optimizer.as_ref()
    }

    /// Sets the optimizer's learning rate, for example after [`Trainer::resume`] (which
    /// restores the checkpoint's): from then on the new rate is used, and saved.
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.optimizer.set_learning_rate(lr);
    }

    /// Optimizer steps taken so far (across `fit` calls and resumes).
    pub fn global_step(&self) -> u64 {
        self.global_step
    }

    /// Trains on `train` for `options.epochs` epochs, calling `callbacks` in Keras's order:
    /// `on_train_begin`; per epoch `on_epoch_begin`, per batch `on_train_batch_begin` and
    /// `on_train_batch_end` (with the epoch's running `loss` and `accuracy`), validation with
    /// the `on_test_*` hooks, `on_epoch_end` (with `val_loss` and `val_accuracy` when
    /// validating); `on_train_end`.
    ///
    /// After [`Trainer::resume`], training continues exactly where the checkpoint was taken.
    ///
    /// # Errors
    ///
    /// The first callback error (a failed save, say: training stops, as in Keras), candle's
    /// failures, or [`Error::InvalidOptions`].
    pub fn fit(
        &mut self,
        train: &Dataset,
        options: &FitOptions<'_>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History, Error> {
        if options.batch_size == 0 {
            return Err(Error::options("batch_size must be at least 1"));
        }
        let split;
        let (train, validation) = match (options.validation_split, options.validation_data) {
            (Some(_), Some(_)) => {
                return Err(Error::options(
                    "give validation_split or validation_data, not both",
                ))
            }
            (Some(fraction), None) => {
                split = train.split_last(fraction)?;
                (&split.0, Some(&split.1))
            }
            (None, data) => (train, data),
        };
        if let Some(val) = validation {
            if val.width() != train.width() {
                return Err(Error::options(format!(
                    "validation samples have {} features, training samples {}",
                    val.width(),
                    train.width()
                )));
            }
        }
        self.check_outputs(train)?;

        let record = options.record();
        let mut state = match self.resume.take() {
            Some(saved) => {
                resume::check_compatible(&saved.options, &record)?;
                let mut s = saved;
                s.options = record;
                s
            }
            None => {
                let rng = self.rng.get_or_insert_with(|| TrainRng::new(options.seed));
                FitState {
                    options: record,
                    epoch: options.initial_epoch,
                    epoch_complete: false,
                    batches_done: 0,
                    global_step: self.global_step,
                    rng_epoch_start: rng.state(),
                    rng: rng.state(),
                    running: Running::default(),
                    history: History::default(),
                }
            }
        };
        // Where to start: after a completed epoch, the next one from its first batch; inside
        // an epoch, that epoch from the next batch, with its order rebuilt from the saved
        // generator.
        let (first_epoch, mut skip) = if state.epoch_complete {
            (state.epoch + 1, 0)
        } else {
            (state.epoch, state.batches_done)
        };
        let mut rng = if skip > 0 {
            TrainRng::from_state(&state.rng_epoch_start)
        } else {
            TrainRng::from_state(&state.rng)
        }
        .ok_or_else(|| Error::options("the saved generator state is malformed"))?;

        let steps = train.len().div_ceil(options.batch_size);
        let mut progress = Progress::new(options.verbose, options.epochs, steps);
        let mut callbacks = CallbackList::borrowed(callbacks);
        let empty = Logs::new();
        let mut last_logs = Logs::new();
        let mut history = History::default();

        // Background saves copy the weights while the next step computes; every change to
        // a weight or optimizer tensor waits for the copy (before the optimizer step, and
        // before fit returns, on any path).
        let fence = SnapshotFence::new();
        let _wait = WaitOnDrop(&fence);

        macro_rules! hook {
            ($method:ident($($arg:expr),*)) => {{
                let view = TrainingView { model: &self.model, optimizer: self.optimizer.as_ref(), state: &state };
                let mut ctx = Context::new(&view).with_global_step(state.global_step).with_fence(&fence);
                callbacks.$method($($arg,)* &mut ctx)?
            }};
        }

        let _ = hook!(on_train_begin(&empty));
        // StopTraining ends training after the epoch (Keras); Interrupt ends it now.
        let mut control = Control::Continue;
        for epoch in first_epoch..options.epochs {
            if skip == 0 {
                state.rng_epoch_start = rng.state();
                state.running = Running::default();
            }
            let mut order: Vec<usize> = (0..train.len()).collect();
            if options.shuffle {
                rng.shuffle(&mut order);
            }
            state.rng = rng.state();
            state.epoch = epoch;
            state.epoch_complete = false;
            state.batches_done = skip;

            progress.epoch_begin(epoch, skip);
            control = control.and(hook!(on_epoch_begin(epoch, &empty)));
            let mut logs = Logs::new();
            for (batch, indices) in order.chunks(options.batch_size).enumerate().skip(skip) {
                control = control.and(hook!(on_train_batch_begin(batch, &empty)));
                if control == Control::Interrupt {
                    break;
                }
                let (x, y) = train.batch(indices, self.model.device())?;
                let outputs = self.model.forward(&x)?;
                let loss = self.loss.compute(&outputs, &y)?;
                let grads = loss.backward()?;
                fence.wait();
                self.optimizer.step(&grads)?;
                state.running.add(&loss, &outputs, &y, &self.metrics)?;
                state.global_step += 1;
                state.batches_done = batch + 1;
                logs = state.running.logs(&self.metrics);
                progress.batch_end(batch + 1, &logs);
                control = control.and(hook!(on_train_batch_end(batch, &logs)));
                if control != Control::Continue {
                    break;
                }
            }
            skip = 0;
            if control == Control::Interrupt {
                history.interrupted = true;
                break;
            }
            if logs.is_empty() {
                logs = state.running.logs(&self.metrics);
            }
            if let Some(val) = validation {
                let _ = hook!(on_test_begin(&empty));
                let val_logs =
                    self.evaluate_with(val, options.batch_size, &mut |batch, logs, phase| {
                        let view = TrainingView {
                            model: &self.model,
                            optimizer: self.optimizer.as_ref(),
                            state: &state,
                        };
                        let mut ctx = Context::new(&view)
                            .with_global_step(state.global_step)
                            .with_fence(&fence);
                        match phase {
                            Phase::Begin => callbacks.on_test_batch_begin(batch, logs, &mut ctx),
                            Phase::End => callbacks.on_test_batch_end(batch, logs, &mut ctx),
                        }
                        .map(|_| ())
                    })?;
                let _ = hook!(on_test_end(&val_logs));
                for (k, v) in val_logs.iter() {
                    logs.insert(format!("val_{k}"), v);
                }
            }
            // The epoch is complete before on_epoch_end, so that a full checkpoint taken
            // there resumes at the next epoch, with this epoch in its history.
            state.epoch_complete = true;
            state.history.record(epoch, &logs);
            history.record(epoch, &logs);
            progress.epoch_end(&logs);
            control = control.and(hook!(on_epoch_end(epoch, &logs)));
            history.interrupted = control == Control::Interrupt;
            last_logs = logs;
            if control != Control::Continue {
                break;
            }
        }
        let _ = hook!(on_train_end(&last_logs));
        self.global_step = state.global_step;
        self.rng = Some(rng);
        Ok(history)
    }

    /// The loss and metrics on `data` (Keras's `evaluate`), in batches of `batch_size`.
    ///
    /// # Errors
    ///
    /// candle's failure, or a zero batch size.
    pub fn evaluate(&self, data: &Dataset, batch_size: usize) -> Result<Logs, Error> {
        self.evaluate_with(data, batch_size, &mut |_, _, _| Ok(()))
    }

    fn evaluate_with(
        &self,
        data: &Dataset,
        batch_size: usize,
        hook: &mut dyn FnMut(usize, &Logs, Phase) -> Result<(), model_checkpoint::Error>,
    ) -> Result<Logs, Error> {
        if batch_size == 0 {
            return Err(Error::options("batch_size must be at least 1"));
        }
        self.check_outputs(data)?;
        let mut running = Running::default();
        let order: Vec<usize> = (0..data.len()).collect();
        let empty = Logs::new();
        for (batch, indices) in order.chunks(batch_size).enumerate() {
            hook(batch, &empty, Phase::Begin)?;
            let (x, y) = data.batch(indices, self.model.device())?;
            let outputs = self.model.forward(&x)?;
            let loss = self.loss.compute(&outputs, &y)?;
            running.add(&loss, &outputs, &y, &self.metrics)?;
            hook(batch, &running.logs(&self.metrics), Phase::End)?;
        }
        Ok(running.logs(&self.metrics))
    }

    /// Refuses, before any step, a model whose outputs cannot meet the data's targets (a
    /// classifier with fewer outputs than classes would fail deep inside candle).
    fn check_outputs(&self, data: &Dataset) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let (x, _) = data.batch(&[0], self.model.device())?;
        let outputs = self.model.forward(&x)?;
        let width = outputs.dims().get(1).copied().unwrap_or(1);
        metrics::check_outputs(&self.loss, width, data.classes(), data.target_width())
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
        let order: Vec<usize> = (0..data.len()).collect();
        let outputs = order
            .chunks(batch_size)
            .map(|indices| {
                let (x, _) = data.batch(indices, self.model.device())?;
                self.model.forward(&x)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Tensor::cat(&outputs, 0)?)
    }
}

/// Waits on the fence when dropped, so that no background copy outlives `fit`.
struct WaitOnDrop<'a>(&'a SnapshotFence);

impl Drop for WaitOnDrop<'_> {
    fn drop(&mut self) {
        self.0.wait();
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Begin,
    End,
}
