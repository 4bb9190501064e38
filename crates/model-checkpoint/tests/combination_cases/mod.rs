//! The combination property test, shared by the backends that run it: random compositions
//! of the features (templates × retention × `save_last` × versions × background saves × a
//! save on SIGTERM × a stop and resume × a second callback in either order), each run twice
//! on fresh storage: straight through, and disrupted (interrupted by a signal, or stopped
//! outright) then resumed from `latest`, as a requeued job does.
//!
//! After every round of hooks, in both runs:
//! - nothing the run did not write is touched (planted files keep their bytes);
//! - every object at a final name verifies;
//! - `latest` is the newest durable full checkpoint of the run (computed here independently,
//!   from the objects there);
//!
//! and at the end, the disrupted run has saved exactly what the straight one saved: the same
//! names with the same tensors, metadata and callback states (run ids aside), and the same
//! `latest`.
//!
//! `tests/combinations.rs` runs it on a local folder and through an in-memory `Storage`; the
//! object-store crate runs a subset against a real S3 server.
#![allow(dead_code)]

use model_checkpoint::store::Name;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use model_checkpoint::restore::restore;
use model_checkpoint::store::{
    self, CheckpointFile, LoopState, Meta, Storage, TrainingDocument, Verify,
};
use model_checkpoint::TensorSource;
use model_checkpoint::{
    Callback, CallbackList, Checkpointable, Context, Control, Dtype, Error, HostTensor, Logs, Mode,
    ModelCheckpoint, NamedTensor, SaveFreq, TrainingState,
};

/// Epochs and batches per epoch of every case.
const EPOCHS: usize = 5;
const BATCHES: usize = 4;
/// Where one run of a case saves: a storage, and the folder in it (`ck`,
/// `s3://bucket/case-3-straight/ck`). Names are compared between runs relative to it.
#[derive(Clone)]
pub struct Place {
    pub storage: Arc<dyn Storage>,
    pub dir: String,
}

impl Place {
    /// `name` with this place's folder spelled `ck`, so that two runs compare.
    fn relative(&self, text: &str) -> String {
        text.replace(&self.dir, "ck")
    }
}

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn coin(&mut self) -> bool {
        self.below(2) == 0
    }
    fn maybe(&mut self, lo: u64, hi: u64) -> Option<u64> {
        self.coin().then(|| lo + self.below(hi - lo + 1))
    }
}

/// A model whose weights and training state follow from its step count, so that two runs
/// that reach the same step hold the same bytes.
#[derive(Default)]
struct Toy {
    step: Cell<u64>,
}

fn values_at(step: u64, salt: f32) -> Vec<f32> {
    (0..4)
        .map(|i| step as f32 * 0.25 + i as f32 + salt)
        .collect()
}

impl Checkpointable for Toy {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        Ok(vec![NamedTensor::new(
            "dense.weight",
            HostTensor::from_f32(vec![4], &values_at(self.step.get(), 0.0)),
        )])
    }

    fn training_state(&self) -> Result<TrainingState<'_>, Error> {
        let mut state = TrainingState::default();
        state.tensors.push(NamedTensor::new(
            "optimizer/dense.weight/moment",
            HostTensor::from_f32(vec![4], &values_at(self.step.get(), 0.5)),
        ));
        state.document.loop_state = Some(LoopState {
            step: self.step.get(),
            ..LoopState::default()
        });
        Ok(state)
    }

    fn restore_weights(&mut self, stored: &dyn TensorSource) -> Result<(), Error> {
        stored.read("dense.weight", Dtype::F32, &[4]).map(|_| ())
    }

    fn restore_training_state(
        &mut self,
        tensors: &dyn TensorSource,
        document: &TrainingDocument,
    ) -> Result<(), Error> {
        tensors.read("optimizer/dense.weight/moment", Dtype::F32, &[4])?;
        let step = document
            .loop_state
            .as_ref()
            .map(|l| l.step)
            .ok_or_else(|| Error::BadState {
                key: "loop".into(),
                reason: "no step".into(),
            })?;
        self.step.set(step);
        Ok(())
    }
}

