//! Deduplicated checkpoints (`ModelCheckpoint::dedup`): unchanged tensors are written
//! once and shared; every checkpoint reads back whole through its index (as Python's
//! `safetensors` reads each blob); retention deletes indexes, then the blobs no index names
//! that the run wrote, never another run's; a fixed name's index is replaced; damage is
//! found; exact restore; and SIGKILL at any point of saves and retention leaves every
//! committed checkpoint with all its blobs.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use model_checkpoint::restore::restore_from_sharded;
use model_checkpoint::sharded::{blobs, Ranks, ShardedCheckpoint, INDEX_FILE};
use model_checkpoint::store::{LocalFolder, Name, Storage, Verify};
use model_checkpoint::{
    Callback, Checkpointable, Context, Dtype, Error, HostTensor, Logs, ModelCheckpoint,
    NamedTensor, TensorSource,
};

/// A model with a frozen backbone (`FROZEN` bytes that never change), a trainable head
/// and an optimizer moment that change every epoch.
struct Model {
    epoch: Cell<u32>,
    restored: std::cell::RefCell<Vec<(String, Vec<u8>)>>,
}

const FROZEN: usize = 1 << 20;

fn frozen() -> HostTensor {
    let bytes: Vec<u8> = (0..FROZEN).map(|i| (i * 31 % 251) as u8).collect();
    HostTensor::new(Dtype::F32, vec![FROZEN / 4], bytes).expect("frozen")
}

fn head(epoch: u32) -> HostTensor {
    HostTensor::from_f32(vec![64], &[epoch as f32 * 0.5; 64])
}

fn moment(epoch: u32) -> HostTensor {
    HostTensor::from_f32(vec![64], &[epoch as f32 * 0.25 + 1.0; 64])
}

impl Model {
    fn new() -> Self {
        Model {
            epoch: Cell::new(0),
            restored: Default::default(),
        }
    }
}

/// A tensor handed over in small pieces, as a framework's strided tensor is.
struct InPieces(HostTensor);

impl model_checkpoint::TensorData for InPieces {
    fn dtype(&self) -> Dtype {
        self.0.dtype()
    }
    fn shape(&self) -> std::borrow::Cow<'_, [usize]> {
        self.0.shape()
    }
    fn write_to(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        self.0.data().chunks(4096).try_for_each(sink)
    }
}

impl Checkpointable for Model {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        Ok(vec![
            NamedTensor::new("backbone.weight", InPieces(frozen())),
            NamedTensor::new("head.weight", head(self.epoch.get())),
        ])
    }

    fn training_state(&self) -> Result<model_checkpoint::TrainingState<'_>, Error> {
        let mut state = model_checkpoint::TrainingState::default();
        state
            .document
            .other
            .insert("epoch".into(), serde_json::json!(self.epoch.get()));
        state.tensors.push(NamedTensor::new(
            "optimizer/head.weight/m",
            moment(self.epoch.get()),
        ));
        Ok(state)
    }

    fn restore_weights(&mut self, stored: &dyn TensorSource) -> Result<(), Error> {
        for t in stored.tensors() {
            let bytes = stored.read(&t.name, t.dtype, &t.shape)?;
            self.restored.borrow_mut().push((t.name.clone(), bytes));
        }
        Ok(())
    }

    fn restore_training_state(
        &mut self,
        stored: &dyn TensorSource,
        document: &model_checkpoint::store::TrainingDocument,
    ) -> Result<(), Error> {
        let epoch = document.other.get("epoch").and_then(|e| e.as_u64());
        self.epoch.set(epoch.unwrap_or(0) as u32);
        self.restore_weights(stored)
    }
}

/// Drives `cb` through `epochs` epochs of `model`, the score going down each time.
fn train(cb: &mut ModelCheckpoint, model: &Model, epochs: std::ops::Range<u32>) {
    cb.on_train_begin(&Logs::new(), &mut Context::new(model))
        .expect("begin");
    for e in epochs {
        model.epoch.set(e + 1);
        let mut ctx = Context::new(model);
        cb.on_epoch_begin(e as usize, &Logs::new(), &mut ctx)
            .expect("epoch begin");
        cb.on_epoch_end(
            e as usize,
            &Logs::from([("loss", 1.0 / (e + 1) as f64)]),
            &mut ctx,
        )
        .expect("epoch end");
    }
    cb.on_train_end(&Logs::new(), &mut Context::new(model))
        .expect("end");
}

/// The files in the blob folder but its lock (temporary files of a killed save included).
fn blob_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join(blobs::BLOBS_DIR))
        .map(|entries| {
            entries
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|name| name != ".ckpt.lock")
                .collect()
        })
        .unwrap_or_default()
}

