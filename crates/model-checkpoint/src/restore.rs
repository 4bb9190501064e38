//! Resuming from a full checkpoint, for any framework: the tensors-in side of
//! [`Checkpointable`], and one call that restores a model, its training state and every
//! callback's state ([`restore`], [`restore_latest`]).
//!
//! ```
//! use model_checkpoint::restore::restore;
//! use model_checkpoint::store::{CheckpointFile, LoopState, TrainingDocument, Verify};
//! use model_checkpoint::{
//!     Callback, Checkpointable, Context, Dtype, Error, HostTensor, Logs, ModelCheckpoint,
//!     NamedTensor, TensorSource, TrainingState,
//! };
//!
//! /// A model whose weights and training state are one step counter.
//! struct Toy { w: Vec<f32>, step: u64 }
//!
//! impl Checkpointable for Toy {
//!     fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
//!         Ok(vec![NamedTensor::new("w", HostTensor::from_f32(vec![2], &self.w))])
//!     }
//!     fn training_state(&self) -> Result<TrainingState<'_>, Error> {
//!         let mut state = TrainingState::default();
//!         state.document.loop_state = Some(LoopState { step: self.step, ..LoopState::default() });
//!         Ok(state)
//!     }
//!     fn restore_weights(&mut self, stored: &dyn TensorSource) -> Result<(), Error> {
//!         let bytes = stored.read("w", Dtype::F32, &[2])?;
//!         self.w = bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
//!         Ok(())
//!     }
//!     fn restore_training_state(
//!         &mut self,
//!         _tensors: &dyn TensorSource,
//!         document: &TrainingDocument,
//!     ) -> Result<(), Error> {
//!         self.step = document.loop_state.as_ref().map_or(0, |l| l.step);
//!         Ok(())
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors"));
//! let toy = Toy { w: vec![1.5, -2.0], step: 7 };
//! let mut ctx = Context::new(&toy);
//! cb.on_epoch_begin(0, &Logs::new(), &mut ctx)?;
//! cb.on_epoch_end(0, &Logs::from([("val_loss", 0.5)]), &mut ctx)?;
//!
//! // Another process: a fresh model and callback, one call.
//! let mut fresh = Toy { w: vec![0.0; 2], step: 0 };
//! let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors"));
//! let file = CheckpointFile::open(&dir.path().join("w1.safetensors"), Verify::Full)?;
//! let restored = restore(&file, &mut fresh, &mut [&mut cb])?;
//! assert_eq!((fresh.w.as_slice(), fresh.step), (&[1.5, -2.0][..], 7));
//! assert_eq!(cb.saves(), 1);
//! assert_eq!(restored.meta.epoch, Some(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use crate::callback::Callback;
use std::collections::BTreeMap;

use crate::model::{byte_len, Checkpointable, Dtype, Placement, TensorInfo};
use crate::sharded::{Ranks, ShardedCheckpoint};
use crate::store::{self, CheckpointFile, Kind, Meta, Name, Storage, Verify, TRAINING_PREFIX};
use crate::Error;

/// A checkpoint open for reading, of either kind: a file, or a folder whose index names the
/// files it is made of (a sharded or deduplicated checkpoint). [`AnyCheckpoint::open`] is
/// the one place that tells the two apart by name, so that every reader (a restore, a
/// resume, Python's `load_file`, `ckpt`) takes what `latest` may name.
///
/// ```
/// use model_checkpoint::restore::AnyCheckpoint;
/// use model_checkpoint::store::{LocalFolder, Name, Verify};
/// # use model_checkpoint::{Callback, Checkpointable, Context, Error, HostTensor, Logs, ModelCheckpoint, NamedTensor};
/// # struct Toy;
/// # impl Checkpointable for Toy {
/// #     fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
/// #         Ok(vec![NamedTensor::new("w", HostTensor::from_f32(vec![2], &[1.0, 2.0]))])
/// #     }
/// # }
/// let dir = tempfile::tempdir()?;
/// for dedup in [false, true] {
///     let path = dir.path().join(if dedup { "folder.safetensors" } else { "file.safetensors" });
///     let mut cb = ModelCheckpoint::new(&path).save_weights_only(true).dedup(dedup);
///     let mut ctx = Context::new(&Toy);
///     cb.on_train_begin(&Logs::new(), &mut ctx)?;
///     cb.on_epoch_end(0, &Logs::new(), &mut ctx)?;
///     cb.on_train_end(&Logs::new(), &mut ctx)?;
///     let opened = AnyCheckpoint::open(&LocalFolder::default(), &Name::from(path), Verify::Full)?;
///     assert_eq!(matches!(opened, AnyCheckpoint::Folder(_)), dedup);
///     assert_eq!(opened.weights()?.names().collect::<Vec<_>>(), ["w"]);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub enum AnyCheckpoint {
    /// A checkpoint file.
    File(CheckpointFile),
    /// A folder with an index: a sharded or deduplicated checkpoint.
    Folder(ShardedCheckpoint),
}

