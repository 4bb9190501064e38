//! [candle](https://github.com/huggingface/candle) for `model-checkpoint`: models and
//! optimizers whose whole state can be checkpointed, and a Keras-like `fit()` that calls
//! Keras-style callbacks (such as `ModelCheckpoint`) and resumes exactly.
//!
//! Which type do I use?
//!
//! - [`Model`]: a candle module and its `VarMap`; [`Model::mlp`] builds an MLP;
//!   [`Model::load_weights`] reads a checkpoint back.
//! - [`Sgd`] and [`Adam`] (AdamW with [`ParamsAdam::adamw`]): optimizers equal to
//!   candle-nn's, with state that saves and restores.
//! - [`CandleStep`]: a model, optimizer, loss and metrics, as `fit` steps them; [`Trainer`]
//!   (`model-checkpoint-fit`'s, the same as burn's) runs `fit`, `evaluate`, `resume`.
//! - [`TrainingParts`]: a model and its optimizer for a hand-written loop (fit's generic
//!   parts over [`Candle`]).
//! - [`Dataset`]: the bundled digits and CSV files.
//!
//! # Example: Keras's ModelCheckpoint example
//!
//! ```
//! use model_checkpoint::{Mode, ModelCheckpoint};
//! use model_checkpoint_candle::{Adam, CandleStep, Dataset, FitOptions, Model, ParamsAdam, Trainer};
//!
//! let dir = tempfile::tempdir()?;
//! let data = Dataset::digits().scaled();
//! let model = Model::mlp(&[64, 64, 10], 1)?;
//! let optimizer = Adam::new(model.named_vars(), ParamsAdam::default())?;
//! let mut trainer = Trainer::new(CandleStep::new(model, optimizer));
//!
//! let mut checkpoint = ModelCheckpoint::new(dir.path().join("best.safetensors"))
//!     .monitor("val_accuracy")
//!     .mode(Mode::Max)
//!     .save_best_only(true)
//!     .save_weights_only(true);
//! let options = FitOptions::new(3).validation_split(0.2).verbose(0);
//! let history = trainer.fit(&data, &options, &mut [&mut checkpoint])?;
//!
//! // Load the best weights into a fresh model: it scores the best val_accuracy seen.
//! let best = Model::mlp(&[64, 64, 10], 2)?;
//! best.load_weights(dir.path().join("best.safetensors"))?;
//! let (_, val) = data.split_last(0.2)?;
//! let reloaded = Trainer::new(CandleStep::new(best, Adam::new(vec![], ParamsAdam::default())?))
//!     .evaluate(&val, 32)?;
//! assert_eq!(reloaded.get("accuracy"), checkpoint.best().as_f64().map(Into::into));
//! assert_eq!(history.len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod adapter;
mod error;
mod fit;
mod model;
mod optim;
mod parts;

pub use adapter::{from_dtype, to_dtype, CandleTensor};
pub use error::Error;
pub use fit::{batch_tensors, CandleStep, Loss, LossFn, Metric, Trainer};
pub use model::Model;
/// The loop is shared with every framework: `model-checkpoint-fit`'s, re-exported.
pub use model_checkpoint_fit::{Dataset, FitOptions, History, Resumed, RngState, TrainRng};
pub use optim::{Adam, Optimizer, ParamsAdam, ParamsSgd, Sgd};
pub use parts::{Candle, TrainingParts};
