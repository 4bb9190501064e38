//! Resume is exact with burn: training straight through, and training, stopping (or
//! crashing) and resuming into freshly built objects (new parameter ids, other initial
//! weights), give byte-identical weights and identical logs, with burn's Adam and with SGD
//! with momentum.

use std::path::Path;

use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, ModuleOptimizer, SgdConfig};
use model_checkpoint::store::{latest_full, CheckpointFile, Verify};
use model_checkpoint::{Callback, Context, Error as CkptError, HookResult, Logs};
use model_checkpoint::{Checkpointable, ModelCheckpoint, SaveFreq};
use model_checkpoint_burn::{cpu_autodiff, BurnStep, Mlp};
use model_checkpoint_fit::{Dataset, FitOptions, History, Trainer};

mod common;

const EPOCHS: usize = 4;

#[derive(Clone, Copy, Debug)]
enum Optim {
    Adam,
    SgdMomentum,
}

impl Optim {
    fn build(self) -> (ModuleOptimizer, f64) {
        match self {
            Optim::Adam => (AdamConfig::new().init(), 0.003),
            Optim::SgdMomentum => (
                SgdConfig::new()
                    .with_momentum(Some(MomentumConfig::new()))
                    .init(),
                0.05,
            ),
        }
    }
}

fn trainer(optim: Optim, init_seed: u64) -> Trainer<BurnStep<Mlp>> {
    let device = cpu_autodiff();
    let model = Mlp::new(&[64, 24, 10], init_seed, &device).expect("model");
    let (optimizer, lr) = optim.build();
    Trainer::new(BurnStep::new(model, optimizer, lr, device))
}

fn data() -> Dataset {
    Dataset::digits().scaled().shuffled(1)
}

fn options(epochs: usize) -> FitOptions<'static> {
    FitOptions::new(epochs)
        .validation_split(0.25)
        .batch_size(40)
        .verbose(0)
        .seed(77)
}

/// Every weight's bytes, and every optimizer tensor's, by name.
fn state_bytes(t: &Trainer<BurnStep<Mlp>>) -> Vec<(String, Vec<u8>)> {
    let parts = t.step().parts();
    let mut out = Vec::new();
    let weights = parts.weights().expect("weights");
    let training = parts.training_state().expect("state");
    for named in weights.iter().chain(training.tensors.iter()) {
        out.push((named.name.clone(), common::bytes_of(named)));
    }
    out.sort();
    out
}

fn full(dir: &Path) -> ModelCheckpoint {
    ModelCheckpoint::new(dir.join("full.{epoch:02d}.safetensors")).with_run_id("f1")
}

fn straight(optim: Optim, dir: &Path) -> (History, Vec<(String, Vec<u8>)>) {
    let mut cb = full(dir);
    let mut t = trainer(optim, 3);
    let history = t
        .fit(&data(), &options(EPOCHS), &mut [&mut cb])
        .expect("fit");
    (history, state_bytes(&t))
}

fn stop_and_resume(optim: Optim) {
    let root = tempfile::tempdir().expect("tempdir");
    let run = root.path().join("run");
    std::fs::create_dir(&run).expect("run folder");
    let (history, straight_state) = straight(optim, &run);
    assert!(
        straight_state
            .iter()
            .any(|(n, _)| n.starts_with("optimizer/")),
        "the optimizer has state to carry over"
    );
    let kept = root.path().join("straight");
    std::fs::rename(&run, &kept).expect("keep the straight run");
    std::fs::create_dir(&run).expect("run folder");

    trainer(optim, 3)
        .fit(&data(), &options(2), &mut [&mut full(&run)])
        .expect("first part");
    // A new process: fresh objects with new parameter ids and other initial weights.
    let mut cb = full(&run);
    let mut t = trainer(optim, 999);
    let latest = latest_full(&run).expect("latest");
    let resumed = t.resume(&latest, &mut [&mut cb]).expect("resume");
    assert_eq!((resumed.epoch, resumed.batches_done), (2, 0));
    let rest = t
        .fit(&data(), &options(EPOCHS), &mut [&mut cb])
        .expect("resumed");
    assert_eq!(
        state_bytes(&t),
        straight_state,
        "weights and optimizer state identical"
    );
    assert_eq!(rest.logs, history.logs[2..].to_vec(), "logs identical");
    for name in ["full.03.safetensors", "full.04.safetensors"] {
        let x = std::fs::read(kept.join(name)).expect("straight file");
        let y = std::fs::read(run.join(name)).expect("resumed file");
        assert!(x == y, "{name} differs");
    }
}

#[test]
fn adam_stop_and_resume_equals_training_straight() {
    stop_and_resume(Optim::Adam);
}

#[test]
fn sgd_momentum_stop_and_resume_equals_training_straight() {
    stop_and_resume(Optim::SgdMomentum);
}

/// Fails training at a given global batch, as a crash would end it.
struct CrashAt(usize, usize);

impl Callback for CrashAt {
    fn on_train_batch_end(&mut self, _: usize, _: &Logs, _: &mut Context<'_>) -> HookResult {
        self.1 += 1;
        if self.1 == self.0 {
            return Err(CkptError::Framework("simulated crash".into()));
        }
        Ok(model_checkpoint::Control::Continue)
    }
}

