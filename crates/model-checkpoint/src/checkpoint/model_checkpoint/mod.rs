mod from_keras;
mod options;
mod saving;
mod triggers;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::decisions::Decisions;
use super::engine::{Engine, Saved};
use super::interrupt;
use crate::callback::{Callback, Context, Control, HookResult};
use crate::policy::{Direction, Mode, SaveFreq, SaveSchedule, SavedFile};
use crate::store::{self, SaveOptions};
use crate::{Error, Logs, Value};
use saving::Reason;
use triggers::Triggers;

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
    pub last_saved: Option<crate::store::Name>,
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
    /// With `overwrite(false)`: for each name that collided, the next version to try (so
    /// that a resumed run names its saves as one that never stopped).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, u64>,
    /// Which Keras the callback imitated (`"2"`, `"3"`; absent in files from before Keras 3
    /// was added, which are tf.keras 2's): a resume under another is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keras: Option<String>,
    /// The `mode` the callback was given (absent in files from before it was recorded):
    /// `best` was kept by it, so a resume with another is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The `initial_value_threshold` the callback was given, if any: a resume that gives
    /// another is refused (the best value kept since may be on the wrong side of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Value>,
}

/// Saves the model during training, deciding when and under which name exactly as Keras's
/// `ModelCheckpoint` does: tf.keras 2.x by default, Keras 3 with
/// [`ModelCheckpoint::keras`]`(`[`KerasVersion::Keras3`](crate::KerasVersion::Keras3)`)`.
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
/// assert!(checkpoint.last_saved().is_some_and(|p| p.file_name() == Some("weights.03-0.40.safetensors")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ModelCheckpoint {
    /// Keras's arguments and state: when a save is due, its name, whether it improved.
    decisions: Decisions,
    /// Everything that touches storage once a save is due.
    engine: Engine,
    /// The save triggers beyond Keras's schedule, and saving on a signal.
    triggers: Triggers,
    verbose: i64,
    output: Output,
}

