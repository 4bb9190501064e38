//! The crate's one error type.

/// Everything that can go wrong in the adapter, the optimizers and `fit`.
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
    /// `fit` refused its options or data, or a data file could not be read (the shared
    /// loop's errors, other than this crate's own and the checkpoint's).
    #[error(transparent)]
    Fit(model_checkpoint_fit::Error),
}

impl Error {
    pub(crate) fn options(reason: impl Into<String>) -> Self {
        Error::Fit(model_checkpoint_fit::Error::options(reason))
    }
}

impl From<model_checkpoint::Error> for Error {
    /// The core's errors (the tensor and training-state checks among them) stay the core's,
    /// and this crate's own errors that travelled through the core come back as themselves.
    fn from(e: model_checkpoint::Error) -> Self {
        e.into_framework::<Error>()
            .unwrap_or_else(Error::Checkpoint)
    }
}

impl From<Error> for model_checkpoint::Error {
    /// Errors from the model reach callbacks as [`model_checkpoint::Error::Framework`],
    /// keeping the error itself (and candle's beneath it) as the source.
    fn from(e: Error) -> Self {
        match e {
            Error::Checkpoint(inner) => inner,
            Error::Fit(inner) => inner.into(),
            other => model_checkpoint::Error::Framework(Box::new(other)),
        }
    }
}

impl From<model_checkpoint_fit::Error> for Error {
    /// This crate's errors that travelled through `fit` (from a step) come back as
    /// themselves, the checkpoint's as [`Error::Checkpoint`].
    fn from(e: model_checkpoint_fit::Error) -> Self {
        match e {
            model_checkpoint_fit::Error::Step(inner) => match inner.downcast::<Error>() {
                Ok(own) => *own,
                Err(other) => Error::Checkpoint(model_checkpoint::Error::Framework(other)),
            },
            model_checkpoint_fit::Error::Checkpoint(inner) => inner.into(),
            other => Error::Fit(other),
        }
    }
}

impl From<Error> for model_checkpoint_fit::Error {
    /// candle's failures reach `fit` as [`model_checkpoint_fit::Error::Step`].
    fn from(e: Error) -> Self {
        match e {
            Error::Checkpoint(inner) => inner.into(),
            Error::Fit(inner) => inner,
            other => model_checkpoint_fit::Error::Step(Box::new(other)),
        }
    }
}
