//! `ckpt` on sharded checkpoints: `ls` shows each as one row (and a folder of shards without
//! its index as an interrupted save), `verify` checks every shard, `show` prints the index,
//! `consolidate` writes one plain file.

mod common;

use std::collections::BTreeMap;

use common::{ckpt, text};
use model_checkpoint::sharded::{self, CommitOptions, Ranks, ShardTensor, Slice};
use model_checkpoint::store::{CheckpointFile, Kind, LocalFolder, Verify};
use model_checkpoint::{HostTensor, NamedTensor, Placement};

/// A 2-rank checkpoint of a [4, 3] tensor sliced by rows and a replicated [3] one, saved
/// in-process (the multi-process tests are in model-checkpoint/tests/sharded.rs).
fn save(dir: &str, epoch: u64, commit: bool) {
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
        let ranks = Ranks::new(rank, 2).expect("ranks");
        sharded::save_shard(
            &storage,
            dir,
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
        sharded::commit(&storage, dir, 2, "s", &meta, CommitOptions::default()).expect("commit");
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
                .any(|l| l.starts_with(&format!("./{name} ")) && l.contains("NO:")),
            "{name}: {listing}"
        );
    }
}
