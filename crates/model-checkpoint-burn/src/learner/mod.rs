//! Keras's `ModelCheckpoint` inside burn's `Learner`.
//!
//! burn's hooks split checkpointing in two: a `CheckpointingStrategy` that sees the epoch's
//! metrics and says "save", and three `Checkpointer`s that each get one record (model,
//! optimizer, scheduler) and write it to its own file, with no joint commit. Here the
//! strategy hands the epoch's metrics over as Keras's logs and always asks for the records;
//! the three checkpointers only collect them; when the last of the three arrives, the
//! epoch's model, optimizer and scheduler state go to `ModelCheckpoint` as one
//! [`Checkpointable`], and `ModelCheckpoint` decides as Keras does (monitor, mode, best only,
//! `initial_value_threshold`, the template, retention) and writes one verified file.
//!
//! What burn's hooks cannot give: they run once per epoch, after validation, so a callback
//! that acts per batch (`SaveFreq::Batches`, every N steps) is refused here (per-batch saves
//! need a loop that calls the callback per batch: `model_checkpoint_fit::Trainer` with [`crate::BurnStep`], or a
//! hand-written loop with [`crate::TrainingParts`]); a callback's `StopTraining` cannot
//! stop the `Learner`; and burn reports accuracy in percent, which is divided by 100 here
//! to log Keras's fraction.

mod model;

pub use model::{data_loader, LabelledBatch, Quiet, Sample, SampleBatcher};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use burn::module::Module;
use burn::optim::lr_scheduler::LrSchedulerRecord;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::store::ModuleRecord;
use burn::train::checkpoint::{
    Checkpointer, CheckpointerError, CheckpointingAction, CheckpointingStrategy,
};
use burn::train::metric::store::{Aggregate, EventStoreClient, Split};
use burn::train::{LearnerModel, SupervisedTraining};
use model_checkpoint::restore::restore_latest_in;
use model_checkpoint::store::{Storage, TrainingDocument};
use model_checkpoint::{
    Callback, Checkpointable, Context, HostTensor, Logs, ModelCheckpoint, NamedTensor,
    TrainingState,
};
use serde::{Deserialize, Serialize};

use crate::names::host_data;
use crate::{optimizer, Error, TrainingParts};

/// burn's metric names and Keras's, with the factor that turns one into the other.
const METRICS: [(&str, &str, f64); 2] = [("Loss", "loss", 1.0), ("Accuracy", "accuracy", 0.01)];

/// `ModelCheckpoint` as burn's `Learner` checkpointing: hand it to
/// [`LearnerCheckpoint::install`] (or its parts to `with_checkpointing_strategy` and
/// `with_custom_checkpointers`), and register `LossMetric` (and `AccuracyMetric`, to
/// monitor accuracy) as numeric metrics. Epochs are Keras's: burn's epoch 1 is Keras's
/// epoch 0, so `{epoch}` in a template is burn's epoch number.
///
/// ```no_run
/// use burn::train::metric::LossMetric;
/// use burn::train::SupervisedTraining;
/// use model_checkpoint::ModelCheckpoint;
/// use model_checkpoint_burn::{data_loader, LearnerCheckpoint, Mlp, Quiet};
/// use model_checkpoint_fit::Dataset;
///
/// let (train, valid) = Dataset::digits().scaled().split_last(0.2)?;
/// let checkpoint = LearnerCheckpoint::new(
///     ModelCheckpoint::new("runs/best.safetensors").save_best_only(true).verbose(1),
/// )?;
/// let training: SupervisedTraining<Mlp> =
///     SupervisedTraining::new("runs/burn", data_loader(&train, 32, Some(0))?, data_loader(&valid, 64, None)?)
///         .metrics((LossMetric::new(),))
///         .renderer(Box::new(Quiet));
/// let training = checkpoint.install(training)?;
/// // training.launch(learner) …; then checkpoint.with_callback(|cb| cb.best()) is the best val_loss.
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct LearnerCheckpoint {
    shared: Arc<Mutex<Shared>>,
}

