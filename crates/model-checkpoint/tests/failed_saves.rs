//! Nothing claimed that did not happen, nothing lost silently: a background save counts only
//! once it is durable, and its failure is returned at the next hook, at `on_train_end`, or,
//! when the callback is dropped first, logged at error level.

use std::sync::Mutex;

use model_checkpoint::{
    Callback, Checkpointable, Context, Error, HostTensor, Logs, ModelCheckpoint, NamedTensor,
    TrainingState,
};

/// Records every log line, so that a test can see what reached the log.
struct Capture;

static LINES: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LINES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

fn errors_logged() -> Vec<String> {
    LINES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|(level, _)| *level == log::Level::Error)
        .map(|(_, line)| line.clone())
        .collect()
}

struct Toy;

impl Checkpointable for Toy {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        Ok(vec![NamedTensor::new(
            "w",
            HostTensor::from_f32(vec![256, 256], &vec![0.5; 256 * 256]),
        )])
    }
    fn training_state(&self) -> Result<TrainingState<'_>, Error> {
        let mut state = TrainingState::default();
        state
            .document
            .other
            .insert("toy".into(), serde_json::json!(1));
        Ok(state)
    }
}

/// A model that hands over no training state.
struct WeightsOnly;

impl Checkpointable for WeightsOnly {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        Toy.weights()
    }
}

#[test]
fn failed_background_saves_are_never_dropped_or_claimed() {
    let _ = log::set_boxed_logger(Box::new(Capture))
        .map(|()| log::set_max_level(log::LevelFilter::Trace));
    let dir = tempfile::tempdir().expect("tempdir");
    let toy = Toy;

    // 1. While the save is pending (the fence holds its copy back), nothing claims it.
    let fence = model_checkpoint::SnapshotFence::new();
    let mut cb = ModelCheckpoint::new(dir.path().join("p{epoch}.safetensors")).background(true);
    {
        let mut ctx = Context::new(&toy).with_fence(&fence);
        cb.on_epoch_begin(0, &Logs::new(), &mut ctx).expect("begin");
        cb.on_epoch_end(0, &Logs::new(), &mut ctx)
            .expect("handed over");
    }
    assert_eq!(cb.last_saved(), None, "not durable yet");
    assert_eq!(cb.saves(), 0);
    fence.wait();
    cb.flush().expect("durable");
    assert!(cb.last_saved().is_some_and(|p| p.as_path().exists()));
    assert_eq!(cb.saves(), 1);

    // 2. A save that fails, and a callback dropped before anyone asked: logged as an error,
    // and it never claimed the file.
    std::fs::create_dir(dir.path().join("f1.safetensors")).expect("a folder in the way");
    let mut cb = ModelCheckpoint::new(dir.path().join("f{epoch}.safetensors")).background(true);
    let mut ctx = Context::new(&toy);
    cb.on_epoch_begin(0, &Logs::new(), &mut ctx).expect("begin");
    cb.on_epoch_end(0, &Logs::new(), &mut ctx)
        .expect("handed over");
    assert_eq!(cb.last_saved(), None);
    drop(cb);
    let errors = errors_logged();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("never reported") && e.contains("f1.safetensors")),
        "{errors:?}"
    );

    // 3. The same failure, collected: on_train_end returns it, and nothing is claimed.
    let mut cb = ModelCheckpoint::new(dir.path().join("f{epoch}.safetensors")).background(true);
    cb.on_epoch_begin(0, &Logs::new(), &mut ctx).expect("begin");
    cb.on_epoch_end(0, &Logs::new(), &mut ctx)
        .expect("handed over");
    let err = cb
        .on_train_end(&Logs::new(), &mut ctx)
        .expect_err("reported");
    assert!(matches!(err, Error::IsADirectory { .. }), "{err}");
    assert_eq!((cb.last_saved(), cb.saves()), (None, 0));
}

#[test]
fn a_full_save_of_a_model_without_training_state_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = WeightsOnly;
    let mut ctx = Context::new(&model);
    for background in [false, true] {
        let mut cb =
            ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors")).background(background);
        cb.on_epoch_begin(0, &Logs::new(), &mut ctx).expect("begin");
        let err = cb
            .on_epoch_end(0, &Logs::new(), &mut ctx)
            .expect_err("a full checkpoint that could not resume");
        assert!(matches!(err, Error::NoTrainingState), "{err}");
        assert!(!dir.path().join("w1.safetensors").exists());
    }
    // Weights only is what such a model can save.
    let mut cb =
        ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors")).save_weights_only(true);
    cb.on_epoch_begin(0, &Logs::new(), &mut ctx).expect("begin");
    cb.on_epoch_end(0, &Logs::new(), &mut ctx).expect("weights");
    assert!(dir.path().join("w1.safetensors").exists());
}

#[test]
fn an_epoch_or_batch_index_beyond_what_a_checkpoint_holds_is_refused_by_name() {
    // Hooks take the loop's counters as they come (from Python, any int): past 2^53 the
    // name's `epoch + 1` and the saved counters would be wrong, and `i64` would overflow.
    let dir = tempfile::tempdir().expect("tempdir");
    let model = Toy;
    let mut ctx = Context::new(&model);
    let huge = [1usize << 53, 1usize << 54, i64::MAX as usize, usize::MAX];
    for n in huge {
        let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors"))
            .save_weights_only(true)
            .save_freq(model_checkpoint::SaveFreq::Batches(1));
        let err = cb
            .on_epoch_begin(n, &Logs::new(), &mut ctx)
            .expect_err("epoch");
        assert!(
            matches!(err, Error::CounterTooLarge { what: "epoch", value } if value == n as u64),
            "{err}"
        );
        let err = cb
            .on_epoch_end(n, &Logs::new(), &mut ctx)
            .expect_err("epoch");
        assert!(err.to_string().contains(&n.to_string()), "{err}");
        cb.on_epoch_begin(0, &Logs::new(), &mut ctx).expect("begin");
        let err = cb
            .on_train_batch_end(n, &Logs::new(), &mut ctx)
            .expect_err("batch");
        assert!(
            matches!(err, Error::CounterTooLarge { what: "batch", .. }),
            "{err}"
        );
    }
    // The largest that a checkpoint holds still saves.
    let max = (1usize << 53) - 1;
    let mut cb =
        ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors")).save_weights_only(true);
    cb.on_epoch_begin(max, &Logs::new(), &mut ctx)
        .expect("begin");
    cb.on_epoch_end(max, &Logs::new(), &mut ctx).expect("save");
    assert!(dir
        .path()
        .join(format!("w{}.safetensors", max + 1))
        .exists());
    assert_eq!(
        std::fs::read_dir(dir.path())
            .expect("list")
            .filter(|e| e
                .as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".safetensors")))
            .count(),
        1
    );
}
