//! `ckpt` on sharded checkpoints: `ls` shows each as one row (and a folder of shards without
//! its index as an interrupted save), `verify` checks every shard, `show` prints the index,
//! `consolidate` writes one plain file.

mod common;

use model_checkpoint::store::Name;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{ckpt, text};
use model_checkpoint::sharded::{self, CommitOptions, Ranks, ShardTensor, Slice};
use model_checkpoint::store::{CheckpointFile, Kind, LocalFolder, Verify};
use model_checkpoint::{HostTensor, NamedTensor, Placement};

/// A 2-rank checkpoint of a [4, 3] tensor sliced by rows and a replicated [3] one, saved
/// in-process (the multi-process tests are in model-checkpoint/tests/sharded.rs).
fn save(dir: &str, epoch: u64, commit: bool) {
    save_with(dir, epoch, commit, false);
}

/// [`save`], with optimizer state (`__training__/` tensors) when `training` is set: a
/// sliced moment of `w` and a replicated step count.
fn save_with(dir: &str, epoch: u64, commit: bool, training: bool) {
    let storage = LocalFolder::default();
    let global: Vec<f32> = (0..12).map(|i| i as f32 + epoch as f32).collect();
    for rank in 0..2 {
        let rows = &global[rank * 6..rank * 6 + 6];
        let mut tensors = vec![ShardTensor {
            tensor: NamedTensor::new("w", HostTensor::from_f32(vec![2, 3], rows)),
            placement: Placement::Sliced(Slice {
                global_shape: vec![4, 3],
                offsets: vec![rank * 2, 0],
            }),
        }];
        if rank == 0 {
            tensors.push(ShardTensor {
                tensor: NamedTensor::new("b", HostTensor::from_f32(vec![3], &[1.0, 2.0, 3.0])),
                placement: Placement::Replicated,
            });
        }
        if training {
            tensors.push(ShardTensor {
                tensor: NamedTensor::new(
                    "__training__/optimizer/w.m",
                    HostTensor::from_f32(vec![2, 3], rows),
                ),
                placement: Placement::Sliced(Slice {
                    global_shape: vec![4, 3],
                    offsets: vec![rank * 2, 0],
                }),
            });
            if rank == 0 {
                tensors.push(ShardTensor {
                    tensor: NamedTensor::new(
                        "__training__/optimizer/step",
                        HostTensor::from_f32(vec![1], &[7.0]),
                    ),
                    placement: Placement::Replicated,
                });
            }
        }
        let ranks = Ranks::new(rank, 2).expect("ranks");
        sharded::save_shard(
            &storage,
            &Name::from(dir),
            ranks,
            "s",
            Kind::Weights,
            tensors,
            &BTreeMap::new(),
        )
        .expect("shard");
    }
    if commit {
        let meta = BTreeMap::from([("epoch".to_owned(), epoch.to_string())]);
        sharded::commit(
            &storage,
            &Name::from(dir),
            2,
            "s",
            &meta,
            CommitOptions::default(),
        )
        .expect("commit");
    }
}

