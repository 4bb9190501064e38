use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::background::BackgroundWriter;
use super::messages;
use crate::callback::{Callback, Context, Control, HookResult};
use crate::model::{Checkpointable, NamedTensor};
use crate::policy::{judge, Direction, Mode, SaveFreq, SaveSchedule, Verdict};
use crate::store::{self, FolderLock, Kind, SaveOptions, TRAINING_PREFIX};
use crate::template::{self, FormatError};
use crate::{Error, Logs, Value};

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
    lock: Option<FolderLock>,
    background: bool,
    max_in_flight: usize,
    writer: Option<BackgroundWriter>,
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
            },
            output: Output::Stdout,
            lock: None,
            background: false,
            max_in_flight: 1,
            writer: None,
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

    /// Waits until every background save is durable.
    ///
    /// # Errors
    ///
    /// The first failed save's error.
    pub fn flush(&mut self) -> Result<(), Error> {
        let mut first = None;
        if let Some(writer) = &mut self.writer {
            while let Some(outcome) = writer.wait_one() {
                if let Err(e) = outcome.result {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Starts the writer thread and has it allocate the snapshot buffers now, while training
    /// runs, rather than at the first save.
    fn prepare_background(&mut self, ctx: &Context<'_>) -> Result<(), Error> {
        if self.writer.as_ref().is_some_and(|w| w.in_flight() > 0) {
            return Ok(());
        }
        let Ok(model) = ctx.model() else {
            return Ok(());
        };
        let mut sizes: Vec<usize> = model.weights()?.iter().map(|t| t.data.byte_len()).collect();
        if !self.save_weights_only {
            sizes.extend(
                model
                    .training_state()?
                    .tensors
                    .iter()
                    .map(|t| t.data.byte_len()),
            );
        }
        if self.writer.is_none() {
            self.writer = Some(BackgroundWriter::start()?);
        }
        if let Some(writer) = &mut self.writer {
            writer.prepare(sizes)?;
        }
        Ok(())
    }

    /// Reports background saves that failed since the last hook.
    fn poll_background(&mut self) -> Result<(), Error> {
        let Some(writer) = &mut self.writer else {
            return Ok(());
        };
        if writer.in_flight() == 0 {
            return Ok(());
        }
        let mut first = None;
        for outcome in writer.finished() {
            if let Err(e) = outcome.result {
                log::warn!(target: "model_checkpoint", "background save to {} failed: {e}", outcome.path.display());
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
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

    fn say(&mut self, message: &str) {
        if self.verbose <= 0 {
            return;
        }
        let line = format!("{message}\n");
        // Like Python's print to a closed pipe, a failing console must not fail training.
        let _ = match &mut self.output {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes()).and_then(|()| out.flush())
            }
            Output::Writer(w) => w.write_all(line.as_bytes()).and_then(|()| w.flush()),
        };
    }

    /// Keras's `_get_file_path`: `filepath.format(epoch=epoch + 1, batch=batch + 1, **logs)`,
    /// leaving `batch` out at epoch level or when the logs carry their own.
    fn format_path(&self, epoch: i64, batch: Option<i64>, logs: &Logs) -> Result<String, Error> {
        if logs.contains("epoch") {
            return Err(Error::EpochInLogs);
        }
        let mut kwargs: Vec<(&str, Value)> = Vec::with_capacity(logs.len() + 2);
        kwargs.push(("epoch", Value::Int(epoch + 1)));
        if let Some(b) = batch.filter(|_| !logs.contains("batch")) {
            kwargs.push(("batch", Value::Int(b + 1)));
        }
        kwargs.extend(logs.iter());
        template::format(&self.filepath, &kwargs).map_err(|source| match source {
            FormatError::MissingKey { key } => Error::MissingTemplateKey {
                template: self.filepath.clone(),
                key,
            },
            source => Error::Template {
                template: self.filepath.clone(),
                source,
            },
        })
    }

    /// Keras's `_save_model`, in Keras's order of effects (SPEC.md §19): reset the period
    /// counter, format (possibly failing), create the folder, then check the monitor, print,
    /// update `best`, save.
    fn save_model(
        &mut self,
        epoch: i64,
        batch: Option<i64>,
        logs: &Logs,
        ctx: &Context<'_>,
    ) -> Result<(), Error> {
        if !self.state.schedule.attempt_due(self.save_freq, self.period) {
            return Ok(());
        }
        let filepath = self.format_path(epoch, batch, logs)?;
        let model = ctx.model()?;
        let path = PathBuf::from(&filepath);
        // tf.keras creates the folder before looking at the monitor, so skipped epochs can
        // leave empty folders (trace missing_monitor_dir_created).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !filepath.starts_with("gs://") && !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io("create folder", dir, e))?;
            }
        }
        self.ensure_lock()?;
        let current = logs.get(&self.monitor);
        match judge(
            self.save_best_only,
            self.direction,
            current,
            self.state.best,
        ) {
            Verdict::MonitorMissing => {
                log::warn!(target: "model_checkpoint", "{}", messages::monitor_missing(&self.monitor));
            }
            Verdict::NotImproved { best } => {
                self.say(&messages::not_improved(epoch, &self.monitor, best));
            }
            Verdict::Improved { from, to } => {
                self.say(&messages::improved(
                    epoch,
                    &self.monitor,
                    from,
                    to,
                    &filepath,
                ));
                // Keras updates best before saving, so a failed save still moves it.
                self.state.best = to;
                self.write(&path, model, ctx, epoch, batch, logs)?;
            }
            Verdict::Save => {
                self.say(&messages::saving(epoch, &filepath));
                self.write(&path, model, ctx, epoch, batch, logs)?;
            }
        }
        Ok(())
    }

    fn write(
        &mut self,
        path: &Path,
        model: &dyn Checkpointable,
        ctx: &Context<'_>,
        epoch: i64,
        batch: Option<i64>,
        logs: &Logs,
    ) -> Result<(), Error> {
        let kind = if self.save_weights_only {
            Kind::Weights
        } else {
            Kind::Full
        };
        let mut tensors: Vec<NamedTensor<'_>> = model.weights()?;
        if let Some(t) = tensors.iter().find(|t| t.name.starts_with(TRAINING_PREFIX)) {
            return Err(Error::TensorName {
                name: t.name.clone(),
                reason: "weights may not use the prefix reserved for training state",
            });
        }
        let mut info = BTreeMap::new();
        info.insert("epoch".to_owned(), (epoch + 1).to_string());
        if let Some(b) = batch {
            info.insert("batch".to_owned(), (b + 1).to_string());
        }
        info.insert("global_step".to_owned(), ctx.global_step.to_string());
        info.insert(
            "logs".to_owned(),
            serde_json::to_string(logs).unwrap_or_default(),
        );
        info.insert("monitor".to_owned(), self.monitor.clone());
        if kind == Kind::Full {
            let training = model.training_state()?;
            tensors.extend(training.tensors.into_iter().map(|mut t| {
                t.name = format!("{TRAINING_PREFIX}{}", t.name);
                t
            }));
            let mut values = training.values;
            let mut own = self.state.clone();
            own.last_saved = Some(path.to_path_buf());
            own.saves += 1;
            // The other callbacks' state too, so that none resets on resume (those after this
            // one in the list have not yet seen the current epoch's end).
            let mut callbacks: serde_json::Map<String, serde_json::Value> =
                ctx.peer_states().into_iter().collect();
            if let Ok(state) = serde_json::to_value(&own) {
                callbacks.insert(self.key(), state);
            }
            values.insert("callbacks".to_owned(), serde_json::Value::Object(callbacks));
            info.insert(
                "training_state".to_owned(),
                serde_json::Value::Object(values).to_string(),
            );
        }
        if self.background {
            if self.writer.is_none() {
                self.writer = Some(BackgroundWriter::start()?);
            }
            if let Some(writer) = &mut self.writer {
                // At most `max_in_flight` snapshots exist: wait for the oldest save first.
                while writer.in_flight() >= self.max_in_flight {
                    if let Some(Err(e)) = writer.wait_one().map(|o| o.result) {
                        return Err(e);
                    }
                }
                // Where the loop has a fence and the framework can share its tensors, the copy
                // happens on the writer thread while the next step computes.
                let shared: Option<Vec<_>> = ctx.fence().and_then(|_| {
                    tensors
                        .iter()
                        .map(|t| t.data.share().map(|s| (t.name.clone(), s)))
                        .collect()
                });
                match (ctx.fence(), shared) {
                    (Some(fence), Some(shared)) => writer.submit_deferred(
                        path.to_path_buf(),
                        kind,
                        shared,
                        fence.enter(),
                        info,
                        self.options.clone(),
                    )?,
                    _ => writer.submit(
                        path.to_path_buf(),
                        kind,
                        &tensors,
                        info,
                        self.options.clone(),
                    )?,
                }
            }
        } else {
            store::save(path, kind, &tensors, &info, &self.options)?;
        }
        self.state.last_saved = Some(path.to_path_buf());
        self.state.saves += 1;
        Ok(())
    }

    /// The part of the template's folder without placeholders: the folder this callback
    /// locks (`.` when the first folder level already has placeholders).
    fn static_dir(&self) -> PathBuf {
        let parent = Path::new(&self.filepath).parent().unwrap_or(Path::new(""));
        let fixed: PathBuf = parent
            .components()
            .take_while(|c| !c.as_os_str().to_string_lossy().contains(['{', '}']))
            .collect();
        if fixed.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            fixed
        }
    }

    /// Takes the folder's lock (and clears stale temporary files) if not held yet and the
    /// folder exists; Keras creates folders only when saving, so this never creates one.
    fn ensure_lock(&mut self) -> Result<(), Error> {
        if self.lock.is_none() {
            let dir = self.static_dir();
            if dir.is_dir() {
                self.lock = Some(FolderLock::acquire(&dir)?);
            }
        }
        Ok(())
    }

    fn key(&self) -> String {
        format!("ModelCheckpoint({})", self.filepath)
    }
}

impl Callback for ModelCheckpoint {
    /// Takes the checkpoint folder's advisory lock, so that a second trainer writing into
    /// the same folder fails here rather than interleaving files, and removes temporary
    /// files an interrupted save left. (Keras does nothing here.)
    fn on_train_begin(&mut self, _logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        self.poll_background()?;
        self.ensure_lock()?;
        if self.background {
            self.prepare_background(ctx)?;
        }
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
        if self.save_freq == SaveFreq::Epoch {
            return Ok(Control::Continue);
        }
        let batch = to_i64(batch);
        if self.state.schedule.batch_due(batch, self.save_freq) {
            // The counter has already been reset, so a missing epoch loses this save, as in
            // Keras (trace save_freq_no_epoch_begin).
            let epoch = self.state.current_epoch.ok_or(Error::NoCurrentEpoch)?;
            self.save_model(epoch, Some(batch), logs, ctx)?;
        }
        Ok(Control::Continue)
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        self.poll_background()?;
        self.state.schedule.epoch_ended();
        if self.save_freq == SaveFreq::Epoch {
            self.save_model(to_i64(epoch), None, logs, ctx)?;
        }
        Ok(Control::Continue)
    }

    fn state_key(&self) -> Option<String> {
        Some(self.key())
    }

    fn state(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.state).ok()
    }

    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), Error> {
        self.state = CheckpointState::deserialize(state)
            .map_err(|e| Error::Model(format!("cannot restore ModelCheckpoint state: {e}")))?;
        Ok(())
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
