//! Loading named tensors into a model, as a user of PyTorch's `load_state_dict` expects:
//! strict by default, with every problem listed at once (not the first); non-strict
//! returning what was missing, unexpected and mismatched; floats cast to the model's dtype
//! when asked. An adapter says what its model has ([`TensorInfo`]s), [`plan`] matches it
//! against a [`TensorSource`], and [`Plan::read`] hands over each tensor's bytes in the
//! model's dtype.
//!
//! ```
//! use model_checkpoint::load::{plan, LoadOptions};
//! use model_checkpoint::{store::Name, Dtype, Error, TensorInfo, TensorSource};
//!
//! /// Tensors in memory, under a name for messages.
//! struct Memory(Name, Vec<(TensorInfo, Vec<u8>)>);
//! impl TensorSource for Memory {
//!     fn path(&self) -> &Name { &self.0 }
//!     fn tensors(&self) -> Vec<TensorInfo> { self.1.iter().map(|(i, _)| i.clone()).collect() }
//!     fn read(&self, name: &str, _: Dtype, _: &[usize]) -> Result<Vec<u8>, Error> {
//!         Ok(self.1.iter().find(|(i, _)| i.name == name).map(|(_, b)| b.clone()).unwrap_or_default())
//!     }
//! }
//! let source = Memory(Name::new("memory")?, vec![
//!     (TensorInfo::new("w", Dtype::F64, &[1]), 2.5f64.to_le_bytes().to_vec()),
//!     (TensorInfo::new("extra", Dtype::F32, &[1]), 1f32.to_le_bytes().to_vec()),
//! ]);
//! let model = [TensorInfo::new("w", Dtype::F32, &[1]), TensorInfo::new("b", Dtype::F32, &[1])];
//!
//! // Strict (the default): one error lists every problem.
//! let refused = plan(&source, &model, LoadOptions::default()).err().map(|e| e.to_string());
//! assert!(refused.is_some_and(|e| e.contains("missing b") && e.contains("unexpected extra") && e.contains("w: F64 [1], the model has F32 [1]")));
//!
//! // Not strict, casting floats: the report says what was left out; `w` loads as f32.
//! let loaded = plan(&source, &model, LoadOptions::default().strict(false).cast(true))?;
//! assert_eq!((loaded.report.missing.as_slice(), loaded.report.unexpected.as_slice()), (&["b".to_owned()][..], &["extra".to_owned()][..]));
//! assert_eq!(loaded.read(&source, "w")?, Some(2.5f32.to_le_bytes().to_vec()));
//! # Ok::<(), Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{Dtype, TensorInfo, TensorSource};
use crate::Error;

/// How strict a load is, and whether floats may be cast.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Refuse any tensor missing, unexpected or mismatched (default: yes), with one error
    /// listing them all. Not strict: load what matches, report the rest.
    pub strict: bool,
    /// Cast a float tensor of another float dtype (F16, BF16, F32, F64) to the model's
    /// (default: no).
    pub cast: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            strict: true,
            cast: false,
        }
    }
}

impl LoadOptions {
    /// Strict or not (see [`LoadOptions::strict`]).
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Cast floats or not (see [`LoadOptions::cast`]).
    pub fn cast(mut self, cast: bool) -> Self {
        self.cast = cast;
        self
    }
}

/// A tensor the model and the checkpoint both have, in different dtypes or shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// What the model has.
    pub expected: TensorInfo,
    /// What the checkpoint holds.
    pub found: TensorInfo,
}

/// What did not match between a model and a checkpoint (PyTorch's `strict=False` result).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadReport {
    /// Tensors the model has and the checkpoint lacks (left as they were).
    pub missing: Vec<String>,
    /// Tensors the checkpoint holds and the model lacks (not read).
    pub unexpected: Vec<String>,
    /// Tensors of another dtype or shape (left as they were).
    pub mismatched: Vec<Mismatch>,
}

impl LoadReport {
    /// Whether everything matched.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

/// The most problems an error names (the rest are counted).
const LISTED: usize = 20;

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |s: &str| crate::text::shorten(s, 200);
        let mut items: Vec<String> = Vec::new();
        items.extend(self.missing.iter().map(|n| format!("missing {}", short(n))));
        items.extend(
            self.unexpected
                .iter()
                .map(|n| format!("unexpected {}", short(n))),
        );
        items.extend(self.mismatched.iter().map(|m| {
            format!(
                "{}: {:?} {:?}, the model has {:?} {:?}",
                short(&m.found.name),
                m.found.dtype,
                m.found.shape,
                m.expected.dtype,
                m.expected.shape
            )
        }));
        let total = items.len();
        let shown: Vec<String> = items.into_iter().take(LISTED).collect();
        write!(f, "{}", shown.join("; "))?;
        if total > LISTED {
            write!(f, "; and {} more", total - LISTED)?;
        }
        Ok(())
    }
}

/// A load that [`plan`] accepted: what it found, and how each tensor is read.
#[derive(Debug)]
pub struct Plan {
    /// What did not match (empty for a strict load).
    pub report: LoadReport,
    /// For each tensor to load, by name: the model's and the checkpoint's dtype and shape.
    matched: BTreeMap<String, (TensorInfo, TensorInfo)>,
}