impl fmt::Debug for ModelCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelCheckpoint")
            .field("decisions", &self.decisions)
            .field("engine", &self.engine)
            .field("triggers", &self.triggers)
            .field("verbose", &self.verbose)
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
        ModelCheckpoint {
            decisions: Decisions::default(),
            engine: Engine::new(filepath.as_ref().to_string_lossy().into_owned()),
            triggers: Triggers::default(),
            verbose: 0,
            output: Output::Stdout,
        }
    }

    /// The metric to monitor (Keras's `monitor`). Default: `"val_loss"`. Resets [`best`].
    ///
    /// [`best`]: ModelCheckpoint::best
    pub fn monitor(mut self, monitor: impl Into<String>) -> Self {
        self.decisions.monitor = monitor.into();
        self.decisions.reset_best();
        self
    }

    /// Which Keras's behaviour to imitate (its decisions and texts; see
    /// [`KerasVersion`](crate::KerasVersion)). Default: tf.keras 2.x. Resets
    /// [`best`](ModelCheckpoint::best).
    pub fn keras(mut self, version: crate::KerasVersion) -> Self {
        self.decisions.rules = version.rules();
        self.decisions.reset_best();
        self
    }

    /// The Keras whose behaviour this callback imitates.
    pub fn keras_version(&self) -> crate::KerasVersion {
        self.decisions.rules.version()
    }

    /// Declares the direction of a metric the model was compiled with (Keras 3's metric
    /// `_direction`: `"up"` is [`Direction::Maximize`], anything else
    /// [`Direction::Minimize`]), so that Keras 3's `mode="auto"` can read a monitor of that
    /// name, with or without a `val_` prefix. tf.keras 2 decides from the name alone and
    /// ignores this. Resets [`best`](ModelCheckpoint::best).
    ///
    /// ```
    /// use model_checkpoint::{Direction, KerasVersion, ModelCheckpoint};
    ///
    /// let checkpoint = ModelCheckpoint::new("best.weights.h5")
    ///     .keras(KerasVersion::Keras3)
    ///     .monitor("val_accuracy")
    ///     .compiled_metric("accuracy", Direction::Maximize);
    /// assert_eq!(checkpoint.direction(), Direction::Maximize);
    /// ```
    pub fn compiled_metric(mut self, name: impl Into<String>, direction: Direction) -> Self {
        self.decisions.metrics.insert(name.into(), direction);
        self.decisions.reset_best();
        self
    }

    /// Keras 3 only: whether its backend gives a Python float as a float64 tensor (JAX with
    /// `JAX_ENABLE_X64`), so that it compares a monitored value with `best` as doubles.
    /// Default: false, float32, where values equal in float32 tie (and a tie never
    /// improves). tf.keras 2 compares doubles either way.
    ///
    /// ```
    /// use model_checkpoint::{KerasVersion, ModelCheckpoint};
    ///
    /// let checkpoint = ModelCheckpoint::new("best.weights.h5")
    ///     .keras(KerasVersion::Keras3)
    ///     .float64_scalars(true);
    /// # let _ = checkpoint;
    /// ```
    pub fn float64_scalars(mut self, yes: bool) -> Self {
        self.decisions.float64_scalars = yes;
        self
    }

    /// Records, while training runs, the direction of a metric the model was compiled
    /// with, as Keras 3 finds it in `model.metrics` when it first picks `monitor_op` (a
    /// binding learns them at each epoch end, once the model has built them). Unlike
    /// [`ModelCheckpoint::compiled_metric`], `best` is kept: a callback restored from a
    /// checkpoint goes on from the best value it had.
    pub fn learn_compiled_metric(&mut self, name: impl Into<String>, direction: Direction) {
        self.decisions.metrics.insert(name.into(), direction);
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
        self.decisions.save_best_only = yes;
        self
    }

    /// Save the weights only, not a full checkpoint (Keras's `save_weights_only`). Default:
    /// `false`.
    pub fn save_weights_only(mut self, yes: bool) -> Self {
        self.decisions.save_weights_only = yes;
        self
    }

    /// Which way the monitor should move (Keras's `mode`). Default: [`Mode::Auto`]. Resets
    /// [`best`](ModelCheckpoint::best).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.decisions.mode = mode;
        self.decisions.reset_best();
        self
    }

    /// When to save (Keras's `save_freq`). Default: [`SaveFreq::Epoch`].
    pub fn save_freq(mut self, save_freq: SaveFreq) -> Self {
        self.decisions.save_freq = save_freq;
        self
    }

    /// How files are written (Keras's `options`). Default: [`SaveOptions::default`].
    pub fn options(mut self, options: SaveOptions) -> Self {
        self.engine.config.options = options;
        self
    }

    /// The starting best value: only strictly better values save (Keras's
    /// `initial_value_threshold`). Default: none (±inf by direction). Resets
    /// [`best`](ModelCheckpoint::best).
    pub fn initial_value_threshold(mut self, threshold: impl Into<Value>) -> Self {
        let threshold = threshold.into();
        self.decisions.threshold = (threshold != Value::None).then_some(threshold);
        self.decisions.reset_best();
        self
    }

    /// Save every `period` epochs (Keras's deprecated `period`). Default: 1. Logs Keras's
    /// deprecation warning, as Keras does on construction. Keras 3 has no `period`: under
    /// [`KerasVersion::Keras3`](crate::KerasVersion::Keras3) it is ignored (with a warning
    /// saying so when Keras 3 is chosen first).
    #[deprecated(note = "use save_freq; period is kept for Keras compatibility")]
    pub fn period(mut self, period: i64) -> Self {
        log::warn!(target: "model_checkpoint", "{}", self.decisions.rules.period_deprecated());
        self.decisions.period = period;
        self
    }

    /// Sends verbose messages to `out` instead of standard output.
    pub fn output(mut self, out: impl Write + Send + 'static) -> Self {
        self.output = Output::Writer(Box::new(out));
        self
    }

    /// The best monitored value so far; before any improvement, the threshold, or ±inf
    /// (tf.keras 2), or [`Value::None`] (Keras 3).
    pub fn best(&self) -> Value {
        self.decisions.best
    }

    /// The formatted path of the last completed save.
    pub fn last_saved(&self) -> Option<&crate::store::Name> {
        self.engine.saved.last_saved.as_ref()
    }

    /// The number of saves completed (a path without placeholders is overwritten, so this
    /// can exceed the number of files).
    pub fn saves(&self) -> u64 {
        self.engine.saved.saves
    }

    /// The filepath template.
    pub fn filepath(&self) -> &str {
        self.engine.config.template()
    }

    /// Whether this callback acts in the per-batch hooks: `save_freq` in batches, every N
    /// steps, every N seconds, or a save on a signal. A loop that only calls the epoch hooks
    /// (burn's `Learner`) cannot drive those.
    pub fn needs_batch_hooks(&self) -> bool {
        self.decisions.save_freq != crate::SaveFreq::Epoch || self.triggers.acts_on_batches()
    }

    /// The monitored metric.
    pub fn monitored(&self) -> &str {
        &self.decisions.monitor
    }

    /// The resolved direction of the monitor.
    pub fn direction(&self) -> Direction {
        self.decisions.direction
    }

    /// The state kept between hooks (best, counters, last save), as full checkpoints carry
    /// it.
    ///
    /// Saves in flight on the writer thread, and saves decided in the current round of
    /// hooks, count as done: it is the state a run resumed from a checkpoint taken now must
    /// have to go on exactly as this one.
    pub fn checkpoint_state(&self) -> CheckpointState {
        self.state_with(self.engine.promised())
    }

    /// The callback's state with the engine's part as `saved`.
    fn state_with(&self, saved: Saved) -> CheckpointState {
        compose(&self.decisions, &self.triggers, saved)
    }

    pub(crate) fn set_mode_and_freq(&mut self, mode: Mode, save_freq: SaveFreq) {
        self.decisions.mode = mode;
        self.decisions.save_freq = save_freq;
        self.decisions.reset_best();
    }

    pub(crate) fn set_period(&mut self, period: i64) {
        self.decisions.period = period;
    }

    /// `state` as [`Callback::restore_state`] takes it, or its refusal.
    fn checked_state(&self, state: &serde_json::Value) -> Result<CheckpointState, Error> {
        let key = crate::text::shorten(&self.key(), 200);
        let bad = |reason: String| Error::BadState {
            key: key.clone(),
            reason,
        };
        let restored =
            CheckpointState::deserialize(state).map_err(|e| bad(format!("malformed: {e}")))?;
        if let Some(saved) = &restored.monitor {
            if *saved != self.decisions.monitor {
                return Err(bad(format!(
                    "its best value is for monitor {:?}, but this callback monitors {:?}; resume with the same monitor, or start a new run",
                    crate::text::shorten(saved, 100),
                    self.decisions.monitor
                )));
            }
        }
        let now = self.decisions.rules.version();
        match crate::KerasVersion::from_token(restored.keras.as_deref()) {
            Some(saved) if saved == now => {}
            Some(saved) => {
                return Err(bad(format!(
                    "it was saved by a callback imitating {}, but this one imitates {} (their best values and rules differ); resume with the same Keras",
                    saved.describe(),
                    now.describe()
                )))
            }
            None => {
                return Err(bad(format!(
                    "it names an unknown Keras {:?}",
                    crate::text::shorten(restored.keras.as_deref().unwrap_or(""), 40)
                )))
            }
        }
        let mode_name = |m: Mode| format!("{m:?}").to_lowercase();
        if let Some(saved) = restored.mode {
            if saved != self.decisions.mode {
                return Err(bad(format!(
                    "its best value was kept with mode {:?}, but this callback has mode {:?}; resume with the same mode, or start a new run",
                    mode_name(saved),
                    mode_name(self.decisions.mode)
                )));
            }
        }
        // A state that records its mode records its threshold too (absent: none); one from
        // before either was recorded says nothing of it.
        if let (Some(now), Some(_)) = (self.decisions.threshold, restored.mode) {
            if restored.threshold != Some(now) {
                let shown =
                    |t: Option<Value>| t.map_or_else(|| "none".to_owned(), |v| v.to_string());
                return Err(bad(format!(
                    "it was saved with initial_value_threshold {}, but this callback is given {}; resume with the same threshold (or none), or start a new run",
                    shown(restored.threshold),
                    shown(Some(now))
                )));
            }
        }
        if let Some((key, value)) = restored.out_of_range() {
            return Err(bad(format!("counter {key} is out of range: {value}")));
        }
        Ok(restored)
    }

    pub(super) fn key(&self) -> String {
        format!("ModelCheckpoint({})", self.engine.config.template())
    }
}

