//! A Keras-like training loop: `fit` and `evaluate`, with callbacks called in Keras's order,
//! and exact resume from full checkpoints, over any framework's [`Step`].

use model_checkpoint::{Callback, CallbackList, Context, Control, HookResult, Logs, SnapshotFence};

use crate::data::Dataset;
use crate::history::History;
use crate::progress::Progress;
use crate::rng::TrainRng;
use crate::running::Running;
use crate::state::{FitState, TrainingView};
use crate::step::Step;
use crate::{Error, FitOptions};

/// A framework's [`Step`] (model, optimizer, loss, metrics) and where training stands:
/// Keras's compiled `Model`, for `fit` and `evaluate`. Every adapter supplies only the
/// step (candle's `CandleStep`, burn's `BurnStep`) and trains with this one type.
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
        self.check_data(train, validation)?;
        let mut state = self.start(options)?;
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
        // A checkpoint's count of batches done is untrusted: one past this data's epoch
        // would skip the epoch unseen.
        if skip > steps {
            return Err(Error::options(format!(
                "the checkpoint resumed from was saved after batch {skip} of epoch {}, but an \
                 epoch of this data has {steps} batches: resume with the data and batch size \
                 it was saved with",
                first_epoch + 1
            )));
        }
        let mut run = Run {
            hooks: Hooks {
                callbacks: CallbackList::borrowed(callbacks),
                fence: SnapshotFence::new(),
            },
            progress: Progress::new(options.verbose, options.epochs, steps),
            metrics: self.step.metrics(),
            history: History::default(),
        };
        // Background saves copy the weights while the next step computes; every change to
        // a weight or optimizer tensor waits for the copy (before the optimizer step, and
        // before fit returns, on any path: `Hooks` waits when dropped).
        let result = self.epochs(
            &mut run,
            &mut state,
            &mut rng,
            first_epoch,
            &mut skip,
            train,
            validation,
            options,
        );
        let last_logs = result?;
        run.hooks
            .call(&self.step, &state, |c, ctx| c.on_train_end(&last_logs, ctx))?;
        self.global_step = state.global_step;
        self.rng = Some(rng);
        Ok(run.history)
    }

    /// Refuses data the step cannot take, before any hook: validation samples of another
    /// width, or data the model cannot be trained on (more classes than outputs would fail
    /// deep inside the framework at the first epoch's end).
    fn check_data(&self, train: &Dataset, validation: Option<&Dataset>) -> Result<(), Error> {
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
            self.step.check(val)?;
        }
        Ok(())
    }

    /// Whether a `fit` with `options` can continue the resumed checkpoint exactly (its batch
    /// size, shuffling, validation split and seed); `Ok` when nothing was resumed. `fit`
    /// checks it too: this is for saying so before anything else, such as where training
    /// will continue.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] naming each option that differs, as recorded and as given.
    pub fn check_resume(&self, options: &FitOptions<'_>) -> Result<(), Error> {
        match &self.resume {
            Some(saved) => saved.options.check_resumable(&options.record()),
            None => Ok(()),
        }
    }

    /// Where this `fit` starts: the state a resume restored (refused with other options),
    /// or a fresh one at `options.initial_epoch`.
    fn start(&mut self, options: &FitOptions<'_>) -> Result<FitState, Error> {
        let record = options.record();
        Ok(match self.resume.take() {
            Some(mut saved) => {
                saved.options.check_resumable(&record)?;
                saved.options = record;
                saved
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
        })
    }

    /// `on_train_begin`, then the epochs until the last, a stop or an interrupt; the logs
    /// of the last epoch completed (for `on_train_end`).
    #[allow(clippy::too_many_arguments)]
    fn epochs(
        &mut self,
        run: &mut Run<'_>,
        state: &mut FitState,
        rng: &mut TrainRng,
        first_epoch: usize,
        skip: &mut usize,
        train: &Dataset,
        validation: Option<&Dataset>,
        options: &FitOptions<'_>,
    ) -> Result<Logs, Error> {
        let empty = Logs::new();
        run.hooks
            .call(&self.step, state, |c, ctx| c.on_train_begin(&empty, ctx))?;
        let mut last_logs = Logs::new();
        for epoch in first_epoch..options.epochs {
            if *skip == 0 {
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
            state.batches_done = *skip;

            run.progress.epoch_begin(epoch, *skip);
            let begin = run.hooks.call(&self.step, state, |c, ctx| {
                c.on_epoch_begin(epoch, &empty, ctx)
            })?;
            let (mut logs, control) = self.batches(
                run,
                state,
                &order,
                std::mem::take(skip),
                train,
                options,
                begin,
            )?;
            // StopTraining ends training after the epoch (Keras); Interrupt ends it now.
            if control == Control::Interrupt {
                run.history.interrupted = true;
                break;
            }
            if let Some(val) = validation {
                let val_logs = self.validate(run, state, val, options.batch_size)?;
                for (k, v) in val_logs.iter() {
                    logs.insert(format!("val_{k}"), v);
                }
            }
            // The epoch is complete before on_epoch_end, so that a full checkpoint taken
            // there resumes at the next epoch, with this epoch in its history.
            state.epoch_complete = true;
            state.history.record(epoch, &logs);
            run.history.record(epoch, &logs);
            run.progress.epoch_end(&logs);
            let control = control.and(run.hooks.call(&self.step, state, |c, ctx| {
                c.on_epoch_end(epoch, &logs, ctx)
            })?);
            run.history.interrupted = control == Control::Interrupt;
            last_logs = logs;
            if control != Control::Continue {
                break;
            }
        }
        Ok(last_logs)
    }

    /// One epoch's training batches in `order`, from batch `skip` on; the epoch's running
    /// logs and what the callbacks asked for.
    #[allow(clippy::too_many_arguments)]
    fn batches(
        &mut self,
        run: &mut Run<'_>,
        state: &mut FitState,
        order: &[usize],
        skip: usize,
        train: &Dataset,
        options: &FitOptions<'_>,
        mut control: Control,
    ) -> Result<(Logs, Control), Error> {
        let empty = Logs::new();
        let mut logs = Logs::new();
        for (batch, indices) in order.chunks(options.batch_size).enumerate().skip(skip) {
            control = control.and(run.hooks.call(&self.step, state, |c, ctx| {
                c.on_train_batch_begin(batch, &empty, ctx)
            })?);
            if control == Control::Interrupt {
                break;
            }
            let results = self
                .step
                .train_step(&train.batch(indices), &run.hooks.fence)?;
            state.running.add(&results);
            state.global_step += 1;
            state.batches_done = batch + 1;
            logs = state.running.logs(&run.metrics);
            run.progress.batch_end(batch + 1, &logs);
            control = control.and(run.hooks.call(&self.step, state, |c, ctx| {
                c.on_train_batch_end(batch, &logs, ctx)
            })?);
            if control != Control::Continue {
                break;
            }
        }
        if logs.is_empty() {
            logs = state.running.logs(&run.metrics);
        }
        Ok((logs, control))
    }

    /// Validation at an epoch's end, with the `on_test_*` hooks.
    fn validate(
        &self,
        run: &mut Run<'_>,
        state: &FitState,
        val: &Dataset,
        batch_size: usize,
    ) -> Result<Logs, Error> {
        let empty = Logs::new();
        run.hooks
            .call(&self.step, state, |c, ctx| c.on_test_begin(&empty, ctx))?;
        let hooks = &mut run.hooks;
        let val_logs = self.evaluate_with(val, batch_size, &mut |batch, logs, phase| {
            hooks
                .call(&self.step, state, |c, ctx| match phase {
                    Phase::Begin => c.on_test_batch_begin(batch, logs, ctx),
                    Phase::End => c.on_test_batch_end(batch, logs, ctx),
                })
                .map(|_| ())
        })?;
        run.hooks
            .call(&self.step, state, |c, ctx| c.on_test_end(&val_logs, ctx))?;
        Ok(val_logs)
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

/// One `fit` call's running parts: the callbacks, progress, the metrics' names, the
/// history being written.
struct Run<'c> {
    hooks: Hooks<'c>,
    progress: Progress,
    metrics: Vec<&'static str>,
    history: History,
}

/// The callbacks, and what every hook hands them: a view of the trainer (what a save
/// writes) at the current global step, and the fence behind which background saves copy.
struct Hooks<'c> {
    callbacks: CallbackList<'c>,
    fence: SnapshotFence,
}

impl Drop for Hooks<'_> {
    /// No background copy outlives `fit`.
    fn drop(&mut self) {
        self.fence.wait();
    }
}

impl<'c> Hooks<'c> {
    /// Calls one hook of every callback through `hook`.
    fn call<S: Step>(
        &mut self,
        step: &S,
        state: &FitState,
        hook: impl FnOnce(&mut CallbackList<'c>, &mut Context<'_>) -> HookResult,
    ) -> Result<Control, model_checkpoint::Error> {
        let view = TrainingView { step, state };
        let mut ctx = Context::new(&view)
            .with_global_step(state.global_step)
            .with_fence(&self.fence);
        hook(&mut self.callbacks, &mut ctx)
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Begin,
    End,
}