struct Shared {
    callback: ModelCheckpoint,
    started: bool,
    /// Per burn epoch: its logs, then the records as they arrive.
    pending: BTreeMap<usize, Pending>,
    /// The state a resume restored, handed to burn when it asks for that epoch.
    resumed: Option<(usize, Records)>,
    /// Whether [`LearnerCheckpoint::install`] was called: one callback follows one
    /// training, so a second install is refused.
    installed: bool,
}

#[derive(Default)]
struct Pending {
    logs: Logs,
    model: Option<ModuleRecord>,
    optimizer: Option<OptimizerRecord>,
    scheduler: Option<LrSchedulerRecord>,
}

struct Records {
    optimizer: ModuleOptimizer,
    scheduler: LrSchedulerRecord,
}

impl LearnerCheckpoint {
    /// Wraps `callback`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for a callback that acts per batch (`save_freq` in
    /// batches, every N steps or seconds, a save on a signal): burn's hooks run once per
    /// epoch, so it would never save.
    pub fn new(callback: ModelCheckpoint) -> Result<Self, Error> {
        if callback.needs_batch_hooks() {
            return Err(Error::options(
                "burn's Learner checkpoints once per epoch: save_freq in batches, every_n_steps, every (seconds) and save_on_interrupt need a loop that calls the callback per batch (fit with BurnStep, or your own)",
            ));
        }
        Ok(LearnerCheckpoint {
            shared: Arc::new(Mutex::new(Shared {
                callback,
                started: false,
                pending: BTreeMap::new(),
                resumed: None,
                installed: false,
            })),
        })
    }

    /// `training` with this checkpointing: the strategy and the three checkpointers.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] when this `LearnerCheckpoint` (or a clone of it) is
    /// already installed: its callback follows one training's epochs and best value, and a
    /// second training would silently mix into them. Make one `LearnerCheckpoint` per
    /// `Learner`.
    pub fn install<M: LearnerModel>(
        &self,
        training: SupervisedTraining<M>,
    ) -> Result<SupervisedTraining<M>, Error> {
        {
            let mut shared = self.lock();
            if shared.installed {
                return Err(Error::options(format!(
                    "this LearnerCheckpoint ({}) is already installed in a training; make one LearnerCheckpoint per Learner",
                    shared.callback.state_key().unwrap_or_default()
                )));
            }
            shared.installed = true;
        }
        Ok(training
            .with_checkpointing_strategy(self.strategy())
            .with_custom_checkpointers(
                Collect::<ModuleRecord>::new(self),
                Collect::<OptimizerRecord>::new(self),
                Collect::<LrSchedulerRecord>::new(self),
            ))
    }

