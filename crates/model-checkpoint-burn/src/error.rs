//! The crate's one error type.

/// Everything that can go wrong in the adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A checkpoint could not be saved, read or verified, or does not fit the model or the
    /// optimizer (a missing, unexpected or mismatched tensor, a bad training state).
    #[error(transparent)]
    Checkpoint(model_checkpoint::Error),
    /// burn failed (reading a tensor, encoding the optimizer's record).
    #[error("burn: {0}")]
    Burn(Box<dyn std::error::Error + Send + Sync>),
    /// Options that cannot work (a model of no layers, data the model cannot take).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
}

impl Error {
    pub(crate) fn burn(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Burn(Box::new(e))
    }

    pub(crate) fn options(reason: impl Into<String>) -> Self {
        Error::InvalidOptions(reason.into())
    }
}

impl From<model_checkpoint::Error> for Error {
    /// The core's errors stay the core's; this crate's own that travelled through the core
    /// come back as themselves.
    fn from(e: model_checkpoint::Error) -> Self {
        e.into_framework::<Error>()
            .unwrap_or_else(Error::Checkpoint)
    }
}

impl From<Error> for model_checkpoint::Error {
    /// burn's failures reach callbacks as [`model_checkpoint::Error::Framework`].
    fn from(e: Error) -> Self {
        match e {
            Error::Checkpoint(inner) => inner,
            other => model_checkpoint::Error::Framework(Box::new(other)),
        }
    }
}

impl From<Error> for model_checkpoint_fit::Error {
    /// burn's failures reach `fit` as [`model_checkpoint_fit::Error::Step`].
    fn from(e: Error) -> Self {
        match e {
            Error::Checkpoint(inner) => inner.into(),
            Error::InvalidOptions(reason) => model_checkpoint_fit::Error::InvalidOptions(reason),
            other => model_checkpoint_fit::Error::Step(Box::new(other)),
        }
    }
}
