//! `ckpt train`: an MLP on the bundled digits (or a CSV), with a ModelCheckpoint whose every
//! Keras argument is a flag.

use std::path::{Path, PathBuf};

use clap::Args;
use model_checkpoint::template;
use model_checkpoint::{
    Callback, Context, HookResult, Logs, Mode, ModelCheckpoint, SaveFreq, Value,
};
use model_checkpoint_candle::{Adam, Dataset, FitOptions, Model, ParamsAdam, Trainer};

use crate::Failure;

/// Train an MLP on the bundled digits (or your CSV), saving checkpoints as Keras would.
///
/// Every argument of Keras's ModelCheckpoint is a flag with Keras's name and default (except
/// --verbose, which is 1 here so that saves are visible). At the end, the best checkpoint is
/// loaded into a fresh model and evaluated on the validation data.
///
/// Examples:
///   ckpt train
///   ckpt train --save-best-only --save-weights-only --filepath 'ckpt/best.safetensors'
///   ckpt train --save-freq 20 --filepath 'ckpt/w.{epoch:02d}-{batch:03d}.safetensors'
///   ckpt train --data my.csv --epochs 30 --monitor val_loss
#[derive(Args, Debug)]
pub(crate) struct TrainArgs {
    /// Where to save: a Python str.format template with {epoch}, {batch} and any logged
    /// metric (loss, accuracy, val_loss, val_accuracy).
    #[arg(
        long,
        default_value = "checkpoints/digits.{epoch:02d}-{val_accuracy:.4f}.safetensors"
    )]
    filepath: String,
    /// The metric to monitor.
    #[arg(long, default_value = "val_accuracy")]
    monitor: String,
    /// Print a line for every save decision (0 silent).
    #[arg(long, default_value_t = 1)]
    verbose: i64,
    /// Save only when the monitored metric improves.
    #[arg(long)]
    save_best_only: bool,
    /// Save the weights only (else a full checkpoint that can resume training).
    #[arg(long)]
    save_weights_only: bool,
    /// Which way the monitor should move: auto, min or max.
    #[arg(long, default_value = "auto", value_parser = parse_mode)]
    mode: Mode,
    /// When to save: "epoch", or every N training batches.
    #[arg(long, default_value = "epoch", value_parser = parse_save_freq, allow_negative_numbers = true)]
    save_freq: SaveFreq,
    /// Only values strictly better than this save.
    #[arg(long, allow_negative_numbers = true)]
    initial_value_threshold: Option<f64>,
    /// Deprecated Keras argument: save every N epochs.
    #[arg(long, allow_negative_numbers = true)]
    period: Option<i64>,

    /// Epochs to train (the total, also when resuming).
    #[arg(long, default_value = "20", value_parser = parse_positive, allow_negative_numbers = true)]
    epochs: usize,
    /// Samples per batch.
    #[arg(long, default_value = "32", value_parser = parse_positive, allow_negative_numbers = true)]
    batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 0.001, allow_negative_numbers = true)]
    learning_rate: f64,
    /// Seed for initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of the data held out for validation: the last samples, after the rows are
    /// shuffled once with the seed (the bundled file is ordered by writer; see
    /// --no-shuffle-rows).
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    validation_split: f64,
    /// Keep the file's row order, so that the validation samples are its last rows (Keras's
    /// validation_split on unshuffled data).
    #[arg(long)]
    no_shuffle_rows: bool,
    /// A CSV file of samples (features, then an integer label; plain or gzip) instead of the
    /// bundled digits.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Hidden layer sizes, comma-separated.
    #[arg(long, default_value = "64", value_delimiter = ',', value_parser = parse_positive)]
    hidden: Vec<usize>,
    /// Save on a background thread: training only waits for a copy of the weights in memory
    /// (beyond Keras).
    #[arg(long = "async")]
    background: bool,
    /// Keep only the K best checkpoints by the monitor (plus the newest); delete the rest
    /// once a newer save is durable.
    #[arg(long, value_name = "K")]
    keep_best: Option<usize>,
    /// Keep the N newest checkpoints (plus the best).
    #[arg(long, value_name = "N")]
    keep_last: Option<usize>,
    /// Keep every checkpoint saved in an epoch that is a multiple of M.
    #[arg(long, value_name = "M", value_parser = parse_positive)]
    keep_every_epochs: Option<usize>,
    /// Keep last.safetensors in the checkpoint folder pointing at the newest checkpoint.
    #[arg(long)]
    save_last: bool,
    /// Never overwrite: save as NAME-v1, NAME-v2 … when the name is taken.
    #[arg(long)]
    no_overwrite: bool,
    /// Also save every N optimizer steps.
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    every_n_steps: Option<usize>,
    /// Also save at the end of every N-th epoch.
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    every_n_epochs: Option<usize>,
    /// Also save every SECONDS of wall-clock time.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    every_seconds: Option<f64>,
    /// On SIGTERM or SIGINT, finish the step, save a full checkpoint, and exit with status 3
    /// (resume it with --resume).
    #[arg(long)]
    save_on_interrupt: bool,
    /// Resume from a full checkpoint: a file, or "latest" for the newest full checkpoint that
    /// verifies in the --filepath folder (falling back past damaged ones, with a warning).
    /// --epochs stays the total; training continues where the checkpoint was taken.
    #[arg(long, value_name = "PATH|latest")]
    resume: Option<PathBuf>,
    /// Training output: 0 silent, 1 progress bar, 2 one line per epoch.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    progress: u8,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
        .map_err(|e: model_checkpoint::Error| e.to_string())
}

