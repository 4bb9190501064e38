//! A checkpoint written again as one plain file, in any storage: what `ckpt export` does.
//! With [`Export::Weights`], a weights-only file from a full one, so that a user who only
//! wants the model (to publish it, to load it in Python) need not filter the
//! `__training__/` tensors and the training state out by hand.
//!
//! Tensors are streamed from the source file to the new one, each checked against its
//! checksum on the way, so memory holds one read buffer, not the checkpoint.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;

use super::gate::{self, KEY_EXPORTED_FROM};
use super::layout::{Kind, RESERVED_KEYS, TRAINING_PREFIX};
use super::meta::KEY_TRAINING_STATE;
use super::read::{CheckpointFile, TensorRef};
use super::storage::Storage;
use super::write::{save_to, SaveOptions, SaveReport};
use super::Name;
use crate::model::{Dtype, NamedTensor, TensorData};
use crate::Error;

/// What [`export`] keeps of the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Export {
    /// The model's weights: every tensor outside `__training__/`, and the metadata less
    /// the training state. The file is a weights-only checkpoint.
    Weights,
    /// Everything: a full checkpoint stays one that resumes training.
    Everything,
}

/// What [`export`] wrote.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Exported {
    /// The committed file.
    pub report: SaveReport,
    /// The tensors written.
    pub written: usize,
    /// The training tensors left out (optimizer state, `__training__/`).
    pub left_out: usize,
}

/// Writes `name` in `storage` as a checkpoint holding what `keep` says of `from`, byte for
/// byte, with `from`'s metadata (less the training state for [`Export::Weights`]) plus
/// [`KEY_EXPORTED_FROM`]. The new file is committed atomically and durably like any save,
/// and has its own checksums. An existing file at `name` is replaced only if an earlier
/// export or consolidation wrote it; anything else there is refused.
///
/// ```
/// use model_checkpoint::store::{self, CheckpointFile, Export, Kind, LocalFolder, Name, Verify};
/// use model_checkpoint::{HostTensor, NamedTensor};
/// # let dir = tempfile::tempdir()?;
/// let full = dir.path().join("full.safetensors");
/// let tensors = [
///     NamedTensor::new("dense/kernel", HostTensor::from_f32(vec![2], &[1.0, 2.0])),
///     NamedTensor::new("__training__/optimizer/m", HostTensor::from_f32(vec![2], &[0.0, 0.5])),
/// ];
/// store::save(&full, Kind::Full, &tensors, &Default::default(), &Default::default())?;
///
/// let source = CheckpointFile::open(&full, Verify::Full)?;
/// let out = dir.path().join("weights.safetensors");
/// let exported = store::export(&source, &LocalFolder::default(), &Name::from(out.as_path()), Export::Weights)?;
/// assert_eq!((exported.written, exported.left_out), (1, 1));
/// assert_eq!(CheckpointFile::open(&out, Verify::Full)?.kind(), Kind::Weights);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::Corrupt`] when a source tensor does not match its checksum, [`Error::NotOurs`]
/// (from the deletion gate) for a file at `name` that no export wrote, and the storage's
/// errors.
pub fn export(
    from: &CheckpointFile,
    storage: &dyn Storage,
    name: &Name,
    keep: Export,
) -> Result<Exported, Error> {
    let weights_only = keep == Export::Weights;
    gate::check_replace(storage, name, gate::Claim::Derived)?;
    let mut tensors = Vec::new();
    let mut left_out = 0;
    for t in from.tensors() {
        if weights_only && t.name.starts_with(TRAINING_PREFIX) {
            left_out += 1;
            continue;
        }
        tensors.push(NamedTensor::new(t.name, Streamed { from, tensor: t }));
    }
    let info: BTreeMap<String, String> = from
        .info()
        .iter()
        .filter(|(k, _)| !(weights_only && k.as_str() == KEY_TRAINING_STATE))
        .filter(|(k, _)| !RESERVED_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(std::iter::once((
            KEY_EXPORTED_FROM.to_owned(),
            crate::text::hex(&from.header_digest()),
        )))
        .collect();
    let written = tensors.len();
    let kind = if weights_only {
        Kind::Weights
    } else {
        from.kind()
    };
    let report = save_to(
        storage,
        name,
        kind,
        &tensors,
        &info,
        &SaveOptions::default(),
    )
    .map_err(|e| match e {
        // A source tensor that failed its checksum surfaces as the writer's I/O error.
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidData => {
            Error::corrupt(from.path(), source.to_string())
        }
        e => e,
    })?;
    Ok(Exported {
        report,
        written,
        left_out,
    })
}

/// A tensor of the source file, read only when the writer asks for its bytes.
struct Streamed<'a> {
    from: &'a CheckpointFile,
    tensor: TensorRef<'a>,
}

impl TensorData for Streamed<'_> {
    fn dtype(&self) -> Dtype {
        self.tensor.dtype
    }
    fn shape(&self) -> Cow<'_, [usize]> {
        Cow::Borrowed(self.tensor.shape)
    }
    fn byte_len(&self) -> usize {
        self.tensor.len
    }
    fn write_to(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        let mut reader = self
            .from
            .reader(self.tensor.name)
            .ok_or_else(|| std::io::Error::other("the tensor left the file"))?;
        let mut buffer = vec![0u8; (1 << 20).min(self.tensor.len.max(1))];
        loop {
            // The reader checks the checksum when the last byte is read.
            let n = reader.read(&mut buffer)?;
            if n == 0 {
                return Ok(());
            }
            sink(&buffer[..n])?;
        }
    }
}
