//! `ModelCheckpoint`: Keras's checkpoint callback.
//!
//! - `keras/`: Keras's rules behind one seam (`Rules`), one module per Keras.
//! - `decisions.rs`: Keras's decisions (when a save is due, its name, whether it improved),
//!   which the recorded Keras traces check; no storage.
//! - `engine/`: the saving engine (commit, background writer, versions, `last`, retention,
//!   the lock, the run's identity); every effect on storage.
//! - `model_checkpoint/`: the callback that joins them, its builder and its hooks.

mod background;
mod decisions;
mod engine;
mod interrupt;
mod keras;
mod model_checkpoint;

pub use interrupt::{hold_signals, release_signals, request_interrupt, take_interrupt_request};
pub use keras::KerasVersion;
pub use keras::{KerasArgs, KerasValue};
pub use model_checkpoint::{CheckpointState, ModelCheckpoint};
