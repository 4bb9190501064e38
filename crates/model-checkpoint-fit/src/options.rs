//! The options of one `fit` call, with Keras's names and defaults.

use crate::state::FitRecord;
use crate::Dataset;

/// Options of one `fit` call, with Keras's names and defaults.
///
/// ```
/// use model_checkpoint_fit::FitOptions;
///
/// let options = FitOptions::new(10).batch_size(64).validation_split(0.2).verbose(0);
/// assert_eq!(options.epochs, 10);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FitOptions<'a> {
    /// The epoch to stop before (a total, not a count: resuming at epoch 3 with `epochs` 10
    /// runs epochs 3–9, as in Keras).
    pub epochs: usize,
    /// Samples per training batch. Default: 32.
    pub batch_size: usize,
    /// Shuffle the training samples every epoch. Default: true.
    pub shuffle: bool,
    /// Hold out this last fraction of the training data for validation. Default: none.
    pub validation_split: Option<f64>,
    /// Validate on this data instead. Default: none.
    pub validation_data: Option<&'a Dataset>,
    /// The epoch to start at when not resuming. Default: 0.
    pub initial_epoch: usize,
    /// 0 silent, 1 progress bar, 2 one line per epoch. Default: 1.
    pub verbose: u8,
    /// Seed of the shuffling generator, used when the trainer has none yet. Default: 0.
    pub seed: u64,
}

impl<'a> FitOptions<'a> {
    /// Options for `epochs` epochs, the rest Keras's defaults.
    pub fn new(epochs: usize) -> Self {
        FitOptions {
            epochs,
            batch_size: 32,
            shuffle: true,
            validation_split: None,
            validation_data: None,
            initial_epoch: 0,
            verbose: 1,
            seed: 0,
        }
    }
    /// Sets [`FitOptions::batch_size`].
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }
    /// Sets [`FitOptions::shuffle`].
    pub fn shuffle(mut self, yes: bool) -> Self {
        self.shuffle = yes;
        self
    }
    /// Sets [`FitOptions::validation_split`].
    pub fn validation_split(mut self, fraction: f64) -> Self {
        self.validation_split = Some(fraction);
        self
    }
    /// Sets [`FitOptions::validation_data`].
    pub fn validation_data(mut self, data: &'a Dataset) -> Self {
        self.validation_data = Some(data);
        self
    }
    /// Sets [`FitOptions::initial_epoch`].
    pub fn initial_epoch(mut self, epoch: usize) -> Self {
        self.initial_epoch = epoch;
        self
    }
    /// Sets [`FitOptions::verbose`].
    pub fn verbose(mut self, verbose: u8) -> Self {
        self.verbose = verbose;
        self
    }
    /// Sets [`FitOptions::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub(crate) fn record(&self) -> FitRecord {
        FitRecord {
            epochs: self.epochs,
            batch_size: self.batch_size,
            shuffle: self.shuffle,
            validation_split: self.validation_split,
            seed: self.seed,
        }
    }
}
