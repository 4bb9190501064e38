//! Tensors as they cross between Python and the engine: `(name, dtype, shape, data)`, the
//! dtype by numpy's name (`"float32"`, `"bfloat16"`), the data as the array's bytes in C
//! order. numpy stays on the Python side, so the extension needs no numpy headers and one
//! wheel serves every numpy.

use std::borrow::Cow;

use model_checkpoint::{byte_len, Dtype, TensorData};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// numpy's names for the dtypes a checkpoint holds, both ways.
const DTYPES: [(&str, Dtype); 15] = [
    ("bool", Dtype::BOOL),
    ("uint8", Dtype::U8),
    ("int8", Dtype::I8),
    ("uint16", Dtype::U16),
    ("int16", Dtype::I16),
    ("float16", Dtype::F16),
    ("bfloat16", Dtype::BF16),
    ("uint32", Dtype::U32),
    ("int32", Dtype::I32),
    ("float32", Dtype::F32),
    ("uint64", Dtype::U64),
    ("int64", Dtype::I64),
    ("float64", Dtype::F64),
    ("float8_e4m3fn", Dtype::F8_E4M3),
    ("float8_e5m2", Dtype::F8_E5M2),
];

/// The dtype numpy calls `name`.
pub(crate) fn dtype_of(name: &str) -> PyResult<Dtype> {
    DTYPES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| *d)
        .ok_or_else(|| {
            crate::errors::bad_argument(format!(
                "dtype {name:?} cannot be stored in a checkpoint (one of: {})",
                DTYPES.map(|(n, _)| n).join(", ")
            ))
        })
}

/// numpy's name for `dtype`.
pub(crate) fn name_of(dtype: Dtype) -> PyResult<&'static str> {
    DTYPES
        .iter()
        .find(|(_, d)| *d == dtype)
        .map(|(n, _)| *n)
        .ok_or_else(|| {
            crate::errors::bad_argument(format!("dtype {dtype:?} has no numpy counterpart here"))
        })
}

/// A tensor as Python hands it over.
pub(crate) type Incoming<'py> = (String, String, Vec<usize>, Bound<'py, PyBytes>);

/// A tensor whose bytes Python owns, borrowed for as long as the call lasts (no copy).
pub(crate) struct Borrowed<'a> {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

impl<'a> Borrowed<'a> {
    /// `(dtype, shape, data)` checked against each other.
    pub(crate) fn new(
        name: &str,
        dtype: &str,
        shape: Vec<usize>,
        data: &'a [u8],
    ) -> PyResult<Self> {
        let dtype = dtype_of(dtype)?;
        let expected = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(byte_len(dtype, &[1])));
        if expected != Some(data.len()) {
            return Err(crate::errors::bad_argument(format!(
                "tensor {name:?}: {} bytes for shape {shape:?} of {dtype:?}",
                data.len()
            )));
        }
        Ok(Borrowed { dtype, shape, data })
    }
}

impl TensorData for Borrowed<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> Cow<'_, [usize]> {
        Cow::Borrowed(&self.shape)
    }
    fn byte_len(&self) -> usize {
        self.data.len()
    }
    fn write_to(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        sink(self.data)
    }
}
