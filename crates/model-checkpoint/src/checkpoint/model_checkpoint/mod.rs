mod extras;
mod names;
mod saving;

use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::background::BackgroundWriter;
use super::{interrupt, messages};
use crate::callback::{Callback, Context, Control, HookResult};
use crate::policy::{Direction, Mode, SaveFreq, SaveSchedule, SavedFile};
use crate::store::{self, LocalFolder, SaveOptions, Storage};
use crate::{Error, Logs, Value};
use extras::Extras;
use saving::{Pending, Reason};

/// Where verbose messages go.
enum Output {
    Stdout,
    Writer(Box<dyn Write + Send>),
}

/// The state `ModelCheckpoint` keeps between hooks, and across `fit` calls and resumes:
/// full checkpoints carry it so that the best score never resets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// The best monitored value so far (or the initial threshold, or ±inf).
    pub best: Value,
    /// The save-frequency counters.
    pub schedule: SaveSchedule,
    /// The epoch `on_epoch_begin` last announced.
    pub current_epoch: Option<i64>,
    /// The formatted path of the last completed save.
    pub last_saved: Option<PathBuf>,
    /// Saves completed.
    #[serde(default)]
    pub saves: u64,
    /// The files retention tracks, with their monitored values (only with retention on).
    #[serde(default)]
    pub kept: Vec<SavedFile>,
    /// The next save's sequence number.
    #[serde(default)]
    pub seq: u64,
    /// The global step of the last save by the every-n-steps trigger.
    #[serde(default)]
    pub last_trigger_step: Option<u64>,
    /// The run's identity, written into every file it saves (see
    /// [`ModelCheckpoint::run_id`]).
    #[serde(default)]
    pub run_id: Option<String>,
    /// The metric `best` refers to, so that a resume with another monitor is refused.
    #[serde(default)]
    pub monitor: Option<String>,
}

/// Saves the model during training, deciding when and under which name exactly as Keras's
/// `ModelCheckpoint` (tf.keras 2.x) does.
///
/// Every Keras argument is a builder method with Keras's default. The file written is a
/// safetensors file whatever the extension: weights only with
/// [`ModelCheckpoint::save_weights_only`], else a full checkpoint that resumes training
/// exactly. The extension is kept as written (`.h5` is not rewritten), so prefer
/// `.safetensors`.
///
/// ```
/// use model_checkpoint::{Callback, Context, Logs, Mode, ModelCheckpoint};
/// # use model_checkpoint::{Checkpointable, Error, HostTensor, NamedTensor};
/// # struct Toy;
/// # impl Checkpointable for Toy {
/// #     fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
/// #         Ok(vec![NamedTensor::new("w", HostTensor::from_f32(vec![2], &[1.0, 2.0]))])
/// #     }
/// # }
/// let dir = tempfile::tempdir()?;
/// let template = dir.path().join("weights.{epoch:02d}-{val_loss:.2f}.safetensors");
/// let mut checkpoint = ModelCheckpoint::new(template)
///     .monitor("val_loss")
///     .mode(Mode::Min)
///     .save_best_only(true)
///     .save_weights_only(true);
///
/// let model = Toy;
/// let mut ctx = Context::new(&model);
/// for (epoch, val_loss) in [0.5, 0.7, 0.4].into_iter().enumerate() {
///     checkpoint.on_epoch_begin(epoch, &Logs::new(), &mut ctx)?;
///     checkpoint.on_epoch_end(epoch, &Logs::from([("val_loss", val_loss)]), &mut ctx)?;
/// }
/// assert_eq!(checkpoint.best().as_f64(), Some(0.4));
/// assert!(checkpoint.last_saved().is_some_and(|p| p.ends_with("weights.03-0.40.safetensors")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ModelCheckpoint {
    filepath: String,
    monitor: String,
    verbose: i64,
    save_best_only: bool,
    save_weights_only: bool,
    mode: Mode,
    direction: Direction,
    save_freq: SaveFreq,
    options: SaveOptions,
    initial_value_threshold: Option<Value>,
    period: i64,
    state: CheckpointState,
    output: Output,
    storage: std::sync::Arc<dyn Storage>,
    lock: Option<Box<dyn std::any::Any + Send>>,
    background: bool,
    max_in_flight: usize,
    writer: Option<BackgroundWriter>,
    in_flight: VecDeque<Pending>,
    extras: Extras,
    /// Whether the run id was given (then a checkpoint with another may not resume).
    explicit_run_id: bool,
    /// Whether this callback may act as the run its id names: it made the id, was given
    /// it, or confirmed that the checkpoint it resumed was written by that run.
    run_confirmed: bool,
    /// The files this callback committed since it was made (always its own).
    session_saved: std::collections::BTreeSet<PathBuf>,
    /// The header digest of each file this callback committed, by path (for its marker).
    session_digests: std::collections::BTreeMap<PathBuf, [u8; 32]>,
}

