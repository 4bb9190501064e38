//! Replays the Keras oracle traces (tests/fixtures/keras-traces, recorded from tf.keras 2,
//! and tests/fixtures/keras-traces-keras3, recorded from Keras 3; or every `*.json` under
//! `KERAS_TRACES_DIR` when set, of either kind) against `ModelCheckpoint`, event by event,
//! with a real model that writes real files, and compares what Keras did: the saves, the
//! stdout text byte for byte, the warnings, which events fail and with which message,
//! `best`, and the folders created. Each trace is replayed with the behaviour of the Keras
//! its `keras_version` names (none: tf.keras 2), and the counts are printed per Keras.
//!
//! A trace is skipped only when its input holds something that exists in Python alone
//! (the oracle's README): a `pathlib.Path`, TensorFlow option objects, a numpy int
//! argument, the removed `load_weights_on_restart` argument, or a call of a private method.
//! Keras 3 refuses `options` and `load_weights_on_restart` by name, whatever their value, so
//! its traces passing them are replayed (the value does not matter), not skipped.
//!
//! This file holds one test, because each trace runs in its own temporary working folder.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use model_checkpoint::store::SaveOptions;
use model_checkpoint::store::{CheckpointFile, Kind, Verify};
use model_checkpoint::{
    Callback, Checkpointable, Context, Direction, Error, HostTensor, KerasArgs, KerasValue,
    KerasVersion, Logs, ModelCheckpoint, NamedTensor, TrainingState, Value,
};
use serde_json::Value as Json;

// ---------------------------------------------------------------------------------------
// Capturing warnings (the `log` facade) and verbose output.

static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.level() <= log::Level::Warn {
            if let Ok(mut w) = WARNINGS.lock() {
                w.push(record.args().to_string());
            }
        }
    }
    fn flush(&self) {}
}

fn install_logger() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        log::set_logger(&Capture).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Warn);
    });
}

fn take_warnings() -> Vec<String> {
    std::mem::take(&mut *WARNINGS.lock().expect("warnings lock"))
}

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().expect("buffer lock")))
            .expect("utf-8 output")
    }
}

// ---------------------------------------------------------------------------------------
// A real model: two tensors, saved through the store; it counts what it is asked for.

struct TinyModel {
    weights: Vec<(String, HostTensor)>,
    weight_requests: Cell<usize>,
    state_requests: Cell<usize>,
}

impl TinyModel {
    fn new() -> Self {
        TinyModel {
            weights: vec![
                (
                    "dense.kernel".into(),
                    HostTensor::from_f32(vec![3, 2], &[0.1, -0.2, 0.3, 0.4, -0.5, 0.6]),
                ),
                (
                    "dense.bias".into(),
                    HostTensor::from_f32(vec![2], &[0.0, 1.0]),
                ),
            ],
            weight_requests: Cell::new(0),
            state_requests: Cell::new(0),
        }
    }
}

impl Checkpointable for TinyModel {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        self.weight_requests.set(self.weight_requests.get() + 1);
        Ok(self
            .weights
            .iter()
            .map(|(n, t)| NamedTensor::new(n.clone(), t.clone()))
            .collect())
    }

    fn training_state(&self) -> Result<TrainingState<'_>, Error> {
        self.state_requests.set(self.state_requests.get() + 1);
        let mut state = TrainingState::default();
        state
            .document
            .other
            .insert("note".into(), Json::String("toy model".into()));
        Ok(state)
    }
}

// ---------------------------------------------------------------------------------------
// Reading traces.

/// Which Keras recorded the trace: its `keras_version` (3.x is Keras 3), else tf.keras 2.
fn keras_of(trace: &Json) -> KerasVersion {
    match trace.get("keras_version").and_then(Json::as_str) {
        Some(v) if v.starts_with("3.") => KerasVersion::Keras3,
        _ => KerasVersion::Tf2,
    }
}

