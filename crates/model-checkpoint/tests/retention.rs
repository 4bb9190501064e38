//! Retention, `save_last`, versions and triggers: the property test (`retention_cases/`) on a
//! local folder and through an in-memory `Storage`, and fixed cases.

use std::collections::BTreeSet;
use std::path::Path;

mod memory;
mod retention_cases;

use model_checkpoint::{Callback, Context, Error, Logs, ModelCheckpoint};
use retention_cases::Toy;

#[test]
fn retention_keeps_exactly_what_the_rules_say() {
    // Every other case runs through the in-memory Storage.
    retention_cases::run(160, |case_no| {
        if case_no % 2 == 1 {
            retention_cases::Backend::Storage {
                storage: std::sync::Arc::new(memory::Shared::default()),
                dir: "ck".to_owned(),
            }
        } else {
            retention_cases::Backend::Local(tempfile::tempdir().expect("tempdir"))
        }
    });
}

fn on_disk(dir: &Path) -> BTreeSet<u64> {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            name.strip_prefix('e')?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn all_rules_off_keeps_everything_as_keras_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toy = Toy(std::cell::Cell::new(0));
    let mut cb =
        ModelCheckpoint::new(dir.path().join("e{epoch:03d}.safetensors")).save_weights_only(true);
    let mut ctx = Context::new(&toy);
    for e in 0..6 {
        cb.on_epoch_end(e, &Logs::from([("val_loss", 1.0)]), &mut ctx)
            .expect("save");
    }
    assert_eq!(on_disk(dir.path()).len(), 6);
}

#[test]
fn no_overwrite_adds_version_suffixes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toy = Toy(std::cell::Cell::new(0));
    let mut cb = ModelCheckpoint::new(dir.path().join("model.safetensors"))
        .overwrite(false)
        .verbose(1)
        .output(std::io::sink());
    let mut ctx = Context::new(&toy);
    for e in 0..3 {
        cb.on_epoch_end(e, &Logs::new(), &mut ctx).expect("save");
    }
    for name in [
        "model.safetensors",
        "model-v1.safetensors",
        "model-v2.safetensors",
    ] {
        assert!(dir.path().join(name).exists(), "{name}");
    }
    assert!(cb
        .last_saved()
        .is_some_and(|p| p.as_str().ends_with("model-v2.safetensors")));
}

#[test]
fn triggers_beyond_keras_add_saves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toy = Toy(std::cell::Cell::new(0));
    // Keras's schedule alone would save every epoch; every 4 steps adds batch-level saves,
    // every 2nd epoch adds nothing new (the epoch is saved anyway).
    let mut cb = ModelCheckpoint::new(dir.path().join("w{epoch}-{batch}.safetensors"))
        .save_freq(model_checkpoint::SaveFreq::Epoch)
        .every_n_steps(4);
    let mut step = 0u64;
    for epoch in 0..2 {
        let mut ctx = Context::new(&toy);
        cb.on_epoch_begin(epoch, &Logs::new(), &mut ctx)
            .expect("begin");
        for batch in 0..6 {
            step += 1;
            let mut ctx = Context::new(&toy).with_global_step(step);
            cb.on_train_batch_end(batch, &Logs::new(), &mut ctx)
                .expect("batch");
        }
        // At epoch level the template's {batch} has no value: Keras raises, and so does this.
        let err = cb
            .on_epoch_end(epoch, &Logs::new(), &mut ctx)
            .expect_err("no batch at epoch level");
        assert!(matches!(err, Error::MissingTemplateKey { .. }));
    }
    // Steps 4, 8 and 12: epoch 1 batch 4, epoch 2 batches 2 and 6.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["w1-4.safetensors", "w2-2.safetensors", "w2-6.safetensors"]
    );
}
