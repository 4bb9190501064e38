//! What burn's `Learner` needs to train [`Mlp`] on a [`Dataset`]: dataset items, a batcher,
//! the train and inference steps, and a renderer that prints nothing (burn's command-line
//! renderer prints every batch), so that standard output carries Keras's messages.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::MetricDefinition;
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use model_checkpoint_fit::{Dataset, Targets};

use crate::{Classifier, Error, Mlp};

/// One labelled sample.
#[derive(Clone, Debug)]
pub struct Sample {
    features: Vec<f32>,
    label: u32,
}

/// Samples batched for the `Learner`: features (`n × width`) and labels (`n`).
#[derive(Clone, Debug)]
pub struct LabelledBatch {
    /// The features.
    pub x: Tensor<2>,
    /// The labels.
    pub y: Tensor<1, Int>,
}

/// Stacks [`Sample`]s into a [`LabelledBatch`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SampleBatcher;

impl Batcher<Sample, LabelledBatch> for SampleBatcher {
    fn batch(&self, items: Vec<Sample>, device: &Device) -> LabelledBatch {
        let rows = items.len();
        let width = items.first().map_or(0, |s| s.features.len());
        let x: Vec<f32> = items
            .iter()
            .flat_map(|s| s.features.iter().copied())
            .collect();
        let y: Vec<i64> = items.iter().map(|s| i64::from(s.label)).collect();
        LabelledBatch {
            x: Tensor::from_data(TensorData::new(x, [rows, width]), device),
            y: Tensor::from_data(TensorData::new(y, [rows]), device),
        }
    }
}

/// A data loader over `data`'s samples, for the `Learner`: batches of `batch_size`,
/// shuffled each epoch from `seed` when given.
///
/// # Errors
///
/// [`Error::InvalidOptions`] for data with float targets or a zero batch size.
pub fn data_loader(
    data: &Dataset,
    batch_size: usize,
    seed: Option<u64>,
) -> Result<Arc<dyn DataLoader<LabelledBatch>>, Error> {
    if batch_size == 0 {
        return Err(Error::options("batch_size must be at least 1"));
    }
    let indices: Vec<usize> = (0..data.len()).collect();
    let batch = data.batch(&indices);
    let Targets::Labels(labels) = batch.targets else {
        return Err(Error::options(
            "the Learner trains classifiers: the data have float targets",
        ));
    };
    let samples = batch
        .features
        .chunks(batch.width.max(1))
        .zip(labels)
        .map(|(features, label)| Sample {
            features: features.to_vec(),
            label,
        })
        .collect();
    let builder = DataLoaderBuilder::new(SampleBatcher).batch_size(batch_size);
    let builder = match seed {
        Some(seed) => builder.shuffle(seed),
        None => builder,
    };
    Ok(builder.build(InMemDataset::new(samples)))
}

impl Mlp {
    fn classify(&self, batch: LabelledBatch) -> ClassificationOutput {
        let logits = self.forward(batch.x);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.y.clone());
        ClassificationOutput::new(loss, logits, batch.y)
    }
}

impl TrainStep for Mlp {
    type Input = LabelledBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: LabelledBatch) -> TrainOutput<ClassificationOutput> {
        let output = self.classify(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl InferenceStep for Mlp {
    type Input = LabelledBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: LabelledBatch) -> ClassificationOutput {
        self.classify(batch)
    }
}

/// A `Learner` renderer that prints nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;

impl MetricsRendererTraining for Quiet {
    fn update_train(&mut self, _: MetricState) {}
    fn update_valid(&mut self, _: MetricState) {}
}

impl MetricsRendererEvaluation for Quiet {
    fn update_test(&mut self, _: EvaluationName, _: MetricState) {}
}

impl TrainingProgressLogger for Quiet {
    fn start(&mut self, _: usize, _: usize, _: Option<usize>, _: Option<&str>) {}
    fn update_epoch(&mut self, _: usize) {}
    fn start_split(&mut self, _: &str, _: usize) {}
    fn update_split(&mut self, _: usize) {}
    fn end_split(&mut self) {}
    fn end(&mut self) {}
    fn log_event_training(&mut self, _: String) {}
}

impl EvaluationProgressLogger for Quiet {
    fn start_global_progress(&mut self, _: usize) {}
    fn start_test(&mut self, _: &str, _: usize) {}
    fn update_test_progress(&mut self, _: usize) {}
    fn end_test(&mut self) {}
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _: String) {}
}

impl MetricsRenderer for Quiet {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, _: MetricDefinition) {}
}
