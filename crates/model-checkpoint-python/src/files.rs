//! Plain tensors in, plain tensors out: `save_file`, `load_file`, `verify`, `latest`, `ls`.
//! The GIL is released while bytes move (the write, its sync, the reads and their
//! checksums), so other Python threads run meanwhile.

use std::collections::BTreeMap;

use model_checkpoint::restore::{self, AnyCheckpoint};
use model_checkpoint::store::{self, Kind, SaveOptions, Verify};
use model_checkpoint::{NamedTensor, TensorData as _};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict};

use crate::errors::{bad_argument, file_error, to_py};
use crate::storage::locate;
use crate::tensors::{name_of, Borrowed, Incoming};

/// Writes `tensors` to `path` (a local path or an `s3://` URL) as one safetensors file:
/// atomically (nothing appears at `path` before the file is whole), durably (synced, with
/// its folder) and with a CRC-32 per tensor; `metadata` joins the file's `__metadata__`.
/// Returns the file's size in bytes.
#[pyfunction]
#[pyo3(signature = (tensors, path, metadata=None))]
pub(crate) fn save_file(
    py: Python<'_>,
    tensors: Vec<Incoming<'_>>,
    path: &str,
    metadata: Option<BTreeMap<String, String>>,
) -> PyResult<u64> {
    let (storage, name) = locate(path).map_err(to_py)?;
    let mut checked = Vec::with_capacity(tensors.len());
    for (tensor, dtype, shape, data) in &tensors {
        checked.push((
            tensor.clone(),
            Borrowed::new(tensor, dtype, shape.clone(), data.as_bytes())?,
        ));
    }
    let info = metadata.unwrap_or_default();
    if let Some(key) = info
        .keys()
        .find(|k| store::RESERVED_KEYS.contains(&k.as_str()))
    {
        return Err(bad_argument(format!(
            "metadata key {key:?} is reserved: the format writes {}",
            store::RESERVED_KEYS.join(", ")
        )));
    }
    py.detach(move || {
        let named: Vec<NamedTensor<'_>> = checked
            .into_iter()
            .map(|(tensor, data)| NamedTensor::new(tensor, data))
            .collect();
        store::save_to(
            &*storage,
            &name,
            Kind::Weights,
            &named,
            &info,
            &SaveOptions::default(),
        )
    })
    .map(|report| report.bytes)
    .map_err(file_error)
}

