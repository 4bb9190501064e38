//! `ckpt train`: an MLP on the bundled digits (or a CSV), with a ModelCheckpoint whose every
//! Keras argument is a flag.

use std::path::PathBuf;

use clap::Args;
use model_checkpoint::template;
use model_checkpoint::{Callback, Direction, KerasVersion, Mode, ModelCheckpoint, SaveFreq, Value};
use model_checkpoint_candle::{Dataset, FitOptions, Model};

use crate::framework::{self, Framework};

use crate::{Failure, RECORD_KEY};

/// Train an MLP on the bundled digits (or your CSV), saving checkpoints as Keras would.
///
/// Every argument of Keras's ModelCheckpoint is a flag with Keras's name and default (except
/// --verbose, which is 1 here so that saves are visible). At the end, the best checkpoint is
/// loaded into a fresh model and evaluated on the validation data.
#[derive(Args, Debug)]
#[command(after_help = r#"Examples:
  ckpt train
  ckpt train --save-best-only --save-weights-only --filepath 'ckpt/best.safetensors'
  ckpt train --save-freq 20 --filepath 'ckpt/w.{epoch:02d}-{batch:03d}.safetensors'
  ckpt train --data my.csv --epochs 30 --monitor val_loss"#)]
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
    /// Adam's learning rate [default: 0.001]. With --resume, the checkpoint's rate is kept
    /// unless this is given, and then the new rate is used from the resumed step on.
    #[arg(long, allow_hyphen_values = true, value_parser = parse_learning_rate)]
    learning_rate: Option<f64>,
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
    /// (beyond Keras). The history, the journal and what follows each save are written in
    /// the background too.
    #[arg(long = "async")]
    background: bool,
    /// Deduplicated checkpoints (beyond Keras): each save is a folder with an index whose
    /// tensors are content-addressed blobs in blobs/ beside them, shared with every other
    /// checkpoint of the run that holds the same bytes (see `ckpt du`).
    #[arg(long)]
    dedup: bool,
    /// Compress the blobs of deduplicated checkpoints, losslessly (byte planes, then zstd;
    /// needs --dedup). `ckpt export` writes a plain file of one.
    #[arg(long, requires = "dedup")]
    compress: bool,
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
    /// Keep last.safetensors in the checkpoint folder pointing at the newest checkpoint
    /// (with --dedup, a folder `last` whose index names the newest's blobs).
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
    /// Name the run (1 to 64 lowercase hex digits): every checkpoint carries it, and retention
    /// deletes only files that do. Default: a random id, kept across resumes.
    #[arg(long, value_name = "HEX")]
    run_id: Option<String>,
    /// The framework to train with: candle or burn (the same MLP, the same loop, the same
    /// files; a resume keeps the framework the checkpoint was trained with). burn needs a
    /// ckpt built with `--features burn`.
    #[arg(long, value_enum, default_value_t = Framework::Candle)]
    framework: Framework,
    /// Which Keras's ModelCheckpoint to imitate: 2 (tf.keras 2.x: best starts at ±inf, the
    /// acc/fmeasure rule of mode auto, a missing monitor skips the save) or 3 (Keras 3: best
    /// starts at None, mode auto from the metric's direction, a missing monitor saves
    /// anyway, "finished saving" lines; no --period).
    #[arg(long, default_value = "2", value_parser = parse_keras)]
    keras: KerasVersion,
    /// Training output: 0 silent, 1 progress bar, 2 one line per epoch.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    progress: u8,
}

fn parse_keras(s: &str) -> Result<KerasVersion, String> {
    match s {
        "2" => Ok(KerasVersion::Tf2),
        "3" => Ok(KerasVersion::Keras3),
        _ => Err(format!("{s:?}: give 2 (tf.keras 2.x) or 3 (Keras 3)")),
    }
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
        Ok(x) if x > 0.0 && std::time::Duration::try_from_secs_f64(x).is_ok() => Ok(x),
        _ => Err(format!(
            "{:?} is not a positive number of seconds that a duration holds",
            shorten(s)
        )),
    }
}

fn parse_learning_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err("must be a positive, finite number".to_owned()),
    }
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n >= 1 => usize::try_from(n).map_err(|e| e.to_string()),
        Ok(n) => Err(format!("must be at least 1, got {n}")),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// The options of a `ckpt train` run, kept in its full checkpoints (as the state of a
