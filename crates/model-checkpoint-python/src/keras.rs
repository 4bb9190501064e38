//! `KerasCheckpoint`: this engine's `ModelCheckpoint`, built from Keras's arguments in the
//! chosen Keras's constructor order (`ModelCheckpoint::from_keras`), and driven by the
//! Python callback's hooks. Keras's decisions, messages, names and files are all the core's;
//! the Python side only converts the logs and the model's variables.
//!
//! Every hook runs with the GIL released: the engine takes it back only to read the model's
//! variables (through [`PyModel`]), so a background save, or a foreground one, leaves other
//! Python threads running.

use std::io::Write;
use std::sync::{Arc, Mutex, Weak};

use model_checkpoint::restore::AnyCheckpoint;
use model_checkpoint::store::Verify;
use model_checkpoint::{
    Callback, Context, Control, Direction, HookResult, KerasArgs, KerasValue, KerasVersion, Logs,
    ModelCheckpoint, Value,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};

use crate::errors::to_py;
use crate::model::PyModel;
use crate::storage::locate;

/// What the callback prints (verbose), kept until Python takes it and writes it to its own
/// `sys.stdout`, as Keras's `print` would.
#[derive(Clone, Default)]
struct Printed(Arc<Mutex<Vec<u8>>>);

impl Write for Printed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// This engine's `ModelCheckpoint` with Keras's arguments; see the module documentation.
#[pyclass(module = "model_checkpoint._native")]
pub(crate) struct KerasCheckpoint {
    /// Behind a lock because Python may share the object between threads; Keras calls
    /// the hooks from one. Shared (weakly) with the peers of a `fit`.
    inner: Arc<Mutex<Inner>>,
    /// The other callbacks of this one's `fit` (see `set_peers`), held weakly: a callback
    /// ends with its Python object, whoever lists it.
    peers: Mutex<Vec<Weak<Mutex<Inner>>>>,
    printed: Printed,
}

/// Another of our callbacks in the same `fit`, as the core sees a peer in its
/// `CallbackList`: its state, read when a full checkpoint records every callback's (so
/// that a resume restores each, a best-only callback its best value among them).
struct Peer(Weak<Mutex<Inner>>);

impl Peer {
    fn read<T>(&self, read: impl FnOnce(&ModelCheckpoint) -> Option<T>) -> Option<T> {
        let inner = self.0.upgrade()?;
        let inner = inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        read(&inner.cb)
    }
}

impl Callback for Peer {
    fn state_key(&self) -> Option<String> {
        self.read(ModelCheckpoint::state_key)
    }
    fn state(&self) -> Option<serde_json::Value> {
        self.read(ModelCheckpoint::state)
    }
}

/// The callback and the model it saves.
struct Inner {
    cb: ModelCheckpoint,
    model: Option<PyModel>,
}

/// A loose Python value (Keras's `mode`, `save_freq`) as the core reads it.
fn loose(value: &Bound<'_, PyAny>) -> PyResult<KerasValue> {
    Ok(if value.is_none() {
        KerasValue::None
    } else if value.is_instance_of::<PyBool>() {
        KerasValue::Bool(value.extract()?)
    } else if value.is_instance_of::<PyInt>() {
        match value.extract::<i64>() {
            Ok(n) => KerasValue::Int(n),
            Err(_) => KerasValue::Str(value.str()?.to_string()),
        }
    } else if value.is_instance_of::<PyFloat>() {
        KerasValue::Float(value.extract()?)
    } else if value.is_instance_of::<PyString>() {
        KerasValue::Str(value.extract()?)
    } else {
        // Keras formats anything else with str() in its messages.
        KerasValue::Str(value.str()?.to_string())
    })
}

/// Whether `value` is a numpy bool (`np.True_`, what a comparison of numpy values gives),
/// which formats as a Python bool does. A type that does not say (a `__module__` that is
/// not text) is not one.
fn is_numpy_bool(value: &Bound<'_, PyAny>) -> bool {
    let kind = value.get_type();
    let text =
        |t: PyResult<Bound<'_, PyString>>| t.ok().and_then(|t| t.to_str().ok().map(str::to_owned));
    text(kind.module()).as_deref() == Some("numpy")
        && matches!(text(kind.name()).as_deref(), Some("bool" | "bool_"))
}

