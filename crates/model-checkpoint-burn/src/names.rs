//! A burn module's float parameters as named tensors, out and in. A parameter is named by
//! its module path (`dense_0.weight`), as burn's own stores and PyTorch name them, and is
//! saved in its saving layout (after the parameter's save mapper: a `LinearLayout::Col`
//! weight is `[out, in]`, as candle and PyTorch keep it).

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{DType, Tensor, TensorData};
use model_checkpoint::load::{LoadOptions, LoadReport};
use model_checkpoint::{Dtype, HostTensor};
use model_checkpoint::{TensorInfo, TensorSource};

use crate::Error;

/// One float parameter: its name and value as saved.
pub(crate) struct Named {
    pub name: String,
    pub tensor: HostTensor,
}

/// Every float parameter of `module`, in visiting order.
pub(crate) fn collect<M: Module>(module: &M) -> Result<Vec<Named>, Error> {
    let mut visitor = Collect {
        path: Vec::new(),
        out: Vec::new(),
        error: None,
    };
    module.visit(&mut visitor);
    match visitor.error {
        Some(e) => Err(e),
        None => Ok(visitor.out),
    }
}

/// A float parameter as the optimizer's state must match it.
pub(crate) struct ParamInfo {
    pub id: ParamId,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

/// Module path → parameter, for naming the optimizer's state.
pub(crate) fn ids<M: Module>(module: &M) -> BTreeMap<String, ParamInfo> {
    struct Ids {
        path: Vec<String>,
        out: BTreeMap<String, ParamInfo>,
    }
    impl ModuleVisitor for Ids {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_owned());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            let info = ParamInfo {
                id: param.id,
                shape: value.dims().to_vec(),
                dtype: value.dtype(),
            };
            self.out.insert(self.path.join("."), info);
        }
    }
    let mut visitor = Ids {
        path: Vec::new(),
        out: BTreeMap::new(),
    };
    module.visit(&mut visitor);
    visitor.out
}

struct Collect {
    path: Vec<String>,
    out: Vec<Named>,
    error: Option<Error>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.error.is_some() {
            return;
        }
        let name = self.path.join(".");
        // Off the autodiff graph first (`valid`: the same values, without autodiff): the
        // save mapper's transpose of an autodiff tensor (tracked or not) registers a step
        // in burn's graph, under the graph's lock, which the training thread's forward and
        // backward take at every operation. On the writer thread that lock was contended at
        // every background save (the batches beside the writer lost about 0.04 ms a save
        // to it), and in the hook it added steps to the graph that training never uses.
        match host(param.valid().transform_for_save().into_value(), &name) {
            Ok(tensor) => self.out.push(Named { name, tensor }),
            Err(e) => self.error = Some(e),
        }
    }
}

/// A burn tensor's value in host memory, in safetensors' dtype.
pub(crate) fn host<const D: usize>(tensor: Tensor<D>, name: &str) -> Result<HostTensor, Error> {
    let data = tensor.try_into_data().map_err(Error::burn)?;
    host_data(data, name)
}

/// Host data in safetensors' dtype. `Flex32` is stored as `F32`, which it is in memory.
pub(crate) fn host_data(data: TensorData, name: &str) -> Result<HostTensor, Error> {
    let dtype = to_dtype(data.dtype()).ok_or_else(|| {
        Error::options(format!(
            "tensor {name} is of dtype {:?}, which a checkpoint cannot hold",
            data.dtype()
        ))
    })?;
    let shape = data.shape().to_vec();
    Ok(HostTensor::new(dtype, shape, data.into_bytes().to_vec())?)
}

/// safetensors' dtype for burn's, where there is one.
pub fn to_dtype(dtype: DType) -> Option<Dtype> {
    Some(match dtype {
        DType::F64 => Dtype::F64,
        DType::F32 | DType::Flex32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I64 => Dtype::I64,
        DType::I32 => Dtype::I32,
        DType::I16 => Dtype::I16,
        DType::I8 => Dtype::I8,
        DType::U64 => Dtype::U64,
        DType::U32 => Dtype::U32,
        DType::U16 => Dtype::U16,
        DType::U8 => Dtype::U8,
        _ => return None,
    })
}

/// burn's dtype for safetensors', where there is one.
pub fn from_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::I16 => DType::I16,
        Dtype::I8 => DType::I8,
        Dtype::U64 => DType::U64,
        Dtype::U32 => DType::U32,
        Dtype::U16 => DType::U16,
        Dtype::U8 => DType::U8,
        _ => return None,
    })
}