/// A tensor as it goes back to Python.
type Outgoing = (String, &'static str, Vec<usize>, Py<PyByteArray>);

/// Reads every tensor of the safetensors file at `path` (each checked against its CRC-32
/// as it is read) and its metadata. With `verify`, a file without this format's checksums
/// (one another tool wrote) is refused; without, it is read as it is.
#[pyfunction]
#[pyo3(signature = (path, verify=true))]
pub(crate) fn load_file(
    py: Python<'_>,
    path: &str,
    verify: bool,
) -> PyResult<(Vec<Outgoing>, BTreeMap<String, String>)> {
    let (storage, name) = locate(path).map_err(to_py)?;
    let (read, info) = py
        .detach(|| {
            let file = match AnyCheckpoint::open(&*storage, &name, Verify::HeaderOnly)? {
                // A deduplicated (or sharded) checkpoint, every tensor read whole through
                // its blobs (or pieces), each checked as it is read.
                AnyCheckpoint::Folder(checkpoint) => {
                    let mut read = Vec::new();
                    for tensor in checkpoint.tensors().keys() {
                        let t = checkpoint.read(tensor)?;
                        let (dtype, shape) = (t.dtype(), t.shape().to_vec());
                        read.push((tensor.clone(), dtype, shape, t.into_data()));
                    }
                    return Ok((read, checkpoint.index().model_checkpoint.metadata.clone()));
                }
                AnyCheckpoint::File(file) => file,
            };
            if verify && !file.has_checksums() {
                return Err(model_checkpoint::Error::Corrupt {
                    path: name.clone(),
                    reason: "it has no checksums (not written by model_checkpoint): pass verify=False to read it unchecked".to_owned(),
                });
            }
            let mut read = Vec::new();
            for t in file.tensors() {
                read.push((t.name.to_owned(), t.dtype, t.shape.to_vec(), file.read(t.name)?));
            }
            Ok((read, file.info().clone()))
        })
        .map_err(file_error)?;
    let mut out = Vec::with_capacity(read.len());
    for (tensor, dtype, shape, bytes) in read {
        out.push((
            tensor,
            name_of(dtype)?,
            shape,
            PyByteArray::new(py, &bytes).unbind(),
        ));
    }
    Ok((out, info))
}

/// The `__metadata__` of the checkpoint at `path` (a file's header, a folder's index), its
/// header checked (the tensors are not read).
#[pyfunction]
pub(crate) fn load_metadata(py: Python<'_>, path: &str) -> PyResult<BTreeMap<String, String>> {
    let (storage, name) = locate(path).map_err(to_py)?;
    py.detach(|| {
        AnyCheckpoint::open(&*storage, &name, Verify::HeaderOnly).map(|c| c.metadata().clone())
    })
    .map_err(file_error)
}

/// Checks the file at `path` completely (the header, then every tensor against its
/// checksum); raises `CheckpointError` naming what is wrong.
#[pyfunction]
pub(crate) fn verify(py: Python<'_>, path: &str) -> PyResult<()> {
    let (storage, name) = locate(path).map_err(to_py)?;
    py.detach(|| {
        // A folder is checked whole as it opens; a file also for having checksums at all.
        let AnyCheckpoint::File(file) = AnyCheckpoint::open(&*storage, &name, Verify::Full)? else {
            return Ok(());
        };
        if file.has_checksums() {
            Ok(())
        } else {
            Err(model_checkpoint::Error::Corrupt {
                path: name.clone(),
                reason: "it has no checksums: not written by model_checkpoint".to_owned(),
            })
        }
    })
    .map_err(file_error)
}

/// The newest full checkpoint in the folder `directory` that verifies, a file or a
/// deduplicated or sharded checkpoint's folder (by the epoch and step each records, never
/// by modification time; damaged ones are skipped, with a warning), or `None` when there is none (no folder yet, or nothing in it verifies): a job
/// resumes if it can and starts afresh otherwise.
#[pyfunction]
pub(crate) fn latest(py: Python<'_>, directory: &str) -> PyResult<Option<String>> {
    let (storage, name) = locate(directory).map_err(to_py)?;
    match py.detach(|| restore::latest_resumable(&*storage, &name)) {
        Ok(found) => Ok(Some(found.name().to_string())),
        Err(e) if e.is_nothing_to_resume() => Ok(None),
        Err(e) => Err(to_py(e)),
    }
}

/// The checkpoints in the folder `directory`, in training order: one dict per file with
/// `path`, `bytes`, `kind` (`"weights"`, `"full"`, or `None` when its header does not
/// read), `epoch`, `global_step`, `run_id` and `error`.
#[pyfunction]
pub(crate) fn ls<'py>(py: Python<'py>, directory: &str) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let (storage, name) = locate(directory).map_err(to_py)?;
    // Files, and the folder checkpoints (deduplicated, sharded) in it, each one row, in
    // training order, as `ckpt ls` lists them.
    let listed = py
        .detach(|| {
            let mut listed = store::list_in(&*storage, &name, 0)?;
            listed.extend(model_checkpoint::sharded::list_folders(
                &*storage, &name, 0,
            )?);
            store::sort_by_position(&mut listed);
            Ok::<_, model_checkpoint::Error>(listed)
        })
        .map_err(to_py)?;
    let mut rows = Vec::with_capacity(listed.len());
    for entry in listed {
        let row = PyDict::new(py);
        row.set_item("path", entry.path.as_str())?;
        row.set_item("bytes", entry.size)?;
        match &entry.header {
            Ok(header) => {
                row.set_item("kind", header.kind.to_string())?;
                row.set_item("epoch", header.meta.epoch)?;
                row.set_item("global_step", header.meta.global_step)?;
                row.set_item("run_id", header.meta.run_id.clone())?;
                row.set_item("error", py.None())?;
            }
            Err(e) => {
                row.set_item("kind", py.None())?;
                row.set_item("epoch", py.None())?;
                row.set_item("global_step", py.None())?;
                row.set_item("run_id", py.None())?;
                row.set_item("error", e.to_string())?;
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Whether `path` names a save on a signal (`interrupted.safetensors`, or
/// `interrupted-RUNID.safetensors`).
#[pyfunction]
pub(crate) fn is_interrupt_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    store::is_interrupt_name(name)
}
