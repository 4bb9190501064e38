//! `ckpt` on S3 (SeaweedFS on 127.0.0.1, started per test and stopped by its process id):
//! training into a bucket and resuming exactly from `s3://…/latest`; `ls`, `best`, `show`,
//! `verify` and `diff` on objects; a wrong secret; a stale lock and `ckpt unlock`.

#[path = "../../model-checkpoint-object-store/tests/seaweed/mod.rs"]
mod seaweed;

mod common;

use model_checkpoint::store::Name;
use std::path::Path;
use std::process::{Command, Output};

use common::text;
use model_checkpoint::store::Storage;
use seaweed::Seaweed;

fn ckpt(server: &Seaweed, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .current_dir(dir)
        .envs(server.env())
        .args(args)
        .output()
        .expect("run ckpt")
}

fn train(server: &Seaweed, dir: &Path, epochs: &str, extra: &[&str]) -> Output {
    train_to(
        server,
        dir,
        &server.url("run/e{epoch:02d}.safetensors"),
        epochs,
        extra,
    )
}

/// `ckpt train` of the test's small MLP with checkpoints at `template`.
fn train_to(server: &Seaweed, dir: &Path, template: &str, epochs: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--progress",
        "0",
        "--verbose",
        "0",
        "--hidden",
        "16",
        "--epochs",
        epochs,
        "--filepath",
        template,
    ];
    args.extend_from_slice(extra);
    ckpt(server, dir, &args)
}

fn download(server: &Seaweed, name: &str, to: &Path) {
    let storage = server.storage();
    let reader = storage.open(&Name::from(name)).expect("open");
    let mut bytes = vec![0; reader.len() as usize];
    reader.read_exact_at(&mut bytes, 0).expect("read");
    std::fs::write(to, bytes).expect("write");
}

fn clear(server: &Seaweed, prefix: &str) {
    let storage = server.storage();
    for object in storage
        .list(&Name::from(&server.url(prefix)), 5)
        .expect("list")
    {
        storage.delete(&object.name).expect("delete");
    }
}

