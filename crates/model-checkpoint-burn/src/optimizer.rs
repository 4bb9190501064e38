//! burn's optimizer state under stable names. burn keys it by `ParamId`, a random number
//! each model gets anew, so a record reloaded into a freshly built model matches nothing
//! and its state is silently dropped. Here each state tensor is saved as
//! `optimizer/<module path>/<field>` (under the checkpoint's training prefix) and each
//! scalar under the path in the `optimizer` section; restoring rebuilds burn's record keyed
//! by the new model's ids.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::Bytes;
use burn_pack::Scalar;
use model_checkpoint::store::TrainingDocument;
use model_checkpoint::TensorSource;
use model_checkpoint::{HostTensor, NamedTensor};
use serde::{Deserialize, Serialize};

use crate::names::{from_dtype, host_data, ids, to_dtype, ParamInfo};
use crate::Error;

/// burn's scalar (per parameter) holding the rank of the parameter's state.
const RANK: &str = "__rank";

/// A scalar of burn's record, with its kind kept (so a step counter stays an integer).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Value {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
}

impl Value {
    /// The value, if a checkpoint may hold it: an integer (burn's step counters and ranks)
    /// within `±MAX_COUNTER`, as every counter in a checkpoint. burn adds to its counters
    /// unchecked: one near `u64::MAX` would overflow at the next step.
    pub(crate) fn checked(self, name: &str) -> Result<Value, String> {
        let max = model_checkpoint::store::MAX_COUNTER;
        let in_range = match self {
            Value::Int(v) => v.unsigned_abs() <= max,
            Value::UInt(v) => v <= max,
            Value::Float(_) | Value::Bool(_) => true,
        };
        if in_range {
            Ok(self)
        } else {
            Err(format!("{name} is {self:?}, beyond ±{max}"))
        }
    }
}

impl From<Scalar> for Value {
    fn from(s: Scalar) -> Self {
        match s {
            Scalar::Int(v) => Value::Int(v),
            Scalar::UInt(v) => Value::UInt(v),
            Scalar::Float(v) => Value::Float(v),
            Scalar::Bool(v) => Value::Bool(v),
        }
    }
}

impl From<Value> for Scalar {
    fn from(v: Value) -> Self {
        match v {
            Value::Int(v) => Scalar::Int(v),
            Value::UInt(v) => Scalar::UInt(v),
            Value::Float(v) => Scalar::Float(v),
            Value::Bool(v) => Scalar::Bool(v),
        }
    }
}

/// The name of [`Section::learning_rate`] in a document.
const LEARNING_RATE: &str = "learning_rate";

/// The optimizer's section: per parameter path, its scalars by field.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Section {
    framework: String,
    scalars: BTreeMap<String, BTreeMap<String, Value>>,
    /// The learning rate the loop steps burn's optimizer with (burn keeps none), when the
    /// loop is `fit`'s (`BurnStep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    learning_rate: Option<f64>,
}

/// Records `rate` in a document's optimizer section (which [`state`] made).
pub(crate) fn set_learning_rate(document: &mut TrainingDocument, rate: f64) -> Result<(), Error> {
    // At every full save: the field is set in place, not by a round trip of the section
    // through serde (as it would serialize: `Section` has no other field of that name).
    if let Some(serde_json::Value::Object(section)) = &mut document.optimizer {
        section.insert(
            LEARNING_RATE.to_owned(),
            serde_json::to_value(rate).map_err(Error::burn)?,
        );
        return Ok(());
    }
    let mut section: Section = match document.optimizer.take() {
        Some(v) => serde_json::from_value(v).map_err(Error::burn)?,
        None => Section::default(),
    };
    section.learning_rate = Some(rate);
    document.optimizer = Some(serde_json::to_value(section).map_err(Error::burn)?);
    Ok(())
}

/// The learning rate a document's optimizer section records, if any; a rate that is not a
/// finite number is refused.
pub(crate) fn learning_rate(
    document: &TrainingDocument,
    path: &model_checkpoint::store::Name,
) -> Result<Option<f64>, Error> {
    let Some(v) = &document.optimizer else {
        return Ok(None);
    };
    let section: Section = serde_json::from_value(v.clone()).map_err(|e| {
        Error::Checkpoint(model_checkpoint::Error::BadTrainingState {
            path: path.clone(),
            reason: format!("optimizer state malformed: {e}"),
        })
    })?;
    match section.learning_rate {
        Some(rate) if !rate.is_finite() || rate <= 0.0 => Err(Error::Checkpoint(
            model_checkpoint::Error::BadTrainingState {
                path: path.clone(),
                reason: format!("the step's learning rate {rate} is not a positive number"),
            },
        )),
        rate => Ok(rate),
    }
}

