//! `model_checkpoint._native`: the engine as a CPython extension (abi3, CPython ≥ 3.10).
//! The Python package (`python/model_checkpoint/`) is a thin layer over it, as
//! `safetensors`' per-framework modules are over its Rust core:
//!
//! - `files.rs`: `save_file`, `load_file`, `verify`, `latest`, `ls` on plain tensors
//!   (numpy's side is in Python), with the GIL released while bytes move;
//! - `keras.rs`: `KerasCheckpoint`, `ModelCheckpoint` with Keras's arguments, driven by the
//!   Python callback's hooks; `model.rs`, the Keras model as the core's `Checkpointable`,
//!   reached back through Python callables;
//! - `tensors.rs`: tensors as they cross (name, dtype name, shape, bytes);
//! - `storage.rs`: a path or an `s3://` URL to its storage (one client per bucket, kept);
//! - `cli.rs`: the `ckpt` command line (the `ckpt` crate without training), run by the
//!   package's console script;
//! - `errors.rs`: the core's errors as Python exceptions (Keras's own type where Keras would
//!   raise, `CheckpointError` otherwise); `warnings.rs`, the engine's warnings handed to
//!   Python's `warnings` or `logging` by the callback.

mod cli;
mod errors;
mod files;
mod keras;
mod model;
mod storage;
mod tensors;
mod warnings;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    warnings::install();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "CheckpointError",
        m.py().get_type::<errors::CheckpointError>(),
    )?;
    m.add_function(wrap_pyfunction!(files::save_file, m)?)?;
    m.add_function(wrap_pyfunction!(files::load_file, m)?)?;
    m.add_function(wrap_pyfunction!(files::load_metadata, m)?)?;
    m.add_function(wrap_pyfunction!(files::verify, m)?)?;
    m.add_function(wrap_pyfunction!(files::latest, m)?)?;
    m.add_function(wrap_pyfunction!(files::ls, m)?)?;
    m.add_function(wrap_pyfunction!(files::is_interrupt_name, m)?)?;
    m.add_function(wrap_pyfunction!(warnings::take_warnings, m)?)?;
    m.add_function(wrap_pyfunction!(cli::ckpt_main, m)?)?;
    m.add_class::<keras::KerasCheckpoint>()?;
    m.add_function(wrap_pyfunction!(keras::restore_model, m)?)?;
    m.add_function(wrap_pyfunction!(keras::request_interrupt, m)?)?;
    m.add_function(wrap_pyfunction!(keras::take_interrupt_request, m)?)?;
    m.add_function(wrap_pyfunction!(keras::hold_signals, m)?)?;
    m.add_function(wrap_pyfunction!(keras::release_signals, m)?)?;
    Ok(())
}