/// The main callback's filepath template (its files' names start with `m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Template {
    /// `ck/m.{epoch:02d}.safetensors`
    Epoch,
    /// `ck/m.{epoch:02d}-{val_loss:.3f}.safetensors`
    EpochValue,
    /// `ck/m.{epoch:02d}-{batch:02d}.safetensors`, saving every 3 batches.
    Batch,
    /// `ck/m.safetensors`: overwritten, or versioned with `overwrite(false)`.
    Fixed,
    /// `ck/e{epoch}/m.safetensors`: a folder per epoch.
    Folder,
}

/// How the disrupted run is disrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stop {
    /// SIGTERM after this (epoch, batch): the main callback saves on the signal and stops.
    Signal(usize, usize),
    /// The process goes away after this (epoch, batch), with no `on_train_end`.
    Halt(usize, usize),
}

/// One composition of the features.
#[derive(Clone, Debug)]
pub struct Case {
    template: Template,
    keep_best: Option<u64>,
    keep_last: Option<u64>,
    keep_every: Option<u64>,
    save_last: bool,
    versions: bool,
    background: bool,
    best_only: bool,
    /// A second callback: best-only weights (`ck/s.{epoch:02d}.safetensors`) with retention,
    /// or best-only full checkpoints (`ck/s.safetensors`).
    second: Option<bool>,
    /// Whether the second callback comes first in the list.
    second_first: bool,
    stops: Vec<Stop>,
    /// val_loss per epoch (ties and a NaN included).
    values: Vec<f64>,
}

impl Case {
    pub fn random(rng: &mut Rng, signals: bool) -> Case {
        let template = match rng.below(5) {
            0 => Template::Epoch,
            1 => Template::EpochValue,
            2 => Template::Batch,
            3 => Template::Fixed,
            _ => Template::Folder,
        };
        // Retention needs a name per save; versions need a name that repeats.
        let unique = template != Template::Fixed;
        let versions = !unique && rng.coin();
        let retention = unique || versions;
        let keep_best = retention.then(|| rng.maybe(1, 2)).flatten();
        let keep_last = retention.then(|| rng.maybe(1, 3)).flatten();
        let keep_every = retention.then(|| rng.maybe(2, 3)).flatten();
        let mut stops = Vec::new();
        for _ in 0..1 + rng.below(2) {
            let at = (
                rng.below(EPOCHS as u64) as usize,
                rng.below(BATCHES as u64) as usize,
            );
            stops.push(if signals && rng.coin() {
                Stop::Signal(at.0, at.1)
            } else {
                Stop::Halt(at.0, at.1)
            });
        }
        stops.sort();
        stops.dedup_by_key(|s| match *s {
            Stop::Signal(e, b) | Stop::Halt(e, b) => (e, b),
        });
        // The first epoch always improves: whatever a stop leaves, a full checkpoint of the
        // main callback is among it, or nothing at all.
        let values = (0..EPOCHS)
            .map(|e| match rng.below(8) {
                0 if e > 0 => f64::NAN,
                1 => 0.5,
                n => n as f64 / 10.0,
            })
            .collect();
        Case {
            template,
            keep_best,
            keep_last,
            keep_every,
            save_last: rng.coin(),
            versions,
            background: rng.coin(),
            best_only: rng.below(4) == 0,
            second: rng.coin().then(|| rng.coin()),
            second_first: rng.coin(),
            stops,
            values,
        }
    }

    /// The features, for counting the distinct combinations run.
    fn features(&self) -> String {
        let stops: Vec<&str> = self
            .stops
            .iter()
            .map(|s| match s {
                Stop::Signal(..) => "signal",
                Stop::Halt(..) => "halt",
            })
            .collect();
        format!(
            "{:?} best{} last{} every{} save_last{} versions{} background{} best_only{} second{:?} first{} {}",
            self.template,
            self.keep_best.is_some(),
            self.keep_last.is_some(),
            self.keep_every.is_some(),
            self.save_last,
            self.versions,
            self.background,
            self.best_only,
            self.second,
            self.second_first,
            stops.join("+")
        )
    }