/// callback that does nothing else), so that a resume can tell which options changed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct RunRecord {
    filepath: String,
    monitor: String,
    mode: String,
    hidden: Vec<usize>,
    data: String,
    data_crc32: u32,
    shuffle_rows: bool,
    initial_value_threshold: Option<f64>,
    learning_rate: f64,
    /// Older checkpoints, from before burn, were all candle's.
    #[serde(default = "candle")]
    framework: Framework,
}

fn candle() -> Framework {
    Framework::Candle
}

/// Carries the [`RunRecord`] into checkpoints (read back by [`recorded_options`]).
struct Recorder {
    now: RunRecord,
}

impl Callback for Recorder {
    fn state_key(&self) -> Option<String> {
        Some(RECORD_KEY.to_owned())
    }
    fn state(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.now).ok()
    }
    fn restore_state(&mut self, _: &serde_json::Value) -> Result<(), model_checkpoint::Error> {
        // Compared before the resume instead (see `recorded_options`).
        Ok(())
    }
}

/// The options a `ckpt train` run recorded in the full checkpoint `file`, if any.
fn recorded_options(
    file: &model_checkpoint::store::CheckpointFile,
) -> Result<Option<RunRecord>, Failure> {
    let path = file.path();
    let Some(state) = file.training_state()? else {
        return Ok(None);
    };
    let Some(record) = state.callbacks.get(RECORD_KEY) else {
        return Ok(None);
    };
    serde_json::from_value(record.clone())
        .map(Some)
        .map_err(|e| {
            Failure::from(format!(
                "{}: the options recorded by ckpt train are malformed: {e}",
                path.display()
            ))
        })
}

/// Options a resume must keep, because the checkpoint's state depends on them; everything
/// else given with --resume is honoured (see the README's table).
fn check_resume_options(saved: &RunRecord, now: &RunRecord) -> Result<(), Failure> {
    let mut diffs = Vec::new();
    let mut differ = |what: &str, was: String, is: String| {
        if was != is {
            diffs.push(format!("{what} {was} (now {is})"));
        }
    };
    differ(
        "--filepath",
        format!("{:?}", saved.filepath),
        format!("{:?}", now.filepath),
    );
    differ(
        "--framework",
        saved.framework.name().to_owned(),
        now.framework.name().to_owned(),
    );
    differ("--monitor", saved.monitor.clone(), now.monitor.clone());
    // The record holds the direction `--mode` resolved to (auto: by the monitor's name).
    let mode = |direction: &str| match direction {
        "Maximize" => "max".to_owned(),
        "Minimize" => "min".to_owned(),
        other => other.to_owned(),
    };
    differ("--mode", mode(&saved.mode), mode(&now.mode));
    let hidden = |sizes: &[usize]| {
        let sizes: Vec<String> = sizes.iter().map(usize::to_string).collect();
        sizes.join(",")
    };
    differ("--hidden", hidden(&saved.hidden), hidden(&now.hidden));
    if saved.data_crc32 != now.data_crc32 {
        differ(
            "--data",
            saved.data.clone(),
            format!("{} (other contents)", now.data),
        );
    }
    differ(
        "row shuffling",
        saved.shuffle_rows.to_string(),
        now.shuffle_rows.to_string(),
    );
    if now.initial_value_threshold.is_some() {
        let threshold = |t: Option<f64>| t.map_or_else(|| "none".to_owned(), |t| t.to_string());
        differ(
            "--initial-value-threshold",
            threshold(saved.initial_value_threshold),
            threshold(now.initial_value_threshold),
        );
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(Failure::from(format!(
            "cannot resume: the checkpoint was trained with {}; resume with the same options",
            diffs.join(", ")
        )))
    }
}

/// Formats the template once with stand-in values, so that a malformed template or an
/// unknown metric fails before training rather than at the first save.
fn check_template(template_text: &str, batch_level: bool) -> Result<String, Failure> {
    let mut kwargs = vec![("epoch", Value::Int(1))];
    if batch_level {
        kwargs.push(("batch", Value::Int(1)));
    }
    let metrics = ["loss", "accuracy", "val_loss", "val_accuracy"];
    kwargs.extend(metrics.iter().map(|m| (*m, Value::Float(0.5))));
    match template::format(template_text, &kwargs) {
        Ok(formatted) => Ok(formatted),
        Err(template::FormatError::MissingKey { key }) => {
            let available: Vec<&str> = kwargs.iter().map(|(k, _)| *k).collect();
            Err(Failure::from(format!(
                "--filepath {:?} names {key:?}, which is not logged (available: {})",
                shorten(template_text),
                available.join(", ")
            )))
        }
        Err(e) => Err(Failure::from(format!(
            "--filepath {:?} is malformed: {e}",
            shorten(template_text)
        ))),
    }
}