    /// The `CheckpointingStrategy` half.
    pub fn strategy(&self) -> impl CheckpointingStrategy + 'static {
        Strategy {
            shared: self.shared.clone(),
        }
    }

    /// Calls `f` with the callback, to read its best value or options after training.
    pub fn with_callback<T>(&self, f: impl FnOnce(&ModelCheckpoint) -> T) -> T {
        f(&self.lock().callback)
    }

    /// A poisoned lock only means a save panicked; the callback itself is consistent.
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Restores `model` and `optimizer` from the newest full checkpoint in `dir` of
    /// `storage` (checksums verified), and the callback's state (its best value, counters
    /// and run id), so that a `Learner` built from them continues where the checkpoint was
    /// taken: build the `Learner` from the returned model and optimizer, pass the returned
    /// epoch to `SupervisedTraining::checkpoint`, and burn resumes at the next epoch (it asks
    /// these checkpointers for that epoch's records, which are the state restored here).
    /// burn's data loader does not save its shuffling generator: a resumed `Learner` repeats
    /// a straight run's batches only without shuffling (`fit` with [`crate::BurnStep`]
    /// resumes exactly either way).
    ///
    /// # Errors
    ///
    /// The core's restore errors ([`model_checkpoint::Error::NoCheckpoint`], a corrupt
    /// file, a mismatched tensor, a state not written through a `Learner`).
    pub fn resume<M: Module>(
        &self,
        storage: &dyn Storage,
        dir: &model_checkpoint::store::Name,
        model: M,
        optimizer: ModuleOptimizer,
    ) -> Result<(M, ModuleOptimizer, usize), Error> {
        let mut parts = TrainingParts::new(model, optimizer);
        let mut shared = self.lock();
        let restored = restore_latest_in(storage, dir, &mut parts, &mut [&mut shared.callback])?;
        let bad = |reason: String| {
            Error::Checkpoint(model_checkpoint::Error::BadTrainingState {
                path: restored.path.clone(),
                reason,
            })
        };
        let section: LearnerSection = restored
            .document
            .learner
            .clone()
            .ok_or_else(|| bad("not written through a Learner: no learner epoch".into()))
            .and_then(|v| {
                serde_json::from_value(v).map_err(|e| bad(format!("learner state malformed: {e}")))
            })?;
        let epoch = section.epoch;
        // burn adds one to it unchecked.
        let epoch = usize::try_from(epoch)
            .ok()
            .filter(|&e| e as u64 <= model_checkpoint::store::MAX_COUNTER)
            .ok_or_else(|| {
                Error::Checkpoint(model_checkpoint::Error::BadTrainingState {
                    path: restored.path.clone(),
                    reason: format!("learner epoch {epoch} is out of range"),
                })
            })?;
        let scheduler = scheduler_record(&section.scheduler, &restored.path)?;
        let records = Records {
            optimizer: parts.optimizer.clone(),
            scheduler,
        };
        shared.resumed = Some((epoch, records));
        shared.started = true;
        Ok((parts.model, parts.optimizer, epoch))
    }
}

struct Strategy {
    shared: Arc<Mutex<Shared>>,
}

impl CheckpointingStrategy for Strategy {
    fn checkpointing(
        &mut self,
        epoch: usize,
        store: &EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        let mut logs = Logs::new();
        for (split, prefix) in [(Split::Train, ""), (Split::Valid, "val_")] {
            for (burn_name, keras_name, factor) in METRICS {
                if let Some(v) = store.find_metric(burn_name, epoch, Aggregate::Mean, &split) {
                    logs.insert(format!("{prefix}{keras_name}"), v * factor);
                }
            }
        }
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.pending.entry(epoch).or_default().logs = logs;
        // Always ask for the records: ModelCheckpoint decides, with Keras's rules.
        vec![CheckpointingAction::Save]
    }
}

/// One of burn's three records, collected for the joint save.
struct Collect<R> {
    shared: Arc<Mutex<Shared>>,
    _record: std::marker::PhantomData<fn() -> R>,
}

impl<R> Collect<R> {
    fn new(checkpoint: &LearnerCheckpoint) -> Self {
        Collect {
            shared: checkpoint.shared.clone(),
            _record: std::marker::PhantomData,
        }
    }

    /// Files the record, and saves the epoch once all three are in.
    fn file(&self, epoch: usize, put: impl FnOnce(&mut Pending)) -> Result<(), CheckpointerError> {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let pending = shared.pending.entry(epoch).or_default();
        put(pending);
        if pending.model.is_none() || pending.optimizer.is_none() || pending.scheduler.is_none() {
            return Ok(());
        }
        let Some(pending) = shared.pending.remove(&epoch) else {
            return Ok(());
        };
        save(&mut shared, epoch, pending).map_err(|e| CheckpointerError::Unknown(e.to_string()))
    }

    fn resumed<T>(
        &self,
        epoch: usize,
        f: impl FnOnce(&Records) -> T,
    ) -> Result<T, CheckpointerError> {
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        match &shared.resumed {
            Some((e, records)) if *e == epoch => Ok(f(records)),
            _ => Err(CheckpointerError::Unknown(format!(
                "no checkpoint of epoch {epoch} was restored: call LearnerCheckpoint::resume and pass the epoch it returns to checkpoint()"
            ))),
        }
    }
}

