//! The S3 backend against a real server (SeaweedFS on 127.0.0.1, see `seaweed/`):
//! `ModelCheckpoint` with retention, `last`, versions and the lock; exact resume from
//! `latest`; damage; racing writers; wrong credentials; Python reading a downloaded object;
//! and SIGKILL during multipart saves.

mod seaweed;

#[path = "../../model-checkpoint-candle/tests/python/mod.rs"]
mod python;

use model_checkpoint::store::Name;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use model_checkpoint::restore::restore_latest_in;
use model_checkpoint::store::{
    self, latest_full_in, CheckpointFile, Commit, Kind, SaveOptions, Storage, Verify,
};
use model_checkpoint::TensorSource;
use model_checkpoint::{
    Callback, Checkpointable, Context, Dtype, Error, HostTensor, Logs, ModelCheckpoint,
    NamedTensor, TrainingState,
};
use model_checkpoint_object_store::ObjectStorage;
use seaweed::Seaweed;

/// A model whose weights and training state are its epoch counter, with `size` floats of
/// weights (large ones make multipart uploads).
struct Toy {
    epoch: Cell<u32>,
    size: usize,
}

impl Checkpointable for Toy {
    fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> {
        let values: Vec<f32> = (0..self.size)
            .map(|i| self.epoch.get() as f32 + i as f32 * 1e-3)
            .collect();
        Ok(vec![NamedTensor::new(
            "w",
            HostTensor::from_f32(vec![self.size], &values),
        )])
    }
    fn training_state(&self) -> Result<TrainingState<'_>, Error> {
        let mut state = TrainingState::default();
        state.document.loop_state = Some(model_checkpoint::store::LoopState {
            epoch: u64::from(self.epoch.get()),
            ..Default::default()
        });
        Ok(state)
    }
    fn restore_weights(&mut self, stored: &dyn TensorSource) -> Result<(), Error> {
        stored.read("w", Dtype::F32, &[self.size]).map(|_| ())
    }
    fn restore_training_state(
        &mut self,
        _: &dyn TensorSource,
        document: &model_checkpoint::store::TrainingDocument,
    ) -> Result<(), Error> {
        self.epoch
            .set(document.loop_state.as_ref().map_or(0, |l| l.epoch) as u32);
        Ok(())
    }
}

const LOSSES: [f64; 6] = [0.9, 0.5, 0.7, 0.4, 0.6, 0.8];

fn epochs(cb: &mut ModelCheckpoint, toy: &Toy, range: std::ops::Range<usize>) {
    for e in range {
        toy.epoch.set(e as u32 + 1);
        let mut ctx = Context::new(toy);
        cb.on_epoch_begin(e, &Logs::new(), &mut ctx).expect("begin");
        cb.on_epoch_end(e, &Logs::from([("val_loss", LOSSES[e])]), &mut ctx)
            .expect("end");
    }
}

/// The checkpoints under `prefix`, without the run's markers.
fn checkpoints(storage: &ObjectStorage, prefix: &str) -> Vec<String> {
    storage
        .list(&Name::from(prefix), 0)
        .expect("list")
        .into_iter()
        .map(|m| m.name.to_string())
        .filter(|n| !n.contains("/.ckpt-run."))
        .collect()
}

fn read_all(storage: &ObjectStorage, name: &str) -> Vec<u8> {
    let reader = storage.open(&Name::from(name)).expect("open");
    let mut bytes = vec![0; reader.len() as usize];
    reader.read_exact_at(&mut bytes, 0).expect("read");
    bytes
}

