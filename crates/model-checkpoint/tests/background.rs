//! Background saving: the same files as saving in the foreground, a snapshot taken before
//! the hook returns (later changes to the model never reach the file), errors reported at
//! the next hook and at `on_train_end`, and `on_train_end` waiting for the last save.

use std::cell::RefCell;

mod thread_log;

use model_checkpoint::store::{CheckpointFile, Verify};
use model_checkpoint::{
    Callback, Checkpointable, Context, Error, HostTensor, Logs, ModelCheckpoint, NamedTensor,
    SaveFreq,
};
use thread_log::ThreadLog;

/// A model whose weights the test changes between hooks.
struct Toy {
    w: RefCell<Vec<f32>>,
}

impl Toy {
    fn new() -> Self {
        Toy {
            w: RefCell::new((0..4096).map(|i| i as f32).collect()),
        }
    }
    fn step(&self) {
        self.w.borrow_mut().iter_mut().for_each(|v| *v += 1.0);
    }
}

impl Checkpointable for Toy {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        let w = self.w.borrow();
        Ok(vec![NamedTensor::new(
            "w",
            HostTensor::from_f32(vec![64, 64], &w),
        )])
    }

    fn training_state(&self) -> Result<model_checkpoint::TrainingState<'_>, Error> {
        // A full checkpoint needs something to resume from; the toy's is a counter.
        let mut state = model_checkpoint::TrainingState::default();
        state
            .document
            .other
            .insert("toy".into(), serde_json::json!(1));
        Ok(state)
    }
}

fn run(dir: &std::path::Path, background: bool) {
    let toy = Toy::new();
    // One run id for both runs, so that their files can be equal byte for byte.
    let mut cb = ModelCheckpoint::new(dir.join("w{epoch}-{batch}.safetensors"))
        .with_run_id("0123456789abcdef")
        .save_freq(SaveFreq::Batches(3))
        // Weights only: full checkpoints record their own (here different) paths.
        .save_weights_only(true)
        .background(background)
        .max_saves_in_flight(2);
    let mut ctx = Context::new(&toy);
    cb.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
    for epoch in 0..3 {
        cb.on_epoch_begin(epoch, &Logs::new(), &mut ctx)
            .expect("epoch begin");
        for batch in 0..10 {
            // The weights change after every batch, also while saves are in flight.
            toy.step();
            let logs = Logs::from([("loss", 1.0 / (batch + 1) as f64)]);
            cb.on_train_batch_end(batch, &logs, &mut ctx)
                .expect("batch");
        }
        cb.on_epoch_end(epoch, &Logs::new(), &mut ctx)
            .expect("epoch end");
    }
    cb.on_train_end(&Logs::new(), &mut ctx)
        .expect("end waits for the last save");
    assert_eq!(cb.saves(), 10);
}

#[test]
fn background_saves_write_exactly_what_foreground_saves_write() {
    let fg = tempfile::tempdir().expect("tempdir");
    let bg = tempfile::tempdir().expect("tempdir");
    run(fg.path(), false);
    run(bg.path(), true);
    let mut names: Vec<_> = std::fs::read_dir(fg.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n.to_string_lossy().ends_with(".safetensors"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 10);
    for name in names {
        let a = std::fs::read(fg.path().join(&name)).expect("foreground file");
        let b = std::fs::read(bg.path().join(&name))
            .expect("background file (durable after on_train_end)");
        if a != b {
            let n = |x: &[u8]| u64::from_le_bytes(x[..8].try_into().expect("8")) as usize;
            let ha = String::from_utf8_lossy(&a[8..8 + n(&a)]).into_owned();
            let hb = String::from_utf8_lossy(&b[8..8 + n(&b)]).into_owned();
            panic!("{name:?} differs:\n{ha}\n{hb}");
        }
    }
}

#[test]
fn the_snapshot_is_taken_before_the_hook_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toy = Toy::new();
    let mut cb = ModelCheckpoint::new(dir.path().join("w.safetensors")).background(true);
    let mut ctx = Context::new(&toy);
    cb.on_epoch_begin(0, &Logs::new(), &mut ctx).expect("begin");
    cb.on_epoch_end(0, &Logs::new(), &mut ctx).expect("end");
    toy.w.borrow_mut().iter_mut().for_each(|v| *v = -1.0);
    cb.flush().expect("durable");
    let file = CheckpointFile::open(&dir.path().join("w.safetensors"), Verify::Full).expect("open");
    let t = file.tensor("w").expect("w");
    let data = file.read(t.name).expect("read");
    let first = f32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
    assert_eq!(
        first, 1.0,
        "the file holds the weights at the time of the hook"
    );
}