fn checkpoints(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| {
            let e = e.expect("entry");
            e.path()
                .join(INDEX_FILE)
                .exists()
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

/// Every checkpoint in `dir` opens, every blob it names is there, and every tensor reads
/// back with its checksum; returns how many.
fn all_whole(dir: &Path) -> usize {
    let storage = LocalFolder::default();
    let names = checkpoints(dir);
    for name in &names {
        let folder = Name::from(dir.join(name));
        let checkpoint = ShardedCheckpoint::open(&storage, &folder)
            .unwrap_or_else(|e| panic!("{name} does not open: {e}"));
        for tensor in checkpoint.tensors().keys() {
            checkpoint
                .read(tensor)
                .unwrap_or_else(|e| panic!("{name}: {tensor}: {e}"));
        }
    }
    names.len()
}

fn callback(dir: &Path, template: &str) -> ModelCheckpoint {
    ModelCheckpoint::new(dir.join(template).to_string_lossy().into_owned())
        .monitor("loss")
        .dedup(true)
}

#[test]
fn a_frozen_backbone_is_written_once_and_retention_collects_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb = callback(dir.path(), "e{epoch:02d}.safetensors").keep_last(2);
    let model = Model::new();
    train(&mut cb, &model, 0..5);
    assert_eq!(
        checkpoints(dir.path()),
        BTreeSet::from(["e04.safetensors".to_owned(), "e05.safetensors".to_owned()])
    );
    // One backbone blob, and per kept checkpoint its head and one group blob of the two
    // tensors that change at every save (written together once seen changing).
    let blobs = blob_names(dir.path());
    assert_eq!(blobs.len(), 1 + 2 * 2, "{blobs:?}");
    let sizes: Vec<u64> = blobs
        .iter()
        .map(|b| {
            std::fs::metadata(dir.path().join("blobs").join(b))
                .expect("blob")
                .len()
        })
        .collect();
    assert_eq!(
        sizes.iter().filter(|&&s| s > FROZEN as u64).count(),
        1,
        "the 1 MiB backbone is stored once: {sizes:?}"
    );
    assert_eq!(all_whole(dir.path()), 2);
    // The index is Hugging Face's: every tensor name to a file beside the index's folder,
    // which holds it under that name.
    let folder = dir.path().join("e05.safetensors");
    let index = index_of(&folder);
    let map = index["weight_map"].as_object().expect("weight_map");
    assert_eq!(map.len(), 3);
    for (tensor, file) in map {
        let path = folder.join(file.as_str().expect("file"));
        let blob = model_checkpoint::store::CheckpointFile::open(
            &path,
            model_checkpoint::store::Verify::Full,
        )
        .expect("blob verifies");
        assert!(
            blob.tensor(tensor).is_some(),
            "{tensor} in {}",
            path.display()
        );
    }
    assert_eq!(
        map["head.weight"], map["__training__/optimizer/head.weight/m"],
        "the changing tensors are one group"
    );
    assert_ne!(map["backbone.weight"], map["head.weight"]);
    // The best and latest a run reports are its folders.
    assert_eq!(
        cb.latest().expect("latest").file_name(),
        Some("e05.safetensors")
    );
}

#[test]
fn restore_from_a_deduplicated_checkpoint_is_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb = callback(dir.path(), "e{epoch:02d}.safetensors");
    let model = Model::new();
    train(&mut cb, &model, 0..3);
    let storage = LocalFolder::default();
    let checkpoint =
        ShardedCheckpoint::open(&storage, &Name::from(dir.path().join("e02.safetensors")))
            .expect("open");
    let mut fresh = Model::new();
    let mut resumed = callback(dir.path(), "e{epoch:02d}.safetensors");
    let restored = restore_from_sharded(
        &checkpoint,
        Ranks::single(),
        &mut fresh,
        &mut [&mut resumed],
    )
    .expect("restore");
    assert_eq!(fresh.epoch.get(), 2);
    assert_eq!(restored.meta.epoch, Some(2));
    let got: std::collections::BTreeMap<String, Vec<u8>> =
        fresh.restored.borrow().iter().cloned().collect();
    assert_eq!(got["backbone.weight"], frozen().data());
    assert_eq!(got["head.weight"], head(2).data());
    assert_eq!(got["optimizer/head.weight/m"], moment(2).data());
    // `restore_latest` finds the newest of them, a folder, as it finds files.
    let mut latest = Model::new();
    let restored = model_checkpoint::restore::restore_latest(dir.path(), &mut latest, &mut [])
        .expect("restore the latest");
    assert_eq!(restored.meta.epoch, Some(3));
    assert_eq!(latest.epoch.get(), 3);
    // The resumed callback carries on the run: its next saves share the backbone.
    train(&mut resumed, &fresh, 2..4);
    assert_eq!(all_whole(dir.path()), 4);
    let big = blob_names(dir.path())
        .iter()
        .filter(|b| {
            std::fs::metadata(dir.path().join("blobs").join(b))
                .expect("blob")
                .len()
                > FROZEN as u64
        })
        .count();
    assert_eq!(big, 1);
}

#[test]
fn an_unchanged_group_is_reused_and_a_tensor_that_stops_changing_goes_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb = callback(dir.path(), "e{epoch:02d}.safetensors");
    let model = Model::new();
    cb.on_train_begin(&Logs::new(), &mut Context::new(&model))
        .expect("begin");
    let save = |cb: &mut ModelCheckpoint, epoch: usize| {
        let mut ctx = Context::new(&model);
        cb.on_epoch_begin(epoch, &Logs::new(), &mut ctx)
            .expect("epoch begin");
        cb.on_epoch_end(epoch, &Logs::from([("loss", 1.0)]), &mut ctx)
            .expect("epoch end");
    };
    let map = |name: &str| -> serde_json::Value {
        let index = index_of(&dir.path().join(name));
        index["weight_map"].clone()
    };
    for e in 0..4 {
        model.epoch.set(e + 1);
        save(&mut cb, e as usize);
    }
    // Saved again unchanged: the same group, found there, not written again.
    let blobs_before = blob_names(dir.path()).len();
    save(&mut cb, 4);
    let (e04, e05) = (map("e04.safetensors"), map("e05.safetensors"));
    assert_eq!(e04["head.weight"], e05["head.weight"]);
    assert_ne!(e05["head.weight"], e05["backbone.weight"]);
    // Only the new checkpoint's head is new.
    assert_eq!(blob_names(dir.path()).len(), blobs_before + 1);
    // Having not changed, the head weight and moment are hashed first next time, and go
    // alone: the next save names each tensor's own blob.
    save(&mut cb, 5);
    let e06 = map("e06.safetensors");
    assert_ne!(
        e06["head.weight"],
        e06["__training__/optimizer/head.weight/m"]
    );
    cb.on_train_end(&Logs::new(), &mut Context::new(&model))
        .expect("end");
    assert_eq!(all_whole(dir.path()), 6);
}