impl Checkpointer<ModuleRecord> for Collect<ModuleRecord> {
    fn save(&self, epoch: usize, record: ModuleRecord) -> Result<(), CheckpointerError> {
        self.file(epoch, |p| p.model = Some(record))
    }
    fn delete(&self, _: usize) -> Result<(), CheckpointerError> {
        Ok(()) // retention is ModelCheckpoint's
    }
    /// The model `resume` restored is the `Learner`'s already: an empty record that changes
    /// nothing. (burn 0.22.1 cannot apply a `LinearLayout::Col` model's own record back: it
    /// checks the saved `[out, in]` shape against the in-memory `[in, out]` one.)
    fn restore(&self, epoch: usize) -> Result<ModuleRecord, CheckpointerError> {
        self.resumed(epoch, |_| ())?;
        let empty = burn_pack::Writer::new(Vec::new())
            .into_bytes()
            .map_err(|e| CheckpointerError::Unknown(e.to_string()))?;
        Ok(ModuleRecord::from_bytes(empty)
            .map_err(CheckpointerError::Record)?
            .allow_partial(true))
    }
}

impl Checkpointer<OptimizerRecord> for Collect<OptimizerRecord> {
    fn save(&self, epoch: usize, record: OptimizerRecord) -> Result<(), CheckpointerError> {
        self.file(epoch, |p| p.optimizer = Some(record))
    }
    fn delete(&self, _: usize) -> Result<(), CheckpointerError> {
        Ok(())
    }
    fn restore(&self, epoch: usize) -> Result<OptimizerRecord, CheckpointerError> {
        self.resumed(epoch, |r| r.optimizer.to_record())
    }
}

impl Checkpointer<LrSchedulerRecord> for Collect<LrSchedulerRecord> {
    fn save(&self, epoch: usize, record: LrSchedulerRecord) -> Result<(), CheckpointerError> {
        self.file(epoch, |p| p.scheduler = Some(record))
    }
    fn delete(&self, _: usize) -> Result<(), CheckpointerError> {
        Ok(())
    }
    fn restore(&self, epoch: usize) -> Result<LrSchedulerRecord, CheckpointerError> {
        self.resumed(epoch, |r| r.scheduler.clone())
    }
}

/// The epoch's three records as one checkpoint, through `ModelCheckpoint`'s hooks.
fn save(shared: &mut Shared, epoch: usize, pending: Pending) -> Result<(), Error> {
    let (Some(model), Some(optimizer), Some(scheduler)) =
        (pending.model, pending.optimizer, pending.scheduler)
    else {
        return Ok(());
    };
    let assembled = Assembled::new(epoch, model, optimizer, scheduler)?;
    let keras_epoch = epoch.saturating_sub(1);
    let mut ctx = Context::new(&assembled);
    if !shared.started {
        shared.started = true;
        shared.callback.on_train_begin(&Logs::new(), &mut ctx)?;
    }
    shared
        .callback
        .on_epoch_begin(keras_epoch, &Logs::new(), &mut ctx)?;
    shared
        .callback
        .on_epoch_end(keras_epoch, &pending.logs, &mut ctx)?;
    Ok(())
}

/// A `Learner`'s epoch as a checkpoint: the weights by path (from the model's record), the
/// optimizer's state under the same paths, the scheduler's scalars and the epoch.
struct Assembled {
    weights: Vec<(String, HostTensor)>,
    optimizer: Vec<NamedTensor<'static>>,
    document: TrainingDocument,
}

/// The `Learner`'s section of a checkpoint's training state: its epoch and its scheduler's
/// scalars.
#[derive(Serialize, Deserialize)]
struct LearnerSection {
    epoch: u64,
    #[serde(default)]
    scheduler: serde_json::Value,
}