#[test]
fn a_failed_background_save_surfaces_at_the_next_hook_and_at_train_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Epoch 1's file cannot be written: a folder is in the way.
    std::fs::create_dir(dir.path().join("w1.safetensors")).expect("dir");
    let toy = Toy::new();
    let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors")).background(true);
    let mut ctx = Context::new(&toy);
    cb.on_epoch_begin(0, &Logs::new(), &mut ctx).expect("begin");
    cb.on_epoch_end(0, &Logs::new(), &mut ctx)
        .expect("the hook only hands the save over");
    let err = cb.flush().expect_err("the save failed");
    assert!(matches!(err, Error::IsADirectory { .. }), "{err}");

    // Again, now caught by the next hook rather than by flush.
    let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors")).background(true);
    cb.on_epoch_begin(0, &Logs::new(), &mut ctx).expect("begin");
    cb.on_epoch_end(0, &Logs::new(), &mut ctx)
        .expect("handed over");
    let mut reported = false;
    for _ in 0..1000 {
        if cb.on_epoch_begin(1, &Logs::new(), &mut ctx).is_err() {
            reported = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(reported, "the next hook reports the failed save");
    assert!(std::fs::read_dir(dir.path()).expect("list").all(|e| !e
        .expect("entry")
        .file_name()
        .to_string_lossy()
        .ends_with(".ckpt-tmp")));

    // And by on_train_end when it was the last save.
    let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors")).background(true);
    cb.on_epoch_begin(0, &Logs::new(), &mut ctx).expect("begin");
    cb.on_epoch_end(0, &Logs::new(), &mut ctx)
        .expect("handed over");
    assert!(cb.on_train_end(&Logs::new(), &mut ctx).is_err());
}

/// Keras makes a save's folder at every save; a background save makes it on the writer
/// (the hook no longer looks once the folder is made and locked), so a folder removed
/// while training runs is made again by the next save, whichever way the save is handed
/// over: a copy in the hook, a copy behind the loop's fence, a frozen copy of the model.
#[test]
fn a_folder_removed_between_background_saves_is_made_again_by_the_next_save() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("run");
    let toy = Toy::new();
    let shared = SharedModel::new(vec![3u8; 4096]);
    let values = Values::new();
    let fence = model_checkpoint::SnapshotFence::new();
    let models: [(&str, &dyn Checkpointable, bool); 4] = [
        ("a copy in the hook, full", &toy, false),
        ("a copy in the hook, weights only", &toy, false),
        ("a copy behind the fence", &shared, true),
        ("a frozen copy", &values, false),
    ];
    for (i, (how, model, with_fence)) in models.into_iter().enumerate() {
        let mut cb = ModelCheckpoint::new(folder.join("w{epoch}.safetensors"))
            .save_weights_only(i == 1)
            .background(true);
        let context = || {
            let ctx = Context::new(model);
            if with_fence {
                ctx.with_fence(&fence)
            } else {
                ctx
            }
        };
        cb.on_train_begin(&Logs::new(), &mut context())
            .expect("begin");
        for epoch in 0..3 {
            cb.on_epoch_begin(epoch, &Logs::new(), &mut context())
                .expect("epoch begin");
            cb.on_epoch_end(epoch, &Logs::new(), &mut context())
                .expect("epoch end");
            fence.wait();
            cb.flush()
                .unwrap_or_else(|e| panic!("{how}: epoch {epoch}: {e}"));
            let saved = folder.join(format!("w{}.safetensors", epoch + 1));
            CheckpointFile::open(&saved, Verify::Full)
                .unwrap_or_else(|e| panic!("{how}: epoch {epoch}: the save is not whole: {e}"));
            std::fs::remove_dir_all(&folder).expect("remove the folder");
        }
        cb.on_train_end(&Logs::new(), &mut context()).expect("end");
    }
}

/// The aftercare of the last saves runs on the training thread once the writer is idle
/// (`flush`, `on_train_end`): a storage that panics there (a bug) fails that aftercare
/// alone, as it would on the writer, rather than unwinding out of the hook.
#[test]
fn an_aftercare_that_panics_at_the_end_of_training_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = std::sync::Arc::new(ThreadLog::default());
    let toy = Toy::new();
    let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors"))
        .storage(storage.clone())
        .background(true);
    let mut ctx = Context::new(&toy);
    cb.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
    cb.on_epoch_end(0, &Logs::new(), &mut ctx)
        .expect("handed over");
    storage.panic_on_puts();
    let err = cb
        .on_train_end(&Logs::new(), &mut ctx)
        .expect_err("the marker's write panicked");
    assert!(
        matches!(&err, Error::Writer { reason, .. } if reason.contains("panicked")),
        "{err}"
    );
    CheckpointFile::open(&dir.path().join("w1.safetensors"), Verify::Full)
        .expect("the save itself was made");
}