/// Why a trace cannot be replayed in Rust, decided from its content.
fn python_only_input(trace: &Json) -> Option<String> {
    let keras3 = keras_of(trace) == KerasVersion::Keras3;
    fn find_tag(v: &Json, tags: &[&str]) -> Option<String> {
        match v {
            Json::Object(map) => map
                .keys()
                .find(|k| tags.contains(&k.as_str()))
                .cloned()
                .or_else(|| map.values().find_map(|v| find_tag(v, tags))),
            Json::Array(items) => items.iter().find_map(|v| find_tag(v, tags)),
            _ => None,
        }
    }
    let args = &trace["args"];
    // Keras 3 refuses the `options` keyword whatever its value (replayed as
    // `KerasArgs::options`); tf.keras 2 uses the TensorFlow object itself.
    let tags: &[&str] = if keras3 {
        &["$path", "$np_int64"]
    } else {
        &["$path", "$options", "$np_int64"]
    };
    let args_but_options: Json = match args {
        Json::Object(map) if keras3 => Json::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "options")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    };
    if let Some(tag) = find_tag(&args_but_options, tags) {
        return Some(format!("argument holds {tag}"));
    }
    // Keras 3 refuses `load_weights_on_restart` as an unknown keyword (replayed as one).
    if !keras3 && args.get("load_weights_on_restart").is_some() {
        return Some("removed argument load_weights_on_restart".into());
    }
    let events = trace["events"].as_array()?;
    if events.iter().any(|e| e["event"] == "$call") {
        return Some("calls a private Keras method".into());
    }
    None
}

fn log_value(v: &Json) -> Value {
    match v {
        Json::Null => Value::None,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) if !n.is_f64() => Value::Int(i),
            _ => Value::Float(n.as_f64().expect("a JSON number")),
        },
        Json::Object(map) => {
            let (tag, inner) = map.iter().next().expect("a tagged value");
            match tag.as_str() {
                "$float" => Value::Float(match inner.as_str() {
                    Some("nan") => f64::NAN,
                    Some("inf") => f64::INFINITY,
                    Some("-inf") => f64::NEG_INFINITY,
                    other => panic!("unknown $float {other:?}"),
                }),
                // Keras widens numpy scalars to Python ones with .item().
                "$np_float32" => Value::Float(f64::from(inner.as_f64().expect("number") as f32)),
                "$np_float64" => Value::Float(inner.as_f64().expect("number")),
                "$np_int64" => Value::Int(inner.as_i64().expect("int")),
                other => panic!("unknown tag {other}"),
            }
        }
        other => panic!("unexpected log value {other}"),
    }
}

fn logs_of(event: &Json) -> Logs {
    match event.get("logs") {
        Some(Json::Object(map)) => map.iter().map(|(k, v)| (k.clone(), log_value(v))).collect(),
        _ => Logs::new(),
    }
}

fn keras_value(v: &Json) -> KerasValue {
    match v {
        Json::String(s) => KerasValue::Str(s.clone()),
        Json::Bool(b) => KerasValue::Bool(*b),
        Json::Number(n) if !n.is_f64() => KerasValue::Int(n.as_i64().expect("int")),
        Json::Number(n) => KerasValue::Float(n.as_f64().expect("float")),
        Json::Null => KerasValue::None,
        other => panic!("unexpected argument {other}"),
    }
}

/// The directions of the metrics a trace's model was compiled with, as Keras 3's metric
/// objects give them (`_direction`). A trace without `model` ran on the harness's default
/// model, compiled like the `fit` traces record, with `metrics=["accuracy"]` (trace
/// `auto_val_accuracy` shows Keras 3 resolving `val_accuracy` to max, and `auto_acc` that
/// no metric named `acc` was compiled).
fn compiled_metrics(trace: &Json) -> Vec<(String, Direction)> {
    let names: Vec<String> = match trace.get("model").and_then(|m| m.get("metrics")) {
        Some(Json::Array(names)) => names
            .iter()
            .map(|n| n.as_str().expect("a metric name").to_owned())
            .collect(),
        _ => vec!["accuracy".to_owned()],
    };
    names
        .into_iter()
        .map(|name| {
            let direction = match name.as_str() {
                "accuracy" => Direction::Maximize,
                other => {
                    panic!("compiled metric {other:?}: its Keras 3 direction is not known here")
                }
            };
            (name, direction)
        })
        .collect()
}

/// The constructor's keywords this harness knows; any other is passed on by name.
const KNOWN_ARGS: [&str; 11] = [
    "filepath",
    "monitor",
    "verbose",
    "save_best_only",
    "save_weights_only",
    "mode",
    "save_freq",
    "initial_value_threshold",
    "period",
    "options",
    "load_weights_on_restart",
];

