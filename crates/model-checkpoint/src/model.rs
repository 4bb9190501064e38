//! The seam to tensor frameworks: what a model hands over to be saved.
//!
//! A framework plugs in by implementing [`Checkpointable`] (named tensors out) and
//! [`TensorData`] for its tensor type (bytes out, in pieces, straight from its buffers). The
//! store never learns which framework it serves.

use std::borrow::Cow;
use std::io;

pub use safetensors::Dtype;

use crate::Error;

/// One tensor's bytes, as the framework holds them.
///
/// Bytes are little-endian, row-major (C order), `shape.iter().product() * dtype size` long.
/// [`TensorData::write_to`] may hand them over in several pieces, so that a framework can
/// stream from its own buffers without a copy.
pub trait TensorData {
    /// The element type.
    fn dtype(&self) -> Dtype;
    /// The shape.
    fn shape(&self) -> Cow<'_, [usize]>;
    /// Calls `sink` with the tensor's bytes, in order, in one or more pieces.
    ///
    /// # Errors
    ///
    /// Whatever `sink` returns, or the framework's failure to read its buffer.
    fn write_to(&self, sink: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>;

    /// The number of bytes [`TensorData::write_to`] hands over.
    fn byte_len(&self) -> usize {
        byte_len(self.dtype(), &self.shape())
    }

    /// A handle to the same data that another thread may read, without copying, if the
    /// framework allows it (candle tensors are reference-counted). A background save then
    /// copies on the writer thread while training goes on; the training loop must call
    /// [`crate::SnapshotFence::wait`] before it changes the tensor. Used only where the
    /// loop puts its fence in the [`crate::Context`] (`Context::with_fence`, as `fit`
    /// does), and not for a model that offers [`Checkpointable::frozen`], whose copy is
    /// used instead. The handle comes back from the writer and is dropped on the training
    /// thread at the first hook after the save is written, so it outlives the fence: a
    /// framework must not need to hold a tensor alone to change it in place (candle's
    /// `Var::set` does not). The default is `None`: the copy is made before the hook
    /// returns.
    fn share(&self) -> Option<SharedTensor> {
        None
    }
}

/// Tensor data another thread may read: see [`TensorData::share`].
pub type SharedTensor = std::sync::Arc<dyn TensorData + Send + Sync>;

/// Bytes taken by a tensor of `dtype` and `shape` (saturating on absurd shapes).
pub fn byte_len(dtype: Dtype, shape: &[usize]) -> usize {
    let elements = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    elements
        .and_then(|n| n.checked_mul(dtype.bitsize()))
        .map_or(usize::MAX, |bits| bits.div_ceil(8))
}

/// A tensor in host memory: the form of a snapshot, and a simple model's weights.
///
/// ```
/// use model_checkpoint::{Dtype, HostTensor, TensorData};
///
/// let t = HostTensor::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]);
/// assert_eq!(t.dtype(), Dtype::F32);
/// assert_eq!(t.byte_len(), 16);
/// assert_eq!(t.to_f32(), Some(vec![1.0, 2.0, 3.0, 4.0]));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl HostTensor {
    /// A tensor from raw little-endian bytes.
    ///
    /// # Errors
    ///
    /// [`Error::TensorSize`] when `data` does not hold exactly `shape` × `dtype` bytes.
    pub fn new(dtype: Dtype, shape: Vec<usize>, data: Vec<u8>) -> Result<Self, Error> {
        let expected = byte_len(dtype, &shape);
        if data.len() != expected {
            return Err(Error::TensorSize {
                dtype,
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(HostTensor { dtype, shape, data })
    }

    /// An `F32` tensor from values. Panics only if `values` does not fill `shape`, which is a
    /// programming error.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "values must fill the shape"
        );
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        HostTensor {
            dtype: Dtype::F32,
            shape,
            data,
        }
    }

    /// Copies any tensor into host memory (a snapshot).
    ///
    /// # Errors
    ///
    /// The framework's failure to read the tensor.
    pub fn copy_of(tensor: &dyn TensorData) -> io::Result<Self> {
        let mut data = Vec::with_capacity(tensor.byte_len());
        tensor.write_to(&mut |piece| {
            data.extend_from_slice(piece);
            Ok(())
        })?;
        Ok(HostTensor {
            dtype: tensor.dtype(),
            shape: tensor.shape().into_owned(),
            data,
        })
    }

    /// The raw bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Takes the raw bytes.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// Takes the shape and the raw bytes.
    pub(crate) fn into_parts(self) -> (Vec<usize>, Vec<u8>) {
        (self.shape, self.data)
    }

    /// A view of this tensor as [`TensorData`] without copying it.
    pub fn clone_ref(&self) -> HostTensorRef<'_> {
        HostTensorRef(self)
    }