/// tf.keras 2 makes the folder before it looks at the monitor, so an epoch that does not
/// save still leaves the folder (trace `missing_monitor_dir_created`): where the hook left
/// making it to the writer and no save follows, the hook makes it after all.
#[test]
fn an_epoch_that_does_not_save_still_makes_the_folder_as_tf_keras_2_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("run");
    let toy = Toy::new();
    let mut cb = ModelCheckpoint::new(folder.join("w{epoch}.safetensors"))
        .monitor("loss")
        .save_best_only(true)
        .background(true);
    let mut ctx = Context::new(&toy);
    cb.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
    for (epoch, loss) in [(0, 1.0), (1, 2.0)] {
        if epoch == 1 {
            std::fs::remove_dir_all(&folder).expect("remove the folder");
        }
        cb.on_epoch_begin(epoch, &Logs::new(), &mut ctx)
            .expect("epoch begin");
        cb.on_epoch_end(epoch, &Logs::from([("loss", loss)]), &mut ctx)
            .expect("epoch end");
        cb.flush().expect("flushed");
    }
    assert!(
        folder.is_dir(),
        "the epoch that did not improve made the folder again"
    );
    assert_eq!(cb.saves(), 1);
    cb.on_train_end(&Logs::new(), &mut ctx).expect("end");
}

/// A tensor that other threads can read (as candle's are): shared storage behind a lock.
#[derive(Clone)]
struct Shared(std::sync::Arc<std::sync::RwLock<Vec<u8>>>);

impl model_checkpoint::TensorData for Shared {
    fn dtype(&self) -> model_checkpoint::Dtype {
        model_checkpoint::Dtype::U8
    }
    fn shape(&self) -> std::borrow::Cow<'_, [usize]> {
        std::borrow::Cow::Owned(vec![self.0.read().expect("lock").len()])
    }
    fn write_to(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        sink(&self.0.read().expect("lock"))
    }
    fn share(&self) -> Option<model_checkpoint::SharedTensor> {
        Some(std::sync::Arc::new(self.clone()))
    }
}

struct SharedModel(Shared);

impl SharedModel {
    fn new(bytes: Vec<u8>) -> Self {
        SharedModel(Shared(std::sync::Arc::new(std::sync::RwLock::new(bytes))))
    }
}

impl Checkpointable for SharedModel {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        Ok(vec![NamedTensor::new("w", self.0.clone())])
    }

    fn training_state(&self) -> Result<model_checkpoint::TrainingState<'_>, Error> {
        // A full checkpoint needs something to resume from; the toy's is a counter.
        let mut state = model_checkpoint::TrainingState::default();
        state
            .document
            .other
            .insert("toy".into(), serde_json::json!(1));
        Ok(state)
    }
}

#[test]
fn with_a_fence_the_copy_happens_after_the_hook_and_before_the_next_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = SharedModel::new(vec![7u8; 32 << 20]);
    let fence = model_checkpoint::SnapshotFence::new();
    let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors")).background(true);
    for epoch in 0..3u8 {
        {
            let mut ctx = Context::new(&model).with_fence(&fence);
            cb.on_epoch_begin(epoch.into(), &Logs::new(), &mut ctx)
                .expect("begin");
            cb.on_epoch_end(epoch.into(), &Logs::new(), &mut ctx)
                .expect("hands over");
        }
        // What a training loop does before its optimizer step.
        fence.wait();
        model
            .0
             .0
            .write()
            .expect("lock")
            .iter_mut()
            .for_each(|b| *b = b.wrapping_add(1));
    }
    cb.flush().expect("durable");
    for epoch in 0..3u8 {
        let file = CheckpointFile::open(
            &dir.path().join(format!("w{}.safetensors", epoch + 1)),
            Verify::Full,
        )
        .expect("open");
        let t = file.tensor("w").expect("w");
        assert!(
            file.read(t.name)
                .expect("read")
                .iter()
                .all(|&b| b == 7 + epoch),
            "epoch {epoch}: the values at the hook"
        );
    }
}

