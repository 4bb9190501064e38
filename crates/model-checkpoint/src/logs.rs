//! Metric logs: an ordered map from metric name to a value that keeps Python's int/float
//! distinction.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One logged value, typed as Python would type it.
///
/// Keras keeps ints and floats apart, and so does the filepath template: `{n:d}` works on
/// [`Value::Int`] but fails on [`Value::Float`], and `{x}` renders `3` for the int and `3.0`
/// for the float. Non-finite floats are ordinary values.
///
/// ```
/// use model_checkpoint::Value;
///
/// assert_eq!(Value::from(3).to_string(), "3");
/// assert_eq!(Value::from(3.0).to_string(), "3.0");
/// assert_eq!(Value::from(f64::NAN).to_string(), "nan");
/// assert_eq!(Value::from(1e-7).to_string(), "1e-07");
/// ```
///
/// In JSON (checkpoint metadata, `History`) an int is a number without a fraction, a finite
/// float a number with one, a non-finite float the string `"nan"`, `"inf"` or `"-inf"`, and
/// `None` is `null`; a bool is written as its int (`1`, `0`), and `true` or `false` is read
/// as a bool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A Python `int`.
    Int(i64),
    /// A Python `bool` (a metric a callback logged as one): an int to comparisons and to
    /// numeric format specs (`{flag:.3f}` is `1.000`), `True` or `False` as text.
    Bool(bool),
    /// A Python `float` (an IEEE double). float32 metrics are widened, as Keras widens them.
    Float(f64),
    /// Python's `None`: a metric that is present but has no value. The monitor treats it as
    /// missing.
    None,
}

impl Value {
    /// The value as a double, as numpy compares it; `None` for [`Value::None`].
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Bool(b) => Some(f64::from(u8::from(b))),
            Value::Float(x) => Some(x),
            Value::None => None,
        }
    }

    /// Python's name for the value's type (`int`, `bool`, `float`, `NoneType`), as error
    /// texts use it.
    pub fn python_type(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Bool(_) => "bool",
            Value::Float(_) => "float",
            Value::None => "NoneType",
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            Value::Int(i) => serializer.serialize_i64(i),
            // As its int: readers of the format see numbers only (`true` comes back as 1).
            Value::Bool(b) => serializer.serialize_i64(i64::from(b)),
            Value::Float(x) if x.is_finite() => serializer.serialize_f64(x),
            Value::Float(x) => serializer.serialize_str(&crate::template::float_repr(x)),
            Value::None => serializer.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Bool(bool),
            Int(i64),
            Float(f64),
            Text(String),
            None(()),
        }
        match Repr::deserialize(deserializer)? {
            Repr::Bool(b) => Ok(Value::Bool(b)),
            Repr::Int(i) => Ok(Value::Int(i)),
            Repr::Float(x) => Ok(Value::Float(x)),
            Repr::None(()) => Ok(Value::None),
            Repr::Text(t) => match t.as_str() {
                "nan" => Ok(Value::Float(f64::NAN)),
                "inf" => Ok(Value::Float(f64::INFINITY)),
                "-inf" => Ok(Value::Float(f64::NEG_INFINITY)),
                _ => Err(serde::de::Error::custom(format!(
                    "expected a number, null, \"nan\", \"inf\" or \"-inf\", found {t:?}"
                ))),
            },
        }
    }
}

/// Python's `str()` of the value: `3`, `True`, `3.0`, `1e-07`, `nan`, `None`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Bool(b) => f.write_str(if b { "True" } else { "False" }),
            Value::Float(x) => f.write_str(&crate::template::float_repr(x)),
            Value::None => f.write_str("None"),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

/// A float32 metric is widened to the double Keras would see (`0.1f32` becomes
/// `0.10000000149011612`).
impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(f64::from(v))
    }
}

/// The logs a hook receives: metric names in insertion order, each with a [`Value`].
///
/// Inserting an existing name replaces its value in place, as a Python dict does.
///
/// ```
/// use model_checkpoint::{Logs, Value};
///
/// let mut logs = Logs::new();
/// logs.insert("loss", 0.25);
/// logs.insert("val_accuracy", 0.9);
/// logs.insert("loss", 0.20);
/// assert_eq!(logs.get("loss"), Some(Value::Float(0.20)));
/// assert_eq!(logs.keys().collect::<Vec<_>>(), ["loss", "val_accuracy"]);
/// ```
///
/// In JSON, logs are an object whose keys keep their order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Logs {
    entries: Vec<(String, Value)>,
}

impl Serialize for Logs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.entries.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for Logs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> serde::de::Visitor<'de> for Ordered {
            type Value = Logs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of metric values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Logs, A::Error> {
                // Logs from a file may hold millions of names: a repeated one is found
                // through an index, not by `insert`'s search of every entry.
                let mut logs = Logs::new();
                let mut at: std::collections::HashMap<String, usize> =
                    std::collections::HashMap::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    match at.get(&k) {
                        Some(&i) => logs.entries[i].1 = v,
                        None => {
                            at.insert(k.clone(), logs.entries.len());
                            logs.entries.push((k, v));
                        }
                    }
                }
                Ok(logs)
            }
        }
        deserializer.deserialize_map(Ordered)
    }
}

impl Logs {
    /// Empty logs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, keeping the name's position if it was already there.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        let name = name.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((name, value)),
        }
    }

    /// The value logged under `name`.
    pub fn get(&self, name: &str) -> Option<Value> {
        self.entries
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }

    /// Whether `name` is logged (even with [`Value::None`]).
    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == name)
    }

    /// Names and values in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Names in insertion order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Logs {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut logs = Logs::new();
        for (k, v) in iter {
            logs.insert(k, v);
        }
        logs
    }
}

impl<K: Into<String>, V: Into<Value>, const N: usize> From<[(K, V); N]> for Logs {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_int_and_float_apart() {
        let logs = Logs::from([
            ("n", Value::Int(3)),
            ("x", Value::Float(3.0)),
            ("bad", Value::Float(f64::NEG_INFINITY)),
            ("gone", Value::None),
        ]);
        let text = serde_json::to_string(&logs).expect("serialise");
        assert_eq!(text, r#"{"n":3,"x":3.0,"bad":"-inf","gone":null}"#);
        let back: Logs = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, logs);
    }

    #[test]
    fn a_bool_is_written_as_its_int_and_read_from_either() {
        // Readers of the format (older versions of this one among them) see numbers only.
        let logs = Logs::from([("done", Value::Bool(true)), ("ok", Value::Bool(false))]);
        assert_eq!(
            serde_json::to_string(&logs).expect("serialise"),
            r#"{"done":1,"ok":0}"#
        );
        let back: Logs = serde_json::from_str(r#"{"done":true}"#).expect("parse");
        assert_eq!(back.get("done"), Some(Value::Bool(true)));
    }
}
