//! The backend against object_store's in-memory store (the real server's tests are in
//! `tests/`): multipart uploads with the header last, conditional creates, listing, locks.

use model_checkpoint::store::Name;
use std::collections::BTreeMap;
use std::sync::Arc;

use model_checkpoint::store::{self, CheckpointFile, Commit, Kind, SaveOptions, Storage, Verify};
use model_checkpoint::{HostTensor, NamedTensor};
use object_store::memory::InMemory;

use super::ObjectStorage;

fn storage() -> ObjectStorage {
    let memory = Arc::new(InMemory::new());
    ObjectStorage::with_store(memory.clone(), memory, "s3://bucket")
        .expect("storage")
        .with_parts(5 << 20, 2)
}

fn tensors(values: usize, seed: f32) -> Vec<NamedTensor<'static>> {
    (0..3)
        .map(|i| {
            let data: Vec<f32> = (0..values).map(|v| seed + (v * 3 + i) as f32).collect();
            NamedTensor::new(format!("t{i}"), HostTensor::from_f32(vec![values], &data))
        })
        .collect()
}

fn save(
    s: &ObjectStorage,
    name: &str,
    values: usize,
    commit: Commit,
) -> Result<(), model_checkpoint::Error> {
    store::save_to(
        s,
        &Name::from(name),
        Kind::Weights,
        &tensors(values, 1.0),
        &BTreeMap::new(),
        &SaveOptions::default().commit(commit),
    )
    .map(|_| ())
}

#[test]
fn small_and_multipart_objects_round_trip_and_verify() {
    let s = storage();
    // 3 × 4 Mi f32 = 48 MiB: ten parts of 5 MiB, part 0 uploaded last.
    for (name, values) in [
        ("s3://bucket/run/small.safetensors", 1000),
        ("s3://bucket/run/big.safetensors", 4 << 20),
    ] {
        save(&s, name, values, Commit::Replace).expect("save");
        let file = CheckpointFile::open_in(&s, &Name::from(name), Verify::Full).expect("verifies");
        assert_eq!(file.tensors().count(), 3);
        let bytes = file.read("t2").expect("read");
        assert_eq!(bytes.len(), values * 4);
    }
    let listed = s.list(&Name::from("s3://bucket/run"), 0).expect("list");
    let names: Vec<_> = listed.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "s3://bucket/run/big.safetensors",
            "s3://bucket/run/small.safetensors"
        ]
    );
}

#[test]
fn a_dropped_upload_leaves_no_object() {
    let s = storage();
    let mut pending = s
        .create(
            &Name::from("s3://bucket/x.safetensors"),
            16,
            Commit::Replace,
        )
        .expect("create");
    std::io::Write::write_all(&mut pending, &vec![7u8; 12 << 20]).expect("write");
    drop(pending);
    assert!(!s
        .exists(&Name::from("s3://bucket/x.safetensors"))
        .expect("exists"));
    assert!(s
        .list(&Name::from("s3://bucket"), 5)
        .expect("list")
        .is_empty());
}

#[test]
fn create_new_never_replaces_small_or_large() {
    let s = storage();
    for values in [10, 2 << 20] {
        let name = format!("s3://bucket/v{values}.safetensors");
        save(&s, &name, values, Commit::CreateNew).expect("first");
        let err = save(&s, &name, values, Commit::CreateNew).expect_err("second");
        assert!(
            matches!(err, model_checkpoint::Error::AlreadyExists { .. }),
            "{err}"
        );
        save(&s, &name, values, Commit::Replace).expect("replace");
        // No staging object is left behind, listed or not.
        let all = s.list(&Name::from("s3://bucket"), 5).expect("list");
        assert_eq!(all.len(), 1 + usize::from(values != 10), "{all:?}");
    }
}

