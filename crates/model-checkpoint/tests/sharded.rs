//! Sharded checkpoints saved by 2 and 4 real processes into a folder: loading into 1, 2 and
//! 4 processes' boxes, per-rank state, consolidation, Python reading the shards through the
//! index, racing coordinators, and SIGKILL at every stage of a save (30 kills).

mod sharded_cases;

use model_checkpoint::store::Name;
use std::collections::BTreeMap;
use std::process::Command;

use model_checkpoint::sharded::{self, CommitOptions, ShardedCheckpoint};
use model_checkpoint::store::{CheckpointFile, LocalFolder, Verify};
use sharded_cases::{check_loads, global, spawn, STAGES};

const CHILD: &str = "sharded_child";

#[test]
#[ignore = "helper: the sharded tests run it as a child process"]
fn sharded_child() {
    sharded_cases::child_main(&LocalFolder::default());
}

fn save(dir: &str, world: usize, seed: u64) {
    for mut child in spawn(CHILD, &[], world, dir, seed, None) {
        let status = child.wait().expect("wait");
        assert!(status.success(), "a rank failed saving {dir}");
    }
}

#[test]
fn two_and_four_processes_save_and_any_number_load() {
    let root = tempfile::tempdir().expect("tempdir");
    for world in [2, 4] {
        let dir = root.path().join(format!("w{world}"));
        let dir = dir.to_string_lossy();
        save(&dir, world, world as u64);
        check_loads(&LocalFolder::default(), &dir, world as u64);
        let checkpoint =
            ShardedCheckpoint::open(&LocalFolder::default(), &Name::from(dir.as_ref()))
                .expect("open");
        assert_eq!(checkpoint.world_size(), world);
        // Hugging Face's weight_map names every tensor.
        assert_eq!(
            checkpoint.index().weight_map.len(),
            global(0).len(),
            "{:?}",
            checkpoint.index().weight_map
        );
        // Consolidated into one plain file, holding every global tensor.
        let out = root.path().join(format!("w{world}.safetensors"));
        checkpoint
            .consolidate(&LocalFolder::default(), &Name::from(out.as_path()))
            .expect("consolidate");
        let file = CheckpointFile::open(&out, Verify::Full).expect("verifies");
        for (name, _, shape, bytes) in global(world as u64) {
            assert_eq!(file.read(&name).expect("tensor"), bytes, "{name}");
            assert_eq!(file.tensor(&name).expect("tensor").shape, shape.as_slice());
        }
    }
}

#[test]
fn an_index_that_lost_a_tensor_from_both_lists_does_not_open() {
    // Every shard it still names is whole; the shards' headers, pinned by the index's
    // digests, say which pieces they hold.
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("w2");
    save(&dir.to_string_lossy(), 2, 5);
    let index_path = dir.join(sharded::INDEX_FILE);
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).expect("index")).expect("json");
    let dropped = index["weight_map"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .expect("a tensor");
    for list in ["/weight_map", "/model_checkpoint/tensors"] {
        index
            .pointer_mut(list)
            .and_then(serde_json::Value::as_object_mut)
            .expect("a map")
            .remove(&dropped)
            .expect("listed");
    }
    std::fs::write(&index_path, serde_json::to_vec(&index).expect("json")).expect("write");
    let Err(err) = ShardedCheckpoint::open(&LocalFolder::default(), &Name::from(dir.as_path()))
    else {
        panic!("an index that lost {dropped} opened");
    };
    assert!(
        err.to_string().contains(&format!(
            "holds a piece of tensor {dropped:?}, which the index does not list there"
        )),
        "{err}"
    );
}

#[test]
fn of_two_racing_coordinators_one_publishes() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("race").to_string_lossy().into_owned();
    save(&dir, 2, 7);
    // The children's coordinator already published; two more race to publish again.
    let storage = LocalFolder::default();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    sharded::commit(
                        &storage,
                        &Name::from(&dir),
                        2,
                        "save-7",
                        &BTreeMap::new(),
                        CommitOptions::default(),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for r in results {
        assert!(
            matches!(r, Err(model_checkpoint::Error::AlreadyExists { .. })),
            "{r:?}"
        );
    }
    // A shard of another save is never gathered.
    let err = sharded::gather(
        &storage,
        &Name::from(&dir),
        2,
        "another-save",
        &BTreeMap::new(),
        CommitOptions {
            timeout: std::time::Duration::from_millis(200),
            ..CommitOptions::default()
        },
    )
    .expect_err("another save");
    assert!(err.to_string().contains("another save"), "{err}");
}

#[test]
fn sigkill_at_every_stage_never_commits_a_bad_index() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_name = root.path().to_string_lossy().into_owned();
    let storage = LocalFolder::default();
    save(&format!("{root_name}/step-000"), 2, 0);
    let kills: usize = std::env::var("CKPT_SHARD_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(30);
    sharded_cases::kill_at_every_stage(CHILD, &[], &storage, &root_name, kills);
    println!("{kills} kills at {STAGES:?}: no bad index, latest always complete");
}

#[test]
fn python_reassembles_every_global_tensor_from_the_index() {
    let python = std::env::var("CKPT_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import safetensors, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{python} lacks safetensors/numpy in CI"
        );
        println!("skipped: {python} cannot import safetensors and numpy");
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("ck").to_string_lossy().into_owned();
    save(&dir, 4, 11);
    // Only the index and safetensors: each piece put where the index says.
    let script = r#"
import json, sys
import numpy as np
from safetensors.numpy import load_file
d = sys.argv[1]
index = json.load(open(f"{d}/model.safetensors.index.json"))
files = {}
out = {}
for name, t in index["model_checkpoint"]["tensors"].items():
    whole = None
    for p in t["pieces"]:
        f = files.setdefault(p["file"], load_file(f"{d}/{p['file']}"))
        piece = f[name]
        if whole is None:
            whole = np.zeros(t["global_shape"], dtype=piece.dtype)
        box = tuple(slice(o, o + n) for o, n in zip(p["offsets"], p["shape"]))
        whole[box] = piece
    out[name] = whole.tobytes().hex()
print(json.dumps(out))
"#;
    let run = Command::new(&python)
        .args(["-c", script, &dir])
        .output()
        .expect("python");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let seen: BTreeMap<String, String> = serde_json::from_slice(&run.stdout).expect("json");
    for (name, _, _, bytes) in global(11) {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(seen.get(&name), Some(&hex), "{name}");
    }
}

#[test]
fn latest_takes_the_newest_checkpoint_that_opens_skipping_damaged_ones() {
    let root = tempfile::tempdir().expect("tempdir");
    for name in ["a", "b", "c"] {
        save(&root.path().join(name).to_string_lossy(), 2, 3);
    }
    let latest = || {
        sharded::latest_sharded(
            &LocalFolder::default(),
            &Name::from(root.path().to_string_lossy().as_ref()),
        )
        .map(|dir| dir.file_name().unwrap_or_default().to_owned())
    };
    // The same position in training in each: the last by name is the newest.
    assert_eq!(latest().expect("latest"), "c");
    // The newest has lost a shard, and a newer folder's index is not one: both skipped
    // (the indexes are read first, each checkpoint opened only when its turn comes).
    let c = root.path().join("c");
    let shard = std::fs::read_dir(&c)
        .expect("list")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .expect("a shard");
    std::fs::remove_file(shard).expect("remove");
    std::fs::create_dir(root.path().join("d")).expect("mkdir");
    std::fs::write(
        root.path().join("d").join("model.safetensors.index.json"),
        "not an index",
    )
    .expect("write");
    assert_eq!(latest().expect("latest"), "b");
}
