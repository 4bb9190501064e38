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

/// An in-memory store that counts the ranged reads made of it.
#[derive(Debug)]
struct CountingGets {
    inner: Arc<InMemory>,
    gets: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Display for CountingGets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CountingGets")
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for CountingGets {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures_util::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
    {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
    {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[test]
fn a_read_after_a_large_one_fetches_one_part_not_the_queue_it_skipped() {
    use std::sync::atomic::Ordering;
    // Multipart uploads go to the same memory, uncounted.
    let memory = Arc::new(InMemory::new());
    let counting = Arc::new(CountingGets {
        inner: memory.clone(),
        gets: Default::default(),
    });
    let s = ObjectStorage::with_store(counting.clone(), memory, "s3://bucket").expect("storage");
    // In file order: three tensors of 6 MiB read in order (the parts fetched ahead ramp up
    // as each 8 MiB boundary is crossed), one of 40 MiB (read as parts of its own, around
    // the queue), a small one after it, and more the reader never reaches.
    let mib = |n: usize| n << 18; // f32 values in n MiB
    let sizes = [
        ("a", mib(6)),
        ("b", mib(6)),
        ("c", mib(6)),
        ("d", mib(40)),
        ("e", mib(1)),
        ("f", mib(40)),
    ];
    let tensors: Vec<NamedTensor<'static>> = sizes
        .iter()
        .enumerate()
        .map(|(i, (name, n))| {
            let data: Vec<f32> = (0..*n).map(|v| (v * 5 + i) as f32).collect();
            NamedTensor::new(*name, HostTensor::from_f32(vec![*n], &data))
        })
        .collect();
    store::save_to(
        &s,
        &Name::from("s3://bucket/parts.safetensors"),
        Kind::Weights,
        &tensors,
        &BTreeMap::new(),
        &SaveOptions::default(),
    )
    .expect("save");
    let file = CheckpointFile::open_in(
        &s,
        &Name::from("s3://bucket/parts.safetensors"),
        Verify::HeaderOnly,
    )
    .expect("open");
    let order: Vec<String> = file.tensors().map(|t| t.name.to_owned()).collect();
    assert_eq!(order, ["a", "b", "c", "d", "e", "f"], "the file's order");
    let bytes_of = |t: &NamedTensor<'_>| {
        let mut out = Vec::new();
        t.data
            .write_to(&mut |piece| {
                out.extend_from_slice(piece);
                Ok(())
            })
            .expect("bytes");
        out
    };
    for t in &tensors[..4] {
        assert!(
            file.read(&t.name).expect("read") == bytes_of(t),
            "{}",
            t.name
        );
    }
    let before = counting.gets.load(Ordering::SeqCst);
    assert!(file.read("e").expect("e") == bytes_of(&tensors[4]));
    assert_eq!(
        counting.gets.load(Ordering::SeqCst) - before,
        1,
        "the small read after the large one is one request"
    );

    // A large tensor is fetched as many parts at once as may be in flight: d's 40 MiB as
    // eight requests of 5 MiB, not five of 8 MiB (read alone, nothing fetched ahead).
    let alone = CheckpointFile::open_in(
        &s,
        &Name::from("s3://bucket/parts.safetensors"),
        Verify::HeaderOnly,
    )
    .expect("open");
    let before = counting.gets.load(Ordering::SeqCst);
    assert!(alone.read("d").expect("d") == bytes_of(&tensors[3]));
    assert_eq!(
        counting.gets.load(Ordering::SeqCst) - before,
        crate::READ_PARTS_IN_FLIGHT,
        "a large tensor's parts"
    );
}

#[test]
fn an_endpoint_that_is_not_an_http_url_is_refused_by_name_before_any_request() {
    // object_store builds each request's URI from the endpoint and panics on one that does
    // not parse: refused here, with the setting named.
    for bad in [
        "not a url",
        "http://[::1",
        "ftp://host:21",
        "http://",
        "host:9000",
    ] {
        let err = ObjectStorage::from_env_with("s3://bucket/run", &[("AWS_ENDPOINT_URL", bad)])
            .expect_err(bad);
        let text = err.to_string();
        assert!(
            matches!(err, model_checkpoint::Error::BadLocation { .. })
                && text.contains("AWS_ENDPOINT_URL")
                && text.contains("not an http:// or https:// URL"),
            "{bad}: {text}"
        );
    }
    for good in [
        "http://127.0.0.1:1",
        "https://s3.example.com/",
        "http://[::1]:8333",
    ] {
        ObjectStorage::from_env_with("s3://bucket/run", &[("AWS_ENDPOINT_URL", good)])
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}
