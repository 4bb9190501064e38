//! candle tensors as checkpoint tensors, both ways: dtype mapping, zero-copy streaming out of
//! candle's CPU buffers, and loading named tensors into variables with shape and dtype checks.

#[cfg(test)]
use model_checkpoint::store::Name;
use model_checkpoint::Error as CoreError;
use std::borrow::Cow;
use std::io;

use candle_core::{DType, Device, Storage, Tensor, Var};
use model_checkpoint::load::{LoadOptions, LoadReport};
#[cfg(test)]
use model_checkpoint::store::{CheckpointFile, TensorRef};
use model_checkpoint::{Dtype, SharedTensor, TensorData, TensorInfo, TensorSource};

use crate::Error;

#[cfg(target_endian = "big")]
compile_error!("checkpoint files are little-endian; big-endian hosts are not supported");

/// The safetensors dtype of a candle dtype (`None` only for dtypes newer than this crate).
pub fn to_dtype(dtype: DType) -> Option<Dtype> {
    Some(match dtype {
        DType::U8 => Dtype::U8,
        DType::U32 => Dtype::U32,
        DType::I16 => Dtype::I16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::BF16 => Dtype::BF16,
        DType::F16 => Dtype::F16,
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::F8E4M3 => Dtype::F8_E4M3,
        DType::F6E2M3 => Dtype::F6_E2M3,
        DType::F6E3M2 => Dtype::F6_E3M2,
        DType::F4 => Dtype::F4,
        DType::F8E8M0 => Dtype::F8_E8M0,
        _ => return None,
    })
}

/// The candle dtype of a safetensors dtype, if candle has it.
pub fn from_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::U8 => DType::U8,
        Dtype::U32 => DType::U32,
        Dtype::I16 => DType::I16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::BF16 => DType::BF16,
        Dtype::F16 => DType::F16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F8_E4M3 => DType::F8E4M3,
        Dtype::F6_E2M3 => DType::F6E2M3,
        Dtype::F6_E3M2 => DType::F6E3M2,
        Dtype::F4 => DType::F4,
        Dtype::F8_E8M0 => DType::F8E8M0,
        _ => return None,
    })
}

/// A candle tensor as checkpoint data. On the CPU its bytes are streamed straight from
/// candle's buffer, with no copy.
#[derive(Clone, Debug)]
pub struct CandleTensor {
    tensor: Tensor,
    dtype: Dtype,
}

impl CandleTensor {
    /// Wraps `tensor` (a cheap reference-counted clone of it is kept).
    ///
    /// # Errors
    ///
    /// [`model_checkpoint::Error::DtypeMismatch`] for a dtype safetensors cannot hold.
    pub fn new(tensor: &Tensor) -> Result<Self, Error> {
        let dtype = to_dtype(tensor.dtype()).ok_or_else(|| {
            Error::Checkpoint(CoreError::DtypeMismatch {
                path: model_checkpoint::store::Name::top(),
                name: String::new(),
                expected: "a dtype safetensors can hold".into(),
                found: format!("{:?}", tensor.dtype()),
            })
        })?;
        Ok(CandleTensor {
            tensor: tensor.clone(),
            dtype,
        })
    }

    /// The tensor.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }
}

/// Views a slice of plain numbers as bytes.
fn bytes_of<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: `T` is one of candle's element types (integers, floats, or byte-sized
    // wrappers): plain data without padding or invalid bit patterns, so every byte is
    // initialised; `u8` has alignment 1, and the length covers exactly the same memory.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    }
}