impl Assembled {
    fn new(
        epoch: usize,
        model: ModuleRecord,
        optimizer: OptimizerRecord,
        scheduler: LrSchedulerRecord,
    ) -> Result<Self, Error> {
        let bytes = model.into_bytes().map_err(Error::burn)?;
        let reader = burn_pack::Reader::from_bytes(bytes).map_err(Error::burn)?;
        let mut weights = Vec::new();
        let mut paths = BTreeMap::new();
        for tensor in reader.into_tensors().map_err(Error::burn)? {
            let (path, dtype, shape, id, bytes) = tensor.into_parts().map_err(Error::burn)?;
            let data = burn::tensor::TensorData::from_bytes(bytes, shape, dtype);
            if let Some(id) = id {
                paths.insert(id, path.clone());
            }
            weights.push((path.clone(), host_data(data, &path)?));
        }
        let (optimizer, section) = optimizer::state_of_record(optimizer, &paths)?;
        // Laid out as fit's `TrainingParts` lays out any optimizer: under the core's prefix.
        let optimizer = optimizer
            .into_iter()
            .map(|mut t| {
                t.name = format!("{}{}", model_checkpoint::store::OPTIMIZER_TENSORS, t.name);
                t
            })
            .collect();
        let bytes = scheduler.into_bytes().map_err(Error::burn)?;
        let reader = burn_pack::Reader::from_bytes(bytes).map_err(Error::burn)?;
        let scheduler: BTreeMap<String, serde_json::Value> = reader
            .scalars()
            .iter()
            .map(|(k, v)| Ok((k.clone(), serde_json::to_value(optimizer::Value::from(*v))?)))
            .collect::<Result<_, serde_json::Error>>()
            .map_err(Error::burn)?;
        let mut document = TrainingDocument::default();
        document.optimizer = Some(section);
        document.learner = Some(
            serde_json::to_value(LearnerSection {
                epoch: epoch as u64,
                scheduler: serde_json::to_value(scheduler).map_err(Error::burn)?,
            })
            .map_err(Error::burn)?,
        );
        Ok(Assembled {
            weights,
            optimizer,
            document,
        })
    }
}

impl Checkpointable for Assembled {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, model_checkpoint::Error> {
        Ok(self
            .weights
            .iter()
            .map(|(name, t)| NamedTensor::new(name.clone(), t.clone_ref()))
            .collect())
    }

    fn training_state(&self) -> Result<TrainingState<'_>, model_checkpoint::Error> {
        let tensors = self
            .optimizer
            .iter()
            .map(|t| NamedTensor {
                name: t.name.clone(),
                data: Box::new(Borrowed(t.data.as_ref())),
            })
            .collect();
        Ok(TrainingState {
            tensors,
            document: self.document.clone(),
        })
    }
}

/// Tensor data borrowed from a boxed one.
struct Borrowed<'a>(&'a dyn model_checkpoint::TensorData);

impl model_checkpoint::TensorData for Borrowed<'_> {
    fn dtype(&self) -> model_checkpoint::Dtype {
        self.0.dtype()
    }
    fn shape(&self) -> std::borrow::Cow<'_, [usize]> {
        self.0.shape()
    }
    fn write_to(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        self.0.write_to(sink)
    }
}

/// The scheduler's record from its saved scalars.
fn scheduler_record(
    value: &serde_json::Value,
    path: &model_checkpoint::store::Name,
) -> Result<LrSchedulerRecord, Error> {
    let bad = |reason: String| {
        Error::Checkpoint(model_checkpoint::Error::BadTrainingState {
            path: path.clone(),
            reason,
        })
    };
    if value.is_null() {
        return Ok(LrSchedulerRecord::default());
    }
    let scalars: BTreeMap<String, optimizer::Value> = serde_json::from_value(value.clone())
        .map_err(|e| bad(format!("scheduler state malformed: {e}")))?;
    let mut record = LrSchedulerRecord::new();
    for (k, v) in scalars {
        let v = v.checked(&format!("scheduler scalar {k}")).map_err(bad)?;
        record = record.with_scalar(&k, burn_pack::Scalar::from(v));
    }
    Ok(record)
}