/// `module` with the weights of `file` (a weights-only or a full checkpoint, opened with
/// its checksums verified, from any storage): every float parameter by its module path,
/// each checked for its dtype and saved shape before it is read; a tensor the module does
/// not have is refused too. On any error nothing has changed (the module is returned only
/// on success).
///
/// ```
/// use model_checkpoint::store::{CheckpointFile, Verify};
/// use model_checkpoint::{Callback, Context, Logs, ModelCheckpoint};
/// use model_checkpoint_burn::{cpu, load_weights, Mlp, TrainingParts};
///
/// let dir = tempfile::tempdir()?;
/// let parts = TrainingParts::new(Mlp::new(&[4, 3], 0, &cpu())?, burn::optim::AdamConfig::new().init());
/// let mut cb = ModelCheckpoint::new(dir.path().join("w.safetensors")).save_weights_only(true);
/// cb.on_epoch_end(0, &Logs::from([("loss", 1.0)]), &mut Context::new(&parts))?;
///
/// let file = CheckpointFile::open(&dir.path().join("w.safetensors"), Verify::Full)?;
/// let model = load_weights(Mlp::new(&[4, 3], 1, &cpu())?, &file)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// The core's [`model_checkpoint::Error::LoadMismatch`], naming every tensor missing,
/// unexpected, or of another dtype or shape at once, and the reader's errors.
pub fn load_weights<M: Module>(
    module: M,
    file: &model_checkpoint::store::CheckpointFile,
) -> Result<M, Error> {
    restore(module, &model_checkpoint::restore::Stored::weights(file))
}

/// Like [`load_weights`], from any checkpoint's tensors (a deduplicated or sharded
/// checkpoint's through [`model_checkpoint::restore::Stored::sharded_weights`]).
///
/// # Errors
///
/// As [`load_weights`].
pub fn load_weights_from<M: Module>(module: M, source: &dyn TensorSource) -> Result<M, Error> {
    restore(module, source)
}

/// Like [`load_weights`], as `options` say: not strict, the parameters the file matches are
/// loaded and the report says what was missing, unexpected or mismatched (PyTorch's
/// `strict=False`); with `cast`, float tensors of another float dtype are converted.
///
/// # Errors
///
/// As [`load_weights`] (a strict load's mismatches; the reader's errors).
pub fn load_weights_with<M: Module>(
    module: M,
    file: &model_checkpoint::store::CheckpointFile,
    options: LoadOptions,
) -> Result<(M, LoadReport), Error> {
    restore_with(
        module,
        &model_checkpoint::restore::Stored::weights(file),
        options,
    )
}

/// Reads every float parameter of `module` from `stored` (each checked for its dtype and
/// saved shape before it is read), and only then puts them in: on any error the module is
/// unchanged.
pub(crate) fn restore<M: Module>(module: M, stored: &dyn TensorSource) -> Result<M, Error> {
    restore_with(module, stored, LoadOptions::default()).map(|(module, _)| module)
}

/// [`restore`] as `options` say.
pub(crate) fn restore_with<M: Module>(
    module: M,
    stored: &dyn TensorSource,
    options: LoadOptions,
) -> Result<(M, LoadReport), Error> {
    let expected = expected(&module)?;
    let infos: Vec<TensorInfo> = expected
        .iter()
        .map(|(name, dtype, shape)| TensorInfo::new(name.clone(), *dtype, shape))
        .collect();
    let plan = model_checkpoint::load::plan(stored, &infos, options)?;
    let mut values = BTreeMap::new();
    for (name, dtype, shape) in expected {
        let Some(bytes) = plan.read(stored, &name)? else {
            continue;
        };
        let burn_dtype = from_dtype(dtype)
            .ok_or_else(|| Error::options(format!("tensor {name} is of dtype {dtype:?}")))?;
        values.insert(name, TensorData::from_bytes_vec(bytes, shape, burn_dtype));
    }
    Ok((load_values(module, values), plan.report))
}

/// Puts `values` (by name, in saving layout) into `module`'s parameters of those names.
pub(crate) fn load_values<M: Module>(module: M, values: BTreeMap<String, TensorData>) -> M {
    let mut mapper = Load {
        path: Vec::new(),
        values,
    };
    module.map(&mut mapper)
}

/// Each float parameter's name, and the dtype and shape it is saved with, without copying
/// its values to the host (a restore reads those from the file).
fn expected<M: Module>(module: &M) -> Result<Vec<(String, Dtype, Vec<usize>)>, Error> {
    struct Expected {
        path: Vec<String>,
        out: Vec<(String, DType, Vec<usize>)>,
    }
    impl ModuleVisitor for Expected {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_owned());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            // Off the autodiff graph, as in `Collect`: only the dtype and shape are read.
            let saved = param.valid().transform_for_save().into_value();
            self.out
                .push((self.path.join("."), saved.dtype(), saved.dims().to_vec()));
        }
    }
    let mut visitor = Expected {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor
        .out
        .into_iter()
        .map(|(name, dtype, shape)| {
            let dtype = to_dtype(dtype).ok_or_else(|| {
                Error::options(format!(
                    "tensor {name} is of dtype {dtype:?}, which a checkpoint cannot hold"
                ))
            })?;
            Ok((name, dtype, shape))
        })
        .collect()
}

struct Load {
    path: Vec<String>,
    values: BTreeMap<String, TensorData>,
}

impl ModuleMapper for Load {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(data) = self.values.remove(&self.path.join(".")) else {
            return param;
        };
        let device = param.lazy_device();
        let dtype = param.val().dtype();
        let id = param.id;
        let mut tensor = Tensor::<D>::from_data(data, (&device, dtype));
        if tensor.dtype() != dtype {
            // Flex32 is stored as F32; the module keeps its own dtype.
            tensor = tensor.cast(dtype);
        }
        param.transform_for_load(tensor, id)
    }
}