#[test]
fn resume_from_the_middle_of_an_epoch_is_exact() {
    let a = tempfile::tempdir().expect("tempdir");
    let (history, straight_state) = straight(Optim::Adam, a.path());

    let b = tempfile::tempdir().expect("tempdir");
    let mid =
        || ModelCheckpoint::new(b.path().join("mid.safetensors")).save_freq(SaveFreq::Batches(7));
    {
        let mut cb = mid();
        // 34 batches an epoch: the crash comes at batch 19 of epoch 2, after a save at its
        // batch 16 (global batch 84 = 12 × 7).
        let mut crash = CrashAt(34 * 2 + 19, 0);
        let err = trainer(Optim::Adam, 3)
            .fit(&data(), &options(EPOCHS), &mut [&mut cb, &mut crash])
            .expect_err("crash");
        assert!(err.to_string().contains("simulated crash"), "{err}");
    }
    let file = CheckpointFile::open(&b.path().join("mid.safetensors"), Verify::Full).expect("open");
    assert_eq!(file.info().get("batch").map(String::as_str), Some("16"));

    let mut cb = mid();
    let mut t = trainer(Optim::Adam, 5);
    let resumed = t
        .resume(b.path().join("mid.safetensors"), &mut [&mut cb])
        .expect("resume");
    assert_eq!((resumed.epoch, resumed.batches_done), (2, 16));
    let rest = t
        .fit(&data(), &options(EPOCHS), &mut [&mut cb])
        .expect("resumed");
    assert_eq!(state_bytes(&t), straight_state, "final state identical");
    assert_eq!(
        rest.logs,
        history.logs[2..].to_vec(),
        "logs identical, the resumed epoch included"
    );
}

#[test]
fn data_of_another_width_is_refused_before_burn_sees_it() {
    // burn's matmul panics on a batch of the wrong width; the step checks it first.
    let device = cpu_autodiff();
    let model = Mlp::new(&[10, 8, 10], 0, &device).expect("model");
    let mut trainer = Trainer::new(BurnStep::new(model, AdamConfig::new().init(), 0.01, device));
    let err = trainer
        .fit(&data(), &options(1), &mut [])
        .expect_err("64 features into a model of 10");
    assert!(
        err.to_string()
            .contains("the model takes 10 features per sample, but the data has 64"),
        "{err}"
    );
}

/// A background full checkpoint is taken from a frozen clone of the model and optimizer on
/// the writer thread, while training goes on (burn writes a new tensor where a step finds
/// one shared): every file equals the foreground run's byte for byte, and resuming from one
/// is exact.
#[test]
fn background_full_checkpoints_equal_foreground_ones_and_resume_exactly() {
    let root = tempfile::tempdir().expect("tempdir");
    let (fg, bg) = (root.path().join("fg"), root.path().join("bg"));
    std::fs::create_dir(&fg).expect("fg");
    std::fs::create_dir(&bg).expect("bg");
    let (history, straight_state) = straight(Optim::Adam, &fg);
    let mut cb = full(&bg).background(true);
    let mut t = trainer(Optim::Adam, 3);
    let background = t
        .fit(&data(), &options(EPOCHS), &mut [&mut cb])
        .expect("fit in the background");
    assert_eq!(background.logs, history.logs, "the same training");
    assert_eq!(state_bytes(&t), straight_state);
    // Each file's tensors and training values are the foreground file's (the callbacks'
    // states differ: they name the files, in another folder).
    for epoch in 1..=EPOCHS {
        let name = format!("full.{epoch:02}.safetensors");
        let open = |dir: &Path| CheckpointFile::open(&dir.join(&name), Verify::Full).expect("open");
        let (x, y) = (open(&fg), open(&bg));
        let names: Vec<String> = x.tensors().map(|t| t.name.to_owned()).collect();
        assert_eq!(
            names,
            y.tensors().map(|t| t.name.to_owned()).collect::<Vec<_>>()
        );
        for tensor in &names {
            assert!(
                x.read(tensor).expect("x") == y.read(tensor).expect("y"),
                "{name}: {tensor} differs"
            );
        }
        let (dx, dy) = (
            x.training_state().expect("x"),
            y.training_state().expect("y"),
        );
        let (dx, dy) = (dx.expect("full"), dy.expect("full"));
        assert_eq!(
            (&dx.optimizer, &dx.fit),
            (&dy.optimizer, &dy.fit),
            "{name}: training values"
        );
        assert!(dx.optimizer.is_some() && dx.fit.is_some());
    }

    // As if the run had stopped after its second epoch, resumed into fresh objects.
    for name in ["full.03.safetensors", "full.04.safetensors"] {
        std::fs::remove_file(bg.join(name)).expect("remove");
    }
    let mut cb = full(&bg).background(true);
    let mut t = trainer(Optim::Adam, 999);
    let resumed = t
        .resume(bg.join("full.02.safetensors"), &mut [&mut cb])
        .expect("resume");
    assert_eq!((resumed.epoch, resumed.batches_done), (2, 0));
    t.fit(&data(), &options(EPOCHS), &mut [&mut cb])
        .expect("resumed");
    assert_eq!(state_bytes(&t), straight_state, "resumed exactly");
}