/// Creates the checkpoint folder (the template's folders up to the first field), and checks
/// that files can be created there, so that an unwritable folder fails before training.
fn check_folder(
    checkpoint: &ModelCheckpoint,
    storage: &dyn model_checkpoint::store::Storage,
) -> Result<(), Failure> {
    let dir = checkpoint.folder();
    if model_checkpoint_object_store::is_remote(checkpoint.filepath()) {
        // Object stores have no folders: listing proves the credentials, the endpoint and
        // the bucket before any training.
        storage.list(&dir, 0)?;
        return Ok(());
    }
    // As ModelCheckpoint makes folders: `.` and `..` resolved first, as Keras's gfile does.
    storage.prepare_dir(&dir).map_err(|e| match e {
        model_checkpoint::Error::Io { source, .. } => {
            format!("cannot create folder {}: {source}", dir.display())
        }
        other => other.to_string(),
    })?;
    model_checkpoint::store::PendingFile::create(dir.join("write-test").as_path())
        .map_err(|e| format!("cannot write checkpoints in {}: {e}", dir.display()))?;
    Ok(())
}

fn shorten(text: &str) -> String {
    crate::shorten(text, 200)
}

/// An output never replaces an input of the same command: `--data` may not be a file this
/// run writes (its history, journal, `last` link, interrupt file, or a name its template
/// produces), which it would replace after reading.
fn refuse_data_among_outputs(
    args: &TrainArgs,
    checkpoint: &ModelCheckpoint,
    history: &std::path::Path,
) -> Result<(), Failure> {
    use crate::location::identity;
    let Some(data) = &args.data else {
        return Ok(());
    };
    let data_name = data.to_string_lossy();
    let data_id = identity(&data_name);
    let folder = checkpoint.folder();
    let mut outputs = vec![
        model_checkpoint::store::Name::from(history),
        folder.join(model_checkpoint::store::JOURNAL_FILE),
        folder.join("interrupted.safetensors"),
    ];
    outputs.extend(checkpoint.last_path());
    // The template's names, compared where they lie: the data's path (however spelt,
    // links resolved) inside the template's folder, against the template below that folder
    // (and its `-vN` versions).
    let folder_id = identity(folder.as_str());
    let template = model_checkpoint::store::normalize(&args.filepath);
    let folder_text = folder.as_str();
    let below = if folder_text == "." {
        template.as_str()
    } else {
        template
            .strip_prefix(&format!("{folder_text}/"))
            .unwrap_or(template.as_str())
    };
    let template_makes_it = data_id
        .strip_prefix(&format!("{}/", folder_id.trim_end_matches('/')))
        .is_some_and(|relative| {
            model_checkpoint::template::Pattern::new(below).is_ok_and(|p| {
                p.matches(relative) || unversioned(relative).is_some_and(|r| p.matches(&r))
            })
        });
    if template_makes_it || outputs.iter().any(|o| identity(o.as_str()) == data_id) {
        return Err(format!(
            "--data {}: it is a file this run writes beside its checkpoints, which would replace it; give the data from elsewhere",
            crate::shorten(&data_name, 200)
        )
        .into());
    }
    Ok(())
}

/// `NAME-vN.EXT` as `NAME.EXT` (the names `--no-overwrite` gives), if it is one.
fn unversioned(path: &str) -> Option<String> {
    let (dir, file) = path.rsplit_once('/').map_or(("", path), |(d, f)| (d, f));
    let (stem, ext) = match file.rfind('.') {
        Some(i) if i > 0 => file.split_at(i),
        _ => (file, ""),
    };
    let (base, version) = stem.rsplit_once("-v")?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(if dir.is_empty() {
        format!("{base}{ext}")
    } else {
        format!("{dir}/{base}{ext}")
    })
}

