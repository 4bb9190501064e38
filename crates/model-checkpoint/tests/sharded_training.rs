//! `ModelCheckpoint` saving sharded checkpoints in a multi-process run (2 processes, the
//! model of `sharded_model/`): a run stopped and resumed gives the same tensors, byte for
//! byte, as one that went straight through; and a checkpoint of 2 ranks restores into 4.

mod sharded_model;
mod thread_log;

use model_checkpoint::store::Name;
use std::sync::Arc;

use model_checkpoint::restore::restore_sharded;
use model_checkpoint::sharded::{Ranks, ShardedCheckpoint};
use model_checkpoint::store::LocalFolder;
use model_checkpoint::ModelCheckpoint;
use sharded_model::{LinearSlice, INPUTS, OUTPUTS};

#[test]
#[ignore = "helper: the sharded training tests run it as a child process"]
fn sharded_training_child() {
    sharded_model::child(Arc::new(LocalFolder::default()));
}

fn run(dir: &str, world: usize, epochs: u64, resume: bool) {
    assert!(run_ok(dir, world, epochs, resume), "a rank failed");
}

fn run_ok(dir: &str, world: usize, epochs: u64, resume: bool) -> bool {
    sharded_model::run_ranks("sharded_training_child", &[], dir, world, epochs, resume)
}

fn contents(dir: &str) -> Vec<(String, Vec<u8>)> {
    sharded_model::contents(&LocalFolder::default(), dir)
}

#[test]
fn a_resumed_sharded_run_matches_one_straight_through() {
    let root = tempfile::tempdir().expect("tempdir");
    // With 4 processes too, stopped in the middle.
    for world in [4usize, 2] {
        let straight = root
            .path()
            .join(format!("straight-{world}"))
            .to_string_lossy()
            .into_owned();
        let resumed = root
            .path()
            .join(format!("resumed-{world}"))
            .to_string_lossy()
            .into_owned();
        run(&straight, world, 4, false);
        run(&resumed, world, 2, false);
        run(&resumed, world, 4, true);
        let a = contents(&format!("{straight}/step-004"));
        let b = contents(&format!("{resumed}/step-004"));
        assert_eq!(
            a.len(),
            5 + world,
            "5 global tensors and every rank's generator"
        );
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert!(
                x == y,
                "{name} differs between resumed and straight ({world} ranks)"
            );
        }
    }
    let straight = root
        .path()
        .join("straight-2")
        .to_string_lossy()
        .into_owned();
    // Retention (keep_last 2) deleted whole folders, the index first, on rank 0 only.
    for old in ["step-001", "step-002"] {
        let index = root
            .path()
            .join("straight")
            .join(old)
            .join("model.safetensors.index.json");
        assert!(!index.exists(), "{old} kept");
    }

    // The world-2 checkpoint of epoch 4 restores into 4 processes: each gets its columns.
    let from = format!("{straight}/step-004");
    let global = ShardedCheckpoint::open(&LocalFolder::default(), &Name::from(&from))
        .expect("open")
        .read("W")
        .expect("W")
        .into_data();
    let global: Vec<f32> = global
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for rank in 0..4 {
        let ranks = Ranks::new(rank, 4).expect("ranks");
        let mut model = LinearSlice::new(ranks);
        restore_sharded(
            &LocalFolder::default(),
            &Name::from(&from),
            ranks,
            &mut model,
            &mut [],
        )
        .expect("restore");
        let cols = OUTPUTS / 4;
        let expected: Vec<f32> = (0..INPUTS)
            .flat_map(|i| {
                global[i * OUTPUTS + rank * cols..i * OUTPUTS + (rank + 1) * cols].to_vec()
            })
            .collect();
        assert_eq!(model.weights_vec(), expected.as_slice(), "rank {rank} of 4");
    }
    // And training goes on in a world of 4 from there.
    run(&straight, 4, 6, true);
    let latest = ShardedCheckpoint::open(
        &LocalFolder::default(),
        &Name::from(format!("{straight}/step-006")),
    )
    .expect("open");
    assert_eq!(latest.world_size(), 4);
}

