//! Where two features meet, one test per class (the combination property test,
//! `combinations.rs`, composes them at random): two callbacks and the order of their list,
//! hooks called one by one, Keras's formatting against this crate's name bounds, one name
//! for writing and reading, nothing printed before a refused save, and versions under
//! background saves.

use model_checkpoint::store::Name;
use std::sync::{Arc, Mutex};

use model_checkpoint::restore::{restore, restore_with_options, RestoreOptions};
use model_checkpoint::store::{CheckpointFile, LoopState, Meta, TrainingDocument, Verify};
use model_checkpoint::TensorSource;
use model_checkpoint::{
    Callback, CallbackList, Checkpointable, Context, Dtype, Error, HostTensor, Logs, Mode,
    ModelCheckpoint, NamedTensor, TrainingState,
};

/// A model with weights and a training state (a step counter).
#[derive(Default)]
struct Model {
    step: u64,
}

impl Checkpointable for Model {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        Ok(vec![NamedTensor::new(
            "w",
            HostTensor::from_f32(vec![2], &[self.step as f32, 1.0]),
        )])
    }
    fn training_state(&self) -> Result<TrainingState<'_>, Error> {
        let mut state = TrainingState::default();
        state.document.loop_state = Some(LoopState {
            step: self.step,
            ..LoopState::default()
        });
        Ok(state)
    }
    fn restore_weights(&mut self, stored: &dyn TensorSource) -> Result<(), Error> {
        stored.read("w", Dtype::F32, &[2]).map(|_| ())
    }
    fn restore_training_state(
        &mut self,
        _: &dyn TensorSource,
        document: &TrainingDocument,
    ) -> Result<(), Error> {
        self.step = document.loop_state.as_ref().map_or(0, |l| l.step);
        Ok(())
    }
}

/// A model that hands over weights only.
struct WeightsOnly;

impl Checkpointable for WeightsOnly {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        Ok(vec![NamedTensor::new(
            "w",
            HostTensor::from_f32(vec![1], &[1.0]),
        )])
    }
}

/// Standard output a callback printed, shared with the test.
#[derive(Clone, Default)]
struct Printed(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Printed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Printed {
    fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}

fn every_epoch(dir: &std::path::Path) -> ModelCheckpoint {
    ModelCheckpoint::new(dir.join("full.{epoch:02d}.safetensors"))
}

fn best_weights(dir: &std::path::Path, out: &Printed) -> ModelCheckpoint {
    ModelCheckpoint::new(dir.join("best.safetensors"))
        .monitor("val_loss")
        .mode(Mode::Min)
        .save_best_only(true)
        .save_weights_only(true)
        .verbose(1)
        .output(out.clone())
}

/// Epochs `from..to` of a loop of one list: the full saver first or last.
fn epochs(
    model: &mut Model,
    callbacks: &mut [&mut dyn Callback],
    values: &[f64],
    from: usize,
    to: usize,
) {
    let mut list = CallbackList::borrowed(callbacks);
    for (epoch, value) in values.iter().enumerate().take(to).skip(from) {
        model.step += 1;
        let mut ctx = Context::new(&*model).with_global_step(model.step);
        list.on_epoch_begin(epoch, &Logs::new(), &mut ctx)
            .expect("on_epoch_begin");
        list.on_epoch_end(epoch, &Logs::from([("val_loss", *value)]), &mut ctx)
            .expect("on_epoch_end");
    }
}

#[test]
fn two_callbacks_resume_with_the_same_best_whatever_their_order() {
    for full_first in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let values = [0.5, 0.3, 0.4];
        let out = Printed::default();
        let mut model = Model::default();
        let (mut full, mut best) = (every_epoch(dir.path()), best_weights(dir.path(), &out));
        {
            let mut list: Vec<&mut dyn Callback> = if full_first {
                vec![&mut full, &mut best]
            } else {
                vec![&mut best, &mut full]
            };
            epochs(&mut model, &mut list, &values, 0, 2);
        }
        // A fresh process resumes from the full checkpoint of epoch 2.
        let mut model = Model::default();
        let out = Printed::default();
        let (mut full, mut best) = (every_epoch(dir.path()), best_weights(dir.path(), &out));
        let file = CheckpointFile::open(&dir.path().join("full.02.safetensors"), Verify::Full)
            .expect("epoch 2");
        restore(&file, &mut model, &mut [&mut full, &mut best]).expect("restore");
        assert_eq!(best.best().as_f64(), Some(0.3), "full first: {full_first}");
        let before = std::fs::read(dir.path().join("best.safetensors")).expect("best");
        {
            let mut list: Vec<&mut dyn Callback> = if full_first {
                vec![&mut full, &mut best]
            } else {
                vec![&mut best, &mut full]
            };
            epochs(&mut model, &mut list, &values, 2, 3);
        }
        // 0.4 is worse than 0.3: not "improved", and the real best is not replaced.
        assert_eq!(
            out.text(),
            "\nEpoch 3: val_loss did not improve from 0.30000\n",
            "full first: {full_first}"
        );
        assert_eq!(
            std::fs::read(dir.path().join("best.safetensors")).expect("best"),
            before
        );
    }
}