#[test]
fn train_into_a_bucket_and_resume_exactly_from_latest() {
    let Some(server) = Seaweed::start("ckpt train on s3") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let straight = train(&server, d, "4", &[]);
    assert_eq!(
        straight.status.code(),
        Some(0),
        "{}",
        text(&straight.stderr)
    );
    let last = server.url("run/e04.safetensors");
    download(&server, &last, &d.join("straight.safetensors"));

    // The listing tools read the bucket as they read a folder.
    let ls = ckpt(&server, d, &["ls", &server.url("run")]);
    assert_eq!(ls.status.code(), Some(0), "{}", text(&ls.stderr));
    let listing = text(&ls.stdout);
    assert_eq!(listing.matches(".safetensors").count(), 4, "{listing}");
    assert!(listing.contains("(best)"), "{listing}");
    let verify = ckpt(&server, d, &["verify", &server.url("run")]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
    assert_eq!(text(&verify.stdout).matches("ok ").count(), 4);
    let best = ckpt(&server, d, &["best", &server.url("run")]);
    assert_eq!(best.status.code(), Some(0), "{}", text(&best.stderr));
    assert!(
        text(&best.stdout).trim().starts_with("s3://ckpt/run/e0"),
        "{}",
        text(&best.stdout)
    );
    let show = ckpt(&server, d, &["show", &last]);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
    assert!(
        text(&show.stdout).contains("dense_0.weight"),
        "{}",
        text(&show.stdout)
    );

    // The report reads the bucket's history, journal and objects as a folder's.
    let report = ckpt(
        &server,
        d,
        &["report", &server.url("run"), "-o", "report.html"],
    );
    assert_eq!(report.status.code(), Some(0), "{}", text(&report.stderr));
    assert!(
        text(&report.stdout)
            .contains("4 metric(s) over 4 epoch(s), 4 checkpoint(s) saved (4 there and verified)"),
        "{}",
        text(&report.stdout)
    );
    let page = std::fs::read_to_string(d.join("report.html")).expect("page");
    assert_eq!(page.matches("class=\"marker kept").count(), 4);

    // The same run, stopped after two epochs, resumed from the bucket's latest.
    clear(&server, "run");
    let first = train(&server, d, "2", &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let resume = server.url("run/latest");
    let resumed = train(&server, d, "4", &["--resume", &resume]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    assert!(
        text(&resumed.stdout).contains("resuming from s3://ckpt/run/e02.safetensors at epoch 3"),
        "{}",
        text(&resumed.stdout)
    );
    // Tensors byte for byte, and the metadata but for the run id: diff reads one side from
    // the bucket, the other from the local copy of the straight run.
    common::assert_same_state_with(d, &server.env(), "straight.safetensors", &last);
    let diff = ckpt(&server, d, &["diff", "straight.safetensors", &last]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff.stdout));
}

#[test]
fn a_wrong_secret_is_one_line_and_exit_2() {
    let Some(server) = Seaweed::start("ckpt with a wrong secret") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        vec!["ls".to_owned(), server.url("run")],
        vec![
            "train".to_owned(),
            "--filepath".to_owned(),
            server.url("run/e{epoch}.safetensors"),
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ckpt"))
            .current_dir(dir.path())
            .envs(server.env())
            .env("AWS_SECRET_ACCESS_KEY", "wrong")
            .args(&args)
            .output()
            .expect("run ckpt");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("access denied"), "{args:?}: {err}");
    }
}

/// This host's name, as a lock records it.
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
fn ckpt_unlock_refuses_a_live_holder_on_this_host_unless_forced() {
    let Some(server) = Seaweed::start("ckpt unlock of a live holder") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let storage = server.storage();
    let lock = server.url("run/.ckpt.lock");
    let plant = |content: &str| {
        assert!(storage
            .put_if_absent(&Name::from(&lock), content.as_bytes())
            .expect("plant"));
    };
    let unlock = |force: bool| {
        let mut args = vec!["unlock"];
        if force {
            args.push("--force");
        }
        let url = server.url("run");
        args.push(&url);
        ckpt(&server, d, &args)
    };
    let refused = |out: &Output| {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("is alive on this host"), "{err}");
        assert!(err.contains("ckpt unlock --force s3://ckpt/run"), "{err}");
    };

    // A live process of this host (a `sleep`) holds the folder, as a trainer writes its lock.
    // Stopped by its id, whatever the test's outcome.
    struct Sleeper(std::process::Child);
    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut holder = Sleeper(Command::new("sleep").arg("600").spawn().expect("sleep"));
    plant(&format!(
        r#"{{"host":"{}","pid":{},"since_unix":{}}}"#,
        this_host(),
        holder.0.id(),
        unix_now()
    ));
    refused(&unlock(false));
    assert!(
        storage.exists(&Name::from(&lock)).expect("exists"),
        "a live holder's lock went"
    );
    let forced = unlock(true);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
    assert!(
        text(&forced.stdout).contains(&format!("process {}", holder.0.id())),
        "{}",
        text(&forced.stdout)
    );
    assert!(!storage.exists(&Name::from(&lock)).expect("exists"));

    // This process, holding the folder through the library (whose lock records its start).
    let guard = storage
        .lock(&Name::from(&server.url("run")))
        .expect("lock")
        .expect("held");
    refused(&unlock(false));
    drop(guard);
    assert!(
        !storage.exists(&Name::from(&lock)).expect("exists"),
        "released when dropped"
    );

    // Once the holder has ended, its lock is broken without asking.
    let pid = holder.0.id();
    holder.0.kill().expect("kill");
    holder.0.wait().expect("wait");
    plant(&format!(
        r#"{{"host":"{}","pid":{pid},"since_unix":{}}}"#,
        this_host(),
        unix_now()
    ));
    let broken = unlock(false);
    assert_eq!(broken.status.code(), Some(0), "{}", text(&broken.stderr));
    assert!(
        text(&broken.stdout).contains("broke the lock"),
        "{}",
        text(&broken.stdout)
    );
    assert!(!storage.exists(&Name::from(&lock)).expect("exists"));

    // A pid that runs, but started after the lock was taken, is another process.
    plant(&format!(
        r#"{{"host":"{}","pid":{},"since_unix":1000}}"#,
        this_host(),
        std::process::id()
    ));
    let reused = unlock(false);
    assert_eq!(reused.status.code(), Some(0), "{}", text(&reused.stderr));
    assert!(!storage.exists(&Name::from(&lock)).expect("exists"));
}

