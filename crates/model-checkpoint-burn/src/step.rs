//! burn's side of `fit`: the train and test steps of a classifier with its optimizer. The
//! loop, callbacks and exact resume are `model-checkpoint-fit`'s, shared with candle.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use model_checkpoint::TensorSource;
use model_checkpoint::{Checkpointable, NamedTensor, SnapshotFence, TrainingState};
use model_checkpoint_fit::{Batch, BatchLogs, Dataset, Step, Targets};

use crate::{Error, TrainingParts};

/// A model that maps a batch of samples (`n × features`) to logits (`n × classes`).
pub trait Classifier: Module {
    /// The forward pass.
    fn forward(&self, x: Tensor<2>) -> Tensor<2>;

    /// The number of features each sample must have. [`BurnStep`] checks data against it
    /// before the first forward pass: burn panics on a batch of the wrong width.
    fn input_width(&self) -> usize;
}

/// A classifier, its optimizer and learning rate, trained with sparse categorical
/// cross-entropy on logits and reporting accuracy (Keras's
/// `compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])`): what
/// `model_checkpoint_fit::Trainer` trains with burn.
///
/// ```
/// use burn::optim::AdamConfig;
/// use model_checkpoint_burn::{cpu_autodiff, BurnStep, Mlp};
/// use model_checkpoint_fit::{Dataset, FitOptions, Trainer};
///
/// let device = cpu_autodiff();
/// let data = Dataset::digits().scaled();
/// let step = BurnStep::new(Mlp::new(&[64, 32, 10], 0, &device)?, AdamConfig::new().init(), 1e-2, device);
/// let mut trainer = Trainer::new(step);
/// let history = trainer.fit(&data, &FitOptions::new(3).verbose(0), &mut [])?;
/// assert!(history.metric("accuracy")[2].is_some_and(|a| a > 0.8));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BurnStep<M: Module> {
    parts: TrainingParts<M>,
    learning_rate: f64,
    device: Device,
    loss: CrossEntropyLoss,
}

impl<M: Classifier> BurnStep<M> {
    /// `model` trained by `optimizer` at `learning_rate`, on `device` (an autodiff device
    /// to train: [`crate::cpu_autodiff`]).
    pub fn new(model: M, optimizer: ModuleOptimizer, learning_rate: f64, device: Device) -> Self {
        BurnStep {
            parts: TrainingParts::new(model, optimizer),
            learning_rate,
            loss: CrossEntropyLoss::new(None, &device),
            device,
        }
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.parts.model
    }

    /// The model and optimizer.
    pub fn parts(&self) -> &TrainingParts<M> {
        &self.parts
    }

    /// The learning rate (saved in full checkpoints and restored with them).
    pub fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    /// Sets the learning rate, for example after a resume (which restores the checkpoint's):
    /// from then on the new rate is used, and saved.
    pub fn set_learning_rate(&mut self, learning_rate: f64) {
        self.learning_rate = learning_rate;
    }

    /// The batch as burn tensors: features (`n × width`) and labels (`n`).
    fn tensors(&self, batch: &Batch) -> Result<(Tensor<2>, Tensor<1, Int>), Error> {
        let Targets::Labels(labels) = &batch.targets else {
            return Err(Error::options(
                "burn's step trains classifiers: the data have float targets",
            ));
        };
        let x = Tensor::<2>::from_data(
            TensorData::new(batch.features.clone(), [batch.rows, batch.width]),
            &self.device,
        );
        let labels: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch.rows]), &self.device);
        Ok((x, y))
    }

    /// The loss tensor and the batch's logs.
    fn run(&self, model: &M, batch: &Batch) -> Result<(Tensor<1>, BatchLogs), Error> {
        let (x, y) = self.tensors(batch)?;
        let logits = model.forward(x);
        let loss = self.loss.forward(logits.clone(), y.clone());
        let correct = logits
            .argmax(1)
            .reshape([batch.rows])
            .equal(y)
            .int()
            .sum()
            .into_scalar::<i64>();
        let value = loss.clone().into_scalar::<f32>();
        Ok((
            loss,
            BatchLogs {
                loss: f64::from(value),
                samples: batch.rows,
                sums: vec![("accuracy", correct as f64)],
            },
        ))
    }
}