#[test]
fn a_callback_that_refuses_its_state_leaves_the_model_and_the_others_as_they_were() {
    // The second callback's state was kept in mode min; resumed in mode max it is
    // refused, and nothing is restored: not the model's step, not the first's best.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Printed::default();
    let mut model = Model::default();
    let (mut full, mut best) = (every_epoch(dir.path()), best_weights(dir.path(), &out));
    epochs(
        &mut model,
        &mut [&mut best as &mut dyn Callback, &mut full],
        &[0.5, 0.3],
        0,
        2,
    );
    let file = CheckpointFile::open(&dir.path().join("full.02.safetensors"), Verify::Full)
        .expect("epoch 2");
    let mut resumed = Model { step: 7 };
    let mut full = every_epoch(dir.path());
    let mut best = best_weights(dir.path(), &out).mode(Mode::Max);
    let fresh = full.best();
    let refused = restore(&file, &mut resumed, &mut [&mut full, &mut best]);
    let Err(err) = refused else {
        panic!("a state kept in mode min was restored into mode max");
    };
    assert!(err.to_string().contains("mode \"min\""), "{err}");
    assert_eq!(resumed.step, 7, "the model was restored before the refusal");
    assert_eq!(
        full.best(),
        fresh,
        "the first callback was restored before the refusal"
    );
}

#[test]
fn hooks_called_one_by_one_are_told_that_a_state_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Printed::default();
    let model = Model { step: 1 };
    let (mut full, mut best) = (every_epoch(dir.path()), best_weights(dir.path(), &out));
    // Each callback's hooks called on its own: each full file holds only its own state.
    let mut ctx = Context::new(&model).with_global_step(1);
    let logs = Logs::from([("val_loss", 0.5)]);
    full.on_epoch_end(0, &logs, &mut ctx).expect("full");
    best.on_epoch_end(0, &logs, &mut ctx).expect("best");
    let file =
        CheckpointFile::open(&dir.path().join("full.01.safetensors"), Verify::Full).expect("file");
    let (mut full, mut best) = (every_epoch(dir.path()), best_weights(dir.path(), &out));
    let restored = restore(&file, &mut Model::default(), &mut [&mut full, &mut best])
        .expect("a warning, not an error");
    assert_eq!(
        restored.missing_callbacks,
        [format!(
            "ModelCheckpoint({})",
            dir.path().join("best.safetensors").display()
        )]
    );
    let strict = restore_with_options(
        &file,
        &mut Model::default(),
        &mut [&mut full, &mut best],
        RestoreOptions::default().strict(true),
    );
    assert!(
        matches!(strict, Err(Error::MissingCallbackState { .. })),
        "{strict:?}"
    );
}