    fn signals(&self) -> bool {
        self.stops.iter().any(|s| matches!(s, Stop::Signal(..)))
    }

    fn main(&self, place: &Place) -> ModelCheckpoint {
        let file = match self.template {
            Template::Epoch => "m.{epoch:02d}.safetensors",
            Template::EpochValue => "m.{epoch:02d}-{val_loss:.3f}.safetensors",
            Template::Batch => "m.{epoch:02d}-{batch:02d}.safetensors",
            Template::Fixed => "m.safetensors",
            Template::Folder => "e{epoch}/m.safetensors",
        };
        let mut cb = ModelCheckpoint::new(format!("{}/{file}", place.dir))
            .storage(place.storage.clone())
            .monitor("val_loss")
            .mode(Mode::Min)
            .save_best_only(self.best_only && self.template != Template::Batch)
            .save_last(self.save_last)
            .overwrite(!self.versions)
            .background(self.background)
            .save_on_interrupt(self.signals());
        if self.template == Template::Batch {
            cb = cb.save_freq(SaveFreq::Batches(3));
        }
        if let Some(k) = self.keep_best {
            cb = cb.keep_best(k as usize);
        }
        if let Some(n) = self.keep_last {
            cb = cb.keep_last(n as usize);
        }
        if let Some(m) = self.keep_every {
            cb = cb.keep_every_epochs(m);
        }
        cb
    }

    fn second(&self, place: &Place) -> Option<ModelCheckpoint> {
        let full = self.second?;
        let cb = if full {
            ModelCheckpoint::new(format!("{}/s.safetensors", place.dir))
        } else {
            ModelCheckpoint::new(format!("{}/s.{{epoch:02d}}.safetensors", place.dir))
                .save_weights_only(true)
                .keep_last(2)
        };
        Some(
            cb.storage(place.storage.clone())
                .monitor("val_loss")
                .mode(Mode::Min)
                .save_best_only(true),
        )
    }
}

/// Files a user and another run left in the folder, which no run may touch.
fn plant(place: &Place) -> BTreeMap<String, Vec<u8>> {
    let (storage, dir) = (&*place.storage, place.dir.as_str());
    storage.prepare_dir(&Name::from(dir)).expect("folder");
    let mut planted = BTreeMap::new();
    let notes = format!("{dir}/notes.txt");
    let mut pending = storage
        .create(&Name::from(&notes), 0, Default::default())
        .expect("create");
    std::io::Write::write_all(&mut pending, b"my notes").expect("write");
    pending.commit(&[], true).expect("commit");
    planted.insert(notes, b"my notes".to_vec());
    // A checkpoint of another run under a name no template here produces.
    let other = Toy::default();
    other.step.set(999);
    let mut info = BTreeMap::from([
        ("epoch".to_owned(), "99".to_owned()),
        ("run_id".to_owned(), "0123456789abcdef".to_owned()),
    ]);
    info.insert(
        store::KEY_TRAINING_STATE.into(),
        serde_json::json!({ "toy": { "step": 999 }, "callbacks": {} }).to_string(),
    );
    let tensors = other.weights().expect("weights");
    let name = format!("{dir}/other.safetensors");
    store::save_to(
        storage,
        &Name::from(&name),
        store::Kind::Full,
        &tensors,
        &info,
        &store::SaveOptions::default(),
    )
    .expect("plant");
    planted.insert(name.clone(), read(storage, &name).expect("planted"));
    // Another run's file at the interrupt name (weights only: what a resume takes is a
    // full checkpoint), which this run's saves on a signal must not replace.
    let info = BTreeMap::from([
        ("epoch".to_owned(), "1".to_owned()),
        ("run_id".to_owned(), "fedcba9876543210".to_owned()),
    ]);
    let name = format!("{dir}/interrupted.safetensors");
    store::save_to(
        storage,
        &Name::from(&name),
        store::Kind::Weights,
        &tensors,
        &info,
        &store::SaveOptions::default(),
    )
    .expect("plant");
    planted.insert(name.clone(), read(storage, &name).expect("planted"));
    planted
}