#[test]
fn a_fixed_name_is_replaced_and_its_old_blobs_collected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb = callback(dir.path(), "best.safetensors");
    let model = Model::new();
    train(&mut cb, &model, 0..4);
    assert_eq!(
        checkpoints(dir.path()),
        BTreeSet::from(["best.safetensors".to_owned()])
    );
    // The head weight and the moment changed at every save: from the third on they are
    // written together, as one group blob.
    assert_eq!(
        blob_names(dir.path()).len(),
        3,
        "backbone, the group of head and moment, head blob"
    );
    // One marker: the replaced heads' went with them.
    let markers = std::fs::read_dir(dir.path())
        .expect("list")
        .filter(|e| {
            e.as_ref()
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .starts_with(".ckpt-run.")
                && !e
                    .as_ref()
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".csv")
        })
        .count();
    assert_eq!(markers, 1);
    assert_eq!(all_whole(dir.path()), 1);
}

#[test]
fn blobs_of_another_run_or_that_an_index_names_are_never_collected() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Another run left a checkpoint, and a blob no index names (its crash).
    let mut other = callback(dir.path(), "other-{epoch:02d}.safetensors").with_run_id("0ff1ce");
    let model = Model::new();
    train(&mut other, &model, 0..1);
    let storage = LocalFolder::default();
    let orphan = Name::from(
        dir.path()
            .join("blobs")
            .join(format!("{}.safetensors", "e".repeat(64))),
    );
    // The metadata every file of a run carries: its id.
    let info = std::collections::BTreeMap::from([("run_id".to_owned(), "0ff1ce".to_owned())]);
    model_checkpoint::store::save_to(
        &storage,
        &orphan,
        model_checkpoint::store::Kind::Weights,
        &[NamedTensor::new("x", HostTensor::from_f32(vec![1], &[1.0]))],
        &info,
        &Default::default(),
    )
    .expect("orphan");
    let before = blob_names(dir.path());
    // This run keeps one checkpoint: its retention and collections run at every save.
    let mut cb = callback(dir.path(), "e{epoch:02d}.safetensors").keep_last(1);
    train(&mut cb, &Model::new(), 0..3);
    let after = blob_names(dir.path());
    assert!(after.is_superset(&before), "another run's blobs stay");
    assert_eq!(checkpoints(dir.path()).len(), 2);
    assert_eq!(all_whole(dir.path()), 2);
    // The same run, resumed under its id, collects its own orphan at its first save.
    let mut again = callback(dir.path(), "other-{epoch:02d}.safetensors").with_run_id("0ff1ce");
    train(&mut again, &Model::new(), 1..2);
    assert!(!blob_names(dir.path()).contains(&format!("{}.safetensors", "e".repeat(64))));
    assert_eq!(all_whole(dir.path()), 3);
}

#[test]
fn a_damaged_blob_fails_verification() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb = callback(dir.path(), "e{epoch:02d}.safetensors");
    train(&mut cb, &Model::new(), 0..1);
    let big = blob_names(dir.path())
        .into_iter()
        .map(|b| dir.path().join("blobs").join(b))
        .max_by_key(|p| std::fs::metadata(p).expect("blob").len())
        .expect("a blob");
    let mut bytes = std::fs::read(&big).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&big, bytes).expect("write");
    let storage = LocalFolder::default();
    let checkpoint =
        ShardedCheckpoint::open(&storage, &Name::from(dir.path().join("e01.safetensors")))
            .expect("the headers are intact");
    let err = checkpoint
        .read("backbone.weight")
        .expect_err("damage found");
    assert!(err.to_string().contains("checksum"), "{err}");
}

/// A new process (a new callback: it knows no blob) that resumed `model` after epoch
/// `epoch` and saves the next one with `cb`: the save's result (a failed save ends it).
fn save_next_epoch(
    mut cb: ModelCheckpoint,
    model: &Model,
    epoch: u32,
    loss: f64,
) -> Result<(), Error> {
    model.epoch.set(epoch);
    cb.on_train_begin(&Logs::new(), &mut Context::new(model))?;
    end_epoch(&mut cb, model, epoch, loss)?;
    cb.on_train_end(&Logs::new(), &mut Context::new(model))?;
    Ok(())
}

/// `cb`'s end of epoch `epoch` of `model`, trained through it, with `loss` logged.
fn end_epoch(cb: &mut ModelCheckpoint, model: &Model, epoch: u32, loss: f64) -> Result<(), Error> {
    model.epoch.set(epoch + 1);
    let logs = Logs::from([("loss", loss)]);
    cb.on_epoch_end(epoch as usize, &logs, &mut Context::new(model))?;
    Ok(())
}

/// The file of tensor `name` in the deduplicated checkpoint `folder`.
fn blob_path(folder: &Path, name: &str) -> PathBuf {
    folder.join(
        index_of(folder)["weight_map"][name]
            .as_str()
            .expect("mapped"),
    )
}