fn parse_save_freq(s: &str) -> Result<SaveFreq, String> {
    s.parse()
        .map_err(|e: model_checkpoint::Error| e.to_string())
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n >= 1 => usize::try_from(n).map_err(|e| e.to_string()),
        Ok(n) => Err(format!("must be at least 1, got {n}")),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// Wraps the checkpoint callback to remember each save's monitored value, so that the best
/// checkpoint can be found whatever the flags.
struct Tracked {
    inner: ModelCheckpoint,
    saves: Vec<(PathBuf, Option<f64>)>,
}

impl Tracked {
    fn note(&mut self, before: u64, logs: &Logs) {
        if self.inner.saves() > before {
            if let Some(path) = self.inner.last_saved() {
                let path = path.to_path_buf();
                // A path saved again holds the newer weights only.
                self.saves.retain(|(p, _)| *p != path);
                let value = logs.get(self.inner.monitored()).and_then(|v| v.as_f64());
                self.saves.push((path, value));
            }
        }
    }

    fn best(&self) -> Option<&(PathBuf, Option<f64>)> {
        let direction = self.inner.direction();
        let mut best: Option<&(PathBuf, Option<f64>)> = None;
        for save in &self.saves {
            let Some(v) = save.1.filter(|v| !v.is_nan()) else {
                continue;
            };
            let better = match best.and_then(|b| b.1) {
                None => true,
                Some(b) => direction.improves(v, b),
            };
            if better {
                best = Some(save);
            }
        }
        best.or(self.saves.last())
    }
}

impl Callback for Tracked {
    fn on_train_begin(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        self.inner.on_train_begin(logs, ctx)
    }
    fn on_train_end(&mut self, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        self.inner.on_train_end(logs, ctx)
    }
    fn on_epoch_begin(&mut self, epoch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        self.inner.on_epoch_begin(epoch, logs, ctx)
    }
    fn on_train_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut Context<'_>,
    ) -> HookResult {
        let before = self.inner.saves();
        let control = self.inner.on_train_batch_end(batch, logs, ctx)?;
        self.note(before, logs);
        Ok(control)
    }
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
        let before = self.inner.saves();
        let control = self.inner.on_epoch_end(epoch, logs, ctx)?;
        self.note(before, logs);
        Ok(control)
    }
    fn state_key(&self) -> Option<String> {
        self.inner.state_key()
    }
    fn state(&self) -> Option<serde_json::Value> {
        self.inner.state()
    }
    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), model_checkpoint::Error> {
        self.inner.restore_state(state)
    }
}

