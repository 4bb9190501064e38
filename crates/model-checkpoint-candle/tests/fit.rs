//! Real training on the bundled digits with ModelCheckpoint: the best checkpoint reloads to
//! exactly the best score, runs repeat bit for bit, and loading checks names, shapes, dtypes.

use model_checkpoint::load::LoadOptions;
use model_checkpoint::store::{CheckpointFile, Verify};
use model_checkpoint::{Direction, Error as CoreError, Mode, ModelCheckpoint};
use model_checkpoint_candle::{
    Adam, CandleStep, Dataset, Error, FitOptions, Model, ParamsAdam, Trainer,
};

fn trainer(seed: u64) -> Trainer {
    let model = Model::mlp(&[64, 32, 10], seed).expect("model");
    let optimizer = Adam::new(model.named_vars(), ParamsAdam::default().lr(0.003)).expect("adam");
    Trainer::new(CandleStep::new(model, optimizer))
}

fn data() -> Dataset {
    Dataset::digits().scaled().shuffled(3)
}

#[test]
fn best_checkpoint_reloads_to_exactly_the_best_val_accuracy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("best.safetensors");
    let mut checkpoint = ModelCheckpoint::new(&path)
        .monitor("val_accuracy")
        .mode(Mode::Max)
        .save_best_only(true)
        .save_weights_only(true);
    let mut t = trainer(11);
    let options = FitOptions::new(6).validation_split(0.2).verbose(0).seed(5);
    let history = t
        .fit(&data(), &options, &mut [&mut checkpoint])
        .expect("fit");

    let (best_epoch, best) = history
        .best("val_accuracy", Direction::Maximize)
        .expect("a best epoch");
    assert_eq!(checkpoint.best().as_f64(), Some(best));
    // The final weights are not the best ones unless the last epoch was the best.
    let fresh = Model::mlp(&[64, 32, 10], 99).expect("model");
    fresh.load_weights(&path).expect("load best");
    let (_, val) = data().split_last(0.2).expect("split");
    let evaluator = Trainer::new(CandleStep::new(
        fresh,
        Adam::new(vec![], ParamsAdam::default()).expect("adam"),
    ));
    let reloaded = evaluator.evaluate(&val, 32).expect("evaluate");
    assert_eq!(
        reloaded.get("accuracy").and_then(|v| v.as_f64()),
        Some(best),
        "best epoch {best_epoch}"
    );
    assert_eq!(
        reloaded.get("loss").and_then(|v| v.as_f64()),
        history.logs[history
            .epochs
            .iter()
            .position(|&e| e == best_epoch)
            .expect("epoch")]
        .get("val_loss")
        .and_then(|v| v.as_f64())
    );
}