    /// The values, if the tensor is `F32`.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.dtype == Dtype::F32).then(|| {
            self.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }
}

impl TensorData for HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> Cow<'_, [usize]> {
        Cow::Borrowed(&self.shape)
    }
    fn write_to(&self, sink: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        sink(&self.data)
    }
}

/// A borrowed [`HostTensor`], as tensor data.
#[derive(Clone, Copy, Debug)]
pub struct HostTensorRef<'a>(&'a HostTensor);

impl TensorData for HostTensorRef<'_> {
    fn dtype(&self) -> Dtype {
        self.0.dtype
    }
    fn shape(&self) -> Cow<'_, [usize]> {
        Cow::Borrowed(&self.0.shape)
    }
    fn write_to(&self, sink: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        sink(&self.0.data)
    }
}

/// Where a piece of a tensor lies in the global tensor it is a slice of.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Slice {
    /// The whole tensor's shape.
    pub global_shape: Vec<usize>,
    /// Where the piece starts, per dimension.
    pub offsets: Vec<usize>,
}

/// How a tensor of one process relates to the model spread over all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The same on every process: saved once, by the rank `sharded::owners` picks.
    Replicated,
    /// This process's slice of a larger tensor.
    Sliced(Slice),
    /// This process's own (a generator, a data cursor): saved by every rank in its shard,
    /// under a name it shares with the other ranks.
    PerRank,
}

/// What a tensor is, without its bytes: its name, element type and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The name.
    pub name: String,
    /// The element type.
    pub dtype: Dtype,
    /// The shape.
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// A tensor's name, dtype and shape.
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: &[usize]) -> Self {
        TensorInfo {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }
}

/// Where restored tensors come from: a checkpoint file, or the pieces of a sharded
/// checkpoint that overlap this process's slices ([`crate::restore::Stored`] implements it;
/// a test may implement it over memory). The tensors-in half of the seam to frameworks, as
/// [`Checkpointable::weights`] is the tensors-out half: what an adapter reads through.
pub trait TensorSource {
    /// The checkpoint the tensors come from (for messages).
    fn path(&self) -> &crate::name::Name;

    /// The tensors here, by name (the training tensors without the format's prefix).
    fn tensors(&self) -> Vec<TensorInfo>;

    /// The bytes of tensor `name`, checked to be of `dtype` and `shape` before they are read
    /// (and against their checksum as they are).
    ///
    /// # Errors
    ///
    /// [`Error::MissingTensor`], [`Error::DtypeMismatch`], [`Error::ShapeMismatch`] naming
    /// the tensor, or the reader's errors.
    fn read(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<Vec<u8>, Error>;

    /// Whether the checkpoint carries this format's checksums (a file of another tool
    /// loads, unverified). Default: yes.
    fn verified(&self) -> bool {
        true
    }
}

/// A tensor and its name in the checkpoint.
pub struct NamedTensor<'a> {
    /// The name, as the model names the variable (`fc1.weight`).
    pub name: String,
    /// The data.
    pub data: Box<dyn TensorData + 'a>,
}

impl<'a> NamedTensor<'a> {
    /// Pairs a name with tensor data.
    pub fn new(name: impl Into<String>, data: impl TensorData + 'a) -> Self {
        NamedTensor {
            name: name.into(),
            data: Box::new(data),
        }
    }
}