fn read(storage: &dyn Storage, name: &str) -> Option<Vec<u8>> {
    let reader = storage.open(&Name::from(name)).ok()?;
    let mut bytes = vec![0; usize::try_from(reader.len()).ok()?];
    reader.read_exact_at(&mut bytes, 0).ok()?;
    Some(bytes)
}

/// The objects a run made (everything but planted and internal objects).
fn made(place: &Place, planted: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    place
        .storage
        .list(&Name::from(&place.dir), 2)
        .expect("list")
        .into_iter()
        .map(|o| o.name.to_string())
        .filter(|n| {
            let file = n.rsplit('/').next().unwrap_or(n);
            !planted.contains_key(n)
                && !file.starts_with(store::MARKER_PREFIX)
                && file != store::LOCK_FILE
                && !store::is_temp_file(std::path::Path::new(file))
        })
        .collect()
}

/// What a checkpoint holds, run ids aside: tensors, metadata, the training state.
fn fingerprint(place: &Place, name: &str) -> String {
    let file = CheckpointFile::open_in(&*place.storage, &Name::from(name), Verify::Full)
        .unwrap_or_else(|e| panic!("{name} does not verify: {e}"));
    let mut out = format!("{}\n", file.kind());
    for t in file.tensors() {
        let bytes = file.read(t.name).expect("read");
        out += &format!("{} {:?} {:?} {:x}\n", t.name, t.dtype, t.shape, crc(&bytes));
    }
    let mut info = file.info().clone();
    info.remove("run_id");
    // The header's checksum covers the run id.
    info.remove("header_checksum");
    if let Some(state) = info.get_mut(store::KEY_TRAINING_STATE) {
        let mut json: serde_json::Value = serde_json::from_str(state).expect("json");
        strip_run_ids(&mut json);
        *state = json.to_string();
    }
    out += &format!("{info:?}");
    place.relative(&out)
}

fn crc(bytes: &[u8]) -> u32 {
    // FNV-1a: a fingerprint, not a checksum the format relies on.
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn strip_run_ids(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("run_id");
            map.values_mut().for_each(strip_run_ids);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_run_ids),
        _ => {}
    }
}

/// The checks after every round of hooks (see the module's documentation).
fn check_round(
    place: &Place,
    planted: &BTreeMap<String, Vec<u8>>,
    main: &ModelCheckpoint,
    at: &str,
) {
    for (name, bytes) in planted {
        assert_eq!(
            read(&*place.storage, name).as_ref(),
            Some(bytes),
            "{at}: {name}, which the run did not write, changed or went"
        );
    }
    let mut newest: Option<((u64, u64, u64), String)> = None;
    let storage = &*place.storage;
    for name in made(place, planted) {
        let file = CheckpointFile::open_in(storage, &Name::from(&name), Verify::Full)
            .unwrap_or_else(|e| panic!("{at}: {name} does not verify: {e}"));
        let meta = Meta::from_info(file.info()).expect("meta");
        let file_name = name.rsplit('/').next().unwrap_or(&name);
        let mains = file_name.starts_with('m')
            || file_name.starts_with("interrupted")
            || file_name == "last.safetensors";
        if file.kind() != store::Kind::Full
            || !mains
            || meta.run_id.as_deref() != Some(main.run_id())
        {
            continue;
        }
        let position = meta.position();
        if newest.as_ref().is_none_or(|(p, _)| position > *p) {
            newest = Some((position, name));
        }
    }
    let latest = main.latest().ok();
    match (&newest, &latest) {
        (None, None) => {}
        (Some((position, _)), Some(latest)) => {
            let file =
                CheckpointFile::open_in(storage, latest, Verify::Full).expect("latest verifies");
            let got = Meta::from_info(file.info()).expect("meta").position();
            assert_eq!(
                got, *position,
                "{at}: latest is {latest:?}, not the newest ({newest:?})"
            );
        }
        _ => panic!("{at}: latest {latest:?}, the newest durable save {newest:?}"),
    }
}