#[test]
fn the_lock_names_its_holder_and_goes_when_dropped() {
    let s = storage();
    let guard = s
        .lock(&Name::from("s3://bucket/run"))
        .expect("lock")
        .expect("held");
    // A second holder of this process shares it; the object stays until both let go.
    let shared = s
        .lock(&Name::from("s3://bucket/run"))
        .expect("shared")
        .expect("held");
    drop(shared);
    assert!(s
        .exists(&Name::from("s3://bucket/run/.ckpt.lock"))
        .expect("exists"));
    // Another process's lock refuses, naming its holder.
    let other = r#"{"host":"elsewhere","pid":4242,"since_unix":1700000000}"#;
    assert!(s
        .put_if_absent(
            &Name::from("s3://bucket/other/.ckpt.lock"),
            other.as_bytes()
        )
        .expect("plant"));
    let err = s
        .lock(&Name::from("s3://bucket/other"))
        .expect_err("another's");
    let text = err.to_string();
    assert!(text.contains("host elsewhere, process 4242"), "{text}");
    assert!(text.contains("ckpt unlock s3://bucket/other"), "{text}");
    drop(guard);
    assert!(!s
        .exists(&Name::from("s3://bucket/run/.ckpt.lock"))
        .expect("exists"));
    let again = s
        .lock(&Name::from("s3://bucket/run"))
        .expect("lock again")
        .expect("held");
    // Its holder, this process, is alive: breaking it needs force.
    let alive = s.break_lock("s3://bucket/run").expect_err("alive");
    assert!(
        alive.to_string().contains("is alive on this host"),
        "{alive}"
    );
    assert!(s
        .force_break_lock("s3://bucket/run")
        .expect("break")
        .is_some());
    drop(again);
    assert!(s.break_lock("s3://bucket/run").expect("none").is_none());
}

#[test]
fn a_lock_above_or_below_another_holders_is_refused() {
    let s = storage();
    // Another process's lock on the folder above, as a planted object.
    let other = r#"{"host":"elsewhere","pid":1,"since_unix":1}"#;
    assert!(s
        .put_if_absent(&Name::from("s3://bucket/run/.ckpt.lock"), other.as_bytes())
        .expect("plant"));
    let err = s
        .lock(&Name::from("s3://bucket/run/sub"))
        .expect_err("below a held folder");
    assert!(
        err.to_string()
            .contains("s3://bucket/run is locked by host elsewhere"),
        "{err}"
    );
    // The refused lock went with the refusal.
    assert!(!s
        .exists(&Name::from("s3://bucket/run/sub/.ckpt.lock"))
        .expect("exists"));
    s.force_break_lock("s3://bucket/run").expect("break");
    // And a folder below another holder's.
    assert!(s
        .put_if_absent(
            &Name::from("s3://bucket/run/sub/deeper/.ckpt.lock"),
            other.as_bytes()
        )
        .expect("plant"));
    let err = s
        .lock(&Name::from("s3://bucket/run"))
        .expect_err("above a held folder");
    assert!(
        err.to_string()
            .contains("s3://bucket/run/sub/deeper is locked"),
        "{err}"
    );
    // This process's own locks nest, as a local folder's do.
    s.force_break_lock("s3://bucket/run/sub/deeper")
        .expect("break");
    let outer = s
        .lock(&Name::from("s3://bucket/run"))
        .expect("outer")
        .expect("held");
    let inner = s
        .lock(&Name::from("s3://bucket/run/sub"))
        .expect("inner")
        .expect("held");
    drop((outer, inner));
    for lock in [
        "s3://bucket/run/.ckpt.lock",
        "s3://bucket/run/sub/.ckpt.lock",
    ] {
        assert!(
            !s.exists(&Name::from(lock)).expect("exists"),
            "{lock} stays"
        );
    }
}

#[test]
fn names_outside_the_bucket_are_refused() {
    let s = storage();
    assert!(s
        .create(&Name::from("s3://other/x"), 8, Commit::Replace)
        .is_err());
    assert!(s.open(&Name::from("s3://bucket/../x")).is_err());
    let run = Name::from("s3://bucket/run");
    assert!(!s.contains(&run, &Name::from("s3://bucket/run2/x")));
    assert!(s.contains(&run, &Name::from("s3://bucket/run/sub/x")));
    // A path spelled like a URL is a local path, never a key.
    assert!(!s.contains(&run, &Name::from("s3:/bucket/run/sub/x")));
}