#[test]
fn a_stale_lock_names_its_holder_until_ckpt_unlock_breaks_it() {
    let Some(server) = Seaweed::start("ckpt unlock") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // What a trainer killed outright leaves behind.
    let storage = server.storage();
    let stale = r#"{"host":"gone-host","pid":4242,"since_unix":1700000000}"#;
    assert!(storage
        .put_if_absent(&Name::from(&server.url("run/.ckpt.lock")), stale.as_bytes())
        .expect("plant"));
    let refused = train(&server, d, "1", &[]);
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("host gone-host, process 4242"), "{err}");
    assert!(err.contains("ckpt unlock s3://ckpt/run"), "{err}");
    let unlock = ckpt(&server, d, &["unlock", &server.url("run")]);
    assert_eq!(unlock.status.code(), Some(0), "{}", text(&unlock.stderr));
    assert!(
        text(&unlock.stdout).contains("held by host gone-host"),
        "{}",
        text(&unlock.stdout)
    );
    let trained = train(&server, d, "1", &[]);
    assert_eq!(trained.status.code(), Some(0), "{}", text(&trained.stderr));
    // The run released its lock at the end.
    let again = ckpt(&server, d, &["unlock", &server.url("run")]);
    assert!(
        text(&again.stdout).contains("was not locked"),
        "{}",
        text(&again.stdout)
    );
}

#[test]
fn deduplicated_checkpoints_in_a_bucket_resume_and_collect() {
    let Some(server) = Seaweed::start("ckpt train --dedup on s3") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let flags = ["--dedup", "--keep-last", "2", "--seed", "9"];
    let first = train(&server, d, "2", &flags);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    // Resumed with its blobs compressed: compression needs nothing of the store but writes.
    let resumed = train(
        &server,
        d,
        "4",
        &[&flags[..], &["--resume", "latest", "--compress"]].concat(),
    );
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    assert!(
        text(&resumed.stdout).contains("resuming from s3://ckpt/run/e02.safetensors at epoch 3"),
        "{}",
        text(&resumed.stdout)
    );
    // Two checkpoints kept; their blobs, and nothing else, in the bucket's blob folder.
    let verify = ckpt(&server, d, &["verify", &server.url("run")]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
    assert_eq!(
        text(&verify.stdout).matches("deduplicated").count(),
        2,
        "{}",
        text(&verify.stdout)
    );
    let du = ckpt(&server, d, &["du", &server.url("run"), "--json"]);
    assert_eq!(du.status.code(), Some(0), "{}", text(&du.stderr));
    let du: serde_json::Value = serde_json::from_slice(&du.stdout).expect("json");
    assert_eq!(du["checkpoints"], 2, "{du}");
    assert_eq!(du["unnamed_blobs"], 0, "{du}");
    // The same run straight, locally and plain: the same tensors (blobs are named by the
    // decoded tensor, so equal names are equal tensors) at epoch 4.
    let local = d.join("straight");
    let template = local.join("e{epoch:02d}.safetensors");
    let straight = train_to(
        &server,
        d,
        template.to_str().expect("utf-8"),
        "4",
        &["--dedup", "--seed", "9"],
    );
    assert_eq!(
        straight.status.code(),
        Some(0),
        "{}",
        text(&straight.stderr)
    );
    let index = |bytes: &[u8]| -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(bytes).expect("json")["weight_map"].clone()
    };
    let storage = server.storage();
    let reader = storage
        .open(&Name::from(
            server.url("run/e04.safetensors/model.safetensors.index.json"),
        ))
        .expect("index in the bucket");
    let mut remote = vec![0; reader.len() as usize];
    reader.read_exact_at(&mut remote, 0).expect("read");
    let here = std::fs::read(local.join("e04.safetensors/model.safetensors.index.json"))
        .expect("local index");
    assert_eq!(
        index(&remote).as_object().map(|m| m.len()),
        index(&here).as_object().map(|m| m.len())
    );
    // Every tensor read back (checked, decoded) from both: bit for bit the same.
    let tensors = |storage: &dyn model_checkpoint::store::Storage, dir: Name| {
        let checkpoint =
            model_checkpoint::sharded::ShardedCheckpoint::open(storage, &dir).expect("opens");
        checkpoint
            .tensors()
            .keys()
            .map(|name| {
                (
                    name.clone(),
                    checkpoint.read(name).expect("reads").data().to_vec(),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let from_bucket = tensors(&storage, Name::from(server.url("run/e04.safetensors")));
    let from_disk = tensors(
        &model_checkpoint::store::LocalFolder::default(),
        Name::from(local.join("e04.safetensors")),
    );
    assert!(!from_disk.is_empty());
    assert!(from_bucket == from_disk, "the tensors differ");
    // And the bucket's epoch-4 blobs were written compressed (their entries say so).
    assert!(
        remote.windows(13).any(|w| w == b"\"plain_bytes\""),
        "{}",
        text(&remote)
    );
}