#[test]
fn keras_only_formats_a_name_it_never_creates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Printed::default();
    // A huge value that does not improve makes a name of over 255 bytes, which Keras only
    // formats: it prints "did not improve", and so does this.
    let mut cb = ModelCheckpoint::new(dir.path().join("w-{val_loss:f}.safetensors"))
        .monitor("val_loss")
        .mode(Mode::Min)
        .save_best_only(true)
        .save_weights_only(true)
        .verbose(1)
        .output(out.clone());
    let model = Model::default();
    let mut ctx = Context::new(&model);
    cb.on_epoch_end(0, &Logs::from([("val_loss", 0.5)]), &mut ctx)
        .expect("saves");
    cb.on_epoch_end(1, &Logs::from([("val_loss", 1e300)]), &mut ctx)
        .expect("does not improve: nothing created, nothing refused");
    assert!(
        out.text()
            .ends_with("\nEpoch 2: val_loss did not improve from 0.50000\n"),
        "{}",
        out.text()
    );
    // One that improves is created: Keras prints, then its save fails (OSError), as here.
    let out = Printed::default();
    let mut cb = ModelCheckpoint::new(dir.path().join("m-{val_loss:f}.safetensors"))
        .monitor("val_loss")
        .mode(Mode::Max)
        .save_best_only(true)
        .save_weights_only(true)
        .verbose(1)
        .output(out.clone());
    let failed = cb.on_epoch_end(0, &Logs::from([("val_loss", 1e300)]), &mut ctx);
    assert!(
        matches!(failed, Err(Error::NameTooLong { .. })),
        "{failed:?}"
    );
    assert_eq!(
        failed.err().and_then(|e| e.keras_exception()),
        Some("OSError")
    );
    assert!(
        out.text().contains("improved from -inf to"),
        "{}",
        out.text()
    );
}

#[test]
fn a_dot_dot_path_is_one_name_for_writing_reading_and_reporting() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `ck/new` never exists: the name resolves lexically, for writes and reads alike.
    let template = dir.path().join("ck/new/../w{epoch}.safetensors");
    let mut cb = ModelCheckpoint::new(&template).save_weights_only(true);
    let model = Model::default();
    cb.on_epoch_end(
        0,
        &Logs::from([("val_loss", 0.5)]),
        &mut Context::new(&model),
    )
    .expect("save");
    let saved = cb.last_saved().expect("saved").as_path().to_path_buf();
    assert_eq!(saved, dir.path().join("ck/w1.safetensors"));
    assert!(!dir.path().join("ck/new").exists());
    CheckpointFile::open(&saved, Verify::Full).expect("what last_saved names");
    CheckpointFile::open(&dir.path().join("ck/new/../w1.safetensors"), Verify::Full)
        .expect("the name as formatted");
}

#[test]
fn nothing_is_printed_before_a_full_save_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Printed::default();
    let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors"))
        .verbose(1)
        .output(out.clone());
    let refused = cb.on_epoch_end(
        0,
        &Logs::from([("val_loss", 0.5)]),
        &mut Context::new(&WeightsOnly),
    );
    assert!(
        matches!(refused, Err(Error::NoTrainingState)),
        "{refused:?}"
    );
    assert_eq!(
        out.text(),
        "",
        "no 'saving model to' for a save that cannot happen"
    );
    assert!(!dir.path().join("w1.safetensors").exists());
}

#[test]
fn versions_do_not_depend_on_when_background_saves_finish() {
    for background in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cb = ModelCheckpoint::new(dir.path().join("m.safetensors"))
            .overwrite(false)
            .keep_last(1)
            .background(background);
        let mut model = Model::default();
        for epoch in 0..4 {
            model.step += 1;
            let mut ctx = Context::new(&model).with_global_step(model.step);
            cb.on_epoch_end(epoch, &Logs::from([("val_loss", 0.5)]), &mut ctx)
                .expect("save");
        }
        cb.flush().expect("flush");
        // Versions only go up: retention freed `m`, but the fourth save is still `m-v3`.
        assert_eq!(
            cb.last_saved().map(Name::as_path),
            Some(dir.path().join("m-v3.safetensors").as_path()),
            "background: {background}"
        );
        let file =
            CheckpointFile::open(&dir.path().join("m-v3.safetensors"), Verify::Full).expect("m-v3");
        assert_eq!(Meta::from_info(file.info()).expect("meta").epoch, Some(4));
    }
}

