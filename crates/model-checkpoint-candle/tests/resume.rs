//! Resume is exact: training N epochs straight, and training, stopping (or crashing) and
//! resuming from a full checkpoint, give byte-identical weights and identical logs; the best
//! score of every callback carries over.

use std::path::Path;

use model_checkpoint::store::{latest_full, CheckpointFile, Verify};
use model_checkpoint::Error as CoreError;
use model_checkpoint::{
    Callback, Context, Error as CkptError, HookResult, Logs, ModelCheckpoint, SaveFreq,
};
use model_checkpoint_candle::{
    Adam, CandleStep, Dataset, FitOptions, History, Model, ParamsAdam, ParamsSgd, Sgd, Trainer,
};
use model_checkpoint_fit::Error;

const EPOCHS: usize = 6;

fn trainer(init_seed: u64) -> Trainer {
    let model = Model::mlp(&[64, 24, 10], init_seed).expect("model");
    let optimizer = Adam::new(model.named_vars(), ParamsAdam::adamw().lr(0.003)).expect("adam");
    Trainer::new(CandleStep::new(model, optimizer))
}

fn data() -> Dataset {
    Dataset::digits().scaled().shuffled(1)
}

fn options(epochs: usize) -> FitOptions<'static> {
    FitOptions::new(epochs)
        .validation_split(0.25)
        .batch_size(40)
        .verbose(0)
        .seed(77)
}

fn weight_bytes(t: &Trainer) -> Vec<(String, Vec<u8>)> {
    t.step()
        .model()
        .named_vars()
        .into_iter()
        .map(|(n, v)| {
            let values = v
                .as_tensor()
                .flatten_all()
                .and_then(|x| x.to_vec1::<f32>())
                .expect("values");
            (n, values.iter().flat_map(|x| x.to_le_bytes()).collect())
        })
        .collect()
}

/// The callbacks of every run: full checkpoints every epoch, and a best-only weights file.
/// Fixed run ids, so that the straight run's files can equal the resumed run's byte for byte.
fn callbacks(dir: &Path) -> (ModelCheckpoint, ModelCheckpoint) {
    let best = ModelCheckpoint::new(dir.join("best.safetensors"))
        .save_best_only(true)
        .save_weights_only(true)
        .with_run_id("b1");
    let full = ModelCheckpoint::new(dir.join("full.{epoch:02d}.safetensors")).with_run_id("f1");
    (best, full)
}

fn straight(dir: &Path) -> (History, Vec<(String, Vec<u8>)>, f64) {
    let (mut best, mut full) = callbacks(dir);
    let mut t = trainer(3);
    let history = t
        .fit(&data(), &options(EPOCHS), &mut [&mut best, &mut full])
        .expect("fit");
    (
        history,
        weight_bytes(&t),
        best.best().as_f64().expect("best"),
    )
}

#[test]
fn stop_and_resume_equals_training_straight() {
    // Both runs use the same folder (one after the other), so that the files, which record
    // their paths, can be compared byte for byte.
    let root = tempfile::tempdir().expect("tempdir");
    let run = root.path().join("run");
    std::fs::create_dir(&run).expect("run folder");
    let (history, weights, best) = straight(&run);
    let kept = root.path().join("straight");
    std::fs::rename(&run, &kept).expect("keep the straight run");
    std::fs::create_dir(&run).expect("run folder");

    // Train 2 of the 6 epochs, as if stopped there.
    {
        let (mut best_cb, mut full) = callbacks(&run);
        trainer(3)
            .fit(&data(), &options(2), &mut [&mut best_cb, &mut full])
            .expect("first part");
    }
    // A new process: fresh objects, a different initialisation that the resume overwrites.
    let (mut best_cb, mut full) = callbacks(&run);
    let mut t = trainer(999);
    let latest = latest_full(&run).expect("latest");
    assert!(
        latest.as_str().ends_with("full.02.safetensors"),
        "{}",
        latest.display()
    );
    let resumed = t
        .resume(&latest, &mut [&mut best_cb, &mut full])
        .expect("resume");
    assert_eq!((resumed.epoch, resumed.batches_done), (2, 0));
    assert_eq!(
        resumed.restored_callbacks.len(),
        2,
        "both callbacks restored: {resumed:?}"
    );
    assert_eq!(
        best_cb.best().as_f64(),
        history.metric("val_loss")[..2]
            .iter()
            .flatten()
            .copied()
            .reduce(f64::min)
    );
    let rest = t
        .fit(&data(), &options(EPOCHS), &mut [&mut best_cb, &mut full])
        .expect("resumed");

    assert_eq!(weight_bytes(&t), weights, "final weights identical");
    assert_eq!(rest.epochs, vec![2, 3, 4, 5]);
    assert_eq!(rest.logs, history.logs[2..].to_vec(), "logs identical");
    assert_eq!(
        best_cb.best().as_f64(),
        Some(best),
        "best score carried over"
    );
    for name in [
        "best.safetensors",
        "full.03.safetensors",
        "full.06.safetensors",
    ] {
        let x = std::fs::read(kept.join(name)).expect("straight file");
        let y = std::fs::read(run.join(name)).expect("resumed file");
        assert!(x == y, "{name} differs");
    }
}

