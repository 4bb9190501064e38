//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `fit`, its data loaders and a resume.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A checkpoint could not be saved, read or verified, does not fit the model or the
    /// optimizer, or a callback failed.
    #[error(transparent)]
    Checkpoint(model_checkpoint::Error),
    /// The framework's train or test step failed (the adapter's own error inside).
    #[error(transparent)]
    Step(Box<dyn std::error::Error + Send + Sync>),
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
    /// [`Error::InvalidOptions`] with this reason.
    pub fn options(reason: impl Into<String>) -> Self {
        Error::InvalidOptions(reason.into())
    }
}

impl From<model_checkpoint::Error> for Error {
    /// The core's errors stay the core's; an adapter's error that travelled through the core
    /// (as [`model_checkpoint::Error::Framework`], from a callback's save) comes back as
    /// [`Error::Step`], and this crate's own as themselves.
    fn from(e: model_checkpoint::Error) -> Self {
        match e.into_framework::<Error>() {
            Ok(own) => own,
            Err(model_checkpoint::Error::Framework(other)) => Error::Step(other),
            Err(other) => Error::Checkpoint(other),
        }
    }
}

impl From<Error> for model_checkpoint::Error {
    /// Errors of `fit` reach callbacks as [`model_checkpoint::Error::Framework`].
    fn from(e: Error) -> Self {
        match e {
            Error::Checkpoint(inner) => inner,
            Error::Step(inner) => model_checkpoint::Error::Framework(inner),
            other => model_checkpoint::Error::Framework(Box::new(other)),
        }
    }
}