impl AnyCheckpoint {
    /// Opens the checkpoint `name` of `storage`: the folder's index when `name` is a folder
    /// holding one, the file otherwise; with [`Verify::Full`], every byte of either checked
    /// before it is returned.
    ///
    /// # Errors
    ///
    /// [`CheckpointFile::open_in`]'s (among them [`Error::FolderNotFile`] for a folder
    /// without an index) and [`ShardedCheckpoint::open`]'s and
    /// [`ShardedCheckpoint::verify`]'s.
    pub fn open(storage: &dyn Storage, name: &Name, verify: Verify) -> Result<Self, Error> {
        if !crate::sharded::is_folder_checkpoint(storage, name)? {
            return CheckpointFile::open_in(storage, name, verify).map(AnyCheckpoint::File);
        }
        let checkpoint = ShardedCheckpoint::open(storage, name)?;
        if verify == Verify::Full {
            checkpoint.verify()?;
        }
        Ok(AnyCheckpoint::Folder(checkpoint))
    }

    /// Its name: the file's, or the folder's.
    pub fn name(&self) -> &Name {
        match self {
            AnyCheckpoint::File(file) => file.path(),
            AnyCheckpoint::Folder(checkpoint) => checkpoint.dir(),
        }
    }

    /// What it records beside its tensors (its epoch, step, run and training state): the
    /// file's header metadata, or the index's.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        match self {
            AnyCheckpoint::File(file) => file.info(),
            AnyCheckpoint::Folder(checkpoint) => &checkpoint.index().model_checkpoint.metadata,
        }
    }

    /// The file that holds its training state: the file itself, or a folder's shard 0 (a
    /// deduplicated checkpoint's head).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for a folder without a shard 0.
    pub fn head(&self) -> Result<&CheckpointFile, Error> {
        match self {
            AnyCheckpoint::File(file) => Ok(file),
            AnyCheckpoint::Folder(checkpoint) => no_head(checkpoint, checkpoint.shard(0)),
        }
    }

    /// Its weights, whole, as one process loads them.
    ///
    /// # Errors
    ///
    /// As [`AnyCheckpoint::head`].
    pub fn weights(&self) -> Result<Stored<'_>, Error> {
        match self {
            AnyCheckpoint::File(file) => Ok(Stored::weights(file)),
            AnyCheckpoint::Folder(checkpoint) => {
                no_head(checkpoint, Stored::sharded_weights(checkpoint))
            }
        }
    }

    /// [`restore`] from it, by one process (a folder with [`Ranks::single`]).
    ///
    /// # Errors
    ///
    /// As [`restore`] and [`restore_from_sharded`].
    pub fn restore(
        &self,
        model: &mut dyn Checkpointable,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<Restored, Error> {
        match self {
            AnyCheckpoint::File(file) => restore(file, model, callbacks),
            AnyCheckpoint::Folder(checkpoint) => {
                restore_from_sharded(checkpoint, Ranks::single(), model, callbacks)
            }
        }
    }
}

/// `found`, or the error for a folder checkpoint without its shard 0.
fn no_head<T>(checkpoint: &ShardedCheckpoint, found: Option<T>) -> Result<T, Error> {
    found.ok_or_else(|| Error::Corrupt {
        path: checkpoint.dir().join(crate::sharded::INDEX_FILE),
        reason: "it names no shard 0".to_owned(),
    })
}

