//! A candle model whose variables live in a `VarMap`: forward pass, named variables, seeded
//! Keras-style initialisation, and loading weights from checkpoint files.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use model_checkpoint::load::{LoadOptions, LoadReport};
use model_checkpoint::restore::Stored;
use model_checkpoint::store::{CheckpointFile, Verify};
use model_checkpoint::{Checkpointable, NamedTensor, TensorSource};

use crate::adapter::{load_vars, CandleTensor};
use crate::Error;
use model_checkpoint_fit::TrainRng;

/// The most parameters [`Model::mlp`] builds: 2^30 (4 GiB of `f32`; Adam keeps two more
/// copies, and a background save one more). `ckpt train` allows less (2^28).
pub const MAX_PARAMETERS: usize = 1 << 30;

/// The most layers [`Model::mlp`] builds.
pub const MAX_LAYERS: usize = 256;

/// A model: a candle module and the `VarMap` holding its variables.
pub struct Model {
    varmap: VarMap,
    module: Box<dyn Module>,
    device: Device,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let vars: Vec<(String, Vec<usize>)> = self
            .named_vars()
            .into_iter()
            .map(|(n, v)| (n, v.dims().to_vec()))
            .collect();
        f.debug_struct("Model")
            .field("vars", &vars)
            .finish_non_exhaustive()
    }
}

/// A multi-layer perceptron: dense layers with ReLU between them, logits out.
struct Mlp {
    layers: Vec<candle_nn::Linear>,
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = xs.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

impl Model {
    /// Wraps a module built from `varmap` (for example with `VarBuilder::from_varmap`).
    pub fn new(varmap: VarMap, module: impl Module + 'static, device: Device) -> Self {
        Model {
            varmap,
            module: Box::new(module),
            device,
        }
    }

