//! Property test of retention, `save_last` and the save decisions behind them: random
//! sequences of metric values (NaN and ties included) under random option combinations, in
//! the foreground and in the background. After every epoch: the files on disk are exactly
//! what the rules keep (computed here independently), the newest and the best exist and
//! verify, `last` holds the newest, and no kept file disappeared before the next save was
//! durable.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod memory;

use model_checkpoint::store::{CheckpointFile, Verify};
use model_checkpoint::{
    Callback, Checkpointable, Context, Error, HostTensor, Logs, Mode, ModelCheckpoint, NamedTensor,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn maybe(&mut self, lo: u64, hi: u64) -> Option<u64> {
        (self.below(2) == 0).then(|| lo + self.below(hi - lo + 1))
    }
}

struct Toy(std::cell::Cell<u32>);

impl Checkpointable for Toy {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        Ok(vec![NamedTensor::new(
            "w",
            HostTensor::from_f32(vec![4], &[self.0.get() as f32; 4]),
        )])
    }

    fn training_state(&self) -> Result<model_checkpoint::TrainingState<'_>, Error> {
        // A full checkpoint needs something to resume from; the toy's is a counter.
        let mut state = model_checkpoint::TrainingState::default();
        state.values.insert("toy".into(), serde_json::json!(1));
        Ok(state)
    }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    keep_best: Option<u64>,
    keep_last: Option<u64>,
    keep_every: Option<u64>,
    maximize: bool,
    best_only: bool,
    last: bool,
    background: bool,
}

/// A save the test expects: its 1-based epoch, its value and its order.
#[derive(Debug, Clone, Copy)]
struct Saved {
    epoch: u64,
    value: f64,
}

/// The rules, written out plainly: newest, best (ties to the older, never NaN), the k best,
/// the n newest, every m-th epoch.
fn expected_kept(case: &Case, saves: &[Saved]) -> BTreeSet<u64> {
    if case.keep_best.is_none() && case.keep_last.is_none() && case.keep_every.is_none() {
        return saves.iter().map(|s| s.epoch).collect();
    }
    let mut keep = BTreeSet::new();
    if let Some(newest) = saves.last() {
        keep.insert(newest.epoch);
    }
    let mut ranked: Vec<&Saved> = saves.iter().filter(|s| !s.value.is_nan()).collect();
    // A stable sort keeps older saves first among equal values.
    ranked.sort_by(|a, b| {
        let ord = a.value.partial_cmp(&b.value).expect("no NaN here");
        if case.maximize {
            ord.reverse()
        } else {
            ord
        }
    });
    if let Some(best) = ranked.first() {
        keep.insert(best.epoch);
    }
    for s in ranked.iter().take(case.keep_best.unwrap_or(0) as usize) {
        keep.insert(s.epoch);
    }
    for s in saves
        .iter()
        .rev()
        .take(case.keep_last.unwrap_or(0) as usize)
    {
        keep.insert(s.epoch);
    }
    if let Some(m) = case.keep_every {
        keep.extend(saves.iter().filter(|s| s.epoch % m == 0).map(|s| s.epoch));
    }
    keep
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

fn file(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!("e{epoch:03}.safetensors"))
}

/// Where a case's checkpoints live: a local folder, or the in-memory `Storage` (the same
/// callback code must behave the same through both).
enum Backend {
    Local(tempfile::TempDir),
    Memory(memory::Shared),
}

impl Backend {
    fn new(memory: bool) -> Backend {
        if memory {
            Backend::Memory(memory::Shared::default())
        } else {
            Backend::Local(tempfile::tempdir().expect("tempdir"))
        }
    }

    fn callback(&self) -> ModelCheckpoint {
        match self {
            Backend::Local(dir) => {
                ModelCheckpoint::new(dir.path().join("e{epoch:03d}.safetensors"))
            }
            Backend::Memory(storage) => ModelCheckpoint::new("ck/e{epoch:03d}.safetensors")
                .storage(std::sync::Arc::new(storage.clone())),
        }
    }