/// The tensors of a checkpoint as a model or an optimizer sees them: the weights, or the
/// training tensors with their reserved prefix already taken off.
pub struct Stored<'a> {
    file: &'a CheckpointFile,
    prefix: &'a str,
    /// For a sharded checkpoint: the checkpoint, and where this process's tensors lie.
    sharded: Option<(&'a ShardedCheckpoint, &'a BTreeMap<String, Placement>)>,
}

impl<'a> Stored<'a> {
    /// The model's weights in `file`.
    pub fn weights(file: &'a CheckpointFile) -> Self {
        Stored {
            file,
            prefix: "",
            sharded: None,
        }
    }

    /// The weights of a sharded or deduplicated checkpoint, whole, as one process loads
    /// them (every tensor assembled from its pieces); `None` when it has no shard 0.
    pub fn sharded_weights(checkpoint: &'a ShardedCheckpoint) -> Option<Self> {
        /// No placements: every tensor whole.
        static WHOLE: BTreeMap<String, Placement> = BTreeMap::new();
        Some(Stored {
            file: checkpoint.shard(0)?,
            prefix: "",
            sharded: Some((checkpoint, &WHOLE)),
        })
    }

    /// The training tensors in `file` (stored under `__training__/`).
    pub fn training(file: &'a CheckpointFile) -> Self {
        Stored {
            file,
            prefix: TRAINING_PREFIX,
            sharded: None,
        }
    }

    /// The file.
    pub fn file(&self) -> &'a CheckpointFile {
        self.file
    }

    /// The prefix these names carry in the file (`""` or `__training__/`).
    pub fn prefix(&self) -> &'a str {
        self.prefix
    }

    /// The names here (without the prefix). Weights exclude the training tensors. For a
    /// sharded checkpoint: every global tensor, and this process's own state.
    pub fn names(&self) -> impl Iterator<Item = &'a str> + 'a {
        let prefix = self.prefix;
        let keep = move |name: &'a str| {
            if prefix.is_empty() {
                (!name.starts_with(TRAINING_PREFIX)).then_some(name)
            } else {
                name.strip_prefix(prefix)
            }
        };
        let own: Box<dyn Iterator<Item = &'a str> + 'a> = match self.sharded {
            // Its own state comes from its shard; everything else is global.
            Some((checkpoint, _)) => {
                let per_rank: Vec<&'a str> = self
                    .file
                    .tensors()
                    .map(|t| t.name)
                    .filter(|n| !checkpoint.tensors().contains_key(*n))
                    .collect();
                Box::new(
                    checkpoint
                        .tensors()
                        .keys()
                        .map(String::as_str)
                        .chain(per_rank),
                )
            }
            None => Box::new(self.file.tensors().map(|t| t.name)),
        };
        own.filter_map(keep)
    }

    /// The bytes of the tensor `name`, checked to be of `dtype` and `shape` before they are
    /// read (and checked against their checksum as they are).
    ///
    /// # Errors
    ///
    /// [`Error::MissingTensor`], [`Error::DtypeMismatch`] or [`Error::ShapeMismatch`] naming
    /// the tensor and both dtypes or shapes, or the reader's errors.
    pub fn read(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<Vec<u8>, Error> {
        let key = format!("{}{name}", self.prefix);
        if let Some((checkpoint, layout)) = self.sharded {
            // This process's own state comes from its shard (`file`), as below.
            match layout.get(name) {
                Some(Placement::PerRank) => {}
                placement => return read_global(checkpoint, &key, placement, dtype, shape),
            }
        }
        let path = self.file.path().clone();
        let t = self.file.tensor(&key).ok_or_else(|| Error::MissingTensor {
            path: path.clone(),
            name: key.clone(),
        })?;
        if t.dtype != dtype {
            return Err(Error::DtypeMismatch {
                path,
                name: key,
                expected: format!("{dtype:?}"),
                found: format!("{:?}", t.dtype),
            });
        }
        if t.shape != shape {
            return Err(Error::ShapeMismatch {
                path,
                name: key,
                expected: shape.to_vec(),
                found: t.shape.to_vec(),
            });
        }
        debug_assert_eq!(t.len, byte_len(dtype, shape));
        self.file.read(&key)
    }
}