#[test]
fn ranks_with_their_own_barrier_save_the_same_checkpoints() {
    let root = tempfile::tempdir().expect("tempdir");
    let by_processes = root.path().join("processes").to_string_lossy().into_owned();
    let by_threads = root.path().join("threads").to_string_lossy().into_owned();
    run(&by_processes, 2, 3, false);
    // Two ranks as threads, committing through their barrier instead of polling.
    let barrier: Arc<dyn model_checkpoint::sharded::Barrier> =
        Arc::new(sharded_model::Threads(std::sync::Barrier::new(2)));
    // And again with background saves: the barriers are passed on the writer threads.
    let in_background = root
        .path()
        .join("background")
        .to_string_lossy()
        .into_owned();
    for (dir, background) in [(&by_threads, false), (&in_background, true)] {
        std::thread::scope(|scope| {
            for rank in 0..2 {
                let (barrier, dir) = (barrier.clone(), dir.clone());
                scope.spawn(move || {
                    let template = format!("{dir}/step-{{epoch:03d}}");
                    let settings = sharded_model::Settings {
                        storage: Arc::new(LocalFolder::default()),
                        template: &template,
                        ranks: Ranks::new(rank, 2).expect("ranks"),
                        run_id: "5eed",
                        barrier: Some(barrier),
                    };
                    sharded_model::train_with(settings, 3, false, &|cb| cb.background(background))
                        .expect("train");
                });
            }
        });
    }
    let a = contents(&format!("{by_processes}/step-003"));
    for dir in [&by_threads, &in_background] {
        let b = contents(&format!("{dir}/step-003"));
        assert_eq!(a.len(), b.len());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert!(x == y, "{name} differs in {dir}");
        }
    }
}

#[test]
fn a_committed_folder_is_never_saved_into_again() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("ck").to_string_lossy().into_owned();
    run(&dir, 2, 2, false);
    let before = contents(&format!("{dir}/step-002"));
    // A second run (not a resume) would save step-001 again: every rank refuses, before
    // writing anything, and the committed checkpoints still load unchanged.
    assert!(
        !run_ok(&dir, 2, 2, false),
        "saving into a committed folder must fail"
    );
    assert_eq!(contents(&format!("{dir}/step-002")), before);
    ShardedCheckpoint::open(
        &LocalFolder::default(),
        &Name::from(format!("{dir}/step-001")),
    )
    .expect("intact");
}

/// A run of `epochs` with `template`, its two ranks as threads in this process (run id
/// `5eed`), the callback's options changed by `configure`.
fn two_ranks_as_threads(
    template: &str,
    epochs: u64,
    configure: &(dyn Fn(ModelCheckpoint) -> ModelCheckpoint + Sync),
) {
    let barrier: Arc<dyn model_checkpoint::sharded::Barrier> =
        Arc::new(sharded_model::Threads(std::sync::Barrier::new(2)));
    std::thread::scope(|scope| {
        for rank in 0..2 {
            let barrier = barrier.clone();
            scope.spawn(move || {
                let settings = sharded_model::Settings {
                    storage: Arc::new(LocalFolder::default()),
                    template,
                    ranks: Ranks::new(rank, 2).expect("ranks"),
                    run_id: "5eed",
                    barrier: Some(barrier),
                };
                sharded_model::train_with(settings, epochs, false, configure).expect("train");
            });
        }
    });
}