    /// An MLP with layer sizes `sizes` (inputs first, classes last) on the CPU, initialised
    /// as Keras initialises `Dense` layers (Glorot-uniform kernels, zero biases) from `seed`.
    /// Variables are named `dense_0.weight`, `dense_0.bias`, `dense_1.weight` …
    ///
    /// ```
    /// use model_checkpoint_candle::Model;
    ///
    /// let model = Model::mlp(&[64, 32, 10], 42)?;
    /// let names: Vec<String> = model.named_vars().into_iter().map(|(n, _)| n).collect();
    /// assert_eq!(names, ["dense_0.bias", "dense_0.weight", "dense_1.bias", "dense_1.weight"]);
    /// # Ok::<(), model_checkpoint_candle::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for fewer than two sizes or a zero size.
    pub fn mlp(sizes: &[usize], seed: u64) -> Result<Self, Error> {
        if sizes.len() < 2 || sizes.contains(&0) {
            return Err(Error::options(format!(
                "an MLP needs at least two non-zero layer sizes, got {sizes:?}"
            )));
        }
        // candle walks the graph recursively in backprop: a very deep model overflows the
        // stack (an abort), so depth has a limit as size does.
        if sizes.len() - 1 > MAX_LAYERS {
            return Err(Error::options(format!(
                "an MLP of {} layers is deeper than the {MAX_LAYERS} this builder makes",
                sizes.len() - 1
            )));
        }
        // Checked against a limit before candle allocates anything (its allocations abort on
        // failure).
        if Self::mlp_parameters(sizes).is_none_or(|n| n > MAX_PARAMETERS) {
            return Err(Error::options(format!(
                "an MLP of sizes {sizes:?} has more than {MAX_PARAMETERS} parameters, the most this builder makes"
            )));
        }
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("dense_{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let model = Model::new(varmap, Mlp { layers }, device);
        model.initialise(seed)?;
        Ok(model)
    }

    /// The number of parameters (weights and biases) of an MLP of these layer sizes, or `None`
    /// when it does not fit a `usize`.
    pub fn mlp_parameters(sizes: &[usize]) -> Option<usize> {
        sizes.windows(2).try_fold(0usize, |n, w| {
            w[0].checked_mul(w[1])
                .and_then(|m| m.checked_add(w[1]))
                .and_then(|m| n.checked_add(m))
        })
    }

    /// Re-initialises every variable from `seed`, in name order: 2-D weights Glorot-uniform
    /// (Keras's `Dense` default), everything else zero. candle's own initialisers draw from
    /// a generator that cannot be seeded, so runs would not repeat.
    ///
    /// # Errors
    ///
    /// candle's failure to set a variable.
    pub fn initialise(&self, seed: u64) -> Result<(), Error> {
        let mut rng = TrainRng::new(seed);
        for (_, var) in self.named_vars() {
            let dims = var.dims().to_vec();
            let count: usize = dims.iter().product();
            let values: Vec<f32> = if let [fan_out, fan_in] = dims[..] {
                let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                (0..count)
                    .map(|_| (rng.unit_f32() * 2.0 - 1.0) * limit)
                    .collect()
            } else {
                vec![0.0; count]
            };
            let tensor = Tensor::from_vec(values, dims, &self.device)?.to_dtype(var.dtype())?;
            var.set(&tensor)?;
        }
        Ok(())
    }

    /// The forward pass.
    ///
    /// # Errors
    ///
    /// candle's failure (a shape mismatch, say).
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, Error> {
        Ok(self.module.forward(xs)?)
    }

    /// The variables, sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self
            .varmap
            .data()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// The `VarMap`.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Loads weights saved by `ModelCheckpoint` (weights-only or full) or any safetensors
    /// file with the same names, verifying the checksum of every tensor as it is read. All or
    /// nothing: on error no variable has changed. Strict: a tensor the model has and the file
    /// lacks, one the file has and the model lacks, or one of another dtype or shape, is an
    /// error naming every such tensor at once (see [`Model::load_weights_with`] for a load
    /// that is not). A file without checksums (from another tool) loads with a warning that
    /// nothing was verified.
    ///
    /// # Errors
    ///
    /// [`Error::Checkpoint`] for an unreadable or corrupt file, or
    /// [`model_checkpoint::Error::LoadMismatch`] listing every tensor that does not match.
    pub fn load_weights(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        self.load_weights_with(path, LoadOptions::default())
            .map(drop)
    }

    /// Like [`Model::load_weights`], as `options` say: not strict (PyTorch's
    /// `strict=False`), the variables the file matches are loaded and the report says what
    /// was missing, unexpected or mismatched; with `cast`, float tensors of another float
    /// dtype are converted to the variable's.
    ///
    /// ```
    /// use model_checkpoint::load::LoadOptions;
    /// use model_checkpoint::store::{self, Kind, SaveOptions};
    /// use model_checkpoint::Checkpointable;
    /// use model_checkpoint_candle::Model;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("small.safetensors");
    /// let small = Model::mlp(&[4, 3], 0)?;
    /// store::save(&path, Kind::Weights, &small.weights()?, &Default::default(), &SaveOptions::default())?;
    /// // A deeper model: its first layer loads, the rest is reported.
    /// let deeper = Model::mlp(&[4, 3, 2], 1)?;
    /// assert!(deeper.load_weights(&path).is_err());
    /// let report = deeper.load_weights_with(&path, LoadOptions::default().strict(false))?;
    /// assert_eq!(report.missing.len(), 2);
    /// assert!(report.mismatched.is_empty() && report.unexpected.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Model::load_weights`] (mismatches only when strict).
    pub fn load_weights_with(
        &self,
        path: impl AsRef<Path>,
        options: LoadOptions,
    ) -> Result<LoadReport, Error> {
        let file = CheckpointFile::open(path.as_ref(), Verify::HeaderOnly)?;
        self.load_weights_from(&Stored::weights(&file), options)
    }

    /// Like [`Model::load_weights_with`], from any [`TensorSource`]: a file already open
    /// (from any [`model_checkpoint::store::Storage`]) as
    /// `model_checkpoint::restore::Stored::weights(&file)`, or a sharded checkpoint's weights
    /// as `Stored::sharded_weights(&checkpoint)` (`None` where it holds none).
    ///
    /// # Errors
    ///
    /// As [`Model::load_weights_with`].
    pub fn load_weights_from(
        &self,
        source: &dyn TensorSource,
        options: LoadOptions,
    ) -> Result<LoadReport, Error> {
        if !source.verified() {
            log::warn!(
                target: "model_checkpoint",
                "{} has no checksums (not written by model-checkpoint): loaded without verification",
                source.path().display()
            );
        }
        load_vars(source, &self.named_vars(), options)
    }
}

impl Checkpointable for Model {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        self.named_vars()
            .into_iter()
            .map(|(name, var)| Ok(NamedTensor::new(name, CandleTensor::new(var.as_tensor())?)))
            .collect()
    }

    /// Loads every variable from the checkpoint, all or nothing, with the checks of
    /// [`Model::load_weights`].
    fn restore_weights(
        &mut self,
        stored: &dyn model_checkpoint::TensorSource,
    ) -> Result<(), model_checkpoint::Error> {
        self.load_weights_from(stored, LoadOptions::default())?;
        Ok(())
    }
}

impl candle_core::Module for Model {
    /// The model's forward pass, so that a `Model` goes wherever candle takes a `Module`.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.module.forward(xs)
    }
}