/// The callback's state from its parts (what full checkpoints carry).
fn compose(decisions: &Decisions, triggers: &Triggers, saved: Saved) -> CheckpointState {
    CheckpointState {
        best: decisions.best,
        schedule: decisions.schedule.clone(),
        current_epoch: decisions.current_epoch,
        last_saved: saved.last_saved,
        saves: saved.saves,
        kept: saved.kept,
        seq: saved.seq,
        last_trigger_step: triggers.last_trigger_step,
        run_id: saved.run_id,
        monitor: Some(decisions.monitor.clone()),
        versions: saved.versions,
        keras: Some(decisions.rules.version().token().to_owned()),
        mode: Some(decisions.mode),
        threshold: decisions.threshold,
    }
}

impl Callback for ModelCheckpoint {
    /// Takes the checkpoint folder's advisory lock, so that a second trainer writing into
    /// the same folder fails here rather than interleaving files, and removes temporary
    /// files an interrupted save left. (Keras does nothing here.)
    fn on_train_begin(&mut self, _logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        self.engine.poll()?;
        self.check_filepath()?;
        // A file at the `last` name that this tool did not write is refused now, before
        // any training, rather than at the first save.
        if let (Some(last), None) = (self.engine.last_path(), self.engine.config.folder_ranks()) {
            self.engine.check_replaceable(&last)?;
        }
        self.engine.ensure_run_id();
        self.engine.ensure_lock()?;
        self.engine.warn_of_other_runs();
        if self.engine.config.background {
            self.engine.prepare_background(ctx, self.decisions.kind())?;
        }
        if self.triggers.save_on_interrupt
            && !self.triggers.signals_from_host
            && !self.triggers.holds_signals
        {
            interrupt::hold_signals()?;
            self.triggers.holds_signals = true;
        }
        self.triggers.seen = interrupt::seen_now();
        self.triggers.last_trigger_time = Some(Instant::now());
        self.triggers.interrupted = None;
        Ok(Control::Continue)
    }