impl crate::model::TensorSource for Stored<'_> {
    fn path(&self) -> &Name {
        self.file.path()
    }

    /// The tensors here, without the prefix. For a sharded checkpoint: every global tensor
    /// with its global shape (a sliced one is read with this process's slice shape), and
    /// this process's own state.
    fn tensors(&self) -> Vec<TensorInfo> {
        let strip = |name: &str| -> Option<String> {
            if self.prefix.is_empty() {
                (!name.starts_with(TRAINING_PREFIX)).then(|| name.to_owned())
            } else {
                name.strip_prefix(self.prefix).map(str::to_owned)
            }
        };
        let mut out = Vec::new();
        if let Some((checkpoint, _)) = self.sharded {
            for (name, global) in checkpoint.tensors() {
                if let (Some(stripped), Ok(dtype)) =
                    (strip(name), checkpoint.dtype_of(name, global))
                {
                    out.push(TensorInfo::new(stripped, dtype, &global.global_shape));
                }
            }
        }
        for t in self.file.tensors() {
            if self
                .sharded
                .is_some_and(|(checkpoint, _)| checkpoint.tensors().contains_key(t.name))
            {
                continue;
            }
            if let Some(stripped) = strip(t.name) {
                out.push(TensorInfo::new(stripped, t.dtype, t.shape));
            }
        }
        out
    }

    fn read(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<Vec<u8>, Error> {
        Stored::read(self, name, dtype, shape)
    }

    fn verified(&self) -> bool {
        self.file.has_checksums()
    }
}

/// Tensor `key` of a sharded checkpoint: this process's slice of it, or the whole of a
/// replicated one, checked against the dtype and shape the model expects.
fn read_global(
    checkpoint: &ShardedCheckpoint,
    key: &str,
    placement: Option<&Placement>,
    dtype: Dtype,
    shape: &[usize],
) -> Result<Vec<u8>, Error> {
    let path = checkpoint.dir().join(crate::sharded::INDEX_FILE);
    let global = checkpoint
        .tensors()
        .get(key)
        .ok_or_else(|| Error::MissingTensor {
            path: path.clone(),
            name: crate::text::shorten(key, 200),
        })?;
    let (offsets, expected_global) = match placement {
        Some(Placement::Sliced(slice)) => (slice.offsets.clone(), slice.global_shape.clone()),
        _ => (vec![0; shape.len()], shape.to_vec()),
    };
    if global.global_shape != expected_global {
        return Err(Error::ShapeMismatch {
            path,
            name: crate::text::shorten(key, 200),
            expected: expected_global,
            found: global.global_shape.clone(),
        });
    }
    let tensor = checkpoint.read_region(key, &offsets, shape)?;
    if crate::model::TensorData::dtype(&tensor) != dtype {
        return Err(Error::DtypeMismatch {
            path,
            name: crate::text::shorten(key, 200),
            expected: format!("{dtype:?}"),
            found: global.dtype.clone(),
        });
    }
    Ok(tensor.into_data())
}

/// What [`restore`] restored.
#[derive(Debug)]
#[non_exhaustive]
pub struct Restored {
    /// The checkpoint.
    pub path: Name,
    /// Its metadata (epoch, step, logs, run id).
    pub meta: Meta,
    /// The training state but the callbacks' (`fit`, `optimizer` …), as the model handed it
    /// over at the save.
    pub document: crate::store::TrainingDocument,
    /// The callbacks whose state was restored, by state key.
    pub restored_callbacks: Vec<String>,
    /// The callbacks handed over that keep state but whose state the checkpoint does not
    /// hold, by state key: they start afresh (a warning says so; [`RestoreOptions::strict`]
    /// refuses instead).
    pub missing_callbacks: Vec<String>,
}

/// How [`restore_with_options`] treats what the checkpoint and the caller disagree on.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Refuse, rather than warn, when a callback handed over keeps state that the
    /// checkpoint does not hold (it would start afresh: a best-only callback from ±inf).
    pub strict: bool,
}

impl RestoreOptions {
    /// Strict or not (see [`RestoreOptions::strict`]).
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }
}