impl TensorData for CandleTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> Cow<'_, [usize]> {
        Cow::Borrowed(self.tensor.dims())
    }

    fn write_to(&self, sink: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let on_cpu;
        let tensor = match self.tensor.device() {
            Device::Cpu => &self.tensor,
            _ => {
                on_cpu = self
                    .tensor
                    .to_device(&Device::Cpu)
                    .map_err(io::Error::other)?;
                &on_cpu
            }
        };
        let contiguous;
        let tensor = if tensor.is_contiguous() {
            tensor
        } else {
            contiguous = tensor.contiguous().map_err(io::Error::other)?;
            &contiguous
        };
        let (storage, layout) = tensor.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return Err(io::Error::other(
                "tensor is not on the CPU after moving it there",
            ));
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| io::Error::other("tensor is not contiguous after making it so"))?;
        use candle_core::CpuStorage as S;
        let bytes: &[u8] = match cpu {
            S::U8(v) => bytes_of(&v[start..end]),
            S::U32(v) => bytes_of(&v[start..end]),
            S::I16(v) => bytes_of(&v[start..end]),
            S::I32(v) => bytes_of(&v[start..end]),
            S::I64(v) => bytes_of(&v[start..end]),
            S::BF16(v) => bytes_of(&v[start..end]),
            S::F16(v) => bytes_of(&v[start..end]),
            S::F32(v) => bytes_of(&v[start..end]),
            S::F64(v) => bytes_of(&v[start..end]),
            S::F8E4M3(v) => bytes_of(&v[start..end]),
            // Packed sub-byte types keep raw bytes; offsets count elements, so take the whole
            // buffer only when the view is the whole buffer.
            S::F6E2M3(v) | S::F6E3M2(v) | S::F4(v) | S::F8E8M0(v) => {
                if start != 0 {
                    return Err(io::Error::other("sliced packed tensors are not supported"));
                }
                v.as_slice()
            }
        };
        sink(bytes)
    }

    /// candle tensors are reference-counted: another thread can read the same storage. A
    /// `Var`'s storage is changed in place by optimizer steps, which `fit` holds back with a
    /// [`model_checkpoint::SnapshotFence`] until the copy is done.
    fn share(&self) -> Option<SharedTensor> {
        Some(std::sync::Arc::new(self.clone()))
    }
}

/// Builds a tensor from a stored one, checking it against what the variable expects, and
/// reading (and so verifying) its bytes only once the dtype and shape fit.
#[cfg(test)]
pub(crate) fn tensor_for(
    file: &CheckpointFile,
    stored: &TensorRef<'_>,
    expected_shape: &[usize],
    expected_dtype: DType,
    path: &model_checkpoint::store::Name,
    device: &Device,
) -> Result<Tensor, Error> {
    let Some(dtype) = from_dtype(stored.dtype) else {
        return Err(Error::Checkpoint(CoreError::DtypeMismatch {
            path: path.clone(),
            name: stored.name.to_owned(),
            expected: format!("{expected_dtype:?}"),
            found: format!("{:?} (which candle cannot hold)", stored.dtype),
        }));
    };
    if dtype != expected_dtype {
        return Err(Error::Checkpoint(CoreError::DtypeMismatch {
            path: path.clone(),
            name: stored.name.to_owned(),
            expected: format!("{expected_dtype:?}"),
            found: format!("{dtype:?}"),
        }));
    }
    if stored.shape != expected_shape {
        return Err(Error::Checkpoint(CoreError::ShapeMismatch {
            path: path.clone(),
            name: stored.name.to_owned(),
            expected: expected_shape.to_vec(),
            found: stored.shape.to_vec(),
        }));
    }
    let bytes = file.read(stored.name)?;
    Ok(Tensor::from_raw_buffer(
        &bytes,
        dtype,
        stored.shape,
        device,
    )?)
}

