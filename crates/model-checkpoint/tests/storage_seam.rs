//! The `Storage` seam, proven with a second implementation (in memory): full checkpoints
//! with retention and `last`, then a resume from `latest` through the same seam, give the
//! same objects as training straight through.

mod memory;

use std::cell::Cell;
use std::sync::Arc;

use model_checkpoint::store::{latest_full_in, CheckpointFile, Verify, KEY_TRAINING_STATE};
use model_checkpoint::{
    Callback, Checkpointable, Context, Error, HostTensor, Logs, ModelCheckpoint, NamedTensor,
    TrainingState,
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
        state
            .values
            .insert("epoch".into(), serde_json::json!(self.0.get()));
        Ok(state)
    }
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
        straight.0.names(),
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
    let latest = latest_full_in(&resumed, "ck").expect("latest");
    // The newest by the epoch stored in it: epoch 3, or `last`, which holds the same.
    assert!(
        ["ck/e03-0.70.safetensors", "ck/last.safetensors"].contains(&&*latest.to_string_lossy()),
        "{}",
        latest.display()
    );
    let file = CheckpointFile::open_in(&resumed, &latest.to_string_lossy(), Verify::Full)
        .expect("verifies through the seam");
    let state: serde_json::Value =
        serde_json::from_str(&file.info()[KEY_TRAINING_STATE]).expect("training state");
    let toy = Toy(Cell::new(state["epoch"].as_u64().expect("epoch") as u32));
    let mut cb = callback(&resumed);
    let key = cb.state_key().expect("key");
    cb.restore_state(&state["callbacks"][&key])
        .expect("restore");
    epochs(&mut cb, &toy, 3..6);
    cb.on_train_end(&Logs::new(), &mut Context::new(&toy))
        .expect("end");

    assert_eq!(resumed.0.names(), straight.0.names());
    for name in straight.0.names() {
        assert_eq!(
            resumed.0.get(&name),
            straight.0.get(&name),
            "{name} differs between resumed and straight"
        );
    }
}
