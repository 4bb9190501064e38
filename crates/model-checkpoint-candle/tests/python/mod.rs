//! Python's view of a checkpoint, for the interop tests of every adapter (the burn crate's
//! tests include this file): `$CKPT_PYTHON` (set by .ci/run to a virtual environment with
//! safetensors and numpy) or `python3`; skips with a message when neither has the packages,
//! except in CI.
#![allow(dead_code)]

use std::process::Command;

use model_checkpoint::store::{CheckpointFile, Verify};
use serde_json::Value as Json;

pub fn python() -> Option<String> {
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

pub fn read_in_python(python: &str, path: &std::path::Path) -> Json {
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

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn numpy_name(dtype: model_checkpoint::Dtype) -> &'static str {
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

pub fn assert_same_as_python(python: &str, path: &std::path::Path) {
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