#[test]
fn same_seed_same_data_gives_identical_weights() {
    let run = || {
        let dir = tempfile::tempdir().expect("tempdir");
        // The same run id too: then the whole files are equal.
        let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors"))
            .save_weights_only(true)
            .with_run_id("5eed");
        let mut t = trainer(4);
        t.fit(
            &data(),
            &FitOptions::new(3).validation_split(0.2).verbose(0).seed(8),
            &mut [&mut cb],
        )
        .expect("fit");
        let file =
            CheckpointFile::open(&dir.path().join("w3.safetensors"), Verify::Full).expect("open");
        let tensors: Vec<(String, Vec<u8>)> = file
            .tensors()
            .map(|t| (t.name.to_owned(), file.read(t.name).expect("read")))
            .collect();
        let bytes = std::fs::read(dir.path().join("w3.safetensors")).expect("read");
        (tensors, bytes)
    };
    let (a, file_a) = run();
    let (b, file_b) = run();
    assert_eq!(a, b);
    assert_eq!(file_a, file_b, "whole files are identical too");
    // A different seed trains differently.
    let mut other = trainer(5);
    other
        .fit(&data(), &FitOptions::new(1).verbose(0), &mut [])
        .expect("fit");
    assert_ne!(
        other.step().model().named_vars()[1]
            .1
            .as_tensor()
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("values"),
        a.iter()
            .find(|(n, _)| n == "dense_0.weight")
            .map(|(_, d)| d
                .chunks(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<_>>())
            .expect("tensor")
    );
}

#[test]
fn loading_names_the_tensor_that_does_not_fit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("w.safetensors");
    let mut cb = ModelCheckpoint::new(&path).save_weights_only(true);
    trainer(1)
        .fit(&data(), &FitOptions::new(1).verbose(0), &mut [&mut cb])
        .expect("fit");

    let wider = Model::mlp(&[64, 48, 10], 1).expect("model");
    let before = wider.named_vars()[0]
        .1
        .as_tensor()
        .to_vec1::<f32>()
        .expect("bias");
    // Strict: one error names every tensor that does not fit.
    match wider.load_weights(&path) {
        Err(Error::Checkpoint(CoreError::LoadMismatch { report, .. })) => {
            let bias = report
                .mismatched
                .iter()
                .find(|m| m.found.name == "dense_0.bias")
                .expect("dense_0.bias named");
            assert_eq!(
                (&bias.expected.shape, &bias.found.shape),
                (&vec![48], &vec![32])
            );
            let names: Vec<&str> = report
                .mismatched
                .iter()
                .map(|m| m.found.name.as_str())
                .collect();
            assert_eq!(names, ["dense_0.bias", "dense_0.weight", "dense_1.weight"]);
        }
        other => panic!("expected a load mismatch, got {other:?}"),
    }
    // All or nothing: nothing changed.
    assert_eq!(
        wider.named_vars()[0]
            .1
            .as_tensor()
            .to_vec1::<f32>()
            .expect("bias"),
        before
    );

    let deeper = Model::mlp(&[64, 32, 10, 10], 1).expect("model");
    let err = deeper.load_weights(&path).expect_err("missing layer");
    assert!(
        matches!(&err, Error::Checkpoint(CoreError::LoadMismatch { report, .. })
            if report.missing == ["dense_2.bias", "dense_2.weight"]),
        "{err}"
    );

    let shallower = Model::mlp(&[64, 10], 1).expect("model");
    let err = shallower.load_weights(&path).expect_err("extra layer");
    assert!(
        matches!(&err, Error::Checkpoint(CoreError::LoadMismatch { report, .. })
            if report.unexpected == ["dense_1.bias", "dense_1.weight"]),
        "{err}"
    );
    // Not strict: what matches loads, the rest is reported (PyTorch's strict=False).
    let report = deeper
        .load_weights_with(&path, LoadOptions::default().strict(false))
        .expect("non-strict");
    assert_eq!(report.missing, ["dense_2.bias", "dense_2.weight"]);
}

#[test]
fn a_failed_save_stops_fit_with_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("taken.safetensors")).expect("dir");
    let mut cb = ModelCheckpoint::new(dir.path().join("taken.safetensors"));
    let err = trainer(1)
        .fit(&data(), &FitOptions::new(3).verbose(0), &mut [&mut cb])
        .expect_err("a folder is in the way");
    assert!(
        err.to_string()
            .contains("Filepath used is an existing directory"),
        "{err}"
    );
    assert_eq!(cb.saves(), 0);
}

