//! The core's retention property test (`model-checkpoint/tests/retention_cases/`) against a
//! real S3 server: the same random cases as on a local folder, each in its own prefix of
//! the bucket, fewer of them (each save is a few HTTP requests).

mod seaweed;

#[path = "../../model-checkpoint/tests/retention_cases/mod.rs"]
mod retention_cases;

use std::sync::Arc;

use seaweed::Seaweed;

#[test]
fn retention_keeps_exactly_what_the_rules_say_on_s3() {
    let Some(server) = Seaweed::start("retention on s3") else {
        return;
    };
    let cases: u64 = std::env::var("CKPT_S3_RETENTION_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(160);
    let storage: Arc<dyn model_checkpoint::store::Storage> = Arc::new(server.storage());
    retention_cases::run(cases, |case_no| retention_cases::Backend::Storage {
        storage: storage.clone(),
        dir: server.url(&format!("case-{case_no}")),
    });
    println!("{cases} retention cases passed on S3");
}