#[test]
fn ls_verify_show_and_consolidate_understand_sharded_checkpoints() {
    let root = tempfile::tempdir().expect("tempdir");
    let d = root.path();
    let ck = d.join("ck");
    save(&ck.join("step-1").to_string_lossy(), 1, true);
    save(&ck.join("step-2").to_string_lossy(), 2, false);

    let ls = ckpt(d, &["ls", "ck"]);
    assert_eq!(ls.status.code(), Some(0), "{}", text(&ls.stderr));
    let listing = text(&ls.stdout);
    let row = |name: &str| {
        listing
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not in {listing}"))
            .to_owned()
    };
    assert!(
        row("step-1").contains("sharded (2 ranks)") && row("step-1").ends_with("ok"),
        "{listing}"
    );
    assert!(row("step-2").contains("interrupted save"), "{listing}");

    // The report shows the committed sharded checkpoint, and the interrupted save as damaged.
    let report = ckpt(d, &["report", "ck", "-o", "report.html"]);
    assert_eq!(report.status.code(), Some(0), "{}", text(&report.stderr));
    let page = std::fs::read_to_string(d.join("report.html")).expect("page");
    let row = |name: &str| {
        let table = &page[page.find("id=\"checkpoints\"").expect("table")..];
        table
            .split("<tr ")
            .find(|r| r.contains(name))
            .unwrap_or_else(|| panic!("{name} not in {table}"))
            .to_owned()
    };
    assert!(
        row("step-1").contains("b-kept") && row("step-1").contains("sharded"),
        "{}",
        row("step-1")
    );
    assert!(
        row("step-2").contains("b-damaged") && row("step-2").contains("interrupted save"),
        "{}",
        row("step-2")
    );

    // The report never writes into a checkpoint it reads.
    let before = snapshot(&ck);
    for target in [
        "ck/step-1/report.html",
        "ck/step-1/model.safetensors.index.json",
    ] {
        let out = ckpt(d, &["report", "ck", "-o", target]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{target}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("which this report reads"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(snapshot(&ck), before);

    let verify = ckpt(d, &["verify", "ck/step-1"]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
    // Shards without their index: not a checkpoint, whatever each shard says.
    let verify = ckpt(d, &["verify", "ck/step-2"]);
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify.stdout));
    assert!(
        text(&verify.stdout).contains("interrupted sharded save"),
        "{}",
        text(&verify.stdout)
    );
    let show = ckpt(d, &["show", "ck/step-1"]);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
    assert!(
        text(&show.stdout).contains("world size: 2"),
        "{}",
        text(&show.stdout)
    );

    let out = ckpt(d, &["consolidate", "ck/step-1", "all.safetensors"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let file = CheckpointFile::open(&d.join("all.safetensors"), Verify::Full).expect("verifies");
    let w = file.read("w").expect("w");
    let expected: Vec<u8> = (0..12)
        .flat_map(|i| (i as f32 + 1.0).to_le_bytes())
        .collect();
    assert_eq!(w, expected);
    assert_eq!(file.tensor("w").expect("w").shape, &[4, 3]);

    // A flipped byte in a shard's data: verify finds it (exit 1), consolidate refuses (2).
    let shard = ck.join("step-1").join(sharded::shard_file(1, 2));
    let mut bytes = std::fs::read(&shard).expect("read");
    let n = bytes.len();
    bytes[n - 2] ^= 0x40;
    std::fs::write(&shard, bytes).expect("write");
    let verify = ckpt(d, &["verify", "ck/step-1"]);
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify.stdout));
    assert!(
        text(&verify.stdout).starts_with("BAD"),
        "{}",
        text(&verify.stdout)
    );
    let out = ckpt(d, &["consolidate", "ck/step-1", "again.safetensors"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!d.join("again.safetensors").exists());
}

#[test]
fn forged_indexes_and_replaced_shards_are_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let d = root.path();
    let refused = |dir: &str, expected: &str| {
        let out = ckpt(d, &["consolidate", dir, "out.safetensors"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{dir}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(expected), "{dir}: {err} lacks {expected:?}");
        assert!(!d.join("out.safetensors").exists());
    };
    let forge = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let dir = d.join(name);
        save(&dir.to_string_lossy(), 1, true);
        let index = dir.join(sharded::INDEX_FILE);
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&index).expect("index")).expect("json");
        edit(&mut json);
        std::fs::write(&index, serde_json::to_vec(&json).expect("json")).expect("write");
    };
    forge("overlap", &|j| {
        j["model_checkpoint"]["tensors"]["w"]["pieces"][1]["offsets"] = serde_json::json!([1, 0]);
    });
    refused("overlap", "two pieces overlap");
    forge("gap", &|j| {
        let pieces = j["model_checkpoint"]["tensors"]["w"]["pieces"]
            .as_array_mut()
            .expect("pieces");
        pieces.pop();
    });
    refused("gap", "the pieces cover 2 of 4 along dimension 0");
    forge("renamed", &|j| {
        j["model_checkpoint"]["shards"][1]["file"] = serde_json::json!("../../etc/passwd");
    });
    refused("renamed", "shard 1 is named");
    forge("version", &|j| {
        j["model_checkpoint"]["format_version"] = serde_json::json!(99);
    });
    refused("version", "sharded format version 99");
    forge("world", &|j| {
        j["model_checkpoint"]["world_size"] = serde_json::json!(1u64 << 40);
    });
    refused("world", "shards for a world size of");
    // An index too large to be one.
    let big = d.join("big");
    save(&big.to_string_lossy(), 1, true);
    let file = std::fs::File::options()
        .append(true)
        .open(big.join(sharded::INDEX_FILE))
        .expect("index");
    file.set_len(65 << 20).expect("grow");
    refused("big", "more than the 67108864 an index may have");
    // A shard replaced after the commit (another version of the same rank's shard).
    let replaced = d.join("replaced");
    save(&replaced.to_string_lossy(), 1, true);
    let other = d.join("other");
    save(&other.to_string_lossy(), 2, false);
    std::fs::copy(
        other.join(sharded::shard_file(1, 2)),
        replaced.join(sharded::shard_file(1, 2)),
    )
    .expect("replace");
    refused("replaced", "it is not the shard the index committed");
    // ls shows each as not verified, and the listing still works.
    let ls = ckpt(d, &["ls", "."]);
    assert_eq!(ls.status.code(), Some(0), "{}", text(&ls.stderr));
    let listing = text(&ls.stdout);
    for name in [
        "overlap", "gap", "renamed", "version", "world", "big", "replaced", "other",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains("NO:")),
            "{name}: {listing}"
        );
    }
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}