#[test]
fn versions_and_last_of_sharded_checkpoints() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().to_string_lossy().into_owned();
    // One fixed folder name, so every save after the first is a version.
    two_ranks_as_threads(&format!("{dir}/model"), 3, &|cb| {
        cb.overwrite(false).save_last(true).keep_last(100)
    });
    for name in ["model", "model-v1", "model-v2", "last"] {
        ShardedCheckpoint::open(
            &LocalFolder::default(),
            &Name::from(format!("{dir}/{name}")),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert_eq!(
        contents(&format!("{dir}/last")),
        contents(&format!("{dir}/model-v2")),
        "last holds the newest"
    );
    assert_ne!(
        contents(&format!("{dir}/model")),
        contents(&format!("{dir}/model-v2"))
    );
}

#[test]
fn rank_0_journals_every_sharded_save_and_every_folder_retention_deletes() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().to_string_lossy().into_owned();
    // keep_last(2), as `train_with` sets it.
    two_ranks_as_threads(&format!("{dir}/epoch_{{epoch}}"), 5, &|cb| cb.journal(true));
    let journal = std::fs::read_to_string(root.path().join(model_checkpoint::store::JOURNAL_FILE))
        .expect("journal");
    let rows: Vec<Vec<&str>> = journal
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').collect())
        .collect();
    let events: Vec<(&str, String)> = rows
        .iter()
        .map(|r| (r[1], r[6].rsplit('/').next().unwrap_or("").to_owned()))
        .collect();
    let saved: Vec<String> = events
        .iter()
        .filter(|(e, _)| *e == "saved")
        .map(|(_, p)| p.clone())
        .collect();
    let mut deleted: Vec<String> = events
        .iter()
        .filter(|(e, _)| *e == "deleted")
        .map(|(_, p)| p.clone())
        .collect();
    // One row per save (rank 0's, not one per rank), one per folder deleted.
    assert_eq!(
        saved,
        (1..=5).map(|e| format!("epoch_{e}")).collect::<Vec<_>>(),
        "{journal}"
    );
    let mut gone: Vec<String> = (1..=5)
        .map(|e| format!("epoch_{e}"))
        .filter(|name| {
            ShardedCheckpoint::open(
                &LocalFolder::default(),
                &Name::from(format!("{dir}/{name}")),
            )
            .is_err()
        })
        .collect();
    deleted.sort();
    gone.sort();
    assert_eq!(deleted, gone, "{journal}");
    assert!(
        !deleted.is_empty(),
        "keep_last(2) deleted folders: {journal}"
    );
    assert!(rows.iter().all(|r| r[9] == "5eed"), "{journal}");
}

#[test]
fn sharded_retention_deletes_only_the_runs_parts_and_removes_emptied_folders() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().to_string_lossy().into_owned();
    // A user's notes in a folder the run will save into and later retire, and in `last/`,
    // and a checkpoint of the user's own in `last/`.
    for folder in ["epoch_1", "last"] {
        std::fs::create_dir_all(root.path().join(folder)).expect("folder");
        std::fs::write(root.path().join(folder).join("notes.txt"), "mine").expect("notes");
    }
    let mine = root.path().join("last/my-backup.safetensors");
    model_checkpoint::store::save(
        &mine,
        model_checkpoint::store::Kind::Weights,
        &[model_checkpoint::NamedTensor::new(
            "w",
            model_checkpoint::HostTensor::from_f32(vec![1], &[1.0]),
        )],
        &Default::default(),
        &model_checkpoint::store::SaveOptions::default(),
    )
    .expect("a user's checkpoint");
    let mine_before = std::fs::read(&mine).expect("mine");
    // keep_last(2), as `train_with` sets it.
    two_ranks_as_threads(&format!("{dir}/epoch_{{epoch}}"), 5, &|cb| {
        cb.save_last(true)
    });
    for folder in ["epoch_1", "last"] {
        assert_eq!(
            std::fs::read_to_string(root.path().join(folder).join("notes.txt")).ok(),
            Some("mine".to_owned()),
            "{folder}/notes.txt"
        );
    }
    assert_eq!(
        std::fs::read(&mine).ok(),
        Some(mine_before),
        "last/my-backup"
    );
    // epoch_1's shards and index went; the notes stay, and so does their folder.
    let left: Vec<String> = std::fs::read_dir(root.path().join("epoch_1"))
        .expect("epoch_1")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["notes.txt"]);
    // Folders retention emptied are gone.
    for gone in ["epoch_2", "epoch_3"] {
        assert!(!root.path().join(gone).exists(), "{gone} left behind");
    }
    for kept in ["epoch_4", "epoch_5", "last"] {
        ShardedCheckpoint::open(
            &LocalFolder::default(),
            &Name::from(format!("{dir}/{kept}")),
        )
        .unwrap_or_else(|e| panic!("{kept}: {e}"));
    }
}

/// The settings that make a child rank save in the background.
fn background() -> Vec<(&'static str, String)> {
    vec![("CKPT_TRAIN_BACKGROUND", "1".to_owned())]
}