/// Flips the last byte of `path`.
fn flip_last_byte(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn a_damaged_blob_is_written_again_by_the_next_process_that_needs_it() {
    // A requeued job's first save finds the frozen backbone's blob on disk. Reusing it by
    // its header alone made every later checkpoint name the damaged bytes (and fail to
    // verify); it is read whole once, and written again with the bytes its name says.
    let dir = tempfile::tempdir().expect("tempdir");
    let template = "e{epoch:02d}.safetensors";
    train(&mut callback(dir.path(), template), &Model::new(), 0..1);
    let backbone = blob_path(&dir.path().join("e01.safetensors"), "backbone.weight");
    let holds_frozen = || {
        let blob = model_checkpoint::store::CheckpointFile::open(&backbone, Verify::Full)
            .expect("the blob verifies");
        blob.read("backbone.weight").expect("read") == frozen().data()
    };
    flip_last_byte(&backbone);
    let model = Model::new();
    save_next_epoch(callback(dir.path(), template), &model, 1, 0.5)
        .expect("the save mends the blob");
    assert!(holds_frozen(), "mended with the bytes its name says");
    // Both checkpoints verify: the new one, and the old one that names the same blob.
    assert_eq!(all_whole(dir.path()), 2);

    // A blob this tool wrote, checksums intact, with other bytes under the name (a faulty
    // writer, or a hand's copy): compared with the tensor, and written again too. Its
    // header came with the other bytes: e01, which pinned the first, does not open again,
    // and the checkpoint this save makes holds the right bytes.
    let other = HostTensor::new(Dtype::F32, vec![FROZEN / 4], vec![7u8; FROZEN]).expect("other");
    let mut info = std::collections::BTreeMap::new();
    info.insert("run_id".to_owned(), "someone-else".to_owned());
    model_checkpoint::store::save(
        &backbone,
        model_checkpoint::store::Kind::Weights,
        &[NamedTensor::new("backbone.weight", other)],
        &info,
        &model_checkpoint::store::SaveOptions::default(),
    )
    .expect("plant");
    save_next_epoch(callback(dir.path(), template), &model, 1, 0.5)
        .expect("the save mends the blob");
    assert!(holds_frozen(), "mended with the bytes its name says");
    let e02 = ShardedCheckpoint::open(
        &LocalFolder::default(),
        &Name::from(dir.path().join("e02.safetensors")),
    )
    .expect("the new checkpoint opens");
    assert!(e02.read("backbone.weight").expect("verifies").data() == frozen().data());

    // A blob that is not this tool's (no checksums) is not reused, and not replaced.
    let plain = {
        let data = frozen();
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            vec![FROZEN / 4],
            data.data(),
        )
        .expect("view");
        safetensors::serialize([("backbone.weight", view)], None).expect("serialize")
    };
    std::fs::write(&backbone, &plain).expect("write");
    let err = save_next_epoch(callback(dir.path(), template), &model, 2, 0.25)
        .expect_err("a foreign blob is refused");
    assert!(
        err.to_string().contains("no checksums") && err.to_string().contains("blobs/"),
        "{err}"
    );
    assert!(
        std::fs::read(&backbone).expect("read") == plain,
        "left alone"
    );

    // A blob that does not open (truncated) is not replaced either; the error says what to do.
    std::fs::write(&backbone, &plain[..plain.len() / 2]).expect("truncate");
    let err = save_next_epoch(callback(dir.path(), template), &model, 2, 0.25)
        .expect_err("a truncated blob is refused");
    assert!(err.to_string().contains("move it away"), "{err}");
}

#[test]
fn a_damaged_group_blob_is_written_again_when_the_same_group_recurs() {
    // The tensors that change at every save go together in one group blob; an epoch trained
    // again gives the same group, found there: read whole, and mended when damaged.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb = callback(dir.path(), "e{epoch:02d}-l{loss:.2f}.safetensors");
    let model = Model::new();
    cb.on_train_begin(&Logs::new(), &mut Context::new(&model))
        .expect("begin");
    for epoch in 0..3 {
        end_epoch(&mut cb, &model, epoch, 1.0 / f64::from(epoch + 1)).expect("save");
    }
    let last = dir.path().join("e03-l0.33.safetensors");
    let group = blob_path(&last, "head.weight");
    let moment = index_of(&last)["weight_map"]["__training__/optimizer/head.weight/m"].clone();
    assert_eq!(
        moment.as_str(),
        group.strip_prefix(&last).ok().and_then(|p| p.to_str()),
        "one group"
    );
    flip_last_byte(&group);
    end_epoch(&mut cb, &model, 2, 0.1).expect("the same group again, mended");
    cb.on_train_end(&Logs::new(), &mut Context::new(&model))
        .expect("end");
    // Both checkpoints that name the group verify.
    assert_eq!(all_whole(dir.path()), 4);
}