/// Restores everything a full checkpoint holds: the model's weights and training state
/// (through [`Checkpointable::restore_weights`] and
/// [`Checkpointable::restore_training_state`]), then the state of every callback in
/// `callbacks` that the checkpoint holds (`ModelCheckpoint`'s best value, counters and run
/// id among them), by state key.
///
/// # Errors
///
/// [`Error::NotAFullCheckpoint`] for a weights-only file, [`Error::BadTrainingState`] for a
/// training state that is missing or malformed, the model's and the callbacks' errors. The
/// model must not be used after an error: some of it may already have changed.
pub fn restore(
    file: &CheckpointFile,
    model: &mut dyn Checkpointable,
    callbacks: &mut [&mut dyn Callback],
) -> Result<Restored, Error> {
    restore_with(file, None, model, callbacks, RestoreOptions::default())
}

/// [`restore`], with `options` (strict: a callback whose state the checkpoint does not hold
/// is an error, [`Error::MissingCallbackState`], checked before anything is restored).
///
/// # Errors
///
/// As [`restore`], and [`Error::MissingCallbackState`] in strict mode.
pub fn restore_with_options(
    file: &CheckpointFile,
    model: &mut dyn Checkpointable,
    callbacks: &mut [&mut dyn Callback],
    options: RestoreOptions,
) -> Result<Restored, Error> {
    restore_with(file, None, model, callbacks, options)
}

/// Restores a process of a multi-process run from the sharded checkpoint in folder `dir`:
/// its slices of sliced tensors (in a world of any size: the pieces that overlap them are
/// read), the whole of replicated ones, its own state (generator, cursor, the training
/// values) from its shard, and the callbacks' states. In a world of another size, rank `r`
/// takes the own state of rank `r mod W` of the `W` that saved.
///
/// # Errors
///
/// As [`restore`], and [`ShardedCheckpoint::open`]'s.
pub fn restore_sharded(
    storage: &dyn Storage,
    dir: &Name,
    ranks: Ranks,
    model: &mut dyn Checkpointable,
    callbacks: &mut [&mut dyn Callback],
) -> Result<Restored, Error> {
    let checkpoint = ShardedCheckpoint::open(storage, dir)?;
    restore_from_sharded(&checkpoint, ranks, model, callbacks)
}

/// [`restore_sharded`] from a sharded (or deduplicated) checkpoint already open: a
/// deduplicated checkpoint is restored by one process with [`Ranks::single`].
///
/// # Errors
///
/// As [`restore_sharded`].
pub fn restore_from_sharded(
    checkpoint: &ShardedCheckpoint,
    ranks: Ranks,
    model: &mut dyn Checkpointable,
    callbacks: &mut [&mut dyn Callback],
) -> Result<Restored, Error> {
    let dir = checkpoint.dir();
    let own = ranks.rank % checkpoint.world_size();
    let file = checkpoint.shard(own).ok_or_else(|| Error::Corrupt {
        path: dir.clone(),
        reason: format!("no shard for rank {own}"),
    })?;
    // Named as the user named it, not by its first shard (a deduplicated one's is a blob).
    if file.kind() != Kind::Full {
        return Err(Error::NotAFullCheckpoint { path: dir.clone() });
    }
    // Every tensor is checked as it is read; the rest of this shard now.
    file.verify_tensors()?;
    let layout = model.shard_layout();
    restore_with(
        file,
        Some((checkpoint, &layout)),
        model,
        callbacks,
        RestoreOptions::default(),
    )
}

/// Asks each of `callbacks` whether it takes the state `states` (a training document's
/// `callbacks`) keeps under its key ([`Callback::check_state`]), changing nothing: what a
/// restore does before it changes anything, and what a caller restoring callbacks one at a
/// time asks of all of them first.
///
/// # Errors
///
/// The first refusal.
pub fn check_states(
    states: &BTreeMap<String, serde_json::Value>,
    callbacks: &[&mut dyn Callback],
) -> Result<(), Error> {
    for cb in callbacks {
        if let Some(state) = cb.state_key().and_then(|key| states.get(&key)) {
            cb.check_state(state)?;
        }
    }
    Ok(())
}