fn keras_args(trace: &Json) -> KerasArgs {
    let args = &trace["args"];
    let mut k = KerasArgs::new(args["filepath"].as_str().expect("filepath"));
    k.keras = keras_of(trace);
    if k.keras == KerasVersion::Keras3 {
        k.compiled_metrics = compiled_metrics(trace).into_iter().collect();
        if args.get("options").is_some() {
            k.options = Some(SaveOptions::default());
        }
        if args.get("load_weights_on_restart").is_some() {
            k.other_keywords.push("load_weights_on_restart".to_owned());
        }
    }
    if let Some(map) = args.as_object() {
        k.other_keywords.extend(
            map.keys()
                .filter(|key| !KNOWN_ARGS.contains(&key.as_str()))
                .cloned(),
        );
    }
    if let Some(m) = args.get("monitor").and_then(Json::as_str) {
        k.monitor = m.to_owned();
    }
    if let Some(v) = args.get("verbose") {
        k.verbose = v
            .as_i64()
            .unwrap_or_else(|| i64::from(v.as_bool().unwrap_or(false)));
    }
    if let Some(b) = args.get("save_best_only") {
        k.save_best_only = b.as_bool().unwrap_or(false);
    }
    if let Some(b) = args.get("save_weights_only") {
        k.save_weights_only = b.as_bool().unwrap_or(false);
    }
    if let Some(m) = args.get("mode") {
        k.mode = keras_value(m);
    }
    if let Some(f) = args.get("save_freq") {
        k.save_freq = keras_value(f);
    }
    if let Some(t) = args.get("initial_value_threshold") {
        k.initial_value_threshold = Some(log_value(t));
    }
    if let Some(p) = args.get("period") {
        k.period = Some(p.as_i64().expect("int period"));
    }
    k
}

fn same_value(ours: Value, theirs: &Json) -> bool {
    match (ours, log_value(theirs)) {
        (Value::Float(a), Value::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
        (a, b) => a == b,
    }
}

// ---------------------------------------------------------------------------------------
// Replaying.

fn dirs_under(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("list folder").flatten() {
            let path = entry.path();
            if path.is_dir() {
                let rel = path.strip_prefix(root).expect("under root");
                out.insert(format!("{}/", rel.display()));
                stack.push(path);
            }
        }
    }
    out
}