#[test]
fn after_a_background_save_the_journal_marker_last_copy_and_deletes_happen_on_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = std::sync::Arc::new(ThreadLog::default());
    let toy = Toy::new();
    let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors"))
        .storage(storage.clone())
        .background(true)
        .journal(true)
        .keep_last(2)
        .save_last(true);
    let mut ctx = Context::new(&toy);
    cb.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
    let epochs = 6;
    for epoch in 0..epochs {
        toy.step();
        let logs = Logs::from([("loss", 1.0 / (epoch + 1) as f64)]);
        cb.on_epoch_end(epoch, &logs, &mut ctx).expect("epoch end");
        // The writer finishes this save before the next hook, so that the next hook finds
        // it committed (and has its aftercare to hand over).
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let during = storage.take();
    cb.on_train_end(&Logs::new(), &mut ctx).expect("end");
    let mut ops = during;
    ops.extend(storage.take());

    // Everything that changes the folder during training happened on the writer thread.
    let changes = ["create", "put", "delete", "copy", "rmdir"];
    let on_training: Vec<_> = ops
        .iter()
        .filter(|(thread, op, _)| thread != "checkpoint-writer" && changes.contains(op))
        .collect();
    assert!(
        on_training.is_empty(),
        "storage changed on the training thread: {on_training:#?}"
    );
    // And it all happened: every kind of change (no folder is removed here), by the writer.
    for change in ["create", "put", "delete", "copy"] {
        assert!(
            ops.iter().any(|(_, op, _)| *op == change),
            "no {change} at all: {ops:#?}"
        );
    }
    let journal =
        std::fs::read_to_string(dir.path().join(".ckpt-run.journal.csv")).expect("journal");
    assert_eq!(journal.matches(",saved,").count(), epochs);
    assert_eq!(journal.matches(",deleted,").count(), epochs - 2);
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["last.safetensors", "w5.safetensors", "w6.safetensors"]
    );
    let last = std::fs::read(dir.path().join("last.safetensors")).expect("last");
    assert_eq!(
        last,
        std::fs::read(dir.path().join("w6.safetensors")).expect("w6")
    );
    // One marker for each checkpoint kept, none for the deleted ones.
    let markers = std::fs::read_dir(dir.path())
        .expect("list")
        .filter(|e| {
            let n = e
                .as_ref()
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            n.starts_with(".ckpt-run.") && !n.ends_with(".csv") && !n.ends_with(".lock")
        })
        .count();
    assert_eq!(markers, 2);
}

#[test]
fn dropping_the_callback_waits_for_saves_in_flight_and_leaves_the_writer_holding_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = std::sync::Arc::new(ThreadLog::default());
    let toy = Toy::new();
    let new_cb = |name: &str| {
        ModelCheckpoint::new(dir.path().join(name))
            .storage(storage.clone())
            .background(true)
            .save_weights_only(true)
    };

    // Every save collected (on_train_end): the callback's drop lets the writer thread go
    // without waiting for it to end, and the thread keeps nothing of the caller's, not
    // even a reference to its storage.
    let mut cb = new_cb("done{epoch}.safetensors");
    let mut ctx = Context::new(&toy);
    cb.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
    for epoch in 0..3 {
        toy.step();
        cb.on_epoch_end(epoch, &Logs::new(), &mut ctx)
            .expect("epoch end");
    }
    cb.on_train_end(&Logs::new(), &mut ctx).expect("end");
    drop(cb);
    assert_eq!(
        std::sync::Arc::strong_count(&storage),
        1,
        "something still holds the storage after the callback is dropped"
    );

    // A save still in flight (its write held back): the drop waits for it, so that no save
    // outlives the callback (the engine's drop waits for its saves; the writer's own join,
    // for work still in flight when it is dropped, is tested in
    // src/checkpoint/background.rs).
    let mut cb = new_cb("held{epoch}.safetensors");
    cb.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
    storage.set(true, false);
    cb.on_epoch_end(0, &Logs::new(), &mut ctx)
        .expect("epoch end");
    let release = {
        let storage = storage.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            storage.set(false, false);
        })
    };
    drop(cb);
    CheckpointFile::open(&dir.path().join("held1.safetensors"), Verify::Full)
        .expect("the save in flight was finished before the drop returned");
    release.join().expect("release");
    assert_eq!(std::sync::Arc::strong_count(&storage), 1);
}