/// Matches what the model has (`expected`) against what `source` holds.
///
/// # Errors
///
/// Strict, [`Error::LoadMismatch`] naming every tensor missing, unexpected or mismatched.
pub fn plan(
    source: &dyn TensorSource,
    expected: &[TensorInfo],
    options: LoadOptions,
) -> Result<Plan, Error> {
    let stored: BTreeMap<String, TensorInfo> = source
        .tensors()
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    let mut report = LoadReport::default();
    let mut matched = BTreeMap::new();
    for want in expected {
        let Some(found) = stored.get(&want.name) else {
            report.missing.push(want.name.clone());
            continue;
        };
        let castable = options.cast && is_float(found.dtype) && is_float(want.dtype);
        if found.shape != want.shape || (found.dtype != want.dtype && !castable) {
            report.mismatched.push(Mismatch {
                expected: want.clone(),
                found: found.clone(),
            });
            continue;
        }
        matched.insert(want.name.clone(), (want.clone(), found.clone()));
    }
    let wanted: std::collections::BTreeSet<&str> =
        expected.iter().map(|t| t.name.as_str()).collect();
    report.unexpected = stored
        .keys()
        .filter(|n| !wanted.contains(n.as_str()))
        .cloned()
        .collect();
    if options.strict && !report.is_clean() {
        return Err(Error::LoadMismatch {
            path: source.path().clone(),
            report: Box::new(report),
        });
    }
    Ok(Plan { report, matched })
}

impl Plan {
    /// Whether tensor `name` of the model is loaded by this plan.
    pub fn loads(&self, name: &str) -> bool {
        self.matched.contains_key(name)
    }

    /// The names of the model's tensors this plan loads.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.matched.keys().map(String::as_str)
    }

    /// The bytes of the model's tensor `name`, in the model's dtype (cast from the stored
    /// one if the plan allowed it); `None` for a tensor the plan does not load.
    ///
    /// # Errors
    ///
    /// The source's errors (a checksum that fails, a file truncated since it was opened).
    pub fn read(&self, source: &dyn TensorSource, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let Some((want, found)) = self.matched.get(name) else {
            return Ok(None);
        };
        let bytes = source.read(&found.name, found.dtype, &found.shape)?;
        if found.dtype == want.dtype {
            return Ok(Some(bytes));
        }
        cast(&bytes, found.dtype, want.dtype).map(Some)
    }
}

/// The tensors of `source` whose names start with `prefix`, named without it: an
/// optimizer's slots among the training tensors (`load::within(tensors, OPTIMIZER_TENSORS)`),
/// so that its strict load sees only what is its own.
pub fn within<'a>(source: &'a dyn TensorSource, prefix: &'a str) -> Within<'a> {
    Within { source, prefix }
}

/// See [`within`].
pub struct Within<'a> {
    source: &'a dyn TensorSource,
    prefix: &'a str,
}

impl TensorSource for Within<'_> {
    fn path(&self) -> &crate::store::Name {
        self.source.path()
    }

    fn tensors(&self) -> Vec<TensorInfo> {
        self.source
            .tensors()
            .into_iter()
            .filter_map(|mut t| {
                t.name = t.name.strip_prefix(self.prefix)?.to_owned();
                Some(t)
            })
            .collect()
    }

    fn read(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<Vec<u8>, Error> {
        self.source
            .read(&format!("{}{name}", self.prefix), dtype, shape)
    }

    fn verified(&self) -> bool {
        self.source.verified()
    }
}

fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
}

/// Little-endian float bytes of `from` as `to` (both of F16, BF16, F32, F64), rounding to
/// nearest as the hardware does.
///
/// # Errors
///
/// [`Error::DtypeMismatch`] for a dtype that is not one of those floats.
pub fn cast(bytes: &[u8], from: Dtype, to: Dtype) -> Result<Vec<u8>, Error> {
    let unsupported = || Error::DtypeMismatch {
        path: crate::store::Name::top(),
        name: String::new(),
        expected: format!("{to:?}"),
        found: format!("{from:?} (only floats cast)"),
    };
    let values: Vec<f64> = match from {
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| f64::from(half::f16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| f64::from(half::bf16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        _ => return Err(unsupported()),
    };
    let mut out = Vec::with_capacity(values.len() * to.bitsize() / 8);
    for v in values {
        match to {
            Dtype::F16 => out.extend_from_slice(&half::f16::from_f64(v).to_le_bytes()),
            Dtype::BF16 => out.extend_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
            // f64 → f32 rounds to nearest (ties to even), as `as` does.
            #[allow(clippy::cast_possible_truncation)]
            Dtype::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            Dtype::F64 => out.extend_from_slice(&v.to_le_bytes()),
            _ => return Err(unsupported()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_cast_both_ways_and_others_do_not() {
        let f32s: Vec<u8> = [1.5f32, -0.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let halves = cast(&f32s, Dtype::F32, Dtype::F16).expect("f16");
        assert_eq!(cast(&halves, Dtype::F16, Dtype::F32).expect("back"), f32s);
        let bf = cast(&f32s, Dtype::F32, Dtype::BF16).expect("bf16");
        assert_eq!(cast(&bf, Dtype::BF16, Dtype::F64).expect("f64").len(), 16);
        assert!(cast(&[1, 0, 0, 0], Dtype::I32, Dtype::F32).is_err());
    }
}
