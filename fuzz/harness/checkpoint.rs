//! Harness shared by the `checkpoint` fuzz target and
//! `crates/model-checkpoint/tests/fuzz_regressions.rs`: the input is a whole file.

use std::path::Path;

use model_checkpoint::store::{CheckpointFile, Verify};

/// Writes `data` to `path`, opens it with full verification, touches every tensor's entry and
/// reads every tensor. Errors are expected; only a panic (or a crash, hang or runaway
/// allocation) is a bug, and so is `read` handing out other than the entry's `len` bytes.
pub fn run(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write the input file");
    let Ok(file) = CheckpointFile::open(path, Verify::Full) else {
        return;
    };
    std::hint::black_box((
        file.kind(),
        file.has_checksums(),
        file.info().len(),
        file.len(),
    ));
    let mut entries = Vec::new();
    for t in file.tensors() {
        let elements = t.shape.iter().fold(1usize, |n, d| n.saturating_mul(*d));
        std::hint::black_box((t.name.len(), t.dtype, elements, t.checksum));
        entries.push((t.name.to_owned(), t.len));
    }
    for (name, len) in &entries {
        assert!(
            file.tensor(name).is_some(),
            "tensor {name:?} listed but not found"
        );
        if let Ok(bytes) = file.read(name) {
            assert_eq!(bytes.len(), *len, "read({name:?}) length");
        }
    }
    let _ = file.read("\u{0}not a tensor name");
    let _ = file.verify_tensors();
}