#[test]
fn model_checkpoint_on_s3_keeps_retention_last_and_resumes_exactly() {
    let Some(server) = Seaweed::start("model_checkpoint_on_s3") else {
        return;
    };
    let storage = Arc::new(server.storage());
    // 2 Mi floats: 8 MiB per file, a multipart upload of two 5 MiB parts, header last.
    let storage = Arc::new(
        Arc::try_unwrap(storage)
            .expect("unique")
            .with_parts(5 << 20, 2),
    );
    let callback = |run: &str| {
        ModelCheckpoint::new(server.url(&format!(
            "{run}/e{{epoch:02d}}-{{val_loss:.2f}}.safetensors"
        )))
        .storage(storage.clone())
        .keep_last(2)
        .keep_best(1)
        .save_last(true)
        .with_run_id("5eed")
    };
    let toy = Toy {
        epoch: Cell::new(0),
        size: 2 << 20,
    };
    let mut cb = callback("straight");
    cb.on_train_begin(&Logs::new(), &mut Context::new(&toy))
        .expect("begin");
    // The folder's lock is a conditional create: a trainer of another process is refused,
    // naming it (a second callback of this process shares the lock, as on a local folder).
    let rival_lock = r#"{"host":"elsewhere","pid":4242,"since_unix":1700000000}"#;
    assert!(storage
        .put_if_absent(
            &Name::from(&server.url("rival/.ckpt.lock")),
            rival_lock.as_bytes()
        )
        .expect("plant"));
    let mut rival = callback("rival");
    let err = rival
        .on_train_begin(&Logs::new(), &mut Context::new(&toy))
        .expect_err("locked");
    assert!(matches!(err, Error::LockedBy { .. }), "{err}");
    assert!(
        err.to_string().contains("host elsewhere, process 4242"),
        "{err}"
    );
    let mut twin = callback("straight");
    twin.on_train_begin(&Logs::new(), &mut Context::new(&toy))
        .expect("this process's own folder");
    drop(twin);
    epochs(&mut cb, &toy, 0..6);
    cb.on_train_end(&Logs::new(), &mut Context::new(&toy))
        .expect("end");
    let url = |name: &str| server.url(&format!("straight/{name}"));
    assert_eq!(
        checkpoints(&storage, &server.url("straight")),
        [
            url("e04-0.40.safetensors"),
            url("e05-0.60.safetensors"),
            url("e06-0.80.safetensors"),
            url("last.safetensors"),
        ]
    );
    assert_eq!(
        read_all(&storage, &url("last.safetensors")),
        read_all(&storage, &url("e06-0.80.safetensors"))
    );
    // The lock went with the end of training.
    assert!(storage
        .break_lock(&server.url("straight"))
        .expect("lock")
        .is_none());

    // The same run again under the same prefix (a checkpoint names its template), stopped
    // after three epochs; a new callback resumes from `latest` in the bucket.
    let straight: Vec<(String, Vec<u8>)> = checkpoints(&storage, &server.url("straight"))
        .into_iter()
        .map(|name| {
            let bytes = read_all(&storage, &name);
            (name, bytes)
        })
        .collect();
    for object in storage
        .list(&Name::from(&server.url("straight")), 0)
        .expect("list")
    {
        storage.delete(&object.name).expect("delete");
    }
    {
        let toy = Toy {
            epoch: Cell::new(0),
            size: 2 << 20,
        };
        let mut cb = callback("straight");
        epochs(&mut cb, &toy, 0..3);
        cb.on_train_end(&Logs::new(), &mut Context::new(&toy))
            .expect("end");
    }
    let mut toy = Toy {
        epoch: Cell::new(0),
        size: 2 << 20,
    };
    let mut cb = callback("straight");
    let restored = restore_latest_in(
        &*storage,
        &Name::from(&server.url("straight")),
        &mut toy,
        &mut [&mut cb],
    )
    .expect("restore");
    assert_eq!(restored.meta.epoch, Some(3));
    assert_eq!(toy.epoch.get(), 3);
    epochs(&mut cb, &toy, 3..6);
    cb.on_train_end(&Logs::new(), &mut Context::new(&toy))
        .expect("end");
    let resumed = checkpoints(&storage, &server.url("straight"));
    assert_eq!(
        resumed,
        straight.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    );
    for (name, bytes) in &straight {
        assert!(
            read_all(&storage, name) == *bytes,
            "{name} differs between resumed and straight"
        );
    }

    // Weights only, with versions: the same name thrice gives -v1 and -v2.
    let mut cb = ModelCheckpoint::new(server.url("weights/model.safetensors"))
        .storage(storage.clone())
        .save_weights_only(true)
        .overwrite(false);
    epochs(&mut cb, &toy, 0..3);
    cb.on_train_end(&Logs::new(), &mut Context::new(&toy))
        .expect("end");
    let weights = checkpoints(&storage, &server.url("weights"));
    assert_eq!(
        weights,
        [
            "model-v1.safetensors",
            "model-v2.safetensors",
            "model.safetensors"
        ]
        .map(|n| server.url(&format!("weights/{n}")))
    );
    for name in &weights {
        let file =
            CheckpointFile::open_in(&*storage, &Name::from(name), Verify::Full).expect("verifies");
        assert_eq!(file.kind(), Kind::Weights);
    }
}