#[test]
fn a_head_with_other_metadata_under_its_name_is_written_again() {
    // The same save made twice (a run re-saving an epoch under its id) finds its head there;
    // a file with other metadata under that name is not taken for it.
    let dir = tempfile::tempdir().expect("tempdir");
    let template = "e{epoch:02d}.safetensors";
    let run = |dir: &Path| callback(dir, template).with_run_id("a1");
    train(&mut run(dir.path()), &Model::new(), 0..1);
    let e01 = dir.path().join("e01.safetensors");
    let head = e01.join(
        index_of(&e01)["model_checkpoint"]["shards"][0]["file"]
            .as_str()
            .expect("head"),
    );
    let genuine = std::fs::read(&head).expect("read");
    let mut info = std::collections::BTreeMap::new();
    info.insert("run_id".to_owned(), "a1".to_owned());
    info.insert("epoch".to_owned(), "9".to_owned());
    model_checkpoint::store::save(
        &head,
        model_checkpoint::store::Kind::Full,
        &[],
        &info,
        &model_checkpoint::store::SaveOptions::default(),
    )
    .expect("plant");
    train(&mut run(dir.path()), &Model::new(), 0..1);
    assert!(
        std::fs::read(&head).expect("read") == genuine,
        "written again"
    );
    assert_eq!(all_whole(dir.path()), 1);
    // Its metadata and one key more (a batch it was not saved at): not the head either.
    let file = model_checkpoint::store::CheckpointFile::open(&head, Verify::Full).expect("head");
    let mut info: std::collections::BTreeMap<String, String> = file
        .info()
        .iter()
        .filter(|(k, _)| !model_checkpoint::store::RESERVED_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    info.insert("batch".to_owned(), "3".to_owned());
    model_checkpoint::store::save(
        &head,
        file.kind(),
        &[],
        &info,
        &model_checkpoint::store::SaveOptions::default(),
    )
    .expect("plant");
    train(&mut run(dir.path()), &Model::new(), 0..1);
    assert!(
        std::fs::read(&head).expect("read") == genuine,
        "written again, without the key"
    );
}

#[test]
fn damage_early_in_a_blob_is_told_from_other_bytes() {
    // A flipped byte at the start of a blob differs from the tensor at once; read on to its
    // end, the blob fails its checksum: damage, written again as it was first written (its
    // run's header), so the first run's checkpoint verifies again.
    let dir = tempfile::tempdir().expect("tempdir");
    let template = "e{epoch:02d}.safetensors";
    train(
        &mut callback(dir.path(), template).with_run_id("a1"),
        &Model::new(),
        0..1,
    );
    let backbone = blob_path(&dir.path().join("e01.safetensors"), "backbone.weight");
    let mut bytes = std::fs::read(&backbone).expect("read");
    let first = bytes.len() - FROZEN;
    bytes[first] ^= 1;
    std::fs::write(&backbone, bytes).expect("write");
    let another = callback(dir.path(), template).with_run_id("a2");
    save_next_epoch(another, &Model::new(), 1, 0.5).expect("mended");
    assert_eq!(all_whole(dir.path()), 2);
}

#[test]
fn a_damaged_compressed_blob_is_mended_as_it_was_written() {
    // Written compressed, mended by a job that no longer compresses: it is written again
    // compressed, with the header the first checkpoint's index committed.
    let dir = tempfile::tempdir().expect("tempdir");
    let template = "e{epoch:02d}.safetensors";
    train(
        &mut callback(dir.path(), template).compress(true),
        &Model::new(),
        0..1,
    );
    let e01 = dir.path().join("e01.safetensors");
    let before = blob_of(&e01, "backbone.weight");
    assert!(before.info().contains_key("encoding"), "compressed");
    flip_last_byte(&blob_path(&e01, "backbone.weight"));
    save_next_epoch(callback(dir.path(), template), &Model::new(), 1, 0.5)
        .expect("the save mends the blob");
    let after = blob_of(&e01, "backbone.weight");
    assert_eq!(after.header_digest(), before.header_digest());
    assert_eq!(all_whole(dir.path()), 2);
}

#[test]
fn a_weight_map_that_disagrees_with_the_tensors_does_not_open() {
    // Hugging Face's readers follow `weight_map`; ours follow `tensors`. An index whose map
    // names another file (here one outside the run), or a tensor the index does not hold,
    // would verify here and load other bytes there: it is refused by name.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb = callback(dir.path(), "e{epoch:02d}.safetensors");
    train(&mut cb, &Model::new(), 0..1);
    let folder = dir.path().join("e01.safetensors");
    let original = std::fs::read(folder.join(INDEX_FILE)).expect("index");
    let storage = LocalFolder::default();
    let open = || ShardedCheckpoint::open(&storage, &Name::from(folder.as_path()));
    open().expect("as saved, it opens");
    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit); 3] = [
        ("does not name the shard", |index| {
            index["weight_map"]["head.weight"] = "../../../../etc/passwd".into();
        }),
        ("does not name the shard", |index| {
            let map = index["weight_map"].as_object_mut().expect("map");
            map.remove("head.weight");
        }),
        ("which the index does not hold", |index| {
            index["weight_map"]["planted"] = "../elsewhere.safetensors".into();
        }),
    ];
    for (expected, edit) in edits {
        let mut index: serde_json::Value = serde_json::from_slice(&original).expect("json");
        edit(&mut index);
        std::fs::write(
            folder.join(INDEX_FILE),
            serde_json::to_vec(&index).expect("json"),
        )
        .expect("write");
        let Err(err) = open() else {
            panic!("an index whose weight_map was edited opened");
        };
        assert!(
            err.to_string().contains("weight_map") && err.to_string().contains(expected),
            "{err}"
        );
    }
}

#[test]
fn an_index_that_lost_a_tensor_from_both_lists_does_not_open() {
    // Edited by hand (or damaged) consistently: `tensors` and `weight_map` agree, and every
    // file named is whole. The head, whose header the index pins by its digest, records
    // which tensors the save held.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb = callback(dir.path(), "e{epoch:02d}.safetensors");
    train(&mut cb, &Model::new(), 0..1);
    let folder = dir.path().join("e01.safetensors");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join(INDEX_FILE)).expect("index"))
            .expect("json");
    for list in ["/weight_map", "/model_checkpoint/tensors"] {
        index
            .pointer_mut(list)
            .and_then(serde_json::Value::as_object_mut)
            .expect("a map")
            .remove("head.weight")
            .expect("saved");
    }
    std::fs::write(
        folder.join(INDEX_FILE),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("write");
    let storage = LocalFolder::default();
    let Err(err) = ShardedCheckpoint::open(&storage, &Name::from(folder.as_path())) else {
        panic!("an index that lost a tensor opened");
    };
    assert!(
        err.to_string()
            .contains("its tensors are not the ones its head"),
        "{err}"
    );
}

#[test]
fn latest_passes_over_a_damaged_deduplicated_checkpoint_as_over_a_damaged_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb = callback(dir.path(), "e{epoch:02d}.safetensors");
    train(&mut cb, &Model::new(), 0..3);
    // The head changes every epoch: its blob in e03 is e03's alone.
    let e03 = dir.path().join("e03.safetensors");
    flip_last_byte(&blob_path(&e03, "head.weight"));
    // Its headers are intact: only reading every byte finds the damage, as for a file.
    let folder = Name::from(dir.path());
    let latest = model_checkpoint::restore::latest_resumable(&LocalFolder::default(), &folder)
        .expect("an older one");
    assert_eq!(latest.name(), &folder.join("e02.safetensors"));
    let resumed = callback(dir.path(), "e{epoch:02d}.safetensors");
    assert_eq!(
        resumed.latest().expect("latest"),
        folder.join("e02.safetensors")
    );
    let mut fresh = Model::new();
    let restored = model_checkpoint::restore::restore_latest(dir.path(), &mut fresh, &mut [])
        .expect("restore the one before");
    assert_eq!(restored.meta.epoch, Some(2));
}