/// The signals are the process's: the tests in this binary that raise one take turns.
#[cfg(unix)]
static SIGNALS: Mutex<()> = Mutex::new(());

#[cfg(unix)]
fn signals_to_myself() -> std::sync::MutexGuard<'static, ()> {
    SIGNALS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Epochs `from..4` of 3 batches each with `cb`'s hooks called directly, SIGTERM raised
/// before the hook of `signal_at` (epoch, batch); returns whether training was interrupted.
#[cfg(unix)]
fn signalled_run(
    cb: &mut ModelCheckpoint,
    model: &mut Model,
    from: (usize, usize),
    signal_at: Option<(usize, usize)>,
) -> bool {
    use model_checkpoint::Control;
    cb.on_train_begin(&Logs::new(), &mut Context::new(&*model))
        .expect("on_train_begin");
    let mut interrupted = false;
    'epochs: for epoch in from.0..4 {
        cb.on_epoch_begin(epoch, &Logs::new(), &mut Context::new(&*model))
            .expect("on_epoch_begin");
        let first = if epoch == from.0 { from.1 } else { 0 };
        for batch in first..3 {
            model.step += 1;
            if signal_at == Some((epoch, batch)) {
                // SAFETY: raising a signal on this thread; the callback installed its
                // handler (a flag) at on_train_begin.
                unsafe {
                    libc::raise(libc::SIGTERM);
                }
            }
            let mut ctx = Context::new(&*model).with_global_step(model.step);
            let control = cb
                .on_train_batch_end(batch, &Logs::from([("loss", 1.0)]), &mut ctx)
                .expect("on_train_batch_end");
            if control == Control::Interrupt {
                interrupted = true;
                break 'epochs;
            }
        }
        let mut ctx = Context::new(&*model).with_global_step(model.step);
        cb.on_epoch_end(epoch, &Logs::from([("val_loss", 0.5)]), &mut ctx)
            .expect("on_epoch_end");
    }
    cb.on_train_end(&Logs::new(), &mut Context::new(&*model))
        .expect("on_train_end");
    interrupted
}

#[cfg(unix)]
#[test]
fn a_save_on_a_signal_is_what_latest_resumes_and_a_completed_run_retires_it() {
    let _turn = signals_to_myself();
    // Signalled inside epoch 1 (before any save), and inside epoch 3 (after epoch 2's).
    for epoch in [0usize, 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let make = || {
            ModelCheckpoint::new(dir.path().join("w.{epoch:02d}.safetensors"))
                .save_on_interrupt(true)
        };
        let mut model = Model::default();
        assert!(signalled_run(
            &mut make(),
            &mut model,
            (0, 0),
            Some((epoch, 1))
        ));
        let interrupt = dir.path().join("interrupted.safetensors");
        // What a requeued job runs: a fresh process, `latest`.
        let mut cb = make();
        assert_eq!(
            cb.latest().expect("latest"),
            interrupt,
            "signalled in epoch {}",
            epoch + 1
        );
        let file = CheckpointFile::open(&interrupt, Verify::Full).expect("interrupt file");
        let mut resumed = Model::default();
        let restored = restore(&file, &mut resumed, &mut [&mut cb]).expect("restore");
        assert_eq!(resumed.step, model.step, "the partial epoch is kept");
        assert_eq!(
            (restored.meta.epoch, restored.meta.batch),
            (Some(epoch as u64 + 1), Some(2))
        );
        assert!(!signalled_run(&mut cb, &mut resumed, (epoch, 2), None));
        // Completed: the interrupt file is gone, and latest is the run's final checkpoint.
        assert!(!interrupt.exists());
        assert_eq!(
            make().latest().expect("latest"),
            dir.path().join("w.04.safetensors")
        );
        assert_eq!(resumed.step, 12);
    }
}