    /// Waits for background saves to be durable, reporting the first failure, then releases
    /// the folder's lock, and then the signals: one that came after the last hook that
    /// could act on it (or during these saves) then does what it would have done without
    /// this callback, once the saves are durable.
    ///
    /// A run that completed (not stopped by a signal) removes its interrupt files: its own
    /// checkpoints are now newer than any point it was interrupted at.
    fn on_train_end(&mut self, _logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        let ended = self.end_training(ctx);
        self.release_signals();
        ended.map(|()| Control::Continue)
    }

    /// Writes the saves this callback decided in the round of hooks that just ended (see
    /// [`Callback::on_round_end`]).
    fn on_round_end(&mut self, ctx: &mut Context<'_>) -> HookResult {
        self.run_planned(ctx)?;
        Ok(Control::Continue)
    }

    fn on_epoch_begin(&mut self, epoch: usize, _logs: &Logs, _ctx: &mut Context<'_>) -> HookResult {
        self.engine.poll()?;
        self.decisions.current_epoch = Some(counter("epoch", epoch)?);
        Ok(Control::Continue)
    }

    fn on_train_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        self.train_batch_end(batch, Some(logs), ctx)
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        self.epoch_end(epoch, Some(logs), ctx)
    }

    fn state_key(&self) -> Option<String> {
        Some(self.key())
    }

    fn state(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.checkpoint_state()).ok()
    }

    fn check_state(&self, state: &serde_json::Value) -> Result<(), Error> {
        self.checked_state(state).map(drop)
    }

    /// Confirms the run id the restored state claims against the folder (see
    /// `restore_state`).
    fn restored_from(&mut self, file: &store::CheckpointFile) -> Result<(), Error> {
        self.engine.confirm_run(file);
        Ok(())
    }

    /// Restores the best value, counters and run id from a checkpoint, which is untrusted
    /// input: counters are range-checked, a state saved for another monitor is refused, and
    /// the files it says the run kept are tracked only if this callback's template could
    /// have produced them in its own folder (retention proves ownership again before any
    /// delete).
    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), Error> {
        let restored = self.checked_state(state)?;
        let key = crate::text::shorten(&self.key(), 200);
        let bad = |reason: String| Error::BadState { key, reason };
        let CheckpointState {
            best,
            schedule,
            current_epoch,
            last_saved,
            saves,
            kept,
            seq,
            last_trigger_step,
            run_id,
            monitor: _,
            versions,
            keras: _,
            mode: _,
            threshold: _,
        } = restored;
        self.engine
            .restore(Saved {
                last_saved,
                saves,
                kept,
                seq,
                run_id,
                versions,
            })
            .map_err(bad)?;
        self.decisions.best = best;
        self.decisions.schedule = schedule;
        self.decisions.current_epoch = current_epoch;
        self.triggers.last_trigger_step = last_trigger_step;
        Ok(())
    }
}

