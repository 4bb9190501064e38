//! Replays the fuzz corpora through the fuzz targets' own harnesses (`fuzz/harness/`), so that
//! every input a fuzz campaign found (`fuzz/regressions/<target>/`) and every seed
//! (`fuzz/seeds/<target>/`) is checked by plain `cargo test`, without the fuzz build.
//! Errors are fine; a panic fails the test, naming each input that panicked.

#[path = "../../../fuzz/harness/checkpoint.rs"]
mod checkpoint;
#[path = "../../../fuzz/harness/template.rs"]
mod template;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The files of `fuzz/regressions/<target>` and `fuzz/seeds/<target>`, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in ["regressions", "seeds"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("list corpus").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, run: impl Fn(&[u8])) {
    let files = inputs(target);
    let mut panicked = Vec::new();
    for path in &files {
        let data = std::fs::read(path).expect("read corpus file");
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            panicked.push(path.display().to_string());
        }
    }
    assert!(
        panicked.is_empty(),
        "{} of {} {target} inputs panicked:\n{}",
        panicked.len(),
        files.len(),
        panicked.join("\n")
    );
}

#[test]
fn checkpoint_corpus_opens_without_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("input.safetensors");
    replay("checkpoint", |data| checkpoint::run(&path, data));
}

#[test]
fn template_corpus_formats_without_panics() {
    replay("template", template::run);
}