/// `ckpt train`: the data and model, the callback, a resume if asked, `fit`, and what the
/// run ends with. Every refusal comes before the folder is made.
pub(crate) fn run(args: TrainArgs) -> Result<(), Failure> {
    if args.filepath.trim().is_empty() {
        return Err("--filepath is empty: give a file name or template".into());
    }
    let batch_level = matches!(args.save_freq, SaveFreq::Batches(_));
    let formatted = check_template(&args.filepath, batch_level)?;
    let data = load_data(&args)?;
    let sizes = model_sizes(&args, &data.train)?;
    let learning_rate = args.learning_rate.unwrap_or(DEFAULT_LEARNING_RATE);
    let mut trainer = framework::trainer(args.framework, &sizes, args.seed, learning_rate)?;

    // One storage for the run: the callback's, the history's, and a resume's in the same place.
    let storage = crate::location::storage_for(&args.filepath)?;
    let mut checkpoint = build_checkpoint(&args, storage.clone())?;
    // Names the tool manages, lengths, the run id: refused before any training.
    checkpoint.check_filepath()?;
    checkpoint.check_path(&formatted)?;

    let mut recorder = Recorder {
        now: RunRecord {
            filepath: args.filepath.clone(),
            monitor: args.monitor.clone(),
            mode: format!("{:?}", checkpoint.direction()),
            hidden: args.hidden.clone(),
            data: args
                .data
                .as_ref()
                .map_or("the bundled digits".to_owned(), |p| p.display().to_string()),
            data_crc32: data.crc32,
            shuffle_rows: !args.no_shuffle_rows,
            initial_value_threshold: args.initial_value_threshold,
            learning_rate,
            framework: args.framework,
        },
    };
    // The history, one row per epoch as Keras's CSVLogger writes it, beside the checkpoints;
    // a resume continues it from the rows its checkpoint had logged.
    let history_file = checkpoint
        .folder()
        .join(model_checkpoint::store::HISTORY_FILE);
    refuse_data_among_outputs(&args, &checkpoint, history_file.as_path())?;
    let mut logger = model_checkpoint::CsvLogger::new(&history_file)
        .storage(storage.clone())
        .append(args.resume.is_some())
        .background(args.background);
    // The history's name is this tool's choice, not the user's: a file there that is not a
    // history (a user's notes, a link) is refused rather than replaced.
    logger.check_replaceable()?;
    let options = FitOptions::new(args.epochs)
        .batch_size(args.batch_size)
        .validation_split(args.validation_split)
        .seed(args.seed)
        .verbose(args.progress);
    if let Some(from) = &args.resume {
        let run = Callbacks {
            checkpoint: &mut checkpoint,
            recorder: &mut recorder,
            logger: &mut logger,
        };
        let (resumed, saved) = resume(&args, from, &storage, &mut trainer, run)?;
        recorder.now.learning_rate = trainer.step().learning_rate();
        // Refused before saying where training continues.
        trainer
            .check_resume(&options)
            .map_err(|e| Failure::from(format!("cannot resume: {e}")))?;
        announce_resume(&args, &resumed, saved.as_ref(), recorder.now.learning_rate)?;
    }
    // Only now, with every option and the resume accepted, is the folder made (and checked
    // for writing), so that a refusal leaves nothing behind.
    check_folder(&checkpoint, &*storage)?;
    let history = trainer.fit(
        &data.train,
        &options,
        &mut [&mut checkpoint, &mut recorder, &mut logger],
    )?;
    if history.interrupted {
        report_interrupt(&args, &history, &mut checkpoint)?;
    }
    report_best(
        &args,
        &history,
        &checkpoint,
        &*storage,
        &sizes,
        &data.validation,
    )
}

/// The callbacks of a `ckpt train` run.
struct Callbacks<'a> {
    checkpoint: &'a mut ModelCheckpoint,
    recorder: &'a mut Recorder,
    logger: &'a mut model_checkpoint::CsvLogger,
}

/// The data `ckpt train` trains on, scaled and (unless `--no-shuffle-rows`) shuffled, and
/// the validation part `fit` will hold out.
struct Data {
    train: Dataset,
    validation: Dataset,
    /// The data's fingerprint as read, which a resume checks.
    crc32: u32,
}

fn load_data(args: &TrainArgs) -> Result<Data, Failure> {
    let data = match &args.data {
        Some(path) => Dataset::from_csv(path)?,
        None => Dataset::digits(),
    }
    .scaled();
    let crc32 = data.fingerprint();
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
    Ok(Data {
        train: data,
        validation,
        crc32,
    })
}

/// The MLP's layer sizes for `data`: its width, `--hidden`, its classes; refused above
/// [`MAX_TRAIN_PARAMETERS`].
fn model_sizes(args: &TrainArgs, data: &Dataset) -> Result<Vec<usize>, Failure> {
    let mut sizes = vec![data.width()];
    sizes.extend(&args.hidden);
    sizes.push(data.classes());
    if Model::mlp_parameters(&sizes).is_none_or(|n| n > MAX_TRAIN_PARAMETERS) {
        return Err(format!(
            "--hidden {}: the model would have more than {MAX_TRAIN_PARAMETERS} parameters (1 GiB of weights), the most ckpt train builds",
            shorten(&args.hidden.iter().map(usize::to_string).collect::<Vec<_>>().join(","))
        )
        .into());
    }
    Ok(sizes)
}