/// The optimizer's state of `model`'s parameters: its tensors (named without the
/// checkpoint's prefix) and its section of values.
pub(crate) fn state<M: Module>(
    optimizer: &ModuleOptimizer,
    model: &M,
) -> Result<(Vec<NamedTensor<'static>>, serde_json::Value), Error> {
    let paths: BTreeMap<u64, String> = ids(model)
        .into_iter()
        .map(|(path, param)| (param.id.val(), path))
        .collect();
    state_of_record(optimizer.to_record(), &paths)
}

/// An optimizer record's state, its parameters named by `paths` (parameter id → path).
pub(crate) fn state_of_record(
    record: OptimizerRecord,
    paths: &BTreeMap<u64, String>,
) -> Result<(Vec<NamedTensor<'static>>, serde_json::Value), Error> {
    let bytes = record.into_bytes().map_err(Error::burn)?;
    let reader = burn_pack::Reader::from_bytes(bytes).map_err(Error::burn)?;
    let mut section = Section {
        framework: "burn".into(),
        ..Section::default()
    };
    for (key, value) in reader.scalars() {
        let (id, field) = split_key(key)?;
        let path = path_of(paths, id)?;
        section
            .scalars
            .entry(path.clone())
            .or_default()
            .insert(field.to_owned(), (*value).into());
    }
    let mut tensors = Vec::new();
    for tensor in reader.into_tensors().map_err(Error::burn)? {
        let (name, dtype, shape, _, bytes) = tensor.into_parts().map_err(Error::burn)?;
        let (id, field) = split_key(&name)?;
        let path = path_of(paths, id)?;
        let data = burn::tensor::TensorData::from_bytes(bytes, shape, dtype);
        let host: HostTensor = host_data(data, &name)?;
        tensors.push(NamedTensor::new(format!("{path}/{field}"), host));
    }
    let section = serde_json::to_value(section).map_err(Error::burn)?;
    Ok((tensors, section))
}

/// `optimizer` with the state saved in `stored` (its tensors, named as [`state`] names
/// them) and `values` (its section), for `model`'s parameters (matched by path).
pub(crate) fn restore<M: Module>(
    optimizer: &ModuleOptimizer,
    model: &M,
    stored: &dyn TensorSource,
    values: Option<&serde_json::Value>,
) -> Result<ModuleOptimizer, Error> {
    let record = record(model, stored, values)?;
    check_default_device()?;
    Ok(optimizer.clone().load_record(record))
}

/// burn's `load_record` puts the state on `Device::default()`, which panics when the
/// `BURN_DEVICE` variable names a backend this build of burn lacks: refused here by name.
/// A name burn knows but was built without is found by trying it (burn's message is
/// printed, then this error is returned).
pub(crate) fn check_default_device() -> Result<(), Error> {
    const KNOWN: [&str; 11] = [
        "cuda", "rocm", "metal", "vulkan", "webgpu", "wgpu", "cpu", "tch", "remote", "flex",
        "ndarray",
    ];
    // burn reads it with `env::var`: a value that is not Unicode is ignored there too.
    let Ok(value) = std::env::var("BURN_DEVICE") else {
        return Ok(());
    };
    let refused = || {
        Error::options(format!(
            "BURN_DEVICE={value:?} names no backend this build of burn has"
        ))
    };
    if !KNOWN.contains(&value.to_lowercase().as_str()) {
        return Err(refused());
    }
    std::panic::catch_unwind(burn::tensor::Device::default)
        .map(drop)
        .map_err(|_| refused())
}

