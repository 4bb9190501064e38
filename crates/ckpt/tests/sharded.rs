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

    let verify = ckpt(d, &["verify", "ck/step-1"]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
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