/// Metadata naming the epoch, as docs/FORMAT.md spells it.
fn epoch_info(epoch: u64) -> BTreeMap<String, String> {
    BTreeMap::from([("epoch".to_owned(), epoch.to_string())])
}

fn tensors(floats: usize, seed: u64) -> Vec<NamedTensor<'static>> {
    (0..3)
        .map(|i| {
            let values: Vec<f32> = (0..floats)
                .map(|v| (seed * 7 + v as u64 * 3 + i) as f32)
                .collect();
            NamedTensor::new(format!("t{i}"), HostTensor::from_f32(vec![floats], &values))
        })
        .collect()
}

/// A plain PUT of `bytes` over object `name` (a new version, as another writer makes one).
fn put_plain(storage: &dyn Storage, name: &str, bytes: &[u8]) {
    let mut put = storage
        .create(&Name::from(name), 0, Commit::Replace)
        .expect("put");
    put.write_all(bytes).expect("bytes");
    put.commit(&[], true).expect("plain put");
}

fn save(
    storage: &dyn Storage,
    name: &str,
    floats: usize,
    seed: u64,
    commit: Commit,
) -> Result<(), Error> {
    store::save_to(
        storage,
        &Name::from(name),
        Kind::Full,
        &tensors(floats, seed),
        &BTreeMap::new(),
        &SaveOptions::default().commit(commit),
    )
    .map(|_| ())
}

#[test]
fn latest_skips_a_damaged_newest_object() {
    let Some(server) = Seaweed::start("latest_skips_a_damaged_newest_object") else {
        return;
    };
    let storage = server.storage();
    let dir = server.url("damage");
    for epoch in 1..=3u64 {
        let info = epoch_info(epoch);
        store::save_to(
            &storage,
            &Name::from(format!("{dir}/e{epoch}.safetensors")),
            Kind::Full,
            &tensors(1000, epoch),
            &info,
            &SaveOptions::default(),
        )
        .expect("save");
    }
    assert!(latest_full_in(&storage, &Name::from(&dir))
        .expect("latest")
        .as_str()
        .ends_with("e3.safetensors"));
    // A plain PUT over the newest object, with some bytes of its data flipped.
    let newest = format!("{dir}/e3.safetensors");
    let mut bytes = read_all(&storage, &newest);
    let n = bytes.len();
    for b in &mut bytes[n - 100..n - 90] {
        *b ^= 0xff;
    }
    put_plain(&storage, &newest, &bytes);
    assert!(CheckpointFile::open_in(&storage, &Name::from(&newest), Verify::Full).is_err());
    let latest = latest_full_in(&storage, &Name::from(&dir)).expect("falls back");
    assert!(latest.as_str().ends_with("e2.safetensors"), "{latest:?}");
}

