//! The crate's one error type.

use std::io;

use crate::model::Dtype;
use crate::template::{python_repr, FormatError};

/// Everything that can go wrong, each variant naming the bad value or path.
///
/// Where Keras raises an error in the same situation, the message is Keras's, byte for byte
/// (checked against the oracle traces); [`Error::keras_exception`] names the Python type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The filepath template names a field that neither `epoch`, `batch` nor the logs provide.
    #[error("Failed to format this callback filepath: \"{template}\". Reason: {}", python_repr(.key))]
    MissingTemplateKey {
        /// The template.
        template: String,
        /// The missing field.
        key: String,
    },
    /// The filepath template is malformed or a spec does not suit its value; the text is
    /// Python's.
    #[error("{source}")]
    Template {
        /// The template.
        template: String,
        /// Python's error.
        source: FormatError,
    },
    /// The logs hold an `epoch` key, which clashes with the `epoch` field (Python's
    /// `TypeError`).
    #[error("str.format() got multiple values for keyword argument 'epoch'")]
    EpochInLogs,
    /// `save_freq` is neither `"epoch"` nor an integer.
    #[error("Unrecognized save_freq: {value}. Expected save_freq are \"epoch\" or integer")]
    InvalidSaveFreq {
        /// The value, as Python's `str()` writes it.
        value: String,
    },
    /// A mode other than `auto`, `min` or `max` where a strict one is needed (the CLI, Rust
    /// callers). The Keras-compatible path warns and falls back to `auto` instead.
    #[error("unknown mode \"{value}\" (expected \"auto\", \"min\" or \"max\")")]
    UnknownMode {
        /// The value given.
        value: String,
    },
    /// Keras 3 raises here ([`KerasVersion::Keras3`](crate::KerasVersion::Keras3)): which
    /// refusal it is, and Keras's exact text (spelled by the Keras rules, `checkpoint/keras/`).
    #[error("{message}")]
    Keras {
        /// Which refusal, and so which Python exception.
        error: KerasError,
        /// Keras's text, byte for byte.
        message: String,
    },
    /// The formatted checkpoint path is an existing directory.
    #[error("Please specify a non-directory filepath for ModelCheckpoint. Filepath used is an existing directory: {}", .path)]
    IsADirectory {
        /// The path.
        path: crate::name::Name,
    },
    /// A folder where a checkpoint file was to be read. A sharded or deduplicated
    /// checkpoint is a folder: it opens with [`crate::sharded::ShardedCheckpoint::open`],
    /// and `Trainer::resume_latest` or [`crate::restore::restore_latest`] on the folder
    /// that holds it find it as they find files. (Saving to a folder is
    /// [`Error::IsADirectory`], in Keras's words.)
    #[error("{path} is a folder, not a checkpoint file (the folder of a sharded or deduplicated checkpoint holds model.safetensors.index.json)")]
    FolderNotFile {
        /// The folder.
        path: crate::name::Name,
    },
    /// A save was due but no model was attached to the callback.
    #[error("no model to save: the callback was called without a model")]
    NoModel,
    /// A batch-level save was due before any `on_epoch_begin`, so the epoch is unknown.
    #[error("a batch-level save was due before on_epoch_begin: the current epoch is unknown")]
    NoCurrentEpoch,
    /// A tensor's bytes do not match its dtype and shape.
    #[error("tensor of dtype {dtype:?} and shape {shape:?} needs {expected} bytes, got {actual}")]
    TensorSize {
        /// The dtype.
        dtype: Dtype,
        /// The shape.
        shape: Vec<usize>,
        /// Bytes the dtype and shape need.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// A tensor name appears twice, or uses a prefix the format reserves.
    #[error("invalid tensor name {name:?}: {reason}")]
    TensorName {
        /// The name.
        name: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", .path)]
    Io {
        /// What was being done (`"write"`, `"create folder"` …).
        action: &'static str,
        /// The path involved.
        path: crate::name::Name,
        /// The system's error.
        source: io::Error,
    },
    /// A checkpoint file is damaged or is not what was expected.
    #[error("{}: {reason}", .path)]
    Corrupt {
        /// The file.
        path: crate::name::Name,
        /// What is wrong, naming the tensor or field.
        reason: String,
    },
    /// A path that must be a regular file is a FIFO, a socket or a device.
    #[error("{} is {kind}, not a regular file: checkpoints and data are read from regular files only", .path)]
    NotARegularFile {
        /// The path.
        path: crate::name::Name,
        /// What it is instead.
        kind: &'static str,
    },
    /// Something read from outside (a file, a template, an option) asks for more memory or a
    /// longer name than allowed, or than the system can give.
    #[error("{what} is too large: {reason}")]
    TooLarge {
        /// What was too large, naming the value or file.
        what: String,
        /// The limit, or the allocator's refusal.
        reason: String,
    },
    /// The filepath template would produce a name the tool itself manages (the folder's lock
    /// file, the temporary-file pattern of unfinished saves, the `last` link).
    #[error("filepath {template:?} would produce {name:?}, which is reserved for {what}: choose another filepath")]
    ReservedName {
        /// The template (shortened if long).
        template: String,
        /// The reserved name.
        name: String,
        /// What the tool uses that name for.
        what: &'static str,
    },
    /// A formatted checkpoint path is longer than file systems allow (a component over 255
    /// bytes, or the whole over 4096), refused before anything is created.
    #[error("checkpoint path {name:?} is too long: {reason}")]
    NameTooLong {
        /// The path (shortened).
        name: String,
        /// Which limit it passes.
        reason: String,
    },
    /// A full checkpoint was asked of a model that hands over no training state, which
    /// could not resume anything.
    #[error("the model hands over no training state, so a full checkpoint could not resume training: implement Checkpointable::training_state, or save weights only (save_weights_only)")]
    NoTrainingState,
    /// Options of a callback that do not work together (or not yet), refused before
    /// training.
    #[error("{key}: {reason}")]
    Incompatible {
        /// The callback (its state key, shortened).
        key: String,
        /// What does not combine, and what to do.
        reason: String,
    },
    /// A callback's saved state does not fit it (another monitor, malformed fields,
    /// counters out of range).
    #[error("cannot restore {key}: {reason}")]
    BadState {
        /// The callback's state key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint lacks a tensor the model or optimizer needs.
    #[error("{}: tensor {name:?} is missing", .path)]
    MissingTensor {
        /// The checkpoint.
        path: crate::name::Name,
        /// The tensor, as named in the file.
        name: String,
    },
    /// A checkpoint holds a tensor the model does not have (a strict load).
    #[error("{}: tensor {name:?} is not a variable of this model", .path)]
    UnexpectedTensor {
        /// The checkpoint.
        path: crate::name::Name,
        /// The tensor.
        name: String,
    },
    /// A tensor's shape differs between the checkpoint and the model.
    #[error("{}: tensor {name:?} has shape {found:?} in the file but {expected:?} in the model", .path)]
    ShapeMismatch {
        /// The checkpoint.
        path: crate::name::Name,
        /// The tensor.
        name: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A tensor's dtype differs between the checkpoint and the model.
    #[error("{}: tensor {name:?} is {found} in the file but {expected} in the model", .path)]
    DtypeMismatch {
        /// The checkpoint.
        path: crate::name::Name,
        /// The tensor.
        name: String,
        /// The model's dtype.
        expected: String,
        /// The file's dtype.
        found: String,
    },
    /// A weights-only file was given where training must resume from a full checkpoint.
    #[error("{}: a weights-only checkpoint cannot resume training; give a full checkpoint (saved without save_weights_only)", .path)]
    NotAFullCheckpoint {
        /// The file.
        path: crate::name::Name,
    },
    /// A full checkpoint's training state is missing a field or does not fit this run.
    #[error("{}: {reason}", .path)]
    BadTrainingState {
        /// The file.
        path: crate::name::Name,
        /// What is wrong.
        reason: String,
    },
    /// The model cannot take tensors back (its `Checkpointable` has only the saving side).
    #[error("this model cannot restore {what}: implement Checkpointable::{method}")]
    CannotRestore {
        /// What it was asked to restore.
        what: &'static str,
        /// The method to implement.
        method: &'static str,
    },
    /// Another process holds the checkpoint folder's lock.
    #[error("another process is writing checkpoints into {}: its lock {} is held; wait for it to finish or choose another folder", .dir, .dir.join(crate::store::LOCK_FILE))]
    Locked {
        /// The folder.
        dir: crate::name::Name,
    },
    /// A storage location (a URL or a name in it) that cannot be used.
    #[error("{location}: {reason}")]
    BadLocation {
        /// The location, as given.
        location: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A save that must not replace anything found its name taken (another writer won).
    #[error("{name} already exists: another writer created it first")]
    AlreadyExists {
        /// The name.
        name: String,
    },
    /// A remote folder's lock is held; the holder wrote who it is and when it started.
    #[error("{dir} is locked by {holder}: another trainer is writing there; if that process is gone, break the lock with `ckpt unlock {dir}` (or delete {dir}/.ckpt.lock)")]
    LockedBy {
        /// The folder.
        dir: String,
        /// Who holds it, as the holder wrote it.
        holder: String,
    },
    /// A strict load found tensors missing, unexpected or mismatched: all are named.
    #[error("{} does not match the model: {report}", .path)]
    LoadMismatch {
        /// The checkpoint.
        path: crate::name::Name,
        /// Every tensor missing, unexpected or of another dtype or shape.
        report: Box<crate::load::LoadReport>,
    },
    /// A strict restore was handed a callback whose state the checkpoint does not hold.
    #[error("{} holds no state for callback {key}: it would start afresh; save full checkpoints from one list of callbacks (CallbackList), or restore without strict", .path)]
    MissingCallbackState {
        /// The checkpoint.
        path: crate::name::Name,
        /// The callback's state key.
        key: String,
    },
    /// A delete or a replace that the deletion gate refused: the object is not what the
    /// tool wrote for that purpose (see [`crate::store::gate`]).
    #[error("refusing to delete or replace {name}: {reason}")]
    NotOurs {
        /// The object.
        name: String,
        /// What it lacks.
        reason: String,
    },
    /// No full checkpoint in a folder verifies.
    #[error("no full checkpoint in {} verifies", .dir)]
    NoCheckpoint {
        /// The folder.
        dir: crate::name::Name,
    },
    /// The tensor framework (or a model's own code) failed; the framework's error is kept as
    /// the source.
    #[error("model: {0}")]
    Framework(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A tensor could not be copied for a background save.
    #[error("cannot copy tensor {name:?} for a background save: {source}")]
    Snapshot {
        /// The tensor.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// The background writer thread could not start; a job on it panicked (that save, or
    /// the work after a save, fails alone); or the thread stopped unexpectedly (saves in
    /// flight are lost and said to be, once, and the next save starts a new thread).
    #[error("background saves: {reason}")]
    Writer {
        /// What happened.
        reason: String,
        /// The system's error, where there is one.
        #[source]
        source: Option<io::Error>,
    },
    /// Metadata given for a file that the format reads back, with a value it cannot hold
    /// there (an `epoch` that is not a count, `logs` that are not an object of numbers).
    #[error("metadata {reason}")]
    BadMetadata {
        /// What is wrong, naming the key.
        reason: String,
    },
    /// A hook was handed an epoch or batch index beyond what a checkpoint may hold
    /// ([`crate::store::MAX_COUNTER`]).
    #[error("{what} {value} is beyond what a checkpoint may hold (at most {max})", max = crate::document::MAX_COUNTER - 1)]
    CounterTooLarge {
        /// Which counter (`epoch`, `batch`).
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// The signal handlers for `save_on_interrupt` could not be installed.
    #[error("cannot install handlers for SIGTERM and SIGINT: {0}")]
    Signals(#[source] io::Error),
}

impl Error {
    /// A framework adapter's own error of type `E` that travelled through the core as
    /// [`Error::Framework`] (out of a model's `weights`, through a callback's save), or this
    /// error itself: what each adapter's `From<model_checkpoint::Error>` starts from.
    ///
    /// ```
    /// use model_checkpoint::Error;
    ///
    /// let io = std::io::Error::other("disk gone");
    /// let travelled = Error::Framework(Box::new(io));
    /// assert_eq!(travelled.into_framework::<std::io::Error>().map(|e| e.to_string()).ok(), Some("disk gone".into()));
    /// ```
    ///
    /// # Errors
    ///
    /// This error, when it is not an `E`.
    pub fn into_framework<E: std::error::Error + 'static>(self) -> Result<E, Error> {
        match self {
            Error::Framework(inner) => match inner.downcast::<E>() {
                Ok(own) => Ok(*own),
                Err(other) => Err(Error::Framework(other)),
            },
            other => Err(other),
        }
    }

    /// Whether this error says there is nothing to resume from: no full checkpoint in the
    /// folder verifies ([`Error::NoCheckpoint`]), or the folder is not there yet (a missing
    /// object's [`Error::Io`]). A job that may be requeued starts afresh on it, and fails on
    /// any other error (a folder it cannot read may hold the newest checkpoint).
    ///
    /// ```
    /// use model_checkpoint::{restore, store::{LocalFolder, Name}};
    /// let dir = tempfile::tempdir()?;
    /// let never_made = Name::from(dir.path().join("ck"));
    /// let searched = restore::latest_resumable(&LocalFolder::default(), &never_made);
    /// assert!(searched.is_err_and(|e| e.is_nothing_to_resume()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_nothing_to_resume(&self) -> bool {
        match self {
            Error::NoCheckpoint { .. } => true,
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }

    /// Whether the storage failed to read an object that is there (a disk's error, an
    /// endpoint's refusal or failure): what says nothing of the object itself, unlike a
    /// damaged or missing one. `latest` stops at such a file rather than skip back past it,
    /// and `ckpt verify` calls it an error rather than a file that does not verify.
    ///
    /// A name that leads nowhere is a missing object, not a failure to read one: not
    /// there, a link that loops, a path through a file.
    pub fn is_read_failure(&self) -> bool {
        matches!(self, Error::Io { source, .. } if !leads_nowhere(source))
    }

    /// The Python exception tf.keras raises in the same situation (`"KeyError"`,
    /// `"ValueError"`, `"OSError"` …), or `None` where Keras has no counterpart.
    pub fn keras_exception(&self) -> Option<&'static str> {
        match self {
            Error::MissingTemplateKey { .. } => Some("KeyError"),
            Error::Template { source, .. } => Some(source.python_type()),
            Error::EpochInLogs => Some("TypeError"),
            Error::InvalidSaveFreq { .. } => Some("ValueError"),
            Error::Keras { error, .. } => Some(error.python_type()),
            Error::IsADirectory { .. } | Error::NameTooLong { .. } => Some("OSError"),
            Error::ReservedName { .. } => Some("ValueError"),
            Error::TooLarge { .. } => Some("MemoryError"),
            Error::NoModel | Error::NoCurrentEpoch => Some("AttributeError"),
            _ => None,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<crate::name::Name>,
        source: io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<crate::name::Name>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// What Keras 3's `ModelCheckpoint` refused (the kind of an [`Error::Keras`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KerasError {
    /// A keyword argument Keras 3's constructor does not take (`period`, `options`,
    /// `load_weights_on_restart`, any other): Python's `TypeError`.
    UnexpectedKeyword,
    /// `save_freq` is neither `"epoch"` nor an integer: `ValueError`.
    InvalidSaveFreq,
    /// The filepath does not end in `.weights.h5` (weights only) or `.keras`/`.h5` (full
    /// model): `ValueError`.
    FilepathExtension,
    /// `mode="auto"` cannot tell which way the monitor should move: `ValueError`, at every
    /// epoch end.
    UnknownDirection,
    /// `save_best_only` with an integer `save_freq` compared a value before the first epoch
    /// end chose the comparison (Keras 3's bug): `TypeError`.
    MonitorOpNotSet,
    /// A hook was called with no logs at all (Python's `logs=None`), which Keras 3 formats
    /// before reading it as empty: `TypeError`.
    NoLogs,
}

impl KerasError {
    /// The Python exception Keras raises.
    pub fn python_type(self) -> &'static str {
        match self {
            KerasError::UnexpectedKeyword | KerasError::MonitorOpNotSet | KerasError::NoLogs => {
                "TypeError"
            }
            KerasError::InvalidSaveFreq
            | KerasError::FilepathExtension
            | KerasError::UnknownDirection => "ValueError",
        }
    }
}

impl From<crate::name::NameError> for Error {
    fn from(e: crate::name::NameError) -> Self {
        Error::BadLocation {
            location: crate::text::shorten(&e.text, 200),
            reason: e.reason,
        }
    }
}

/// Keeps the first of several failures, to be returned; a later one is logged at error
/// level, so that none is dropped unseen (a hook returns one error).
pub(crate) fn keep_first(first: &mut Option<Error>, e: Error) {
    match first {
        None => *first = Some(e),
        Some(_) => log::error!(
            target: "model_checkpoint",
            "{e} (a later failure, logged: the first is the one returned)"
        ),
    }
}

/// `first`, or `next` where `first` succeeded: [`Result::and`] for steps that have all run,
/// except that `next`'s failure after `first`'s is logged (see [`keep_first`]).
pub(crate) fn first_failure(
    first: Result<(), Error>,
    next: Result<(), Error>,
) -> Result<(), Error> {
    let mut kept = first.err();
    if let Err(e) = next {
        keep_first(&mut kept, e);
    }
    kept.map_or(Ok(()), Err)
}

/// What a caught panic said (its `&str` or `String` payload), for an error that reports it.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

/// Whether `error` says a name leads to no object: not found, a link that loops (`ELOOP`),
/// or a path whose folder is a file (`ENOTDIR`).
fn leads_nowhere(error: &io::Error) -> bool {
    #[cfg(unix)]
    if error.raw_os_error() == Some(libc::ELOOP) {
        return true;
    }
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(what: &str) -> Error {
        Error::InvalidSaveFreq {
            value: what.to_owned(),
        }
    }

    fn failed(what: &str) -> Result<(), Error> {
        Err(error(what))
    }

    #[test]
    fn the_first_failure_is_returned_whichever_step_it_came_from() {
        assert!(first_failure(Ok(()), Ok(())).is_ok());
        let only_next = first_failure(Ok(()), failed("next")).expect_err("next failed");
        assert!(only_next.to_string().contains("next"), "{only_next}");
        let both = first_failure(failed("first"), failed("second")).expect_err("both failed");
        assert!(both.to_string().contains("first"), "{both}");
        let mut kept = None;
        keep_first(&mut kept, error("one"));
        keep_first(&mut kept, error("two"));
        assert!(kept.is_some_and(|e| e.to_string().contains("one")));
    }
}
