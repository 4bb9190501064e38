//! A Keras-like training loop: `fit` and `evaluate`, with callbacks called in Keras's order,
//! and exact resume from full checkpoints, over any framework's [`Step`].

use model_checkpoint::{Callback, CallbackList, Context, Control, Logs, SnapshotFence};

use crate::data::Dataset;
use crate::history::History;
use crate::progress::Progress;
use crate::rng::TrainRng;
use crate::running::Running;
use crate::state::{FitState, TrainingView};
use crate::step::Step;
use crate::{Error, FitOptions};

/// A framework's [`Step`] (model, optimizer, loss, metrics) and where training stands:
/// Keras's compiled `Model`, for `fit` and `evaluate`. The adapters wrap it (candle's
/// `Trainer`, burn's `BurnTrainer`) and supply the step.
pub struct Trainer<S> {
    pub(crate) step: S,
    pub(crate) rng: Option<TrainRng>,
    pub(crate) global_step: u64,
    pub(crate) resume: Option<FitState>,
}

impl<S: Step> Trainer<S> {
    /// A trainer for `step`, at step 0.
    pub fn new(step: S) -> Self {
        Trainer {
            step,
            rng: None,
            global_step: 0,
            resume: None,
        }
    }

    /// The step: the model and its optimizer.
    pub fn step(&self) -> &S {
        &self.step
    }

    /// The step, to change it between `fit` calls (its learning rate, say).
    pub fn step_mut(&mut self) -> &mut S {
        &mut self.step
    }

    /// The step, giving the trainer up.
    pub fn into_step(self) -> S {
        self.step
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
    /// The first callback error (a failed save, say: training stops, as in Keras), the
    /// step's failures ([`Error::Step`]), or [`Error::InvalidOptions`].
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
        self.step.check(train)?;
        if let Some(val) = validation {
            // Validation data the model cannot take (more classes than outputs) would fail
            // deep inside the framework at the first epoch's end.
            self.step.check(val)?;
        }

        let record = options.record();
        let mut state = match self.resume.take() {
            Some(saved) => {
                saved.options.check_resumable(&record)?;
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

        let metrics = self.step.metrics();
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
                let view = TrainingView { step: &self.step, state: &state };
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
                let results = self.step.train_step(&train.batch(indices), &fence)?;
                state.running.add(&results);
                state.global_step += 1;
                state.batches_done = batch + 1;
                logs = state.running.logs(&metrics);
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
                logs = state.running.logs(&metrics);
            }
            if let Some(val) = validation {
                let _ = hook!(on_test_begin(&empty));
                let val_logs =
                    self.evaluate_with(val, options.batch_size, &mut |batch, logs, phase| {
                        let view = TrainingView {
                            step: &self.step,
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
    /// The step's failure, or a zero batch size.
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
        self.step.check(data)?;
        let metrics = self.step.metrics();
        let mut running = Running::default();
        let order: Vec<usize> = (0..data.len()).collect();
        let empty = Logs::new();
        for (batch, indices) in order.chunks(batch_size).enumerate() {
            hook(batch, &empty, Phase::Begin)?;
            running.add(&self.step.test_step(&data.batch(indices))?);
            hook(batch, &running.logs(&metrics), Phase::End)?;
        }
        Ok(running.logs(&metrics))
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