impl CheckpointState {
    /// The first counter beyond what a checkpoint may hold (2^53), by name and value.
    fn out_of_range(&self) -> Option<(&'static str, String)> {
        let max = store::MAX_COUNTER;
        let counters = [
            ("seq", self.seq),
            ("saves", self.saves),
            ("last_trigger_step", self.last_trigger_step.unwrap_or(0)),
        ];
        let signed = [
            ("current_epoch", self.current_epoch.unwrap_or(0)),
            (
                "epochs_since_last_save",
                self.schedule.epochs_since_last_save,
            ),
            (
                "batches_seen_since_last_saving",
                self.schedule.batches_seen_since_last_saving,
            ),
            ("last_batch_seen", self.schedule.last_batch_seen),
        ];
        counters
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
                self.kept
                    .iter()
                    .find(|f| f.epoch.unsigned_abs() > max || f.seq > max)
                    .map(|f| ("kept", format!("epoch {} seq {}", f.epoch, f.seq)))
            })
            .or_else(|| {
                (self.versions.len() > MAX_VERSIONED_NAMES)
                    .then(|| ("versions", format!("{} names", self.versions.len())))
            })
            .or_else(|| {
                self.versions
                    .values()
                    .find(|v| **v > max)
                    .map(|v| ("versions", v.to_string()))
            })
    }
}

impl ModelCheckpoint {
    /// [`Callback::on_epoch_end`] called with no logs at all, as Python's
    /// `on_epoch_end(epoch, logs=None)` is (for a binding to Python): tf.keras 2 reads that
    /// as empty logs; Keras 3 formats the path first and fails with its `TypeError`
    /// ([`Error::Keras`]).
    ///
    /// # Errors
    ///
    /// As [`Callback::on_epoch_end`].
    pub fn on_epoch_end_without_logs(&mut self, epoch: usize, ctx: &mut Context<'_>) -> HookResult {
        self.epoch_end(epoch, None, ctx)
    }

    /// [`Callback::on_train_batch_end`] called with no logs at all (Python's `logs=None`);
    /// see [`ModelCheckpoint::on_epoch_end_without_logs`].
    ///
    /// # Errors
    ///
    /// As [`Callback::on_train_batch_end`].
    pub fn on_train_batch_end_without_logs(
        &mut self,
        batch: usize,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        self.train_batch_end(batch, None, ctx)
    }

    fn train_batch_end(
        &mut self,
        batch: usize,
        logs: Option<&Logs>,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        if self.decisions.save_freq == SaveFreq::Epoch && !self.triggers.acts_on_batches() {
            // Keras returns at once here, leaving its batch counters alone. Finished saves
            // are only taken in (their frozen copies freed); they are settled, and their
            // failures reported, at the epoch's hooks as before.
            self.engine.reap();
            return Ok(Control::Continue);
        }
        self.engine.poll()?;
        let batch = counter("batch", batch)?;
        let mut attempted = false;
        if self.decisions.batch_due(batch) {
            // The counter has already been reset, so a missing epoch loses this save, as in
            // Keras (trace save_freq_no_epoch_begin).
            let epoch = self.decisions.current_epoch.ok_or(Error::NoCurrentEpoch)?;
            attempted = self.save_model(epoch, Some(batch), logs, ctx, Reason::Keras)?;
        }
        if !attempted && self.triggers.due(ctx.global_step) {
            let epoch = self.decisions.current_epoch.ok_or(Error::NoCurrentEpoch)?;
            attempted = self.save_model(epoch, Some(batch), logs, ctx, Reason::Trigger)?;
        }
        if attempted {
            self.triggers.last_trigger_time = Some(Instant::now());
        }
        let empty = Logs::new();
        self.check_interrupt(Some(batch), logs.unwrap_or(&empty), ctx)
    }

