//! The `Storage` seam, proven with a second implementation (in memory): full checkpoints
//! with retention and `last`, then a resume from `latest` through the same seam, give the
//! same objects as training straight through.

mod memory;

use model_checkpoint::store::Name;
use std::cell::Cell;
use std::sync::Arc;

use model_checkpoint::restore::restore_latest_in;
use model_checkpoint::TensorSource;
use model_checkpoint::{
    Callback, Checkpointable, Context, Dtype, Error, HostTensor, Logs, ModelCheckpoint,
    NamedTensor, TrainingState,
};

/// A model whose weights and training state are its epoch counter.
struct Toy(Cell<u32>);

impl Checkpointable for Toy {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        Ok(vec![NamedTensor::new(
            "w",
            HostTensor::from_f32(vec![8], &[self.0.get() as f32; 8]),
        )])
    }
    fn training_state(&self) -> Result<TrainingState<'_>, Error> {
        let mut state = TrainingState::default();
        state.document.loop_state = Some(model_checkpoint::store::LoopState {
            epoch: u64::from(self.0.get()),
            ..Default::default()
        });
        Ok(state)
    }
    fn restore_weights(&mut self, stored: &dyn TensorSource) -> Result<(), Error> {
        stored.read("w", Dtype::F32, &[8]).map(|_| ())
    }
    fn restore_training_state(
        &mut self,
        _: &dyn TensorSource,
        document: &model_checkpoint::store::TrainingDocument,
    ) -> Result<(), Error> {
        self.0
            .set(document.loop_state.as_ref().map_or(0, |l| l.epoch) as u32);
        Ok(())
    }
}

/// The checkpoints, without the markers that prove which run wrote them.
fn checkpoints(storage: &memory::Shared) -> Vec<String> {
    storage
        .0
        .names()
        .into_iter()
        .filter(|n| !n.starts_with("ck/.ckpt-run."))
        .collect()
}

fn callback(storage: &memory::Shared) -> ModelCheckpoint {
    ModelCheckpoint::new("ck/e{epoch:02d}-{val_loss:.2f}.safetensors")
        .storage(Arc::new(storage.clone()))
        .keep_last(2)
        .keep_best(1)
        .save_last(true)
        .with_run_id("5eed")
}

const LOSSES: [f64; 6] = [0.9, 0.5, 0.7, 0.4, 0.6, 0.8];

fn epochs(cb: &mut ModelCheckpoint, toy: &Toy, range: std::ops::Range<usize>) {
    for e in range {
        toy.0.set(e as u32 + 1);
        let mut ctx = Context::new(toy);
        cb.on_epoch_begin(e, &Logs::new(), &mut ctx).expect("begin");
        cb.on_epoch_end(e, &Logs::from([("val_loss", LOSSES[e])]), &mut ctx)
            .expect("end");
    }
}

#[test]
fn retention_and_resume_work_through_a_second_storage() {
    let straight = memory::Shared::default();
    let toy = Toy(Cell::new(0));
    let mut cb = callback(&straight);
    epochs(&mut cb, &toy, 0..6);
    cb.on_train_end(&Logs::new(), &mut Context::new(&toy))
        .expect("end");
    // Retention ran through the seam: the best (epoch 4), the two newest, and `last`.
    assert_eq!(
        checkpoints(&straight),
        [
            "ck/e04-0.40.safetensors",
            "ck/e05-0.60.safetensors",
            "ck/e06-0.80.safetensors",
            "ck/last.safetensors"
        ]
    );

    // Stopped after three epochs; a new process resumes from `latest`.
    let resumed = memory::Shared::default();
    {
        let toy = Toy(Cell::new(0));
        let mut cb = callback(&resumed);
        epochs(&mut cb, &toy, 0..3);
        cb.on_train_end(&Logs::new(), &mut Context::new(&toy))
            .expect("end");
    }
    // One call: the newest full checkpoint, the model, its training state, the callback.
    let mut toy = Toy(Cell::new(0));
    let mut cb = callback(&resumed);
    let restored =
        restore_latest_in(&resumed, &Name::from("ck"), &mut toy, &mut [&mut cb]).expect("restore");
    // The newest by the epoch stored in it: epoch 3, or `last`, which holds the same.
    assert_eq!(restored.meta.epoch, Some(3));
    assert_eq!(toy.0.get(), 3);
    assert_eq!(restored.restored_callbacks.len(), 1);
    epochs(&mut cb, &toy, 3..6);
    cb.on_train_end(&Logs::new(), &mut Context::new(&toy))
        .expect("end");

    assert_eq!(checkpoints(&resumed), checkpoints(&straight));
    for name in checkpoints(&straight) {
        assert_eq!(
            resumed.0.get(&name),
            straight.0.get(&name),
            "{name} differs between resumed and straight"
        );
    }
}