impl fmt::Debug for ModelCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelCheckpoint")
            .field("filepath", &self.filepath)
            .field("monitor", &self.monitor)
            .field("verbose", &self.verbose)
            .field("save_best_only", &self.save_best_only)
            .field("save_weights_only", &self.save_weights_only)
            .field("mode", &self.mode)
            .field("save_freq", &self.save_freq)
            .field("options", &self.options)
            .field("initial_value_threshold", &self.initial_value_threshold)
            .field("period", &self.period)
            .field("background", &self.background)
            .field("max_in_flight", &self.max_in_flight)
            .field("extras", &self.extras)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ModelCheckpoint {
    /// A checkpoint callback saving to `filepath`, a Python `str.format` template filled
    /// with `epoch` (1-based), `batch` (1-based, batch-level saves only) and every log key.
    ///
    /// Defaults are Keras's: monitor `val_loss`, verbose 0, save every epoch, full model,
    /// mode `auto`, no threshold, period 1.
    pub fn new(filepath: impl AsRef<Path>) -> Self {
        let mut cb = ModelCheckpoint {
            filepath: filepath.as_ref().to_string_lossy().into_owned(),
            monitor: "val_loss".to_owned(),
            verbose: 0,
            save_best_only: false,
            save_weights_only: false,
            mode: Mode::Auto,
            direction: Direction::Minimize,
            save_freq: SaveFreq::Epoch,
            options: SaveOptions::default(),
            initial_value_threshold: None,
            period: 1,
            state: CheckpointState {
                best: Value::Float(f64::INFINITY),
                schedule: SaveSchedule::default(),
                current_epoch: None,
                last_saved: None,
                saves: 0,
                kept: Vec::new(),
                seq: 0,
                last_trigger_step: None,
                run_id: None,
                monitor: None,
            },
            output: Output::Stdout,
            storage: std::sync::Arc::new(LocalFolder::default()),
            lock: None,
            background: false,
            max_in_flight: 1,
            writer: None,
            in_flight: VecDeque::new(),
            extras: Extras::default(),
            explicit_run_id: false,
            run_confirmed: false,
            session_saved: std::collections::BTreeSet::new(),
            session_digests: std::collections::BTreeMap::new(),
        };
        cb.reset_best();
        cb
    }

    /// Recomputes the direction and the starting best from mode, monitor and threshold, as
    /// Keras's constructor does. A threshold is kept as given, never replaced by ±inf.
    fn reset_best(&mut self) {
        self.direction = self.mode.direction_for(&self.monitor);
        self.state.best = self
            .initial_value_threshold
            .unwrap_or(Value::Float(self.direction.initial_best()));
    }

    /// The metric to monitor (Keras's `monitor`). Default: `"val_loss"`. Resets [`best`].
    ///
    /// [`best`]: ModelCheckpoint::best
    pub fn monitor(mut self, monitor: impl Into<String>) -> Self {
        self.monitor = monitor.into();
        self.reset_best();
        self
    }

    /// Print a line for every save decision when above 0 (Keras's `verbose`; any positive
    /// value prints). Default: 0.
    pub fn verbose(mut self, verbose: i64) -> Self {
        self.verbose = verbose;
        self
    }

    /// Save only when the monitored value improves (Keras's `save_best_only`). Default:
    /// `false`.
    pub fn save_best_only(mut self, yes: bool) -> Self {
        self.save_best_only = yes;
        self
    }

    /// Save the weights only, not a full checkpoint (Keras's `save_weights_only`). Default:
    /// `false`.
    pub fn save_weights_only(mut self, yes: bool) -> Self {
        self.save_weights_only = yes;
        self
    }

    /// Which way the monitor should move (Keras's `mode`). Default: [`Mode::Auto`]. Resets
    /// [`best`](ModelCheckpoint::best).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self.reset_best();
        self
    }

    /// When to save (Keras's `save_freq`). Default: [`SaveFreq::Epoch`].
    pub fn save_freq(mut self, save_freq: SaveFreq) -> Self {
        self.save_freq = save_freq;
        self
    }

    /// How files are written (Keras's `options`). Default: [`SaveOptions::default`].
    pub fn options(mut self, options: SaveOptions) -> Self {
        self.options = options;
        self
    }

    /// The starting best value: only strictly better values save (Keras's
    /// `initial_value_threshold`). Default: none (±inf by direction). Resets
    /// [`best`](ModelCheckpoint::best).
    pub fn initial_value_threshold(mut self, threshold: impl Into<Value>) -> Self {
        let threshold = threshold.into();
        self.initial_value_threshold = (threshold != Value::None).then_some(threshold);
        self.reset_best();
        self
    }

    /// Save every `period` epochs (Keras's deprecated `period`). Default: 1. Logs Keras's
    /// deprecation warning, as Keras does on construction.
    #[deprecated(note = "use save_freq; period is kept for Keras compatibility")]
    pub fn period(mut self, period: i64) -> Self {
        log::warn!(target: "model_checkpoint", "{}", messages::period_deprecated());
        self.period = period;
        self
    }

    /// Save on a background thread (beyond Keras). The training thread only copies the
    /// tensors into host memory; writing, syncing and renaming happen on a writer thread, and
    /// nothing appears at the final path before it is durable. A save that fails is reported
    /// by the next hook (so `fit` stops with it), and `on_train_end` waits for the last save.
    /// The copy's buffers are kept for the next save (one model's worth of memory) until
    /// `on_train_end`. Default: `false`.
    pub fn background(mut self, yes: bool) -> Self {
        self.background = yes;
        self
    }

    /// How many background saves may be in flight; a save beyond that waits for the oldest.
    /// Default: 1 (at least 1).
    pub fn max_saves_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Whether saves run on a background thread.
    pub fn in_background(&self) -> bool {
        self.background
    }

    /// Where checkpoints are written (beyond Keras): every file effect (saves, the `last`
    /// copy, versions, retention's deletes, the lock, listing) goes through `storage`, with
    /// the formatted paths as names. Default: [`LocalFolder::default`], the local file
    /// system relative to the working directory.
    pub fn storage(mut self, storage: std::sync::Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// Sends verbose messages to `out` instead of standard output.
    pub fn output(mut self, out: impl Write + Send + 'static) -> Self {
        self.output = Output::Writer(Box::new(out));
        self
    }

    /// The best monitored value so far; before any improvement, the threshold or ±inf.
    pub fn best(&self) -> Value {
        self.state.best
    }

    /// The formatted path of the last completed save.
    pub fn last_saved(&self) -> Option<&Path> {
        self.state.last_saved.as_deref()
    }

    /// The number of saves completed (a path without placeholders is overwritten, so this
    /// can exceed the number of files).
    pub fn saves(&self) -> u64 {
        self.state.saves
    }

    /// The filepath template.
    pub fn filepath(&self) -> &str {
        &self.filepath
    }

    /// The monitored metric.
    pub fn monitored(&self) -> &str {
        &self.monitor
    }

    /// The resolved direction of the monitor.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The state kept between hooks (best, counters, last save).
    pub fn checkpoint_state(&self) -> &CheckpointState {
        &self.state
    }

    pub(crate) fn set_mode_and_freq(&mut self, mode: Mode, save_freq: SaveFreq) {
        self.mode = mode;
        self.save_freq = save_freq;
        self.reset_best();
    }

    pub(crate) fn set_period(&mut self, period: i64) {
        self.period = period;
    }
}