fn restore_with(
    file: &CheckpointFile,
    sharded: Option<(&ShardedCheckpoint, &BTreeMap<String, Placement>)>,
    model: &mut dyn Checkpointable,
    callbacks: &mut [&mut dyn Callback],
    options: RestoreOptions,
) -> Result<Restored, Error> {
    let path = file.path().clone();
    if file.kind() != Kind::Full {
        return Err(Error::NotAFullCheckpoint { path });
    }
    let bad = |reason: String| Error::BadTrainingState {
        path: path.clone(),
        reason,
    };
    let meta = Meta::from_info(file.info()).map_err(&bad)?;
    let mut document = file
        .training_state()?
        .ok_or_else(|| bad("no training state in a full checkpoint".into()))?;
    let saved_callbacks = std::mem::take(&mut document.callbacks);
    // A callback that keeps state the file does not hold would silently start afresh.
    let missing_callbacks: Vec<String> = callbacks
        .iter()
        .filter_map(|cb| cb.state_key())
        .filter(|key| !saved_callbacks.contains_key(key))
        .collect();
    if options.strict {
        if let Some(key) = missing_callbacks.first() {
            return Err(Error::MissingCallbackState {
                path,
                key: crate::text::shorten(key, 200),
            });
        }
    }
    let (weights, training) = match sharded {
        Some((checkpoint, layout)) => (
            Stored {
                sharded: Some((checkpoint, layout)),
                ..Stored::weights(file)
            },
            Stored {
                sharded: Some((checkpoint, layout)),
                ..Stored::training(file)
            },
        ),
        None => (Stored::weights(file), Stored::training(file)),
    };
    // Every callback is asked first: a refusal leaves the model and the callbacks as
    // they were.
    check_states(&saved_callbacks, callbacks)?;
    model.restore_weights(&weights)?;
    model.restore_training_state(&training, &document)?;
    let mut restored_callbacks = Vec::new();
    for cb in callbacks.iter_mut() {
        let Some(key) = cb.state_key() else { continue };
        if let Some(saved) = saved_callbacks.get(&key) {
            cb.restore_state(saved)?;
            cb.restored_from(file)?;
            restored_callbacks.push(key);
        }
    }
    // States no callback given took: most often the same callback under another key (a
    // ModelCheckpoint's is its filepath, which the user changed).
    let unclaimed: Vec<String> = saved_callbacks
        .keys()
        .filter(|key| !restored_callbacks.contains(key))
        .map(|key| crate::text::shorten(key, 200))
        .collect();
    for key in &missing_callbacks {
        let why = if unclaimed.is_empty() {
            "save full checkpoints from one list of callbacks, so that each holds every callback's state".to_owned()
        } else {
            format!(
                "it holds the state of {}, which no callback given has: a callback's state is found by its key, a ModelCheckpoint's its filepath, so give the filepath it was saved with to resume it",
                unclaimed.join(", ")
            )
        };
        log::warn!(
            target: "model_checkpoint",
            "{} holds no state for callback {}: it starts afresh ({why})",
            path.display(),
            crate::text::shorten(key, 200)
        );
    }
    Ok(Restored {
        path,
        meta,
        document,
        restored_callbacks,
        missing_callbacks,
    })
}

/// [`restore`] from the newest full checkpoint that verifies in the local folder `dir`: a
/// file, or a sharded or deduplicated checkpoint's folder (see [`latest_resumable`]).
///
/// # Errors
///
/// [`Error::NoCheckpoint`] when there is none, and [`restore`]'s errors.
pub fn restore_latest(
    dir: &Path,
    model: &mut dyn Checkpointable,
    callbacks: &mut [&mut dyn Callback],
) -> Result<Restored, Error> {
    restore_latest_in(
        &store::LocalFolder::default(),
        &Name::from(dir),
        model,
        callbacks,
    )
}

/// [`restore_latest`] in the folder `dir` of `storage`.
///
/// # Errors
///
/// As [`restore_latest`].
pub fn restore_latest_in(
    storage: &dyn Storage,
    dir: &Name,
    model: &mut dyn Checkpointable,
    callbacks: &mut [&mut dyn Callback],
) -> Result<Restored, Error> {
    latest_resumable(storage, dir)?.restore(model, callbacks)
}

