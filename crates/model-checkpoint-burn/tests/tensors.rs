//! Named tensors out of and into any burn module: every float dtype Flex has round-trips
//! bit for bit; a file whose tensors differ in shape or dtype, or name one the model does
//! not have, is refused naming the tensor, and the model is left as it was; the optimizer's
//! state survives a freshly built model, where burn's own record, keyed by random ids, does
//! not.

use burn::module::{Module, Param};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{DType, Distribution, Tensor};
use model_checkpoint::restore::restore;
use model_checkpoint::store::{CheckpointFile, Verify};
use model_checkpoint::{
    Callback, Checkpointable, Context, Error as CoreError, Logs, ModelCheckpoint,
};
use model_checkpoint_burn::{
    cpu, cpu_autodiff, load_weights, Classifier, Error, Mlp, TrainingParts,
};

mod common;

/// A module with one parameter of each float dtype Flex computes in: F32, F64, F16 and
/// BF16.
#[derive(Module, Debug)]
struct Mixed {
    single: Param<Tensor<2>>,
    double: Param<Tensor<1>>,
    half: Param<Tensor<3>>,
    brain: Param<Tensor<2>>,
}

fn mixed(seed: u64) -> Mixed {
    let device = cpu();
    burn::tensor::Device::seed(&device, seed);
    let normal = Distribution::Normal(0.0, 1.0);
    Mixed {
        single: Param::from_tensor(Tensor::<2>::random([3, 4], normal, &device)),
        double: Param::from_tensor(Tensor::<1>::random([5], normal, &device).cast(DType::F64)),
        half: Param::from_tensor(Tensor::<3>::random([2, 1, 3], normal, &device).cast(DType::F16)),
        brain: Param::from_tensor(Tensor::<2>::random([2, 5], normal, &device).cast(DType::BF16)),
    }
}

fn bytes<M: Module>(module: &M) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let parts = TrainingParts::new(module.clone(), AdamConfig::new().init());
    parts
        .weights()
        .expect("weights")
        .into_iter()
        .map(|t| {
            let bytes = common::bytes_of(&t);
            (
                t.name,
                format!("{:?}", t.data.dtype()),
                t.data.shape().to_vec(),
                bytes,
            )
        })
        .collect()
}

fn save<M: Module>(module: M, path: &std::path::Path, weights_only: bool) {
    let parts = TrainingParts::new(module, AdamConfig::new().init());
    let mut cb = ModelCheckpoint::new(path).save_weights_only(weights_only);
    let mut ctx = Context::new(&parts);
    cb.on_epoch_begin(0, &Logs::new(), &mut ctx).expect("begin");
    cb.on_epoch_end(0, &Logs::from([("loss", 1.0)]), &mut ctx)
        .expect("save");
}

fn load<M: Module>(module: M, path: &std::path::Path) -> Result<M, Error> {
    let file = CheckpointFile::open(path, Verify::Full)?;
    load_weights(module, &file)
}

/// The core's error inside the adapter's.
fn core(err: Error) -> CoreError {
    match err {
        Error::Checkpoint(e) => e,
        other => panic!("not a checkpoint error: {other}"),
    }
}

#[test]
fn every_float_dtype_round_trips_bit_for_bit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mixed.safetensors");
    let original = mixed(1);
    let saved = bytes(&original);
    let dtypes: Vec<&str> = saved.iter().map(|(_, d, _, _)| d.as_str()).collect();
    assert_eq!(dtypes, ["F32", "F64", "F16", "BF16"]);
    save(original, &path, true);

    let other = mixed(2);
    assert_ne!(bytes(&other), saved);
    let loaded = load(other, &path).expect("load");
    assert_eq!(bytes(&loaded), saved);
    assert_eq!(loaded.double.val().dtype(), DType::F64);
    assert_eq!(
        loaded.half.val().dtype(),
        DType::F16,
        "the module keeps its dtype"
    );
    assert_eq!(
        loaded.brain.val().dtype(),
        DType::BF16,
        "the module keeps its dtype"
    );
}

/// A module whose parameter is tracked on the autodiff device and saved through a mapper
/// (as burn's `Linear` saves its weight transposed).
#[derive(Module, Debug)]
struct Mapped {
    weight: Param<Tensor<2>>,
}

