//! A Keras model as the core's `Checkpointable`, reached back through three Python
//! callables the callback gives: the model's variables, the optimizer's, and an assignment
//! of tensors read from a checkpoint. The engine calls them with the GIL released, so each
//! call takes the GIL for as long as it talks to Python.
//!
//! An exception raised by one of them is kept (the engine sees an error naming it) and
//! raised again, unchanged, once the hook returns to Python.

use std::sync::Mutex;

use model_checkpoint::store::{Name, TrainingDocument, OPTIMIZER_TENSORS};
use model_checkpoint::{
    Checkpointable, Error, HostTensor, NamedTensor, TensorSource, TrainingState,
};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyList};

use crate::tensors::{dtype_of, name_of, Incoming};

/// The model of a Keras `fit`, as the Python callback describes it.
pub(crate) struct PyModel {
    /// `() -> [(name, dtype, shape, bytes)]`: the model's variables.
    pub weights: Py<PyAny>,
    /// `() -> [(name, dtype, shape, bytes)]`: the optimizer's variables (full checkpoints).
    pub optimizer: Py<PyAny>,
    /// `(which, [(name, dtype, shape, bytearray)]) -> None`, `which` being `"weights"` or
    /// `"optimizer"`: assigns what a checkpoint holds, refusing what does not fit.
    pub assign: Py<PyAny>,
    /// The exception one of them raised, until the hook raises it again.
    pub failure: Mutex<Option<PyErr>>,
}

impl PyModel {
    /// Keeps `e` for the hook to raise, and tells the engine that `action` failed.
    fn failed(&self, action: &'static str, e: PyErr) -> Error {
        let text = e.to_string();
        *self
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
        Error::Io {
            action,
            path: Name::from("the Keras model"),
            source: std::io::Error::other(text),
        }
    }

    /// The exception a callable raised during the last hook, if any.
    pub(crate) fn take_failure(&self) -> Option<PyErr> {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// The tensors `source` returns, copied into the engine's memory (so that Python may
    /// change its arrays as soon as the call returns, even while a background save runs).
    fn fetch(
        &self,
        source: &Py<PyAny>,
        action: &'static str,
    ) -> Result<Vec<(String, HostTensor)>, Error> {
        Python::attach(|py| {
            let list: Vec<Incoming<'_>> = source.bind(py).call0()?.extract()?;
            list.into_iter()
                .map(|(name, dtype, shape, data)| {
                    let dtype = dtype_of(&dtype)?;
                    HostTensor::new(dtype, shape, data.as_bytes().to_vec())
                        .map(|t| (name, t))
                        .map_err(crate::errors::to_py)
                })
                .collect::<PyResult<Vec<_>>>()
        })
        .map_err(|e| self.failed(action, e))
    }

    /// Reads every tensor `source` lists whose name starts with `prefix` (without it) and
    /// hands them to the Python assignment as `which`.
    fn give_back(
        &self,
        source: &dyn TensorSource,
        prefix: &str,
        which: &'static str,
    ) -> Result<(), Error> {
        let mut read = Vec::new();
        for info in source.tensors() {
            let Some(name) = info.name.strip_prefix(prefix) else {
                continue;
            };
            let bytes = source.read(&info.name, info.dtype, &info.shape)?;
            read.push((name.to_owned(), info.dtype, info.shape, bytes));
        }
        let assigned: PyResult<()> = Python::attach(|py| {
            let items = PyList::empty(py);
            for (name, dtype, shape, bytes) in &read {
                items.append((
                    name.as_str(),
                    name_of(*dtype)?,
                    shape.clone(),
                    PyByteArray::new(py, bytes),
                ))?;
            }
            self.assign.call1(py, (which, items))?;
            Ok(())
        });
        assigned.map_err(|e| self.failed("assign the checkpoint's tensors to", e))
    }
}

impl Checkpointable for PyModel {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        Ok(self
            .fetch(&self.weights, "take the variables of")?
            .into_iter()
            .map(|(name, t)| NamedTensor::new(name, t))
            .collect())
    }

    fn training_state(&self) -> Result<TrainingState<'_>, Error> {
        let tensors = self.fetch(&self.optimizer, "take the optimizer variables of")?;
        Ok(TrainingState {
            tensors: tensors
                .into_iter()
                .map(|(name, t)| NamedTensor::new(format!("{OPTIMIZER_TENSORS}{name}"), t))
                .collect(),
            document: TrainingDocument::default(),
        })
    }

    fn restore_weights(&mut self, stored: &dyn TensorSource) -> Result<(), Error> {
        self.give_back(stored, "", "weights")
    }

    fn restore_training_state(
        &mut self,
        tensors: &dyn TensorSource,
        _document: &TrainingDocument,
    ) -> Result<(), Error> {
        self.give_back(tensors, OPTIMIZER_TENSORS, "optimizer")
    }
}
