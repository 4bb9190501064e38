#![no_main]

#[path = "../harness/checkpoint.rs"]
mod harness;

use std::path::PathBuf;
use std::sync::OnceLock;

/// One temporary folder per process; every input overwrites the same file in it.
fn input_path() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("fuzz-checkpoint-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().join("input.safetensors");
        (dir, path)
    })
    .1
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(input_path(), data));
