//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the adapter, the optimizers, the data loaders and `fit`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A checkpoint could not be saved, read or verified, or a callback failed.
    #[error(transparent)]
    Checkpoint(model_checkpoint::Error),
    /// candle failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// A checkpoint lacks a tensor the model or optimizer needs.
    #[error("{}: tensor {name:?} is missing", .path.display())]
    MissingTensor {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// A checkpoint holds a tensor the model does not have.
    #[error("{}: tensor {name:?} is not a variable of this model", .path.display())]
    UnexpectedTensor {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// A tensor's shape differs between the checkpoint and the model.
    #[error("{}: tensor {name:?} has shape {found:?} in the file but {expected:?} in the model", .path.display())]
    ShapeMismatch {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A tensor's dtype differs between the checkpoint and the model.
    #[error("{}: tensor {name:?} is {found} in the file but {expected} in the model", .path.display())]
    DtypeMismatch {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// The model's dtype.
        expected: String,
        /// The file's dtype.
        found: String,
    },
    /// A weights-only file was given where training must resume from a full checkpoint.
    #[error("{}: a weights-only checkpoint cannot resume training; give a full checkpoint (saved without save_weights_only)", .path.display())]
    NotAFullCheckpoint {
        /// The file.
        path: PathBuf,
    },
    /// A full checkpoint's training state is missing a field or does not fit this run.
    #[error("{}: {reason}", .path.display())]
    BadTrainingState {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A data file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    DataIo {
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// A data file has a malformed row.
    #[error("{}: line {line}: {reason}", .path.display())]
    MalformedRow {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Fit options that cannot work together or with the data.
    #[error("invalid fit options: {0}")]
    InvalidOptions(String),
}

impl Error {
    pub(crate) fn options(reason: impl Into<String>) -> Self {
        Error::InvalidOptions(reason.into())
    }
}

impl From<model_checkpoint::Error> for Error {
    /// The core's tensor and training-state errors become this crate's variants of the same
    /// name, and this crate's own errors that travelled through the core (as
    /// [`model_checkpoint::Error::Framework`]) come back as themselves.
    fn from(e: model_checkpoint::Error) -> Self {
        use model_checkpoint::Error as Core;
        match e {
            Core::NotAFullCheckpoint { path } => Error::NotAFullCheckpoint { path },
            Core::BadTrainingState { path, reason } => Error::BadTrainingState { path, reason },
            Core::MissingTensor { path, name } => Error::MissingTensor { path, name },
            Core::ShapeMismatch {
                path,
                name,
                expected,
                found,
            } => Error::ShapeMismatch {
                path,
                name,
                expected,
                found,
            },
            Core::DtypeMismatch {
                path,
                name,
                expected,
                found,
            } => Error::DtypeMismatch {
                path,
                name,
                expected,
                found,
            },
            Core::Framework(inner) => match inner.downcast::<Error>() {
                Ok(own) => *own,
                Err(other) => Error::Checkpoint(Core::Framework(other)),
            },
            other => Error::Checkpoint(other),
        }
    }
}

impl From<Error> for model_checkpoint::Error {
    /// Errors from the model reach callbacks as [`model_checkpoint::Error::Framework`],
    /// keeping the error itself (and candle's beneath it) as the source.
    fn from(e: Error) -> Self {
        match e {
            Error::Checkpoint(inner) => inner,
            other => model_checkpoint::Error::Framework(Box::new(other)),
        }
    }
}
