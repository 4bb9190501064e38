//! The core's combination property test (`model-checkpoint/tests/combination_cases/`)
//! against a real S3 server: fewer cases than on a local folder (each save is a few HTTP
//! requests), each run in its own prefix of the bucket. The saves on a signal are left to
//! the local runs (a signal is process-wide, and this binary's other tests run beside it).

mod seaweed;

#[path = "../../model-checkpoint/tests/combination_cases/mod.rs"]
mod combination_cases;

use std::sync::Arc;

use combination_cases::Place;
use seaweed::Seaweed;

#[test]
fn every_guarantee_holds_in_every_combination_on_s3() {
    let Some(server) = Seaweed::start("combinations on s3") else {
        return;
    };
    let cases: usize = std::env::var("CKPT_S3_COMBINATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12);
    let storage: Arc<dyn model_checkpoint::store::Storage> = Arc::new(server.storage());
    let distinct = combination_cases::run(cases, 0x53_c0de, false, &|case, run| Place {
        storage: storage.clone(),
        dir: server.url(&format!("combination-{case}-{run}/ck")),
    });
    println!("combinations: {cases} cases on S3 ({distinct} distinct)");
}
