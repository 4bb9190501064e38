//! What a full checkpoint records about training, and what `fit` resumes from.

use model_checkpoint::{Checkpointable, NamedTensor, TrainingState};
use serde::{Deserialize, Serialize};

use crate::history::History;
use crate::rng::RngState;
use crate::running::Running;

/// The fit options that must match for a resume to be exact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct FitRecord {
    pub epochs: usize,
    pub batch_size: usize,
    pub shuffle: bool,
    pub validation_split: Option<f64>,
    pub seed: u64,
}

impl FitRecord {
    /// A resume is exact only with the same batch size, shuffling, split and seed.
    pub(crate) fn check_resumable(&self, now: &FitRecord) -> Result<(), crate::Error> {
        let mut diffs = Vec::new();
        if self.batch_size != now.batch_size {
            diffs.push(format!(
                "batch size {} (now {})",
                self.batch_size, now.batch_size
            ));
        }
        if self.shuffle != now.shuffle {
            diffs.push(format!("shuffle {} (now {})", self.shuffle, now.shuffle));
        }
        if self.validation_split != now.validation_split {
            let shown =
                |split: Option<f64>| split.map_or_else(|| "none".to_owned(), |s| s.to_string());
            diffs.push(format!(
                "validation split {} (now {})",
                shown(self.validation_split),
                shown(now.validation_split)
            ));
        }
        if self.seed != now.seed {
            diffs.push(format!("seed {} (now {})", self.seed, now.seed));
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(crate::Error::options(format!(
                "the checkpoint was trained with {}; resume with the same options",
                diffs.join(", ")
            )))
        }
    }
}

/// Where training stands: enough to continue exactly where it was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct FitState {
    /// The options of the run.
    pub options: FitRecord,
    /// The epoch in progress, or the last one completed.
    pub epoch: usize,
    /// Whether `epoch` has completed (its `on_epoch_end` was reached).
    pub epoch_complete: bool,
    /// Training batches done in `epoch`.
    pub batches_done: usize,
    /// Optimizer steps since training began.
    pub global_step: u64,
    /// The generator before `epoch`'s shuffle, to rebuild its batch order.
    pub rng_epoch_start: RngState,
    /// The generator now.
    pub rng: RngState,
    /// The running metrics of `epoch` so far.
    pub running: Running,
    /// Every completed epoch's logs.
    pub history: History,
}

/// The trainer as `ModelCheckpoint` sees it during a hook: the framework's weights and
/// optimizer state, plus the fit state for full checkpoints.
pub(crate) struct TrainingView<'a> {
    pub step: &'a dyn Checkpointable,
    pub state: &'a FitState,
}

impl Checkpointable for TrainingView<'_> {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        self.step.weights()
    }

    fn training_state(&self) -> Result<TrainingState<'_>, model_checkpoint::Error> {
        with_fit(self.step.training_state()?, self.state)
    }

    /// Always: the fit state is a section of its own.
    fn has_training_state(&self) -> Result<bool, model_checkpoint::Error> {
        Ok(true)
    }

    fn shard_layout(&self) -> std::collections::BTreeMap<String, model_checkpoint::Placement> {
        self.step.shard_layout()
    }

    /// The step's frozen copy, where it makes one, with the fit state as it is now.
    fn frozen(&self) -> Option<Box<dyn Checkpointable + Send>> {
        let step = self.step.frozen()?;
        Some(Box::new(FrozenView {
            step,
            state: self.state.clone(),
        }))
    }
}

/// A [`TrainingView`] frozen for a background save (see [`Checkpointable::frozen`]).
struct FrozenView {
    step: Box<dyn Checkpointable + Send>,
    state: FitState,
}

impl Checkpointable for FrozenView {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        self.step.weights()
    }

    fn training_state(&self) -> Result<TrainingState<'_>, model_checkpoint::Error> {
        with_fit(self.step.training_state()?, &self.state)
    }

    /// Always, as [`TrainingView`]'s.
    fn has_training_state(&self) -> Result<bool, model_checkpoint::Error> {
        Ok(true)
    }

    fn shard_layout(&self) -> std::collections::BTreeMap<String, model_checkpoint::Placement> {
        self.step.shard_layout()
    }
}

/// The step's training state with the fit state's section.
fn with_fit<'a>(
    mut state: TrainingState<'a>,
    fit: &FitState,
) -> Result<TrainingState<'a>, model_checkpoint::Error> {
    state.document.fit = Some(
        serde_json::to_value(fit).map_err(|e| model_checkpoint::Error::Framework(Box::new(e)))?,
    );
    Ok(state)
}