    fn epochs(&self) -> BTreeSet<u64> {
        match self {
            Backend::Local(dir) => on_disk(dir.path()),
            Backend::Memory(storage) => storage
                .0
                .names()
                .iter()
                .filter_map(|n| {
                    n.strip_prefix("ck/e")?
                        .strip_suffix(".safetensors")?
                        .parse()
                        .ok()
                })
                .collect(),
        }
    }

    fn verifies(&self, epoch: u64) -> bool {
        match self {
            Backend::Local(dir) => {
                CheckpointFile::open(&file(dir.path(), epoch), Verify::Full).is_ok()
            }
            Backend::Memory(storage) => CheckpointFile::open_in(
                storage,
                &format!("ck/e{epoch:03}.safetensors"),
                Verify::Full,
            )
            .is_ok(),
        }
    }

    fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        match self {
            Backend::Local(dir) => std::fs::read(dir.path().join(name)).ok(),
            Backend::Memory(storage) => storage.0.get(&format!("ck/{name}")),
        }
    }
}

#[test]
fn retention_keeps_exactly_what_the_rules_say() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let palette = [0.5, 0.4, 0.4, 0.3, 0.6, 0.2, f64::NAN, 0.3, 0.1, 0.45];
    for case_no in 0..160 {
        let case = Case {
            keep_best: rng.maybe(1, 3),
            keep_last: rng.maybe(1, 3),
            keep_every: rng.maybe(2, 3),
            maximize: rng.below(2) == 0,
            best_only: rng.below(3) == 0,
            last: rng.below(2) == 0,
            background: rng.below(2) == 0,
        };
        // Every other case runs through the in-memory Storage.
        let backend = Backend::new(case_no % 2 == 1);
        let mut cb = backend
            .callback()
            .monitor("score")
            .mode(if case.maximize { Mode::Max } else { Mode::Min })
            .save_best_only(case.best_only)
            .save_weights_only(true)
            .save_last(case.last)
            .background(case.background);
        if let Some(k) = case.keep_best {
            cb = cb.keep_best(k as usize);
        }
        if let Some(n) = case.keep_last {
            cb = cb.keep_last(n as usize);
        }
        if let Some(m) = case.keep_every {
            cb = cb.keep_every_epochs(m);
        }
        let toy = Toy(std::cell::Cell::new(0));
        let mut saves: Vec<Saved> = Vec::new();
        let mut best = if case.maximize {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        let epochs = 4 + rng.below(9);
        for e in 0..epochs {
            let value = palette[rng.below(palette.len() as u64) as usize];
            toy.0.set(e as u32);
            let before = expected_kept(&case, &saves);
            {
                let mut ctx = Context::new(&toy);
                cb.on_epoch_begin(e as usize, &Logs::new(), &mut ctx)
                    .expect("begin");
                cb.on_epoch_end(e as usize, &Logs::from([("score", value)]), &mut ctx)
                    .expect("end");
            }
            // A kept file may only be gone once the new save is durable at its final path.
            let present = backend.epochs();
            if !present.is_superset(&before) {
                assert!(
                    backend.verifies(e + 1),
                    "case {case_no} {case:?}: {before:?} not all in {present:?} before epoch {} was saved",
                    e + 1
                );
            }
            cb.flush().expect("durable");

            let improves = if case.maximize {
                value > best
            } else {
                value < best
            };
            if !case.best_only || improves {
                saves.push(Saved {
                    epoch: e + 1,
                    value,
                });
            }
            if improves {
                best = value;
            }
            let want = expected_kept(&case, &saves);
            let have = backend.epochs();
            assert_eq!(
                have,
                want,
                "case {case_no} {case:?} after epoch {}: values {:?}",
                e + 1,
                saves
            );
            for &epoch in &have {
                assert!(backend.verifies(epoch), "every kept file verifies");
            }
            if let (true, Some(newest)) = (case.last, saves.last()) {
                let last = backend.bytes("last.safetensors").expect("last exists");
                let newest = backend
                    .bytes(&format!("e{:03}.safetensors", newest.epoch))
                    .expect("newest exists");
                assert!(last == newest, "case {case_no}: last is not the newest");
            }
        }
        let _ = cb.on_train_end(&Logs::new(), &mut Context::new(&toy));
    }
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
        .is_some_and(|p| p.ends_with("model-v2.safetensors")));
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