/// Keras's logs (numbers, bools, numpy scalars, `None`) as the core's; other values (text,
/// an int past 64 bits) are left out.
fn logs_of(logs: Option<&Bound<'_, PyDict>>) -> PyResult<Option<Logs>> {
    let Some(logs) = logs else {
        return Ok(None);
    };
    let mut out = Logs::new();
    for (key, value) in logs.iter() {
        let key: String = key.str()?.to_string();
        let value = if value.is_none() {
            Value::None
        } else if value.is_instance_of::<PyBool>() {
            // A bool formats as `True` in `{flag}` and as its int under a spec, as in Keras.
            Value::Bool(value.extract()?)
        } else if is_numpy_bool(&value) {
            Value::Bool(value.is_truthy()?)
        } else if value.is_instance_of::<PyInt>() {
            match value.extract::<i64>() {
                Ok(n) => Value::Int(n),
                Err(_) => continue,
            }
        } else {
            // Floats, numpy and JAX scalars: float() as Keras's comparisons see them.
            match value
                .call_method0("__float__")
                .and_then(|f| f.extract::<f64>())
            {
                Ok(x) => Value::Float(x),
                // Not a number (no `__float__`, or one that fails): left out. What is not an
                // error of the value (KeyboardInterrupt, SystemExit) goes on.
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyException>(value.py()) => continue,
                Err(e) => return Err(e),
            }
        };
        out.insert(key, value);
    }
    Ok(Some(out))
}

/// What a hook returns when Keras's `stop_training` is asked for (a signal's name otherwise).
const STOP_TRAINING: &str = "stop_training";

impl KerasCheckpoint {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `hook` on the callback with the model (or none yet) and the global step, the
    /// GIL released (the lock is taken without the GIL too: a thread reading `best` meanwhile
    /// waits for the hook, never the other way round); raises again what a Python callable
    /// raised during it.
    fn run(
        &self,
        py: Python<'_>,
        step: Option<u64>,
        hook: impl FnOnce(&mut ModelCheckpoint, &mut Context<'_>) -> HookResult + Send,
    ) -> PyResult<Option<&'static str>> {
        let (result, raised) = py.detach(|| {
            let peers: Vec<Box<dyn Callback>> = self
                .peers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|peer| Box::new(Peer(peer.clone())) as Box<dyn Callback>)
                .collect();
            let mut inner = self.inner();
            let Inner { cb, model } = &mut *inner;
            let mut ctx = match model {
                Some(model) => Context::new(&*model),
                None => Context::without_model(),
            }
            .with_peers(&peers);
            if let Some(step) = step {
                ctx = ctx.with_global_step(step);
            }
            // A stop the hook asks for: a signal's, once its checkpoint is durable (the
            // Python layer ends `fit` as the signal would); Keras's `stop_training`.
            let result = hook(cb, &mut ctx).map(|control| match control {
                Control::Continue => None,
                Control::StopTraining => Some(STOP_TRAINING),
                Control::Interrupt => Some(cb.interrupted().unwrap_or("SIGTERM")),
            });
            (result, model.as_ref().and_then(PyModel::take_failure))
        });
        if let Some(raised) = raised {
            return Err(raised);
        }
        result.map_err(to_py)
    }

    /// `read` of the callback, the lock taken with the GIL released.
    fn read<T: Send>(&self, py: Python<'_>, read: impl FnOnce(&mut Inner) -> T + Send) -> T {
        py.detach(|| read(&mut self.inner()))
    }
}