#[cfg(unix)]
#[test]
fn two_callbacks_saving_on_a_signal_each_save_it_whatever_their_order() {
    use model_checkpoint::Control;
    let _turn = signals_to_myself();
    for first in [0, 1] {
        let dirs = [0, 1].map(|_| tempfile::tempdir().expect("tempdir"));
        let make = |i: usize| {
            ModelCheckpoint::new(dirs[i].path().join("w.{epoch:02d}.safetensors"))
                .save_on_interrupt(true)
        };
        let (mut a, mut b) = (make(first), make(1 - first));
        let mut model = Model::default();
        {
            let mut callbacks: Vec<&mut dyn Callback> = vec![&mut a, &mut b];
            let mut list = CallbackList::borrowed(&mut callbacks);
            list.on_train_begin(&Logs::new(), &mut Context::new(&model))
                .expect("on_train_begin");
            list.on_epoch_begin(0, &Logs::new(), &mut Context::new(&model))
                .expect("on_epoch_begin");
            model.step = 1;
            // SAFETY: raising a signal on this thread; the callbacks hold it as a flag.
            unsafe {
                libc::raise(libc::SIGTERM);
            }
            let mut ctx = Context::new(&model).with_global_step(1);
            let control = list
                .on_train_batch_end(0, &Logs::from([("loss", 1.0)]), &mut ctx)
                .expect("on_train_batch_end");
            assert_eq!(control, Control::Interrupt);
            list.on_train_end(&Logs::new(), &mut Context::new(&model))
                .expect("on_train_end");
        }
        for (i, dir) in dirs.iter().enumerate() {
            let interrupt = dir.path().join("interrupted.safetensors");
            let file = CheckpointFile::open(&interrupt, Verify::Full)
                .unwrap_or_else(|e| panic!("first {first}: {}: {e}", interrupt.display()));
            assert_eq!(Meta::from_info(file.info()).expect("meta").batch, Some(1));
            assert_eq!(make(i).latest().expect("latest"), interrupt);
        }
        // The request was every callback's, once: the next fit is not interrupted.
        let mut c = make(0);
        assert!(!signalled_run(&mut c, &mut model, (0, 0), None));
    }
}

#[cfg(unix)]
#[test]
#[ignore = "helper: run as a child process by the test below"]
fn signals_child() {
    let Ok(stage) = std::env::var("CKPT_SIGNALS_CHILD") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb =
        ModelCheckpoint::new(dir.path().join("w.{epoch:02d}.safetensors")).save_on_interrupt(true);
    let mut model = Model::default();
    match stage.as_str() {
        "after on_train_end" => {
            assert!(!signalled_run(&mut cb, &mut model, (0, 0), None));
        }
        "after the last hook" => {
            // Where the saves go is the parent's, which looks at them after this ends.
            let dir = std::path::PathBuf::from(std::env::var("CKPT_SIGNALS_DIR").expect("dir"));
            let mut cb = ModelCheckpoint::new(dir.join("w.{epoch:02d}.safetensors"))
                .save_on_interrupt(true)
                .background(true);
            let mut ctx = Context::new(&model);
            cb.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
            model.step = 1;
            let mut ctx = Context::new(&model).with_global_step(1);
            cb.on_epoch_end(0, &Logs::from([("val_loss", 0.5)]), &mut ctx)
                .expect("on_epoch_end");
            // SAFETY: raising a signal on this thread, held by the callback as a flag.
            unsafe {
                libc::raise(libc::SIGTERM);
            }
            cb.on_train_end(&Logs::new(), &mut ctx).expect("end");
            println!("survived a SIGTERM no hook acted on");
            return;
        }
        _ => {
            // Training ended by an error: the callback is dropped without on_train_end.
            cb.on_train_begin(&Logs::new(), &mut Context::new(&model))
                .expect("on_train_begin");
            drop(cb);
        }
    }
    // SAFETY: raising a signal on this thread.
    unsafe {
        libc::raise(libc::SIGTERM);
    }
    println!("survived SIGTERM");
}