#[test]
fn retention_never_deletes_a_file_saved_again_under_the_same_name_before_the_delete() {
    // keep_last(1) with names that come round again: the second save makes retention drop
    // the first, whose name the third save takes. The delete (slowed down) then finds the
    // third save's file there: not the one it decided on, so it stays.
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = std::sync::Arc::new(ThreadLog::slow_deletes(std::time::Duration::from_millis(
        300,
    )));
    let toy = Toy::new();
    let mut cb = ModelCheckpoint::new(dir.path().join("m-{loss:.0f}.safetensors"))
        .storage(storage.clone())
        .monitor("loss")
        .background(true)
        .max_saves_in_flight(2)
        .keep_last(1)
        .save_weights_only(true);
    let mut ctx = Context::new(&toy);
    cb.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
    for (epoch, loss) in [2.0, 1.0, 2.0].into_iter().enumerate() {
        toy.step();
        cb.on_epoch_end(epoch, &Logs::from([("loss", loss)]), &mut ctx)
            .expect("epoch end");
        // The save is committed before the next hook, which hands its aftercare over.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let last_weights = HostTensor::copy_of(&*toy.weights().expect("weights")[0].data)
        .expect("copy")
        .into_data();
    cb.on_train_end(&Logs::new(), &mut ctx).expect("end");
    let file = CheckpointFile::open(&dir.path().join("m-2.safetensors"), Verify::Full)
        .expect("the third save's file is there");
    assert_eq!(file.read("w").expect("read"), last_weights);
}

/// A shared tensor whose copy on the writer thread waits for the test to open its gate,
/// and then, if armed, panics (a framework's bug).
#[derive(Clone)]
struct Panicking {
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    gate: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    /// Panic with a [`PanicInDrop`] payload, which kills the writer thread.
    kills: bool,
}

/// A panic payload whose drop panics: the writer catches the first panic, then dropping
/// the payload panics outside the catch and the thread dies, the one way a writer thread
/// stops without being told to. (Should Rust come to abort on a panic escaping a drop, as
/// has been proposed, these tests abort loudly rather than pass.)
struct PanicInDrop;

impl Drop for PanicInDrop {
    fn drop(&mut self) {
        panic!("a caught panic's payload panicked when dropped");
    }
}

impl Panicking {
    fn open_gate(&self) {
        let (open, cond) = &*self.gate;
        *open.lock().expect("lock") = true;
        cond.notify_all();
    }
}

impl model_checkpoint::TensorData for Panicking {
    fn dtype(&self) -> model_checkpoint::Dtype {
        model_checkpoint::Dtype::U8
    }
    fn shape(&self) -> std::borrow::Cow<'_, [usize]> {
        std::borrow::Cow::Owned(vec![16])
    }
    fn write_to(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        let (open, cond) = &*self.gate;
        let mut open = open.lock().expect("lock");
        while !*open {
            open = cond.wait(open).expect("lock");
        }
        drop(open);
        if self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            if self.kills {
                std::panic::panic_any(PanicInDrop);
            }
            panic!("the framework failed while the writer copied its tensor");
        }
        sink(&[3u8; 16])
    }
    fn share(&self) -> Option<model_checkpoint::SharedTensor> {
        Some(std::sync::Arc::new(self.clone()))
    }
}

struct PanickingModel(Panicking);

impl Checkpointable for PanickingModel {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        Ok(vec![NamedTensor::new("w", self.0.clone())])
    }
}

/// A background callback saving `w{epoch}` in `dir` that has handed two saves of a
/// [`Panicking`] tensor (armed; `kills` as given) to its writer, which holds the first in
/// its copy, behind the closed gate, and the second behind it.
fn two_saves_held(
    dir: &std::path::Path,
    kills: bool,
) -> (
    ModelCheckpoint,
    PanickingModel,
    Panicking,
    model_checkpoint::SnapshotFence,
) {
    let tensor = Panicking {
        armed: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        gate: std::sync::Arc::default(),
        kills,
    };
    let model = PanickingModel(tensor.clone());
    let fence = model_checkpoint::SnapshotFence::new();
    let mut cb = ModelCheckpoint::new(dir.join("w{epoch}.safetensors"))
        .save_weights_only(true)
        .background(true)
        .max_saves_in_flight(2);
    for epoch in 0..2 {
        let mut ctx = Context::new(&model).with_fence(&fence);
        cb.on_epoch_begin(epoch, &Logs::new(), &mut ctx)
            .expect("begin");
        cb.on_epoch_end(epoch, &Logs::new(), &mut ctx)
            .expect("handed over");
    }
    (cb, model, tensor, fence)
}