#[pymethods]
impl KerasCheckpoint {
    /// The callback for Keras `keras` (`"2"`: tf.keras 2; `"3"`: Keras 3) with its
    /// constructor's arguments, then this project's extras.
    #[new]
    #[pyo3(signature = (
        filepath, keras, mode, save_freq, monitor="val_loss".to_owned(), verbose=0,
        save_best_only=false, save_weights_only=false, initial_value_threshold=None,
        period=None, options=false, other_keywords=Vec::new(), keep_best=None,
        keep_last=None, save_last=false, background=false, save_on_interrupt=false,
        journal=false, float64_scalars=false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        filepath: String,
        keras: &str,
        mode: &Bound<'_, PyAny>,
        save_freq: &Bound<'_, PyAny>,
        monitor: String,
        verbose: i64,
        save_best_only: bool,
        save_weights_only: bool,
        initial_value_threshold: Option<f64>,
        period: Option<i64>,
        options: bool,
        other_keywords: Vec<String>,
        keep_best: Option<usize>,
        keep_last: Option<usize>,
        save_last: bool,
        background: bool,
        save_on_interrupt: bool,
        journal: bool,
        float64_scalars: bool,
    ) -> PyResult<Self> {
        let mut args = KerasArgs::new(filepath.clone());
        args.keras = match keras {
            "2" => KerasVersion::Tf2,
            "3" => KerasVersion::Keras3,
            other => {
                return Err(PyTypeError::new_err(format!(
                    "keras must be \"2\" or \"3\", not {other:?}"
                )))
            }
        };
        args.monitor = monitor;
        args.verbose = verbose;
        args.save_best_only = save_best_only;
        args.save_weights_only = save_weights_only;
        // Passed always, so that a `None` the user gave is Keras's `None` (an unknown mode,
        // an unrecognized `save_freq`), not the default.
        args.mode = loose(mode)?;
        args.save_freq = loose(save_freq)?;
        args.initial_value_threshold = initial_value_threshold.map(Value::Float);
        args.period = period;
        args.options = options.then(Default::default);
        args.other_keywords = other_keywords;
        args.float64_scalars = float64_scalars;
        let (storage, _) = locate(&filepath).map_err(to_py)?;
        let printed = Printed::default();
        let mut cb = ModelCheckpoint::from_keras(args)
            .map_err(to_py)?
            .storage(storage)
            .output(printed.clone())
            .save_last(save_last)
            .background(background)
            .save_on_interrupt(save_on_interrupt)
            // The Python layer's handlers deliver the signals (or, for a `fit` outside the
            // main thread, the engine's, through `hold_signals`).
            .signals_from_host(true)
            .journal(journal);
        if let Some(k) = keep_best {
            cb = cb.keep_best(k);
        }
        if let Some(n) = keep_last {
            cb = cb.keep_last(n);
        }
        Ok(KerasCheckpoint {
            inner: Arc::new(Mutex::new(Inner { cb, model: None })),
            peers: Mutex::new(Vec::new()),
            printed,
        })
    }

    /// The model, through its three callables (see `PyModel`).
    fn set_model(
        &self,
        py: Python<'_>,
        weights: Py<PyAny>,
        optimizer: Py<PyAny>,
        assign: Py<PyAny>,
    ) {
        let model = PyModel {
            weights,
            optimizer,
            assign,
            failure: Mutex::new(None),
        };
        self.read(py, |inner| inner.model = Some(model));
    }

    /// The other callbacks of this one's `fit` (itself left out), whose states this one's
    /// full checkpoints record beside its own, as the core's `CallbackList` has each of
    /// its callbacks do; the Python layer sets them as a `fit` begins and ends.
    fn set_peers(&self, py: Python<'_>, peers: Vec<PyRef<'_, KerasCheckpoint>>) {
        let peers: Vec<Weak<Mutex<Inner>>> = peers
            .iter()
            .filter(|peer| !Arc::ptr_eq(&peer.inner, &self.inner))
            .map(|peer| Arc::downgrade(&peer.inner))
            .collect();
        py.detach(|| {
            *self
                .peers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = peers;
        });
    }

    /// A compiled metric whose direction Keras 3 knows (`_direction == "up"`: maximised),
    /// for `mode="auto"`; `best` is kept.
    fn compiled_metric(&self, py: Python<'_>, name: String, up: bool) {
        let direction = if up {
            Direction::Maximize
        } else {
            Direction::Minimize
        };
        self.read(py, |inner| inner.cb.learn_compiled_metric(name, direction));
    }

    /// Whether the batch hooks matter (a `save_freq` in batches, a trigger by steps).
    fn needs_batch_hooks(&self, py: Python<'_>) -> bool {
        self.read(py, |inner| inner.cb.needs_batch_hooks())
    }

    #[pyo3(signature = (logs=None, step=None))]
    fn on_train_begin(
        &self,
        py: Python<'_>,
        logs: Option<&Bound<'_, PyDict>>,
        step: Option<u64>,
    ) -> PyResult<Option<&'static str>> {
        let logs = logs_of(logs)?.unwrap_or_default();
        self.run(py, step, |cb, ctx| cb.on_train_begin(&logs, ctx))
    }

    #[pyo3(signature = (epoch, logs=None, step=None))]
    fn on_epoch_begin(
        &self,
        py: Python<'_>,
        epoch: usize,
        logs: Option<&Bound<'_, PyDict>>,
        step: Option<u64>,
    ) -> PyResult<Option<&'static str>> {
        let logs = logs_of(logs)?.unwrap_or_default();
        self.run(py, step, |cb, ctx| cb.on_epoch_begin(epoch, &logs, ctx))
    }

    #[pyo3(signature = (batch, logs=None, step=None))]
    fn on_train_batch_end(
        &self,
        py: Python<'_>,
        batch: usize,
        logs: Option<&Bound<'_, PyDict>>,
        step: Option<u64>,
    ) -> PyResult<Option<&'static str>> {
        match logs_of(logs)? {
            Some(logs) => self.run(py, step, |cb, ctx| cb.on_train_batch_end(batch, &logs, ctx)),
            None => self.run(py, step, |cb, ctx| {
                cb.on_train_batch_end_without_logs(batch, ctx)
            }),
        }
    }

    #[pyo3(signature = (epoch, logs=None, step=None))]
    fn on_epoch_end(
        &self,
        py: Python<'_>,
        epoch: usize,
        logs: Option<&Bound<'_, PyDict>>,
        step: Option<u64>,
    ) -> PyResult<Option<&'static str>> {
        match logs_of(logs)? {
            Some(logs) => self.run(py, step, |cb, ctx| cb.on_epoch_end(epoch, &logs, ctx)),
            None => self.run(py, step, |cb, ctx| cb.on_epoch_end_without_logs(epoch, ctx)),
        }
    }

    /// Saves on the signal a peer of the same `fit` saved on first (see
    /// `ModelCheckpoint::on_signal`): after `batch`, or at the epoch's end (`None`).
    #[pyo3(signature = (batch=None, logs=None, step=None))]
    fn on_signal(
        &self,
        py: Python<'_>,
        batch: Option<usize>,
        logs: Option<&Bound<'_, PyDict>>,
        step: Option<u64>,
    ) -> PyResult<Option<&'static str>> {
        let logs = logs_of(logs)?.unwrap_or_default();
        self.run(py, step, |cb, ctx| cb.on_signal(batch, &logs, ctx))
    }

    #[pyo3(signature = (logs=None, step=None))]
    fn on_train_end(
        &self,
        py: Python<'_>,
        logs: Option<&Bound<'_, PyDict>>,
        step: Option<u64>,
    ) -> PyResult<Option<&'static str>> {
        let logs = logs_of(logs)?.unwrap_or_default();
        self.run(py, step, |cb, ctx| cb.on_train_end(&logs, ctx))
    }

    /// Waits for background saves; raises what failed.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.read(py, |inner| inner.cb.flush()).map_err(to_py)
    }

    /// Ends a `fit` that Keras ended without `on_train_end` (see `ModelCheckpoint::close`).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.read(py, |inner| inner.cb.close()).map_err(to_py)
    }

    /// What was printed since the last call.
    fn take_printed(&self) -> String {
        let bytes = std::mem::take(
            &mut *self
                .printed
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Restores the model, the optimizer and this callback's state from the full checkpoint
    /// at `path` (every tensor verified); returns the file's `(epoch, global_step)` (the
    /// epoch 1-based: `fit(initial_epoch=epoch)` continues after it).
    fn restore(&self, py: Python<'_>, path: &str) -> PyResult<(Option<u64>, Option<u64>)> {
        let (storage, name) = locate(path).map_err(to_py)?;
        let (restored, raised) = self.read(py, |inner| {
            let Inner { cb, model } = inner;
            let Some(model) = model.as_mut() else {
                return (Err(None), None);
            };
            let restored = AnyCheckpoint::open(&*storage, &name, Verify::Full)
                .and_then(|opened| opened.restore(model, &mut [cb as &mut dyn Callback]));
            (restored.map_err(Some), model.take_failure())
        });
        if let Some(raised) = raised {
            return Err(raised);
        }
        match restored {
            Ok(restored) => Ok((restored.meta.epoch, restored.meta.global_step)),
            Err(Some(e)) => Err(to_py(e)),
            Err(None) => Err(PyTypeError::new_err("set_model first")),
        }
    }

    /// Refuses, as `restore` would, the state the full checkpoint at `path` holds for this
    /// callback, changing nothing: a restore of several callbacks asks each first.
    fn check_restore(&self, py: Python<'_>, path: &str) -> PyResult<()> {
        let (storage, name) = locate(path).map_err(to_py)?;
        self.read(py, |inner| {
            let opened = AnyCheckpoint::open(&*storage, &name, Verify::HeaderOnly)?;
            let Some(document) = opened.head()?.training_state()? else {
                return Ok(());
            };
            model_checkpoint::restore::check_states(&document.callbacks, &[&mut inner.cb])
        })
        .map_err(to_py)
    }

    /// Keras's `best` (`None` before a Keras 3 callback has seen a value).
    #[getter]
    fn best(&self, py: Python<'_>) -> Option<f64> {
        self.read(py, |inner| inner.cb.best().as_f64())
    }

    /// Where the save on the last signal went, once durable.
    #[getter]
    fn interrupt_saved(&self, py: Python<'_>) -> Option<String> {
        self.read(py, |inner| {
            inner.cb.interrupt_saved().map(|n| n.to_string())
        })
    }

    /// The file of the last completed save.
    #[getter]
    fn last_saved(&self, py: Python<'_>) -> Option<String> {
        self.read(py, |inner| inner.cb.last_saved().map(|n| n.to_string()))
    }

    /// The newest full checkpoint of this callback's run that verifies.
    fn latest(&self, py: Python<'_>) -> PyResult<String> {
        self.read(py, |inner| inner.cb.latest())
            .map(|n| n.to_string())
            .map_err(to_py)
    }

    /// [`KerasCheckpoint::latest`], or `None` when there is nothing to resume yet.
    fn latest_resumable(&self, py: Python<'_>) -> PyResult<Option<String>> {
        match self.read(py, |inner| inner.cb.latest()) {
            Ok(found) => Ok(Some(found.to_string())),
            Err(e) if e.is_nothing_to_resume() => Ok(None),
            Err(e) => Err(to_py(e)),
        }
    }
}

/// Restores a Keras model (its variables and its optimizer's, through the same three
/// callables `set_model` takes) from the full checkpoint at `path`, every tensor verified,
/// without any callback; returns the file's `(epoch, global_step)`.
#[pyfunction]
pub(crate) fn restore_model(
    py: Python<'_>,
    path: &str,
    weights: Py<PyAny>,
    optimizer: Py<PyAny>,
    assign: Py<PyAny>,
) -> PyResult<(Option<u64>, Option<u64>)> {
    let (storage, name) = locate(path).map_err(to_py)?;
    let mut model = PyModel {
        weights,
        optimizer,
        assign,
        failure: Mutex::new(None),
    };
    let restored = py.detach(|| {
        AnyCheckpoint::open(&*storage, &name, Verify::Full)?.restore(&mut model, &mut [])
    });
    if let Some(raised) = model.take_failure() {
        return Err(raised);
    }
    let restored = restored.map_err(to_py)?;
    Ok((restored.meta.epoch, restored.meta.global_step))
}

/// Holds SIGINT and SIGTERM with the engine's handlers, for a `fit` outside the main
/// thread, where Python cannot set handlers (until `release_signals`).
#[pyfunction]
pub(crate) fn hold_signals() -> PyResult<()> {
    model_checkpoint::hold_signals().map_err(to_py)
}

/// Ends a `hold_signals`.
#[pyfunction]
pub(crate) fn release_signals() {
    model_checkpoint::release_signals();
}

/// Forgets the signals asked for and not acted on, returning the first (`"SIGINT"`,
/// `"SIGTERM"`) if any.
#[pyfunction]
pub(crate) fn take_interrupt_request() -> Option<&'static str> {
    model_checkpoint::take_interrupt_request()
}

/// What the signal `name` (`"SIGINT"` or `"SIGTERM"`) asks of a callback with
/// `save_on_interrupt`, from the Python handler the callback sets while `fit` runs (Python's
/// own would raise `KeyboardInterrupt` before the next hook could save).
#[pyfunction]
pub(crate) fn request_interrupt(name: &str) -> PyResult<()> {
    match name {
        "SIGTERM" => model_checkpoint::request_interrupt(true),
        "SIGINT" => model_checkpoint::request_interrupt(false),
        other => {
            return Err(PyTypeError::new_err(format!(
                "a signal is \"SIGINT\" or \"SIGTERM\", not {other:?}"
            )))
        }
    }
    Ok(())
}