/// Everything beyond the weights that a full checkpoint holds: optimizer tensors (moments),
/// and the typed document of plain values (the optimizer's step and hyperparameters, `fit`'s
/// or a hand-written loop's state; the callbacks' states are added by the saving callback).
#[derive(Default)]
pub struct TrainingState<'a> {
    /// Optimizer and other training tensors, by name (an optimizer's under
    /// [`crate::document::OPTIMIZER_TENSORS`]).
    pub tensors: Vec<NamedTensor<'a>>,
    /// The plain values, by section.
    pub document: crate::document::TrainingDocument,
}

impl TrainingState<'_> {
    /// Whether it holds nothing: no tensors and no values (a full checkpoint of it is
    /// refused).
    ///
    /// ```
    /// use model_checkpoint::TrainingState;
    ///
    /// assert!(TrainingState::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.document.is_empty() && self.tensors.is_empty()
    }
}

/// A model that can be checkpointed: it names its tensors and hands them over.
///
/// This is the whole seam between the library and a tensor framework. A weights-only
/// checkpoint needs [`Checkpointable::weights`]; a full checkpoint also takes
/// [`Checkpointable::training_state`].
///
/// ```
/// use model_checkpoint::{Checkpointable, Error, HostTensor, NamedTensor};
///
/// /// A toy model: one vector of weights.
/// struct Toy {
///     w: HostTensor,
/// }
///
/// impl Checkpointable for Toy {
///     fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
///         Ok(vec![NamedTensor::new("w", self.w.clone())])
///     }
/// }
///
/// let toy = Toy { w: HostTensor::from_f32(vec![3], &[1.0, 2.0, 3.0]) };
/// assert_eq!(toy.weights()?.len(), 1);
/// # Ok::<(), Error>(())
/// ```
pub trait Checkpointable {
    /// The weights, by name, in a stable order.
    ///
    /// # Errors
    ///
    /// The framework's failure to expose a tensor.
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error>;

