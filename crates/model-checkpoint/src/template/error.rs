use super::pystr::repr;

/// Why a template could not be formatted, with Python's exception type and exact text.
///
/// `Display` prints what Python's `str(exception)` prints: for [`FormatError::MissingKey`]
/// that is the key's `repr` (`'foo'`), for the others the message itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// A named field that the keyword arguments lack (Python's `KeyError`).
    #[error("{}", repr(.key))]
    MissingKey {
        /// The field name, as written in the template.
        key: String,
    },
    /// A malformed template or format spec (Python's `ValueError`).
    #[error("{0}")]
    Value(String),
    /// A positional field such as `{}` or `{0}` (Python's `IndexError`).
    #[error("{0}")]
    Index(String),
    /// A type-level failure, such as a spec given to `None` (Python's `TypeError`).
    #[error("{0}")]
    Type(String),
    /// An attribute the value lacks, as in `{epoch.foo}` (Python's `AttributeError`).
    #[error("{0}")]
    Attribute(String),
    /// A number out of range, as in `{n:c}` with a negative `n` (Python's `OverflowError`).
    #[error("{0}")]
    Overflow(String),
    /// A width or precision beyond [`MAX_FIELD_WIDTH`](super::MAX_FIELD_WIDTH), or a result
    /// beyond [`MAX_OUTPUT`](super::MAX_OUTPUT) characters. CPython would try to build the
    /// string (and raise `MemoryError` when it cannot); no file name can be that long, so
    /// this engine refuses before allocating, with Python's `MemoryError` as the type.
    #[error("{0}")]
    TooLong(String),
}

impl FormatError {
    /// The name of the Python exception this error stands for, e.g. `"KeyError"`.
    pub fn python_type(&self) -> &'static str {
        match self {
            FormatError::MissingKey { .. } => "KeyError",
            FormatError::Value(_) => "ValueError",
            FormatError::Index(_) => "IndexError",
            FormatError::Type(_) => "TypeError",
            FormatError::Attribute(_) => "AttributeError",
            FormatError::Overflow(_) => "OverflowError",
            FormatError::TooLong(_) => "MemoryError",
        }
    }

    pub(crate) fn value(message: impl Into<String>) -> Self {
        FormatError::Value(message.into())
    }
}

/// Python's way of naming a presentation character in error texts: itself when printable
/// ASCII, `\xNN` otherwise.
pub(crate) fn code_name(c: char) -> String {
    if (c as u32) > 32 && (c as u32) < 128 {
        c.to_string()
    } else {
        format!("\\x{:x}", c as u32)
    }
}
