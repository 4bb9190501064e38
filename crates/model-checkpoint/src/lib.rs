//! Keras's `ModelCheckpoint` for Rust: decide *when* to save exactly as Keras does, and write
//! checkpoints that are crash-safe, verified and resumable.
//!
//! Which type do I use?
//!
//! - [`ModelCheckpoint`]: the callback. Keras's arguments as builder methods, Keras's
//!   decisions, file names and messages, byte for byte.
//! - [`Callback`] and [`CallbackList`]: Keras's hooks, for your own callbacks and loops.
//! - [`Checkpointable`]: implement it for your model (named tensors out) to make it savable;
//!   `model-checkpoint-candle` implements it for candle.
//! - [`store`]: the checkpoint files themselves: atomic, durable writes with checksums, and
//!   a verifying reader.
//! - [`template`]: Python's `str.format`, which file names are made with.
//!
//! # Example
//!
//! Keras's
//!
//! ```python
//! checkpoint = ModelCheckpoint("ckpt/weights.{epoch:02d}-{val_loss:.2f}.h5",
//!                              monitor="val_accuracy", mode="max",
//!                              save_best_only=True, save_weights_only=True, verbose=1)
//! ```
//!
//! is, in Rust:
//!
//! ```
//! use model_checkpoint::{Callback, Context, Logs, Mode, ModelCheckpoint};
//! # use model_checkpoint::{Checkpointable, Error, HostTensor, NamedTensor};
//! # struct Mlp;
//! # impl Checkpointable for Mlp {
//! #     fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
//! #         Ok(vec![NamedTensor::new("fc1.weight", HostTensor::from_f32(vec![2, 2], &[0.5; 4]))])
//! #     }
//! # }
//! # let dir = tempfile::tempdir()?;
//! # std::env::set_current_dir(dir.path())?;
//! let mut checkpoint = ModelCheckpoint::new("ckpt/weights.{epoch:02d}-{val_loss:.2f}.safetensors")
//!     .monitor("val_accuracy")
//!     .mode(Mode::Max)
//!     .save_best_only(true)
//!     .save_weights_only(true)
//!     .verbose(1);
//!
//! // A training loop (such as model-checkpoint-candle's `fit`) calls the hooks:
//! let model = Mlp;
//! let mut ctx = Context::new(&model);
//! for (epoch, (val_loss, val_accuracy)) in [(0.40, 0.88), (0.31, 0.91), (0.35, 0.90)].into_iter().enumerate() {
//!     checkpoint.on_epoch_begin(epoch, &Logs::new(), &mut ctx)?;
//!     let logs = Logs::from([("val_loss", val_loss), ("val_accuracy", val_accuracy)]);
//!     checkpoint.on_epoch_end(epoch, &logs, &mut ctx)?;
//! }
//! // Prints, as Keras does:
//! //
//! // Epoch 1: val_accuracy improved from -inf to 0.88000, saving model to ckpt/weights.01-0.40.safetensors
//! //
//! // Epoch 2: val_accuracy improved from 0.88000 to 0.91000, saving model to ckpt/weights.02-0.31.safetensors
//! //
//! // Epoch 3: val_accuracy did not improve from 0.91000
//! assert_eq!(checkpoint.best().as_f64(), Some(0.91));
//! assert_eq!(checkpoint.last_saved().map(|n| n.as_str()), Some("ckpt/weights.02-0.31.safetensors"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Where this differs from Keras
//!
//! The decisions, names, messages and errors are tf.keras 2.x's (checked against traces
//! recorded from tf-keras 2.21). What is written differs on purpose: every file is a
//! safetensors file whatever its extension, written atomically and durably with checksums;
//! a full checkpoint holds what resuming training needs, not a Keras model.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod callback;
mod checkpoint;
pub mod document;
mod error;
pub mod load;
mod logs;
mod model;
mod name;
pub mod policy;
pub mod restore;
pub mod sharded;
pub mod store;
pub mod template;
pub mod text;

pub use callback::{
    Callback, CallbackList, Context, Control, CsvLogger, HookResult, SnapshotFence,
};
pub use checkpoint::{
    hold_signals, release_signals, request_interrupt, take_interrupt_request, CheckpointState,
    KerasArgs, KerasValue, KerasVersion, ModelCheckpoint,
};
pub use error::{Error, KerasError};
pub use logs::{Logs, Value};
pub use model::{
    byte_len, Checkpointable, Dtype, HostTensor, HostTensorRef, NamedTensor, Placement,
    SharedTensor, Slice, TensorData, TensorInfo, TensorSource, TrainingState,
};
pub use name::{Name, NameError};
pub use policy::{judge, Direction, Mode, SaveFreq, SaveSchedule, Verdict};