impl Callback for ModelCheckpoint {
    /// Takes the checkpoint folder's advisory lock, so that a second trainer writing into
    /// the same folder fails here rather than interleaving files, and removes temporary
    /// files an interrupted save left. (Keras does nothing here.)
    fn on_train_begin(&mut self, _logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        self.poll_background()?;
        self.check_filepath()?;
        self.ensure_run_id();
        self.ensure_lock()?;
        if self.background {
            self.prepare_background(ctx)?;
        }
        if self.extras.save_on_interrupt {
            interrupt::install()?;
        }
        self.extras.last_trigger_time = Some(Instant::now());
        self.extras.interrupted = None;
        Ok(Control::Continue)
    }

    /// Waits for background saves to be durable, reporting the first failure, then releases
    /// the folder's lock.
    fn on_train_end(&mut self, _logs: &Logs, _ctx: &mut Context<'_>) -> HookResult {
        let flushed = self.flush();
        if let Some(writer) = &mut self.writer {
            writer.release_buffers();
        }
        self.lock = None;
        flushed?;
        Ok(Control::Continue)
    }

    fn on_epoch_begin(&mut self, epoch: usize, _logs: &Logs, _ctx: &mut Context<'_>) -> HookResult {
        self.poll_background()?;
        self.state.current_epoch = Some(to_i64(epoch));
        Ok(Control::Continue)
    }

