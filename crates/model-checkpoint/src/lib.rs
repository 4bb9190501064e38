//! Keras's `ModelCheckpoint` for Rust.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod logs;
pub mod template;

pub use logs::{Logs, Value};