#[test]
fn a_save_that_panics_on_the_writer_fails_alone_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cb, model, tensor, fence) = two_saves_held(dir.path(), false);
    // Both copies panic. Their fences are let go all the same.
    tensor.open_gate();
    fence.wait();
    let mut ctx = Context::new(&model).with_fence(&fence);
    let mut reported = None;
    for _ in 0..1000 {
        if let Err(e) = cb.on_epoch_begin(2, &Logs::new(), &mut ctx) {
            reported = Some(e);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let err = reported.expect("the next hook reports the failed save");
    assert!(
        matches!(err, Error::Writer { .. })
            && err.to_string().contains("a save panicked")
            && err.to_string().contains("the framework failed"),
        "{err}"
    );
    // The second save failed too: reported by the same hook (which returns the first
    // error) or by this flush, depending on when the writer got to it.
    let _ = cb.flush();
    // Neither failed save is counted: no state names them as saved or coming.
    let state = cb.state().expect("state").to_string();
    assert!(
        !state.contains("w1.safetensors") && !state.contains("w2.safetensors"),
        "{state}"
    );

    // The framework works again: the writer that caught the panics makes the next save.
    tensor
        .armed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    cb.on_epoch_end(2, &Logs::new(), &mut ctx)
        .expect("the writer takes the save");
    cb.on_train_end(&Logs::new(), &mut ctx)
        .expect("the new save is made");
    let file = CheckpointFile::open(&dir.path().join("w3.safetensors"), Verify::Full)
        .expect("the save after the panics");
    assert_eq!(file.read("w").expect("w"), vec![3u8; 16]);
    assert!(!dir.path().join("w1.safetensors").exists());
    assert!(!dir.path().join("w2.safetensors").exists());
    let state = cb.state().expect("state").to_string();
    assert!(state.contains("w3.safetensors"), "{state}");
}

/// Two saves handed to a writer whose thread then dies (the first copy panics with a
/// [`PanicInDrop`]), with the loop's fence checked let go: the callback and its model.
fn writer_killed_with_two_saves(dir: &std::path::Path) -> (ModelCheckpoint, PanickingModel) {
    let (cb, model, tensor, fence) = two_saves_held(dir, true);
    // The first copy panics and the thread dies with both saves. The fence is let go all
    // the same (both saves' guards die with the thread: a channel drops what it holds when
    // its receiver goes), else training would hang: waited for on another thread, with a
    // deadline.
    tensor.open_gate();
    let (done, fenced) = std::sync::mpsc::channel();
    let waiting = fence.clone();
    std::thread::spawn(move || {
        waiting.wait();
        let _ = done.send(());
    });
    fenced
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the dead writer's saves let the fence go");
    tensor
        .armed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    (cb, model)
}

/// The loss reported by `err` is the dead thread's, the lost saves count nowhere, and the
/// next save starts a new writer thread, which makes it.
fn after_the_loss(
    err: Error,
    mut cb: ModelCheckpoint,
    model: &PanickingModel,
    dir: &std::path::Path,
) {
    assert!(
        matches!(err, Error::Writer { .. })
            && err.to_string().contains("stopped unexpectedly")
            && err.to_string().contains("lost"),
        "{err}"
    );
    // Reported once: nothing more is waiting.
    cb.flush().expect("nothing else to report");
    let state = cb.state().expect("state").to_string();
    assert!(
        !state.contains("w1.safetensors") && !state.contains("w2.safetensors"),
        "{state}"
    );
    let mut ctx = Context::new(model);
    cb.on_epoch_end(2, &Logs::new(), &mut ctx)
        .expect("a new writer takes the save");
    cb.on_train_end(&Logs::new(), &mut ctx)
        .expect("the new save is made");
    let file = CheckpointFile::open(&dir.join("w3.safetensors"), Verify::Full)
        .expect("the save after the thread died");
    assert_eq!(file.read("w").expect("w"), vec![3u8; 16]);
    assert!(!dir.join("w1.safetensors").exists());
    assert!(!dir.join("w2.safetensors").exists());
    let state = cb.state().expect("state").to_string();
    assert!(state.contains("w3.safetensors"), "{state}");
}

#[test]
fn a_writer_thread_that_dies_is_reported_by_the_next_hook_and_the_next_save_starts_a_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cb, model) = writer_killed_with_two_saves(dir.path());
    let mut ctx = Context::new(&model);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let err = loop {
        if let Err(e) = cb.on_epoch_begin(2, &Logs::new(), &mut ctx) {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no hook reported the lost saves"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    after_the_loss(err, cb, &model, dir.path());
}

#[test]
fn a_writer_thread_that_dies_is_reported_by_a_wait_for_its_saves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cb, model) = writer_killed_with_two_saves(dir.path());
    // A wait (here `flush`, as `on_train_end` and a full queue wait) meets the dead thread
    // however early it asks.
    let err = cb.flush().expect_err("the wait reports the lost saves");
    after_the_loss(err, cb, &model, dir.path());
}

/// A model whose values are replaced, never changed in place (as burn's tensors are), and
/// that counts the times the hook takes its tensors itself.
struct Values {
    w: RefCell<std::sync::Arc<Vec<f32>>>,
    steps: std::cell::Cell<u64>,
    taken: std::cell::Cell<usize>,
    /// Frozen copies fail to hand over their weights (a framework's error on the writer).
    failing: std::cell::Cell<bool>,
}

impl Values {
    /// 4096 zeros, no step taken, frozen copies that hand over their weights.
    fn new() -> Self {
        Values {
            w: RefCell::new(std::sync::Arc::new(vec![0.0; 4096])),
            steps: std::cell::Cell::new(0),
            taken: std::cell::Cell::new(0),
            failing: std::cell::Cell::new(false),
        }
    }
}

/// [`Values`] as they were at a save.
struct FrozenValues {
    w: std::sync::Arc<Vec<f32>>,
    steps: u64,
    failing: bool,
}

fn values_state(steps: u64) -> model_checkpoint::TrainingState<'static> {
    let mut state = model_checkpoint::TrainingState::default();
    state
        .document
        .other
        .insert("steps".into(), serde_json::json!(steps));
    state
}

impl Checkpointable for Values {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        self.taken.set(self.taken.get() + 1);
        Ok(vec![NamedTensor::new(
            "w",
            HostTensor::from_f32(vec![64, 64], &self.w.borrow()),
        )])
    }

    fn training_state(&self) -> Result<model_checkpoint::TrainingState<'_>, Error> {
        self.taken.set(self.taken.get() + 1);
        Ok(values_state(self.steps.get()))
    }

    fn frozen(&self) -> Option<Box<dyn Checkpointable + Send>> {
        Some(Box::new(FrozenValues {
            w: self.w.borrow().clone(),
            steps: self.steps.get(),
            failing: self.failing.get(),
        }))
    }
}