/// The callback the flags describe, saving to `storage`.
fn build_checkpoint(
    args: &TrainArgs,
    storage: std::sync::Arc<dyn model_checkpoint::store::Storage>,
) -> Result<ModelCheckpoint, Failure> {
    if args.keras == KerasVersion::Keras3
        && args.save_best_only
        && matches!(args.save_freq, SaveFreq::Batches(_))
    {
        return Err("--keras 3 with --save-best-only and --save-freq N: Keras 3 itself fails there ('NoneType' object is not callable at the second save of the first epoch); use --save-freq epoch, or --keras 2".into());
    }
    if args.keras == KerasVersion::Keras3 && args.period.is_some() {
        return Err("--period is tf.keras 2's: Keras 3's ModelCheckpoint has none (use --save-freq or --every-n-epochs)".into());
    }
    let mut checkpoint = ModelCheckpoint::new(&args.filepath)
        .keras(args.keras)
        // The MLP is compiled with accuracy, whose direction Keras 3's mode="auto" reads.
        .compiled_metric("accuracy", Direction::Maximize)
        .storage(storage)
        .monitor(args.monitor.clone())
        .verbose(args.verbose)
        .output(crate::output::Messages)
        .save_best_only(args.save_best_only)
        .save_weights_only(args.save_weights_only)
        .mode(args.mode)
        .save_freq(args.save_freq)
        .background(args.background)
        .save_last(args.save_last)
        .overwrite(!args.no_overwrite)
        .save_on_interrupt(args.save_on_interrupt)
        .dedup(args.dedup)
        .compress(args.compress)
        // Every save and delete recorded beside the checkpoints, for `ckpt report`.
        .journal(true);
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
        // parse_seconds checked that the value converts.
        let interval = std::time::Duration::try_from_secs_f64(t)
            .map_err(|e| format!("--every-seconds {t}: {e}"))?;
        checkpoint = checkpoint.every(interval);
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
    if let Some(id) = &args.run_id {
        checkpoint = checkpoint.with_run_id(id.clone());
    }
    Ok(checkpoint)
}

/// Restores the trainer and `callbacks` from `from` (`latest`: the template's folder;
/// FOLDER/latest; a file; local or s3://), after checking the options it was trained with
/// against this run's, and applies `--learning-rate` if given. Returns where training
/// continues, and the options the checkpoint recorded.
fn resume(
    args: &TrainArgs,
    from: &std::path::Path,
    storage: &std::sync::Arc<dyn model_checkpoint::store::Storage>,
    trainer: &mut framework::Trainer,
    run: Callbacks<'_>,
) -> Result<(model_checkpoint_fit::Resumed, Option<RunRecord>), Failure> {
    use model_checkpoint::restore::AnyCheckpoint;
    use model_checkpoint::store::Verify;
    // A file, or a folder with an index (a deduplicated checkpoint).
    let opened = if from.as_os_str() == "latest" {
        // The callback's own latest, in the run's storage, which its search verified whole:
        // each tensor is checked again as the restore reads it.
        let latest = run.checkpoint.latest()?;
        AnyCheckpoint::open(&**storage, &latest, Verify::HeaderOnly)?
    } else {
        crate::location::Location::of(from)?.open_checkpoint()?
    };
    let file = opened.head()?;
    // The options this checkpoint was trained with, checked before anything is loaded, so
    // that a changed model shape is named as the option that changed it.
    let saved = recorded_options(file)?;
    if let Some(saved) = &saved {
        check_resume_options(saved, &run.recorder.now)?;
    }
    let callbacks: &mut [&mut dyn model_checkpoint::Callback] =
        &mut [run.checkpoint, run.recorder, run.logger];
    let resumed = trainer.resume_checkpoint(&opened, callbacks)?;
    match (args.learning_rate, &saved) {
        (Some(lr), Some(saved)) if lr != saved.learning_rate => {
            trainer.step_mut().set_learning_rate(lr);
        }
        (Some(lr), None) => trainer.step_mut().set_learning_rate(lr),
        _ => {}
    }
    Ok((resumed, saved))
}

