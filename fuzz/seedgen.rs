//! Writes seed checkpoints for the `checkpoint` target with `model_checkpoint::store::save`:
//! with `RUSTFLAGS` as in `run.sh`, `cargo run --release --manifest-path fuzz/Cargo.toml
//! --target x86_64-unknown-linux-gnu --bin seedgen -- fuzz/seeds/checkpoint`.

// Linked only for the sanitizer-coverage callbacks the fuzz build flags instrument calls to.
use libfuzzer_sys as _;

use std::collections::BTreeMap;
use std::path::PathBuf;

use model_checkpoint::store::{save, Kind, SaveOptions};
use model_checkpoint::{Dtype, HostTensor, NamedTensor};

fn t(dtype: Dtype, shape: Vec<usize>, fill: u8) -> HostTensor {
    let len = model_checkpoint::byte_len(dtype, &shape);
    let data = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
    HostTensor::new(dtype, shape, data).expect("tensor")
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: seedgen OUT_DIR"));
    std::fs::create_dir_all(&out).expect("mkdir");
    let mut logs = BTreeMap::new();
    logs.insert("logs".to_owned(), r#"{"loss":0.125,"epoch":3}"#.to_owned());
    let cases: Vec<(
        &str,
        Kind,
        Vec<(&str, HostTensor)>,
        BTreeMap<String, String>,
    )> = vec![
        ("empty-weights", Kind::Weights, vec![], BTreeMap::new()),
        (
            "full-three",
            Kind::Full,
            vec![
                ("layer.weight", HostTensor::from_f32(vec![4, 4], &[0.5; 16])),
                (
                    "layer.bias",
                    HostTensor::from_f32(vec![4], &[1.0, -1.0, 0.25, 1e-3]),
                ),
                ("steps", t(Dtype::I64, vec![1], 7)),
            ],
            logs.clone(),
        ),
        (
            "weights-dtypes",
            Kind::Weights,
            vec![
                ("f64", t(Dtype::F64, vec![2], 1)),
                ("bf16", t(Dtype::BF16, vec![3], 2)),
                ("f16", t(Dtype::F16, vec![1, 3], 3)),
                ("u8", t(Dtype::U8, vec![5], 4)),
                ("bool", t(Dtype::BOOL, vec![2], 0)),
                ("i32", t(Dtype::I32, vec![2, 1], 5)),
                ("scalar", t(Dtype::F32, vec![], 6)),
                ("zero", t(Dtype::F32, vec![0, 3], 7)),
            ],
            BTreeMap::new(),
        ),
        (
            "full-subbyte",
            Kind::Full,
            vec![
                ("f4", t(Dtype::F4, vec![4], 1)),
                ("f6", t(Dtype::F6_E2M3, vec![4], 2)),
                ("f8", t(Dtype::F8_E4M3, vec![3], 3)),
            ],
            logs,
        ),
    ];
    for (name, kind, tensors, info) in cases {
        let named: Vec<NamedTensor<'_>> = tensors
            .iter()
            .map(|(n, t)| NamedTensor::new(*n, t.clone()))
            .collect();
        let path = out.join(format!("{name}.safetensors"));
        match save(&path, kind, &named, &info, &SaveOptions::default()) {
            Ok(r) => println!("{} ({} bytes)", path.display(), r.bytes),
            Err(e) => eprintln!("{name}: {e}"),
        }
    }
}
