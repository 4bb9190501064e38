//! A weights file written by this project opens in Python's `safetensors` package with the
//! same names, shapes, dtypes and values. Uses `$CKPT_PYTHON` (set by .ci/run to a virtual
//! environment with safetensors and numpy) or `python3`; skips with a message when neither
//! has the packages, except in CI.

use std::process::Command;

use candle_core::{DType, Device, Tensor};
use model_checkpoint::store::{self, CheckpointFile, Kind, SaveOptions, Verify};
use model_checkpoint::{ModelCheckpoint, NamedTensor};
use model_checkpoint_candle::{
    Adam, CandleTensor, Dataset, FitOptions, Model, ParamsAdam, Trainer,
};
use serde_json::Value as Json;

fn python() -> Option<String> {
    let candidate = std::env::var("CKPT_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&candidate)
        .args(["-c", "import safetensors, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(candidate);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{candidate} lacks safetensors/numpy in CI; .ci/run installs them"
    );
    println!("SKIPPED python interop: {candidate} cannot import safetensors and numpy (pip install safetensors numpy, or set CKPT_PYTHON)");
    None
}

/// What Python sees: per tensor its dtype, shape and raw bytes (hex), plus the metadata.
const READER: &str = r#"
import json, sys
from safetensors import safe_open
out = {"tensors": {}}
with safe_open(sys.argv[1], framework="numpy") as f:
    out["metadata"] = f.metadata()
    for name in f.keys():
        a = f.get_tensor(name)
        out["tensors"][name] = {"dtype": str(a.dtype), "shape": list(a.shape), "hex": a.tobytes().hex()}
print(json.dumps(out))
"#;

fn read_in_python(python: &str, path: &std::path::Path) -> Json {
    let out = Command::new(python)
        .args(["-c", READER])
        .arg(path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json from python")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn numpy_name(dtype: model_checkpoint::Dtype) -> &'static str {
    use model_checkpoint::Dtype as D;
    match dtype {
        D::F32 => "float32",
        D::F64 => "float64",
        D::F16 => "float16",
        D::I64 => "int64",
        D::I32 => "int32",
        D::I16 => "int16",
        D::U8 => "uint8",
        D::U32 => "uint32",
        other => panic!("no numpy dtype for {other:?}"),
    }
}

fn assert_same_as_python(python: &str, path: &std::path::Path) {
    let theirs = read_in_python(python, path);
    let ours = CheckpointFile::open(path, Verify::Full).expect("open");
    let tensors = theirs["tensors"].as_object().expect("tensors");
    assert_eq!(tensors.len(), ours.tensors().count());
    for t in ours.tensors() {
        let py = &tensors[t.name];
        assert_eq!(py["dtype"], numpy_name(t.dtype), "{}", t.name);
        assert_eq!(py["shape"], serde_json::json!(t.shape), "{}", t.name);
        assert_eq!(
            py["hex"],
            hex(&ours.read(t.name).expect("read")),
            "{}",
            t.name
        );
    }
    assert_eq!(theirs["metadata"]["format"], "model-checkpoint");
}

#[test]
fn trained_weights_open_in_python_safetensors() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let model = Model::mlp(&[64, 16, 10], 3).expect("model");
    let optimizer = Adam::new(model.named_vars(), ParamsAdam::default()).expect("adam");
    let mut trainer = Trainer::new(model, optimizer);
    let mut cb =
        ModelCheckpoint::new(dir.path().join("w.{epoch:02d}.safetensors")).save_weights_only(true);
    trainer
        .fit(
            &Dataset::digits().scaled(),
            &FitOptions::new(2).verbose(0),
            &mut [&mut cb],
        )
        .expect("fit");
    let path = dir.path().join("w.02.safetensors");
    assert_same_as_python(&python, &path);

    // And Python's values are the live model's values.
    let theirs = read_in_python(&python, &path);
    for (name, var) in trainer.model().named_vars() {
        let values = var
            .as_tensor()
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("values");
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(theirs["tensors"][&name]["hex"], hex(&bytes), "{name}");
    }
}

#[test]
fn every_numpy_dtype_candle_has_opens_in_python() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = Device::Cpu;
    let base = Tensor::arange(0f32, 12.0, &dev)
        .expect("arange")
        .reshape((3, 4))
        .expect("reshape");
    let tensors: Vec<(String, Tensor)> = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::U8,
        DType::U32,
    ]
    .iter()
    .map(|&d| (format!("{d:?}"), base.to_dtype(d).expect("cast")))
    .collect();
    let named: Vec<NamedTensor<'_>> = tensors
        .iter()
        .map(|(n, t)| NamedTensor::new(n.clone(), CandleTensor::new(t).expect("dtype")))
        .collect();
    let path = dir.path().join("dtypes.safetensors");
    store::save(
        &path,
        Kind::Weights,
        &named,
        &Default::default(),
        &SaveOptions::default(),
    )
    .expect("save");
    assert_same_as_python(&python, &path);
}
