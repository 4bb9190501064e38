//! Keras's arguments as Python passes them, for `ModelCheckpoint::from_keras`: loose values for `mode`
//! and `save_freq`, with Keras's warnings and errors, for configs and ports of Python code.

use std::collections::BTreeMap;
use std::fmt;

use super::KerasVersion;
use crate::policy::Direction;
use crate::store::SaveOptions;
use crate::template::float_repr;
use crate::Value;

/// A loosely typed argument, as a Python caller (or a JSON config) may pass it.
#[derive(Clone, Debug, PartialEq)]
pub enum KerasValue {
    /// A `str`.
    Str(String),
    /// An `int`.
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `bool` (which Python counts as an int).
    Bool(bool),
    /// `None`.
    None,
}

/// Python's `str()` of the value, as Keras's messages show it.
impl fmt::Display for KerasValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KerasValue::Str(s) => f.write_str(s),
            KerasValue::Int(i) => write!(f, "{i}"),
            KerasValue::Float(x) => f.write_str(&float_repr(*x)),
            KerasValue::Bool(true) => f.write_str("True"),
            KerasValue::Bool(false) => f.write_str("False"),
            KerasValue::None => f.write_str("None"),
        }
    }
}

impl From<&str> for KerasValue {
    fn from(s: &str) -> Self {
        KerasValue::Str(s.to_owned())
    }
}

impl From<i64> for KerasValue {
    fn from(v: i64) -> Self {
        KerasValue::Int(v)
    }
}

/// The arguments of Keras's `ModelCheckpoint(...)`, with Keras's defaults.
///
/// ```
/// use model_checkpoint::{KerasArgs, KerasValue, ModelCheckpoint};
///
/// let mut args = KerasArgs::new("best.safetensors");
/// args.monitor = "val_accuracy".into();
/// args.mode = KerasValue::from("MAX"); // unknown: Keras warns and uses "auto"
/// args.save_freq = KerasValue::from(100);
/// let checkpoint = ModelCheckpoint::from_keras(args)?;
/// assert_eq!(checkpoint.best().as_f64(), Some(f64::NEG_INFINITY));
///
/// let mut bad = KerasArgs::new("w.safetensors");
/// bad.save_freq = KerasValue::from("3");
/// let err = ModelCheckpoint::from_keras(bad).unwrap_err();
/// assert_eq!(err.to_string(), r#"Unrecognized save_freq: 3. Expected save_freq are "epoch" or integer"#);
/// # Ok::<(), model_checkpoint::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct KerasArgs {
    /// `filepath`.
    pub filepath: String,
    /// `monitor`, default `"val_loss"`.
    pub monitor: String,
    /// `verbose`, default 0.
    pub verbose: i64,
    /// `save_best_only`, default false.
    pub save_best_only: bool,
    /// `save_weights_only`, default false.
    pub save_weights_only: bool,
    /// `mode`, default `"auto"`; any other value warns and becomes `"auto"`.
    pub mode: KerasValue,
    /// `save_freq`, default `"epoch"`; `"epoch"`, an int or a bool, else an error.
    pub save_freq: KerasValue,
    /// `options`, default none.
    pub options: Option<SaveOptions>,
    /// `initial_value_threshold`, default none.
    pub initial_value_threshold: Option<Value>,
    /// The deprecated `period` keyword, default absent (1); present, it warns (tf.keras 2)
    /// or is refused (Keras 3).
    pub period: Option<i64>,
    /// Which Keras's constructor and behaviour to follow. Default: tf.keras 2.
    pub keras: KerasVersion,
    /// The names of any other keyword arguments the caller passed (a config's unknown
    /// keys, a port's `load_weights_on_restart`): tf.keras 2 ignores them, Keras 3 refuses
    /// the first with its `TypeError`.
    pub other_keywords: Vec<String>,
    /// The compiled model's metrics whose direction is known (Keras 3 metrics'
    /// `_direction`: `"up"` maximises, anything else minimises), by metric name, as a
    /// binding or a trainer reads them from the model. Keras 3's `mode="auto"` uses them;
    /// tf.keras 2 ignores them. See [`crate::ModelCheckpoint::compiled_metric`].
    pub compiled_metrics: BTreeMap<String, Direction>,
    /// Keras 3: the backend gives a Python float as a float64 tensor (see
    /// [`crate::ModelCheckpoint::float64_scalars`]). Default false.
    pub float64_scalars: bool,
}

impl KerasArgs {
    /// Keras's defaults for `filepath`.
    pub fn new(filepath: impl Into<String>) -> Self {
        KerasArgs {
            filepath: filepath.into(),
            monitor: "val_loss".to_owned(),
            verbose: 0,
            save_best_only: false,
            save_weights_only: false,
            mode: KerasValue::from("auto"),
            save_freq: KerasValue::from("epoch"),
            options: None,
            initial_value_threshold: None,
            period: None,
            keras: KerasVersion::Tf2,
            other_keywords: Vec::new(),
            compiled_metrics: BTreeMap::new(),
            float64_scalars: false,
        }
    }
}