/// What the save mapper of [`Mapped`] was handed: whether each tensor was on the autodiff
/// graph.
static MAPPED_ON_THE_GRAPH: std::sync::Mutex<Vec<bool>> = std::sync::Mutex::new(Vec::new());

#[test]
fn a_save_runs_the_save_mapper_off_the_autodiff_graph_with_the_same_values() {
    // On the graph, the mapper's transpose would register a step under burn's graph lock,
    // which training takes at every operation: a background save does this on the writer.
    let device = cpu_autodiff();
    let value = Tensor::<2>::from_data(
        burn::tensor::TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]),
        &device,
    )
    .require_grad();
    assert!(value.is_autodiff());
    let module = Mapped {
        weight: Param::from_tensor(value).save_mapper(|t: Tensor<2>| {
            MAPPED_ON_THE_GRAPH
                .lock()
                .expect("not poisoned")
                .push(t.is_autodiff());
            t.transpose()
        }),
    };
    let saved = bytes(&module);
    assert_eq!(
        *MAPPED_ON_THE_GRAPH.lock().expect("not poisoned"),
        [false],
        "the mapper ran once, on a tensor off the graph"
    );
    let (name, dtype, shape, data) = &saved[0];
    assert_eq!((name.as_str(), dtype.as_str()), ("weight", "F32"));
    assert_eq!(shape, &[3, 2]);
    let values: Vec<f32> = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(values, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0], "saved transposed");
    // The live parameter is still tracked: training goes on with it.
    assert!(module.weight.val().is_autodiff());
}

#[test]
fn mismatched_files_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = dir.path().join("small.safetensors");
    save(Mlp::new(&[4, 3, 2], 0, &cpu()).expect("mlp"), &small, true);

    let model = Mlp::new(&[4, 5, 2], 1, &cpu()).expect("mlp");
    let before = bytes(&model);
    let err = core(load(model.clone(), &small).expect_err("shape"));
    assert!(
        matches!(&err, CoreError::LoadMismatch { report, .. }
            if report.mismatched.iter().any(|m| m.found.name == "dense_0.weight"
                && m.expected.shape == [5, 4] && m.found.shape == [3, 4])),
        "{err}"
    );
    assert_eq!(bytes(&model), before, "unchanged");

    // The same names in f64: a dtype mismatch, named.
    let wide = dir.path().join("wide.safetensors");
    let mlp = Mlp::new(&[4, 5, 2], 0, &cpu()).expect("mlp");
    let mlp = mlp.map(&mut ToF64);
    save(mlp, &wide, true);
    let err = core(load(model.clone(), &wide).expect_err("dtype"));
    assert!(
        matches!(&err, CoreError::LoadMismatch { report, .. } if report.mismatched.len() == 4),
        "{err}"
    );
    assert_eq!(bytes(&model), before, "unchanged");

    // A deeper model's file: a tensor this one does not have.
    let deep = dir.path().join("deep.safetensors");
    save(
        Mlp::new(&[4, 5, 2, 2], 0, &cpu()).expect("mlp"),
        &deep,
        true,
    );
    let err = core(load(model.clone(), &deep).expect_err("extra"));
    assert!(
        matches!(&err, CoreError::LoadMismatch { report, .. }
            if report.unexpected.iter().all(|n| n.starts_with("dense_2.")) && report.unexpected.len() == 2),
        "{err}"
    );
    assert_eq!(bytes(&model), before, "unchanged");
}

struct ToF64;

impl burn::module::ModuleMapper for ToF64 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| t.cast(DType::F64))
    }
}

/// `what` saved as a full checkpoint at `path` by `ModelCheckpoint` (one epoch), opened.
fn save_state(what: &dyn Checkpointable, path: &std::path::Path) -> CheckpointFile {
    let mut cb = ModelCheckpoint::new(path);
    let mut ctx = Context::new(what);
    cb.on_epoch_begin(0, &Logs::new(), &mut ctx).expect("begin");
    cb.on_epoch_end(0, &Logs::from([("loss", 1.0)]), &mut ctx)
        .expect("save");
    CheckpointFile::open(path, Verify::Full).expect("open")
}

/// One Adam step on a batch of zeros, so that the optimizer has state.
fn step(parts: &mut TrainingParts<Mlp>) {
    let x = Tensor::<2>::ones([2, 4], &cpu_autodiff());
    let loss = parts.model.forward(x).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &parts.model);
    parts.model = parts.optimizer.step(0.01, parts.model.clone(), grads);
}

