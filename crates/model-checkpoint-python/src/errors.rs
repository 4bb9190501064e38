//! The core's errors as Python exceptions: where Keras's own callback raises (a bad
//! argument, a bad filepath), the same built-in type and text; a missing or unreadable file
//! Python's `FileNotFoundError` or `PermissionError`; everything else (a corrupt file, a
//! failed write, a lock held by another process) is a `CheckpointError`, an `OSError`
//! whose message is the core's one line.

use pyo3::create_exception;
use pyo3::exceptions::{
    PyAttributeError, PyFileNotFoundError, PyIndexError, PyKeyError, PyMemoryError, PyOSError,
    PyOverflowError, PyPermissionError, PyTypeError, PyValueError,
};
use pyo3::PyErr;

// An `OSError`, as what Keras's own saving and loading raise for a file that cannot be
// written or read (h5py's unreadable file included): `except OSError` catches both.
create_exception!(
    model_checkpoint,
    CheckpointError,
    PyOSError,
    "A checkpoint could not be written, read or verified (the message says which and why); an OSError."
);

/// `e` as the Python exception Keras would raise; a file or folder that is not there, or
/// may not be read, as Python's own `FileNotFoundError` or `PermissionError` (with the
/// errno), what `open`, `safetensors` and h5py raise; else a `CheckpointError`.
pub(crate) fn to_py(e: model_checkpoint::Error) -> PyErr {
    let text = e.to_string();
    if let (None, model_checkpoint::Error::Io { source, .. }) = (e.keras_exception(), &e) {
        // An object store's 404 or 403 has no errno: the system's for the same.
        match source.kind() {
            std::io::ErrorKind::NotFound => {
                let errno = source.raw_os_error().unwrap_or(2);
                return PyFileNotFoundError::new_err((errno, text));
            }
            std::io::ErrorKind::PermissionDenied => {
                let errno = source.raw_os_error().unwrap_or(13);
                return PyPermissionError::new_err((errno, text));
            }
            _ => {}
        }
    }
    // Options that do not combine are a bad argument, as Python calls one.
    if let model_checkpoint::Error::Incompatible { .. } = e {
        return PyValueError::new_err(text);
    }
    match e.keras_exception() {
        Some("ValueError") => PyValueError::new_err(text),
        Some("TypeError") => PyTypeError::new_err(text),
        Some("KeyError") => PyKeyError::new_err(text),
        Some("OSError") => PyOSError::new_err(text),
        Some("MemoryError") => PyMemoryError::new_err(text),
        Some("AttributeError") => PyAttributeError::new_err(text),
        Some("IndexError") => PyIndexError::new_err(text),
        Some("OverflowError") => PyOverflowError::new_err(text),
        _ => CheckpointError::new_err(text),
    }
}

/// `e` from a plain file operation (`save_file`, `load_file`, `verify`): a folder where a
/// file was expected and a bad tensor name are the caller's argument, said without Keras's
/// callback wording; the rest as [`to_py`].
pub(crate) fn file_error(e: model_checkpoint::Error) -> PyErr {
    match e {
        model_checkpoint::Error::IsADirectory { path } => {
            pyo3::exceptions::PyIsADirectoryError::new_err(format!(
                "{path} is a folder: give the path of a file"
            ))
        }
        e @ model_checkpoint::Error::FolderNotFile { .. } => {
            pyo3::exceptions::PyIsADirectoryError::new_err(e.to_string())
        }
        e @ (model_checkpoint::Error::TensorName { .. }
        | model_checkpoint::Error::BadMetadata { .. }) => PyValueError::new_err(e.to_string()),
        e => to_py(e),
    }
}

/// A `ValueError` for an argument the Python layer passed that the core cannot take.
pub(crate) fn bad_argument(what: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(what.to_string())
}