/// Keras's "created" folders, minus those its own save formats made (a SavedModel folder and
/// its insides), which are Keras's file format, not the callback's behaviour.
fn expected_created_dirs(event: &Json) -> BTreeSet<String> {
    let saves: Vec<String> = event["saves"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|s| s["path"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    event["fs"]["created"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .filter(|p| p.ends_with('/'))
        .filter(|p| {
            let bare = p.trim_end_matches('/');
            !saves
                .iter()
                .any(|s| bare == s || bare.starts_with(&format!("{s}/")))
        })
        .map(str::to_owned)
        .collect()
}

fn replay(trace: &Json, dir: &Path) -> Result<(), String> {
    std::env::set_current_dir(dir).map_err(|e| e.to_string())?;
    if let Some(setup) = trace.get("setup") {
        for d in setup["dirs"].as_array().into_iter().flatten() {
            std::fs::create_dir_all(d.as_str().expect("dir")).map_err(|e| e.to_string())?;
        }
        for (p, content) in setup["files"].as_object().into_iter().flatten() {
            if let Some(parent) = Path::new(p).parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(p, content.as_str().unwrap_or("")).map_err(|e| e.to_string())?;
        }
    }
    let events = trace["events"].as_array().ok_or("no events")?;
    let init = &events[0];
    take_warnings();
    let out = SharedBuf::default();
    let keras = keras_of(trace);
    let built = ModelCheckpoint::from_keras(keras_args(trace));
    let mut cb = match (built, &init["error"]) {
        (Ok(cb), Json::Null) => cb.output(out.clone()),
        (Err(e), Json::Object(expected)) => {
            check_error(&e, expected, "__init__")?;
            return check_warnings(init, "__init__", keras);
        }
        (Ok(_), expected) => return Err(format!("__init__: expected error {expected}, got none")),
        (Err(e), _) => return Err(format!("__init__: unexpected error {e}")),
    };
    check_warnings(init, "__init__", keras)?;

    let model = TinyModel::new();
    let with_model = trace
        .get("set_model")
        .and_then(Json::as_bool)
        .unwrap_or(true);
    let mut successful_saves = 0usize;
    for event in &events[1..] {
        let name = event["event"].as_str().unwrap_or("");
        let at = format!("event {} ({name})", event["index"]);
        let dirs_before = dirs_under(dir);
        let requests_before = model.weight_requests.get();
        let full_before = model.state_requests.get();
        let logs = logs_of(event);
        let index = |key: &str| {
            event[key]
                .as_u64()
                .map(|n| n as usize)
                .ok_or(format!("{at}: no {key}"))
        };
        let mut ctx = if with_model {
            Context::new(&model)
        } else {
            Context::without_model()
        };
        let result = match name {
            "on_train_begin" => cb.on_train_begin(&logs, &mut ctx),
            "on_train_end" => cb.on_train_end(&logs, &mut ctx),
            "on_epoch_begin" => cb.on_epoch_begin(index("epoch")?, &logs, &mut ctx),
            // An event without logs passes none at all (Python's `logs=None`).
            "on_epoch_end" if event.get("logs").is_none() => {
                cb.on_epoch_end_without_logs(index("epoch")?, &mut ctx)
            }
            "on_epoch_end" => cb.on_epoch_end(index("epoch")?, &logs, &mut ctx),
            "on_train_batch_end" if event.get("logs").is_none() => {
                cb.on_train_batch_end_without_logs(index("batch")?, &mut ctx)
            }
            "on_train_batch_begin" => cb.on_train_batch_begin(index("batch")?, &logs, &mut ctx),
            "on_train_batch_end" => cb.on_train_batch_end(index("batch")?, &logs, &mut ctx),
            "on_test_begin" => cb.on_test_begin(&logs, &mut ctx),
            "on_test_end" => cb.on_test_end(&logs, &mut ctx),
            "on_test_batch_begin" => cb.on_test_batch_begin(index("batch")?, &logs, &mut ctx),
            "on_test_batch_end" => cb.on_test_batch_end(index("batch")?, &logs, &mut ctx),
            "on_predict_begin" => cb.on_predict_begin(&logs, &mut ctx),
            "on_predict_end" => cb.on_predict_end(&logs, &mut ctx),
            "on_predict_batch_begin" => cb.on_predict_batch_begin(index("batch")?, &logs, &mut ctx),
            "on_predict_batch_end" => cb.on_predict_batch_end(index("batch")?, &logs, &mut ctx),
            "$write" | "$touch" => {
                let p = event["path"].as_str().ok_or("no path")?;
                if let Some(parent) = Path::new(p).parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                let content = event.get("content").and_then(Json::as_str).unwrap_or("");
                std::fs::write(p, content).map_err(|e| e.to_string())?;
                continue;
            }
            "$mkdir" => {
                let p = event["path"].as_str().ok_or("no path")?;
                std::fs::create_dir_all(p).map_err(|e| e.to_string())?;
                continue;
            }
            "$sleep" => continue,
            other => return Err(format!("{at}: unknown event {other}")),
        };

        // Which events fail, and how.
        match (&result, &event["error"]) {
            (Ok(_), Json::Null) => {}
            (Err(e), Json::Object(expected)) => check_error(e, expected, &at)?,
            (Ok(_), expected) => {
                return Err(format!("{at}: Keras failed with {expected}, we did not"))
            }
            (Err(e), Json::Null) => return Err(format!("{at}: unexpected error: {e}")),
            (Err(_), other) => return Err(format!("{at}: malformed error record {other}")),
        }

        // The saves: path, weights-only or not, in order; each a real file of that kind.
        let expected: Vec<(String, bool)> = event["saves"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["error"].is_null())
            .map(|s| {
                (
                    // `last_saved` names the file where it is: Keras's path with `.` and
                    // `..` resolved, as every save and read resolves it.
                    model_checkpoint::store::normalize(s["path"].as_str().unwrap_or("")),
                    s["weights_only"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        let attempts = model.weight_requests.get() - requests_before;
        let ours: Vec<(String, bool)> = if attempts == 1 && result.is_ok() {
            let path = cb
                .last_saved()
                .ok_or(format!("{at}: a save but no last_saved"))?;
            let weights_only = model.state_requests.get() == full_before;
            let file = CheckpointFile::open(path.as_path(), Verify::Full)
                .map_err(|e| format!("{at}: saved file does not verify: {e}"))?;
            let kind = if weights_only {
                Kind::Weights
            } else {
                Kind::Full
            };
            if file.kind() != kind {
                return Err(format!(
                    "{at}: file kind {} but saved as {kind}",
                    file.kind()
                ));
            }
            successful_saves += 1;
            vec![(path.display().to_string(), weights_only)]
        } else if attempts > 1 {
            return Err(format!("{at}: {attempts} saves in one event"));
        } else {
            Vec::new()
        };
        if ours != expected {
            return Err(format!("{at}: saves {ours:?}, Keras {expected:?}"));
        }

        let stdout = out.take();
        let want = event["stdout_text"].as_str().unwrap_or("");
        if stdout != want {
            return Err(format!("{at}: stdout {stdout:?}, Keras {want:?}"));
        }
        check_warnings(event, &at, keras)?;

        if let Some(best) = event["state"].get("best") {
            if !same_value(cb.best(), best) {
                return Err(format!("{at}: best {:?}, Keras {best}", cb.best()));
            }
        }

        let created: BTreeSet<String> = dirs_under(dir).difference(&dirs_before).cloned().collect();
        let want_dirs = expected_created_dirs(event);
        if created != want_dirs {
            return Err(format!(
                "{at}: created folders {created:?}, Keras {want_dirs:?}"
            ));
        }
    }
    let _ = successful_saves;
    Ok(())
}

fn check_error(
    e: &Error,
    expected: &serde_json::Map<String, Json>,
    at: &str,
) -> Result<(), String> {
    let ty = expected["type"].as_str().unwrap_or("");
    let arg0 = expected["arg0"].as_str().unwrap_or("");
    // Python-internal errors (AttributeError on a missing attribute) need only fail at the
    // same event; Keras-authored texts must match exactly.
    if ty == "AttributeError" {
        return Ok(());
    }
    if e.keras_exception() != Some(ty) || e.to_string() != arg0 {
        return Err(format!(
            "{at}: error {:?} {:?}, Keras {ty} {arg0:?}",
            e.keras_exception(),
            e.to_string()
        ));
    }
    Ok(())
}

/// Keras's warnings: tf.keras 2 warns through `logging`; Keras 3 through Python's
/// `warnings` (`UserWarning`). Both are `log` warnings here.
fn check_warnings(event: &Json, at: &str, keras: KerasVersion) -> Result<(), String> {
    let ours = take_warnings();
    let want: Vec<String> = event["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| {
            w["channel"] == "logging"
                || (keras == KerasVersion::Keras3
                    && w["channel"] == "warnings"
                    && w["category"] == "UserWarning")
        })
        .filter_map(|w| w["message"].as_str().map(str::to_owned))
        .collect();
    if ours != want {
        return Err(format!("{at}: warnings {ours:?}, Keras {want:?}"));
    }
    Ok(())
}

/// What replaying one Keras's traces gave.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: Vec<String>,
    skipped: Vec<String>,
}

#[test]
fn keras_traces_replay() {
    install_logger();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dirs: Vec<PathBuf> = match std::env::var_os("KERAS_TRACES_DIR") {
        Some(d) => vec![PathBuf::from(d)],
        None => vec![
            fixtures.join("keras-traces"),
            fixtures.join("keras-traces-keras3"),
        ],
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in &dirs {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        let mut here: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        assert!(!here.is_empty(), "no traces in {}", dir.display());
        here.sort();
        files.extend(here);
    }
    let home = std::env::current_dir().expect("cwd");
    let mut tallies: Vec<(KerasVersion, Tally)> = Vec::new();
    for file in &files {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(file).expect("read trace");
        let trace: Json = serde_json::from_str(&text).expect("trace JSON");
        let keras = keras_of(&trace);
        if !tallies.iter().any(|(k, _)| *k == keras) {
            tallies.push((keras, Tally::default()));
        }
        let tally = tallies
            .iter_mut()
            .find(|(k, _)| *k == keras)
            .map(|(_, t)| t)
            .expect("a tally for this Keras");
        if let Some(why) = python_only_input(&trace) {
            tally.skipped.push(format!("{name}: {why}"));
            continue;
        }
        let work = tempfile::tempdir().expect("temp folder");
        // A trace with an input this harness cannot read fails alone, naming why.
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| replay(&trace, work.path())))
                .unwrap_or_else(|panic| {
                    let why = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(format!("cannot replay: {why}"))
                });
        std::env::set_current_dir(&home).expect("back to start");
        match outcome {
            Ok(()) => tally.passed += 1,
            Err(why) => tally.failed.push(format!("{name}: {why}")),
        }
    }
    let mut all_failed = Vec::new();
    for (keras, tally) in &tallies {
        for s in &tally.skipped {
            println!("{keras:?} skipped {s}");
        }
        for f in &tally.failed {
            println!("{keras:?} FAILED {f}");
            all_failed.push(format!("{keras:?} {f}"));
        }
    }
    for (keras, tally) in &tallies {
        println!(
            "keras traces ({keras:?}): {} passed, {} failed, {} skipped",
            tally.passed,
            tally.failed.len(),
            tally.skipped.len()
        );
    }
    assert!(
        all_failed.is_empty(),
        "{} traces failed:\n{}",
        all_failed.len(),
        all_failed.join("\n")
    );
}