#[test]
fn an_index_whose_metadata_was_changed_is_damaged_not_another_epoch() {
    // One bit of the index's epoch ('1' to '9') would make e01 the newest: a requeued job
    // would rewind to it and save over e02 and e03.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb = callback(dir.path(), "e{epoch:02d}.safetensors");
    train(&mut cb, &Model::new(), 0..3);
    let e01 = dir.path().join("e01.safetensors");
    let text = std::fs::read_to_string(e01.join(INDEX_FILE)).expect("index");
    assert!(text.contains(r#""epoch":"1""#), "{text}");
    std::fs::write(
        e01.join(INDEX_FILE),
        text.replace(r#""epoch":"1""#, r#""epoch":"9""#),
    )
    .expect("write");
    let Err(err) = ShardedCheckpoint::open(&LocalFolder::default(), &Name::from(e01.as_path()))
    else {
        panic!("an index with another epoch than its head opened");
    };
    assert!(err.to_string().contains(r#"metadata's "epoch""#), "{err}");
    let folder = Name::from(dir.path());
    let latest = model_checkpoint::restore::latest_resumable(&LocalFolder::default(), &folder)
        .expect("the newest");
    assert_eq!(latest.name(), &folder.join("e03.safetensors"));
}

#[test]
fn a_weights_only_folder_given_to_resume_is_named_as_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb = callback(dir.path(), "w{epoch:02d}.safetensors").save_weights_only(true);
    train(&mut cb, &Model::new(), 0..1);
    let folder = Name::from(dir.path().join("w01.safetensors"));
    let opened = model_checkpoint::restore::AnyCheckpoint::open(
        &LocalFolder::default(),
        &folder,
        model_checkpoint::store::Verify::Full,
    )
    .expect("a folder checkpoint");
    let Err(err) = opened.restore(&mut Model::new(), &mut []) else {
        panic!("a weights-only checkpoint restored");
    };
    assert!(
        matches!(&err, model_checkpoint::Error::NotAFullCheckpoint { path } if *path == folder),
        "{err}"
    );
}

/// The index of the deduplicated checkpoint `folder`, as JSON.
fn index_of(folder: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(folder.join(INDEX_FILE)).expect("index")).expect("json")
}

/// The blob holding tensor `name` in checkpoint `folder`, opened.
fn blob_of(folder: &Path, name: &str) -> model_checkpoint::store::CheckpointFile {
    let index = index_of(folder);
    let file = index["weight_map"][name].as_str().expect("named");
    model_checkpoint::store::CheckpointFile::open(
        &folder.join(file),
        model_checkpoint::store::Verify::Full,
    )
    .expect("blob verifies as a plain file")
}

#[test]
fn compressed_checkpoints_restore_exactly_and_check_the_decoded_bytes() {
    use model_checkpoint::sharded::codec::Encoding;
    let dir = tempfile::tempdir().expect("tempdir");
    let template = "e{epoch:02d}.safetensors";
    // Two plain checkpoints, then the same run compressed: a blob already there is reused
    // as it is (the backbone stays one plain blob), new ones are compressed.
    let model = Model::new();
    let mut plain = callback(dir.path(), template).with_run_id("0a");
    train(&mut plain, &model, 0..2);
    let mut cb = callback(dir.path(), template)
        .with_run_id("0a")
        .compress(true);
    train(&mut cb, &model, 2..4);
    let e04 = dir.path().join("e04.safetensors");
    let backbone = blob_of(&e04, "backbone.weight");
    assert!(
        Encoding::of(&backbone).expect("parses").is_none(),
        "reused plain"
    );
    const MOMENT: &str = "__training__/optimizer/head.weight/m";
    let moment_blob = blob_of(&e04, MOMENT);
    let encoding = Encoding::of(&moment_blob)
        .expect("parses")
        .expect("a new blob is compressed");
    assert_eq!(encoding.dtype, Dtype::F32);
    assert_eq!(encoding.shape, vec![64]);
    let stored = moment_blob.tensors().next().expect("one tensor");
    assert_eq!(stored.dtype, Dtype::U8);
    assert!(stored.len < 64 * 4, "compressed: {} bytes", stored.len);

    // A fresh run compressed from the start compresses the backbone too.
    let fresh_dir = tempfile::tempdir().expect("tempdir");
    let mut fresh_cb = callback(fresh_dir.path(), template).compress(true);
    train(&mut fresh_cb, &Model::new(), 0..2);
    let backbone = blob_of(&fresh_dir.path().join("e02.safetensors"), "backbone.weight");
    assert!(Encoding::of(&backbone).expect("parses").is_some());
    assert!(backbone.len() < FROZEN as u64 / 2, "{}", backbone.len());
    assert_eq!(all_whole(fresh_dir.path()), 2);

    // Exact restore from a compressed checkpoint.
    let storage = LocalFolder::default();
    let checkpoint = ShardedCheckpoint::open(&storage, &Name::from(e04.clone())).expect("open");
    for (file, _) in checkpoint.files() {
        checkpoint.verify_file(file).expect("every file verifies");
    }
    let mut restored_model = Model::new();
    let mut resumed = callback(dir.path(), template).compress(true);
    restore_from_sharded(
        &checkpoint,
        Ranks::single(),
        &mut restored_model,
        &mut [&mut resumed],
    )
    .expect("restore");
    let got: std::collections::BTreeMap<String, Vec<u8>> =
        restored_model.restored.borrow().iter().cloned().collect();
    assert_eq!(restored_model.epoch.get(), 4);
    assert_eq!(got["backbone.weight"], frozen().data());
    assert_eq!(got["head.weight"], head(4).data());
    assert_eq!(got["optimizer/head.weight/m"], moment(4).data());

    // Exported whole, it is a plain file with the same tensors.
    let exported = Name::from(dir.path().join("whole.safetensors"));
    checkpoint
        .export_whole(&storage, &exported)
        .expect("export");
    let whole = model_checkpoint::store::CheckpointFile::open(
        &dir.path().join("whole.safetensors"),
        model_checkpoint::store::Verify::Full,
    )
    .expect("plain file");
    assert_eq!(whole.read(MOMENT).expect("read"), moment(4).data());
    assert!(whole.info().get("encoding").is_none());

    // The decoded bytes are checked on their own: a wrong decoded checksum, or a shape the
    // bytes do not decode to, is an error naming the blob (never other bytes).
    let bytes = moment_blob.read(MOMENT).expect("stored");
    let mut wrong = encoding.clone();
    wrong.crc32 = "00000000".to_owned();
    let err = wrong.decode(&moment_blob, &bytes).expect_err("checked");
    assert!(err.to_string().contains("fail their checksum"), "{err}");
    let mut wrong = encoding.clone();
    wrong.shape = vec![65];
    let err = wrong.decode(&moment_blob, &bytes).expect_err("checked");
    assert!(
        err.to_string().contains("not the 260 of its shape"),
        "{err}"
    );
    wrong.shape = vec![usize::MAX / 2];
    assert!(wrong.decode(&moment_blob, &bytes).is_err());
    assert_eq!(
        encoding.decode(&moment_blob, &bytes).expect("decodes"),
        moment(4).data()
    );

    // A flipped byte of a compressed tensor is found by the file's own checksum.
    let path = dir.path().join("e04.safetensors");
    let index = index_of(&path);
    let blob = path.join(index["weight_map"][MOMENT].as_str().expect("f"));
    let mut raw = std::fs::read(&blob).expect("read");
    let last = raw.len() - 1;
    raw[last] ^= 0x40;
    std::fs::write(&blob, raw).expect("write");
    let checkpoint = ShardedCheckpoint::open(&storage, &Name::from(e04)).expect("headers intact");
    let err = checkpoint.read(MOMENT).expect_err("damage found");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn a_hostile_encoding_is_an_error_naming_the_blob() {
    use model_checkpoint::sharded::codec::{Encoding, KEY_ENCODING};
    use model_checkpoint::store::{save_to, CheckpointFile, Kind, SaveOptions, Verify};
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = LocalFolder::default();
    let bytes = HostTensor::new(Dtype::U8, vec![8], vec![7; 8]).expect("tensor");
    let f32s = HostTensor::from_f32(vec![2], &[1.0, 2.0]);
    let cases: [(&str, &str, Vec<NamedTensor<'_>>); 6] = [
        // 8 compressed bytes cannot decode to 4 MiB: refused before any allocation.
        (
            "bomb",
            r#"{"codec":"zstd-byte-planes","dtype":"F32","shape":[1048576],"crc32":"00000000"}"#,
            vec![NamedTensor::new("t", bytes.clone())],
        ),
        (
            "json",
            "{not json",
            vec![NamedTensor::new("t", bytes.clone())],
        ),
        (
            "codec",
            r#"{"codec":"lz4","dtype":"F32","shape":[2],"crc32":"00000000"}"#,
            vec![NamedTensor::new("t", bytes.clone())],
        ),
        (
            "huge",
            r#"{"codec":"zstd-byte-planes","dtype":"F64","shape":[4611686018427387904,4],"crc32":"00000000"}"#,
            vec![NamedTensor::new("t", bytes.clone())],
        ),
        (
            "not-u8",
            r#"{"codec":"zstd-byte-planes","dtype":"F32","shape":[2],"crc32":"00000000"}"#,
            vec![NamedTensor::new("t", f32s.clone())],
        ),
        (
            "two",
            r#"{"codec":"zstd-byte-planes","dtype":"F32","shape":[2],"crc32":"00000000"}"#,
            vec![
                NamedTensor::new("t", bytes.clone()),
                NamedTensor::new("u", bytes.clone()),
            ],
        ),
    ];
    for (case, encoding, tensors) in cases {
        let path = dir.path().join(format!("{case}.safetensors"));
        let info =
            std::collections::BTreeMap::from([(KEY_ENCODING.to_owned(), encoding.to_owned())]);
        save_to(
            &storage,
            &Name::from(path.clone()),
            Kind::Weights,
            &tensors,
            &info,
            &SaveOptions::default(),
        )
        .expect("a well-formed file");
        let file = CheckpointFile::open(&path, Verify::Full).expect("verifies as a file");
        let err = Encoding::of(&file).expect_err(case);
        assert!(
            err.to_string().contains(&format!("{case}.safetensors")),
            "{case}: {err}"
        );
    }
    // Bytes that are not a zstd frame, under a valid encoding: an error, not a panic.
    let path = dir.path().join("garbage.safetensors");
    let info = std::collections::BTreeMap::from([(
        KEY_ENCODING.to_owned(),
        r#"{"codec":"zstd-byte-planes","dtype":"F32","shape":[2],"crc32":"00000000"}"#.to_owned(),
    )]);
    save_to(
        &storage,
        &Name::from(path.clone()),
        Kind::Weights,
        &[NamedTensor::new("t", bytes.clone())],
        &info,
        &SaveOptions::default(),
    )
    .expect("file");
    let file = CheckpointFile::open(&path, Verify::Full).expect("file");
    let encoding = Encoding::of(&file).expect("parses").expect("encoded");
    let err = encoding
        .decode(&file, &file.read("t").expect("read"))
        .expect_err("not zstd");
    assert!(err.to_string().contains("do not decode"), "{err}");
}

#[test]
fn compression_without_dedup_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb = ModelCheckpoint::new(
        dir.path()
            .join("e{epoch}.safetensors")
            .to_string_lossy()
            .into_owned(),
    )
    .compress(true);
    let err = cb
        .on_train_begin(&Logs::new(), &mut Context::new(&Model::new()))
        .expect_err("refused");
    assert!(err.to_string().contains("add dedup(true)"), "{err}");
}

#[test]
fn combinations_not_supported_yet_are_refused_before_training() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = Model::new();
    for cb in [
        callback(dir.path(), "e{epoch}.safetensors").background(true),
        callback(dir.path(), "e{epoch}.safetensors").save_on_interrupt(true),
        callback(dir.path(), "e{epoch}.safetensors")
            .with_run_id("abc")
            .sharded(Ranks::new(0, 2).expect("ranks")),
    ] {
        let mut cb = cb;
        let err = cb
            .on_train_begin(&Logs::new(), &mut Context::new(&model))
            .expect_err("refused");
        // Named as the options they are, not as a state that cannot be restored.
        assert!(
            matches!(err, model_checkpoint::Error::Incompatible { .. })
                && err.to_string().contains("a deduplicated save")
                && !err.to_string().contains("cannot restore"),
            "{err}"
        );
    }
}

const CHILD_DIR: &str = "CKPT_DEDUP_CRASH_DIR";

#[test]
#[ignore = "helper: the crash test runs it as a child process"]
fn child_saves_deduplicated_forever() {
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).expect("run by the crash test"));
    // One run across restarts (its id given), keeping two: every save deletes and collects.
    let mut cb = callback(&dir, "e{epoch:06d}.safetensors")
        .with_run_id("c0ffee")
        .keep_last(2)
        .overwrite(false)
        // Half the restarts compress the blobs they write: both kinds share the folder.
        .compress(std::process::id().is_multiple_of(2));
    let model = Model::new();
    let start = checkpoints(&dir).len() as u32 * 1000 + std::process::id() % 1000;
    train(&mut cb, &model, start..start + 1_000_000);
}

#[test]
fn sigkill_during_deduplicated_saves_and_retention_never_loses_a_blob() {
    let kills: u64 = std::env::var("CKPT_CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut seen = 0usize;
    for kill in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_saves_deduplicated_forever",
                "--ignored",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start child");
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(5_000 + rng % 120_000));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        // Every committed checkpoint has every blob it names, and each verifies.
        seen += std::panic::catch_unwind(|| all_whole(dir.path()))
            .unwrap_or_else(|_| panic!("after kill {kill} a committed checkpoint is not whole"));
    }
    println!("dedup crash test: {kills} kills, {seen} committed checkpoints checked whole");
    assert!(seen as u64 >= kills, "saves must commit between kills");
    // What the kills left unnamed is collected by the run's next start and save.
    let mut cb = callback(dir.path(), "e{epoch:06d}.safetensors")
        .with_run_id("c0ffee")
        .keep_last(2)
        .overwrite(false);
    train(&mut cb, &Model::new(), 0..1);
    let storage = LocalFolder::default();
    let mut named = BTreeSet::new();
    for name in checkpoints(dir.path()) {
        let folder = Name::from(dir.path().join(&name));
        let index = model_checkpoint::sharded::read_index(&storage, &folder.join(INDEX_FILE))
            .expect("index");
        let s = &index.model_checkpoint;
        for entry in s.shards.iter().chain(s.blobs.iter().flatten()) {
            named.insert(
                folder
                    .join(&entry.file)
                    .file_name()
                    .expect("name")
                    .to_owned(),
            );
        }
    }
    let unnamed: Vec<String> = blob_names(dir.path())
        .into_iter()
        .filter(|b| !named.contains(b))
        .collect();
    assert!(
        unnamed.is_empty(),
        "left unnamed after a clean save: {unnamed:?}"
    );
    let _ = storage.list(&Name::from(dir.path()), 0);
}