#[test]
fn optimizer_state_survives_a_fresh_model() {
    let mut parts = TrainingParts::new(
        Mlp::new(&[4, 3, 2], 0, &cpu_autodiff()).expect("mlp"),
        AdamConfig::new().init(),
    );
    step(&mut parts);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("full.safetensors");
    let file = save_state(&parts, &path);

    // burn's own record, reloaded into a freshly built model's optimizer: keyed by the old
    // model's random ids, it holds state for none of the fresh model's parameters.
    let burn_record = parts.optimizer.to_record();
    let fresh = Mlp::new(&[4, 3, 2], 0, &cpu_autodiff()).expect("mlp");
    let reloaded = AdamConfig::new().init().load_record(burn_record);
    let err = TrainingParts::new(fresh.clone(), reloaded)
        .training_state()
        .err()
        .expect("stale ids");
    assert!(
        err.to_string().contains("which the model does not have"),
        "{err}"
    );

    // Ours, by path: every moment back, bit for bit.
    let mut restored = TrainingParts::new(fresh, AdamConfig::new().init());
    restore(&file, &mut restored, &mut []).expect("restore");
    let want = parts.training_state().expect("state");
    let got = restored.training_state().expect("state");
    assert_eq!(
        want.tensors.len(),
        8,
        "two moments for each of four parameters"
    );
    let flat = |s: &model_checkpoint::TrainingState<'_>| {
        let mut v: Vec<(String, Vec<u8>)> = s
            .tensors
            .iter()
            .map(|t| (t.name.clone(), common::bytes_of(t)))
            .collect();
        v.sort();
        v
    };
    assert_eq!(flat(&got), flat(&want));
    assert_eq!(got.document.optimizer, want.document.optimizer);
}

/// Weights of one model with the optimizer state of another of other shapes: what a
/// tampered or mixed-up file holds.
struct Mixed2<'a> {
    weights: &'a TrainingParts<Mlp>,
    state: &'a TrainingParts<Mlp>,
}

impl Checkpointable for Mixed2<'_> {
    fn weights(&self) -> Result<Vec<model_checkpoint::NamedTensor<'_>>, CoreError> {
        self.weights.weights()
    }
    fn training_state(&self) -> Result<model_checkpoint::TrainingState<'_>, CoreError> {
        self.state.training_state()
    }
}

#[test]
fn optimizer_state_that_does_not_fit_its_parameters_is_refused() {
    let mut small = TrainingParts::new(
        Mlp::new(&[4, 3, 2], 0, &cpu_autodiff()).expect("mlp"),
        AdamConfig::new().init(),
    );
    let mut wide = TrainingParts::new(
        Mlp::new(&[4, 5, 2], 0, &cpu_autodiff()).expect("mlp"),
        AdamConfig::new().init(),
    );
    step(&mut small);
    step(&mut wide);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mixed.safetensors");
    let mixed = Mixed2 {
        weights: &small,
        state: &wide,
    };
    let file = save_state(&mixed, &path);
    let mut fresh = TrainingParts::new(
        Mlp::new(&[4, 3, 2], 1, &cpu_autodiff()).expect("mlp"),
        AdamConfig::new().init(),
    );
    let err = restore(&file, &mut fresh, &mut []).expect_err("mismatched state");
    assert!(
        matches!(&err, CoreError::BadTrainingState { reason, .. }
            if reason.contains("optimizer tensor dense_") && reason.contains(", its parameter [")),
        "{err}"
    );
}

/// Every float parameter cast to f64, as a new leaf that gradients reach (a cast of a
/// trainable tensor is not one: the optimizer would see no gradient and keep no state).
struct ToF64Trainable;

impl burn::module::ModuleMapper for ToF64Trainable {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| t.cast(DType::F64).detach().require_grad())
    }
}

/// Weights of one model and its optimizer's state with one of burn's integer scalars (a
/// step counter) set to `u64::MAX`: burn would add one to it.
struct HugeCounter<'a>(&'a TrainingParts<Mlp>);

