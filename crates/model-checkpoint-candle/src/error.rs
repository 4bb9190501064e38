//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the adapter, the optimizers, the data loaders and `fit`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A checkpoint could not be saved, read or verified, does not fit the model or the
    /// optimizer (a missing, unexpected or mismatched tensor, a bad training state), or a
    /// callback failed.
    #[error(transparent)]
    Checkpoint(model_checkpoint::Error),
    /// candle failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
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
    /// The core's errors (the tensor and training-state checks among them) stay the core's,
    /// and this crate's own errors that travelled through the core (as
    /// [`model_checkpoint::Error::Framework`]) come back as themselves.
    fn from(e: model_checkpoint::Error) -> Self {
        match e {
            model_checkpoint::Error::Framework(inner) => match inner.downcast::<Error>() {
                Ok(own) => *own,
                Err(other) => Error::Checkpoint(model_checkpoint::Error::Framework(other)),
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