#[cfg(unix)]
#[test]
fn once_no_callback_holds_the_signals_sigterm_ends_the_process_again() {
    use std::os::unix::process::ExitStatusExt;
    for stage in ["after on_train_end", "after a drop", "after the last hook"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args(["--ignored", "--exact", "signals_child", "--nocapture"])
            .env("CKPT_SIGNALS_CHILD", stage)
            .env("CKPT_SIGNALS_DIR", dir.path())
            .output()
            .expect("child");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGTERM),
            "{stage}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if stage == "after the last hook" {
            // The signal came after the last hook that could act on it: it ends the
            // process once the epoch's background save is durable, not before, and not
            // never.
            CheckpointFile::open(&dir.path().join("w.01.safetensors"), Verify::Full)
                .expect("the last save, made before the signal ended the process");
        }
    }
}

#[test]
fn a_template_that_names_the_interrupt_file_keeps_its_own_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let template = dir.path().join("interrupted.safetensors");
    let mut model = Model::default();
    // Without saves on a signal it is an ordinary name: a completed run keeps its file.
    let mut cb = ModelCheckpoint::new(&template);
    for epoch in 0..2 {
        model.step += 1;
        let mut ctx = Context::new(&model).with_global_step(model.step);
        cb.on_epoch_end(epoch, &Logs::from([("val_loss", 0.5)]), &mut ctx)
            .expect("save");
    }
    cb.on_train_end(&Logs::new(), &mut Context::new(&model))
        .expect("end");
    assert!(template.exists(), "the run's only checkpoint was removed");
    assert_eq!(
        ModelCheckpoint::new(&template).latest().expect("latest"),
        template
    );
    // With them, the name is reserved, refused before training.
    let mut cb = ModelCheckpoint::new(&template).save_on_interrupt(true);
    let refused = cb.on_train_begin(&Logs::new(), &mut Context::new(&model));
    assert!(
        matches!(refused, Err(Error::ReservedName { .. })),
        "{refused:?}"
    );
}

#[test]
fn a_name_a_file_system_takes_is_saved_whatever_its_temporary_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 250 bytes: legal; its temporary name (17 bytes longer) is cut to fit.
    let name = format!("{}.safetensors", "w".repeat(238));
    assert_eq!(name.len(), 250);
    let mut cb = ModelCheckpoint::new(dir.path().join(&name));
    let model = Model { step: 1 };
    cb.on_epoch_end(
        0,
        &Logs::from([("val_loss", 0.5)]),
        &mut Context::new(&model),
    )
    .expect("saved");
    CheckpointFile::open(&dir.path().join(&name), Verify::Full).expect("verifies");
}

#[test]
fn a_state_from_before_modes_were_recorded_is_taken_with_any_threshold() {
    // States written before `mode` and `threshold` were recorded say nothing of the
    // threshold: a resume that gives one takes them. One that records its mode and no
    // threshold was saved without one, and a resume that gives one is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let template = dir.path().join("w.{epoch}.safetensors");
    let saved = ModelCheckpoint::new(&template).state().expect("a state");
    let mut older = saved.clone();
    let fields = older.as_object_mut().expect("an object");
    assert!(fields.remove("mode").is_some() && !fields.contains_key("threshold"));
    let resumed = ModelCheckpoint::new(&template).initial_value_threshold(0.5);
    resumed.check_state(&older).expect("an older state");
    let refused = resumed
        .check_state(&saved)
        .expect_err("saved without a threshold");
    assert!(
        refused.to_string().contains("initial_value_threshold none"),
        "{refused}"
    );
    ModelCheckpoint::new(&template)
        .check_state(&saved)
        .expect("none given");
}