/// Fails training at a given global batch, as a crash would end it.
struct CrashAt(usize, usize);

impl Callback for CrashAt {
    fn on_train_batch_end(&mut self, _: usize, _: &Logs, _: &mut Context<'_>) -> HookResult {
        self.1 += 1;
        if self.1 == self.0 {
            return Err(CkptError::Framework("simulated crash".into()));
        }
        Ok(model_checkpoint::Control::Continue)
    }
}

#[test]
fn resume_from_the_middle_of_an_epoch_is_exact() {
    let a = tempfile::tempdir().expect("tempdir");
    let (history, weights, _) = straight(a.path());

    let b = tempfile::tempdir().expect("tempdir");
    let every = 7;
    let mid = || {
        ModelCheckpoint::new(b.path().join("mid.safetensors")).save_freq(SaveFreq::Batches(every))
    };
    {
        let mut cb = mid();
        // 1347 samples in batches of 40 make 34 batches an epoch: the crash comes at batch
        // 19 of epoch 2, after a save at its batch 16 (global batch 84 = 12 × 7).
        let mut crash = CrashAt(34 * 2 + 19, 0);
        let err = trainer(3)
            .fit(&data(), &options(EPOCHS), &mut [&mut cb, &mut crash])
            .expect_err("crash");
        assert!(err.to_string().contains("simulated crash"));
    }
    let file = CheckpointFile::open(&b.path().join("mid.safetensors"), Verify::Full).expect("open");
    assert_eq!(file.info().get("batch").map(String::as_str), Some("16"));

    let mut cb = mid();
    let mut t = trainer(5);
    let resumed = t
        .resume(b.path().join("mid.safetensors"), &mut [&mut cb])
        .expect("resume");
    assert_eq!((resumed.epoch, resumed.batches_done), (2, 16));
    let rest = t
        .fit(&data(), &options(EPOCHS), &mut [&mut cb])
        .expect("resumed");
    assert_eq!(weight_bytes(&t), weights, "final weights identical");
    assert_eq!(
        rest.logs,
        history.logs[2..].to_vec(),
        "logs identical, the resumed epoch included"
    );
}

#[test]
fn resume_refuses_weights_only_files_and_other_optimizers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut weights =
        ModelCheckpoint::new(dir.path().join("w.safetensors")).save_weights_only(true);
    let mut full = ModelCheckpoint::new(dir.path().join("f.safetensors"));
    trainer(1)
        .fit(&data(), &options(1), &mut [&mut weights, &mut full])
        .expect("fit");

    let err = trainer(1)
        .resume(dir.path().join("w.safetensors"), &mut [])
        .expect_err("weights only");
    assert!(
        matches!(err, Error::Checkpoint(CoreError::NotAFullCheckpoint { .. })),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("a weights-only checkpoint cannot resume training"));

    let model = Model::mlp(&[64, 24, 10], 1).expect("model");
    let sgd = Sgd::new(model.named_vars(), ParamsSgd::default()).expect("sgd");
    let err = Trainer::new(CandleStep::new(model, sgd))
        .resume(dir.path().join("f.safetensors"), &mut [])
        .expect_err("optimizer");
    assert!(
        err.to_string()
            .contains("holds adamw optimizer state, this run uses sgd"),
        "{err}"
    );

    let mut t = trainer(1);
    t.resume(dir.path().join("f.safetensors"), &mut [])
        .expect("resume");
    let err = t
        .fit(&data(), &options(3).batch_size(16), &mut [])
        .expect_err("other batch size");
    assert!(err.to_string().contains("batch size 40 (now 16)"), "{err}");
}