impl Checkpointable for FrozenValues {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        if self.failing {
            return Err(Error::Framework(
                "the framework could not hand over w".into(),
            ));
        }
        Ok(vec![NamedTensor::new(
            "w",
            HostTensor::from_f32(vec![64, 64], &self.w),
        )])
    }

    fn training_state(&self) -> Result<model_checkpoint::TrainingState<'_>, Error> {
        Ok(values_state(self.steps))
    }
}

#[test]
fn a_model_that_offers_frozen_copies_is_read_on_the_writer_as_it_was_at_the_hook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = Values::new();
    let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors"))
        .background(true)
        .max_saves_in_flight(3);
    let mut ctx = Context::new(&model);
    cb.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
    for epoch in 0..3 {
        cb.on_epoch_begin(epoch, &Logs::new(), &mut ctx)
            .expect("begin");
        cb.on_epoch_end(epoch, &Logs::new(), &mut ctx)
            .expect("handed over");
        // Training replaces the values (the saves may still be waiting on the writer).
        let next: Vec<f32> = model.w.borrow().iter().map(|v| v + 1.0).collect();
        *model.w.borrow_mut() = std::sync::Arc::new(next);
        model.steps.set(model.steps.get() + 10);
    }
    cb.on_train_end(&Logs::new(), &mut ctx).expect("durable");
    // The hook took nothing itself beyond the one look at the training state that checks,
    // before the first full save, that the model has one.
    assert_eq!(model.taken.get(), 1, "tensors taken on the training thread");
    for epoch in 0..3u8 {
        let file = CheckpointFile::open(
            &dir.path().join(format!("w{}.safetensors", epoch + 1)),
            Verify::Full,
        )
        .expect("open");
        let w = file.read("w").expect("w");
        let expected: Vec<u8> = std::iter::repeat_n(f32::from(epoch).to_le_bytes(), 4096)
            .flatten()
            .collect();
        assert!(w == expected, "epoch {epoch}: the weights at the hook");
        let document = file
            .training_state()
            .expect("readable")
            .expect("a full checkpoint");
        assert_eq!(
            document.other.get("steps"),
            Some(&serde_json::json!(u64::from(epoch) * 10)),
            "epoch {epoch}: the training state at the hook"
        );
    }

    // A frozen copy that fails on the writer: the failure surfaces, like a failed write.
    model.failing.set(true);
    let mut cb = ModelCheckpoint::new(dir.path().join("again{epoch}.safetensors")).background(true);
    cb.on_epoch_begin(0, &Logs::new(), &mut ctx).expect("begin");
    cb.on_epoch_end(0, &Logs::new(), &mut ctx)
        .expect("handed over");
    let err = cb
        .flush()
        .expect_err("the writer could not take the weights");
    assert!(err.to_string().contains("could not hand over w"), "{err}");
    assert!(!dir.path().join("again1.safetensors").exists());
}

/// Records error-level log lines, so that a test can see what reached the log.
struct Capture;

static ERRORS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.level() == log::Level::Error {
            ERRORS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

#[test]
fn when_several_saves_fail_at_once_the_first_is_returned_and_the_others_logged() {
    let _ = log::set_boxed_logger(Box::new(Capture))
        .map(|()| log::set_max_level(log::LevelFilter::Error));
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["g1.safetensors", "g2.safetensors"] {
        std::fs::create_dir(dir.path().join(name)).expect("a folder in the way");
    }
    let tensor = Panicking {
        armed: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        gate: std::sync::Arc::default(),
        kills: false,
    };
    let model = PanickingModel(tensor.clone());
    let fence = model_checkpoint::SnapshotFence::new();
    let mut cb = ModelCheckpoint::new(dir.path().join("g{epoch}.safetensors"))
        .save_weights_only(true)
        .background(true)
        .max_saves_in_flight(2);
    let mut ctx = Context::new(&model).with_fence(&fence);
    // Both saves are in flight (the writer waits in the first copy) when training ends.
    for epoch in 0..2 {
        cb.on_epoch_begin(epoch, &Logs::new(), &mut ctx)
            .expect("begin");
        cb.on_epoch_end(epoch, &Logs::new(), &mut ctx)
            .expect("handed over");
    }
    tensor.open_gate();
    let err = cb
        .on_train_end(&Logs::new(), &mut ctx)
        .expect_err("both failed");
    assert!(err.to_string().contains("g1.safetensors"), "{err}");
    let errors = ERRORS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("a later failure") && e.contains("g2.safetensors")),
        "{errors:?}"
    );
}

