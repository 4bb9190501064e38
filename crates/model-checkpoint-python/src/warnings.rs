//! The engine's warnings (a monitor missing from the logs, an unknown mode, a damaged file
//! skipped, a background save that failed) go through the `log` crate; here they are kept
//! until the Python callback takes them after each hook and hands them to Python's
//! `warnings` (Keras 3) or `logging` (tf.keras 2), where Keras's own warnings go.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pyo3::prelude::*;

/// Warnings not yet taken, oldest first, at most [`KEPT`].
static PENDING: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The most warnings kept between two takes (a loop that never takes them stays bounded).
const KEPT: usize = 1000;

/// Set while the `ckpt` console script runs: warnings are printed on standard error, as the
/// `ckpt` binary prints them, instead of kept.
static PRINT: AtomicBool = AtomicBool::new(false);

struct Collector;

impl log::Log for Collector {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
            && (PRINT.load(Ordering::Relaxed) || metadata.target().starts_with("model_checkpoint"))
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if PRINT.load(Ordering::Relaxed) {
            ckpt::print_warning(&record.args().to_string());
            return;
        }
        let mut pending = PENDING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pending.len() < KEPT {
            pending.push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// Installs the collector as the process's logger, unless another is installed already
/// (then the engine's warnings go there).
pub(crate) fn install() {
    if log::set_logger(&Collector).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// The warnings given since the last call, oldest first.
#[pyfunction]
pub(crate) fn take_warnings() -> Vec<String> {
    std::mem::take(
        &mut *PENDING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// From now on, warnings are printed on standard error (the `ckpt` console script's process
/// does nothing else).
pub(crate) fn print_on_stderr() {
    PRINT.store(true, Ordering::Relaxed);
}