impl Checkpointable for HugeCounter<'_> {
    fn weights(&self) -> Result<Vec<model_checkpoint::NamedTensor<'_>>, CoreError> {
        self.0.weights()
    }
    fn training_state(&self) -> Result<model_checkpoint::TrainingState<'_>, CoreError> {
        let mut state = self.0.training_state()?;
        let scalars = state
            .document
            .optimizer
            .as_mut()
            .and_then(|o| o.get_mut("scalars"))
            .and_then(|s| s.as_object_mut())
            .expect("optimizer scalars");
        let counter = scalars
            .values_mut()
            .flat_map(|fields| {
                fields
                    .as_object_mut()
                    .into_iter()
                    .flat_map(|f| f.iter_mut())
            })
            .find(|(field, v)| {
                *field != "__rank" && (v.get("uint").is_some() || v.get("int").is_some())
            })
            .map(|(_, v)| v)
            .expect("an integer scalar besides the rank");
        *counter = serde_json::json!({ "uint": u64::MAX });
        Ok(state)
    }
}

#[test]
fn optimizer_state_of_another_dtype_or_out_of_range_is_refused() {
    let mut small = TrainingParts::new(
        Mlp::new(&[4, 3, 2], 0, &cpu_autodiff()).expect("mlp"),
        AdamConfig::new().init(),
    );
    step(&mut small);
    // The same model in f64, one step on: moments of dtype F64.
    let mut double = TrainingParts::new(
        Mlp::new(&[4, 3, 2], 0, &cpu_autodiff())
            .expect("mlp")
            .map(&mut ToF64Trainable),
        AdamConfig::new().init(),
    );
    let x = Tensor::<2>::ones([2, 4], &cpu_autodiff()).cast(DType::F64);
    let loss = double.model.forward(x).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &double.model);
    double.model = double.optimizer.step(0.01, double.model.clone(), grads);
    let state = double.training_state().expect("state");
    assert_eq!(
        state.tensors.len(),
        8,
        "two f64 moments for each of four parameters"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let save = |name: &str, what: &dyn Checkpointable| save_state(what, &dir.path().join(name));
    let fresh = || {
        TrainingParts::new(
            Mlp::new(&[4, 3, 2], 1, &cpu_autodiff()).expect("mlp"),
            AdamConfig::new().init(),
        )
    };

    let file = save(
        "f64-state.safetensors",
        &Mixed2 {
            weights: &small,
            state: &double,
        },
    );
    let err = restore(&file, &mut fresh(), &mut []).expect_err("dtype");
    assert!(
        matches!(&err, CoreError::BadTrainingState { reason, .. }
            if reason.contains("is of dtype F64, its parameter F32")),
        "{err}"
    );

    let file = save("huge-counter.safetensors", &HugeCounter(&small));
    let err = restore(&file, &mut fresh(), &mut []).expect_err("counter");
    assert!(
        matches!(&err, CoreError::BadTrainingState { reason, .. }
            if reason.contains("18446744073709551615") && reason.contains("beyond")),
        "{err}"
    );
}

const DEVICE_CHILD: &str = "MODEL_CHECKPOINT_BURN_DEVICE_CHILD";

/// Run by `a_burn_device_this_build_lacks_is_refused` in a child process, with
/// `BURN_DEVICE` set there (the variable is process-wide): restores a full checkpoint and
/// prints the error.
#[test]
fn burn_device_child() {
    let Some(dir) = std::env::var_os(DEVICE_CHILD) else {
        return;
    };
    let mut parts = TrainingParts::new(
        Mlp::new(&[4, 3, 2], 0, &cpu_autodiff()).expect("mlp"),
        AdamConfig::new().init(),
    );
    step(&mut parts);
    let path = std::path::Path::new(&dir).join("full.safetensors");
    let file = save_state(&parts, &path);
    let mut fresh = TrainingParts::new(
        Mlp::new(&[4, 3, 2], 1, &cpu_autodiff()).expect("mlp"),
        AdamConfig::new().init(),
    );
    let err = restore(&file, &mut fresh, &mut []).expect_err("BURN_DEVICE");
    println!("\nRESTORE ERROR {err}");
}

#[test]
fn a_burn_device_this_build_lacks_is_refused() {
    // burn's `load_record` makes the restored state on `Device::default()`, which panics on
    // such a `BURN_DEVICE`: an unknown name, and one burn knows but was built without.
    for device in ["no-such-device", "cuda"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "burn_device_child", "--nocapture"])
            .env(DEVICE_CHILD, dir.path())
            .env("BURN_DEVICE", device)
            .output()
            .expect("child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{device}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!(
                "BURN_DEVICE=\"{device}\" names no backend this build of burn has"
            )),
            "{stdout}"
        );
    }
}