#[test]
fn background_saves_during_fit_equal_foreground_saves() {
    let run = |background: bool| {
        let dir = tempfile::tempdir().expect("tempdir");
        // Every batch: copies overlap the following steps all the time.
        let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}-{batch:02d}.safetensors"))
            .save_weights_only(true)
            .save_freq(model_checkpoint::SaveFreq::Batches(1))
            .background(background);
        let mut t = trainer(6);
        t.fit(
            &data(),
            &FitOptions::new(2).batch_size(128).verbose(0),
            &mut [&mut cb],
        )
        .expect("fit");
        // Every tensor's bytes and the metadata, but for the run id (each run has its own).
        let content = |p: &std::path::Path| {
            let file = CheckpointFile::open(p, Verify::Full).expect("open");
            let tensors: Vec<(String, Vec<u8>)> = file
                .tensors()
                .map(|t| (t.name.to_owned(), file.read(t.name).expect("read")))
                .collect();
            let mut info = file.info().clone();
            info.remove("run_id");
            info.remove("header_checksum");
            (tensors, info)
        };
        let mut files: Vec<(String, _)> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .map(|p| {
                (
                    p.file_name().expect("name").to_string_lossy().into_owned(),
                    content(&p),
                )
            })
            .collect();
        files.sort();
        files
    };
    let fg = run(false);
    let bg = run(true);
    assert_eq!(fg.len(), 2 * 15);
    assert_eq!(
        fg.iter().map(|f| &f.0).collect::<Vec<_>>(),
        bg.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((name, a), (_, b)) in fg.iter().zip(&bg) {
        assert!(
            a == b,
            "{name} differs between foreground and background saving"
        );
    }
}

#[test]
fn any_loss_and_targets_train_and_mismatched_outputs_are_refused_up_front() {
    use model_checkpoint_candle::{Loss, Metric};
    // A classifier whose output is narrower than the classes: a clear error, before any
    // step (it used to die inside candle with "gather invalid index").
    let narrow = Model::mlp(&[64, 8, 5], 0).expect("model");
    let opt = Adam::new(narrow.named_vars(), ParamsAdam::default()).expect("adam");
    let err = Trainer::new(CandleStep::new(narrow, opt))
        .fit(&data(), &FitOptions::new(1).verbose(0), &mut [])
        .expect_err("5 outputs for 10 classes");
    assert!(
        err.to_string()
            .contains("5 outputs per sample, but the data has 10 classes"),
        "{err}"
    );

    // Regression: float targets, mean squared error, mean absolute error as a metric, and a
    // loss of one's own; the logs carry what was asked for.
    let x: Vec<f32> = (0..200).map(|i| i as f32 / 100.0 - 1.0).collect();
    let y: Vec<f32> = x.iter().map(|v| 3.0 * v - 0.5).collect();
    // Shuffled once, so that the held-out 20% is not all at one end.
    let reg = Dataset::regression(x, 1, y, 1).expect("data").shuffled(1);
    for loss in [
        Loss::MeanSquaredError,
        Loss::MeanAbsoluteError,
        Loss::custom(|p, t| (p - t)?.sqr()?.mean_all()),
    ] {
        let model = Model::mlp(&[1, 16, 1], 0).expect("model");
        let opt = Adam::new(model.named_vars(), ParamsAdam::default().lr(0.02)).expect("adam");
        let mut t = Trainer::new(
            CandleStep::new(model, opt).compile(loss.clone(), &[Metric::MeanAbsoluteError]),
        );
        let history = t
            .fit(
                &reg,
                &FitOptions::new(30).validation_split(0.2).verbose(0),
                &mut [],
            )
            .expect("fit");
        let last = history.last().expect("logs");
        for key in ["loss", "mae", "val_loss", "val_mae"] {
            assert!(last.contains(key), "{loss:?}: {key} in {last:?}");
        }
        assert!(!last.contains("accuracy"));
        let mae = last.get("val_mae").and_then(|v| v.as_f64()).expect("mae");
        assert!(mae < 0.2, "{loss:?} learned a line: val_mae {mae}");
    }
    // The wrong kind of target for the loss is refused too.
    let model = Model::mlp(&[1, 4, 1], 0).expect("model");
    let opt = Adam::new(model.named_vars(), ParamsAdam::default()).expect("adam");
    let err = Trainer::new(CandleStep::new(model, opt))
        .fit(&reg, &FitOptions::new(1).verbose(0), &mut [])
        .expect_err("cross-entropy on float targets");
    assert!(err.to_string().contains("takes class labels"), "{err}");
}
