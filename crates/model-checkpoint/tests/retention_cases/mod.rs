//! The retention property test, shared by the backends that run it: random sequences of
//! metric values (NaN and ties included) under random option combinations, in the
//! foreground and in the background. After every epoch: the files are exactly what the rules
//! keep (computed here independently), the newest and the best exist and verify, `last`
//! holds the newest, and no kept file disappeared before the next save was durable.
//!
//! `tests/retention.rs` runs it on a local folder and through an in-memory `Storage`; the
//! object-store crate runs it against a real S3 server.
#![allow(dead_code)]

use model_checkpoint::store::Name;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use model_checkpoint::store::{CheckpointFile, Storage, Verify};
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

pub struct Toy(pub std::cell::Cell<u32>);

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
        state
            .document
            .other
            .insert("toy".into(), serde_json::json!(1));
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

/// Where a case's checkpoints live: a local folder, or a folder of any `Storage` (the same
/// callback code must behave the same through each).
pub enum Backend {
    Local(tempfile::TempDir),
    Storage {
        storage: Arc<dyn Storage>,
        /// The folder's name in `storage` (`ck`, `s3://bucket/case-3`).
        dir: String,
    },
}

impl Backend {
    fn callback(&self) -> ModelCheckpoint {
        match self {
            Backend::Local(dir) => {
                ModelCheckpoint::new(dir.path().join("e{epoch:03d}.safetensors"))
            }
            Backend::Storage { storage, dir } => {
                ModelCheckpoint::new(format!("{dir}/e{{epoch:03d}}.safetensors"))
                    .storage(storage.clone())
            }
        }
    }

    fn epochs(&self) -> BTreeSet<u64> {
        let names: Vec<String> = match self {
            Backend::Local(dir) => std::fs::read_dir(dir.path())
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect(),
            Backend::Storage { storage, dir } => storage
                .list(&Name::from(dir), 0)
                .expect("list")
                .into_iter()
                .filter_map(|m| m.name.file_name().map(str::to_owned))
                .collect(),
        };
        names
            .iter()
            .filter_map(|n| {
                n.strip_prefix('e')?
                    .strip_suffix(".safetensors")?
                    .parse()
                    .ok()
            })
            .collect()
    }

    fn verifies(&self, epoch: u64) -> bool {
        let name = format!("e{epoch:03}.safetensors");
        match self {
            Backend::Local(dir) => {
                CheckpointFile::open(&dir.path().join(name), Verify::Full).is_ok()
            }
            Backend::Storage { storage, dir } => CheckpointFile::open_in(
                &**storage,
                &Name::from(format!("{dir}/{name}")),
                Verify::Full,
            )
            .is_ok(),
        }
    }

    fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        match self {
            Backend::Local(dir) => std::fs::read(dir.path().join(name)).ok(),
            Backend::Storage { storage, dir } => {
                let reader = storage.open(&Name::from(format!("{dir}/{name}"))).ok()?;
                let mut bytes = vec![0; usize::try_from(reader.len()).ok()?];
                reader.read_exact_at(&mut bytes, 0).ok()?;
                Some(bytes)
            }
        }
    }
}

/// Runs `cases` random cases, each in the backend `backend(case_no)` makes.
pub fn run(cases: u64, mut backend: impl FnMut(u64) -> Backend) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let palette = [0.5, 0.4, 0.4, 0.3, 0.6, 0.2, f64::NAN, 0.3, 0.1, 0.45];
    for case_no in 0..cases {
        let case = Case {
            keep_best: rng.maybe(1, 3),
            keep_last: rng.maybe(1, 3),
            keep_every: rng.maybe(2, 3),
            maximize: rng.below(2) == 0,
            best_only: rng.below(3) == 0,
            last: rng.below(2) == 0,
            background: rng.below(2) == 0,
        };
        let backend = backend(case_no);
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
