//! [burn](https://burn.dev) for `model-checkpoint`: any burn `Module`'s parameters as named
//! tensors (by module path) out and in, with dtype and shape checks; optimizer state under
//! the parameters' paths, so that it survives a freshly built model (burn keys it by random
//! ids); `fit` with burn's train step; and Keras's `ModelCheckpoint` inside burn's own
//! `Learner` (the default feature `burn-learner`).
//!
//! Which type do I use?
//!
//! - [`TrainingParts`]: a model and its optimizer, for a hand-written loop (fit's generic
//!   parts over [`Burn`], laid out as candle's): hand it to `ModelCheckpoint` through a
//!   `Context`, and to `model_checkpoint::restore` to get everything back.
//! - [`BurnStep`]: a [`Classifier`] and its optimizer as `model_checkpoint_fit::Trainer`
//!   trains them: Keras's `fit`, exact resume, the same loop as candle's.
//! - [`Mlp`]: the MLP `ckpt train --framework burn` trains, named and laid out as candle's.
//!
//! Checkpoints are the same files as candle's: weights by name, `[out, in]` dense kernels,
//! optimizer state under `__training__/optimizer/<path>/<field>`. Weights are saved through
//! each parameter's save mapper, which is handed the value off the autodiff graph (as
//! `Module::valid` gives it): a save registers no step in burn's graph.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod error;
#[cfg(feature = "burn-learner")]
mod learner;
mod mlp;
mod names;
mod optimizer;
mod parts;
mod step;

pub use error::Error;
#[cfg(feature = "burn-learner")]
pub use learner::{data_loader, LabelledBatch, LearnerCheckpoint, Quiet, Sample, SampleBatcher};
pub use mlp::{Mlp, MAX_LAYERS};
pub use names::{from_dtype, load_weights, load_weights_from, load_weights_with, to_dtype};
pub use parts::{Burn, TrainingParts};
pub use step::{BurnStep, Classifier};

use burn::tensor::Device;

/// burn's Flex CPU device, for inference: burn 0.22's CPU backend, the one this adapter is
/// tested on (any `Device` works), and the one `burn-train` (feature `burn-learner`) builds
/// in. The adapter enables no other: NdArray, which burn 0.22 deprecates, was a second
/// backend and about a quarter of the build.
pub fn cpu() -> Device {
    Device::flex()
}

/// burn's Flex CPU device with automatic differentiation, for training.
pub fn cpu_autodiff() -> Device {
    cpu().autodiff()
}