/// Loads `vars` (name, variable) from `source`, as `options` say (strict by default: every
/// problem named at once), all or nothing: every tensor is read and checked before any
/// variable changes. Returns what did not match (empty when strict).
pub(crate) fn load_vars(
    source: &dyn TensorSource,
    vars: &[(String, Var)],
    options: LoadOptions,
) -> Result<LoadReport, Error> {
    let mut expected = Vec::with_capacity(vars.len());
    for (name, var) in vars {
        let dtype = to_dtype(var.dtype()).ok_or_else(|| {
            Error::Checkpoint(CoreError::DtypeMismatch {
                path: source.path().clone(),
                name: name.clone(),
                expected: "a dtype safetensors holds".to_owned(),
                found: format!("{:?}", var.dtype()),
            })
        })?;
        expected.push(TensorInfo::new(name.clone(), dtype, var.dims()));
    }
    let plan = model_checkpoint::load::plan(source, &expected, options)?;
    let mut staged = Vec::with_capacity(vars.len());
    for (name, var) in vars {
        let Some(bytes) = plan.read(source, name)? else {
            continue;
        };
        let tensor = Tensor::from_raw_buffer(&bytes, var.dtype(), var.dims(), var.device())?;
        staged.push((var, tensor));
    }
    for (var, tensor) in staged {
        var.set(&tensor)?;
    }
    Ok(plan.report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_checkpoint::store::{self, Kind, SaveOptions, Verify};
    use model_checkpoint::NamedTensor;

    #[test]
    fn every_candle_dtype_round_trips_through_a_file() {
        let dev = Device::Cpu;
        let base = Tensor::arange(0f32, 24.0, &dev)
            .and_then(|t| t.reshape((2, 3, 4)))
            .expect("base");
        let dtypes = [
            DType::U8,
            DType::U32,
            DType::I16,
            DType::I32,
            DType::I64,
            DType::BF16,
            DType::F16,
            DType::F32,
            DType::F64,
        ];
        let tensors: Vec<(String, Tensor)> = dtypes
            .iter()
            .map(|&d| (format!("{d:?}"), base.to_dtype(d).expect("cast")))
            .collect();
        // A slice, so that a non-zero storage offset is streamed correctly too.
        let sliced = base.narrow(2, 1, 2).expect("narrow");
        let mut named: Vec<NamedTensor<'_>> = tensors
            .iter()
            .map(|(n, t)| NamedTensor::new(n.clone(), CandleTensor::new(t).expect("dtype")))
            .collect();
        named.push(NamedTensor::new(
            "sliced",
            CandleTensor::new(&sliced).expect("dtype"),
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("all.safetensors");
        store::save(
            &path,
            Kind::Weights,
            &named,
            &Default::default(),
            &SaveOptions::default(),
        )
        .expect("save");
        let file = CheckpointFile::open(&path, Verify::Full).expect("open");
        for (name, original) in tensors
            .iter()
            .chain(std::iter::once(&("sliced".to_owned(), sliced.clone())))
        {
            let stored = file.tensor(name).expect("stored");
            let back = tensor_for(
                &file,
                &stored,
                original.dims(),
                original.dtype(),
                &Name::from(&path),
                &dev,
            )
            .expect("load");
            let (a, b) = (original.to_dtype(DType::F64), back.to_dtype(DType::F64));
            let a = a
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f64>())
                .expect("a");
            let b = b
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f64>())
                .expect("b");
            assert_eq!(a, b, "{name}");
        }
        // FP8 from raw bytes (casting f32 to F8E4M3 does not finish in candle 0.11), compared
        // byte for byte.
        let raw: Vec<u8> = (0u8..24).collect();
        let fp8 = Tensor::from_raw_buffer(&raw, DType::F8E4M3, &[4, 6], &dev).expect("fp8");
        let path8 = dir.path().join("fp8.safetensors");
        let named8 = [NamedTensor::new(
            "fp8",
            CandleTensor::new(&fp8).expect("dtype"),
        )];
        store::save(
            &path8,
            Kind::Weights,
            &named8,
            &Default::default(),
            &SaveOptions::default(),
        )
        .expect("save");
        let file8 = CheckpointFile::open(&path8, Verify::Full).expect("open");
        let stored = file8.tensor("fp8").expect("stored");
        assert_eq!(
            (stored.dtype, file8.read("fp8").expect("bytes")),
            (Dtype::F8_E4M3, raw.clone())
        );
        let back = tensor_for(
            &file8,
            &stored,
            &[4, 6],
            DType::F8E4M3,
            &Name::from(&path8),
            &dev,
        )
        .expect("load");
        let mut bytes = Vec::new();
        CandleTensor::new(&back)
            .expect("dtype")
            .write_to(&mut |p| {
                bytes.extend_from_slice(p);
                Ok(())
            })
            .expect("bytes");
        assert_eq!(bytes, raw);

        // And a dtype mismatch names the tensor.
        let stored = file.tensor("F32").expect("stored");
        let err = tensor_for(
            &file,
            &stored,
            &[2, 3, 4],
            DType::F16,
            &Name::from(&path),
            &dev,
        )
        .expect_err("mismatch");
        assert!(
            err.to_string()
                .contains("tensor \"F32\" is F32 in the file but F16 in the model"),
            "{err}"
        );
    }
}