    /// The training state a full checkpoint holds besides the weights. The default is none,
    /// for models trained outside this library's `fit`.
    ///
    /// # Errors
    ///
    /// The framework's failure to expose its state.
    fn training_state(&self) -> Result<TrainingState<'_>, Error> {
        Ok(TrainingState::default())
    }

    /// Whether [`Checkpointable::training_state`] hands over anything: a full checkpoint of
    /// a model without training state is refused before its first save (before its message
    /// is printed). The default builds the state to see; a model that always has one (a
    /// loop that records where it stands) answers without building it, which for some
    /// frameworks means serializing the whole optimizer. An answer must be true exactly
    /// when `training_state` would hand over something (each save checks again, and
    /// refuses an empty state then). Only emptiness is asked here: a failure to build the
    /// state surfaces at the save that builds it (for a background save of a frozen copy,
    /// at the next hook, as a failed write does).
    ///
    /// # Errors
    ///
    /// As [`Checkpointable::training_state`].
    fn has_training_state(&self) -> Result<bool, Error> {
        Ok(!self.training_state()?.is_empty())
    }

    /// Takes the weights back from a checkpoint (see [`crate::restore`]): read each with
    /// [`TensorSource::read`], which checks its dtype and shape (or plan the whole load with
    /// [`crate::load::plan`], which lists every problem at once), and change nothing until
    /// all are read. The default refuses, for models that only save.
    ///
    /// # Errors
    ///
    /// The reader's errors; [`Error::CannotRestore`] by default.
    fn restore_weights(&mut self, stored: &dyn TensorSource) -> Result<(), Error> {
        let _ = stored;
        Err(Error::CannotRestore {
            what: "weights",
            method: "restore_weights",
        })
    }

    /// Takes the training state back: the training tensors (optimizer slots) and the
    /// document [`Checkpointable::training_state`] handed over (the callbacks' states are
    /// restored by [`crate::restore`], not here). The default accepts a state with nothing in
    /// it and refuses any other.
    ///
    /// # Errors
    ///
    /// The reader's errors, a malformed state; [`Error::CannotRestore`] by default.
    fn restore_training_state(
        &mut self,
        tensors: &dyn TensorSource,
        document: &crate::document::TrainingDocument,
    ) -> Result<(), Error> {
        let mut document = document.clone();
        document.callbacks.clear();
        if document.is_empty() && tensors.tensors().is_empty() {
            return Ok(());
        }
        Err(Error::CannotRestore {
            what: "a training state",
            method: "restore_training_state",
        })
    }

    /// Where this process's tensors lie in a model spread over several processes, for
    /// sharded saves ([`crate::ModelCheckpoint::sharded`]): tensor name (training tensors
    /// by their names here, without the checkpoint's prefix) to its [`Placement`]. A tensor
    /// not named is [`Placement::Replicated`]. Default: none, every tensor replicated.
    fn shard_layout(&self) -> std::collections::BTreeMap<String, Placement> {
        std::collections::BTreeMap::new()
    }

    /// A copy of the model as it is now, that the writer thread may read while training
    /// goes on, where the framework can make one for the cost of a few reference counts:
    /// burn's tensors are immutable values (a step that finds one shared writes a new one),
    /// so a clone of the module and its optimizer is such a copy. A background save of one
    /// file then takes [`Checkpointable::weights`] and [`Checkpointable::training_state`]
    /// from the copy on the writer thread, and the training thread pays the clone and the
    /// save's bookkeeping (no copy of tensors, no conversion, no fence; a loop needs no
    /// fence for it). Sharded, deduplicated and on-signal saves still take the tensors in
    /// the hook. Not for frameworks that change tensors in place (candle's `Var`s): they
    /// [`TensorData::share`] behind the fence instead; a model that offers a copy is never
    /// shared. The copy must hand over exactly what the model would: a wrapper that adds
    /// state of its own wraps the inner copy with that state (as `fit`'s view of a step
    /// does), rather than passing the inner copy on. It is also asked for once when
    /// training begins, to learn whether snapshot buffers are needed. What the copy's
    /// methods return as an error, or panic with, is that save's failure, reported at the
    /// next hook as a failed write is. The copy is dropped on the training thread at the
    /// first hook after the save is written (a batch's end, where the loop calls batch
    /// hooks), not on the writer, so that a framework's buffers are freed by the thread
    /// that allocated them (unless the save panicked: then the writer drops it while
    /// unwinding). The default is `None`: the hook takes the tensors.
    ///
    /// ```
    /// use model_checkpoint::{Checkpointable, Error, HostTensor, NamedTensor};
    ///
    /// /// A model whose values are replaced, never changed in place: a clone is a snapshot.
    /// #[derive(Clone)]
    /// struct Values {
    ///     w: std::sync::Arc<HostTensor>,
    /// }
    ///
    /// impl Checkpointable for Values {
    ///     fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
    ///         Ok(vec![NamedTensor::new("w", self.w.clone_ref())])
    ///     }
    ///     fn frozen(&self) -> Option<Box<dyn Checkpointable + Send>> {
    ///         Some(Box::new(self.clone()))
    ///     }
    /// }
    ///
    /// let mut model = Values { w: std::sync::Arc::new(HostTensor::from_f32(vec![1], &[1.0])) };
    /// let frozen = model.frozen().expect("a copy");
    /// model.w = std::sync::Arc::new(HostTensor::from_f32(vec![1], &[2.0]));
    /// let before = HostTensor::copy_of(&*frozen.weights()?[0].data)?;
    /// assert_eq!(before.to_f32(), Some(vec![1.0]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn frozen(&self) -> Option<Box<dyn Checkpointable + Send>> {
        None
    }
}

/// A boxed model is a model (a trainer may hold a step of either framework in a box).
impl<T: Checkpointable + ?Sized> Checkpointable for Box<T> {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        (**self).weights()
    }

    fn training_state(&self) -> Result<TrainingState<'_>, Error> {
        (**self).training_state()
    }

    fn has_training_state(&self) -> Result<bool, Error> {
        (**self).has_training_state()
    }

    fn restore_weights(&mut self, stored: &dyn TensorSource) -> Result<(), Error> {
        (**self).restore_weights(stored)
    }

    fn restore_training_state(
        &mut self,
        tensors: &dyn TensorSource,
        document: &crate::document::TrainingDocument,
    ) -> Result<(), Error> {
        (**self).restore_training_state(tensors, document)
    }

    fn shard_layout(&self) -> std::collections::BTreeMap<String, Placement> {
        (**self).shard_layout()
    }

    fn frozen(&self) -> Option<Box<dyn Checkpointable + Send>> {
        (**self).frozen()
    }
}
