//! Harness shared by the `checkpoint` fuzz target and
//! `crates/model-checkpoint/tests/fuzz_regressions.rs`: the input is a whole file.

use std::path::Path;

use model_checkpoint::store::{CheckpointFile, Verify};

/// Writes `data` to `path`, opens it with full verification and touches every tensor.
/// Errors are expected; only a panic (or a crash, hang or runaway allocation) is a bug.
pub fn run(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write the input file");
    let Ok(file) = CheckpointFile::open(path, Verify::Full) else {
        return;
    };
    let _ = (file.kind(), file.has_checksums(), file.info().len(), file.len());
    let mut names = Vec::new();
    for t in file.tensors() {
        let elements = t.shape.iter().fold(1usize, |n, d| n.saturating_mul(*d));
        std::hint::black_box((t.name.len(), t.dtype, elements, t.data.len(), t.checksum));
        names.push(t.name.to_owned());
    }
    for name in &names {
        let _ = file.tensor(name);
        read_tensor(&file, name);
    }
    let _ = file.verify_tensors();
}

/// Calls `CheckpointFile::read(name)` once the reader rewrite adds it. Until then this
/// trait's method stands in: inherent methods take precedence over trait methods, so the
/// real one is called as soon as it exists, with no change here.
trait ReadFallback {
    fn read(&self, name: &str) -> Result<Vec<u8>, ()>;
}

impl ReadFallback for CheckpointFile {
    fn read(&self, _name: &str) -> Result<Vec<u8>, ()> {
        Err(())
    }
}

fn read_tensor(file: &CheckpointFile, name: &str) {
    if let Ok(bytes) = file.read(name) {
        std::hint::black_box(bytes.len());
    }
}