    fn on_train_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        if self.save_freq == SaveFreq::Epoch && !self.extras.acts_on_batches() {
            // Keras returns at once here, leaving its batch counters alone.
            return Ok(Control::Continue);
        }
        self.poll_background()?;
        let batch = to_i64(batch);
        let mut attempted = false;
        if self.save_freq != SaveFreq::Epoch && self.state.schedule.batch_due(batch, self.save_freq)
        {
            // The counter has already been reset, so a missing epoch loses this save, as in
            // Keras (trace save_freq_no_epoch_begin).
            let epoch = self.state.current_epoch.ok_or(Error::NoCurrentEpoch)?;
            attempted = self.save_model(epoch, Some(batch), logs, ctx, Reason::Keras)?;
        }
        if !attempted && self.extras.trigger_due(ctx.global_step) {
            let epoch = self.state.current_epoch.ok_or(Error::NoCurrentEpoch)?;
            attempted = self.save_model(epoch, Some(batch), logs, ctx, Reason::Trigger)?;
        }
        if attempted {
            self.extras.last_trigger_time = Some(Instant::now());
        }
        self.check_interrupt(Some(batch), logs, ctx)
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        self.poll_background()?;
        self.state.schedule.epoch_ended();
        let epoch = to_i64(epoch);
        let mut attempted = false;
        if self.save_freq == SaveFreq::Epoch {
            attempted = self.save_model(epoch, None, logs, ctx, Reason::Keras)?;
        }
        let nth = self
            .extras
            .every_n_epochs
            .is_some_and(|n| ((epoch + 1) as u64).is_multiple_of(n));
        if !attempted && nth {
            attempted = self.save_model(epoch, None, logs, ctx, Reason::Trigger)?;
        }
        if attempted {
            self.extras.last_trigger_time = Some(Instant::now());
        }
        self.check_interrupt(None, logs, ctx)
    }

    fn state_key(&self) -> Option<String> {
        Some(self.key())
    }

    fn state(&self) -> Option<serde_json::Value> {
        let mut state = self.state.clone();
        state.monitor = Some(self.monitor.clone());
        serde_json::to_value(&state).ok()
    }

    /// Restores the best value, counters and run id from a checkpoint, which is untrusted
    /// input: counters are range-checked, a state saved for another monitor is refused, and
    /// the files it says the run kept are tracked only if this callback's template could
    /// have produced them in its own folder (retention proves ownership again before any
    /// delete).
    fn restored_from(&mut self, file: &store::CheckpointFile) -> Result<(), Error> {
        self.confirm_run(file);
        Ok(())
    }

    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), Error> {
        let bad = |reason: String| Error::BadState {
            key: crate::text::shorten(&self.key(), 200),
            reason,
        };
        let mut restored =
            CheckpointState::deserialize(state).map_err(|e| bad(format!("malformed: {e}")))?;
        if let Some(saved) = &restored.monitor {
            if *saved != self.monitor {
                return Err(bad(format!(
                    "its best value is for monitor {:?}, but this callback monitors {:?}; resume with the same monitor, or start a new run",
                    crate::text::shorten(saved, 100),
                    self.monitor
                )));
            }
        }
        let max = store::MAX_COUNTER;
        let counters = [
            ("seq", restored.seq),
            ("saves", restored.saves),
            ("last_trigger_step", restored.last_trigger_step.unwrap_or(0)),
        ];
        let signed = [
            ("current_epoch", restored.current_epoch.unwrap_or(0)),
            (
                "epochs_since_last_save",
                restored.schedule.epochs_since_last_save,
            ),
            (
                "batches_seen_since_last_saving",
                restored.schedule.batches_seen_since_last_saving,
            ),
            ("last_batch_seen", restored.schedule.last_batch_seen),
        ];
        let out_of_range = counters
            .iter()
            .find(|(_, v)| *v > max)
            .map(|(k, v)| (*k, v.to_string()))
            .or_else(|| {
                signed
                    .iter()
                    .find(|(_, v)| v.unsigned_abs() > max)
                    .map(|(k, v)| (*k, v.to_string()))
            })
            .or_else(|| {
                restored
                    .kept
                    .iter()
                    .find(|f| f.epoch.unsigned_abs() > max || f.seq > max)
                    .map(|f| ("kept", format!("epoch {} seq {}", f.epoch, f.seq)))
            });
        if let Some((key, value)) = out_of_range {
            return Err(bad(format!("counter {key} is out of range: {value}")));
        }
        if let Some(id) = &restored.run_id {
            if !names::valid_run_id(id) {
                return Err(bad(format!(
                    "run id {:?} is not 1 to 64 lowercase hex digits",
                    crate::text::shorten(id, 100)
                )));
            }
            if self.explicit_run_id && self.state.run_id.as_ref() != Some(id) {
                return Err(bad(format!(
                    "the checkpoint belongs to run {id}, not to run {}",
                    self.run_id()
                )));
            }
        }
        let (kept, foreign): (Vec<_>, Vec<_>) = std::mem::take(&mut restored.kept)
            .into_iter()
            .partition(|f| self.could_have_written(&f.path).is_ok());
        for f in foreign {
            log::warn!(
                target: "model_checkpoint",
                "ignoring {} from the checkpoint's list of kept files: this callback could not have written it",
                crate::text::shorten(&f.path.to_string_lossy(), 200)
            );
        }
        restored.kept = kept;
        // Until `restored_from` confirms it against the folder, the restored run id is a
        // claim: retention deletes only files this callback saved itself.
        self.run_confirmed = self.explicit_run_id;
        if restored
            .last_saved
            .as_deref()
            .is_some_and(|p| self.could_have_written(p).is_err())
        {
            restored.last_saved = None;
        }
        self.state = restored;
        Ok(())
    }
}

impl Drop for ModelCheckpoint {
    /// Waits for background saves still in flight, so that none is lost silently; a
    /// failure that nobody collected (no `flush` or `on_train_end` after it) is logged at
    /// error level. Call [`ModelCheckpoint::flush`] or `on_train_end` to get it as a value.
    fn drop(&mut self) {
        if self.writer.as_ref().is_some_and(|w| w.in_flight() > 0) {
            if let Err(e) = self.flush() {
                log::error!(target: "model_checkpoint", "a background save failed and was never reported: {e}");
            }
        }
    }
}

impl ModelCheckpoint {
    /// After a step or an epoch: if a signal came, save a full checkpoint and stop.
    fn check_interrupt(
        &mut self,
        batch: Option<i64>,
        logs: &Logs,
        ctx: &Context<'_>,
    ) -> HookResult {
        if !self.extras.save_on_interrupt {
            return Ok(Control::Continue);
        }
        let Some(signal) = interrupt::take() else {
            return Ok(Control::Continue);
        };
        let epoch = self.state.current_epoch.unwrap_or(0);
        self.save_interrupted(signal, epoch, batch, logs, ctx)?;
        Ok(Control::Interrupt)
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
