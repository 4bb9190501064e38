//! Harness shared by the `csv` fuzz target and
//! `crates/model-checkpoint-candle/tests/fuzz_regressions.rs`: the input is a whole file
//! (plain or gzip-compressed CSV).

use model_checkpoint_candle::Dataset;

/// Parses `data` as a CSV data set and touches the result.
pub fn run(data: &[u8]) {
    let Ok(set) = Dataset::from_csv_bytes(data, "fuzz.csv") else {
        return;
    };
    std::hint::black_box((set.len(), set.width(), set.classes(), set.labels().len()));
    std::hint::black_box(set.scaled().len());
}