    fn epoch_end(
        &mut self,
        epoch: usize,
        logs: Option<&Logs>,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        self.engine.poll()?;
        self.decisions.schedule.epoch_ended();
        // Keras 3 chooses `monitor_op` here, before saving, failing while it cannot.
        self.decisions.choose_monitor_op()?;
        let epoch = counter("epoch", epoch)?;
        let mut attempted = false;
        if self.decisions.save_freq == SaveFreq::Epoch {
            attempted = self.save_model(epoch, None, logs, ctx, Reason::Keras)?;
        }
        if !attempted && self.triggers.epoch_due(epoch) {
            attempted = self.save_model(epoch, None, logs, ctx, Reason::Trigger)?;
        }
        if attempted {
            self.triggers.last_trigger_time = Some(Instant::now());
        }
        let empty = Logs::new();
        self.check_interrupt(None, logs.unwrap_or(&empty), ctx)
    }

    /// Saves on a signal that another callback of the same `fit` acted on first, for a
    /// host that ends the `fit` in that callback's hook (Python's Keras: by an exception),
    /// so that this callback's own hook never comes: as that hook would have, after
    /// `batch` of the current epoch (`None`: at its end). Does nothing without
    /// `save_on_interrupt`, or when no signal is pending for this callback.
    ///
    /// # Errors
    ///
    /// As the save's.
    pub fn on_signal(
        &mut self,
        batch: Option<usize>,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        let batch = batch.map(|b| counter("batch", b)).transpose()?;
        self.check_interrupt(batch, logs, ctx)
    }

    /// After a step or an epoch: if a signal came, save a full checkpoint and stop.
    fn check_interrupt(
        &mut self,
        batch: Option<i64>,
        logs: &Logs,
        ctx: &Context<'_>,
    ) -> HookResult {
        if !self.triggers.save_on_interrupt {
            return Ok(Control::Continue);
        }
        let Some(signal) = interrupt::take(&mut self.triggers.seen) else {
            return Ok(Control::Continue);
        };
        let epoch = self.decisions.current_epoch.unwrap_or(0);
        self.save_interrupted(signal, epoch, batch, logs, ctx)?;
        Ok(Control::Interrupt)
    }
}

/// The most names a restored state may track versions for (a fixed template has one).
const MAX_VERSIONED_NAMES: usize = 100_000;

impl ModelCheckpoint {
    /// `on_train_end`'s saves and clearing up, before the signals go back.
    fn end_training(&mut self, ctx: &Context<'_>) -> Result<(), Error> {
        self.run_planned(ctx)?;
        if self.triggers.interrupted.is_none() && self.engine.config.folder_ranks().is_none() {
            let key = self.key();
            self.engine.retire_interrupt_files(&key);
        }
        self.engine.finish()
    }

    /// Ends this callback's hold of SIGTERM and SIGINT, if it has one.
    fn release_signals(&mut self) {
        if std::mem::take(&mut self.triggers.holds_signals) {
            interrupt::release_signals();
        }
    }
}

/// A `fit` that ends by an error, without `on_train_end`, leaves the signals to the program
/// once its callback is dropped.
impl Drop for ModelCheckpoint {
    fn drop(&mut self) {
        if self.triggers.holds_signals {
            // Saves in flight are made before a signal that no hook acted on ends the
            // process (see `interrupt::release_signals`); their failure has no one to
            // report to.
            let _ = self.engine.flush();
        }
        self.release_signals();
    }
}

/// A hook's epoch or batch index, refused where the 1-based number a checkpoint records
/// (`n + 1`) is beyond what it may hold (where Keras's `epoch + 1` would no longer be exact
/// either, and ours would overflow).
fn counter(what: &'static str, n: usize) -> Result<i64, Error> {
    let value = n as u64;
    match i64::try_from(n) {
        Ok(i) if value < store::MAX_COUNTER => Ok(i),
        _ => Err(Error::CounterTooLarge { what, value }),
    }
}
