//! Where features meet: the combination property test (`combination_cases/`) on a local
//! folder and through an in-memory `Storage`. `CKPT_COMBINATIONS=N` runs N cases per
//! backend (a longer campaign; `CKPT_COMBINATIONS_SEED` picks the sequence).

mod combination_cases;
mod memory;

use std::sync::Arc;

use combination_cases::Place;
use model_checkpoint::store::{LocalFolder, Storage};

fn cases() -> (usize, u64) {
    let n = std::env::var("CKPT_COMBINATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let seed = std::env::var("CKPT_COMBINATIONS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c0de);
    (n, seed)
}

/// One test: the save-on-signal cases raise SIGTERM in this process, whose flag every
/// callback of the process shares, so the cases run one after another.
#[test]
fn every_guarantee_holds_in_every_combination() {
    let (n, seed) = cases();
    let dirs = std::cell::RefCell::new(Vec::new());
    let local = combination_cases::run(n, seed, true, &|_, _| {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(LocalFolder::new(dir.path()));
        dirs.borrow_mut().push(dir);
        Place {
            storage,
            dir: "ck".to_owned(),
        }
    });
    let memory = combination_cases::run(n, seed ^ 0x9e37_79b9, true, &|_, _| Place {
        storage: Arc::new(memory::Shared::default()),
        dir: "ck".to_owned(),
    });
    println!(
        "combinations: {n} cases on a local folder ({local} distinct), {n} in memory ({memory} distinct)"
    );
}