#[test]
fn of_sixteen_racing_writers_exactly_one_creates_a_name() {
    let Some(server) = Seaweed::start("racing_writers") else {
        return;
    };
    let storage = Arc::new(server.storage().with_parts(5 << 20, 2));
    // Small objects (one conditional PUT) and large ones (multipart, then a conditional
    // server-side copy).
    for (name, floats) in [
        ("race/small-v1.safetensors", 1000),
        ("race/large-v1.safetensors", 1 << 20),
    ] {
        let name = server.url(name);
        let results: Vec<Result<(), Error>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16u64)
                .map(|seed| {
                    let (storage, name) = (storage.clone(), name.clone());
                    scope.spawn(move || save(&*storage, &name, floats, seed, Commit::CreateNew))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{name}: {results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(matches!(r, Error::AlreadyExists { .. }), "{r}");
        }
        CheckpointFile::open_in(&*storage, &Name::from(&name), Verify::Full)
            .expect("the winner verifies");
    }
    // Nothing else is left: no staging objects, listed or not.
    let everything = storage
        .list(&Name::from(&server.url("race")), 5)
        .expect("list");
    assert_eq!(everything.len(), 2, "{everything:?}");
}

#[test]
fn a_trainer_below_or_above_a_locked_folder_is_refused() {
    let Some(server) = Seaweed::start("nested locks") else {
        return;
    };
    let storage = Arc::new(server.storage());
    let toy = Toy {
        epoch: Cell::new(0),
        size: 16,
    };
    let callback = |template: &str| {
        ModelCheckpoint::new(server.url(template))
            .storage(storage.clone())
            .keep_last(1)
    };
    let begin = |cb: &mut ModelCheckpoint| cb.on_train_begin(&Logs::new(), &mut Context::new(&toy));
    let planted = |dir: &str| {
        // Another process's lock, as a trainer elsewhere leaves it.
        let other = r#"{"host":"other-host","pid":77,"since_unix":1700000000}"#;
        assert!(storage
            .put_if_absent(
                &Name::from(&server.url(&format!("{dir}/.ckpt.lock"))),
                other.as_bytes()
            )
            .expect("plant"));
    };

    // Another trainer holds `run` (its template has fields in folder names, so it writes
    // into `run/01/…` too): a trainer of `run/01` is refused, naming it.
    planted("run");
    let mut below = callback("run/01/w.safetensors");
    let err = begin(&mut below).expect_err("below a locked folder");
    assert!(matches!(err, Error::LockedBy { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("s3://ckpt/run is locked by host other-host, process 77"),
        "{text}"
    );
    // Its own lock did not stay behind.
    assert!(!storage
        .exists(&Name::from(&server.url("run/01/.ckpt.lock")))
        .expect("exists"));
    storage.break_lock(&server.url("run")).expect("break");

    // Another trainer holds `deep/01/x`: a trainer of `deep` is refused too.
    planted("deep/01/x");
    let mut above = callback("deep/w.{epoch:02d}.safetensors");
    let err = begin(&mut above).expect_err("above a locked folder");
    assert!(
        err.to_string()
            .contains("s3://ckpt/deep/01/x is locked by host other-host"),
        "{err}"
    );
    assert!(!storage
        .exists(&Name::from(&server.url("deep/.ckpt.lock")))
        .expect("exists"));
    storage.break_lock(&server.url("deep/01/x")).expect("break");

    // One process's own callbacks may nest, as on a local folder; a sibling folder is free.
    let mut outer = callback("run/w.{epoch:02d}.safetensors");
    begin(&mut outer).expect("outer");
    let mut inner = callback("run/best/w.safetensors");
    begin(&mut inner).expect("inner, this process's own");
    let mut sibling = callback("run2/w.safetensors");
    begin(&mut sibling).expect("a sibling folder");
    // Two callbacks of one process in one folder share its lock, as on a local folder; it
    // goes when the last lets it go.
    let mut twin = callback("run/best.safetensors");
    begin(&mut twin).expect("a second callback of this process in the same folder");
    twin.on_train_end(&Logs::new(), &mut Context::new(&toy))
        .expect("end");
    assert!(
        storage
            .exists(&Name::from(&server.url("run/.ckpt.lock")))
            .expect("exists"),
        "the first callback still holds run"
    );
    for cb in [&mut outer, &mut inner, &mut sibling] {
        cb.on_train_end(&Logs::new(), &mut Context::new(&toy))
            .expect("end");
    }
    for dir in ["run", "run/best", "run2"] {
        assert!(
            !storage
                .exists(&Name::from(&server.url(&format!("{dir}/.ckpt.lock"))))
                .expect("exists"),
            "{dir}'s lock stayed"
        );
    }
}

#[test]
fn wrong_credentials_and_a_missing_bucket_fail_fast_in_one_line() {
    let Some(server) = Seaweed::start("wrong_credentials") else {
        return;
    };
    let started = Instant::now();
    let wrong = server.storage_with(&[("AWS_SECRET_ACCESS_KEY", "not-the-secret")]);
    let err = wrong
        .list(&Name::from(&server.url("x")), 0)
        .expect_err("denied");
    let text = err.to_string();
    println!("wrong secret, after {:?}: {text}", started.elapsed());
    assert!(!text.contains('\n') && text.len() < 600, "{text}");
    assert!(
        text.contains("access denied") && text.contains("AWS_SECRET_ACCESS_KEY"),
        "{text}"
    );
    let missing = ObjectStorage::from_env_with(
        "s3://no-such-bucket",
        &server
            .env()
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    )
    .expect("client");
    let err = missing
        .list(&Name::from("s3://no-such-bucket/x"), 0)
        .expect_err("no bucket");
    println!("missing bucket: {err}");
    assert!(!err.to_string().contains('\n'), "{err}");
    let started = Instant::now();
    let unreachable = ObjectStorage::from_env_with(
        "s3://ckpt",
        &[
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_ALLOW_HTTP", "true"),
        ],
    )
    .expect("client");
    let err = unreachable
        .exists(&Name::from("s3://ckpt/x"))
        .expect_err("unreachable");
    println!("unreachable endpoint, after {:?}: {err}", started.elapsed());
    assert!(
        err.to_string().contains("cannot reach the endpoint"),
        "{err}"
    );
}

#[test]
fn python_reads_an_object_downloaded_from_the_server() {
    let Some(server) = Seaweed::start("python_reads") else {
        return;
    };
    let Some(python) = python::python() else {
        return;
    };
    let storage = server.storage().with_parts(5 << 20, 2);
    let name = server.url("py/model.safetensors");
    save(&storage, &name, 1 << 21, 9, Commit::Replace).expect("save");
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("model.safetensors");
    std::fs::write(&local, read_all(&storage, &name)).expect("download");
    let script = "import sys\nfrom safetensors.numpy import load_file\nt = load_file(sys.argv[1])\nprint(sorted(t), t['t2'].shape, float(t['t2'][5]))";
    let out = Command::new(python)
        .args(["-c", script])
        .arg(&local)
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.trim(),
        format!(
            "['t0', 't1', 't2'] ({},) {:.1}",
            1 << 21,
            (9 * 7 + 5 * 3 + 2) as f32
        )
    );
}

const CHILD_ENDPOINT: &str = "CKPT_S3_CHILD_ENDPOINT";

#[test]
#[ignore = "helper: the SIGKILL test runs it as a child process"]
fn child_uploads_forever() {
    let endpoint = std::env::var(CHILD_ENDPOINT).expect("run by the SIGKILL test");
    let storage = ObjectStorage::from_env_with(
        "s3://ckpt",
        &[
            ("AWS_ACCESS_KEY_ID", seaweed::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", seaweed::SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_ALLOW_HTTP", "true"),
        ],
    )
    .expect("storage")
    .with_parts(5 << 20, 2);
    let seed = u64::from(std::process::id());
    for step in 0u64.. {
        let info = epoch_info(seed * 1000 + step);
        // 3 × 16 MiB: ten parts each, part 0 last.
        store::save_to(
            &storage,
            &Name::from(format!("s3://ckpt/crash/s{}.safetensors", step % 3)),
            Kind::Full,
            &tensors(4 << 20, seed + step),
            &info,
            &SaveOptions::default(),
        )
        .expect("save");
    }
}

#[test]
fn sigkill_during_multipart_saves_never_shows_a_partial_object() {
    let Some(server) = Seaweed::start("sigkill_during_multipart_saves") else {
        return;
    };
    let storage = server.storage();
    let dir = server.url("crash");
    let kills: u64 = std::env::var("CKPT_S3_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(20);
    let spawn = || {
        Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--ignored",
                "--exact",
                "child_uploads_forever",
                "--nocapture",
            ])
            .env(CHILD_ENDPOINT, server.endpoint())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("child")
    };
    // First, how long one save takes here (the machine may be busy): the kills below land
    // between a fifth of that and twice it after a start, mostly in the middle of a save.
    let started = Instant::now();
    let mut child = spawn();
    while storage.list(&Name::from(&dir), 0).expect("list").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no save completed in 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let one_save = started.elapsed();
    child.kill().expect("kill");
    child.wait().expect("reaped");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut listed_ever = 0;
    for kill in 0..kills {
        let mut child = spawn();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = one_save / 5 + one_save.mul_f64((state % 1000) as f64 / 555.0);
        std::thread::sleep(delay);
        // Stopped by its process id, with SIGKILL: no destructor, no abort of its upload.
        child.kill().expect("kill");
        child.wait().expect("reaped");
        let objects = storage.list(&Name::from(&dir), 0).expect("list");
        for object in &objects {
            CheckpointFile::open_in(&storage, &object.name, Verify::Full)
                .unwrap_or_else(|e| panic!("kill {kill}: a partial object is visible: {e}"));
        }
        listed_ever = listed_ever.max(objects.len());
        let latest = latest_full_in(&storage, &Name::from(&dir)).expect("latest resolves");
        CheckpointFile::open_in(&storage, &latest, Verify::Full).expect("latest verifies");
    }
    println!(
        "{kills} kills (one save took {one_save:?}); up to {listed_ever} objects listed after a kill, all verified"
    );
}

#[test]
fn large_tensors_are_read_as_parallel_parts_each_checked() {
    let Some(server) = Seaweed::start("parallel_parts") else {
        return;
    };
    let storage = server.storage();
    let name = server.url("parts/big.safetensors");
    // Three tensors of 20 MiB: each read as eight ranged parts of 2.5 MiB at once.
    let floats = 5 << 20;
    save(&storage, &name, floats, 1, Commit::Replace).expect("save");
    let expected: Vec<Vec<u8>> = tensors(floats, 1)
        .iter()
        .map(|t| {
            let mut bytes = Vec::new();
            t.data
                .write_to(&mut |piece| {
                    bytes.extend_from_slice(piece);
                    Ok(())
                })
                .expect("bytes");
            bytes
        })
        .collect();
    let file =
        CheckpointFile::open_in(&storage, &Name::from(&name), Verify::HeaderOnly).expect("open");
    for (i, bytes) in expected.iter().enumerate() {
        assert!(file.read(&format!("t{i}")).expect("read") == *bytes, "t{i}");
    }

    // One byte flipped 10 MiB into t1 (its fifth part): t1 fails its checksum, t0 still
    // reads.
    let whole = read_all(&storage, &name);
    // Where t1's bytes start: its first values are found once in the object.
    let t1_start = whole
        .windows(64)
        .position(|w| w == &expected[1][..64])
        .expect("t1 in the object");
    let mut damaged = whole.clone();
    damaged[t1_start + (10 << 20)] ^= 0x01;
    put_plain(&storage, &name, &damaged);
    let reopened =
        CheckpointFile::open_in(&storage, &Name::from(&name), Verify::HeaderOnly).expect("open");
    let err = reopened.read("t1").expect_err("a flipped byte");
    assert!(
        matches!(err, Error::Corrupt { .. }) && err.to_string().contains("t1"),
        "{err}"
    );
    assert!(reopened.read("t0").expect("t0") == expected[0]);

    // Replaced after opening: the parts are refused rather than mixing versions.
    put_plain(&storage, &name, &whole);
    let err = reopened.read("t2").expect_err("a replaced object");
    assert!(err.to_string().contains("replaced"), "{err}");

    // Tensors of 4 MiB come through the parts fetched ahead (8 MiB each, a tensor across
    // two of them): in order, out of order, and again.
    let small = server.url("parts/small.safetensors");
    let floats = 1 << 20;
    save(&storage, &small, floats, 2, Commit::Replace).expect("save");
    let expected = tensors(floats, 2);
    let file =
        CheckpointFile::open_in(&storage, &Name::from(&small), Verify::HeaderOnly).expect("open");
    for i in [0, 1, 2, 2, 0, 1, 0] {
        let mut bytes = Vec::new();
        expected[i]
            .data
            .write_to(&mut |piece| {
                bytes.extend_from_slice(piece);
                Ok(())
            })
            .expect("bytes");
        assert!(file.read(&format!("t{i}")).expect("read") == bytes, "t{i}");
    }
}
