//! A weights file written by this project opens in Python's `safetensors` package with the
//! same names, shapes, dtypes and values. Uses `$CKPT_PYTHON` (set by .ci/run to a virtual
//! environment with safetensors and numpy) or `python3`; skips with a message when neither
//! has the packages, except in CI.

use candle_core::{DType, Device, Tensor};
use model_checkpoint::store::{self, Kind, SaveOptions};
use model_checkpoint::{ModelCheckpoint, NamedTensor};
use model_checkpoint_candle::{
    Adam, CandleStep, CandleTensor, Dataset, FitOptions, Model, ParamsAdam, Trainer,
};
mod python;

use python::{assert_same_as_python, hex, python, read_in_python};

#[test]
fn trained_weights_open_in_python_safetensors() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let model = Model::mlp(&[64, 16, 10], 3).expect("model");
    let optimizer = Adam::new(model.named_vars(), ParamsAdam::default()).expect("adam");
    let mut trainer = Trainer::new(CandleStep::new(model, optimizer));
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
    for (name, var) in trainer.step().model().named_vars() {
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