/// The newest checkpoint in `dir` that can resume training, whatever saved it, open and
/// verified: a full checkpoint file, or the folder one level down of a sharded or
/// deduplicated one whose index holds a training state; by the epoch and step each
/// records (a file first on a tie). What `Trainer::resume_latest`, [`restore_latest`],
/// Python's `latest` and `ckpt train --resume latest` take. Candidates are opened newest
/// first until one verifies (every byte read: what one process resuming from it reads
/// anyway; damaged ones are passed over with a warning), so the one returned is not read
/// again before it is restored; one the storage fails to read stops the search, since it
/// may be the newest.
///
/// ```
/// use model_checkpoint::restore::{latest_resumable, AnyCheckpoint};
/// use model_checkpoint::store::{LocalFolder, Name};
/// # use model_checkpoint::{Callback, Checkpointable, Context, Error, HostTensor, Logs, ModelCheckpoint, NamedTensor, TrainingState};
/// # struct Toy;
/// # impl Checkpointable for Toy {
/// #     fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
/// #         Ok(vec![NamedTensor::new("w", HostTensor::from_f32(vec![2], &[1.0, 2.0]))])
/// #     }
/// #     fn training_state(&self) -> Result<TrainingState<'_>, Error> {
/// #         let mut state = TrainingState::default();
/// #         state.tensors.push(NamedTensor::new("optimizer/w/m", HostTensor::from_f32(vec![2], &[0.0, 0.0])));
/// #         Ok(state)
/// #     }
/// # }
/// let dir = tempfile::tempdir()?;
/// let mut cb = ModelCheckpoint::new(dir.path().join("e{epoch:02d}")).dedup(true);
/// let mut ctx = Context::new(&Toy);
/// cb.on_train_begin(&Logs::new(), &mut ctx)?;
/// for epoch in 0..3 {
///     cb.on_epoch_end(epoch, &Logs::from([("loss", 0.5)]), &mut ctx)?;
/// }
/// cb.on_train_end(&Logs::new(), &mut ctx)?;
/// let folder = Name::from(dir.path());
/// let newest = latest_resumable(&LocalFolder::default(), &folder)?;
/// assert_eq!(newest.name(), &folder.join("e03"));
/// assert!(matches!(newest, AnyCheckpoint::Folder(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::NoCheckpoint`] when there is none; [`Error::Io`] when `dir` cannot be listed or
/// a checkpoint newer than the one found cannot be read.
pub fn latest_resumable(storage: &dyn Storage, dir: &Name) -> Result<AnyCheckpoint, Error> {
    /// A checkpoint that may be the newest, by where in training it was saved.
    enum Candidate {
        /// Its header did not read: no known place in training, so tried last.
        Damaged(Name, Error),
        /// A folder checkpoint.
        Folder(Name),
        /// A file: sorted after a folder at the same position, it is tried first on a tie.
        File(Name),
    }
    let mut candidates: Vec<((bool, store::Position, bool), Candidate)> = Vec::new();
    for listed in store::list_in(storage, dir, 0)? {
        match listed.header {
            // A file that could not be read at all may be the newest: nothing is taken.
            Err(e) if e.is_read_failure() => return Err(e),
            Err(e) => candidates.push((
                (false, (0, 0, 0), false),
                Candidate::Damaged(listed.path, e),
            )),
            Ok(h) if h.kind == Kind::Full => candidates.push((
                (true, h.meta.position(), true),
                Candidate::File(listed.path),
            )),
            Ok(_) => {}
        }
    }
    let full = |_: &Name, index: &crate::sharded::Index| {
        index
            .model_checkpoint
            .metadata
            .contains_key(store::KEY_TRAINING_STATE)
    };
    for (position, folder) in crate::sharded::indexed_folders(storage, dir, 0, &full)? {
        candidates.push(((true, position, false), Candidate::Folder(folder)));
    }
    // Stable: among damaged files, and at one position, the listing's order (by name).
    candidates.sort_by_key(|c| c.0);
    let mut skipped = 0usize;
    while let Some((_, candidate)) = candidates.pop() {
        let (name, opened) = match candidate {
            Candidate::Damaged(name, e) => (name, Err(e)),
            Candidate::File(name) | Candidate::Folder(name) => {
                let opened = AnyCheckpoint::open(storage, &name, Verify::Full);
                (name, opened)
            }
        };
        match opened {
            Ok(checkpoint) => {
                if skipped > 0 {
                    store::warn_resuming(&name);
                }
                return Ok(checkpoint);
            }
            Err(e) if e.is_read_failure() => return Err(e),
            Err(e) => store::warn_skipping(&name, &e),
        }
        skipped += 1;
    }
    Err(Error::NoCheckpoint { dir: dir.clone() })
}
