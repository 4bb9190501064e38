//! Sharded checkpoints saved by 2 and 4 real processes into the S3 server (SeaweedFS on
//! 127.0.0.1): the same cases as on a local folder (`model-checkpoint/tests/sharded.rs`),
//! the commit being the index's conditional create in the bucket.

mod seaweed;

#[path = "../../model-checkpoint/tests/sharded_cases/mod.rs"]
mod sharded_cases;

use model_checkpoint::store::Name;
use model_checkpoint_object_store::ObjectStorage;
use seaweed::Seaweed;
use sharded_cases::{check_loads, spawn};

const CHILD: &str = "s3_sharded_child";

#[test]
#[ignore = "helper: the sharded tests run it as a child process"]
fn s3_sharded_child() {
    let dir = std::env::var(sharded_cases::DIR).expect("dir");
    sharded_cases::child_main(&ObjectStorage::from_env(&dir).expect("storage"));
}

#[test]
fn sharded_saves_on_s3_load_into_any_number_and_survive_kills() {
    let Some(server) = Seaweed::start("sharded saves on s3") else {
        return;
    };
    let storage = server.storage();
    let env = server.env();
    for world in [2, 4] {
        let dir = server.url(&format!("w{world}"));
        for mut child in spawn(CHILD, &env, world, &dir, world as u64, None) {
            assert!(child.wait().expect("wait").success(), "a rank failed");
        }
        check_loads(&storage, &dir, world as u64);
    }
    let root = server.url("kills");
    for mut child in spawn(CHILD, &env, 2, &format!("{root}/step-000"), 0, None) {
        assert!(child.wait().expect("wait").success(), "a rank failed");
    }
    let kills: usize = std::env::var("CKPT_S3_SHARD_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(12);
    sharded_cases::kill_at_every_stage(CHILD, &env, &storage, &root, kills);
    println!("{kills} kills on s3: no bad index, latest always complete");
}

#[path = "../../model-checkpoint/tests/sharded_model/mod.rs"]
mod sharded_model;

#[test]
#[ignore = "helper: the sharded training test runs it as a child process"]
fn s3_training_child() {
    let dir = std::env::var("CKPT_TRAIN_DIR").expect("dir");
    sharded_model::child(std::sync::Arc::new(
        ObjectStorage::from_env(&dir).expect("storage"),
    ));
}

#[test]
fn a_resumed_sharded_run_on_s3_matches_one_straight_through() {
    let Some(server) = Seaweed::start("sharded training on s3") else {
        return;
    };
    let storage = server.storage();
    let env = server.env();
    let run = |dir: &str, world: usize, epochs: u64, resume: bool| {
        let ok = sharded_model::run_ranks("s3_training_child", &env, dir, world, epochs, resume);
        assert!(ok, "a rank failed");
    };
    let (straight, resumed) = (server.url("straight"), server.url("resumed"));
    run(&straight, 2, 4, false);
    run(&resumed, 2, 2, false);
    run(&resumed, 2, 4, true);
    let a = sharded_model::contents(&storage, &format!("{straight}/step-004"));
    let b = sharded_model::contents(&storage, &format!("{resumed}/step-004"));
    assert_eq!(a.len(), 7);
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs between resumed and straight");
    }
    // A world of 4 resumes the world-2 run from the bucket.
    run(&straight, 4, 5, true);
    let latest = model_checkpoint::sharded::latest_sharded(&storage, &Name::from(&straight))
        .expect("latest");
    assert!(latest.as_str().ends_with("step-005"), "{latest}");
}

#[test]
fn versions_and_last_of_sharded_checkpoints_on_s3() {
    let Some(server) = Seaweed::start("sharded versions and last on s3") else {
        return;
    };
    let storage: std::sync::Arc<dyn model_checkpoint::store::Storage> =
        std::sync::Arc::new(server.storage());
    let template = server.url("v/model");
    let barrier: std::sync::Arc<dyn model_checkpoint::sharded::Barrier> =
        std::sync::Arc::new(sharded_model::Threads(std::sync::Barrier::new(2)));
    std::thread::scope(|scope| {
        for rank in 0..2 {
            let (barrier, template, storage) = (barrier.clone(), template.clone(), storage.clone());
            scope.spawn(move || {
                let settings = sharded_model::Settings {
                    storage,
                    template: &template,
                    ranks: model_checkpoint::sharded::Ranks::new(rank, 2).expect("ranks"),
                    run_id: "5eed",
                    barrier: Some(barrier),
                };
                sharded_model::train_with(settings, 3, false, &|cb| {
                    cb.overwrite(false).save_last(true).keep_last(2)
                })
                .expect("train");
            });
        }
    });
    // keep_last(2): the first version went, index first; `last` is a server-side copy.
    let open = |name: &str| {
        model_checkpoint::sharded::ShardedCheckpoint::open(
            &*storage,
            &Name::from(&server.url(&format!("v/{name}"))),
        )
    };
    assert!(open("model").is_err(), "retention removed the oldest");
    for name in ["model-v1", "model-v2", "last"] {
        open(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert_eq!(
        sharded_model::contents(&*storage, &server.url("v/last")),
        sharded_model::contents(&*storage, &server.url("v/model-v2"))
    );
}