/// How an attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Completed,
    Signalled,
    Halted,
}

#[cfg(unix)]
fn sigterm() {
    // SAFETY: raising a signal on this thread; the callback installed its handler (a flag)
    // at on_train_begin.
    unsafe {
        libc::raise(libc::SIGTERM);
    }
}

#[cfg(not(unix))]
fn sigterm() {}

fn ctx(toy: &Toy) -> Context<'_> {
    Context::new(toy).with_global_step(toy.step.get())
}

/// The callbacks of one attempt, in the case's order.
struct Callbacks {
    main: ModelCheckpoint,
    second: Option<ModelCheckpoint>,
    second_first: bool,
}

impl Callbacks {
    /// One round of hooks: `hook` on a list of the callbacks in the case's order.
    fn round<R>(&mut self, hook: impl FnOnce(&mut CallbackList<'_>) -> R) -> R {
        let mut list: Vec<&mut dyn Callback> = Vec::new();
        match (&mut self.second, self.second_first) {
            (Some(s), true) => {
                list.push(s);
                list.push(&mut self.main);
            }
            (Some(s), false) => {
                list.push(&mut self.main);
                list.push(s);
            }
            (None, _) => list.push(&mut self.main),
        }
        let mut callbacks = CallbackList::borrowed(&mut list);
        hook(&mut callbacks)
    }
}

/// One attempt of a case's training: from the start, or resumed from the main callback's
/// `latest`; stopped as `stop` says, if at all.
fn attempt(
    case: &Case,
    place: &Place,
    planted: &BTreeMap<String, Vec<u8>>,
    resume: bool,
    stop: Option<Stop>,
) -> End {
    let mut toy = Toy::default();
    let mut cbs = Callbacks {
        main: case.main(place),
        second: case.second(place),
        second_first: case.second_first,
    };
    let mut start = (0, 0);
    // Before the first save nothing was written: the job starts afresh.
    let latest = match cbs.main.latest() {
        Ok(latest) if resume => Some(latest),
        Err(Error::NoCheckpoint { .. }) | Ok(_) => None,
        Err(e) => panic!("latest: {e}"),
    };
    if let Some(latest) = latest {
        let file =
            CheckpointFile::open_in(&*place.storage, &latest, Verify::Full).expect("open latest");
        let mut callbacks: Vec<&mut dyn Callback> = vec![&mut cbs.main];
        if let Some(s) = cbs.second.as_mut() {
            callbacks.push(s);
        }
        let restored = restore(&file, &mut toy, &mut callbacks).expect("restore");
        assert!(
            restored.missing_callbacks.is_empty(),
            "{latest:?} lacks {:?}",
            restored.missing_callbacks
        );
        let epoch = restored.meta.epoch.expect("epoch") as usize;
        // A save inside an epoch resumes that epoch after its batch (after the last one,
        // the epoch still ends: validation, on_epoch_end); one at its end, the next epoch.
        start = match restored.meta.batch {
            Some(b) => (epoch - 1, b as usize),
            None => (epoch, 0),
        };
    }
    cbs.round(|l| l.on_train_begin(&Logs::new(), &mut ctx(&toy)))
        .expect("on_train_begin");
    let mut end = End::Completed;
    'epochs: for epoch in start.0..EPOCHS {
        cbs.round(|l| l.on_epoch_begin(epoch, &Logs::new(), &mut ctx(&toy)))
            .expect("on_epoch_begin");
        let first = if epoch == start.0 { start.1 } else { 0 };
        for batch in first..BATCHES {
            toy.step.set(toy.step.get() + 1);
            let logs = Logs::from([("loss", 1.0 / toy.step.get() as f64)]);
            let signal = matches!(stop, Some(Stop::Signal(e, b)) if (e, b) == (epoch, batch));
            if signal {
                sigterm();
            }
            let control = cbs
                .round(|l| l.on_train_batch_end(batch, &logs, &mut ctx(&toy)))
                .expect("on_train_batch_end");
            // Background saves may still be in flight: checked once they are durable.
            if !case.background {
                check_round(place, planted, &cbs.main, &format!("e{epoch} b{batch}"));
            }
            if control == Control::Interrupt {
                end = End::Signalled;
                break 'epochs;
            }
            assert!(!signal, "SIGTERM was not acted on at e{epoch} b{batch}");
            if matches!(stop, Some(Stop::Halt(e, b)) if (e, b) == (epoch, batch)) {
                // Dropped without on_train_end (its background saves finish as it drops).
                drop(cbs);
                return End::Halted;
            }
        }
        let loss = 1.0 / toy.step.get() as f64;
        let logs = Logs::from([("loss", loss), ("val_loss", case.values[epoch])]);
        cbs.round(|l| l.on_epoch_end(epoch, &logs, &mut ctx(&toy)))
            .expect("on_epoch_end");
        if !case.background {
            check_round(place, planted, &cbs.main, &format!("e{epoch} end"));
        }
    }
    cbs.round(|l| l.on_train_end(&Logs::new(), &mut ctx(&toy)))
        .expect("on_train_end");
    check_round(place, planted, &cbs.main, "train end");
    end
}