/// A checkpoint the storage fails to read (a disk's error, an endpoint's) is not skipped by
/// `latest` for an older one: resuming from that would train again what the unread one
/// holds, and then save over it. Damaged files are still skipped.
#[test]
fn latest_stops_at_a_checkpoint_the_storage_fails_to_read() {
    use model_checkpoint::store::latest_full_in;
    let storage = memory::Shared::default();
    let toy = Toy(Cell::new(0));
    let mut cb = ModelCheckpoint::new("ck/e{epoch:02d}.safetensors")
        .storage(Arc::new(storage.clone()))
        .with_run_id("5eed");
    epochs(&mut cb, &toy, 0..3);
    cb.on_train_end(&Logs::new(), &mut Context::new(&toy))
        .expect("end");
    let dir = Name::from("ck");
    assert_eq!(
        latest_full_in(&storage, &dir).expect("latest").as_str(),
        "ck/e03.safetensors"
    );
    // Every read of a file's last byte fails from now on (headers still read).
    let len = storage.0.get("ck/e03.safetensors").expect("saved").len();
    storage.0.fail_reads_from(len as u64 - 1);
    let failed = latest_full_in(&storage, &dir).expect_err("not skipped");
    assert!(failed.is_read_failure(), "{failed}");
    assert!(failed.to_string().contains("e03"), "{failed}");
}

/// A URL is a name with a root the local file system does not have: a template for an
/// object store given no object storage fails before training with the typed error naming
/// it, and never becomes a local folder called `s3:`; a name leaving its bucket is refused
/// before any storage sees it.
#[test]
fn a_url_is_never_a_local_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = std::env::current_dir().expect("cwd");
    let template = "s3://bucket/run/w.{epoch:02d}.safetensors";
    let model = Toy(Cell::new(1));
    let mut cb = ModelCheckpoint::new(template)
        .save_weights_only(true)
        .storage(Arc::new(model_checkpoint::store::LocalFolder::new(
            dir.path(),
        )));
    let mut ctx = Context::new(&model);
    // Refused where the folder is first touched: its lock, before training.
    let refused = cb
        .on_train_begin(&Logs::new(), &mut ctx)
        .expect_err("a URL on the local file system");
    assert!(
        matches!(&refused, Error::BadLocation { location, reason }
            if location.starts_with("s3://bucket/run") && reason.contains("local file system")),
        "{refused}"
    );
    let made: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
    assert!(made.is_empty(), "nothing made locally: {made:?}");
    assert!(!cwd.join("s3:").exists());
    for bad in ["s3://bucket/../other/w", "s3://", "ck/w\0"] {
        assert!(
            matches!(
                Name::new(bad).map_err(Error::from),
                Err(Error::BadLocation { .. })
            ),
            "{bad:?}"
        );
    }
}

/// A storage without a checked read of its own uses the default one: a tensor of 2 MiB or
/// more is read in 1 MiB chunks, each checksummed on a second core while the next is read.
/// Intact, it reads back exactly; a byte flipped in its first, a middle or its last chunk is
/// caught; a storage failing mid-read fails the read, never yielding a short tensor.
#[test]
fn a_large_tensor_through_another_storage_is_checked_as_it_is_read() {
    use model_checkpoint::store::{save_to, CheckpointFile, Kind, SaveOptions, Storage, Verify};
    let storage = memory::Shared::default();
    let name = Name::new("ck/big.safetensors").expect("name");
    // 6 MiB and 12 bytes of float32: the last chunk is short.
    let count = (6 << 18) + 3;
    let values: Vec<f32> = (0..count).map(|i| i as f32).collect();
    let tensor = HostTensor::from_f32(vec![count], &values);
    let tensors = vec![NamedTensor::new("w", tensor.clone_ref())];
    let info = std::collections::BTreeMap::new();
    save_to(
        &storage,
        &name,
        Kind::Weights,
        &tensors,
        &info,
        &SaveOptions::default(),
    )
    .expect("save");
    let read = |storage: &memory::Shared| {
        CheckpointFile::open_in(storage, &name, Verify::HeaderOnly).and_then(|f| f.read("w"))
    };
    assert_eq!(read(&storage).expect("intact"), tensor.data());

    let clean = storage.0.get(name.as_str()).expect("saved");
    let start = clean.len() - count * 4;
    let replace = |bytes: &[u8]| {
        storage.delete(&name).expect("delete");
        assert!(storage.put_if_absent(&name, bytes).expect("put"));
    };
    for at in [start, start + count * 2 + 1, clean.len() - 1] {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x08;
        replace(&bytes);
        let err = read(&storage).expect_err("damage found");
        assert!(
            err.to_string()
                .contains("checksum mismatch in tensor \"w\""),
            "byte {at}: {err}"
        );
    }
    // A storage that fails in the middle of the tensor: the chunked read stops with its
    // error, never a short or unchecked tensor.
    replace(&clean);
    storage.0.fail_reads_from((start + 3 * (1 << 20)) as u64);
    let before = storage.0.bytes_read();
    let err = read(&storage).expect_err("failed mid-read");
    // The tensor was being read in chunks: its first three MiB came in before the failure.
    assert!(
        storage.0.bytes_read() - before >= 3 << 20,
        "{} bytes read",
        storage.0.bytes_read() - before
    );
    assert!(
        matches!(&err, Error::Io { source, .. } if source.to_string().contains("injected")),
        "{err:?}"
    );
}