impl<M: Classifier + 'static> Step for BurnStep<M> {
    fn metrics(&self) -> Vec<&'static str> {
        vec!["accuracy"]
    }

    fn check(&self, data: &Dataset) -> Result<(), model_checkpoint_fit::Error> {
        if data.is_empty() {
            return Ok(());
        }
        if data.classes() == 0 {
            return Err(Error::options(
                "burn's step trains classifiers: the data have float targets",
            )
            .into());
        }
        let width = self.parts.model.input_width();
        if data.width() != width {
            return Err(Error::options(format!(
                "the model takes {width} features per sample, but the data has {}",
                data.width()
            ))
            .into());
        }
        let (x, _) = self.tensors(&data.batch(&[0]))?;
        let outputs = self.parts.model.forward(x).dims()[1];
        if outputs < data.classes() {
            return Err(Error::options(format!(
                "the model gives {outputs} outputs per sample, but the data has {} classes",
                data.classes()
            ))
            .into());
        }
        Ok(())
    }

    fn train_step(
        &mut self,
        batch: &Batch,
        fence: &SnapshotFence,
    ) -> Result<BatchLogs, model_checkpoint_fit::Error> {
        let (loss, logs) = self.run(&self.parts.model, batch)?;
        let grads = GradientsParams::from_grads(loss.backward(), &self.parts.model);
        fence.wait();
        let model = self.parts.model.clone();
        self.parts.model = self.parts.optimizer.step(self.learning_rate, model, grads);
        Ok(logs)
    }

    fn test_step(&self, batch: &Batch) -> Result<BatchLogs, model_checkpoint_fit::Error> {
        let model = self.parts.model.valid();
        Ok(self.run(&model, batch)?.1)
    }
}

impl<M: Module + 'static> Checkpointable for BurnStep<M> {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        self.parts.weights()
    }

    fn training_state(&self) -> Result<TrainingState<'_>, model_checkpoint::Error> {
        training_state(&self.parts, self.learning_rate)
    }

    fn has_training_state(&self) -> Result<bool, model_checkpoint::Error> {
        self.parts.has_training_state()
    }

    fn restore_weights(
        &mut self,
        stored: &dyn TensorSource,
    ) -> Result<(), model_checkpoint::Error> {
        self.parts.restore_weights(stored)
    }

    fn restore_training_state(
        &mut self,
        tensors: &dyn TensorSource,
        document: &model_checkpoint::store::TrainingDocument,
    ) -> Result<(), model_checkpoint::Error> {
        let learning_rate = crate::optimizer::learning_rate(document, tensors.path())?;
        self.parts.restore_training_state(tensors, document)?;
        if let Some(rate) = learning_rate {
            self.learning_rate = rate;
        }
        Ok(())
    }

    /// A clone of the model and optimizer: burn's tensors are values (a step that finds
    /// one shared writes a new one), so the clone keeps this moment's weights and state
    /// while training goes on, and a background save takes them on its writer thread,
    /// optimizer record and all.
    fn frozen(&self) -> Option<Box<dyn Checkpointable + Send>> {
        Some(Box::new(Frozen {
            parts: self.parts.clone(),
            learning_rate: self.learning_rate,
        }))
    }
}

/// A [`BurnStep`]'s model and optimizer as they were at a save (see
/// [`Checkpointable::frozen`]).
struct Frozen<M: Module> {
    parts: TrainingParts<M>,
    learning_rate: f64,
}

impl<M: Module> Checkpointable for Frozen<M> {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        self.parts.weights()
    }

    fn training_state(&self) -> Result<TrainingState<'_>, model_checkpoint::Error> {
        training_state(&self.parts, self.learning_rate)
    }

    fn has_training_state(&self) -> Result<bool, model_checkpoint::Error> {
        self.parts.has_training_state()
    }
}

/// The training state of `parts` stepped at `learning_rate`: the optimizer's, with the rate
/// recorded in its section.
fn training_state<M: Module>(
    parts: &TrainingParts<M>,
    learning_rate: f64,
) -> Result<TrainingState<'_>, model_checkpoint::Error> {
    let mut state = parts.training_state()?;
    crate::optimizer::set_learning_rate(&mut state.document, learning_rate)?;
    Ok(state)
}