/// Says where a resumed run continues, or refuses a resume with nothing left to train.
fn announce_resume(
    args: &TrainArgs,
    resumed: &model_checkpoint_fit::Resumed,
    saved: Option<&RunRecord>,
    learning_rate: f64,
) -> Result<(), Failure> {
    if let (Some(lr), Some(saved)) = (args.learning_rate, saved) {
        if lr != saved.learning_rate {
            out!(
                "learning rate: {learning_rate} from now on (the checkpoint was trained with {})",
                saved.learning_rate
            );
        }
    }
    if resumed.epoch >= args.epochs {
        return Err(format!(
            "cannot resume: {} already finished epoch {} of --epochs {}; --epochs is the total, so give more",
            resumed.path.display(),
            resumed.epoch,
            args.epochs
        )
        .into());
    }
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
    Ok(())
}

/// After a signal: a run that had finished its last epoch is complete (its save on the
/// signal goes, as a completed run's does); otherwise where it saved and how to resume, and
/// the interrupted exit.
fn report_interrupt(
    args: &TrainArgs,
    history: &model_checkpoint_fit::History,
    checkpoint: &mut ModelCheckpoint,
) -> Result<(), Failure> {
    let signal = checkpoint.interrupted().unwrap_or("a signal").to_owned();
    let completed = history.epochs.last().is_some_and(|&e| e + 1 >= args.epochs);
    if completed {
        out!();
        out!("{signal} came after the last epoch: training is complete");
        checkpoint.retire_interrupt_saves();
        return Ok(());
    }
    // A save on a signal is outside the run's counted saves (`last_saved` names the last
    // counted one).
    let saved = checkpoint
        .interrupt_saved()
        .or_else(|| checkpoint.last_saved())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    out!();
    out!("interrupted by {signal}: saved a full checkpoint to {saved}");
    out!("resume with: ckpt train --resume {saved} (and the same options)");
    Err(Failure::interrupted())
}

/// The best epoch in training, the best checkpoint of this run still on disk, and its
/// weights reloaded into a fresh model and scored on the validation data.
fn report_best(
    args: &TrainArgs,
    history: &model_checkpoint_fit::History,
    checkpoint: &ModelCheckpoint,
    storage: &dyn model_checkpoint::store::Storage,
    sizes: &[usize],
    validation: &Dataset,
) -> Result<(), Failure> {
    out!();
    let direction = checkpoint.direction();
    if let Some((epoch, value)) = history.best(&args.monitor, direction) {
        out!(
            "best {} in training: {value:.4} (epoch {})",
            args.monitor,
            epoch + 1
        );
    }
    // Chosen from the files of this run that are on disk now, so that the report never names
    // a file retention deleted.
    let Some((best_path, best_value)) = checkpoint.best_saved()? else {
        out!("no checkpoint was saved");
        return Ok(());
    };
    // Which one is reloaded: the best, or (the monitor not logged at any save on disk,
    // as with saves in the middle of an epoch) the last.
    let which = match best_value {
        Some(v) => {
            out!(
                "best checkpoint: {} ({} {v:.4})",
                best_path.display(),
                args.monitor
            );
            "best"
        }
        None => {
            out!(
                "last checkpoint: {} ({} not logged at its save)",
                best_path.display(),
                args.monitor
            );
            "last checkpoint's"
        }
    };
    // A file, or a folder with an index (a deduplicated checkpoint).
    let opened = model_checkpoint::restore::AnyCheckpoint::open(
        storage,
        &best_path,
        model_checkpoint::store::Verify::HeaderOnly,
    )?;
    let weights = opened.weights()?;
    let logs = framework::evaluate_weights(
        args.framework,
        sizes,
        args.seed.wrapping_add(1),
        &weights,
        validation,
        args.batch_size,
    )?;
    let accuracy = logs
        .get("accuracy")
        .and_then(|v| v.as_f64())
        .unwrap_or(f64::NAN);
    let loss = logs
        .get("loss")
        .and_then(|v| v.as_f64())
        .unwrap_or(f64::NAN);
    out!("reloaded {which} weights: val_accuracy {accuracy:.4}, val_loss {loss:.4}");
    Ok(())
}

const DEFAULT_LEARNING_RATE: f64 = 0.001;

/// The most parameters `ckpt train` builds: 2^28, 1 GiB of weights (with Adam's two moments
/// and a background copy, 4 GiB in all).
const MAX_TRAIN_PARAMETERS: usize = 1 << 28;