#[test]
fn background_sharded_saves_are_the_synchronous_ones() {
    let root = tempfile::tempdir().expect("tempdir");
    let at = |name: &str| root.path().join(name).to_string_lossy().into_owned();
    for world in [2usize, 4] {
        let (sync, straight, resumed) = (
            at(&format!("sync-{world}")),
            at(&format!("bg-{world}")),
            at(&format!("bg-resumed-{world}")),
        );
        run(&sync, world, 4, false);
        let bg = |dir: &str, epochs, resume| {
            assert!(
                sharded_model::run_ranks(
                    "sharded_training_child",
                    &background(),
                    dir,
                    world,
                    epochs,
                    resume
                ),
                "a background rank failed ({world} ranks)"
            );
        };
        bg(&straight, 4, false);
        bg(&resumed, 2, false);
        bg(&resumed, 4, true);
        let expected = contents(&format!("{sync}/step-004"));
        assert_eq!(expected.len(), 5 + world);
        for dir in [&straight, &resumed] {
            let got = contents(&format!("{dir}/step-004"));
            assert_eq!(got.len(), expected.len());
            for ((name, x), (_, y)) in expected.iter().zip(&got) {
                assert!(x == y, "{name} differs in {dir} ({world} ranks)");
            }
        }
        // Retention ran on rank 0 once each save was committed: the last two are left (a
        // resumed run leaves the folders from before its resume).
        {
            let dir = &straight;
            let left: Vec<String> = (1..=4)
                .map(|e| format!("{dir}/step-{e:03}"))
                .filter(|d| {
                    std::path::Path::new(d)
                        .join("model.safetensors.index.json")
                        .exists()
                })
                .collect();
            assert_eq!(left, [format!("{dir}/step-003"), format!("{dir}/step-004")]);
        }
    }
}

#[test]
fn a_background_shard_that_fails_fails_every_rank() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("failing").to_string_lossy().into_owned();
    // Rank 1's shard of the second save cannot be written: a folder holds its name.
    let blocked = std::path::Path::new(&dir)
        .join("step-002")
        .join(model_checkpoint::sharded::shard_file(1, 2));
    std::fs::create_dir_all(&blocked).expect("obstacle");
    let mut env = background();
    env.push(("CKPT_TRAIN_COMMIT_TIMEOUT_MS", "1500".to_owned()));
    let each = sharded_model::run_ranks_each("sharded_training_child", &env, &dir, 2, 4, false);
    assert_eq!(each, [false, false], "both ranks must fail");
    let index = |e: u32| {
        std::path::Path::new(&dir)
            .join(format!("step-{e:03}"))
            .join("model.safetensors.index.json")
            .exists()
    };
    assert!(index(1), "the first save committed");
    assert!(!index(2), "no index over a missing shard");
    assert!(blocked.is_dir(), "the obstacle is left alone");
    // The run resumes from the last committed save once the obstacle is gone.
    std::fs::remove_dir(&blocked).expect("remove obstacle");
    let resumed =
        sharded_model::run_ranks("sharded_training_child", &background(), &dir, 2, 4, true);
    assert!(resumed, "resume after the failure");
    let straight = root.path().join("straight").to_string_lossy().into_owned();
    run(&straight, 2, 4, false);
    assert!(contents(&format!("{straight}/step-004")) == contents(&format!("{dir}/step-004")));
}

