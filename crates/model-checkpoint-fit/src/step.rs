//! What a tensor framework supplies to `fit`: one training step and one test step on a
//! batch of samples (Keras 3's `train_step` and `test_step`), and its model and optimizer
//! as a [`Checkpointable`]. Everything else (the loop, callbacks, metrics over the epoch,
//! shuffling, validation, progress, exact resume) is this crate's, the same for every
//! framework.

use model_checkpoint::{Checkpointable, SnapshotFence};

use crate::data::Batch;
use crate::{Dataset, Error};

/// One batch's results, from which `fit` keeps Keras's running means over the epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchLogs {
    /// The batch's mean loss, as the framework computed it.
    pub loss: f64,
    /// Samples in the batch.
    pub samples: usize,
    /// Each metric's sum over the batch's samples, by the name it is logged under
    /// (`"accuracy"`: the number of samples predicted correctly).
    pub sums: Vec<(&'static str, f64)>,
}

/// A model, its optimizer, loss and metrics in one framework: what [`crate::Trainer`]
/// trains. Its [`Checkpointable`] side gives the weights and the optimizer's state (under
/// stable names); `fit` adds its own counters and generator to full checkpoints.
pub trait Step: Checkpointable {
    /// The metrics `fit` logs besides `loss`, in order (Keras's `compile(metrics=...)`).
    fn metrics(&self) -> Vec<&'static str>;

    /// Refuses, before any step, data the model cannot be trained on (a classifier with
    /// fewer outputs than the data's classes, say). Default: accepts.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] naming the mismatch.
    fn check(&self, data: &Dataset) -> Result<(), Error> {
        let _ = data;
        Ok(())
    }

    /// Trains on one batch: forward, loss, gradients, then (after `fence.wait()`, so that
    /// a background save has copied the weights) the optimizer's update. The metrics are
    /// those of the predictions made before the update, as in Keras.
    ///
    /// # Errors
    ///
    /// The framework's failure, as [`Error::Step`].
    fn train_step(&mut self, batch: &Batch, fence: &SnapshotFence) -> Result<BatchLogs, Error>;

    /// The loss and metrics of one batch, changing nothing.
    ///
    /// # Errors
    ///
    /// The framework's failure, as [`Error::Step`].
    fn test_step(&self, batch: &Batch) -> Result<BatchLogs, Error>;
}

/// A boxed step is a step: what lets one trainer type hold a step of either framework
/// (`Trainer<Box<dyn Step>>`, or a box of a trait of your own that extends [`Step`]).
impl<S: Step + ?Sized> Step for Box<S> {
    fn metrics(&self) -> Vec<&'static str> {
        (**self).metrics()
    }

    fn check(&self, data: &Dataset) -> Result<(), Error> {
        (**self).check(data)
    }

    fn train_step(&mut self, batch: &Batch, fence: &SnapshotFence) -> Result<BatchLogs, Error> {
        (**self).train_step(batch, fence)
    }

    fn test_step(&self, batch: &Batch) -> Result<BatchLogs, Error> {
        (**self).test_step(batch)
    }
}