/// Formats the template once with stand-in values, so that a malformed template or an
/// unknown metric fails before training rather than at the first save.
fn check_template(template_text: &str, batch_level: bool) -> Result<(), Failure> {
    let mut kwargs = vec![("epoch", Value::Int(1))];
    if batch_level {
        kwargs.push(("batch", Value::Int(1)));
    }
    let metrics = ["loss", "accuracy", "val_loss", "val_accuracy"];
    kwargs.extend(metrics.iter().map(|m| (*m, Value::Float(0.5))));
    match template::format(template_text, &kwargs) {
        Ok(_) => Ok(()),
        Err(template::FormatError::MissingKey { key }) => {
            let available: Vec<&str> = kwargs.iter().map(|(k, _)| *k).collect();
            Err(Failure::from(format!(
                "--filepath {template_text:?} names {key:?}, which is not logged (available: {})",
                available.join(", ")
            )))
        }
        Err(e) => Err(Failure::from(format!(
            "--filepath {template_text:?} is malformed: {e}"
        ))),
    }
}

/// Creates the template's folder when it has no placeholders, and checks that files can be
/// created there, so that an unwritable folder fails before training.
fn check_folder(template_text: &str) -> Result<(), Failure> {
    let dir = Path::new(template_text)
        .parent()
        .filter(|d| !d.as_os_str().is_empty());
    let Some(dir) = dir else { return Ok(()) };
    if dir.to_string_lossy().contains('{') {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create folder {}: {e}", dir.display()))?;
    model_checkpoint::store::PendingFile::create(&dir.join("write-test"))
        .map_err(|e| format!("cannot write checkpoints in {}: {e}", dir.display()))?;
    Ok(())
}

pub(crate) fn run(args: TrainArgs) -> Result<(), Failure> {
    let batch_level = matches!(args.save_freq, SaveFreq::Batches(_));
    check_template(&args.filepath, batch_level)?;
    if !(args.learning_rate > 0.0 && args.learning_rate.is_finite()) {
        return Err(format!(
            "--learning-rate must be a positive number, got {}",
            args.learning_rate
        )
        .into());
    }
    let data = match &args.data {
        Some(path) => Dataset::from_csv(path)?,
        None => Dataset::digits(),
    }
    .scaled();
    let data = if args.no_shuffle_rows {
        data
    } else {
        data.shuffled(args.seed)
    };
    let (_, validation) = data.split_last(args.validation_split)?;
    if data.classes() < 2 {
        return Err(format!(
            "the data has {} class(es); at least two are needed",
            data.classes()
        )
        .into());
    }
    check_folder(&args.filepath)?;

    let mut sizes = vec![data.width()];
    sizes.extend(&args.hidden);
    sizes.push(data.classes());
    let model = Model::mlp(&sizes, args.seed)?;
    let optimizer = Adam::new(
        model.named_vars(),
        ParamsAdam::default().lr(args.learning_rate),
    )?;
    let mut trainer = Trainer::new(model, optimizer);

    let mut checkpoint = ModelCheckpoint::new(&args.filepath)
        .monitor(args.monitor.clone())
        .verbose(args.verbose)
        .save_best_only(args.save_best_only)
        .save_weights_only(args.save_weights_only)
        .mode(args.mode)
        .save_freq(args.save_freq)
        .background(args.background)
        .save_last(args.save_last)
        .overwrite(!args.no_overwrite)
        .save_on_interrupt(args.save_on_interrupt);
    if let Some(k) = args.keep_best {
        checkpoint = checkpoint.keep_best(k);
    }
    if let Some(n) = args.keep_last {
        checkpoint = checkpoint.keep_last(n);
    }
    if let Some(m) = args.keep_every_epochs {
        checkpoint = checkpoint.keep_every_epochs(m as u64);
    }
    if let Some(n) = args.every_n_steps {
        checkpoint = checkpoint.every_n_steps(n as u64);
    }
    if let Some(n) = args.every_n_epochs {
        checkpoint = checkpoint.every_n_epochs(n as u64);
    }
    if let Some(t) = args.every_seconds {
        checkpoint = checkpoint.every(std::time::Duration::from_secs_f64(t));
    }
    if let Some(t) = args.initial_value_threshold {
        checkpoint = checkpoint.initial_value_threshold(t);
    }
    if let Some(p) = args.period {
        #[allow(deprecated)]
        {
            checkpoint = checkpoint.period(p);
        }
    }
    let mut tracked = Tracked {
        inner: checkpoint,
        saves: Vec::new(),
    };
    if let Some(from) = &args.resume {
        let path = if from.as_os_str() == "latest" {
            let dir = Path::new(&args.filepath)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            model_checkpoint::store::latest_full(dir)?
        } else {
            from.clone()
        };
        let resumed = trainer.resume(&path, &mut [&mut tracked])?;
        out!(
            "resuming from {} at epoch {}{}",
            resumed.path.display(),
            resumed.epoch + 1,
            if resumed.batches_done > 0 {
                format!(", after batch {}", resumed.batches_done)
            } else {
                String::new()
            }
        );
        // The best save of the interrupted run, so that the final report can name it.
        if let Some(last) = tracked.inner.last_saved().map(Path::to_path_buf) {
            let best = tracked.inner.best().as_f64().filter(|b| b.is_finite());
            if args.save_best_only {
                tracked.saves.push((last, best));
            }
        }
    }
    let options = FitOptions::new(args.epochs)
        .batch_size(args.batch_size)
        .validation_split(args.validation_split)
        .seed(args.seed)
        .verbose(args.progress);
    let history = trainer.fit(&data, &options, &mut [&mut tracked])?;
    if history.interrupted {
        let signal = tracked.inner.interrupted().unwrap_or("a signal");
        let saved = tracked
            .inner
            .last_saved()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        out!("\ninterrupted by {signal}: saved a full checkpoint to {saved}");
        out!("resume with: ckpt train --resume {saved} (and the same options)");
        return Err(Failure::interrupted());
    }

    out!();
    let direction = tracked.inner.direction();
    if let Some((epoch, value)) = history.best(&args.monitor, direction) {
        out!(
            "best {} in training: {value:.4} (epoch {})",
            args.monitor,
            epoch + 1
        );
    }
    let Some((best_path, best_value)) = tracked.best().cloned() else {
        out!("no checkpoint was saved");
        return Ok(());
    };
    match best_value {
        Some(v) => out!(
            "best checkpoint: {} ({} {v:.4})",
            best_path.display(),
            args.monitor
        ),
        None => out!(
            "last checkpoint: {} ({} not logged at its save)",
            best_path.display(),
            args.monitor
        ),
    }
    let fresh = Model::mlp(&sizes, args.seed.wrapping_add(1))?;
    fresh.load_weights(&best_path)?;
    let evaluator = Trainer::new(fresh, Adam::new(vec![], ParamsAdam::default())?);
    let logs = evaluator.evaluate(&validation, args.batch_size)?;
    let accuracy = logs
        .get("accuracy")
        .and_then(|v| v.as_f64())
        .unwrap_or(f64::NAN);
    let loss = logs
        .get("loss")
        .and_then(|v| v.as_f64())
        .unwrap_or(f64::NAN);
    out!("reloaded best weights: val_accuracy {accuracy:.4}, val_loss {loss:.4}");
    Ok(())
}