/// burn's record of the state saved in `stored` and `values`, keyed by `model`'s parameter
/// ids. Everything is checked before burn sees it: each tensor's parameter exists and has
/// the tensor's shape, and each scalar's parameter exists.
fn record<M: Module>(
    model: &M,
    stored: &dyn TensorSource,
    values: Option<&serde_json::Value>,
) -> Result<OptimizerRecord, Error> {
    let bad = |reason: String| {
        Error::Checkpoint(model_checkpoint::Error::BadTrainingState {
            path: stored.path().clone(),
            reason,
        })
    };
    let params = ids(model);
    let section: Section = match values {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| bad(format!("optimizer state malformed: {e}")))?,
        None => Section::default(),
    };
    if !section.framework.is_empty() && section.framework != "burn" {
        return Err(bad(format!(
            "the optimizer state was written by {}, not burn",
            section.framework
        )));
    }
    let param = |path: &str| -> Result<&ParamInfo, Error> {
        params.get(path).ok_or_else(|| {
            bad(format!(
                "the optimizer has state for {path}, which the model does not have"
            ))
        })
    };

    let mut tensors = Vec::new();
    let entries: Vec<_> = stored
        .tensors()
        .into_iter()
        .map(|t| (t.name, t.dtype, t.shape))
        .collect();
    for (name, dtype, shape) in entries {
        let (path, field) = name
            .split_once('/')
            .ok_or_else(|| bad(format!("optimizer tensor {name} names no parameter")))?;
        let ParamInfo {
            id,
            shape: param_shape,
            dtype: param_dtype,
        } = param(path)?;
        if &shape != param_shape {
            return Err(bad(format!(
                "optimizer tensor {name} has shape {shape:?}, its parameter {param_shape:?}"
            )));
        }
        // burn's optimizers combine their state with the parameter's gradient, which has
        // the parameter's dtype: any other dtype panics at the next step.
        if to_dtype(*param_dtype) != Some(dtype) {
            return Err(bad(format!(
                "optimizer tensor {name} is of dtype {dtype:?}, its parameter {param_dtype:?}"
            )));
        }
        let burn_dtype = from_dtype(dtype)
            .filter(|d| d.is_float())
            .ok_or_else(|| bad(format!("optimizer tensor {name} is of dtype {dtype:?}")))?;
        let bytes = stored.read(&name, dtype, &shape)?;
        tensors.push(burn_pack::Tensor::new(
            format!("{}.{field}", id.val()),
            burn_dtype,
            shape,
            Some(id.val()),
            Bytes::from_bytes_vec(bytes),
        ));
    }
    let mut writer = burn_pack::Writer::new(tensors);
    for (path, fields) in &section.scalars {
        let ParamInfo {
            id,
            shape: param_shape,
            ..
        } = param(path)?;
        // burn rebuilds each state at this rank: one that is not the parameter's would
        // fail deep inside burn at the next step.
        if let Some(rank) = fields.get(RANK) {
            if !matches!(rank, Value::UInt(r) if *r == param_shape.len() as u64)
                && !matches!(rank, Value::Int(r) if *r == param_shape.len() as i64)
            {
                return Err(bad(format!(
                    "optimizer state of {path} has rank {rank:?}, its parameter {}",
                    param_shape.len()
                )));
            }
        }
        writer = writer.with_metadata(&id.val().to_string(), path);
        for (field, value) in fields {
            let value = value
                .checked(&format!("optimizer scalar {path}/{field}"))
                .map_err(bad)?;
            writer = writer.with_scalar(&format!("{}.{field}", id.val()), value.into());
        }
    }
    let bytes = writer.into_bytes().map_err(Error::burn)?;
    OptimizerRecord::from_bytes(bytes).map_err(Error::burn)
}

/// `"{param_id}.{field}"` split.
fn split_key(key: &str) -> Result<(u64, &str), Error> {
    key.split_once('.')
        .and_then(|(id, field)| Some((id.parse().ok()?, field)))
        .ok_or_else(|| Error::options(format!("burn's optimizer record has a key {key:?}")))
}

fn path_of(paths: &BTreeMap<u64, String>, id: u64) -> Result<&String, Error> {
    paths.get(&id).ok_or_else(|| {
        Error::options(format!(
            "the optimizer has state for parameter {id}, which the model does not have"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rate set in place on the section `state` makes is the one a round trip through
    /// `Section` would give, and reads back.
    #[test]
    fn learning_rate_set_in_place_equals_the_round_trip() {
        let made = Section {
            framework: "burn".into(),
            scalars: BTreeMap::from([(
                "dense_0.weight".to_owned(),
                BTreeMap::from([("time".to_owned(), Value::UInt(7))]),
            )]),
            learning_rate: None,
        };
        let mut document = TrainingDocument::default();
        document.optimizer = Some(serde_json::to_value(&made).unwrap());
        set_learning_rate(&mut document, 0.0025).unwrap();
        let expected = Section {
            learning_rate: Some(0.0025),
            ..made
        };
        assert_eq!(
            document.optimizer,
            Some(serde_json::to_value(&expected).unwrap())
        );
        let name = model_checkpoint::store::Name::from("x.safetensors");
        assert_eq!(learning_rate(&document, &name).unwrap(), Some(0.0025));

        // A second save sets it again, replacing the first.
        set_learning_rate(&mut document, 0.5).unwrap();
        assert_eq!(learning_rate(&document, &name).unwrap(), Some(0.5));

        // No section yet: one is made.
        let mut empty = TrainingDocument::default();
        set_learning_rate(&mut empty, 0.25).unwrap();
        assert_eq!(learning_rate(&empty, &name).unwrap(), Some(0.25));
    }
}
