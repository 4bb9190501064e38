//! Restoring a trainer and its callbacks from a full checkpoint.

use model_checkpoint::Error as CoreError;
use std::path::Path;

use model_checkpoint::restore::AnyCheckpoint;
use model_checkpoint::sharded::{Ranks, ShardedCheckpoint};
use model_checkpoint::store::{CheckpointFile, Name, TrainingDocument, Verify};
use model_checkpoint::TensorSource;
use model_checkpoint::{Callback, Checkpointable};

use crate::rng::TrainRng;
use crate::state::FitState;
use crate::step::Step;
use crate::trainer::Trainer;
use crate::Error;

/// Where a resumed trainer will continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// The checkpoint resumed from.
    pub path: Name,
    /// The epoch training continues in (0-based).
    pub epoch: usize,
    /// Batches of that epoch already done.
    pub batches_done: usize,
    /// Optimizer steps already taken.
    pub global_step: u64,
    /// Callbacks whose state was restored, by state key.
    pub restored_callbacks: Vec<String>,
}

fn bad(path: &Name, reason: impl Into<String>) -> Error {
    Error::Checkpoint(CoreError::BadTrainingState {
        path: path.clone(),
        reason: reason.into(),
    })
}

impl<S: Step> Trainer<S> {
    /// Restores the model, the optimizer, the counters, the generator, and the state of every
    /// callback in `callbacks` that the checkpoint holds (`ModelCheckpoint`'s best value and
    /// counters among them), so that the next [`Trainer::fit`] continues exactly where the
    /// checkpoint was taken. `path` is a checkpoint file, or the folder of a deduplicated
    /// checkpoint (or of a sharded one, restored by one process); every checksum is verified
    /// first.
    ///
    /// # Errors
    ///
    /// [`Error::Checkpoint`] for an unreadable or corrupt checkpoint,
    /// [`model_checkpoint::Error::NotAFullCheckpoint`] for a weights-only file, [`model_checkpoint::Error::BadTrainingState`] for
    /// a state that is malformed or was written by another optimizer, and the tensor errors
    /// of the step's [`Checkpointable::restore_weights`]. The trainer must not be used after
    /// an error: some variables may already have changed.
    pub fn resume(
        &mut self,
        path: impl AsRef<Path>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<Resumed, Error> {
        let storage = model_checkpoint::store::LocalFolder::default();
        let checkpoint = AnyCheckpoint::open(&storage, &Name::from(path.as_ref()), Verify::Full)?;
        self.resume_checkpoint(&checkpoint, callbacks)
    }

    /// Resumes from the newest full checkpoint in `dir` that verifies, a file or a sharded
    /// or deduplicated checkpoint's folder ([`model_checkpoint::restore::latest_resumable`];
    /// damaged ones are passed over with a warning, as `ckpt train --resume latest` does; a
    /// save on a signal counts like any other), or does nothing when `dir` holds none or does
    /// not exist yet: what a job that may be requeued runs before [`Trainer::fit`].
    /// Weights-only checkpoints cannot resume training: a folder of those alone gives `None`
    /// too (save full checkpoints, the default, to requeue).
    ///
    /// ```no_run
    /// # fn demo<S: model_checkpoint_fit::Step>(trainer: &mut model_checkpoint_fit::Trainer<S>, checkpoint: &mut model_checkpoint::ModelCheckpoint) -> Result<(), model_checkpoint_fit::Error> {
    /// match trainer.resume_latest("ck", &mut [checkpoint])? {
    ///     Some(resumed) => println!("resuming from {} at epoch {}", resumed.path.display(), resumed.epoch + 1),
    ///     None => println!("starting fresh"),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Trainer::resume`] for the checkpoint chosen; [`Error::Checkpoint`] when `dir`
    /// cannot be listed.
    pub fn resume_latest(
        &mut self,
        dir: impl AsRef<Path>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<Option<Resumed>, Error> {
        let storage = model_checkpoint::store::LocalFolder::default();
        let newest = match model_checkpoint::restore::latest_resumable(
            &storage,
            &Name::from(dir.as_ref()),
        ) {
            Ok(newest) => newest,
            Err(e) if e.is_nothing_to_resume() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        self.resume_checkpoint(&newest, callbacks).map(Some)
    }

    /// Like [`Trainer::resume`], from a checkpoint of either kind already open, from any
    /// [`model_checkpoint::store::Storage`] (with [`AnyCheckpoint::open`], or found and
    /// verified by [`model_checkpoint::restore::latest_resumable`]).
    ///
    /// # Errors
    ///
    /// As [`Trainer::resume`].
    pub fn resume_checkpoint(
        &mut self,
        checkpoint: &AnyCheckpoint,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<Resumed, Error> {
        self.resume_with(checkpoint.name(), callbacks, &|target, callbacks| {
            checkpoint.restore(target, callbacks)
        })
    }

    /// Like [`Trainer::resume`], from a file already open (from any
    /// [`model_checkpoint::store::Storage`], with [`CheckpointFile::open_in`] and
    /// [`Verify::Full`]).
    ///
    /// # Errors
    ///
    /// As [`Trainer::resume`].
    pub fn resume_from(
        &mut self,
        file: &CheckpointFile,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<Resumed, Error> {
        self.resume_with(file.path(), callbacks, &|target, callbacks| {
            model_checkpoint::restore::restore(file, target, callbacks)
        })
    }

    /// Like [`Trainer::resume_from`], from a deduplicated checkpoint (or a sharded one saved
    /// by one process), open with [`ShardedCheckpoint::open`]: each tensor's checksum is
    /// checked as it is read.
    ///
    /// # Errors
    ///
    /// As [`Trainer::resume`].
    pub fn resume_from_sharded(
        &mut self,
        checkpoint: &ShardedCheckpoint,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<Resumed, Error> {
        self.resume_with(checkpoint.dir(), callbacks, &|target, callbacks| {
            model_checkpoint::restore::restore_from_sharded(
                checkpoint,
                Ranks::single(),
                target,
                callbacks,
            )
        })
    }

    /// Resumes from the checkpoint `path`, which `restore` restores into the trainer's
    /// parts and `callbacks`.
    fn resume_with(
        &mut self,
        path: &Name,
        callbacks: &mut [&mut dyn Callback],
        restore: &RestoreInto<'_>,
    ) -> Result<Resumed, Error> {
        // The core restores; the step supplies what is the framework's (the variables, the
        // optimizer slots), this crate what is fit's (its counters and generator).
        let mut target = Restoring {
            step: &mut self.step,
            fit: None,
        };
        let restored = restore(&mut target, callbacks)?;
        let state = target
            .fit
            .ok_or_else(|| bad(path, "the checkpoint was not written by fit: no fit state"))?;
        let restored = restored.restored_callbacks;

        let (epoch, batches_done) = if state.epoch_complete {
            (state.epoch + 1, 0)
        } else {
            (state.epoch, state.batches_done)
        };
        let resumed = Resumed {
            path: path.clone(),
            epoch,
            batches_done,
            global_step: state.global_step,
            restored_callbacks: restored,
        };
        self.global_step = state.global_step;
        self.rng = TrainRng::from_state(&state.rng);
        self.resume = Some(state);
        Ok(resumed)
    }
}

/// A restore of a checkpoint into a trainer's parts and its callbacks.
type RestoreInto<'a> = dyn Fn(
        &mut dyn Checkpointable,
        &mut [&mut dyn Callback],
    ) -> Result<model_checkpoint::restore::Restored, CoreError>
    + 'a;

/// A trainer's parts as the core's `restore` sees them: where the weights, the optimizer
/// state and the fit state go.
struct Restoring<'a> {
    step: &'a mut dyn Checkpointable,
    fit: Option<FitState>,
}

impl Checkpointable for Restoring<'_> {
    fn weights(&self) -> Result<Vec<model_checkpoint::NamedTensor<'_>>, model_checkpoint::Error> {
        self.step.weights()
    }

    fn restore_weights(
        &mut self,
        stored: &dyn TensorSource,
    ) -> Result<(), model_checkpoint::Error> {
        self.step.restore_weights(stored)
    }

    fn restore_training_state(
        &mut self,
        tensors: &dyn TensorSource,
        document: &TrainingDocument,
    ) -> Result<(), model_checkpoint::Error> {
        let path = tensors.path();
        let fit_value = document
            .fit
            .as_ref()
            .ok_or_else(|| bad(path, "the checkpoint was not written by fit: no fit state"))?;
        let state: FitState = serde_json::from_value(fit_value.clone())
            .map_err(|e| bad(path, format!("fit state malformed: {e}")))?;
        // Counters from a file are range-checked, never wrapped.
        let max = model_checkpoint::store::MAX_COUNTER;
        for (name, value) in [
            ("epoch", state.epoch as u64),
            ("batches_done", state.batches_done as u64),
            ("global step", state.global_step),
            ("epochs", state.options.epochs as u64),
            ("batch_size", state.options.batch_size as u64),
        ]
        .into_iter()
        .chain(state.running.counters())
        {
            if value > max {
                return Err(bad(
                    path,
                    format!("fit state: {name} {value} is out of range (at most {max})"),
                )
                .into());
            }
        }
        TrainRng::from_state(&state.rng).ok_or_else(|| bad(path, "generator state malformed"))?;
        TrainRng::from_state(&state.rng_epoch_start)
            .ok_or_else(|| bad(path, "generator state malformed"))?;
        self.step.restore_training_state(tensors, document)?;
        self.fit = Some(state);
        Ok(())
    }
}