/// Where a test's handles were used and dropped: (what happened, on which thread).
type Drops = std::sync::Arc<std::sync::Mutex<Vec<(&'static str, std::thread::ThreadId)>>>;

fn record(drops: &Drops, what: &'static str) {
    drops
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((what, std::thread::current().id()));
}

/// A model of one 64 KiB tensor that offers frozen copies, or shares its tensor behind the
/// fence; the copies and shared handles record where they are read and dropped.
struct Handing {
    drops: Drops,
    offers_copies: bool,
    /// A frozen copy (the model itself is not tracked).
    is_copy: bool,
}

/// The tensor; `shared` for a handle given to the writer.
struct HandedTensor {
    drops: Drops,
    shared: bool,
}

impl model_checkpoint::TensorData for HandedTensor {
    fn dtype(&self) -> model_checkpoint::Dtype {
        model_checkpoint::Dtype::U8
    }
    fn shape(&self) -> std::borrow::Cow<'_, [usize]> {
        std::borrow::Cow::Owned(vec![64 << 10])
    }
    fn write_to(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        if self.shared {
            record(&self.drops, "shared tensor read");
        }
        sink(&[5u8; 64 << 10])
    }
    fn share(&self) -> Option<model_checkpoint::SharedTensor> {
        Some(std::sync::Arc::new(HandedTensor {
            drops: self.drops.clone(),
            shared: true,
        }))
    }
}

impl Drop for HandedTensor {
    fn drop(&mut self) {
        if self.shared {
            record(&self.drops, "shared tensor dropped");
        }
    }
}

impl Checkpointable for Handing {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        if self.is_copy {
            record(&self.drops, "frozen copy read");
        }
        Ok(vec![NamedTensor::new(
            "w",
            HandedTensor {
                drops: self.drops.clone(),
                shared: false,
            },
        )])
    }

    fn frozen(&self) -> Option<Box<dyn Checkpointable + Send>> {
        self.offers_copies.then(|| {
            Box::new(Handing {
                drops: self.drops.clone(),
                offers_copies: false,
                is_copy: true,
            }) as Box<dyn Checkpointable + Send>
        })
    }
}

impl Drop for Handing {
    fn drop(&mut self) {
        if self.is_copy {
            record(&self.drops, "frozen copy dropped");
        }
    }
}

#[test]
fn what_the_training_thread_hands_the_writer_is_dropped_back_on_the_training_thread() {
    // glibc frees a block under its allocating thread's arena lock: a writer dropping the
    // training thread's blocks makes the next steps wait on that lock (see `background`).
    let here = std::thread::current().id();
    for (offers_copies, handed) in [(true, "frozen copy"), (false, "shared tensor")] {
        let dir = tempfile::tempdir().expect("tempdir");
        let drops = Drops::default();
        let model = Handing {
            drops: drops.clone(),
            offers_copies,
            is_copy: false,
        };
        let seen = |what: String| {
            drops
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .filter(|(w, _)| *w == what)
                .map(|(_, t)| *t)
                .collect::<Vec<_>>()
        };
        let fence = model_checkpoint::SnapshotFence::new();
        let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}.safetensors"))
            .save_weights_only(true)
            .background(true);
        let mut ctx = Context::new(&model).with_fence(&fence);
        cb.on_train_begin(&Logs::new(), &mut ctx).expect("begin");
        let dropped_at_begin = seen(format!("{handed} dropped")).len();
        for epoch in 0..3 {
            cb.on_epoch_begin(epoch, &Logs::new(), &mut ctx)
                .expect("begin");
            cb.on_epoch_end(epoch, &Logs::new(), &mut ctx)
                .expect("handed over");
            fence.wait();
            // Once the save is written, a batch's end frees what it took (a frozen copy
            // would otherwise live until the next epoch's end).
            let dropped = dropped_at_begin + epoch + 1;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let mut batch = 0;
            while seen(format!("{handed} dropped")).len() < dropped {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{handed}: never freed at a batch's end"
                );
                cb.on_train_batch_end(batch, &Logs::new(), &mut ctx)
                    .expect("batch end");
                batch += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        cb.on_train_end(&Logs::new(), &mut ctx).expect("durable");
        for epoch in 1..=3 {
            let file = CheckpointFile::open(
                &dir.path().join(format!("w{epoch}.safetensors")),
                Verify::Full,
            )
            .expect("written");
            assert_eq!(file.read("w").expect("w"), vec![5u8; 64 << 10]);
        }
        // The writer read them (on its thread), and this thread dropped them.
        let read = seen(format!("{handed} read"));
        assert!(
            read.len() >= 3 && read.iter().all(|t| *t != here),
            "{handed} read on this thread: {read:?}"
        );
        let dropped = seen(format!("{handed} dropped"));
        assert!(
            dropped.len() >= 3 && dropped.iter().all(|t| *t == here),
            "{handed} dropped on another thread: {dropped:?}"
        );
    }
}