#[test]
fn last_at_another_depth_than_the_checkpoints_opens_as_they_do() {
    // `last/` names the same blobs from the run folder, the checkpoints from a folder
    // below it: the head's digest of the index's tensors holds for both.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cb = callback(dir.path(), "e{epoch:02d}/w.safetensors").save_last(true);
    train(&mut cb, &Model::new(), 0..2);
    let storage = LocalFolder::default();
    for folder in ["e02/w.safetensors", "last"] {
        let path = dir.path().join(folder);
        let checkpoint =
            ShardedCheckpoint::open(&storage, &Name::from(path.as_path())).expect(folder);
        checkpoint.verify().expect(folder);
    }
}

#[test]
fn latest_names_the_save_itself_not_the_last_that_stands_for_it() {
    // `last` ties with the newest save (the same epoch and step): `latest` names the save,
    // whose name stays when `last` moves on, for a file as for a deduplicated checkpoint.
    for dedup in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cb = callback(dir.path(), "e{epoch:02d}.safetensors")
            .dedup(dedup)
            .save_last(true);
        train(&mut cb, &Model::new(), 0..3);
        let storage = LocalFolder::default();
        let latest = model_checkpoint::store::latest_full_in(&storage, &Name::from(dir.path()))
            .or_else(|_| {
                model_checkpoint::sharded::latest_sharded(&storage, &Name::from(dir.path()))
            })
            .expect("latest");
        assert!(
            latest.as_str().ends_with("/e03.safetensors"),
            "dedup {dedup}: {latest}"
        );
    }
}
