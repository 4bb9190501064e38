//! `ModelCheckpoint`: Keras's checkpoint callback.

mod background;
mod interrupt;
mod keras_args;
pub(crate) mod messages;
mod model_checkpoint;

pub use keras_args::{KerasArgs, KerasValue};
pub use model_checkpoint::{CheckpointState, ModelCheckpoint};
