//! A Keras-like `fit()` above the tensor framework. As in Keras 3, where one `fit` runs over
//! three backends and each supplies only `train_step` and `test_step`, this crate owns the
//! loop (callbacks in Keras's order, running metrics, shuffling, validation, progress) and
//! exact resume from full checkpoints; a framework adapter implements [`Step`] for its model
//! and optimizer. `model-checkpoint-candle` and `model-checkpoint-burn` are two such
//! adapters, and train the same way, to the same files.
//!
//! Which type do I use?
//!
//! - [`Trainer`]: `fit`, `evaluate`, `resume` over a [`Step`].
//! - [`Dataset`]: the bundled digits and CSV files, in host memory; [`Dataset::batch`] copies
//!   samples out for a step.
//! - [`FitOptions`], [`History`], [`Resumed`]: Keras's arguments and results.
//! - [`TrainRng`]: the seedable generator whose exact state full checkpoints keep.
//! - [`TrainingParts`] over a [`Framework`]: a model, its optimizer and a hand-written
//!   loop's own state as one checkpointable, laid out the same in every framework.
//!
//! # Example: a step of your own
//!
//! A "model" with one weight that learns the mean of the targets, trained by `fit` with
//! `ModelCheckpoint` saving it every epoch:
//!
//! ```
//! use model_checkpoint::{Checkpointable, HostTensor, ModelCheckpoint, NamedTensor, SnapshotFence};
//! use model_checkpoint_fit::{Batch, BatchLogs, Dataset, FitOptions, Step, Targets, Trainer};
//!
//! struct Mean { w: f32 }
//!
//! impl Checkpointable for Mean {
//!     fn weights(&self) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
//!         Ok(vec![NamedTensor::new("w", HostTensor::from_f32(vec![1], &[self.w]))])
//!     }
//! }
//!
//! impl Step for Mean {
//!     fn metrics(&self) -> Vec<&'static str> { vec![] }
//!     fn train_step(&mut self, batch: &Batch, fence: &SnapshotFence)
//!         -> Result<BatchLogs, model_checkpoint_fit::Error> {
//!         let logs = self.test_step(batch)?;
//!         let Targets::Values { values, .. } = &batch.targets else { unreachable!() };
//!         let grad: f32 = values.iter().map(|t| self.w - t).sum::<f32>() / values.len() as f32;
//!         fence.wait(); // a background save may still be copying `w`
//!         self.w -= 0.5 * grad;
//!         Ok(logs)
//!     }
//!     fn test_step(&self, batch: &Batch) -> Result<BatchLogs, model_checkpoint_fit::Error> {
//!         let Targets::Values { values, .. } = &batch.targets else { unreachable!() };
//!         let loss = values.iter().map(|t| f64::from(self.w - t).powi(2)).sum::<f64>();
//!         Ok(BatchLogs { loss: loss / values.len() as f64, samples: batch.rows, sums: vec![] })
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let data = Dataset::regression(vec![0.0; 4], 1, vec![1.0, 2.0, 3.0, 4.0], 1)?;
//! let mut trainer = Trainer::new(Mean { w: 0.0 });
//! let mut checkpoint = ModelCheckpoint::new(dir.path().join("mean{epoch}.safetensors"));
//! let history = trainer.fit(&data, &FitOptions::new(20).verbose(0), &mut [&mut checkpoint])?;
//! assert!((trainer.step().w - 2.5).abs() < 1e-3);
//! assert!(history.metric("loss")[19].is_some_and(|l| (l - 1.25).abs() < 1e-3));
//! assert!(dir.path().join("mean20.safetensors").exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod data;
mod error;
mod history;
mod options;
mod parts;
mod progress;
mod resume;
mod rng;
mod running;
mod state;
mod step;
mod trainer;

pub use data::{Batch, Dataset, Targets, MAX_CLASSES, MAX_CSV_BYTES, MAX_VALUES};
pub use error::Error;
pub use history::History;
pub use options::FitOptions;
pub use parts::{Framework, TrainingParts};
pub use resume::Resumed;
pub use rng::{RngState, TrainRng};
pub use step::{BatchLogs, Step};
pub use trainer::Trainer;