#[test]
fn sigkill_during_background_sharded_saves_leaves_only_whole_checkpoints() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("killed").to_string_lossy().into_owned();
    let kills: u64 = std::env::var("CKPT_SHARD_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(12);
    let epochs = 40;
    // How long an uninterrupted run takes here, to spread the kills over it.
    let t = std::time::Instant::now();
    let straight = root.path().join("straight").to_string_lossy().into_owned();
    assert!(sharded_model::run_ranks(
        "sharded_training_child",
        &background(),
        &straight,
        2,
        epochs,
        false
    ));
    let span = t.elapsed().as_millis().max(20) as u64;
    let mut seed = 0x5eed_u64;
    let mut committed_after_kills = 0;
    for kill in 0..kills {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = (seed >> 33) % span;
        let resume = model_checkpoint::sharded::latest_sharded(
            &model_checkpoint::store::LocalFolder::default(),
            &Name::from(&dir),
        )
        .is_ok();
        let mut children = sharded_model::spawn_ranks(
            "sharded_training_child",
            &background(),
            &dir,
            2,
            epochs,
            resume,
        );
        std::thread::sleep(std::time::Duration::from_millis(delay));
        for child in &mut children {
            let _ = child.kill();
        }
        for mut child in children {
            let _ = child.wait();
        }
        // Every folder with an index is a whole checkpoint: every tensor reads and verifies.
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let folder = entry.path();
            if folder.join("model.safetensors.index.json").exists() {
                let got = contents(&folder.to_string_lossy());
                assert_eq!(got.len(), 7, "kill {kill}: {} incomplete", folder.display());
                committed_after_kills += 1;
            }
        }
    }
    // Then the run goes to its end, and ends where the uninterrupted one did.
    let resume = model_checkpoint::sharded::latest_sharded(
        &model_checkpoint::store::LocalFolder::default(),
        &Name::from(&dir),
    )
    .is_ok();
    assert!(sharded_model::run_ranks(
        "sharded_training_child",
        &background(),
        &dir,
        2,
        epochs,
        resume
    ));
    let last = format!("step-{epochs:03}");
    assert!(
        contents(&format!("{straight}/{last}")) == contents(&format!("{dir}/{last}")),
        "the killed and resumed run differs from the straight one"
    );
    assert!(
        committed_after_kills > 0,
        "no kill left a committed checkpoint to check"
    );
    println!("{kills} kills over {span} ms: {committed_after_kills} committed checkpoints seen, all whole");
}

#[test]
fn after_a_background_sharded_save_rank_0s_journal_last_and_deletes_happen_on_the_writer() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().to_string_lossy().into_owned();
    let template = format!("{dir}/epoch_{{epoch}}");
    let storage = Arc::new(thread_log::ThreadLog::default());
    let barrier: Arc<dyn model_checkpoint::sharded::Barrier> =
        Arc::new(sharded_model::Threads(std::sync::Barrier::new(2)));
    std::thread::scope(|scope| {
        for rank in 0..2 {
            let (barrier, storage, template) = (barrier.clone(), storage.clone(), &template);
            std::thread::Builder::new()
                .name(format!("training rank {rank}"))
                .spawn_scoped(scope, move || {
                    let settings = sharded_model::Settings {
                        storage,
                        template,
                        ranks: Ranks::new(rank, 2).expect("ranks"),
                        run_id: "5eed",
                        barrier: Some(barrier),
                    };
                    // keep_last(2), as `train_with` sets it.
                    sharded_model::train_with(settings, 5, false, &|cb| {
                        cb.background(true).journal(true).save_last(true)
                    })
                    .expect("train");
                })
                .expect("spawn");
        }
    });
    let ops = storage.take();
    let changes = ["create", "put", "delete", "copy", "rmdir"];
    let on_training: Vec<_> = ops
        .iter()
        .filter(|(thread, op, _)| thread.starts_with("training") && changes.contains(op))
        .collect();
    assert!(
        on_training.is_empty(),
        "storage changed on a training thread: {on_training:#?}"
    );
    // (A sharded save leaves no marker: no `put`.)
    for change in ["create", "delete", "copy", "rmdir"] {
        assert!(
            ops.iter()
                .any(|(thread, op, _)| *op == change && thread == "checkpoint-writer"),
            "no {change} on a writer thread"
        );
    }
    // What it did is what a synchronous run does: three folders retired, the journal's
    // rows, `last` as the newest.
    let journal = std::fs::read_to_string(root.path().join(model_checkpoint::store::JOURNAL_FILE))
        .expect("journal");
    assert_eq!(journal.matches(",saved,").count(), 5, "{journal}");
    assert_eq!(journal.matches(",deleted,").count(), 3, "{journal}");
    for name in ["epoch_4", "epoch_5", "last"] {
        ShardedCheckpoint::open(
            &LocalFolder::default(),
            &Name::from(format!("{dir}/{name}")),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert_eq!(
        contents(&format!("{dir}/last")),
        contents(&format!("{dir}/epoch_5"))
    );
    for gone in ["epoch_1", "epoch_2", "epoch_3"] {
        let left: Vec<_> = std::fs::read_dir(root.path().join(gone))
            .map(|d| d.map(|e| e.expect("entry").file_name()).collect())
            .unwrap_or_default();
        assert!(!root.path().join(gone).exists(), "{gone} retired: {left:?}");
    }
}
