//! `ModelCheckpoint`: Keras's checkpoint callback.
//!
//! - `decisions.rs`: Keras's decisions (when a save is due, its name, whether it improved),
//!   which the recorded Keras traces check; no storage.
//! - `engine/`: the saving engine (commit, background writer, versions, `last`, retention,
//!   the lock, the run's identity); every effect on storage.
//! - `model_checkpoint/`: the callback that joins them, its builder and its hooks.

mod background;
mod decisions;
mod engine;
mod interrupt;
mod keras_args;
pub(crate) mod messages;
mod model_checkpoint;

pub use keras_args::{KerasArgs, KerasValue};
pub use model_checkpoint::{CheckpointState, ModelCheckpoint};
