//! Replays the fuzz corpora of the `csv` target through its harness (`fuzz/harness/csv.rs`),
//! so that every input a fuzz campaign found (`fuzz/regressions/csv/`) and every seed
//! (`fuzz/seeds/csv/`) is checked by plain `cargo test`, without the fuzz build.
//! Errors are fine; a panic fails the test, naming each input that panicked.

#[path = "../../../fuzz/harness/csv.rs"]
mod csv;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

#[test]
fn csv_corpus_parses_without_panics() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in ["regressions", "seeds"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join("csv")) else {
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
    let mut panicked = Vec::new();
    for path in &files {
        let data = std::fs::read(path).expect("read corpus file");
        if catch_unwind(AssertUnwindSafe(|| csv::run(&data))).is_err() {
            panicked.push(path.display().to_string());
        }
    }
    assert!(
        panicked.is_empty(),
        "{} of {} csv inputs panicked:\n{}",
        panicked.len(),
        files.len(),
        panicked.join("\n")
    );
}
