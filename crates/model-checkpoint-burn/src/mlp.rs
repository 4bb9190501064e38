//! The MLP `ckpt train` trains, in burn: dense layers with ReLU between them, logits out,
//! with the same tensor names, layouts and initial values as candle's `Model::mlp`, so that
//! the two frameworks' checkpoints load into each other.

use std::collections::BTreeMap;

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::nn::{Initializer, Linear, LinearConfig, LinearLayout};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use model_checkpoint_fit::TrainRng;

use crate::{Classifier, Error};

/// The most layers [`Mlp::new`] builds (as candle's `Model::mlp`).
pub const MAX_LAYERS: usize = 256;

/// A multi-layer perceptron. Its layers are named `dense_0`, `dense_1`, … (Keras's and
/// candle's names), and its weights are kept `[out, in]` in checkpoints (candle's and
/// PyTorch's layout): `dense_0.weight`, `dense_0.bias`, ….
///
/// ```
/// use model_checkpoint_burn::{cpu, Classifier, Mlp};
///
/// let mlp = Mlp::new(&[4, 8, 3], 0, &cpu())?;
/// let logits = mlp.forward(burn::tensor::Tensor::zeros([2, 4], &cpu()));
/// assert_eq!(logits.dims(), [2, 3]);
/// # Ok::<(), model_checkpoint_burn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    /// An MLP with layer sizes `sizes` (inputs first, classes last) on `device`,
    /// initialised as candle's `Model::mlp` initialises it from `seed` (Glorot-uniform
    /// weights drawn in name order, zero biases): the same seed gives the same weights in
    /// both frameworks.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for fewer than two sizes, a zero size, or more than
    /// [`MAX_LAYERS`] layers.
    pub fn new(sizes: &[usize], seed: u64, device: &Device) -> Result<Self, Error> {
        if sizes.len() < 2 || sizes.contains(&0) {
            return Err(Error::options(format!(
                "an MLP needs at least two non-zero layer sizes, got {sizes:?}"
            )));
        }
        if sizes.len() - 1 > MAX_LAYERS {
            return Err(Error::options(format!(
                "an MLP of {} layers is deeper than the {MAX_LAYERS} this builder makes",
                sizes.len() - 1
            )));
        }
        let layers = sizes
            .windows(2)
            .map(|w| {
                LinearConfig::new(w[0], w[1])
                    .with_layout(LinearLayout::Col)
                    .with_initializer(Initializer::Zeros)
                    .init(device)
            })
            .collect();
        let mlp = Mlp { layers };
        Ok(mlp.initialised(seed))
    }

    /// The layers.
    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// Draws the weights in candle's order: by name, sorted as strings.
    fn initialised(self, seed: u64) -> Self {
        let mut rng = TrainRng::new(seed);
        let mut shapes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let [d_in, d_out] = layer.weight.val().dims();
            shapes.insert(format!("dense_{i}.weight"), vec![d_out, d_in]);
            shapes.insert(format!("dense_{i}.bias"), vec![d_out]);
        }
        let mut values = BTreeMap::new();
        for (name, shape) in shapes {
            let data = if let [fan_out, fan_in] = shape[..] {
                let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                (0..fan_out * fan_in)
                    .map(|_| (rng.unit_f32() * 2.0 - 1.0) * limit)
                    .collect()
            } else {
                vec![0.0f32; shape.iter().product()]
            };
            values.insert(name, TensorData::new(data, shape));
        }
        crate::names::load_values(self, values)
    }
}

impl Classifier for Mlp {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i + 1 < self.layers.len() {
                x = relu(x);
            }
        }
        x
    }

    fn input_width(&self) -> usize {
        // Held as `[in, out]`, as `initialised` reads it.
        self.layers
            .first()
            .map_or(0, |layer| layer.weight.val().dims()[0])
    }
}

/// `Module` by hand, only to name the layers `dense_{i}` rather than a `Vec`'s `0`, `1`, …
fn layer_name(i: usize) -> String {
    format!("dense_{i}")
}

const LAYER: &str = "Struct:Linear";

impl Module for Mlp {
    fn collect_devices(&self, devices: Devices) -> Devices {
        self.layers.collect_devices(devices)
    }

    fn fork(self, device: &Device) -> Self {
        Mlp {
            layers: self.layers.fork(device),
        }
    }

    fn to_device(self, device: &Device) -> Self {
        Mlp {
            layers: self.layers.to_device(device),
        }
    }

    fn train(self) -> Self {
        Mlp {
            layers: self.layers.train(),
        }
    }

    fn valid(&self) -> Self {
        Mlp {
            layers: self.layers.valid(),
        }
    }

    fn materialize(self) -> Self {
        Mlp {
            layers: self.layers.materialize(),
        }
    }

    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        for (i, layer) in self.layers.iter().enumerate() {
            let name = layer_name(i);
            visitor.enter_module(&name, LAYER);
            layer.visit(visitor);
            visitor.exit_module(&name, LAYER);
        }
    }

    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        let layers = self
            .layers
            .into_iter()
            .enumerate()
            .map(|(i, layer)| {
                let name = layer_name(i);
                mapper.enter_module(&name, LAYER);
                let layer = layer.map(mapper);
                mapper.exit_module(&name, LAYER);
                layer
            })
            .collect();
        Mlp { layers }
    }
}

impl ModuleDisplayDefault for Mlp {
    fn content(&self, content: Content) -> Option<Content> {
        self.layers
            .iter()
            .enumerate()
            .fold(content, |acc, (i, layer)| acc.add(&layer_name(i), layer))
            .set_top_level_type("Mlp")
            .optional()
    }

    fn num_params(&self) -> usize {
        Module::num_params(self)
    }
}

impl ModuleDisplay for Mlp {}

impl std::fmt::Display for Mlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&ModuleDisplay::format(self, Default::default()))
    }
}