#[test]
fn consolidate_never_writes_over_its_inputs() {
    let root = tempfile::tempdir().expect("tempdir");
    let d = root.path();
    save(&d.join("ck/step-1").to_string_lossy(), 1, true);
    std::os::unix::fs::symlink(
        d.join("ck/step-1").join(sharded::shard_file(0, 2)),
        d.join("link.safetensors"),
    )
    .expect("link");
    let before = snapshot(&d.join("ck"));
    let absolute_index = d.join("ck/step-1").join(sharded::INDEX_FILE);
    let absolute_index = absolute_index.to_string_lossy();
    let shard0 = format!("ck/step-1/{}", sharded::shard_file(0, 2));
    let shard1 = format!("./ck/step-1/../step-1/{}", sharded::shard_file(1, 2));
    let index = format!("ck//step-1/{}", sharded::INDEX_FILE);
    for (out_name, what) in [
        (
            index.as_str(),
            "the index of the sharded checkpoint it reads",
        ),
        (
            absolute_index.as_ref(),
            "the index of the sharded checkpoint it reads",
        ),
        (
            shard0.as_str(),
            "a shard of the sharded checkpoint it reads",
        ),
        (
            shard1.as_str(),
            "a shard of the sharded checkpoint it reads",
        ),
        // A link to a shard is the shard.
        (
            "link.safetensors",
            "a shard of the sharded checkpoint it reads",
        ),
        ("ck/step-1", "the sharded checkpoint's folder itself"),
        ("ck/step-1/", "the sharded checkpoint's folder itself"),
        (
            "ck/step-1/all.safetensors",
            "inside the sharded checkpoint it reads",
        ),
    ] {
        let out = ckpt(d, &["consolidate", "ck/step-1", out_name]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{out_name}: {err}");
        assert_eq!(err.lines().count(), 1, "{out_name}: {err:?}");
        assert!(
            err.contains(&format!("refusing to write {out_name}: it is {what}")),
            "{out_name}: {err}"
        );
        assert_eq!(
            snapshot(&d.join("ck")),
            before,
            "{out_name} changed the checkpoint"
        );
        assert!(d.join("link.safetensors").is_symlink());
    }
    // The checkpoint still verifies, and consolidates elsewhere (again over its own
    // output, but never over a file consolidate did not write).
    let verify = ckpt(d, &["verify", "ck/step-1"]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
    for _ in 0..2 {
        let out = ckpt(d, &["consolidate", "ck/step-1", "all.safetensors"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    std::fs::write(d.join("mine.safetensors"), b"a user's file").expect("write");
    let out = ckpt(d, &["consolidate", "ck/step-1", "mine.safetensors"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(d.join("mine.safetensors")).expect("read"),
        b"a user's file"
    );
}

#[test]
fn consolidate_counts_only_the_tensors_it_writes() {
    let root = tempfile::tempdir().expect("tempdir");
    let d = root.path();
    save_with(&d.join("ck/step-1").to_string_lossy(), 1, true, true);
    let out = ckpt(d, &["consolidate", "ck/step-1", "all.safetensors"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let file = CheckpointFile::open(&d.join("all.safetensors"), Verify::Full).expect("verifies");
    let written: Vec<&str> = file.tensors().map(|t| t.name).collect();
    assert_eq!(
        written,
        ["b", "w"],
        "the training state stays in the shards"
    );
    let said = text(&out.stdout);
    assert!(
        said.starts_with("wrote all.safetensors (2 tensors from 2 shards; 2 training-state tensors left in the shards, "),
        "{said}"
    );
}