/// Runs `case` straight and disrupted in two fresh places from `make` (its argument names
/// the run: `straight`, `disrupted`), checking every invariant.
pub fn run_case(case: &Case, make: &dyn Fn(&str) -> Place) {
    let straight = make("straight");
    let planted = plant(&straight);
    assert_eq!(
        attempt(case, &straight, &planted, false, None),
        End::Completed
    );
    let expected = snapshot(&straight, &planted);
    let expected_latest = case
        .main(&straight)
        .latest()
        .ok()
        .map(|p| straight.relative(p.as_str()));

    let disrupted = make("disrupted");
    let planted = plant(&disrupted);
    let mut resume = false;
    for stop in &case.stops {
        match attempt(case, &disrupted, &planted, resume, Some(*stop)) {
            End::Completed => break,
            End::Signalled | End::Halted => resume = true,
        }
    }
    // Whatever the last stop left, the run completes.
    let end = attempt(case, &disrupted, &planted, resume, None);
    assert_eq!(end, End::Completed);
    let got = snapshot(&disrupted, &planted);
    let names = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(
        names(&got),
        names(&expected),
        "{case:?}: the resumed run left other files than the straight run"
    );
    for (name, print) in &expected {
        assert_eq!(
            got.get(name),
            Some(print),
            "{case:?}: {name} differs from the straight run's"
        );
    }
    assert_eq!(
        case.main(&disrupted)
            .latest()
            .ok()
            .map(|p| disrupted.relative(p.as_str())),
        expected_latest,
        "{case:?}: latest after the resumed run"
    );
}

fn snapshot(place: &Place, planted: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    made(place, planted)
        .into_iter()
        .map(|name| {
            let print = fingerprint(place, &name);
            (place.relative(&name), print)
        })
        .collect()
}

/// Runs `cases` random cases from `seed`, each in places from `make` (its arguments: the
/// case's number and the run's name); returns the number of distinct combinations.
pub fn run(cases: usize, seed: u64, signals: bool, make: &dyn Fn(usize, &str) -> Place) -> usize {
    let mut rng = Rng(seed.max(1));
    let mut seen = BTreeSet::new();
    for n in 0..cases {
        let case = Case::random(&mut rng, signals);
        seen.insert(case.features());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_case(&case, &|run| make(n, run))
        }));
        if let Err(panic) = result {
            eprintln!("combination case {n} (seed {seed}) failed: {case:?}");
            std::panic::resume_unwind(panic);
        }
    }
    seen.len()
}
